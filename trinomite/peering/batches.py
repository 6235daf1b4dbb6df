"""A client run's two-replica quorum requests, collected as one batch per replica.

Theory of operation
-------------------
In a two-rack cluster every keyed request at DC_QUORUM or DC_SAFE_QUORUM has
the same two replicas: this node and the owner in the other rack
(``Plan.pair``).  ``Coordinator.route_run`` therefore gathers the run's
consecutive such requests for one peer into a batch instead of routing them
one by one, and sends it as two legs::

    requests r1..rn  ->  local leg:  r1..rn in the run's datastore send
                     ->  peer leg:   r1..rn as one bundle frame (or n frames
                                     to a peer that does not take bundles)
    leg replies      ->  BatchLeg.set_parts(n replies): hints for missed writes
                     ->  PairRun.arrive: the two legs' i-th replies decided as
                         PairQuorum decides one pair; one client slot for all n

A leg's replies arrive together (a datastore run is split once, a bundle's
reply is one frame), so the per-request work left is one comparison and, for
writes, the hint check; no per-request sinks, slots, FIFO entries or frames.

Semantics are ``PairQuorum``'s per request, decided over whole legs: the leg
that arrives first is "first"; an error in either decides that request; two
equal replies are the reply; two different ones are ``NO_QUORUM`` at
DC_SAFE_QUORUM and the first one at DC_QUORUM.  The client's replies are
released when both legs are in (or failed: a leg that times out or is lost
answers every request in it with that error), which is when a per-request
quorum of two would have released its last one anyway.

A write's miss on either leg becomes a hint exactly as ``HintOnMiss`` makes
it (``note_write_reply``), the local leg's under ``LOCAL_HINTS``.
"""

from __future__ import annotations

from ..cluster.quorum import NO_QUORUM
from ..cluster.routing import Mode
from ..errors import NodeError, redis_error
from ..hints.replay import LOCAL_HINTS, note_write_reply
from ..hints.store import HintStore
from ..net.slots import PartsSink, ReplySink
from ..protocol.replies import is_error, split_replies
from ..protocol.requests import encode_command
from .collectors import ClusterCounters

__all__ = ["UNSPLIT_REPLY", "BatchLeg", "CopyRun", "Encoded", "PairRun", "split_leg_reply"]

UNSPLIT_REPLY = redis_error(NodeError.PEER_PROTOCOL)


def split_leg_reply(reply: bytes, count: int) -> list[bytes]:
    """A multi-request leg's reply as ``count`` replies.

    One error line stands for all of them (the leg timed out, its link is
    down, the peer refused a bundle); anything else that does not split into
    exactly ``count`` replies is the peer's protocol error, for each.
    """
    if count == 1:
        return [reply]
    parts = split_replies(reply, count)
    if parts is not None:
        return parts
    error = reply if is_error(reply) and reply.count(b"\r\n") == 1 else UNSPLIT_REPLY
    return [error] * count


class Encoded:
    """A batch's requests, each encoded only when its own bytes are wanted.

    The legs send the batch's joined encoding (often the client's own bytes,
    no encoding at all); single requests are wanted only for a hint, a hint
    overtaken, or a peer that takes no bundles.
    """

    __slots__ = ("_raws", "requests")

    def __init__(self, requests: list[list[bytes]]) -> None:
        self.requests = requests
        self._raws: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.requests)

    def __getitem__(self, index: int) -> bytes:
        raws = self._raws
        if raws is None:
            raws = self._raws = [encode_command(args) for args in self.requests]
        return raws[index]

    def joined(self) -> bytes:
        return b"".join(map(encode_command, self.requests))


class PairRun:
    """The client replies of n two-replica requests, from two batch legs.

    ``mode`` is the plan's: ``Mode.QUORUM`` and ``Mode.SAFE`` decide as
    ``PairQuorum``; ``Mode.EACH`` (one replica in each of two DCs) as
    ``EachQuorum`` does with one replica per DC: the first error, else the
    local DC's reply, and no non-quorum counts (as ``EachLeg``).
    """

    __slots__ = ("counters", "first", "first_local", "mode", "sink", "writes")

    def __init__(
        self, sink: ReplySink, writes: list[bool], counters: ClusterCounters, mode: Mode
    ) -> None:
        self.sink = sink
        self.writes = writes
        self.counters = counters
        self.mode = mode
        #: The first leg's replies; [] once decided.
        self.first: list[bytes] | None = None
        self.first_local = False

    def arrive(self, parts: list[bytes], local: bool) -> None:
        first = self.first
        if first is None:
            self.first = parts
            self.first_local = local
            return
        if not first:
            return  # decided already: a late duplicate
        self.first = []
        mode = self.mode
        if mode is Mode.EACH:
            own = parts if local else first
            out = []
            for one, two, mine in zip(first, parts, own, strict=True):
                if one[:1] in (b"-", b"!"):
                    out.append(one)
                elif two[:1] in (b"-", b"!"):
                    out.append(two)
                else:
                    out.append(mine)
            self.sink.set(b"".join(out))
            return
        safe = mode is Mode.SAFE
        out = []
        failed_writes = failed_reads = 0
        for index, (one, two) in enumerate(zip(first, parts, strict=True)):
            if one[:1] in (b"-", b"!"):
                result = one
            elif two[:1] in (b"-", b"!"):
                result = two
            elif one == two:
                out.append(one)
                continue
            else:
                result = NO_QUORUM if safe else one
            if result[:1] in (b"-", b"!"):
                if self.writes[index]:
                    failed_writes += 1
                else:
                    failed_reads += 1
            out.append(result)
        counters = self.counters
        counters.client_non_quorum_w_responses += failed_writes
        counters.client_non_quorum_r_responses += failed_reads
        self.sink.set(b"".join(out))


class CopyRun:
    """The replies of n copies nobody waits for (DC_ONE writes' other replicas).

    As ``Swallow``: errors are counted; the leg's hints are its ``BatchLeg``'s.
    """

    __slots__ = ("counters", "writes")

    def __init__(self, writes: list[bool], counters: ClusterCounters) -> None:
        self.writes = writes
        self.counters = counters

    def arrive(self, parts: list[bytes], local: bool) -> None:
        errors = sum(1 for reply in parts if reply[:1] in (b"-", b"!"))
        self.counters.peer_forward_error += errors


class BatchLeg(PartsSink):
    """One replica's leg of a ``PairRun``: n requests, their n replies together.

    ``set`` takes the replies joined (a bundle's RES) or one error standing
    for all (the leg timed out, its link is down); ``part(i)`` gives a sink
    per request for a peer that gets them as separate frames.
    """

    __slots__ = ("flags", "got", "hints", "kind", "local", "missing", "peer", "raws", "run")

    def __init__(
        self,
        run: PairRun | CopyRun,
        raws: Encoded,
        hints: HintStore | None,
        peer: str,
        kind: int,
        flags: int,
    ) -> None:
        self.run = run
        self.raws = raws
        #: Where this leg's missed writes go (None: hinted handoff off).
        self.hints = hints
        self.peer = peer
        self.kind = kind
        self.flags = flags
        self.local = peer == LOCAL_HINTS  # this node's own datastore leg
        self.got: list[bytes | None] | None = None  # per-request replies, see part()
        self.missing = 0

    def set(self, reply: bytes) -> None:
        self.set_parts(split_leg_reply(reply, len(self.raws)))

    def set_parts(self, parts: list[bytes]) -> None:
        hints = self.hints
        if hints is not None:
            writes = self.run.writes
            peer = self.peer
            pending = hints.has_pending
            for index, reply in enumerate(parts):
                # note_write_reply acts only on a miss (an error) or while the
                # peer has hints: only then is the request's own encoding needed.
                if writes[index] and (reply[:1] == b"-" or pending(peer)):
                    raw = self.raws[index]
                    note_write_reply(hints, peer, self.kind, self.flags, raw, reply)
        self.run.arrive(parts, self.local)

    def part(self, index: int) -> ReplySink:
        """The sink of request ``index`` sent on its own (all parts: ``set_parts``)."""
        if self.got is None:
            self.got = [None] * len(self.raws)
            self.missing = len(self.raws)
        return _Part(self, index)

    def _one(self, index: int, reply: bytes) -> None:
        got = self.got
        assert got is not None
        if got[index] is None:
            got[index] = reply
            self.missing -= 1
            if self.missing == 0:
                self.set_parts([r or b"" for r in got])


class _Part:
    __slots__ = ("index", "leg")

    def __init__(self, leg: BatchLeg, index: int) -> None:
        self.leg = leg
        self.index = index

    def set(self, reply: bytes) -> None:
        self.leg._one(self.index, reply)
