"""Hub.encode: one envelope encoded once, for this node's ``*_encoded`` sends
and for other nodes (the Redis broker relays presence this way)."""

from __future__ import annotations

import json

import pytest
from broker_fake import FakeBroker
from hub_helpers import WALL_EPOCH


def test_an_envelope_encoded_for_a_topic_is_the_one_its_subscribers_would_get() -> None:
    """With ``topic`` the envelope names it; without, it has no topic field;
    either way it is the default envelope at the hub's wall clock, and the
    message type is checked as for any send."""
    h = FakeBroker().node("n0", None)
    h.hub.configure_topic("room", presence=True)
    alice = h.connect("alice")
    h.send(alice, {"message_type": "subscribe", "topic": "room"})
    h.pump()
    alice.receive()
    join = {"event": "join", "conn_id": "elsewhere", "principal": "bob"}
    data = h.hub.encode("presence", join, topic="room")
    timestamp = int(WALL_EPOCH * 1000)
    assert json.loads(data) == {
        "message_type": "presence",
        "payload": join,
        "timestamp": timestamp,
        "topic": "room",
    }
    assert h.hub.presence_arrived("room", data) == 1
    assert alice.receive() == [json.loads(data)]
    plain = json.loads(h.hub.encode("note", 1))
    assert plain == {"message_type": "note", "payload": 1, "timestamp": timestamp}
    with pytest.raises(ValueError, match="message_type"):
        h.hub.encode("", 1, topic="room")
