"""Phi-accrual failure detection, with a hard bound on the time to convict.

Theory of operation
-------------------
Cassandra's detector (``FailureDetector.ArrivalWindow``): for every peer
keep the intervals between the arrivals of its heartbeats (a heartbeat
*arrives* when gossip brings a higher heartbeat version than we had,
directly or relayed), over a bounded window of the last ``window``
intervals.  Suspicion grows with the silence since the last arrival::

    phi(now) = (now - last_arrival) / mean * log10(e)        convict when phi >= threshold

(``log10(e)`` = ``PHI_FACTOR``: the exponential-distribution form that
Cassandra uses).  So a peer is convicted after ``threshold * ln(10) * mean``
seconds of silence.  Left alone, ``mean`` is about the gossip interval
``I`` and, with the default threshold 8, conviction takes 18.4 I: 18 s at
``gos_interval: 1000``, 9 minutes at the default 30000.  trinomite wants a
silent node convicted within 5 s at ``I = 1 s``, so the mean used in phi is
clamped to ``[MEAN_FLOOR * I, MEAN_CAP * I]`` = ``[I/8, I/5]``.  The
conviction time after the last arrival is then bounded by a formula of the
interval alone::

    T = threshold * ln(10) * clamp(mean, I/8, I/5)
    T_min = 8 * ln(10) / 8 * I = 2.303 I      T_max = 8 * ln(10) / 5 * I = 3.684 I

    gos_interval  1000 ms:  2.30 s <= T <= 3.68 s
    gos_interval 30000 ms: 69.1 s  <= T <= 110.5 s   (Dynomite: 40 I = 1200 s)

With heartbeats about once per interval the cap is what applies (``T`` =
3.7 I): phi then behaves as a fixed timeout, which is the point of the
bound.  The cap is I/5 rather than I/4 so that, with the last heartbeat's
relay lag, a stopped node is DOWN everywhere within 5 s at ``I = 1 s`` in
clusters of up to a dozen nodes (``bench/gossip_sim.py``: 4.9 s worst at 3
and 12 nodes, 6.2 s at 48, no false conviction at 10% loss; I/6.7 gave 5 s
at 48 nodes but 135 false convictions a minute).  The mean matters when
arrivals come faster than one per ``I/5``;
the floor stops a burst of arrivals from shrinking ``T`` below 2.3 I,
which keeps jitter from convicting a node that is merely late.  A lower
threshold gives proportionally faster conviction: ``T`` scales with it.
Intervals longer than ``T_max`` are outages, not cadence, and are left out
of the window (Cassandra drops intervals over its ``MAX_INTERVAL`` too).

The bound is relative to the last heartbeat that *reached this node*: a
heartbeat relayed by gossip arrives a few rounds after its owner sent it,
so end to end a node that stops is convicted everywhere within ``T_max``
plus the time its last heartbeat takes to spread.

Timers are sans-IO: ``deadline(name)`` is the instant the peer will be
convicted if nothing arrives, and the caller asks again after calling
``heartbeat``.  Pure code: time is passed in, nothing reads a clock.
"""

from __future__ import annotations

import math
from collections import deque

import attrs

__all__ = [
    "DEFAULT_THRESHOLD",
    "MEAN_CAP",
    "MEAN_FLOOR",
    "PHI_FACTOR",
    "FailureDetector",
    "conviction_bounds",
]

#: log10(e): phi = elapsed / mean * PHI_FACTOR (Cassandra's ``PHI_FACTOR``).
PHI_FACTOR = 1.0 / math.log(10.0)
#: Cassandra's default ``phi_convict_threshold``.
DEFAULT_THRESHOLD = 8.0
#: The mean inter-arrival time used in phi is clamped to these fractions of
#: the gossip interval.
MEAN_FLOOR = 1.0 / 8.0
MEAN_CAP = 1.0 / 5.0
#: Intervals remembered per peer.
DEFAULT_WINDOW = 100


def conviction_bounds(interval: float, threshold: float = DEFAULT_THRESHOLD) -> tuple[float, float]:
    """(T_min, T_max): the silence after which a peer is convicted, in seconds.

    ``interval`` is the gossip interval in seconds.  With the defaults this
    is (2.303 * interval, 3.684 * interval).
    """
    scale = threshold / PHI_FACTOR * interval
    return scale * MEAN_FLOOR, scale * MEAN_CAP


@attrs.define
class _Arrivals:
    last: float
    intervals: deque[float]
    total: float = 0.0


class FailureDetector:
    """Per-peer arrival windows and the conviction rule above.

    ``add`` starts watching a peer (as if a heartbeat arrived ``now``),
    ``heartbeat`` records an arrival, ``reset`` starts over (a new
    generation: its old cadence says nothing about the new process),
    ``forget`` stops watching.  Unknown names raise KeyError.
    """

    def __init__(
        self,
        interval: float,
        threshold: float = DEFAULT_THRESHOLD,
        window: int = DEFAULT_WINDOW,
    ) -> None:
        if not (interval > 0 and threshold > 0 and window >= 1):
            raise ValueError("interval and threshold must be > 0, window >= 1")
        self.interval = interval
        self.threshold = threshold
        self.window = window
        self._floor = interval * MEAN_FLOOR
        self._cap = interval * MEAN_CAP
        self._longest = conviction_bounds(interval, threshold)[1]
        self._peers: dict[str, _Arrivals] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def add(self, name: str, now: float) -> None:
        if name not in self._peers:
            self.reset(name, now)

    def reset(self, name: str, now: float) -> None:
        # One prior interval of ``interval`` (Cassandra seeds its window with
        # an initial value too): a single early sample, often a second relay
        # of a heartbeat milliseconds after the first, must not set the mean.
        prior = deque([self.interval], maxlen=self.window)
        self._peers[name] = _Arrivals(now, prior, self.interval)

    def forget(self, name: str) -> None:
        self._peers.pop(name, None)

    def heartbeat(self, name: str, now: float) -> None:
        peer = self._peers[name]
        gap = now - peer.last
        if gap < 0:
            return  # time never runs backwards for the caller; ignore rather than corrupt
        peer.last = now
        if gap > self._longest:
            return  # an outage, not a heartbeat cadence
        if len(peer.intervals) == peer.intervals.maxlen:
            peer.total -= peer.intervals[0]
        peer.intervals.append(gap)
        peer.total += gap

    def last_arrival(self, name: str) -> float:
        return self._peers[name].last

    def mean(self, name: str) -> float:
        """The clamped mean interval used by phi (a prior sample of ``interval`` included)."""
        peer = self._peers[name]
        raw = peer.total / len(peer.intervals)
        return min(max(raw, self._floor), self._cap)

    def phi(self, name: str, now: float) -> float:
        elapsed = max(0.0, now - self._peers[name].last)
        return elapsed / self.mean(name) * PHI_FACTOR

    def deadline(self, name: str) -> float:
        """When ``name`` is convicted unless a heartbeat arrives first."""
        return self._peers[name].last + self.threshold / PHI_FACTOR * self.mean(name)

    def convicted(self, name: str, now: float) -> bool:
        """phi >= threshold, computed as ``now >= deadline`` (no rounding loop)."""
        return now >= self.deadline(name)
