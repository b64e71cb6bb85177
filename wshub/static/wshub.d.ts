// Type declarations of wshub.js (the browser client of the wshub envelope protocol).

export declare const SUBPROTOCOL: "wshub.v1";
export declare const TOKEN_SUBPROTOCOL_PREFIX: "wshub.bearer.";

/** Stable error codes: the server's (docs/protocol.md) and the client's own. */
export type ErrorCode =
  | "invalid_json"
  | "invalid_envelope"
  | "payload_too_deep"
  | "payload_too_large"
  | "unknown_message_type"
  | "unknown_command"
  | "forbidden"
  | "duplicate_id"
  | "too_many_subscriptions"
  | "command_failed"
  | "command_timeout"
  | "too_many_pending"
  | "shutting_down"
  | "unauthorized"
  | "rate_limited"
  // the client's own
  | "timeout"
  | "aborted"
  | "queue_full"
  | "connection_lost"
  | "closed"
  | "transport"
  | (string & {});

export declare class WshubError extends Error {
  constructor(code: ErrorCode, message?: string, details?: unknown);
  readonly name: "WshubError";
  /** A stable code: compare this, never the message. */
  readonly code: ErrorCode;
  /** The server's envelope, when the error came from one. */
  readonly details: unknown;
}

export interface Envelope<P = unknown> {
  message_type: string;
  payload: P;
  timestamp: number;
  id?: string | number;
  topic?: string;
  seq?: number;
  ok?: boolean;
  error?: { code: string; message: string };
}

/** A token, or a token with its expiry in ms since the epoch (refreshed `refreshBefore` ms earlier). */
export type TokenValue = string | { token: string; expiresAt?: number } | null | undefined;
/** Called before every (re)connect and before expiry: fetch a fresh token here. */
export type TokenCallback = () => TokenValue | Promise<TokenValue>;

export interface BackoffOptions {
  /** First ceiling of the random delay, ms (default 500). */
  initial?: number;
  /** Largest ceiling, ms (default 30000). */
  max?: number;
  /** Growth of the ceiling per failed attempt (default 2). */
  factor?: number;
}

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

/** What the client listens to for `online`/`offline` (default: `globalThis`, i.e. `window`). */
export interface NetworkEvents {
  addEventListener(type: "online" | "offline", listener: () => void): void;
  removeEventListener(type: "online" | "offline", listener: () => void): void;
  navigator?: { onLine?: boolean };
}

export interface WebSocketLike {
  readonly protocol?: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export interface ClientOptions {
  /** A static token, or a callback called at every (re)connect and refresh. */
  token?: string | TokenCallback | null;
  /** "subprotocol" (default): `["wshub.v1", "wshub.bearer." + token]`; "message": a first `auth` message. */
  authMode?: "subprotocol" | "message";
  backoff?: BackoffOptions;
  /** Default timeout of `call` and `publish`, ms (default 10000; 0 or Infinity: none). */
  callTimeout?: number;
  /** Time from opening the socket to the server's `welcome`, ms (default 10000). */
  connectTimeout?: number;
  /** Calls and publishes kept while not connected (default 100); beyond, `queue_full`. */
  maxQueue?: number;
  /** Refresh the token this many ms before it expires (default 30000). */
  refreshBefore?: number;
  /** Least delay after a 4429 close whose reason names none, ms (default 10000). */
  rateLimitDelay?: number;
  /** `null`: ignore the browser's online/offline events. */
  network?: NetworkEvents | null;
  /** Tests: a WebSocket constructor, timers and a random source. */
  WebSocket?: new (url: string, protocols: string[]) => WebSocketLike;
  timers?: Timers;
  random?: () => number;
}

export type State = "idle" | "connecting" | "open" | "closed";

export interface ClosedEvent {
  code: number;
  reason: string;
  /** False when the client stopped: `close()`, or 4401/4403 without a new token. */
  willRetry: boolean;
  /** ms until the next attempt (`null` while the browser is offline). */
  delay?: number | null;
}

export interface PresenceEvent {
  topic: string;
  event: "join" | "leave";
  connId: string;
  principal: string;
}

export interface StreamPosition {
  seq: number;
  epoch: string | null;
}

export interface UnrecoverableEvent {
  topic: string;
  /** Where the topic stands now; messages from here on arrive as usual. */
  seq: number;
  epoch: string | null;
  /** What this client had seen before the gap. */
  previous: StreamPosition;
}

export interface RecoveredEvent {
  topic: string;
  since: StreamPosition;
  seq: number;
  epoch: string | null;
  /** How many messages the server replays after its reply. */
  missed: number;
}

export interface EventMap {
  state: State;
  connecting: { attempt: number };
  open: { connId: string | null; principal: string | null };
  closed: ClosedEvent;
  error: Error;
  /** Server messages that are not replies nor topic messages (broadcast, send_to...). */
  message: Envelope;
  presence: PresenceEvent;
  unrecoverable: UnrecoverableEvent;
  recovered: RecoveredEvent;
  /** The server skipped `count` messages of a `drop` topic; the client subscribes
   * again with `since`, then says `recovered` or `unrecoverable`. */
  dropped: { topic: string; count: number };
  refreshed: { expiresAt: number | null };
}

export interface SubscribeReply {
  topic: string;
  seq: number;
  epoch?: string;
  recovered?: boolean;
  present?: { conn_id: string; principal: string }[];
}

export interface Subscription {
  readonly topic: string;
  /** Settles with the first subscribe reply; rejects with a WshubError (e.g. `forbidden`). */
  readonly ready: Promise<SubscribeReply>;
  /** The last `seq` seen (or the topic's position when subscribed). */
  readonly seq: number | null;
  readonly epoch: string | null;
  /** Subscribers of a topic with presence, kept up to date by join/leave events. */
  readonly present: { connId: string; principal: string }[];
  unsubscribe(): void;
}

export interface CallOptions {
  /** ms (default: the client's `callTimeout`); counts from the call, queued time included. */
  timeout?: number;
  signal?: AbortSignal;
}

export interface PublishReply {
  topic: string;
  seq: number;
  delivered: number;
}

export declare class WshubClient {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly state: State;
  connId: string | null;
  principal: string | null;
  connect(): this;
  close(code?: number, reason?: string): void;
  on<K extends keyof EventMap>(event: K, handler: (value: EventMap[K]) => void): () => void;
  off<K extends keyof EventMap>(event: K, handler: (value: EventMap[K]) => void): void;
  call<R = unknown>(messageType: string, payload?: unknown, options?: CallOptions): Promise<R>;
  publish(topic: string, payload: unknown, options?: CallOptions): Promise<PublishReply>;
  subscribe<P = unknown>(topic: string, onMessage: (payload: P, envelope: Envelope<P>) => void): Subscription;
  refreshToken(): Promise<unknown>;
}

/** Full-jitter exponential backoff: a random delay in [0, min(max, initial * factor^attempt)). */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** `new WshubClient(url, options).connect()` */
export declare function connect(url: string, options?: ClientOptions): WshubClient;
