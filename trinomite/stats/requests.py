"""Per-command request counts and client latency, recorded once per batch.

Theory of operation
-------------------
The dispatcher already looks every request up in the command table, so
counting costs one list increment per request (``counts[spec.index]``).
Latency is measured once per batch (a batch's requests are answered
together): one clock read before, one after, one bucket computation, then a
list increment per request in that command's histogram.  Everything else
(/info's read/write totals, Dynomite's ``redis_req_*`` categories) is
derived from these counts when someone asks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from ..protocol.commands import COMMANDS, Access, CommandSpec
from .histogram import Histogram, bucket

__all__ = ["CATEGORIES", "RequestStats", "category_of"]

#: Dynomite's ``redis_req_*`` server counters: category -> commands in it.
CATEGORIES: dict[str, frozenset[str]] = {
    "get": frozenset({"get"}),
    "set": frozenset({"set"}),
    "del": frozenset({"del", "unlink"}),
    "incr_decr": frozenset({"incr", "decr", "incrby", "decrby", "incrbyfloat"}),
    "keys": frozenset({"keys"}),
    "mget": frozenset({"mget"}),
    "scan": frozenset({"scan"}),
    "sort": frozenset({"sort", "sort_ro"}),
    "lreqm": frozenset({"lrem"}),
    "sunion": frozenset({"sunion", "sunionstore"}),
    "ping": frozenset({"ping"}),
}
_LIST_COMMANDS = frozenset(
    "lpush rpush lpushx rpushx lpop rpop llen lindex linsert lrange lset ltrim lpos rpoplpush "
    "lmove".split()
)
#: Names starting with "s" that are not set commands.
_NOT_SETS = frozenset(
    "set setnx setex setrange setbit strlen substr select script scan slaveof sort sort_ro".split()
)


def category_of(spec: CommandSpec) -> str:
    """The ``redis_req_<category>`` counter a command counts toward."""
    for category, names in CATEGORIES.items():
        if spec.name in names:
            return category
    if spec.name in _LIST_COMMANDS:
        return "lists"
    first = spec.name[:1]
    if first == "s" and spec.name not in _NOT_SETS:
        return "sets"
    if first == "h" and spec.name != "hello":
        return "hashes"
    if first == "z":
        return "sortedsets"
    return "other"


class RequestStats:
    """Counts and latencies of every client request a node answered."""

    __slots__ = ("by_command", "counts", "latency", "unknown")

    def __init__(self) -> None:
        self.counts = [0] * len(COMMANDS)
        #: Latency per command, created on first use.
        self.by_command: list[Histogram | None] = [None] * len(COMMANDS)
        self.latency = Histogram()
        #: Unknown or refused commands (they have no table row).
        self.unknown = 0

    def record(self, indices: list[int], elapsed_us: int) -> None:
        """A batch of requests (their command indices) answered after ``elapsed_us``.

        This also counts them: callers only collect the indices.
        """
        if not indices:
            return
        index = bucket(elapsed_us)
        self.latency.add(index, len(indices), elapsed_us)
        by_command = self.by_command
        # Pipelines usually repeat one command: count each distinct one once.
        first = indices[0]
        if indices.count(first) == len(indices):
            counted: Mapping[int, int] = {first: len(indices)}
        else:
            counted = Counter(indices)
        counts = self.counts
        for command, count in counted.items():
            counts[command] += count
            histogram = by_command[command]
            if histogram is None:
                histogram = by_command[command] = Histogram()
            histogram.add(index, count, elapsed_us)

    def totals(self) -> tuple[int, int]:
        """(reads, writes) answered, by the table's read/write flag."""
        reads = writes = 0
        for spec in COMMANDS.values():
            count = self.counts[spec.index]
            if spec.access is Access.WRITE:
                writes += count
            else:
                reads += count
        return reads, writes

    def by_category(self) -> dict[str, int]:
        out = dict.fromkeys([*CATEGORIES, "lists", "sets", "hashes", "sortedsets", "other"], 0)
        for spec in COMMANDS.values():
            out[category_of(spec)] += self.counts[spec.index]
        return out

    def reset_histograms(self) -> None:
        self.latency.reset()
        self.by_command = [None] * len(COMMANDS)
