// The wshub demo page: a chat on topic "demo.chat" built on /wshub.js.
import { WshubClient } from "/wshub.js";

const TOPIC = "demo.chat";
const $ = (id) => document.getElementById(id);
const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
if (hashToken) {
  sessionStorage.setItem("wshub-token", hashToken);
  history.replaceState(null, "", location.pathname); // keep the token out of the address bar
}

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const hub = new WshubClient(`${scheme}//${location.host}/`, {
  token: () => sessionStorage.getItem("wshub-token"),
  backoff: { initial: 300, max: 5000 },
});
window.hub = hub; // for the console (and the browser tests)
const stats = { recovered: 0, unrecoverable: 0, received: [] };
window.demo = stats;

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("log").prepend(li);
}

function banner(text, kind) {
  const el = $("banner");
  el.textContent = text;
  el.className = kind;
  el.hidden = false;
}

hub.on("state", (state) => {
  const pill = $("state");
  pill.textContent = state;
  pill.className = `pill ${state}`;
  log(`state: ${state}`);
});
hub.on("open", ({ connId, principal }) => {
  $("who").textContent = `${principal} · ${connId}`;
  renderPresence();
});
hub.on("closed", ({ code, reason, willRetry, delay }) => {
  log(`closed ${code} ${reason || ""}${willRetry ? ` · retry in ${delay ?? "(offline)"} ms` : ""}`);
  if (!willRetry && (code === 4401 || code === 4403)) {
    sessionStorage.removeItem("wshub-token");
    showLogin(`Refused (${code} ${reason}). Check the token.`);
  }
});
hub.on("recovered", ({ missed }) => {
  stats.recovered += missed;
  banner(`Reconnected: ${missed} missed message${missed === 1 ? "" : "s"} recovered from history.`, "good");
  log(`recovered ${missed}`);
});
hub.on("unrecoverable", ({ previous, seq, epoch }) => {
  stats.unrecoverable += 1;
  const stream = epoch !== previous.epoch ? "a new stream: the server restarted" : "history did not reach back";
  banner(`Messages sent while away were lost (#${previous.seq} → #${seq}, ${stream}).`, "bad");
  log("unrecoverable");
});
hub.on("presence", renderPresence);

let subscription = null;
const myName = () => $("name").value.trim() || "anonymous";
$("name").value = localStorage.getItem("wshub-name") || `guest-${Math.floor(Math.random() * 900 + 100)}`;
$("name").addEventListener("change", () => localStorage.setItem("wshub-name", myName()));

function showMessage(payload, env, recovering) {
  stats.received.push(env.seq);
  const li = document.createElement("li");
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("strong");
  who.textContent = String(payload?.name ?? "?");
  const when = document.createElement("span");
  when.textContent = `#${env.seq} · ${new Date(env.timestamp).toLocaleTimeString()}`;
  meta.append(who, when);
  if (recovering) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "recovered";
    meta.append(badge);
    li.classList.add("recovered");
  }
  if (payload?.from === hub.connId) li.classList.add("mine");
  const text = document.createElement("div");
  text.textContent = String(payload?.text ?? JSON.stringify(payload));
  li.append(meta, text);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

let replayUntil = 0; // messages up to this seq arrive as a replay
hub.on("recovered", ({ seq }) => (replayUntil = seq));

function renderPresence() {
  const list = $("presence");
  list.replaceChildren();
  const present = subscription ? subscription.present : [];
  for (const { connId, principal } of present) {
    const li = document.createElement("li");
    li.textContent = `${principal} · ${connId}${connId === hub.connId ? " (you)" : ""}`;
    list.append(li);
  }
  $("count").textContent = `(${present.length})`;
}

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  subscription = hub.subscribe(TOPIC, (payload, env) => showMessage(payload, env, env.seq <= replayUntil));
  subscription.ready.then(renderPresence, (err) => banner(`subscribe refused: ${err.code}`, "bad"));
  hub.connect();
}

function showLogin(message) {
  $("app").hidden = true;
  $("login").hidden = false;
  if (message) $("login").querySelector("p").textContent = message;
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("wshub-token", $("token").value.trim());
  if (subscription) hub.connect();
  else start();
});

$("compose").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  try {
    await hub.publish(TOPIC, { name: myName(), text, from: hub.connId });
  } catch (err) {
    log(`publish failed: ${err.code}`);
  }
});

for (const button of document.querySelectorAll("[data-command]")) {
  button.addEventListener("click", async () => {
    const name = button.dataset.command;
    const payload = name === "echo" ? { hello: myName(), at: Date.now() } : null;
    const started = performance.now();
    try {
      const reply = await hub.call(name, payload, { timeout: 5000 });
      $("reply").textContent = `${name} → ${JSON.stringify(reply, null, 1)}\n(${(performance.now() - started).toFixed(1)} ms)`;
    } catch (err) {
      $("reply").textContent = `${name} → error ${err.code}: ${err.message}`;
    }
  });
}

$("drop").addEventListener("click", () => {
  hub.close(1000, "offline for 5 s");
  banner("Offline for 5 s: messages sent meanwhile are recovered on reconnect (with history on).", "good");
  setTimeout(() => hub.connect(), 5000);
});

if (sessionStorage.getItem("wshub-token")) start();
else showLogin();
