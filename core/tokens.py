"""Signed, expiring bearer tokens: HMAC-SHA256 with several keys for rotation.

A token is four dot-separated fields, every character an HTTP token character
(RFC 9110 §5.6.2), so it is also valid inside ``Sec-WebSocket-Protocol``,
where browsers refuse ``=``, ``+`` and ``/``::

    wst1.<key id>.<claims>.<signature>

* ``wst1``: the format version;
* key id: ``[A-Za-z0-9_-]{1,64}``, the key that signed;
* claims: base64url without padding of the JSON object
  ``{"exp": <epoch seconds>, "scp": [<scope>, ...], "sub": <principal id>}``;
* signature: base64url without padding of HMAC-SHA256 over the ASCII text
  ``wst1.<key id>.<claims>``.

The MAC covers the exact text before it, so version, key id, principal,
scopes and expiry are all authenticated without a canonical re-encoding, and
the signature is compared in constant time. Several keys verify, one signs:
rotate by adding a new signing key, then drop the old one once its tokens
have expired. Time is an argument (the core reads no clock).

Key files, as written by ``wshub token keygen``: one ``<key id>:<base64url
key>`` per line, ``#`` comments and blank lines ignored; the first key signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping

from .auth import Principal, TokenRejection

__all__ = [
    "MAX_TOKEN_LENGTH",
    "MIN_KEY_BYTES",
    "TOKEN_VERSION",
    "SignedTokens",
    "TokenRejection",
    "b64url_decode",
    "b64url_encode",
    "format_key_file",
    "parse_key_file",
]

TOKEN_VERSION = "wst1"
# Long enough for hundreds of scopes, short enough that a hostile token costs
# little to refuse (and fits common header limits).
MAX_TOKEN_LENGTH = 4096
# 128 bits: below this an HMAC key can be searched; keygen writes 256 bits.
MIN_KEY_BYTES = 16
# Expiry as whole epoch seconds that a float (``Principal.expires_at``) holds exactly.
_MAX_EXPIRY = 2**53

_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(raw: bytes) -> str:
    """base64url without padding (RFC 4648 §5): only HTTP token characters."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes | None:
    """The bytes of a canonical unpadded base64url string, else None.

    Canonical means that re-encoding gives the same text: a final character
    with stray low bits would otherwise let two spellings carry one value.
    """
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the pattern
        return None
    return raw if b64url_encode(raw) == text else None


def _check_key_id(key_id: str) -> None:
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"key id must match [A-Za-z0-9_-]{{1,64}}, got {key_id!r}")


def _claims_text(principal_id: str, scopes: frozenset[str], expiry: int) -> str:
    claims = {"exp": expiry, "scp": sorted(scopes), "sub": principal_id}
    raw = json.dumps(claims, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
    return b64url_encode(raw.encode("ascii"))


def _parse_claims(text: str) -> Principal | None:
    raw = b64url_decode(text)
    if raw is None:
        return None
    try:
        claims = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(claims, dict) or set(claims) != {"exp", "scp", "sub"}:
        return None
    expiry, scopes, subject = claims["exp"], claims["scp"], claims["sub"]
    if (
        type(expiry) is not int
        or not 0 <= expiry < _MAX_EXPIRY
        or not isinstance(subject, str)
        or not subject
        or not isinstance(scopes, list)
        or not all(isinstance(s, str) for s in scopes)
    ):
        return None
    return Principal(id=subject, scopes=frozenset(scopes), expires_at=float(expiry))


class SignedTokens:
    """Mint and verify signed expiring tokens with a ring of named keys.

    ``keys`` maps key ids to secret keys (at least 16 bytes each); all of them
    verify, ``signing_key_id`` names the one that signs. A token naming a key
    not in the ring is invalid.
    """

    def __init__(self, keys: Mapping[str, bytes], *, signing_key_id: str) -> None:
        if not keys:
            raise ValueError("SignedTokens needs at least one key")
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if not isinstance(key, bytes) or len(key) < MIN_KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be at least {MIN_KEY_BYTES} bytes")
        if signing_key_id not in keys:
            raise ValueError(f"signing key {signing_key_id!r} is not among the keys")
        self._keys = dict(keys)
        self.signing_key_id = signing_key_id

    @classmethod
    def from_key_file(cls, text: str) -> SignedTokens:
        """A ring from the text of a key file: the first key signs."""
        keys = parse_key_file(text)
        return cls(dict(keys), signing_key_id=keys[0][0])

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every key that verifies."""
        return frozenset(self._keys)

    def _signature(self, key: bytes, signed: str) -> str:
        return b64url_encode(hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest())

    def mint(
        self,
        principal_id: str,
        scopes: Iterable[str] = (),
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> str:
        """A token for ``principal_id`` valid until ``expires_at`` or ``now + ttl``.

        Expiry is kept in whole seconds, rounded down (a token never outlives
        what was asked). Give either ``expires_at`` or both ``ttl`` and ``now``.
        """
        if not isinstance(principal_id, str) or not principal_id:
            raise ValueError("principal_id must be a non-empty string")
        scope_set = frozenset(scopes)
        if not all(isinstance(s, str) for s in scope_set):
            raise ValueError("scopes must be strings")
        if (ttl is None) == (expires_at is None):
            raise ValueError("give exactly one of ttl (with now) or expires_at")
        if ttl is not None:
            if now is None:
                raise ValueError("ttl needs now (epoch seconds)")
            if not math.isfinite(ttl) or ttl <= 0:
                raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
            expires_at = now + ttl
        assert expires_at is not None
        if not math.isfinite(expires_at) or not 0 <= expires_at < _MAX_EXPIRY:
            raise ValueError(f"expires_at must be epoch seconds in [0, 2**53), got {expires_at!r}")
        key_id = self.signing_key_id
        claims = _claims_text(principal_id, scope_set, math.floor(expires_at))
        signed = f"{TOKEN_VERSION}.{key_id}.{claims}"
        token = f"{signed}.{self._signature(self._keys[key_id], signed)}"
        if len(token) > MAX_TOKEN_LENGTH:
            raise ValueError(f"token would be {len(token)} characters, over {MAX_TOKEN_LENGTH}")
        return token

    def check(self, token: str, now: float) -> Principal | TokenRejection:
        """The token's principal (with ``expires_at``), or why it is refused."""
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            return TokenRejection.MALFORMED
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION or not _KEY_ID.fullmatch(parts[1]):
            return TokenRejection.MALFORMED
        _, key_id, claims, signature = parts
        key = self._keys.get(key_id)
        if key is None:
            return TokenRejection.UNKNOWN_KEY
        expected = self._signature(key, f"{TOKEN_VERSION}.{key_id}.{claims}")
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            return TokenRejection.BAD_SIGNATURE
        principal = _parse_claims(claims)
        if principal is None:
            return TokenRejection.MALFORMED
        assert principal.expires_at is not None
        if now >= principal.expires_at:
            return TokenRejection.EXPIRED
        return principal

    def verify(self, token: str, now: float) -> Principal | None:
        """The token's principal if it is valid at ``now`` (epoch seconds), else None."""
        result = self.check(token, now)
        return result if isinstance(result, Principal) else None


def parse_key_file(text: str) -> list[tuple[str, bytes]]:
    """``(key id, key)`` pairs from a key file, in order (the first one signs).

    Raises ValueError naming the line for anything malformed, including a
    repeated key id: a file that half-parses would sign with the wrong key.
    """
    keys: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, encoded = line.partition(":")
        raw = b64url_decode(encoded.strip()) if sep else None
        key_id = key_id.strip()
        if raw is None or not _KEY_ID.fullmatch(key_id):
            raise ValueError(f"line {number}: expected '<key id>:<base64url key>'")
        if len(raw) < MIN_KEY_BYTES:
            raise ValueError(f"line {number}: key shorter than {MIN_KEY_BYTES} bytes")
        if key_id in seen:
            raise ValueError(f"line {number}: key id {key_id!r} repeated")
        seen.add(key_id)
        keys.append((key_id, raw))
    if not keys:
        raise ValueError("no key in the key file")
    return keys


def format_key_file(keys: Iterable[tuple[str, bytes]]) -> str:
    """The text of a key file for ``keys`` (the first one signs)."""
    lines = ["# wshub signing keys, '<key id>:<base64url key>'; the first one signs."]
    for key_id, key in keys:
        _check_key_id(key_id)
        lines.append(f"{key_id}:{b64url_encode(key)}")
    return "\n".join(lines) + "\n"
