// Unit tests of wshub.js with a fake WebSocket, clock and network (node --test).
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { backoffDelay, WshubClient, WshubError } from "../../wshub/static/wshub.js";
import { FakeClock, FakeNetwork, fakeWebSocketClass, flush } from "./fakes.mjs";

const ALMOST_ONE = 0.999999;

/** Observe a promise at once (so a rejection before the assertion is not "unhandled"). */
function observed(promise) {
  promise.catch(() => {});
  return promise;
}

function setup(options = {}) {
  const clock = new FakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const network = new FakeNetwork();
  const events = [];
  const client = new WshubClient("ws://hub.test/", {
    token: "tok",
    WebSocket: FakeWebSocket,
    timers: clock,
    network,
    random: () => ALMOST_ONE,
    ...options,
  });
  for (const name of ["state", "closed", "error", "unrecoverable", "recovered", "presence", "message", "refreshed"]) {
    client.on(name, (value) => events.push([name, value]));
  }
  const last = () => sockets[sockets.length - 1];
  const named = (name) => events.filter(([n]) => n === name).map(([, v]) => v);
  return { client, clock, sockets, network, events, last, named };
}

async function connected(options) {
  const t = setup(options);
  t.client.connect();
  await flush();
  t.last().serverWelcome();
  await flush();
  return t;
}

describe("backoff", () => {
  test("full jitter: every delay lies in [0, min(max, initial * factor^attempt))", () => {
    const opts = { initial: 100, max: 5000, factor: 2 };
    for (let attempt = 0; attempt < 40; attempt++) {
      const ceiling = Math.min(5000, 100 * 2 ** attempt);
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, opts);
        assert.ok(d >= 0 && d < ceiling, `attempt ${attempt}: ${d} outside [0, ${ceiling})`);
      }
      assert.equal(backoffDelay(attempt, opts, () => 0), 0);
      assert.equal(backoffDelay(attempt, opts, () => ALMOST_ONE), Math.floor(ALMOST_ONE * ceiling));
    }
  });

  test("reconnect delays grow to the bound, and reset after a successful connection", async () => {
    const { client, clock, sockets, last, named } = setup({ backoff: { initial: 100, max: 1000 } });
    client.connect();
    await flush();
    for (let i = 0; i < 6; i++) {
      last().serverClose(1006);
      const { delay } = named("closed").at(-1);
      await clock.advance(delay);
    }
    assert.deepEqual(
      named("closed").map((c) => c.delay),
      [99, 199, 399, 799, 999, 999]
    );
    assert.equal(sockets.length, 7);
    last().serverWelcome();
    await flush();
    last().serverClose(1001, "going away");
    assert.equal(named("closed").at(-1).delay, 99);
    assert.equal(named("closed").at(-1).willRetry, true);
  });

  test("an offline browser waits for `online` instead of retrying; going offline drops the socket", async () => {
    const { client, clock, sockets, network, last } = await connected();
    network.go(false);
    assert.equal(last().closedByClient.code, 4000);
    assert.equal(client.state, "connecting");
    await clock.advance(3_600_000);
    assert.equal(sockets.length, 1, "no attempt while offline");
    network.go(true);
    await flush();
    assert.equal(sockets.length, 2, "reconnects at once when back online");
  });

  test("a client created offline connects only once online", async () => {
    const network = new FakeNetwork(false);
    const { client, sockets, clock } = setup({ network });
    client.connect();
    await clock.advance(60_000);
    assert.equal(sockets.length, 0);
    network.go(true);
    await flush();
    assert.equal(sockets.length, 1);
  });

  test("no welcome within connectTimeout: the socket is dropped and retried", async () => {
    const { client, clock, sockets } = setup({ connectTimeout: 2000 });
    client.connect();
    await flush();
    sockets[0].serverOpen();
    await clock.advance(2000);
    assert.ok(sockets[0].closedByClient);
    await clock.advance(1000);
    assert.equal(sockets.length, 2);
  });
});

describe("authentication", () => {
  test("the token travels as a subprotocol next to wshub.v1", async () => {
    const { client, last } = setup();
    client.connect();
    await flush();
    assert.deepEqual(last().protocols, ["wshub.v1", "wshub.bearer.tok"]);
  });

  test("first-message auth: only wshub.v1 is offered, then an auth message; expiry from the reply", async () => {
    const { client, last } = setup({ authMode: "message" });
    client.connect();
    await flush();
    const ws = last();
    assert.deepEqual(ws.protocols, ["wshub.v1"]);
    ws.serverOpen();
    assert.deepEqual(ws.sent[0].message_type, "auth");
    assert.deepEqual(ws.sent[0].payload, { token: "tok" });
    ws.reply("auth", { principal: "alice", expires_at: null });
    ws.serverSend({ message_type: "welcome", payload: { conn_id: "c9", principal: "alice" } });
    assert.equal(client.state, "open");
    assert.equal(client.connId, "c9");
  });

  test("first-message auth: a refused token (1008 before welcome) stops; a timeout is retried", async () => {
    const { client, clock, sockets, last, named } = setup({ authMode: "message" });
    client.connect();
    await flush();
    last().serverOpen();
    last().serverClose(1008, "authentication timeout");
    await flush();
    assert.equal(named("closed").at(-1).willRetry, true);
    await clock.advance(named("closed").at(-1).delay);
    last().serverOpen();
    last().serverClose(1008, "invalid bearer token");
    await flush();
    await clock.advance(3_600_000);
    assert.equal(sockets.length, 2);
    assert.equal(client.state, "closed");
  });

  test("the token callback runs before every (re)connect", async () => {
    let n = 0;
    const { client, clock, last, named } = setup({ token: async () => `t${++n}` });
    client.connect();
    await flush();
    assert.deepEqual(last().protocols, ["wshub.v1", "wshub.bearer.t1"]);
    last().serverClose(1006);
    await clock.advance(named("closed").at(-1).delay);
    assert.deepEqual(last().protocols, ["wshub.v1", "wshub.bearer.t2"]);
  });

  for (const code of [4401, 4403]) {
    test(`${code} with a static token: no retry at all, the state says why`, async () => {
      const { client, clock, sockets, last, named } = setup();
      client.connect();
      await flush();
      const queued = observed(client.call("echo", 1));
      last().serverClose(code, "invalid bearer token");
      await flush();
      await clock.advance(24 * 3_600_000);
      assert.equal(sockets.length, 1);
      assert.equal(client.state, "closed");
      assert.deepEqual(named("closed").at(-1), { code, reason: "invalid bearer token", willRetry: false });
      assert.equal(named("error").at(-1).code, "unauthorized");
      await assert.rejects(queued, (e) => e instanceof WshubError && e.code === "unauthorized");
    });

    test(`${code}: retried only when the callback yields a new token`, async () => {
      const tokens = ["a", "a", "b", "b", "b"];
      const calls = [];
      const token = async () => {
        calls.push(tokens[calls.length]);
        return calls.at(-1);
      };
      const { client, clock, sockets, last } = setup({ token });
      client.connect();
      await flush();
      last().serverClose(code, "refused"); // callback -> "a" again: stop
      await flush();
      await clock.advance(3_600_000);
      assert.equal(sockets.length, 1);
      assert.equal(client.state, "closed");
      client.connect(); // the application decides to try again: callback -> "b"
      await flush();
      last().serverClose(code, "refused"); // callback -> "b", same as refused: stop
      await flush();
      await clock.advance(3_600_000);
      assert.equal(sockets.length, 2);
      assert.deepEqual(calls, ["a", "a", "b", "b"]);
    });
  }

  test("4401 then a new token from the callback: one more attempt, with that token", async () => {
    const tokens = ["old", "new"];
    let i = 0;
    const { client, clock, sockets, last, named } = setup({ token: () => tokens[Math.min(i++, 1)] });
    client.connect();
    await flush();
    last().serverClose(4401, "token expired");
    await flush();
    const { delay, willRetry } = named("closed").at(-1);
    assert.equal(willRetry, true);
    await clock.advance(delay);
    assert.equal(sockets.length, 2);
    assert.deepEqual(last().protocols, ["wshub.v1", "wshub.bearer.new"]);
    assert.equal(i, 2, "the token fetched after the refusal is used, not fetched twice");
  });

  test("4429 waits at least rateLimitDelay, or the delay its reason names", async () => {
    const { client, clock, last, named, sockets } = setup({ rateLimitDelay: 5000 });
    client.connect();
    await flush();
    last().serverClose(4429, "too many failed authentications");
    assert.equal(named("closed").at(-1).delay, 5000);
    await clock.advance(4999);
    assert.equal(sockets.length, 1);
    await clock.advance(1);
    assert.equal(sockets.length, 2);
    last().serverClose(4429, "too many connections; retry after 42");
    assert.equal(named("closed").at(-1).delay, 42_000);
  });

  test("refresh before expiry: an auth message with the callback's new token", async () => {
    let n = 0;
    const t = setup({
      token: () => ({ token: `t${++n}`, expiresAt: t.clock.now() + 60_000 }),
      refreshBefore: 10_000,
    });
    const { client, clock, last, named } = t;
    client.connect();
    await flush();
    last().serverWelcome();
    await clock.advance(49_999);
    assert.equal(last().sent.length, 0);
    await clock.advance(1);
    const auth = last().sent.at(-1);
    assert.equal(auth.message_type, "auth");
    assert.deepEqual(auth.payload, { token: "t2" });
    const expires = (clock.now() + 120_000) / 1000;
    last().reply("auth", { principal: "alice", expires_at: expires });
    await flush();
    assert.equal(named("refreshed").at(-1).expiresAt, expires * 1000);
    assert.deepEqual(clock.pending(), [110_000]);
    assert.equal(client.state, "open");
  });

  test("a refused refresh is an error event; the connection stays", async () => {
    const t = setup({ token: () => ({ token: "x", expiresAt: t.clock.now() + 60_000 }) });
    t.client.connect();
    await flush();
    t.last().serverWelcome();
    await t.clock.advance(30_000);
    t.last().reply("auth", { code: "unauthorized", message: "invalid bearer token" }, false);
    await flush();
    assert.equal(t.named("error").at(-1).code, "unauthorized");
    assert.equal(t.client.state, "open");
  });
});

describe("calls", () => {
  test("a reply resolves with its payload; an error reply rejects with its stable code", async () => {
    const { client, last } = await connected();
    const ok = client.call("add", [1, 2]);
    assert.deepEqual(last().sent.at(-1), { message_type: "add", payload: [1, 2], id: last().sent.at(-1).id });
    last().reply("add", 3);
    assert.equal(await ok, 3);
    const bad = client.call("nope");
    last().reply("nope", { code: "unknown_command", message: "no such command" }, false);
    await assert.rejects(bad, (e) => e instanceof WshubError && e.code === "unknown_command");
  });

  test("timeout: rejects with `timeout` at the deadline, and a late reply is ignored", async () => {
    const { client, clock, last } = await connected();
    let settled = null;
    const p = client.call("slow", null, { timeout: 1000 }).then(
      (v) => (settled = ["ok", v]),
      (e) => (settled = ["err", e.code])
    );
    await clock.advance(999);
    assert.equal(settled, null);
    await clock.advance(1);
    await p;
    assert.deepEqual(settled, ["err", "timeout"]);
    last().reply("slow", "late"); // no effect, no throw
    assert.deepEqual(settled, ["err", "timeout"]);
  });

  test("abort signal: before sending, while queued, and while in flight", async () => {
    const { client, last } = setup();
    const pre = new AbortController();
    pre.abort();
    await assert.rejects(client.call("x", null, { signal: pre.signal }), (e) => e.code === "aborted");

    client.connect();
    await flush();
    const queuedCtl = new AbortController();
    const queued = client.call("queued", null, { signal: queuedCtl.signal });
    queuedCtl.abort();
    await assert.rejects(queued, (e) => e.code === "aborted");
    last().serverWelcome();
    await flush();
    assert.equal(last().sent.filter((e) => e.message_type === "queued").length, 0, "an aborted call is never sent");

    const flightCtl = new AbortController();
    const flight = client.call("flight", null, { signal: flightCtl.signal });
    assert.equal(last().sent.at(-1).message_type, "flight");
    flightCtl.abort();
    await assert.rejects(flight, (e) => e.code === "aborted");
    last().reply("flight", "late"); // ignored
  });

  test("the offline queue is bounded; queued calls go out in order once connected", async () => {
    const { client, last } = setup({ maxQueue: 3 });
    client.connect();
    await flush();
    const calls = [1, 2, 3].map((n) => client.call("echo", n));
    await assert.rejects(client.call("echo", 4), (e) => e.code === "queue_full");
    await assert.rejects(client.publish("t", 5), (e) => e.code === "queue_full");
    const ws = last();
    assert.equal(ws.sent.length, 0);
    ws.serverWelcome();
    assert.deepEqual(
      ws.sent.map((e) => e.payload),
      [1, 2, 3]
    );
    for (const e of ws.sent) ws.serverSend({ message_type: "reply", id: e.id, ok: true, payload: e.payload * 10 });
    assert.deepEqual(await Promise.all(calls), [10, 20, 30]);
  });

  test("a queued call's timeout counts from the call, not from the connection", async () => {
    const { client, clock } = setup();
    client.connect();
    await flush();
    const p = observed(client.call("echo", 1, { timeout: 500 }));
    await clock.advance(500);
    await assert.rejects(p, (e) => e.code === "timeout");
  });

  test("calls in flight when the connection drops reject with `connection_lost` (never resent)", async () => {
    const { client, clock, last, named } = await connected();
    const p = client.call("charge", 100);
    last().serverClose(1006);
    await assert.rejects(p, (e) => e.code === "connection_lost");
    await clock.advance(named("closed").at(-1).delay);
    last().serverWelcome();
    assert.equal(last().sent.filter((e) => e.message_type === "charge").length, 0);
  });

  test("close(): no reconnect, queued calls rejected with `closed`, later calls too", async () => {
    const { client, clock, sockets } = setup();
    client.connect();
    await flush();
    const queued = client.call("echo", 1);
    client.close();
    await assert.rejects(queued, (e) => e.code === "closed");
    await assert.rejects(client.call("echo", 2), (e) => e.code === "closed");
    await clock.advance(3_600_000);
    assert.equal(sockets.length, 1);
    assert.equal(client.state, "closed");
  });

  test("publish sends a publish envelope with its topic and resolves with the reply", async () => {
    const { client, last } = await connected();
    const p = client.publish("chat", { text: "hi" });
    const sent = last().sent.at(-1);
    assert.equal(sent.message_type, "publish");
    assert.equal(sent.topic, "chat");
    last().reply("publish", { topic: "chat", seq: 4, delivered: 2 });
    assert.deepEqual(await p, { topic: "chat", seq: 4, delivered: 2 });
  });
});

describe("topics", () => {
  function message(ws, topic, seq, payload = seq) {
    ws.serverSend({ message_type: "message", topic, seq, payload });
  }

  test("resubscribe with since after a reconnect; the replay is delivered once, in order", async () => {
    const { client, clock, last, named } = await connected();
    const got = [];
    const sub = client.subscribe("chat", (p) => got.push(p));
    last().reply("subscribe", { topic: "chat", seq: 3, epoch: "e1" });
    await flush();
    assert.equal((await sub.ready).seq, 3);
    message(last(), "chat", 4);
    message(last(), "chat", 5);
    last().serverClose(1006);
    await clock.advance(named("closed").at(-1).delay);
    last().serverWelcome();
    const request = last().sent.find((e) => e.message_type === "subscribe");
    assert.deepEqual(request.payload, { since: { seq: 5, epoch: "e1" } });
    last().reply("subscribe", { topic: "chat", seq: 7, epoch: "e1", recovered: true });
    await flush();
    for (const seq of [4, 5, 6, 7, 7, 8]) message(last(), "chat", seq);
    assert.deepEqual(got, [4, 5, 6, 7, 8]);
    assert.deepEqual(named("recovered").at(-1), {
      topic: "chat",
      since: { seq: 5, epoch: "e1" },
      seq: 7,
      epoch: "e1",
      missed: 2,
    });
    assert.deepEqual(named("unrecoverable"), []);
  });

  test("recovered: false is an explicit `unrecoverable` event; new messages keep coming", async () => {
    const { client, clock, last, named } = await connected();
    const got = [];
    client.subscribe("chat", (p) => got.push(p));
    last().reply("subscribe", { topic: "chat", seq: 5, epoch: "e1" });
    await flush();
    last().serverClose(1012, "restart");
    await clock.advance(named("closed").at(-1).delay);
    last().serverWelcome();
    last().reply("subscribe", { topic: "chat", seq: 2, epoch: "e2", recovered: false });
    await flush();
    assert.deepEqual(named("unrecoverable"), [
      { topic: "chat", seq: 2, epoch: "e2", previous: { seq: 5, epoch: "e1" } },
    ]);
    message(last(), "chat", 3);
    assert.deepEqual(got, [3]);
  });

  test("a `reset` (several nodes: a new epoch) is an `unrecoverable` event; the new stream follows", async () => {
    const { client, last, named } = await connected();
    const got = [];
    client.subscribe("chat", (p) => got.push(p));
    last().reply("subscribe", { topic: "chat", seq: 5, epoch: "e1" });
    await flush();
    message(last(), "chat", 6);
    last().serverSend({ message_type: "reset", topic: "chat", payload: { epoch: "e2", seq: 0 } });
    last().serverSend({ message_type: "reset", topic: "other", payload: { epoch: "e2", seq: 0 } });
    message(last(), "chat", 1); // the new stream's first message, not a duplicate of the old 1
    assert.deepEqual(named("unrecoverable"), [
      { topic: "chat", seq: 0, epoch: "e2", previous: { seq: 6, epoch: "e1" } },
    ]);
    assert.deepEqual(got, [6, 1]);
  });

  test("a `dropped` notice: subscribe again with since; live messages wait for the replay", async () => {
    const { client, last, named } = await connected();
    const got = [];
    const drops = [];
    client.on("dropped", (v) => drops.push(v));
    client.subscribe("ticks", (p) => got.push(p));
    last().reply("subscribe", { topic: "ticks", seq: 1, epoch: "e1" });
    await flush();
    message(last(), "ticks", 2);
    last().serverSend({ message_type: "dropped", topic: "ticks", payload: { count: 3 } });
    assert.deepEqual(drops, [{ topic: "ticks", count: 3 }]);
    const again = last().sent.filter((e) => e.message_type === "subscribe");
    assert.equal(again.length, 2);
    assert.deepEqual(again[1].payload, { since: { seq: 2, epoch: "e1" } });
    message(last(), "ticks", 6); // sent right after the notice, before the reply
    last().serverSend({ message_type: "dropped", topic: "ticks", payload: { count: 1 } });
    assert.equal(last().sent.filter((e) => e.message_type === "subscribe").length, 2, "one at a time");
    assert.deepEqual(got, [2]);
    last().reply("subscribe", { topic: "ticks", seq: 8, epoch: "e1", recovered: true });
    await flush();
    for (const seq of [3, 4, 5, 6, 7, 8, 9]) message(last(), "ticks", seq);
    assert.deepEqual(got, [2, 3, 4, 5, 6, 7, 8, 9]);
    assert.equal(named("recovered").at(-1).missed, 6);
    assert.deepEqual(named("unrecoverable"), []);
  });

  test("a `dropped` notice the history cannot fill in is an `unrecoverable` event", async () => {
    const { client, last, named } = await connected();
    const got = [];
    client.subscribe("ticks", (p) => got.push(p));
    last().reply("subscribe", { topic: "ticks", seq: 4, epoch: "e1" });
    await flush();
    last().serverSend({ message_type: "dropped", topic: "ticks", payload: { count: 2 } });
    message(last(), "ticks", 7);
    last().reply("subscribe", { topic: "ticks", seq: 7, epoch: "e1", recovered: false });
    await flush();
    assert.deepEqual(named("unrecoverable"), [
      { topic: "ticks", seq: 7, epoch: "e1", previous: { seq: 4, epoch: "e1" } },
    ]);
    message(last(), "ticks", 8);
    assert.deepEqual(got, [8]);
  });

  test("a server without epochs: a moved seq after reconnect is reported as unrecoverable", async () => {
    const { client, clock, last, named } = await connected();
    client.subscribe("t", () => {});
    last().reply("subscribe", { topic: "t", seq: 5 });
    await flush();
    last().serverClose(1006);
    await clock.advance(named("closed").at(-1).delay);
    last().serverWelcome();
    const request = last().sent.find((e) => e.message_type === "subscribe");
    assert.equal(request.payload, undefined, "no since without an epoch");
    last().reply("subscribe", { topic: "t", seq: 9 });
    await flush();
    assert.equal(named("unrecoverable").length, 1);
  });

  test("one server subscription per topic; unsubscribe only when the last handler leaves", async () => {
    const { client, last } = await connected();
    const a = [];
    const b = [];
    const subA = client.subscribe("t", (p) => a.push(p));
    const subB = client.subscribe("t", (p) => b.push(p));
    assert.equal(last().sent.filter((e) => e.message_type === "subscribe").length, 1);
    last().reply("subscribe", { topic: "t", seq: 0, epoch: "e" });
    await flush();
    message(last(), "t", 1);
    subA.unsubscribe();
    assert.equal(last().sent.filter((e) => e.message_type === "unsubscribe").length, 0);
    message(last(), "t", 2);
    subB.unsubscribe();
    assert.equal(last().sent.at(-1).message_type, "unsubscribe");
    message(last(), "t", 3);
    assert.deepEqual([a, b], [[1], [1, 2]]);
  });

  test("a refused subscription rejects `ready` with the code and is forgotten", async () => {
    const { client, last, named } = await connected();
    const sub = client.subscribe("secret", () => {});
    last().reply("subscribe", { code: "forbidden", message: "no" }, false);
    await assert.rejects(sub.ready, (e) => e.code === "forbidden");
    assert.equal(named("error").at(-1).code, "forbidden");
  });

  test("presence: the reply's list, then join and leave events", async () => {
    const { client, last, named } = await connected();
    const sub = client.subscribe("room", () => {});
    last().reply("subscribe", { topic: "room", seq: 0, epoch: "e", present: [{ conn_id: "c1", principal: "alice" }] });
    await flush();
    const presence = (event, conn_id, principal) =>
      last().serverSend({ message_type: "presence", topic: "room", payload: { event, conn_id, principal } });
    presence("join", "c1", "alice");
    presence("join", "c2", "bob");
    assert.deepEqual(sub.present, [
      { connId: "c1", principal: "alice" },
      { connId: "c2", principal: "bob" },
    ]);
    presence("leave", "c1", "alice");
    assert.deepEqual(sub.present, [{ connId: "c2", principal: "bob" }]);
    assert.deepEqual(
      named("presence").map((p) => `${p.event}:${p.connId}`),
      ["join:c1", "join:c2", "leave:c1"]
    );
  });

  test("server messages that are not replies or topic messages are `message` events", async () => {
    const { last, named } = await connected();
    last().serverSend({ message_type: "status", payload: { up: true } });
    assert.equal(named("message").at(-1).message_type, "status");
    last().serverSend({ message_type: "error", error: { code: "invalid_json", message: "bad" } });
    assert.equal(named("error").at(-1).code, "invalid_json");
  });
});

describe("start", () => {
  // These use the real timers: each test ends with the client closed.
  test("listeners added right after connect() see the first `connecting`", async () => {
    const { FakeWebSocket } = fakeWebSocketClass();
    const client = new WshubClient("ws://hub.test/", { WebSocket: FakeWebSocket, network: null, token: "t" });
    const states = [];
    client.connect().on("state", (s) => states.push(s));
    await flush();
    client.close();
    assert.deepEqual(states, ["connecting", "closed"]);
  });

  test("close() in the same tick as connect() opens nothing", async () => {
    const { FakeWebSocket, sockets } = fakeWebSocketClass();
    const client = new WshubClient("ws://hub.test/", { WebSocket: FakeWebSocket, network: null, token: "t" });
    client.connect();
    client.close();
    await flush();
    assert.equal(sockets.length, 0);
    assert.equal(client.state, "closed");
  });
});
