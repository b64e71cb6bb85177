"""wshub.js and the demo page end to end in real Chromium, against ``wshub serve``.

The browser is Debian's ``chromium`` driven over the DevTools protocol
(``tests/cdp.py``); the server is a ``wshub serve`` process that tests kill
and restart. Skipped with the reason when chromium is absent, failed instead
under ``CI=true``. Screenshots of the demo and the measured reconnect
figures are written to ``build/browser/``.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cdp import Browser, Page
from js_tools import ROOT, STATIC, require_binary

from wshub.core.tokens import SignedTokens, parse_key_file

ARTIFACTS = ROOT / "build" / "browser"
EVENTS = ["state", "open", "closed", "error", "unrecoverable", "recovered", "presence", "refreshed"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HubProcess:
    """``wshub serve --demo`` on a fixed port, to kill and restart; its log kept."""

    def __init__(self, log: Path, *args: str) -> None:
        self.args = args
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[str] | None = None
        self.listening_at = 0.0  # wall clock, ms

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [sys.executable, "-m", "wshub", "--log-level", "INFO", "serve", "--demo"]
        command += ["--port", str(self.port), *self.args]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while not line.startswith("listening on "):
            ready, _, _ = select.select([self.process.stdout], [], [], 1.0)
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"wshub serve did not start: {self.log.read_text()[-2000:]}")
            if ready:
                line = self.process.stdout.readline()
        self.listening_at = time.time() * 1000

    def kill(self) -> None:
        """SIGKILL: no close frames, no goodbye (a crash, or a machine gone)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def count(self, text: str) -> int:
        return self.log.read_text().count(text)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_binary("chromium", "chromium-browser")
    instance = Browser(chromium)
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[Any]:
    started: list[HubProcess] = []

    def start(*args: str) -> HubProcess:
        process = HubProcess(tmp_path / f"server{len(started)}.log", *args)
        started.append(process)
        process.start()
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def pages(browser: Browser) -> Iterator[Any]:
    opened: list[Page] = []

    def open_page(url: str) -> Page:
        page = browser.new_page(url)
        opened.append(page)
        return page

    yield open_page
    for page in opened:
        with contextlib.suppress(Exception):
            page.close()


def start_client(page: Page, token_js: str = "'tok'", options: str = "") -> None:
    """A WshubClient in the page as ``c``; its events in ``t.events``, messages in ``t.got``."""
    page.evaluate(
        f"""(async () => {{
        window.t = {{ events: [], got: [] }};
        const m = await import('/wshub.js');
        window.c = new m.WshubClient(`ws://${{location.host}}/`, {{
            token: {token_js}, backoff: {{ initial: 100, max: 1000 }}, {options} }});
        for (const name of {json.dumps(EVENTS)}) c.on(name, (v) => t.events.push({{
            name, at: Date.now(),
            value: v instanceof Error ? {{ code: v.code, message: v.message }} : v }}));
        c.connect();
    }})()"""
    )


def subscribe(page: Page, topic: str) -> None:
    page.evaluate(
        f"window.s = c.subscribe({json.dumps(topic)}, "
        "(p, e) => t.got.push({ seq: e.seq, payload: p, at: Date.now() }))"
    )
    page.wait_for("s.seq !== null")


def events(page: Page, name: str) -> list[Any]:
    return list(page.evaluate(f"t.events.filter(e => e.name === {json.dumps(name)})"))


def record_figure(name: str, value: float) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "figures.json"
    figures = json.loads(path.read_text()) if path.exists() else {}
    figures[name] = round(value, 1)
    path.write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {value:.1f}")


def test_connect_call_and_pubsub_between_two_pages(hub_process: Any, pages: Any) -> None:
    hub = hub_process("--token", "tok")
    one, two = pages(hub.origin + "/"), pages(hub.origin + "/")
    for page in (one, two):
        start_client(page)
        page.wait_for("c.state === 'open'")
        subscribe(page, "demo.chat")
    assert one.evaluate("c.call('echo', {n: [1, 2, 3]})") == {"n": [1, 2, 3]}
    assert one.evaluate("c.call('whoami').then(r => r.principal)") == "token-0"
    error = one.evaluate("c.call('nope').then(() => null, (e) => [e.name, e.code])")
    assert error == ["WshubError", "unknown_command"]
    reply = two.evaluate("c.publish('demo.chat', {text: 'hi from two'})")
    assert reply["delivered"] == 2
    got = one.wait_for("t.got.length === 1 && t.got")
    assert got[0]["payload"] == {"text": "hi from two"}
    assert got[0]["seq"] == reply["seq"]
    ids = sorted(page.evaluate("c.connId") for page in (one, two))
    one.wait_for("s.present.length === 2")
    assert sorted(p["connId"] for p in one.evaluate("s.present")) == ids
    two.evaluate("c.close()")
    one.wait_for("s.present.length === 1")


def test_wrong_token_is_4401_without_a_retry_storm(hub_process: Any, pages: Any) -> None:
    hub = hub_process("--token", "tok", "--refusal", "close")
    page = pages(hub.origin + "/")
    start_client(page, "'wrong'", "backoff: { initial: 20, max: 50 }")
    closed = page.wait_for("c.state === 'closed' && t.events.filter(e => e.name === 'closed')")
    assert [(e["value"]["code"], e["value"]["willRetry"]) for e in closed] == [(4401, False)]
    assert events(page, "error")[-1]["value"]["code"] == "unauthorized"
    time.sleep(1.5)  # a retry storm at 20-50 ms would show dozens of attempts by now
    assert hub.count("refused: 401") == 1
    assert page.evaluate("c.state") == "closed"


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_foreign_origin_is_refused(hub_process: Any, pages: Any) -> None:
    hub = hub_process("--token", "tok", "--refusal", "close")
    handler = functools.partial(QuietFiles, directory=str(STATIC))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        page = pages(f"http://127.0.0.1:{other.server_address[1]}/")
        page.evaluate(
            f"""(async () => {{
            window.t = {{ events: [] }};
            const m = await import('/wshub.js');
            window.c = new m.WshubClient('ws://127.0.0.1:{hub.port}/', {{ token: 'tok' }});
            c.on('closed', (v) => t.events.push(v));
            c.connect();
        }})()"""
        )
        closed = page.wait_for("c.state === 'closed' && t.events")
        assert [(e["code"], e["willRetry"]) for e in closed] == [(4403, False)]
        assert hub.count("refused: 403 origin not allowed") == 1
    finally:
        other.shutdown()
        other.server_close()


def test_reconnect_after_the_server_is_killed_and_restarted(hub_process: Any, pages: Any) -> None:
    """History lives in the server's memory: a restart starts new streams, and
    the page is told (``unrecoverable``) instead of missing messages silently."""
    hub = hub_process("--token", "tok")
    page = pages(hub.origin + "/")
    start_client(page)
    page.wait_for("c.state === 'open'")
    subscribe(page, "news")
    for n in range(3):
        page.evaluate(f"c.publish('news', {{n: {n}}})")
    page.wait_for("t.got.length === 3")
    before = page.evaluate("c.connId")
    hub.kill()
    page.wait_for("c.state === 'connecting'")
    hub.start()
    lost = page.wait_for("t.events.filter(e => e.name === 'unrecoverable')")
    assert lost[0]["value"]["topic"] == "news"
    assert lost[0]["value"]["previous"]["seq"] == 3
    page.wait_for("c.state === 'open'")
    assert page.evaluate("c.connId") != before
    record_figure("restart_to_unrecoverable_ms", lost[0]["at"] - hub.listening_at)
    page.evaluate("c.publish('news', {n: 'after'})")
    got = page.wait_for("t.got.length === 4 && t.got")
    assert got[-1]["payload"] == {"n": "after"}


def test_restart_with_history_in_redis_recovers_what_the_page_missed(
    hub_process: Any, pages: Any, redis_server: Any
) -> None:
    """History kept in Redis outlives a server process: the page's server is
    killed, messages are published through another node meanwhile, and once
    the server is restarted the page gets every one of them, in order, in the
    same stream (``recovered``, never ``unrecoverable``)."""
    common = ("--token", "tok", "--history", "100", "--redis", redis_server.url)
    hub = hub_process(*common, "--node", "a")
    other = hub_process(*common, "--node", "b")
    page, publisher = pages(hub.origin + "/"), pages(other.origin + "/")
    for client in (page, publisher):
        start_client(client)
        client.wait_for("c.state === 'open'")
    subscribe(page, "news")
    epoch = page.evaluate("s.epoch")
    publisher.evaluate("c.publish('news', {n: 0})")
    page.wait_for("t.got.length === 1")
    hub.kill()
    page.wait_for("c.state === 'connecting'")
    for n in range(1, 6):
        publisher.evaluate(f"c.publish('news', {{n: {n}}})")
    hub.start()
    got = page.wait_for("t.got.length === 6 && t.got", timeout=20)
    assert [m["payload"]["n"] for m in got] == [0, 1, 2, 3, 4, 5]
    assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + 6))
    assert events(page, "recovered")[-1]["value"]["missed"] == 5
    assert events(page, "unrecoverable") == []
    assert page.evaluate("s.epoch") == epoch
    record_figure("restart_to_recovered_ms", got[-1]["at"] - hub.listening_at)


@pytest.mark.parametrize("history", [True, False], ids=["with-history", "without-history"])
def test_network_drop_recovers_missed_messages_with_history(
    hub_process: Any, pages: Any, history: bool
) -> None:
    hub = hub_process("--token", "tok", *(["--history", "100"] if history else []))
    away, stays = pages(hub.origin + "/"), pages(hub.origin + "/")
    for page in (away, stays):
        start_client(page)
        page.wait_for("c.state === 'open'")
        subscribe(page, "feed")
    stays.evaluate("c.publish('feed', {n: 0})")
    away.wait_for("t.got.length === 1")
    away.set_offline(True)  # the page gets `offline`: the client drops its socket and waits
    away.wait_for("c.state === 'connecting'")
    for n in range(1, 6):
        stays.evaluate(f"c.publish('feed', {{n: {n}}})")
    back = time.time() * 1000
    away.set_offline(False)
    if history:
        got = away.wait_for("t.got.length === 6 && t.got")
        assert [m["payload"]["n"] for m in got] == [0, 1, 2, 3, 4, 5]
        assert [m["seq"] for m in got] == list(range(got[0]["seq"], got[0]["seq"] + 6))
        assert events(away, "recovered")[-1]["value"]["missed"] == 5
        assert events(away, "unrecoverable") == []
        record_figure("online_to_recovered_ms", got[-1]["at"] - back)
    else:
        lost = away.wait_for("t.events.filter(e => e.name === 'unrecoverable')")
        assert lost[0]["value"]["topic"] == "feed"
        assert away.evaluate("t.got.length") == 1  # nothing replayed, and the page knows it
    stays.evaluate("c.publish('feed', {n: 6})")
    away.wait_for("t.got.some(m => m.payload.n === 6)")


def test_token_refresh_keeps_the_connection_past_the_first_expiry(
    hub_process: Any, pages: Any, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    subprocess.run(
        [sys.executable, "-m", "wshub", "token", "keygen", "--out", str(keys)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    ring = dict(parse_key_file(keys.read_text()))
    signer = SignedTokens(ring, signing_key_id=next(iter(ring)))
    now = time.time()
    first_expiry = int(now) + 5
    first = signer.mint("alice", expires_at=first_expiry)
    second = signer.mint("alice", expires_at=int(now) + 3600)
    hub = hub_process("--signing-key-file", str(keys), "--refusal", "close")
    page = pages(hub.origin + "/")
    tokens = [
        {"token": first, "expiresAt": first_expiry * 1000},
        {"token": second, "expiresAt": (int(now) + 3600) * 1000},
    ]
    page.evaluate(f"window.tokens = {json.dumps(tokens)}")
    start_client(page, "() => tokens.shift()", "refreshBefore: 3500")
    page.wait_for("c.state === 'open'")
    conn = page.evaluate("c.connId")
    refreshed = page.wait_for("t.events.filter(e => e.name === 'refreshed')", timeout=10)
    assert refreshed[0]["value"]["expiresAt"] == (int(now) + 3600) * 1000
    while time.time() < first_expiry + 1.5:  # past the first token's expiry
        time.sleep(0.2)
    assert page.evaluate("c.state") == "open"
    assert page.evaluate("c.connId") == conn
    assert events(page, "closed") == []
    assert hub.count("token expired") == 0
    assert page.evaluate("c.call('whoami').then(r => r.principal)") == "alice"


def fill_and_send(page: Page, name: str, text: str) -> None:
    page.evaluate(
        f"""document.getElementById('name').value = {json.dumps(name)};
        document.getElementById('text').value = {json.dumps(text)};
        document.getElementById('compose').requestSubmit();"""
    )


def test_demo_page_chat_commands_reconnect_and_screenshots(hub_process: Any, pages: Any) -> None:
    hub = hub_process("--token", "tok", "--history", "100")
    one = pages(hub.origin + "/#token=tok")
    two = pages(hub.origin + "/#token=tok")
    for page in (one, two):
        page.wait_for("window.hub && hub.state === 'open'")
        assert "token" not in page.evaluate("location.href")  # removed from the address bar
        page.wait_for("document.querySelectorAll('#presence li').length === 2")
    fill_and_send(one, "Ada", "Hello from the first tab")
    two.wait_for("document.querySelectorAll('#messages li').length === 1")
    fill_and_send(two, "Grace", "Hi Ada! Both tabs share topic demo.chat.")
    one.wait_for("document.querySelectorAll('#messages li').length === 2")
    one.evaluate("document.querySelector('[data-command=whoami]').click()")
    assert "token-0" in one.wait_for(
        "document.getElementById('reply').textContent.includes('whoami →') && "
        "document.getElementById('reply').textContent"
    )
    one.screenshot(ARTIFACTS / "demo-chat.png")

    two.evaluate("document.getElementById('drop').click()")  # offline for 5 s
    two.wait_for("hub.state === 'closed'")
    fill_and_send(one, "Ada", "Sent while the second tab was offline")
    one.wait_for("document.querySelectorAll('#messages li').length === 3")
    two.wait_for("hub.state === 'open'", timeout=15)
    two.wait_for("document.querySelectorAll('#messages li.recovered').length === 1")
    assert "recovered" in two.evaluate("document.getElementById('banner').textContent")
    two.screenshot(ARTIFACTS / "demo-reconnect.png")


def test_demo_page_recovers_across_a_server_restart_with_redis(
    hub_process: Any, pages: Any, redis_server: Any
) -> None:
    """The demo's reconnect after its server is killed and restarted: with the
    history in Redis, a message sent through another node meanwhile shows up
    marked recovered (a screenshot of it is saved)."""
    common = ("--token", "tok", "--history", "100", "--redis", redis_server.url)
    hub = hub_process(*common, "--node", "a")
    other = hub_process(*common, "--node", "b")
    one, two = pages(hub.origin + "/#token=tok"), pages(other.origin + "/#token=tok")
    for page in (one, two):
        page.wait_for("window.hub && hub.state === 'open'")
    fill_and_send(two, "Grace", "Before the restart")
    one.wait_for("document.querySelectorAll('#messages li').length === 1")
    hub.kill()
    one.wait_for("hub.state === 'connecting'")
    fill_and_send(two, "Grace", "Sent while the first tab's server was down")
    two.wait_for("document.querySelectorAll('#messages li').length === 2")
    hub.start()
    one.wait_for("hub.state === 'open'", timeout=15)
    one.wait_for("document.querySelectorAll('#messages li.recovered').length === 1")
    assert "recovered" in one.evaluate("document.getElementById('banner').textContent")
    one.screenshot(ARTIFACTS / "demo-restart-redis.png")


def test_readme_browser_example_runs(hub_process: Any, pages: Any) -> None:
    """The README's wshub.js example, as written (its import made dynamic for
    evaluation, and fetch("/token") answered with the server's token)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```js\n(.*?)```", readme, re.S)
    hub = hub_process("--token", "tok")
    page = pages(hub.origin + "/")
    code = example.replace(
        'import { connect } from "./wshub.js";', 'const { connect } = await import("/wshub.js");'
    )
    assert code != example, "the example's import line changed: update this test"
    code = code.replace('"ws://127.0.0.1:8765/"', f'"ws://127.0.0.1:{hub.port}/"')
    page.evaluate(
        """window.logged = [];
        console.log = (...args) => logged.push(JSON.stringify(args));
        window.fetch = async () => new Response("tok");"""
    )
    page.evaluate(f"(async () => {{ {code} }})()")
    logged = [json.loads(line) for line in page.evaluate("logged")]
    assert ["state:", "connecting"] in logged
    assert ["state:", "open"] in logged
    published = next(entry[0] for entry in logged if isinstance(entry[0], dict))
    assert published["topic"] == "chat"
    assert published["delivered"] == 1
    assert [published["seq"], {"text": "hi"}] in logged  # its own message, via the subscription
    assert [{"n": 1}] in logged  # the echo command's reply


def test_every_character_the_server_allows_in_a_token_works_as_a_subprotocol(
    hub_process: Any, pages: Any
) -> None:
    """``wshub serve`` accepts exactly the HTTP token characters; Chromium sends them."""
    token = "Az09!#$%&'*+-.^_`|~"
    hub = hub_process("--token", token)
    page = pages(hub.origin + "/")
    start_client(page, json.dumps(token))
    page.wait_for("c.state === 'open'")
    assert page.evaluate("c.call('whoami').then(r => r.principal)") == "token-0"
    refused = page.evaluate(
        "(() => { try { new WebSocket(`ws://${location.host}/`, ['wshub.bearer.a/b=']); }"
        " catch (e) { return e.name; } })()"
    )
    assert refused == "SyntaxError"  # what the startup check spares a user


def test_first_message_auth_from_the_browser(hub_process: Any, pages: Any) -> None:
    hub = hub_process("--token", "a/b=", "--auth-message", "--refusal", "close")
    page = pages(hub.origin + "/")
    start_client(page, "'a/b='", "authMode: 'message'")
    page.wait_for("c.state === 'open'")
    assert page.evaluate("c.call('echo', 'ok')") == "ok"
    wrong = pages(hub.origin + "/")
    start_client(wrong, "'nope'", "authMode: 'message', backoff: { initial: 20, max: 50 }")
    closed = wrong.wait_for("c.state === 'closed' && t.events.filter(e => e.name === 'closed')")
    assert [(e["value"]["code"], e["value"]["willRetry"]) for e in closed] == [(1008, False)]
    time.sleep(1.0)  # no retry storm: still one refused auth message
    assert hub.count("auth message refused") == 1
