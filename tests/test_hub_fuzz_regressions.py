"""Regressions found by the hub fuzz harnesses (fuzz/fuzz_envelope.py,
fuzz/fuzz_hub_ops.py); each test is the minimal reproducer of one finding.

Lone UTF-16 surrogates: a client frame is valid UTF-8, but JSON may still
spell a lone surrogate as an ASCII escape (``"\\ud800"``). ``parse_request``
accepts it, and every envelope that echoes the string back (the ``id`` of a
reply, the ``topic`` of a subscribe reply, a published payload) then fails to
encode as UTF-8: the hub raised ``UnicodeEncodeError`` on client input.
"""

from __future__ import annotations

import json

import pytest
from hub_helpers import HubHarness

from wshub.core.envelope import Request, encode_envelope, parse_request

LONE = ("\ud800", "\udfff", "a\udc00b")


@pytest.mark.parametrize("lone", LONE)
def test_parsed_request_with_lone_surrogate_reencodes(lone: str) -> None:
    text = json.dumps({"message_type": "x", "id": lone, "topic": lone, "payload": [lone]})
    request = parse_request(text, max_size=4096, max_depth=8)
    assert isinstance(request, Request)
    encoded = encode_envelope(
        request.message_type, request.payload, timestamp=0, id=request.id, topic=request.topic
    )
    assert parse_request(encoded.decode("utf-8"), max_size=4096, max_depth=8) == request


def test_reply_id_with_lone_surrogate_does_not_raise() -> None:
    harness = HubHarness()
    peer = harness.connect()
    # An unknown command: the error reply echoes the id.
    assert harness.send(peer, {"message_type": "nope", "id": "\udc00"}) == []
    [reply] = peer.receive()
    assert reply["id"] == "\udc00"
    assert reply["error"]["code"] == "unknown_command"


def test_subscribe_to_lone_surrogate_topic_does_not_raise() -> None:
    harness = HubHarness()
    peer = harness.connect()
    harness.send(peer, {"message_type": "subscribe", "topic": "\ud800", "id": 1})
    [reply] = peer.receive()
    assert reply["ok"] is True
    assert reply["payload"] == {
        "topic": "\ud800",
        "seq": 0,
        "epoch": harness.hub.topic_epoch("\ud800"),
    }


def test_publish_lone_surrogate_payload_does_not_raise() -> None:
    harness = HubHarness()
    harness.hub.configure_topic("room", publish="all")
    alice = harness.connect("alice")
    bob = harness.connect("bob")
    harness.send(bob, {"message_type": "subscribe", "topic": "room"})
    events = harness.send(alice, {"message_type": "publish", "topic": "room", "payload": "\ud800"})
    assert [e.delivered for e in events] == [1]  # type: ignore[union-attr]
    [message] = bob.receive()
    assert message["payload"] == "\ud800"
