"""Reply collectors: the sinks a coordinator hands replica replies to.

Theory of operation
-------------------
Every leg of a routed request answers into a ``ReplySink``; these turn
replica replies into the client's reply, or account for them:

* ``Swallow``: replies nobody waits for (uncounted legs); counts errors;
* ``QuorumSink``: feeds a ``QuorumDecision`` and sets the client's reply
  when it is decided (counting quorum failures); ``PairQuorum`` is the
  same for the two replicas of a two-rack quorum, without the decision
  object;
* ``EachLeg``: one DC's legs of a DC_EACH_SAFE_QUORUM request;
* ``SetHeader``: SMEMBERS answered as ``SORT key ALPHA``, restored as a set;
* ``Merge`` (with ``_Fragment``): the fragments of a scatter-gathered
  request (MGET, DEL/EXISTS, MSET) joined in key order, summed, or +OK.

``ClusterCounters`` are the coordinator's statistics, which collectors
update.  Nothing here awaits or sends.
"""

from __future__ import annotations

import attrs

from ..cluster.quorum import NO_QUORUM, EachQuorum, QuorumDecision
from ..errors import NodeError, redis_error
from ..net.slots import ReplySink
from ..protocol import replies as r
from ..protocol.commands import Route
from ..protocol.replies import ReplyFramer, ReplyProtocolError, is_error

__all__ = [
    "ClusterCounters",
    "EachLeg",
    "Merge",
    "PairQuorum",
    "QuorumSink",
    "SetHeader",
    "Swallow",
]


@attrs.define
class ClusterCounters:
    """Coordinator statistics, with Dynomite's names where it has one."""

    peer_requests: int = 0
    peer_forward_error: int = 0
    remote_peer_failover_requests: int = 0
    remote_peer_dropped_requests: int = 0
    client_non_quorum_r_responses: int = 0
    client_non_quorum_w_responses: int = 0
    fragments: int = 0
    #: trinomite: DC_ONE reads served by another rack because the own-rack owner was down.
    read_failover_requests: int = 0
    #: trinomite: REQ_FORWARDs received from remote DCs and re-fanned here.
    forwarded_requests: int = 0
    #: trinomite: stale replicas sent the newest value by a quorum read.
    read_repairs: int = 0
    #: trinomite: tombstones older than tombstone_grace removed from the datastore.
    tombstones_collected: int = 0
    #: trinomite: completed passes of the tombstone sweeper over the keyspace.
    tombstone_sweeps: int = 0


class Swallow:
    """Sink for replies nobody waits for: counts errors (a later hint store hooks in here)."""

    __slots__ = ("counters",)

    def __init__(self, counters: ClusterCounters) -> None:
        self.counters = counters

    def set(self, reply: bytes) -> None:
        if is_error(reply):
            self.counters.peer_forward_error += 1


class QuorumSink:
    __slots__ = ("counters", "decision", "sink", "write")

    def __init__(
        self, decision: QuorumDecision, sink: ReplySink, counters: ClusterCounters, write: bool
    ) -> None:
        self.decision = decision
        self.sink = sink
        self.counters = counters
        self.write = write

    def set(self, reply: bytes) -> None:
        result = self.decision.add(reply)
        if result is not None:
            if is_error(result):
                if self.write:
                    self.counters.client_non_quorum_w_responses += 1
                else:
                    self.counters.client_non_quorum_r_responses += 1
            self.sink.set(result)


class PairQuorum:
    """``QuorumSink`` over a ``QuorumDecision`` of two replicas, in one small object.

    Two racks are the common cluster, and a quorum of two needs both: the
    first error decides (the other reply cannot make a quorum), two equal
    replies decide, and two different ones give ``DC_SAFE_QUORUM``'s
    no-quorum error or, at DC_QUORUM, the first reply, exactly as the
    general decision does (tests/test_quorum.py compares them).
    """

    __slots__ = ("counters", "first", "safe", "sink", "write")

    def __init__(self, sink: ReplySink, counters: ClusterCounters, write: bool, safe: bool) -> None:
        self.sink = sink
        self.counters = counters
        self.write = write
        self.safe = safe
        self.first: bytes | None = None

    def set(self, reply: bytes) -> None:
        first = self.first
        if first == b"":
            return  # decided: a late reply is swallowed
        if is_error(reply):
            result = reply
        elif first is None:
            self.first = reply
            return
        elif reply == first:
            self.first = b""
            self.sink.set(reply)
            return
        else:
            result = NO_QUORUM if self.safe else first
        self.first = b""
        if is_error(result):
            if self.write:
                self.counters.client_non_quorum_w_responses += 1
            else:
                self.counters.client_non_quorum_r_responses += 1
        self.sink.set(result)


class EachLeg:
    __slots__ = ("dc", "each", "sink")

    def __init__(self, each: EachQuorum, dc: str, sink: ReplySink) -> None:
        self.each = each
        self.dc = dc
        self.sink = sink

    def set(self, reply: bytes) -> None:
        result = self.each.add(self.dc, reply)
        if result is not None:
            self.sink.set(result)


class SetHeader:
    """SMEMBERS answered by ``SORT key ALPHA``: restore the RESP3 set type."""

    __slots__ = ("sink",)

    def __init__(self, sink: ReplySink) -> None:
        self.sink = sink

    def set(self, reply: bytes) -> None:
        self.sink.set(b"~" + reply[1:] if reply[:1] == b"*" else reply)


class Merge:
    """Joins the replies of a scatter-gathered request's fragments."""

    __slots__ = ("_errors", "_values", "pending", "route", "sink", "total")

    def __init__(self, route: Route, total: int, fragments: int, sink: ReplySink) -> None:
        self.route = route
        self.total = total
        self.pending = fragments
        self.sink = sink
        self._values: list[bytes] = [b""] * total
        self._errors: list[bytes] = []

    def part(self, indices: list[int]) -> ReplySink:
        return _Fragment(self, indices)

    def add(self, indices: list[int], reply: bytes) -> None:
        if is_error(reply):
            self._errors.append(reply)
        elif self.route is Route.SCATTER_ARRAY:
            elements = _array_elements(reply)
            if elements is None or len(elements) != len(indices):
                self._errors.append(redis_error(NodeError.STORAGE_PROTOCOL))
            else:
                for index, element in zip(indices, elements, strict=True):
                    self._values[index] = element
        elif self.route is Route.SCATTER_SUM:
            self._values[indices[0]] = reply
        self.pending -= 1
        if self.pending == 0:
            self.sink.set(self._result())

    def _result(self) -> bytes:
        if self._errors:
            return self._errors[0]
        if self.route is Route.SCATTER_ARRAY:
            return r.array(self._values)
        if self.route is Route.SCATTER_SUM:
            total = 0
            for value in self._values:
                if value:
                    total += int(value[1:-2])
            return r.integer(total)
        return b"+OK\r\n"


class _Fragment:
    __slots__ = ("indices", "merge")

    def __init__(self, merge: Merge, indices: list[int]) -> None:
        self.merge = merge
        self.indices = indices

    def set(self, reply: bytes) -> None:
        self.merge.add(self.indices, reply)


def _array_elements(reply: bytes) -> list[bytes] | None:
    if reply[:1] != b"*":
        return None
    framer = ReplyFramer()
    framer.feed(reply[reply.find(b"\r\n") + 2 :])
    try:
        return framer.replies()
    except ReplyProtocolError:
        return None
