"""The hint store: one append-only log per peer, with a replay cursor, bounded.

Theory of operation
-------------------
``HintStore.add(peer, kind, flags, payload)`` appends a record
(``log.encode_hint``) to that peer's log; the replay task reads records from
the peer's *cursor*, sends them, and moves the cursor past those that are
done (``advance``).  A log whose cursor reaches its end is emptied.  Two
bounds, as Cassandra's: a peer down for longer than ``window`` seconds
gets no new hints (and hints older than that are not replayed), and the
logs together may not exceed ``max_bytes``; what falls outside is dropped
and counted per peer, for anti-entropy to repair.

Storage (``ByteLog``): ``MemoryLog`` when no ``hints_dir`` is configured
(hints then survive peer outages, not a restart of this node), else
``FileLog``: ``<dir>/<peer>.hints`` (the peer's name %-quoted; appended with ``O_APPEND``, one
``write`` per hint, so a killed process loses nothing the kernel has) and
``<dir>/<peer>.cursor``.  ``sync()``, called every ``hints_sync_interval`` by
the node (in a worker thread), fsyncs both: a power loss loses at most that
interval of hints, and may replay hints again whose cursor move was not
synced.  Opening a log drops a torn or damaged tail (a crash mid-write) and
counts the hints that remain.

Delivery is therefore at least once: a hint is replayed until its reply is
in and its cursor move is durable.  Overwrites (SET, HSET, DEL, ...) are
idempotent; a non-idempotent write (INCR, LPUSH) replayed again after a
power loss or a crash between the reply and the cursor write applies twice.

Everything here runs on the node's Trio thread except ``sync``; there is no
``await``: file writes go to the page cache.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Protocol
from urllib.parse import quote, unquote

import attrs

from .log import HEADER, Hint, HintReader, encode_hint, overwritten_key

__all__ = [
    "DISK_HINTS",
    "MEMORY_HINTS",
    "ByteLog",
    "FileLog",
    "HintStore",
    "MemoryLog",
    "PeerHints",
]

_log = logging.getLogger("trinomite.hints")

#: Bytes read from a log per replay step.
READ_CHUNK = 256 * 1024
#: Keys tracked per peer for ``superseded`` hints (beyond: no more are tracked).
MAX_OVERWRITTEN = 65536
#: Default caps of all logs together: on disk, and in memory (no hints_dir).
DISK_HINTS = 1 << 30
MEMORY_HINTS = 64 << 20


class ByteLog(Protocol):
    @property
    def size(self) -> int: ...

    cursor: int

    def append(self, data: bytes) -> None: ...
    def read(self, offset: int, size: int) -> bytes: ...
    def truncate(self, size: int) -> None: ...
    def save_cursor(self) -> None: ...
    def sync(self) -> None: ...
    def close(self) -> None: ...


class MemoryLog:
    """A log kept in memory (no ``hints_dir``)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.cursor = 0

    @property
    def size(self) -> int:
        return len(self._data)

    def append(self, data: bytes) -> None:
        self._data += data

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset : offset + size])

    def truncate(self, size: int) -> None:
        del self._data[size:]

    def save_cursor(self) -> None:
        pass

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class FileLog:
    """``<dir>/<name>.hints`` and its cursor file (see the module doc)."""

    def __init__(self, directory: str, name: str) -> None:
        base = os.path.join(directory, quote(name, safe=""))
        self._fd = os.open(base + ".hints", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._cursor_fd = os.open(base + ".cursor", os.O_RDWR | os.O_CREAT, 0o600)
        text = os.pread(self._cursor_fd, 32, 0).strip()
        self.cursor = int(text) if text.isdigit() else 0
        self._size = os.fstat(self._fd).st_size
        self.cursor = min(self.cursor, self._size)

    @property
    def size(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
        except OSError:
            self.truncate(self._size)  # no half record may stay in front of later ones
            raise
        if written != len(data):  # a short write: the disk is full
            self.truncate(self._size)
            raise OSError(errno.ENOSPC, "short write to the hint log")
        self._size += len(data)

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._size = size

    def save_cursor(self) -> None:
        os.pwrite(self._cursor_fd, b"%020d\n" % self.cursor, 0)

    def sync(self) -> None:
        os.fsync(self._fd)
        os.fsync(self._cursor_fd)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._cursor_fd)


@attrs.define
class PeerHints:
    """One peer's log and counters."""

    log: ByteLog
    pending: int = 0
    stored: int = 0
    replayed: int = 0
    #: Dropped by reason: "window" (peer down too long, or a hint too old to
    #: replay) and "full" (the store's byte cap); left for anti-entropy.
    dropped: dict[str, int] = attrs.field(factory=lambda: {"window": 0, "full": 0})
    #: Replayed and refused by the replica (e.g. WRONGTYPE): logged, not retried.
    rejected: int = 0
    #: Not replayed: a newer whole-value write to the same key reached the
    #: replica live while the hint waited (it would have overwritten it).
    superseded: int = 0
    down_since: float | None = None
    #: Key -> log size when a live overwrite of it reached the replica, while
    #: hints were pending; hints before that offset for that key are skipped.
    overwritten: dict[bytes, int] = attrs.field(factory=dict)


class HintStore:
    """Every peer's hints (see the module doc)."""

    def __init__(
        self,
        directory: str | None = None,
        *,
        window: float = 3 * 3600.0,
        max_bytes: int = 1 << 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.window = window
        self.max_bytes = max_bytes
        self.clock = clock
        self.peers: dict[str, PeerHints] = {}
        self.bytes = 0
        #: Hints lost to I/O errors (a full or failing disk), logged once.
        self.disk_errors = 0
        if directory is not None:
            os.makedirs(directory, mode=0o700, exist_ok=True)

    # -- per peer ------------------------------------------------------------

    def peer(self, name: str) -> PeerHints:
        found = self.peers.get(name)
        if found is None:
            log = FileLog(self.directory, name) if self.directory else MemoryLog()
            found = self.peers[name] = PeerHints(log)
            self._recover(found)
        return found

    def _recover(self, hints: PeerHints) -> None:
        """Count a reopened log's hints; drop a torn or damaged tail."""
        log = hints.log
        reader = HintReader(log.cursor)
        offset = log.cursor
        while offset < log.size:
            chunk = log.read(offset, READ_CHUNK)
            if not chunk:
                break
            offset += len(chunk)
            reader.feed(chunk)
            hints.pending += sum(1 for _ in reader.records())
            if reader.broken:
                break
        if reader.valid < log.size:
            log.truncate(reader.valid)
        self.bytes += log.size - log.cursor

    def open_existing(self) -> None:
        """Open every log left in ``directory`` (hints from before a restart)."""
        if self.directory is None:
            return
        for entry in sorted(os.listdir(self.directory)):
            if entry.endswith(".hints"):
                self.peer(unquote(entry[: -len(".hints")]))

    # -- the write path ----------------------------------------------------------

    def add(self, name: str, kind: int, flags: int, payload: bytes) -> bool:
        """Keep a missed write for ``name``; False (counted) if a bound or the disk drops it."""
        try:
            return self._add(name, kind, flags, payload)
        except OSError as exc:  # the disk is full or gone: the write is not hinted
            hints = self.peers.get(name)
            if hints is not None:
                hints.dropped["full"] += 1
            if not self.disk_errors:
                _log.error("hints for %s cannot be written (%s): dropped, counted", name, exc)
            self.disk_errors += 1
            return False

    def _add(self, name: str, kind: int, flags: int, payload: bytes) -> bool:
        hints = self.peer(name)
        now = self.clock()
        if hints.down_since is not None and now - hints.down_since > self.window:
            hints.dropped["window"] += 1
            return False
        record = encode_hint(Hint(kind, flags, now, payload))
        if self.bytes + len(record) > self.max_bytes:
            hints.dropped["full"] += 1
            return False
        hints.log.append(record)
        self.bytes += len(record)
        hints.pending += 1
        hints.stored += 1
        return True

    def has_pending(self, name: str) -> bool:
        found = self.peers.get(name)
        return found is not None and found.pending > 0

    def note_overwrite(self, name: str, key: bytes) -> None:
        """A whole-value write of ``key`` reached ``name`` live (see ``superseded``)."""
        hints = self.peers.get(name)
        if hints is None or not hints.pending:
            return
        if key in hints.overwritten or len(hints.overwritten) < MAX_OVERWRITTEN:
            hints.overwritten[key] = hints.log.size

    def superseded(self, name: str, hint: Hint, end: int) -> bool:
        """Whether a newer live overwrite of the hint's key reached ``name`` after it."""
        hints = self.peers[name]
        if not hints.overwritten:
            return False
        key = overwritten_key(hint.payload)
        if key is None:
            return False
        start = end - HEADER.size - len(hint.payload)
        return hints.overwritten.get(key, -1) > start

    def peer_down(self, name: str) -> None:
        hints = self.peer(name)
        if hints.down_since is None:
            hints.down_since = self.clock()

    def peer_up(self, name: str) -> None:
        self.peer(name).down_since = None

    # -- the replay path -------------------------------------------------------

    def next_hints(self, name: str, limit: int) -> list[tuple[Hint, int]]:
        """Up to ``limit`` hints from the cursor, each with the offset just past it."""
        hints = self.peers.get(name)
        if hints is None or not hints.pending:
            return []
        log = hints.log
        reader = HintReader(log.cursor)
        found: list[tuple[Hint, int]] = []
        offset = log.cursor
        while len(found) < limit and offset < log.size:
            chunk = log.read(offset, READ_CHUNK)
            offset += len(chunk)
            reader.feed(chunk)
            found.extend(_take(reader.records(), limit - len(found)))
            if reader.broken:
                break
        return found

    def advance(
        self,
        name: str,
        offset: int,
        *,
        replayed: int = 0,
        expired: int = 0,
        rejected: int = 0,
        superseded: int = 0,
    ) -> None:
        """Move ``name``'s cursor to ``offset``: that many hints are done with."""
        hints = self.peers[name]
        log = hints.log
        self.bytes -= offset - log.cursor
        hints.pending -= replayed + expired + rejected + superseded
        hints.replayed += replayed
        hints.rejected += rejected
        hints.superseded += superseded
        hints.dropped["window"] += expired
        if offset >= log.size:
            log.truncate(0)  # all replayed: start the log over
            offset = 0
            hints.pending = 0
            hints.overwritten.clear()
        log.cursor = offset
        log.save_cursor()

    def expired(self, hint: Hint) -> bool:
        return self.clock() - hint.created > self.window

    # -- housekeeping --------------------------------------------------------------

    def sync(self) -> None:
        """fsync every log and cursor (call from a worker thread); errors are logged."""
        for name, hints in list(self.peers.items()):
            try:
                hints.log.sync()
            except OSError as exc:
                _log.error("hints for %s cannot be synced: %s", name, exc)

    def close(self) -> None:
        for hints in self.peers.values():
            hints.log.close()

    @property
    def pending(self) -> int:
        return sum(h.pending for h in self.peers.values())

    def totals(self) -> dict[str, int]:
        peers = self.peers.values()
        return {
            "hints_pending": sum(h.pending for h in peers),
            "hints_stored": sum(h.stored for h in peers),
            "hints_replayed": sum(h.replayed for h in peers),
            "hints_dropped": sum(sum(h.dropped.values()) for h in peers),
            "hints_rejected": sum(h.rejected for h in peers),
            "hints_superseded": sum(h.superseded for h in peers),
            "hints_bytes": self.bytes,
        }


def _take(records: Iterator[tuple[Hint, int]], count: int) -> list[tuple[Hint, int]]:
    out: list[tuple[Hint, int]] = []
    for record in records:
        out.append(record)
        if len(out) >= count:
            break
    return out
