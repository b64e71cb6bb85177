"""``wshub connect --subscribe/--since``: follow topics with the hub client.

The connection reconnects by itself and resubscribes with ``since``, so the
output is each topic's stream once, in order, across network losses. One
JSON line per topic message (with its ``seq`` and ``epoch``: what a later
``--since TOPIC SEQ EPOCH`` resumes from), per gap that could not be filled
(``{"gap": ...}``), per broadcast or direct message (its envelope), and per
reply to a request read from stdin. Connection changes go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio

from ..adapters.hub_client import HubClient
from ..adapters.hub_client_types import (
    CallError,
    ConnectionState,
    Gap,
    GaveUp,
    Refused,
    ServerMessage,
    StateChange,
    StreamPosition,
    Unrecovered,
)
from ..adapters.reconnect import Backoff
from ._common import client_ssl, client_token, fail, say, stdin_lines

__all__ = ["follow", "since_position"]


def since_position(values: list[str]) -> tuple[str, StreamPosition]:
    """``--since TOPIC SEQ EPOCH`` as (topic, position)."""
    topic, seq, epoch = values
    if not seq.isascii() or not seq.isdigit():
        raise fail(f"--since: SEQ must be an integer >= 0, got {seq!r}")
    if not topic or not epoch:
        raise fail("--since needs a TOPIC, a SEQ and an EPOCH")
    number = int(seq)
    return topic, StreamPosition(number, epoch)


def _line(value: Any) -> None:
    say(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def _gap_line(gap: Gap) -> None:
    _line(
        {
            "gap": {
                "topic": gap.topic,
                "reason": gap.reason.value,
                "last_seq": gap.last_seq,
                "last_epoch": gap.last_epoch,
                "resumed_at": gap.resumed_at,
                "epoch": gap.epoch,
            }
        }
    )


def _on_state(change: StateChange) -> None:
    if change.state is ConnectionState.DISCONNECTED:
        note = f"connection lost: {change.code} {change.reason}".rstrip()
    elif change.state is ConnectionState.RECONNECTING:
        why = change.error or f"{change.code} {change.reason}".rstrip()
        note = f"reconnecting in {change.delay:.2f} s ({why})"
    elif change.state is ConnectionState.OPEN:
        note = f"connected as {change.principal} ({change.conn_id})"
    else:
        return
    print(f"wshub: {note}", file=sys.stderr, flush=True)


def _on_message(message: ServerMessage) -> None:
    _line(message.envelope)


async def follow(args: argparse.Namespace) -> int:
    """Follow ``args.subscribe`` and ``args.since`` topics until ``--count`` or Ctrl-C."""
    positions = dict(args.since or ())
    topics = list(dict.fromkeys([*(args.subscribe or ()), *positions]))
    remaining = args.count
    failure: Exception | None = None
    client = HubClient(
        args.url,
        token=client_token(args),
        ssl=client_ssl(args),
        backoff=Backoff(max_attempts=args.max_attempts),
        call_timeout=args.wait,
        on_state=_on_state,
        on_message=_on_message,
    )

    async def stop_on_failure(job: Any, *job_args: Any) -> None:
        nonlocal failure
        try:
            await job(*job_args)
        except (Refused, GaveUp, CallError) as exc:  # refused for good, or a subscription
            failure = failure or exc
            tg.cancel_scope.cancel()

    async def watch(topic: str) -> None:
        nonlocal remaining
        async with client.subscribe(topic, since=positions.get(topic)) as sub:
            while True:
                try:
                    async for message in sub:
                        _line(
                            {
                                "topic": message.topic,
                                "seq": message.seq,
                                "epoch": message.epoch,
                                "message_type": message.message_type,
                                "payload": message.payload,
                                "timestamp": message.timestamp,
                            }
                        )
                        if remaining is not None:
                            remaining -= 1
                            if remaining <= 0:
                                tg.cancel_scope.cancel()
                    return
                except Unrecovered as exc:
                    _gap_line(exc.gap)

    async def requests() -> None:
        async with stdin_lines() as lines:
            async for line in lines:
                if line.strip():
                    await _request(client, line)

    try:
        async with client, anyio.create_task_group() as tg:
            for topic in topics:
                tg.start_soon(stop_on_failure, watch, topic)
            tg.start_soon(stop_on_failure, requests)
    except (Refused, GaveUp) as exc:  # on the first connection
        raise fail(str(exc)) from None
    if failure is not None:
        raise fail(str(failure))
    return 0


async def _request(client: HubClient, line: str) -> None:
    """Send one stdin line (a JSON envelope) as a call; print its reply or error."""
    try:
        envelope = json.loads(line)
    except ValueError:
        envelope = None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message_type"), str):
        print("wshub: a request line must be a JSON object with message_type", file=sys.stderr)
        return
    topic = envelope.get("topic")
    try:
        result = await client.call(
            envelope["message_type"],
            envelope.get("payload"),
            topic=topic if isinstance(topic, str) else None,
        )
    except CallError as exc:
        _line({"error": {"code": exc.code, "message": exc.message}})
    else:
        _line({"reply": result})
