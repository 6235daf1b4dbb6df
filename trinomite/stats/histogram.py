"""Latency and size histograms cheap enough for the request path.

Theory of operation
-------------------
Values (microseconds, or bytes) fall into log-linear buckets: each power of
two is split into ``SUB`` equal sub-buckets, so a bucket's width is at most
1/SUB of its value (about 25% with SUB = 4) from 1 to 2**40.  Recording is
one ``bucket()`` computation per *batch* and one list increment per value:

    index = bucket(us)          # bit_length arithmetic, no floats, no search
    hist.add(index, n)          # n values that took the same time

Percentiles walk the counts (only when someone reads the stats) and report
the bucket's upper bound, so p99 is never under-reported.  ``max`` and the
sum (for the mean) are exact.  Pure code, no I/O.
"""

from __future__ import annotations

__all__ = ["BUCKETS", "Histogram", "bucket", "upper_bound"]

SUB_BITS = 2
SUB = 1 << SUB_BITS
OCTAVES = 41
BUCKETS = OCTAVES * SUB


def bucket(value: int) -> int:
    """The bucket index of a non-negative integer value."""
    if value < SUB:
        return max(value, 0)
    octave = value.bit_length() - SUB_BITS - 1
    index = (octave + 1) * SUB + ((value >> octave) & (SUB - 1))
    return index if index < BUCKETS else BUCKETS - 1


def upper_bound(index: int) -> int:
    """The largest value that falls into bucket ``index``."""
    if index < SUB:
        return index
    octave = index // SUB - 1
    return ((SUB + index % SUB + 1) << octave) - 1


class Histogram:
    __slots__ = ("counts", "max", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = 0
        self.sum = 0
        self.max = 0

    def add(self, index: int, count: int = 1, value: int | None = None) -> None:
        """Record ``count`` values in bucket ``index`` (``value`` for the exact sum/max)."""
        self.counts[index] += count
        self.total += count
        exact = upper_bound(index) if value is None else value
        self.sum += exact * count
        if exact > self.max:
            self.max = exact

    def observe(self, value: int, count: int = 1) -> None:
        self.add(bucket(value), count, value)

    def percentile(self, fraction: float) -> int:
        """The value at or below which ``fraction`` of the recorded values fall."""
        if self.total == 0:
            return 0
        rank = fraction * self.total
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if count and seen >= rank:
                return min(upper_bound(index), self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.sum / self.total if self.total else 0.0

    def summary(self) -> dict[str, float]:
        return {
            "p50": self.percentile(0.50),
            "p95": self.percentile(0.95),
            "p99": self.percentile(0.99),
            "p999": self.percentile(0.999),
            "max": self.max,
            "mean": round(self.mean, 1),
        }

    def cumulative(self) -> list[tuple[int, int]]:
        """(upper bound, values at or below it) per non-empty octave, for Prometheus."""
        out: list[tuple[int, int]] = []
        seen = 0
        for octave in range(OCTAVES):
            chunk = self.counts[octave * SUB : (octave + 1) * SUB]
            seen += sum(chunk)
            if seen:
                out.append((upper_bound(octave * SUB + SUB - 1), seen))
            if seen == self.total:
                break
        return out

    def reset(self) -> None:
        self.counts = [0] * BUCKETS
        self.total = self.sum = self.max = 0
