// wshub.js: the browser client of the wshub envelope protocol (docs/protocol.md).
// One ES module, no dependencies. Types: wshub.d.ts beside this file.

export const SUBPROTOCOL = "wshub.v1";
export const TOKEN_SUBPROTOCOL_PREFIX = "wshub.bearer.";

// Close codes after which retrying with the same token is pointless
// (the server's close-code refusals: unauthorized, forbidden Origin).
const AUTH_CLOSE_CODES = [4401, 4403];
const RATE_LIMIT_CLOSE_CODE = 4429;
// A close code the client uses for its own reasons (RFC 6455 §7.4.2: 4000-4999 are private).
const CLIENT_CLOSE = 4000;

/** An error with a stable code: a server error code, or one of the client's own
 * (`timeout`, `aborted`, `queue_full`, `connection_lost`, `closed`, `unauthorized`). */
export class WshubError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.name = "WshubError";
    this.code = code;
    this.details = details;
  }
}

/** Full-jitter exponential backoff: a random delay in [0, min(max, initial * factor^attempt)). */
export function backoffDelay(attempt, { initial = 500, max = 30000, factor = 2 } = {}, random = Math.random) {
  const ceiling = Math.min(max, initial * Math.pow(factor, attempt));
  return Math.floor(random() * ceiling);
}

function defaultTimers() {
  return {
    setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
    clearTimeout: (handle) => globalThis.clearTimeout(handle),
    now: () => Date.now(),
  };
}

/** A client of one wshub server: connects, reconnects, recovers subscriptions. */
export class WshubClient {
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    this._timers = options.timers || defaultTimers();
    this._random = options.random || Math.random;
    this._backoff = {
      initial: options.backoff?.initial ?? 500,
      max: options.backoff?.max ?? 30000,
      factor: options.backoff?.factor ?? 2,
    };
    this._authMode = options.authMode || "subprotocol";
    this._callTimeout = options.callTimeout ?? 10000;
    this._connectTimeout = options.connectTimeout ?? 10000;
    this._maxQueue = options.maxQueue ?? 100;
    this._refreshBefore = options.refreshBefore ?? 30000;
    this._rateLimitDelay = options.rateLimitDelay ?? 10000;
    this._network = options.network === undefined ? globalThis : options.network;
    this._listeners = new Map();
    this._topics = new Map(); // topic -> {handlers, seq, epoch, present, ready...}
    this._pending = new Map(); // request id -> {resolve, reject, timer, kind}
    this._queue = []; // calls made while not open
    this._nextId = 1;
    this._ws = null;
    this._state = "idle";
    this._attempt = 0;
    this._retryTimer = null;
    this._connectTimer = null;
    this._refreshTimer = null;
    this._wanted = false; // connect() called and close() not
    this._token = undefined; // the token of the current connection
    this._nextToken = undefined; // a token fetched after a refusal, used by the next attempt
    this._expiresAt = null;
    this._offline = false;
    this._opening = false;
    this._welcomed = false;
    this.connId = null;
    this.principal = null;
    this._onOnline = () => this._networkChanged(true);
    this._onOffline = () => this._networkChanged(false);
  }

  /** "idle" | "connecting" | "open" | "closed" */
  get state() {
    return this._state;
  }

  on(event, handler) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  off(event, handler) {
    this._listeners.get(event)?.delete(handler);
  }

  _emit(event, value) {
    const set = this._listeners.get(event);
    if (!set) return;
    for (const handler of [...set]) {
      try {
        handler(value);
      } catch (err) {
        if (event !== "error") this._emit("error", err);
      }
    }
  }

  _setState(state) {
    if (this._state === state) return;
    this._state = state;
    this._emit("state", state);
  }

  // -- connection lifecycle ------------------------------------------------

  /** Start connecting (and reconnecting until `close()`). */
  connect() {
    if (this._wanted) return this;
    this._wanted = true;
    this._attempt = 0;
    const net = this._network;
    if (net && typeof net.addEventListener === "function") {
      net.addEventListener("online", this._onOnline);
      net.addEventListener("offline", this._onOffline);
    }
    this._offline = !!(net && net.navigator && net.navigator.onLine === false);
    // Start on the next microtask, so that listeners added right after
    // `connect(url).on(...)` see the first "connecting" too.
    queueMicrotask(() => {
      if (!this._wanted || this._state === "connecting") return;
      this._setState("connecting");
      if (!this._offline) this._open();
    });
    return this;
  }

  /** Close for good: no reconnect; queued and pending calls are rejected with `closed`. */
  close(code = 1000, reason = "") {
    const ws = this._ws;
    this._stop();
    if (ws) {
      this._detach(ws);
      try {
        ws.close(code, reason);
      } catch {
        /* already closed */
      }
    }
    this._finish(code, reason, "closed");
  }

  _stop() {
    this._wanted = false;
    this._clearTimers();
    const net = this._network;
    if (net && typeof net.removeEventListener === "function") {
      net.removeEventListener("online", this._onOnline);
      net.removeEventListener("offline", this._onOffline);
    }
  }

  _clearTimers() {
    const t = this._timers;
    for (const name of ["_retryTimer", "_connectTimer", "_refreshTimer"]) {
      if (this[name] !== null) t.clearTimeout(this[name]);
      this[name] = null;
    }
  }

  _finish(code, reason, errorCode) {
    this._ws = null;
    this._failPending(new WshubError("connection_lost", "connection lost before the reply"));
    const queued = this._queue.splice(0);
    for (const item of queued) item.fail(new WshubError(errorCode, `client closed (${code} ${reason})`));
    if (this._state !== "closed") {
      this._setState("closed");
      this._emit("closed", { code, reason, willRetry: false });
    }
  }

  async _tokenForAttempt() {
    if (this._nextToken !== undefined) {
      const token = this._nextToken;
      this._nextToken = undefined;
      return token;
    }
    const source = this.options.token;
    if (typeof source !== "function") return source ?? null;
    return this._unwrapToken(await source());
  }

  _unwrapToken(value) {
    if (value && typeof value === "object") {
      if (typeof value.expiresAt === "number") this._expiresAt = value.expiresAt;
      return value.token ?? null;
    }
    this._expiresAt = null;
    return value ?? null;
  }

  async _open() {
    this._retryTimer = null;
    if (this._opening || this._ws) return;
    this._opening = true;
    this._emit("connecting", { attempt: this._attempt });
    let token;
    try {
      token = await this._tokenForAttempt();
    } catch (err) {
      this._opening = false;
      this._emit("error", err);
      if (this._wanted) this._retry(1006, "token callback failed");
      return;
    }
    this._opening = false;
    if (!this._wanted || this._ws) return;
    this._token = token;
    const protocols = [SUBPROTOCOL];
    if (token && this._authMode === "subprotocol") protocols.push(TOKEN_SUBPROTOCOL_PREFIX + token);
    let ws;
    try {
      ws = new this._WebSocket(this.url, protocols);
    } catch (err) {
      // A token a browser cannot put in a subprotocol throws SyntaxError here.
      this._emit("error", err);
      this._stop();
      this._finish(1006, String(err && err.message), "closed");
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    ws.onopen = () => this._opened(ws);
    ws.onmessage = (event) => this._received(ws, event.data);
    ws.onerror = () => this._emit("error", new WshubError("transport", "WebSocket error"));
    ws.onclose = (event) => this._closed(ws, event.code, event.reason || "");
    this._connectTimer = this._timers.setTimeout(() => {
      this._connectTimer = null;
      if (this._ws === ws && !this._welcomed) this._drop(ws, "connect timeout");
    }, this._connectTimeout);
  }

  _opened(ws) {
    if (this._ws !== ws) return;
    if (this._authMode === "message") {
      const id = this._nextId++;
      this._pending.set(id, {
        kind: "auth",
        resolve: (payload) => this._authenticated(payload),
        reject: () => {},
        timer: null,
      });
      this._send({ message_type: "auth", id, payload: { token: this._token } });
    }
  }

  _authenticated(payload) {
    if (payload && typeof payload.expires_at === "number") this._expiresAt = payload.expires_at * 1000;
  }

  /** Close the socket as if the network dropped it; the client reconnects. */
  _drop(ws, reason) {
    this._detach(ws);
    try {
      ws.close(CLIENT_CLOSE, reason);
    } catch {
      /* already closed */
    }
    this._closed(ws, 1006, reason, true);
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
  }

  _closed(ws, code, reason, detached = false) {
    if (this._ws !== ws) return;
    if (!detached) this._detach(ws);
    this._ws = null;
    this.connId = null;
    const t = this._timers;
    if (this._connectTimer !== null) t.clearTimeout(this._connectTimer);
    if (this._refreshTimer !== null) t.clearTimeout(this._refreshTimer);
    this._connectTimer = this._refreshTimer = null;
    this._failPending(new WshubError("connection_lost", `connection lost (${code} ${reason})`));
    if (!this._wanted) return;
    // With first-message auth a refused token is 1008 before the welcome; an
    // authentication *timeout* (a slow network) is worth retrying.
    const authFailure =
      AUTH_CLOSE_CODES.includes(code) ||
      (this._authMode === "message" && !this._welcomed && code === 1008 && !/timeout/i.test(reason));
    if (authFailure) {
      this._refused(code, reason);
      return;
    }
    this._retry(code, reason);
  }

  /** 4401/4403: retry only if the token callback now yields a different token. */
  async _refused(code, reason) {
    const source = this.options.token;
    let fresh = null;
    if (typeof source === "function") {
      try {
        fresh = this._unwrapToken(await source());
      } catch (err) {
        this._emit("error", err);
      }
    }
    if (!this._wanted) return;
    if (fresh && fresh !== this._token) {
      this._nextToken = fresh;
      this._retry(code, reason);
      return;
    }
    this._stop();
    this._emit("error", new WshubError("unauthorized", `refused: ${code} ${reason}`));
    this._finish(code, reason, "unauthorized");
  }

  _retry(code, reason) {
    let delay = backoffDelay(this._attempt, this._backoff, this._random);
    if (code === RATE_LIMIT_CLOSE_CODE) {
      const match = /retry after (\d+)/i.exec(reason);
      const wait = match ? Number(match[1]) * 1000 : this._rateLimitDelay;
      delay = Math.max(delay, wait);
    }
    this._attempt += 1;
    this._setState("connecting");
    this._emit("closed", { code, reason, willRetry: true, delay: this._offline ? null : delay });
    if (this._offline) return; // the `online` event reconnects
    this._retryTimer = this._timers.setTimeout(() => this._open(), delay);
  }

  _networkChanged(online) {
    if (!this._wanted) return;
    this._offline = !online;
    if (!online) {
      if (this._retryTimer !== null) this._timers.clearTimeout(this._retryTimer);
      this._retryTimer = null;
      if (this._ws) this._drop(this._ws, "offline");
      return;
    }
    if (!this._ws && this._retryTimer === null) {
      this._attempt = 0;
      this._open();
    } else if (this._retryTimer !== null) {
      this._timers.clearTimeout(this._retryTimer);
      this._attempt = 0;
      this._open();
    }
  }

  _welcome(payload) {
    this._welcomed = true;
    this._attempt = 0;
    if (this._connectTimer !== null) this._timers.clearTimeout(this._connectTimer);
    this._connectTimer = null;
    this.connId = payload?.conn_id ?? null;
    this.principal = payload?.principal ?? null;
    this._setState("open");
    this._emit("open", { connId: this.connId, principal: this.principal });
    for (const [topic, sub] of this._topics) this._subscribe(topic, sub);
    for (const item of this._queue.splice(0)) item.send();
    this._scheduleRefresh();
  }

  // -- token refresh -------------------------------------------------------

  _scheduleRefresh() {
    if (this._refreshTimer !== null) this._timers.clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (this._expiresAt === null || typeof this.options.token !== "function") return;
    const wait = Math.max(0, this._expiresAt - this._refreshBefore - this._timers.now());
    this._refreshTimer = this._timers.setTimeout(() => {
      this._refreshTimer = null;
      this.refreshToken().catch((err) => this._emit("error", err));
    }, wait);
  }

  /** Fetch a token from the callback and send it on the open connection (an `auth` message). */
  async refreshToken() {
    const token = this._unwrapToken(await this.options.token());
    if (!token) throw new WshubError("unauthorized", "the token callback gave no token");
    const reply = await this._request({ message_type: "auth", payload: { token } }, this._callTimeout);
    this._token = token;
    if (reply && typeof reply.expires_at === "number") this._expiresAt = reply.expires_at * 1000;
    this._emit("refreshed", { expiresAt: this._expiresAt });
    this._scheduleRefresh();
    return reply;
  }

  // -- frames --------------------------------------------------------------

  _send(envelope) {
    this._ws.send(JSON.stringify(envelope));
  }

  _received(ws, data) {
    if (this._ws !== ws || typeof data !== "string") return;
    let env;
    try {
      env = JSON.parse(data);
    } catch {
      this._emit("error", new WshubError("invalid_json", "the server sent a frame that is not JSON"));
      return;
    }
    if (!env || typeof env !== "object") return;
    const type = env.message_type;
    if (type === "reply") return this._reply(env);
    if (type === "welcome") return this._welcome(env.payload);
    if (type === "error") {
      const e = env.error || {};
      this._emit("error", new WshubError(e.code || "error", e.message, env));
      return;
    }
    if (typeof env.topic === "string") {
      if (type === "presence") return this._presence(env);
      if (type === "dropped") return this._dropped(env);
      if (type === "reset") return this._reset(env);
      if (typeof env.seq === "number") return this._topicMessage(env);
    }
    this._emit("message", env);
  }

  _reply(env) {
    const entry = this._pending.get(env.id);
    if (!entry) return; // timed out or aborted: the late reply is dropped
    this._pending.delete(env.id);
    if (entry.timer !== null) this._timers.clearTimeout(entry.timer);
    if (env.ok) {
      entry.resolve(env.payload);
    } else {
      const e = env.error || {};
      entry.reject(new WshubError(e.code || "error", e.message, env));
    }
  }

  _failPending(error) {
    const entries = [...this._pending.values()];
    this._pending.clear();
    for (const entry of entries) {
      if (entry.timer !== null) this._timers.clearTimeout(entry.timer);
      entry.reject(error);
    }
  }

  /** Send one request with an id now; the promise settles with its reply. */
  _request(envelope, timeout) {
    return new Promise((resolve, reject) => {
      if (this._state !== "open" || !this._ws) {
        reject(new WshubError("connection_lost", "not connected"));
        return;
      }
      const id = this._nextId++;
      const entry = { resolve, reject, timer: null };
      if (timeout > 0 && timeout !== Infinity) {
        entry.timer = this._timers.setTimeout(() => {
          this._pending.delete(id);
          reject(new WshubError("timeout", `no reply within ${timeout} ms`));
        }, timeout);
      }
      this._pending.set(id, entry);
      this._send({ ...envelope, id });
    });
  }

  // -- commands and publishes ----------------------------------------------

  /** Call a server command; resolves with the reply's payload, rejects with a WshubError. */
  call(messageType, payload = null, options = {}) {
    return this._enqueue({ message_type: messageType, payload }, options);
  }

  /** Publish to a topic; resolves with `{topic, seq, delivered}`. */
  publish(topic, payload, options = {}) {
    return this._enqueue({ message_type: "publish", topic, payload }, options);
  }

  _enqueue(envelope, { timeout = this._callTimeout, signal } = {}) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new WshubError("aborted", "aborted before it was sent"));
        return;
      }
      if (this._state === "closed") {
        reject(new WshubError("closed", "the client is closed; call connect() again"));
        return;
      }
      let done = false;
      let timer = null;
      let id = null;
      const settle = (fn, value) => {
        if (done) return;
        done = true;
        if (timer !== null) this._timers.clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        fn(value);
      };
      const item = {
        send: () => {
          id = this._nextId++;
          this._pending.set(id, {
            resolve: (v) => settle(resolve, v),
            reject: (e) => settle(reject, e),
            timer: null,
          });
          this._send({ ...envelope, id });
        },
        fail: (err) => settle(reject, err),
      };
      const forget = () => {
        const at = this._queue.indexOf(item);
        if (at >= 0) this._queue.splice(at, 1);
        if (id !== null) this._pending.delete(id);
      };
      const onAbort = () => {
        forget();
        settle(reject, new WshubError("aborted", "aborted by its signal"));
      };
      signal?.addEventListener("abort", onAbort);
      if (timeout > 0 && timeout !== Infinity) {
        timer = this._timers.setTimeout(() => {
          forget();
          settle(reject, new WshubError("timeout", `no reply within ${timeout} ms`));
        }, timeout);
      }
      if (this._state === "open" && this._ws) {
        item.send();
      } else if (this._queue.length >= this._maxQueue) {
        settle(reject, new WshubError("queue_full", `${this._maxQueue} calls already wait for the connection`));
      } else {
        this._queue.push(item);
      }
    });
  }

  // -- topics --------------------------------------------------------------

  /** Subscribe `onMessage(payload, envelope)` to a topic; renewed with `since` after reconnects. */
  subscribe(topic, onMessage) {
    let sub = this._topics.get(topic);
    const handler = { onMessage };
    if (!sub) {
      sub = { handlers: new Set(), seq: null, epoch: null, present: new Map(), ready: null, settle: null, filling: false };
      sub.ready = new Promise((resolve, reject) => (sub.settle = { resolve, reject }));
      sub.ready.catch(() => {}); // a refusal is also reported as an "error" event
      this._topics.set(topic, sub);
      if (this._state === "open") this._subscribe(topic, sub);
    }
    sub.handlers.add(handler);
    const client = this;
    return {
      topic,
      ready: sub.ready,
      get seq() {
        return sub.seq;
      },
      get epoch() {
        return sub.epoch;
      },
      get present() {
        return [...sub.present].map(([connId, principal]) => ({ connId, principal }));
      },
      unsubscribe() {
        if (!sub.handlers.delete(handler) || sub.handlers.size > 0) return;
        if (client._topics.get(topic) !== sub) return;
        client._topics.delete(topic);
        if (client._state === "open" && client._ws) {
          client._request({ message_type: "unsubscribe", topic }, client._callTimeout).catch(() => {});
        }
      },
    };
  }

  _subscribe(topic, sub) {
    const since = sub.seq !== null && sub.epoch !== null ? { seq: sub.seq, epoch: sub.epoch } : null;
    const envelope = { message_type: "subscribe", topic };
    if (since) envelope.payload = { since };
    this._request(envelope, this._callTimeout).then(
      (reply) => this._subscribed(topic, sub, since, reply || {}),
      (err) => {
        if (this._topics.get(topic) !== sub || err.code === "connection_lost") return;
        if (err.code === "timeout" && this._ws) return this._drop(this._ws, "subscribe timeout");
        this._topics.delete(topic);
        sub.settle.reject(err);
        this._emit("error", err);
      }
    );
  }

  _subscribed(topic, sub, since, reply) {
    if (this._topics.get(topic) !== sub) return;
    sub.filling = false;
    sub.present = new Map();
    for (const p of reply.present || []) sub.present.set(p.conn_id, p.principal);
    const seq = typeof reply.seq === "number" ? reply.seq : 0;
    const epoch = typeof reply.epoch === "string" ? reply.epoch : null;
    const previous = sub.seq === null ? null : { seq: sub.seq, epoch: sub.epoch };
    if (since && reply.recovered === true) {
      this._emit("recovered", { topic, since, seq, epoch, missed: Math.max(0, seq - since.seq) });
    } else if (previous && (reply.recovered === false || seq !== previous.seq)) {
      // Told we missed messages (or a server without epochs moved on): never a silent gap.
      sub.seq = seq;
      this._emit("unrecoverable", { topic, seq, epoch, previous });
    } else {
      sub.seq = seq;
    }
    sub.epoch = epoch;
    sub.settle.resolve(reply);
  }

  /** The server skipped messages of a `drop` topic (this client read too slowly):
   * subscribe again from the last one seen, so that the server replays them
   * from its history (`recovered`) or says it cannot (`unrecoverable`). Until
   * that reply, live messages of the topic are left out: each of them comes
   * before the reply, so the replay holds it again. */
  _dropped(env) {
    this._emit("dropped", { topic: env.topic, count: env.payload?.count });
    const sub = this._topics.get(env.topic);
    if (!sub || sub.filling || sub.seq === null || sub.epoch === null || this._state !== "open") return;
    sub.filling = true;
    this._subscribe(env.topic, sub);
  }

  /** A server spanning several nodes could not go on from this client's
   * position (its broker lost the stream, or the history no longer reached
   * back): the stream goes on after the notice's position. Never a silent
   * gap: an `unrecoverable` event, as for `recovered: false`. */
  _reset(env) {
    const sub = this._topics.get(env.topic);
    const p = env.payload || {};
    if (!sub || typeof p.seq !== "number" || typeof p.epoch !== "string") return;
    const previous = sub.seq === null ? null : { seq: sub.seq, epoch: sub.epoch };
    sub.seq = p.seq;
    sub.epoch = p.epoch;
    this._emit("unrecoverable", { topic: env.topic, seq: p.seq, epoch: p.epoch, previous });
  }

  _topicMessage(env) {
    const sub = this._topics.get(env.topic);
    if (!sub || sub.filling) return;
    if (sub.seq !== null && env.seq <= sub.seq) return; // already seen (replayed twice)
    sub.seq = env.seq;
    for (const handler of [...sub.handlers]) {
      try {
        handler.onMessage(env.payload, env);
      } catch (err) {
        this._emit("error", err);
      }
    }
  }

  _presence(env) {
    const sub = this._topics.get(env.topic);
    const p = env.payload || {};
    if (sub) {
      if (p.event === "join") sub.present.set(p.conn_id, p.principal);
      else if (p.event === "leave") sub.present.delete(p.conn_id);
    }
    this._emit("presence", { topic: env.topic, event: p.event, connId: p.conn_id, principal: p.principal });
  }
}

/** `new WshubClient(url, options).connect()` */
export function connect(url, options) {
  return new WshubClient(url, options).connect();
}
