"""Which commands carry versions, and how each is written, read and repaired (pure).

Theory of operation
-------------------
With ``read_repairs_enabled``, the coordinator stamps every versioned write
with a ``versions.HybridClock`` version and sends each replica
``versioned_write(args, version)`` instead of the plain command: one
``EVAL`` of a script from ``cluster.scripts``, which applies it only where
the stored version is not newer and stores the new one (a tombstone for a
removal).  A write older than what a replica holds is discarded there (last
write wins), so hints and repairs may arrive in any order.

``VERSIONED_WRITES`` is the closed set: ``SET`` (``NX``/``XX`` stamp only
where they applied) and single-key ``DEL``/``UNLINK`` version the whole key;
``HSET``, ``HMSET``, ``HDEL``, ``SADD``, ``SREM``, ``ZADD`` (any options but
``INCR``) and ``ZREM`` version each field or member.  ``READS`` maps the
versioned reads (``GET``, ``HGET``, ``SISMEMBER``, ``ZSCORE``) to a
``ReadKind``: the request each replica is sent, how its reply becomes a
``versions.Reading``, the repair write of a winner and the client's reply.
That covers every command Dynomite's read repair covers.

What a replica holds for a read is its datastore's answer at the newest
version that covers it (the element's own, or a later whole-key write):
a value, or, when there is none and some version exists, a tombstone at
that version.  No version at all reads as ``versions.MISSING``.

Every other command is sent unversioned: a key or element it wrote is
repaired only once a versioned command writes it, and reads of it keep
Dynomite's quorum rules.  A request that a versioned script could apply
only in part (odd field/value pairs, a bad score, clashing ZADD options) is
sent unversioned too, so Redis itself rejects it whole.
"""

from __future__ import annotations

import math

import attrs

from ..protocol import replies as r
from ..protocol.replies import ReplyFramer, ReplyProtocolError, is_error
from ..protocol.requests import encode_command
from .scripts import (
    ELEMENT_READ_SCRIPT,
    ELEMENT_WRITE_SCRIPT,
    READ_SCRIPT,
    WRITE_SCRIPT,
    elements_key,
    meta_key,
    stamp,
)
from .versions import MISSING, Reading, decode_meta

__all__ = [
    "READS",
    "TOMBSTONE_GRACE",
    "VERSIONED_WRITES",
    "ReadKind",
    "versioned_kind",
    "versioned_write",
]

#: How long a tombstone is kept (ms): longer than any partition plus repair interval.
TOMBSTONE_GRACE = 10 * 24 * 3600 * 1000

#: Element writes: the operation the element script applies per element.
_ELEMENT_OPS = {
    "hset": b"hset",
    "hmset": b"hmset",
    "hdel": b"hdel",
    "sadd": b"sadd",
    "srem": b"srem",
    "zadd": b"zadd",
    "zrem": b"zrem",
}
VERSIONED_WRITES = frozenset({"set", "del", "unlink", *_ELEMENT_OPS})
_ZADD_OPTIONS = frozenset({b"nx", b"xx", b"gt", b"lt", b"ch"})


def _zadd_options(args: list[bytes]) -> int | None:
    """How many option words follow ZADD's key; None if it cannot be versioned."""
    n = 0
    while 2 + n < len(args) and args[2 + n].lower() in _ZADD_OPTIONS:
        n += 1
    words = {a.lower() for a in args[2 : 2 + n]}
    if (b"nx" in words and (b"xx" in words or b"gt" in words or b"lt" in words)) or (
        b"gt" in words and b"lt" in words
    ):
        return None
    pairs = args[2 + n :]
    if not pairs or len(pairs) % 2:
        return None
    for score in pairs[::2]:
        try:
            if math.isnan(float(score)):
                return None
        except ValueError:
            return None
    return n


def _element_args(name: str, args: list[bytes]) -> int | None:
    """ZADD's option count (0 for the others), or None if not versionable."""
    if len(args) < 3:
        return None
    if name == "zadd":
        return _zadd_options(args)
    if name in ("hset", "hmset") and len(args) % 2:
        return None
    return 0


def versioned_kind(name: str, args: list[bytes]) -> str | None:
    """``"write"``, ``"read"`` or None: whether a request takes part in versioning."""
    if name in READS:
        return "read" if len(args) == READS[name].arity else None
    if name not in VERSIONED_WRITES:
        return None
    if name == "set":
        return "write" if len(args) >= 3 else None
    if name in ("del", "unlink"):
        return "write" if len(args) == 2 else None
    return "write" if _element_args(name, args) is not None else None


def versioned_write(args: list[bytes], version: int, grace: int = TOMBSTONE_GRACE) -> bytes:
    """The EVAL that applies ``args`` (a ``versioned_kind`` write) at ``version``."""
    name = args[0].decode("latin-1").lower()
    key = args[1]
    if name in _ELEMENT_OPS:
        n = _element_args(name, args)
        assert n is not None, "versioned_kind() vets element writes"
        script = ELEMENT_WRITE_SCRIPT
        head = [b"%d" % grace, _ELEMENT_OPS[name], b"%d" % n]
        return _eval(script, key, version, *head, *args[2:])
    if name == "set":
        words = {a.lower() for a in args[3:]}
        kind = b"n" if b"nx" in words else b"x" if b"xx" in words else b"0"
    else:
        kind = b"1"
    return _eval(WRITE_SCRIPT, key, version, kind, b"%d" % grace, *args)


def _eval(script: bytes, key: bytes, version: int, *argv: bytes) -> bytes:
    return encode_command(
        [b"EVAL", script, b"3", key, meta_key(key), elements_key(key), stamp(version), *argv]
    )


def _bulk_or_nil(reply: bytes) -> bytes | None:
    if reply.startswith((b"$-1", b"_")):
        return None
    _, _, rest = reply.partition(b"\r\n")
    return rest[:-2]


def _parts(reply: bytes, count: int) -> list[bytes | None] | None:
    """The bulk strings (or nils) of an array reply of ``count``; None for anything else."""
    if is_error(reply) or reply[:1] != b"*":
        return None
    framer = ReplyFramer()
    framer.feed(reply[reply.find(b"\r\n") + 2 :])
    try:
        parts = framer.replies()
    except ReplyProtocolError:
        return None
    if len(parts) != count:
        return None
    return [_bulk_or_nil(part) for part in parts]


def held(value: bytes | None, version: int) -> Reading:
    """What a replica holds: its value, or a tombstone if some version covers it."""
    if version == 0 and value is None:
        return MISSING
    return Reading(value, version, value is None)


@attrs.frozen
class ReadKind:
    """One versioned read command: its request, reading, repair and reply."""

    name: str
    #: The element script's type letter (h s z); empty for a string GET.
    element: bytes = b""

    @property
    def arity(self) -> int:
        return 3 if self.element else 2

    def request(self, args: list[bytes]) -> bytes:
        key = args[1]
        if not self.element:
            return encode_command([b"EVAL", READ_SCRIPT, b"2", key, meta_key(key)])
        script = ELEMENT_READ_SCRIPT
        keys = [key, meta_key(key), elements_key(key)]
        return encode_command([b"EVAL", script, b"3", *keys, self.element, args[2]])

    def parse(self, reply: bytes) -> Reading | None:
        """A replica's reply as a ``Reading``; None for an error or garbage."""
        if not self.element:
            parts = _parts(reply, 2)
            if parts is None:
                return None
            value, meta = parts
            return held(value, decode_meta(meta)[0])
        parts = _parts(reply, 3)
        if parts is None:
            return None
        value, element_meta, key_meta = parts
        version = max(decode_meta(element_meta)[0], decode_meta(key_meta)[0])
        return held(value, version)

    def repair(self, args: list[bytes], winner: Reading, grace: int) -> bytes:
        """What a stale replica is sent: the winner, at the winner's version."""
        key, value = args[1], winner.value
        if not self.element:
            write = [b"DEL", key] if value is None else [b"SET", key, value]
        elif self.element == b"h":
            write = [b"HDEL", key, args[2]] if value is None else [b"HSET", key, args[2], value]
        elif self.element == b"s":
            write = [b"SREM" if value is None else b"SADD", key, args[2]]
        else:
            write = [b"ZREM", key, args[2]] if value is None else [b"ZADD", key, value, args[2]]
        return versioned_write(write, winner.version, grace)

    def reply(self, winner: Reading, protocol: int) -> bytes:
        """The client's reply for the winning reading."""
        value = winner.value
        if self.element == b"s":
            return r.integer(0 if value is None else 1)
        if value is None:
            return r.null(protocol)
        if self.element == b"z" and protocol == 3:
            return b"," + value + b"\r\n"
        return r.bulk(value)


READS = {
    "get": ReadKind("get"),
    "hget": ReadKind("hget", b"h"),
    "sismember": ReadKind("sismember", b"s"),
    "zscore": ReadKind("zscore", b"z"),
}
