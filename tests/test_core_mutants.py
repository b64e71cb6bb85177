"""Behaviours that surviving mutants of the core showed no test stated
(tools/mutate_core.py finds them; each test here kills one, and says what
the code must do rather than how)."""

from __future__ import annotations

import dataclasses

import pytest
from test_core_client import client, switching

from wshub.core import Limits, Opened, TextMessage
from wshub.core.auth import Principal
from wshub.core.frames import encode_frame


def test_a_principal_is_immutable() -> None:
    """Principals are shared by every connection of a user and cached by
    verifiers: nobody may change one in place (frozen=True)."""
    principal = Principal("alice", frozenset({"read"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        principal.id = "mallory"  # type: ignore[misc]
    assert hash(principal) == hash(Principal("alice", frozenset({"read"})))


def test_frames_after_a_head_at_the_size_limit_do_not_count_as_head() -> None:
    """The response head limit counts the head, not the frames that arrived
    with it in the same read (client.py: head bytes minus h11's trailing data)."""
    frames = encode_frame(0x1, b"x" * 300)  # far more than the room left
    for room in (0, 1):
        conn, key = client(limits=Limits(max_head_size=400))
        head = switching(key)
        padded = switching(key, "X-Pad: " + "a" * (400 - len(head) - 9 - room))
        assert len(padded) == 400 - room
        conn.receive_data(padded + frames)
        assert conn.events_received() == [
            Opened(subprotocol=None, extensions=()),
            TextMessage(data="x" * 300),
        ]


def test_prepared_messages_frame_as_their_kind() -> None:
    """PreparedMessage.binary frames binary (opcode 2), .text frames text (1),
    with or without compression."""
    from wshub.core.deflate import DeflateParams
    from wshub.core.frames import Opcode, PreparedMessage

    binary = PreparedMessage.binary(bytearray(b"\x00\xff"))
    assert binary.opcode is Opcode.BINARY
    assert binary.frame() == encode_frame(0x2, b"\x00\xff")
    assert binary.frame(DeflateParams())[0] == 0x80 | 0x40 | 0x2  # FIN, RSV1, binary
    text = PreparedMessage.text("é")
    assert text.opcode is Opcode.TEXT
    assert text.frame() == encode_frame(0x1, "é".encode())
    assert text.frame(DeflateParams())[0] == 0x80 | 0x40 | 0x1
