"""Hint records: the bytes of one missed write, framed for an append-only log.

Theory of operation
-------------------
A *hint* is a write a replica missed (it was not connected, timed out,
refused, or its datastore failed), kept by the coordinator to be sent to
that replica once it is reachable again (Dynamo's hinted handoff).  One log
per target peer holds its hints, oldest first; each is one record::

    magic "TH1" | kind u8 | flags u8 | created f64 (unix s) | length u32 | crc32 u32 | payload

* ``kind`` is the peer message type the write is replayed as (``REQ`` to a
  replica in this DC, ``REQ_FORWARD`` to a remote DC, which re-fans it);
  ``flags`` the frame flags it had (RESP3); ``payload`` the RESP request.
* ``crc32`` covers the header fields and the payload, so a record torn by
  a crash in the middle of a write, or damaged later, is detected: the log
  is valid up to the last whole record (``HintReader.valid``), and
  everything after it is discarded when the log is opened.
* ``HintReader`` decodes from any chunking of the log (it keeps a partial
  record between ``feed`` calls) and reports each record's end offset, which
  is what a replay cursor stores.

Pure code: no I/O, no clock (times are passed in).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import attrs

from ..protocol.requests import parse_one

__all__ = [
    "HEADER",
    "MAGIC",
    "MAX_PAYLOAD",
    "OVERWRITES",
    "Hint",
    "HintReader",
    "encode_hint",
    "overwritten_key",
]

MAGIC = b"TH1"
#: magic, kind, flags, created, payload length, crc32 (of kind..payload)
HEADER = struct.Struct(">3sBBdII")
#: A hint is one client request: bounded like one (max_bulk_len plus framing).
MAX_PAYLOAD = 600 * 1024 * 1024


@attrs.frozen
class Hint:
    kind: int
    flags: int
    created: float
    payload: bytes


#: Commands that replace one key's whole value (or remove it), whatever it held:
#: a later one makes an earlier one on the same key irrelevant.
OVERWRITES = frozenset({b"set", b"setex", b"psetex", b"getset", b"del", b"unlink"})
#: The memcached requests that overwrite their key whole (``set``, ``delete``).
_MEMCACHE_OVERWRITES = (b"set ", b"delete ")


def overwritten_key(payload: bytes, *, unconditional: bool = False) -> bytes | None:
    """The key ``payload`` (a RESP request) overwrites as a whole, or None.

    ``unconditional``: only when sending it is enough to know it overwrites
    (not ``SET ... NX|XX``, whose reply tells).
    """
    if payload.startswith(_MEMCACHE_OVERWRITES):  # a memcached payload (data_store: 1)
        tokens = payload[: payload.find(b"\r\n")].split()
        if tokens[0] == b"delete" and len(tokens) > 3:
            return None
        return tokens[1] if len(tokens) > 1 else None
    args = parse_one(payload)
    if not args or len(args) < 2 or args[0].lower() not in OVERWRITES:
        return None
    if args[0].lower() in (b"del", b"unlink") and len(args) != 2:
        return None  # several keys: not one key's overwrite
    if unconditional and any(arg.lower() in (b"nx", b"xx") for arg in args[3:]):
        return None
    return args[1]


def _crc(kind: int, flags: int, created: float, payload: bytes) -> int:
    head = struct.pack(">BBdI", kind, flags, created, len(payload))
    return zlib.crc32(payload, zlib.crc32(head))


def encode_hint(hint: Hint) -> bytes:
    """One log record for ``hint``."""
    crc = _crc(hint.kind, hint.flags, hint.created, hint.payload)
    header = HEADER.pack(MAGIC, hint.kind, hint.flags, hint.created, len(hint.payload), crc)
    return header + hint.payload


class HintReader:
    """Decodes records from a log read in chunks, starting at ``offset``."""

    def __init__(self, offset: int = 0) -> None:
        #: Log offset just past the last whole, valid record decoded.
        self.valid = offset
        self.broken = False  #: a damaged record was met: nothing after it is trusted
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        if not self.broken:
            self._buf += data

    def records(self) -> Iterator[tuple[Hint, int]]:
        """Each whole record fed so far, with the log offset just past it."""
        buf = self._buf
        size = HEADER.size
        while not self.broken and len(buf) >= size:
            magic, kind, flags, created, length, crc = HEADER.unpack_from(buf)
            if magic != MAGIC or length > MAX_PAYLOAD:
                self.broken = True
                return
            if len(buf) < size + length:
                return  # the rest of this record is not here yet (or was torn off)
            payload = bytes(buf[size : size + length])
            if _crc(kind, flags, created, payload) != crc:
                self.broken = True
                return
            del buf[: size + length]
            self.valid += size + length
            yield Hint(kind, flags, created, payload), self.valid

    @property
    def pending(self) -> int:
        """Bytes fed that do not (yet) form a whole record."""
        return len(self._buf)
