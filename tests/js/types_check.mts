// Compiled by tsc --noEmit --strict (tests/test_js_client.py): the declarations
// in wshub/static/wshub.d.ts describe the API the way the README uses it.
import {
  backoffDelay,
  connect,
  type ClosedEvent,
  type Envelope,
  type PublishReply,
  type Subscription,
  WshubClient,
  WshubError,
} from "../../wshub/static/wshub.js";

const hub: WshubClient = connect("ws://127.0.0.1:8765/", {
  token: async () => ({ token: "t", expiresAt: Date.now() + 60_000 }),
  backoff: { initial: 250, max: 10_000 },
  maxQueue: 50,
});
const sub: Subscription = hub.subscribe<{ text: string }>("chat", (payload, envelope) => {
  const text: string = payload.text;
  const seq: number | undefined = envelope.seq;
  console.log(text, seq);
});
sub.ready.then((reply) => console.log(reply.seq, reply.epoch, reply.recovered));
const present: { connId: string; principal: string }[] = sub.present;
hub.on("closed", (e: ClosedEvent) => console.log(e.code, e.reason, e.willRetry));
hub.on("unrecoverable", (e) => console.log(e.topic, e.previous.seq, e.epoch));
hub.on("presence", (e) => console.log(e.event === "join" ? e.principal : e.connId));
hub.on("message", (e: Envelope) => console.log(e.message_type));
const off: () => void = hub.on("state", (s) => console.log(s === "open"));
off();
const ctl = new AbortController();
const sum: Promise<number> = hub.call<number>("add", [1, 2], { timeout: 1000, signal: ctl.signal });
sum.catch((e: unknown) => {
  if (e instanceof WshubError && e.code === "timeout") console.log(e.message);
});
const published: Promise<PublishReply> = hub.publish("chat", { text: "hi" });
published.then((r) => console.log(r.seq + r.delivered));
const delay: number = backoffDelay(3, { initial: 100 });
console.log(delay, present.length);
sub.unsubscribe();
hub.close(1000, "bye");

// @ts-expect-error: the topic must be a string
hub.subscribe(42, () => {});
// @ts-expect-error: unknown event name
hub.on("nope", () => {});
