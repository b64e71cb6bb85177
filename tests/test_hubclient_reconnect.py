"""``HubClient`` reconnection over real sockets, on asyncio and trio: TCP resets
mid-stream, server restarts, refusals that must not become retry storms,
throttling with Retry-After, giving up, and the backoff reset."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import anyio
import pytest

from tests.hubclient_helpers import (
    FAST,
    TOKEN,
    TOKENS,
    States,
    free_port,
    no_jitter,
    proxied,
    running,
)
from wshub.adapters import HubServer
from wshub.adapters.hub_client import HubClient
from wshub.adapters.hub_client_feeds import Subscription
from wshub.adapters.hub_client_types import (
    CallError,
    ConnectionState,
    Gap,
    GapReason,
    GaveUp,
    Refused,
    StreamPosition,
    Unrecovered,
)
from wshub.adapters.reconnect import Backoff
from wshub.core import HandshakeRequest
from wshub.core.auth import AccessPolicy, Denial, Principal
from wshub.core.hub_config import HubConfig

pytestmark = pytest.mark.anyio


class Counting:
    """An authenticator that counts the handshakes it is asked to decide."""

    def __init__(self) -> None:
        self.policy = AccessPolicy(tokens=TOKENS)
        self.handshakes = 0

    def authenticate(self, request: HandshakeRequest) -> Principal | Denial:
        self.handshakes += 1
        decision = self.policy.authenticate(request)
        assert not isinstance(decision, Awaitable)
        return decision


async def hold(client: HubClient, done: anyio.Event) -> None:
    """Run ``client`` in this task until ``done`` (entering may take many attempts)."""
    async with client:
        await done.wait()


async def read_until(sub: Subscription, last: int) -> tuple[list[int], list[Gap]]:
    """Seqs delivered and gaps signalled until the message with seq ``last``."""
    seqs: list[int] = []
    gaps: list[Gap] = []
    while not seqs or seqs[-1] < last:
        try:
            async for message in sub:
                seqs.append(message.seq)
                assert message.payload == message.seq
                if message.seq >= last:
                    break
        except Unrecovered as exc:
            gaps.append(exc.gap)
    return seqs, gaps


def assert_accounted(seqs: list[int], gaps: list[Gap], last: int) -> None:
    """In order, no duplicate, and every seq either delivered or inside a signalled gap."""
    assert seqs == sorted(set(seqs))
    missing = set()
    for gap in gaps:
        assert gap.last_seq is not None
        missing.update(range(gap.last_seq + 1, gap.resumed_at + 1))
    assert not missing & set(seqs)
    assert missing | set(seqs) == set(range(1, last + 1))


async def test_tcp_reset_mid_stream_reconnects_resubscribes_and_never_hides_a_gap() -> None:
    """A topic without history: what was published while the client was away
    is lost, and the client says so (``Unrecovered``) instead of going on silently."""
    with anyio.fail_after(20):
        async with proxied() as (server, proxy):
            server.configure_topic("t")  # its seq survives the client's absence
            states = States()
            gaps: list[Gap] = []
            async with (
                HubClient(
                    proxy.url,
                    token=TOKEN,
                    backoff=FAST,
                    on_state=states,
                    on_gap=gaps.append,
                ) as client,
                client.subscribe("t") as sub,
            ):
                for seq in range(1, 101):
                    server.publish("t", seq)
                early = [(await sub.__anext__()).seq for _ in range(50)]  # 51.. still in flight
                first = client.conn_id
                published = 100
                async with anyio.create_task_group() as tg:

                    async def keep_publishing() -> None:
                        nonlocal published
                        after_reopen = 0
                        while after_reopen < 50:
                            published += 1
                            server.publish("t", published)
                            if len(states.of(ConnectionState.OPEN)) >= 2:
                                after_reopen += 1
                            await anyio.sleep(0)

                    assert proxy.reset() == 1
                    tg.start_soon(keep_publishing)
                seqs, signalled = await read_until(sub, published)
                seqs = early + seqs
                assert client.conn_id != first
                assert server.hub.subscribers("t") == [client.conn_id]
                assert states.of(ConnectionState.DISCONNECTED)[0].code == 1006
                assert_accounted(seqs, signalled, published)
                assert seqs[:50] == list(range(1, 51))
                assert signalled, "messages were published while the client was away"
                assert signalled[0].reason is GapReason.NOT_RECOVERED  # same epoch, no history
                assert gaps == signalled  # the callback saw the same gaps


async def test_reconnect_without_missed_messages_signals_nothing() -> None:
    with anyio.fail_after(10):
        async with proxied() as (server, proxy):
            server.configure_topic("t")
            states = States()
            gaps: list[Gap] = []
            async with (
                HubClient(
                    proxy.url, token=TOKEN, backoff=FAST, on_state=states, on_gap=gaps.append
                ) as client,
                client.subscribe("t") as sub,
            ):
                server.publish("t", 1)
                assert (await sub.__anext__()).seq == 1
                assert proxy.reset() == 1
                await states.reach(ConnectionState.OPEN, 2)
                server.publish("t", 2)
                assert (await sub.__anext__()).seq == 2
                assert gaps == []


async def test_server_restart_on_the_same_port_is_noticed_per_topic() -> None:
    with anyio.fail_after(20):
        port = free_port()
        states = States()
        async with running(port=port) as first:
            first.configure_topic("t")
            client = HubClient(first.url, token=TOKEN, backoff=FAST, on_state=states)
            await client.__aenter__()
            try:
                async with client.subscribe("t") as sub:
                    for seq in range(1, 4):
                        first.publish("t", seq)
                    assert [(await sub.__anext__()).seq for _ in range(3)] == [1, 2, 3]
                    old_epoch = first.hub.topic_epoch("t")
                    assert sub.position == StreamPosition(3, str(old_epoch))
                    first.shutdown()
                    await states.reach(ConnectionState.DISCONNECTED)
                    async with running(port=port) as second:
                        second.configure_topic("t")
                        await states.reach(ConnectionState.OPEN, 2)
                        second.publish("t", 1)
                        with pytest.raises(Unrecovered) as caught:
                            await sub.__anext__()
                        gap = caught.value.gap
                        assert (gap.last_seq, gap.resumed_at) == (3, 0)
                        assert gap.reason is GapReason.EPOCH_CHANGED  # a new server, a new stream
                        new_epoch = second.hub.topic_epoch("t")
                        assert (gap.last_epoch, gap.epoch) == (old_epoch, new_epoch)
                        assert new_epoch != old_epoch
                        assert caught.value.epoch_changed
                        message = await sub.__anext__()  # the new stream goes on
                        assert (message.seq, message.epoch) == (1, new_epoch)
            finally:
                await client.aclose()
        assert states.of(ConnectionState.DISCONNECTED)[0].code == 1001


async def test_a_resubscription_the_server_now_refuses_ends_that_subscription() -> None:
    with anyio.fail_after(10):
        async with proxied() as (server, proxy):
            server.configure_topic("open")
            server.configure_topic("closing")
            states = States()
            async with (
                HubClient(proxy.url, token=TOKEN, backoff=FAST, on_state=states) as client,
                client.subscribe("open") as kept,
                client.subscribe("closing") as refused,
            ):
                server.configure_topic("closing", subscribe_scope="admin")  # policy changed
                assert proxy.reset() == 1
                await states.reach(ConnectionState.OPEN, 2)
                with pytest.raises(CallError) as caught:
                    await refused.__anext__()
                assert caught.value.code == "forbidden"
                assert set(client.topics()) == {"open"}
                server.publish("open", 1)
                assert (await kept.__anext__()).payload == 1


async def test_a_bad_token_is_refused_once_not_retried() -> None:
    with anyio.fail_after(10):
        auth = Counting()
        async with running(auth=auth) as server:
            states = States()
            with pytest.raises(Refused) as caught:
                async with HubClient(server.url, token="wrong", on_state=states, random=no_jitter):
                    pass
            assert (caught.value.code, auth.handshakes) == (401, 1)
            assert states.names == ["connecting", "closed"]
            assert states.changes[-1].error is caught.value


@pytest.mark.parametrize("transport", ["header", "subprotocol"])
async def test_a_token_callback_is_asked_again_and_only_a_new_token_is_retried(
    transport: Any,
) -> None:
    with anyio.fail_after(10):
        auth = Counting()
        async with running(auth=auth) as server:
            asked: list[str] = []

            async def same() -> str:
                asked.append("wrong")
                return "wrong"

            with pytest.raises(Refused):
                async with HubClient(server.url, token=same, token_transport=transport):
                    pass
            assert (len(asked), auth.handshakes) == (2, 1)  # asked again, but nothing new

            tokens = iter(["old", "older", TOKEN])
            states = States()
            async with HubClient(
                server.url,
                token=lambda: next(tokens),  # a sync callback works too
                token_transport=transport,
                on_state=states,
                random=no_jitter,
            ) as client:
                assert client.principal == "alice"
            assert auth.handshakes == 1 + 3
            assert [c.code for c in states.of(ConnectionState.RECONNECTING)] == [401, 401]


async def test_first_message_auth_and_its_refusal() -> None:
    with anyio.fail_after(10):
        policy = AccessPolicy(tokens=TOKENS)
        checked: list[str] = []

        class Verifier:
            def authenticate(self, request: HandshakeRequest) -> Principal | Denial:
                return Denial(401, "no credentials")

            def verify_token(self, token: str) -> Principal | Denial:
                checked.append(token)
                return policy.verify_token(token)  # type: ignore[return-value]

        async with running(auth=Verifier(), auth_message=True) as server:
            async with HubClient(server.url, token=TOKEN, token_transport="message") as client:
                assert client.principal == "alice"
            with pytest.raises(Refused) as caught:
                async with HubClient(server.url, token="wrong", token_transport="message"):
                    pass
            assert caught.value.code == 1008
            assert checked == [TOKEN, "wrong"]  # the refused token was tried once


async def test_close_code_refusals_and_policy_closes_stop_the_client() -> None:
    with anyio.fail_after(10):
        auth = Counting()
        async with running(auth=auth, refusal="close") as server:
            with pytest.raises(Refused) as caught:
                async with HubClient(server.url, token="wrong"):
                    pass
            assert (caught.value.code, auth.handshakes) == (4401, 1)

            server.configure_topic("t")
            async with HubClient(server.url, token=TOKEN, backoff=FAST) as client:
                async with client.subscribe("t") as sub:
                    server.disconnect(str(client.conn_id), 1008, "kicked")
                    with pytest.raises(Refused) as caught:
                        await sub.__anext__()
                assert (caught.value.code, caught.value.reason) == (1008, "kicked")
                assert client.state is ConnectionState.CLOSED
                assert client.error is caught.value
            assert auth.handshakes == 2


async def test_throttling_waits_for_retry_after() -> None:
    with anyio.fail_after(10):
        config = HubConfig(max_per_principal=1, retry_after=7)
        async with running(config=config) as server, HubClient(server.url, token=TOKEN):
            states = States()
            second = HubClient(server.url, token=TOKEN, on_state=states, random=no_jitter)
            async with anyio.create_task_group() as tg:
                tg.start_soon(hold, second, anyio.Event())
                waiting = await states.reach(ConnectionState.RECONNECTING)
                tg.cancel_scope.cancel()  # no test waits 7 s
            assert (waiting.code, waiting.delay, waiting.attempt) == (429, 7.0, 1)
            assert states.names == ["connecting", "reconnecting", "closed"]


async def test_gives_up_after_max_attempts() -> None:
    with anyio.fail_after(10):
        states = States()
        url = f"ws://127.0.0.1:{free_port()}/"
        backoff = Backoff(base=0.01, cap=0.01, max_attempts=3)
        with pytest.raises(GaveUp) as caught:
            async with HubClient(url, token=TOKEN, backoff=backoff, on_state=states):
                pass
        assert caught.value.attempts == 3
        assert isinstance(caught.value.last, OSError)
        assert [c.attempt for c in states.of(ConnectionState.CONNECTING)] == [1, 2, 3]
        assert len(states.of(ConnectionState.RECONNECTING)) == 2


async def test_an_open_connection_resets_the_backoff() -> None:
    with anyio.fail_after(10):
        async with proxied() as (_, proxy):
            states = States()
            async with HubClient(
                proxy.url, token=TOKEN, backoff=FAST, random=lambda: 0.999, on_state=states
            ):
                for n in range(2, 5):
                    assert proxy.reset() == 1
                    await states.reach(ConnectionState.OPEN, n)
            waits = states.of(ConnectionState.RECONNECTING)
            assert len(waits) == 3
            for change in waits:  # each loss starts again from the base delay
                assert change.attempt == 0
                assert change.delay is not None
                assert change.delay <= FAST.base
            assert [c.attempt for c in states.of(ConnectionState.CONNECTING)] == [1] * 4


async def test_unreachable_server_at_start_is_retried_until_it_listens() -> None:
    with anyio.fail_after(10):
        port = free_port()
        states = States()
        client = HubClient(f"ws://127.0.0.1:{port}/", token=TOKEN, backoff=FAST, on_state=states)
        done = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, client, done)
            await states.reach(ConnectionState.RECONNECTING, 2)
            server = HubServer(AccessPolicy(tokens=TOKENS), port=port)
            await tg.start(server.serve)
            await states.reach(ConnectionState.OPEN)
            done.set()
            await states.reach(ConnectionState.CLOSED)
            server.shutdown()
        failures = states.of(ConnectionState.RECONNECTING)
        assert all(isinstance(c.error, OSError) for c in failures)
        assert [c.attempt for c in failures] == list(range(1, len(failures) + 1))
