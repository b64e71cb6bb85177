// Test doubles for wshub.js: a WebSocket whose server side the test plays, a
// clock whose time the test moves, and a network that goes offline on demand.

export class FakeClock {
  constructor() {
    this.time = 1_700_000_000_000;
    this.timers = new Map();
    this.nextHandle = 1;
  }

  setTimeout(fn, ms) {
    const handle = this.nextHandle++;
    this.timers.set(handle, { at: this.time + Math.max(0, ms), fn });
    return handle;
  }

  clearTimeout(handle) {
    this.timers.delete(handle);
  }

  now() {
    return this.time;
  }

  /** The delays (from now) of the pending timers, soonest first. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.time).sort((a, b) => a - b);
  }

  /** Move time forward by `ms`, running every timer that falls due, in order. */
  async advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let due = null;
      for (const [handle, t] of this.timers) {
        if (t.at <= end && (due === null || t.at < due[1].at)) due = [handle, t];
      }
      if (due === null) break;
      this.timers.delete(due[0]);
      this.time = due[1].at;
      due[1].fn();
      await flush();
    }
    this.time = end;
    await flush();
  }
}

/** Let pending promise callbacks (the client's async steps) run. */
export async function flush() {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.sent = [];
      this.closedByClient = null;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      sockets.push(this);
    }

    send(data) {
      if (this.closedByClient) throw new Error("send after close");
      this.sent.push(JSON.parse(data));
    }

    close(code, reason) {
      this.closedByClient = { code, reason };
    }

    // -- the server's side, played by the test --
    serverOpen() {
      this.onopen?.({});
    }

    serverSend(envelope) {
      this.onmessage?.({ data: JSON.stringify({ timestamp: 1, payload: null, ...envelope }) });
    }

    serverWelcome(connId = "c1", principal = "alice") {
      this.serverOpen();
      this.serverSend({ message_type: "welcome", payload: { conn_id: connId, principal } });
    }

    serverClose(code, reason = "") {
      this.onclose?.({ code, reason });
    }

    /** Reply to the last request of `type` that this socket sent. */
    reply(type, payload, ok = true) {
      const request = [...this.sent].reverse().find((e) => e.message_type === type);
      if (!request) throw new Error(`no ${type} request was sent`);
      const env = { message_type: "reply", id: request.id, ok, payload: ok ? payload : null };
      if (!ok) env.error = payload;
      this.serverSend(env);
      return request;
    }
  }
  return { FakeWebSocket, sockets };
}

export class FakeNetwork extends EventTarget {
  constructor(online = true) {
    super();
    this.navigator = { onLine: online };
  }

  go(online) {
    this.navigator.onLine = online;
    this.dispatchEvent(new Event(online ? "online" : "offline"));
  }
}
