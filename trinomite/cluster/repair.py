"""Versioned writes and read repair for string keys, as requests and decisions (pure).

Theory of operation
-------------------
With ``read_repairs_enabled``, the coordinator stamps every ``SET`` and
single-key ``DEL`` with a ``versions.HybridClock`` version and sends each
replica ``versioned_write(...)`` instead: one ``EVAL`` of ``WRITE_SCRIPT``,
which applies the command only if the key's stored version is not newer,
and stores the version (and, for a DEL, a tombstone) under the reserved key
``__trinomite:v:<key>``.  A write older than what a replica holds is
discarded there (last write wins), so hints and repairs may arrive in any
order.  A tombstone's metadata expires after ``TOMBSTONE_GRACE``.

Quorum reads (``GET`` at DC_QUORUM or DC_SAFE_QUORUM) send
``versioned_read(key)`` (``READ_SCRIPT``: the value and its metadata); once a
quorum of replicas answered, ``versions.newest`` picks the winner, the
client gets its value (nil for a tombstone), and each stale replica that
answered gets ``repair_write`` of the winner, with the winner's version.

Commands other than these do not carry versions: a key written with them
(APPEND, INCR, a hash, ...) is repaired only when a SET or DEL wrote it
last, and its quorum reads keep Dynomite's rules.

Pure code: it builds requests and parses replies.
"""

from __future__ import annotations

from ..protocol import replies as r
from ..protocol.replies import ReplyFramer, ReplyProtocolError, is_error
from ..protocol.requests import encode_command
from ..protocol.reserved import RESERVED_PREFIX
from .versions import Reading, decode_meta

__all__ = [
    "READ_SCRIPT",
    "TOMBSTONE_GRACE",
    "WRITE_SCRIPT",
    "client_reply",
    "meta_key",
    "parse_reading",
    "repair_write",
    "versioned_kind",
    "versioned_read",
    "versioned_write",
]

#: How long a tombstone is kept (ms): longer than any partition plus repair interval.
TOMBSTONE_GRACE = 10 * 24 * 3600 * 1000
#: Versions are compared as 20-digit decimal strings (Lua numbers are doubles).
_WIDTH = 20

# KEYS[1] the key, KEYS[2] its metadata; ARGV[1] the version, ARGV[2] "1" for a
# delete, ARGV[3] the tombstone grace (ms), ARGV[4..] the command.
WRITE_SCRIPT = b"""local m = redis.call('GET', KEYS[2])
if m and string.sub(m, 3, 22) > ARGV[1] then
  if string.lower(ARGV[4]) == 'del' then return 0 end
  return {ok='OK'}
end
local reply = redis.call(unpack(ARGV, 4))
redis.call('SET', KEYS[2], '1:' .. ARGV[1] .. ':' .. ARGV[2])
if ARGV[2] == '1' then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
else
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[3])) end
end
return reply
"""

READ_SCRIPT = b"""return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""


def meta_key(key: bytes) -> bytes:
    return RESERVED_PREFIX + b"v:" + key


def versioned_kind(name: str, args: list[bytes]) -> str | None:
    """``"write"``, ``"read"`` or None: whether a request takes part in versioning."""
    if name == "set":
        return "write"
    if name in ("del", "unlink") and len(args) == 2:
        return "write"
    if name == "get":
        return "read"
    return None


def versioned_write(args: list[bytes], version: int) -> bytes:
    """The EVAL that applies ``args`` (SET or single-key DEL) at ``version``."""
    deleted = b"1" if args[0].lower() in (b"del", b"unlink") else b"0"
    return encode_command(
        [
            b"EVAL",
            WRITE_SCRIPT,
            b"2",
            args[1],
            meta_key(args[1]),
            b"%0*d" % (_WIDTH, version),
            deleted,
            b"%d" % TOMBSTONE_GRACE,
            *args,
        ]
    )


def versioned_read(key: bytes) -> bytes:
    return encode_command([b"EVAL", READ_SCRIPT, b"2", key, meta_key(key)])


def _bulk_or_nil(reply: bytes) -> bytes | None:
    if reply.startswith((b"$-1", b"_")):
        return None
    _, _, rest = reply.partition(b"\r\n")
    return rest[:-2]


def parse_reading(reply: bytes) -> Reading | None:
    """A replica's ``READ_SCRIPT`` reply as a ``Reading``; None for an error or garbage."""
    if is_error(reply) or reply[:1] != b"*":
        return None
    framer = ReplyFramer()
    framer.feed(reply[reply.find(b"\r\n") + 2 :])
    try:
        parts = framer.replies()
    except ReplyProtocolError:
        return None
    if len(parts) != 2:
        return None
    value, meta = (_bulk_or_nil(part) for part in parts)
    version, deleted = decode_meta(meta)
    return Reading(None if deleted else value, version, deleted)


def repair_write(key: bytes, winner: Reading) -> bytes:
    """What a stale replica is sent: the winner, at the winner's version."""
    if winner.deleted or winner.value is None:
        return versioned_write([b"DEL", key], winner.version)
    return versioned_write([b"SET", key, winner.value], winner.version)


def client_reply(winner: Reading, protocol: int) -> bytes:
    """The GET reply for the winning reading."""
    if winner.deleted or winner.value is None:
        return r.null(protocol)
    return r.bulk(winner.value)
