"""Versions for read repair: a hybrid logical clock, last-write-wins and tombstones.

Theory of operation
-------------------
"Newest" needs an order on the writes to one key that every replica agrees
on, without coordination.  Each coordinator stamps a write with a *hybrid
logical clock* reading (Kulkarni et al., 2014)::

    version = wall milliseconds << 16 | logical counter   (a 64-bit integer)

``HybridClock.tick()`` never returns a value at or below one it returned or
``observe``d before, even when the wall clock steps back (an NTP correction,
a VM resumed): the logical counter carries it forward, so a node that wipes
and rejoins cannot write "older" versions for keys it saw (Riak's kv679).
Versions from different coordinators are comparable to the precision of
their clocks' agreement: two writes to one key within the skew between two
coordinators are ordered by their stamps, not by real time.  That is the
last-write-wins contract (Cassandra's and Dynamo-style stores').

``newest(readings)`` is the repair decision for one key: given what each
replica holds (``Reading``: its value or a tombstone, and the version), the
winner is the highest version; on a tie a tombstone beats a value (a delete
and a write stamped alike: the delete wins, as in Cassandra), then the
larger value, so every coordinator decides alike.  A replica that holds no
version is at version 0.  Every replica whose reading differs from the
winner's is stale and gets the winner written to it.

Deletes leave tombstones: a ``Reading`` with ``deleted`` set and the delete's
version, so a replica that missed the delete cannot resurrect the value
through repair.  A tombstone may be collected (``collectable``) once it is
older than ``grace``, which must exceed the longest partition plus the
repair interval (Cassandra's ``gc_grace_seconds``: 10 days).

Metadata encoding (``encode_meta`` / ``decode_meta``): ``"1:<version>:<d>"``
(format 1, the version in decimal, d = 1 for a tombstone), stored beside
the key under a reserved prefix that clients cannot name.

Pure code: the clock is passed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import attrs

__all__ = [
    "LOGICAL_BITS",
    "MISSING",
    "HybridClock",
    "Reading",
    "collectable",
    "decode_meta",
    "encode_meta",
    "newest",
    "physical_ms",
]

LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
_FORMAT = b"1"


def physical_ms(version: int) -> int:
    """The wall-clock milliseconds part of a version."""
    return version >> LOGICAL_BITS


class HybridClock:
    """A hybrid logical clock (see the module doc)."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self.last = 0

    def tick(self) -> int:
        """A version above every one this clock returned or observed."""
        physical = int(self._wall() * 1000) << LOGICAL_BITS
        self.last = physical if physical > self.last else self.last + 1
        return self.last

    def wall(self) -> float:
        """The wall clock this clock reads (seconds)."""
        return self._wall()

    def observe(self, version: int) -> None:
        """Take a version seen elsewhere into account (later ticks are above it)."""
        if version > self.last:
            self.last = version


@attrs.frozen
class Reading:
    """What one replica holds for a key: a value or a tombstone, and its version."""

    value: bytes | None
    version: int = 0
    deleted: bool = False

    def key(self) -> tuple[int, bool, bytes]:
        """The order of ``newest``: version, then tombstones, then the value."""
        return (self.version, self.deleted, b"" if self.value is None else self.value)

    def same(self, other: Reading) -> bool:
        return (self.version, self.deleted, self.value) == (
            other.version,
            other.deleted,
            other.value,
        )


#: What a replica without the key (and no version for it) reads as.
MISSING = Reading(None)


def newest(readings: Sequence[Reading]) -> tuple[int, list[int]]:
    """The winning reading's index, and the indices of the stale replicas."""
    if not readings:
        raise ValueError("no readings to decide between")
    winner = max(range(len(readings)), key=lambda i: readings[i].key())
    best = readings[winner]
    stale = [i for i, reading in enumerate(readings) if not reading.same(best)]
    return winner, stale


def collectable(tombstone: Reading, now: float, grace: float) -> bool:
    """Whether a tombstone is older than ``grace`` seconds at wall time ``now``."""
    if not tombstone.deleted:
        return False
    return now * 1000 - physical_ms(tombstone.version) > grace * 1000


def encode_meta(version: int, deleted: bool) -> bytes:
    return b"%s:%d:%d" % (_FORMAT, version, deleted)


def decode_meta(meta: bytes | None) -> tuple[int, bool]:
    """(version, deleted) from stored metadata; (0, False) for none or an unknown format."""
    if not meta:
        return 0, False
    parts = meta.split(b":")
    if len(parts) != 3 or parts[0] != _FORMAT or not parts[1].isdigit():
        return 0, False
    return int(parts[1]), parts[2] == b"1"
