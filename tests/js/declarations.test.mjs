// wshub.d.ts against wshub.js itself (node --test): tsc checks the declarations
// against a usage file, never against the module, so here every name the
// declarations promise must exist at run time, and every public name of the
// module must be declared.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as wshub from "../../wshub/static/wshub.js";
import { fakeWebSocketClass } from "./fakes.mjs";

const STATIC = new URL("../../wshub/static/", import.meta.url);
const declarations = readFileSync(new URL("wshub.d.ts", STATIC), "utf8");
const source = readFileSync(new URL("wshub.js", STATIC), "utf8");

/** The body of `export (declare class|interface) name ... { ... }` (no nested braces at its level). */
function block(kind, name) {
  const start = declarations.search(new RegExp(`export ${kind} ${name}\\b[^{]*\\{`));
  assert.notEqual(start, -1, `${kind} ${name} is not declared`);
  let depth = 0;
  for (let i = declarations.indexOf("{", start); i < declarations.length; i++) {
    if (declarations[i] === "{") depth++;
    if (declarations[i] === "}" && --depth === 0) return declarations.slice(declarations.indexOf("{", start) + 1, i);
  }
  throw new Error(`unterminated ${name}`);
}

/** Member names declared at the top level of a block (comments skipped). */
function members(body) {
  const names = new Set();
  let depth = 0;
  for (const raw of body.replace(/\/\*[\s\S]*?\*\//g, "").split("\n")) {
    const line = raw.trim();
    const match = depth === 0 && /^(?:readonly\s+)?([A-Za-z_$][\w$]*)\??\s*[<(:]/.exec(line);
    if (match && match[1] !== "constructor") names.add(match[1]);
    depth += (line.match(/[{(]/g) || []).length - (line.match(/[})]/g) || []).length;
  }
  return names;
}

const sorted = (names) => [...names].sort();

function client() {
  const { FakeWebSocket } = fakeWebSocketClass();
  return new wshub.WshubClient("ws://hub.test/", { WebSocket: FakeWebSocket, network: null, token: "t" });
}

test("the module exports exactly the values the declarations name", () => {
  const declared = [...declarations.matchAll(/^export declare (?:const|class|function) (\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(sorted(declared), sorted(Object.keys(wshub)));
});

test("WshubClient: every declared member exists, every public member is declared", () => {
  const declared = members(block("declare class", "WshubClient"));
  const c = client();
  for (const name of declared) assert.ok(name in c, `declared WshubClient.${name} is missing`);
  const own = Object.keys(c).filter((name) => !name.startsWith("_") && name !== "options");
  const methods = Object.getOwnPropertyNames(wshub.WshubClient.prototype).filter(
    (name) => !name.startsWith("_") && name !== "constructor",
  );
  for (const name of [...own, ...methods]) assert.ok(declared.has(name), `WshubClient.${name} is not declared`);
});

test("WshubError: its declared fields are set", () => {
  const error = new wshub.WshubError("timeout", "late", { x: 1 });
  for (const name of members(block("declare class", "WshubError"))) {
    assert.ok(name in error, `declared WshubError.${name} is missing`);
  }
  assert.equal(error.name, "WshubError");
});

test("Subscription: what subscribe() returns has exactly the declared members", () => {
  const c = client();
  const sub = c.subscribe("t", () => {});
  assert.deepEqual(sorted(members(block("interface", "Subscription"))), sorted(Object.keys(sub)));
  c.close();
});

test("EventMap: exactly the events the client emits", () => {
  const emitted = new Set([...source.matchAll(/_emit\("(\w+)"/g)].map((m) => m[1]));
  assert.deepEqual(sorted(members(block("interface", "EventMap"))), sorted(emitted));
});

test("ClientOptions: exactly the options the client reads", () => {
  const read = new Set([...source.matchAll(/\boptions\.(\w+)/g)].map((m) => m[1]));
  assert.deepEqual(sorted(members(block("interface", "ClientOptions"))), sorted(read));
});
