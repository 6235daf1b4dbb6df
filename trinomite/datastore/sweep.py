"""The tombstone sweeper: collects read repair's old tombstones from the local datastore.

Theory of operation
-------------------
Read repair's deletes leave tombstones (``cluster.scripts``): a key's
``__trinomite:v:`` metadata marked deleted, or a removed element's entry in
``__trinomite:f:``.  They must outlive the longest partition plus the
repair interval, then go, or deleted data would cost memory forever.
Redis cannot expire one hash field (before 7.4), so instead of leaving it
to the datastore each node sweeps its own datastore: ``COLLECT_SCRIPT``
scans a slice of the keyspace (``SCAN`` with the reserved prefix as its
pattern) and removes the tombstones stamped more than ``tombstone_grace``
ago, atomically per slice.  ``Sweeper.step`` runs one slice; ``sweep``
one whole pass; ``run`` paces slices (``SLICE`` keys every ``STEP``
seconds: a pass over ten million keys takes under three hours, far inside
the ten-day default grace) and rests ``REST`` seconds before each pass, so
a node that just started (or one with ``preconnect: false``) does not
touch its datastore for the sweep at once.  Removed
tombstones and passes are counted (``tombstones_collected``,
``tombstone_sweeps``).  A datastore that is down or refuses the script (an
ACL without EVAL, an embedded store without Lua) only delays the sweep: the
first failure of a kind is logged, the sweeper keeps trying at its pace.

The cutoff comes from ``wall`` (seconds), so tests move time forward by
replacing it rather than by waiting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import trio

from ..cluster.scripts import COLLECT_SCRIPT, stamp
from ..cluster.versions import LOGICAL_BITS
from ..protocol.replies import ReplyFramer, ReplyProtocolError, is_error
from ..protocol.requests import encode_command
from .pool import DatastorePool

__all__ = ["REST", "SLICE", "STEP", "SweepCounters", "Sweeper"]

log = logging.getLogger("trinomite.sweep")

#: Keys scanned per slice, seconds between slices, seconds between passes.
SLICE = 500
STEP = 0.5
REST = 60.0
#: The client id the sweeper's requests go out under (its datastore connection).
SWEEP_CLIENT_ID = -3
_TIMEOUT = 10.0


class SweepCounters(Protocol):
    """Where the sweeper counts (the node's ``ClusterCounters``)."""

    tombstones_collected: int
    tombstone_sweeps: int


class _Reply:
    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.reply = b""
        self.done = trio.Event()

    def set(self, reply: bytes) -> None:
        self.reply = reply
        self.done.set()


def _parse(reply: bytes) -> tuple[bytes, int] | None:
    """``COLLECT_SCRIPT``'s {cursor, removed}, or None for an error or garbage."""
    if is_error(reply) or not reply.startswith(b"*2\r\n"):
        return None
    framer = ReplyFramer()
    framer.feed(reply[4:])
    try:
        cursor, removed = framer.replies()
    except (ReplyProtocolError, ValueError):
        return None
    if not cursor.startswith(b"$") or not removed.startswith(b":"):
        return None
    return cursor.split(b"\r\n")[1], int(removed[1:-2])


class Sweeper:
    """Removes the local datastore's tombstones older than the grace (see module doc)."""

    def __init__(
        self,
        pool: DatastorePool,
        counters: SweepCounters,
        grace_ms: int,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.counters = counters
        self.grace_ms = grace_ms
        self.wall = wall
        self.cursor = b"0"
        self._logged: set[bytes] = set()

    def _oldest_kept(self) -> bytes:
        cutoff_ms = max(0, int(self.wall() * 1000) - self.grace_ms)
        return stamp(cutoff_ms << LOGICAL_BITS)

    async def step(self) -> bool:
        """Sweep one slice; whether a pass ended.  Raises ``OSError`` if it failed."""
        raw = encode_command(
            [b"EVAL", COLLECT_SCRIPT, b"0", self.cursor, b"%d" % SLICE, self._oldest_kept()]
        )
        sink = _Reply()
        self.pool.send(SWEEP_CLIENT_ID, 2, raw, 1, sink, trio.current_time() + _TIMEOUT)
        with trio.move_on_after(_TIMEOUT + 1):
            await sink.done.wait()
        parsed = _parse(sink.reply)
        if parsed is None:
            problem = sink.reply.split(b"\r\n")[0][:200] or b"no reply"
            if problem not in self._logged:
                self._logged.add(problem)
                log.warning("tombstone sweep failed: %s", problem.decode("utf-8", "replace"))
            raise OSError("tombstone sweep failed")
        self.cursor, removed = parsed
        self.counters.tombstones_collected += removed
        if self.cursor == b"0":
            self.counters.tombstone_sweeps += 1
            return True
        return False

    async def sweep(self) -> None:
        """One whole pass over the keyspace, from wherever the cursor is."""
        while not await self.step():
            pass

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(REST)  # first: a node that just started owes no sweep
            try:
                while not await self.step():  # noqa: ASYNC110 (paced slices, not a poll)
                    await trio.sleep(STEP)
            except OSError:
                pass
