"""How a coordinator's legs are sent: one at a time, or a client run's in batches.

Theory of operation
-------------------
``Legs`` is the lower half of ``Coordinator`` (its base class): the upper
half decides where a request goes and how its replies become the client's
(``peering.coordinator``); this half sends each leg and keeps what sending
needs: the plan cache, the hint store, the counters, timeouts::

    _send(target, raw, sink)  -> the local datastore (``_local``) or a peer,
                                 a write leg wrapped so that a miss is a hint
    _local_run(group)         -> a run's requests that the local datastore's
                                 reply answers, as one leg (+ their copies)
    _copy / _send_copies      -> those requests' copies for other replicas
                                 (DC_ONE writes), one batch leg per peer
    _pairs(batch)             -> two-replica requests (``Plan.pair``) as one
                                 leg per replica (``peering.batches``)

Inside ``Coordinator.route_run`` (the node NORMAL) legs are not sent at once
but collected: ``_legs`` for the local datastore, ``_peer_legs`` per peer,
sent when the run is routed as one datastore run and one write per peer.
Outside a run (``None``) each leg goes out as it is made.

Deadlines are Dynomite's: ``timeout`` plus ``SAME_DC_EXTRA`` or
``REMOTE_DC_EXTRA`` for a peer, plus ``WRITE_EXTRA`` for writes.
"""

from __future__ import annotations

from typing import Protocol

from ..cluster.routing import Mode, Plan, PlanCache, Target
from ..cluster.versions import HybridClock
from ..config.model import Consistency, NodeConfig
from ..datastore.gate import StateGate
from ..datastore.pool import RunItem
from ..hints.log import overwritten_key
from ..hints.replay import LOCAL_HINTS, HintOnMiss
from ..hints.store import HintStore
from ..net.slots import Gather, ReplySink
from ..protocol.peer import FLAG_RESP3, MessageType
from ..protocol.requests import encode_command
from ..ring.hashing import tagged
from ..ring.topology import LOCAL_TOKEN, Topology
from .batches import BatchLeg, CopyRun, Encoded, PairRun
from .collectors import ClusterCounters, Swallow
from .pools import PeerLeg, PeerPools

__all__ = ["REMOTE_DC_EXTRA", "SAME_DC_EXTRA", "WRITE_EXTRA", "Caller", "Copies", "Legs"]


class Caller(Protocol):
    """What the coordinator needs of the client connection a request came from."""

    @property
    def id(self) -> int: ...
    @property
    def protocol(self) -> int: ...
    @property
    def read_consistency(self) -> Consistency: ...
    @property
    def write_consistency(self) -> Consistency: ...


#: Extra time a peer gets beyond ``timeout`` (Dynomite's dnode_peer_timeout).
SAME_DC_EXTRA = 0.2
REMOTE_DC_EXTRA = 5.0
WRITE_EXTRA = 20.0


class Copies:
    """A local group's copies for one peer, sent as one batch leg."""

    __slots__ = ("requests", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.requests: list[list[bytes]] = []


class Legs:
    """Sends a coordinator's legs (see the module doc); ``Coordinator`` builds on it."""

    def __init__(
        self,
        topology: Topology,
        local: StateGate,
        peers: PeerPools,
        config: NodeConfig,
        counters: ClusterCounters,
        hints: HintStore | None = None,
    ) -> None:
        self._plans = PlanCache(topology)
        #: Where writes a replica missed are kept (None: hinted handoff off).
        self.hints = hints
        #: Versioned writes and read repair of quorum reads (``cluster.repair``);
        #: the admin switch ``/read_repairs`` sets it at run time.
        self.read_repairs = config.read_repairs_enabled
        self.clock = HybridClock()
        #: How long tombstones are kept (ms), as the datastore's sweeper uses it.
        self.grace = config.tombstone_grace
        self._plans_generation = peers.generation
        self._last_key: bytes | None = None  # see _key_token
        self._last_token = LOCAL_TOKEN
        self.local = local
        self.peers = peers
        self.counters = counters
        self.timeout = config.timeout / 1000
        self._swallow = Swallow(counters)
        #: The local datastore legs of the run ``route_run`` is routing (None outside one).
        self._legs: list[RunItem] | None = None
        #: Its legs for each peer, likewise.
        self._peer_legs: dict[str, list[PeerLeg]] | None = None

    @property
    def topology(self) -> Topology:
        return self._plans.topology

    @topology.setter
    def topology(self, topology: Topology) -> None:
        self._plans = PlanCache(topology)
        self._last_key = None

    def _copy(
        self,
        session: Caller,
        chosen: Plan,
        token: int,
        args: list[bytes],
        copies: dict[str, Copies],
    ) -> None:
        """A local-group request's legs to other replicas, into ``copies`` (DC_ONE writes)."""
        if chosen.remote_failovers or chosen.dropped_dcs:
            self._account(chosen)
        if chosen.dropped_dcs:
            self._hint_dropped(chosen, token, encode_command(args), session)
        for target in chosen.targets[1:]:
            batch = copies.get(target.peer.name)
            if batch is None:  # a peer's message type is its DC's: one batch per peer
                batch = copies[target.peer.name] = Copies(target)
            batch.requests.append(args)

    def _send_copies(self, session: Caller, copies: dict[str, Copies], now: float) -> None:
        """Send the pending copies, one batch leg per peer, and forget them."""
        assert self._peer_legs is not None
        hints = self.hints
        flags = FLAG_RESP3 if session.protocol == 3 else 0
        local_dc = self.topology.local.dc
        for name, batch in copies.items():
            target = batch.target
            requests = batch.requests
            count = len(requests)
            raws = Encoded(requests)
            writes = [True] * count
            if hints is not None and hints.has_pending(name):
                for index in range(count):
                    self._overtakes(name, raws[index])
            leg = BatchLeg(CopyRun(writes, self.counters), raws, hints, name, target.kind, flags)
            extra = SAME_DC_EXTRA if target.dc == local_dc else REMOTE_DC_EXTRA
            deadline = now + self.timeout + extra + WRITE_EXTRA
            self.counters.peer_requests += count
            self._peer_leg(name, (target.kind, raws.joined(), leg, deadline, flags))
        copies.clear()

    def _pairs(
        self,
        session: Caller,
        target: Target | None,
        mode: Mode,
        requests: list[list[bytes]],
        writes: list[bool],
        gather: Gather,
        now: float,
        joined: bytes | None = None,
    ) -> None:
        """Send a batch of two-replica quorum requests as two legs (``peering.batches``).

        ``joined``: the requests' exact encoding, if the caller has it.
        """
        assert target is not None
        assert self._legs is not None
        assert self._peer_legs is not None
        run = PairRun(gather.slot(), writes, self.counters, mode)
        name = target.peer.name
        flags = FLAG_RESP3 if session.protocol == 3 else 0
        hints = self.hints if True in writes else None
        raws = Encoded(requests)
        if hints is not None and (hints.has_pending(LOCAL_HINTS) or hints.has_pending(name)):
            for index, write in enumerate(writes):
                if write:
                    self._overtakes(LOCAL_HINTS, raws[index])
                    self._overtakes(name, raws[index])
        if joined is None:
            joined = raws.joined()
        count = len(requests)
        local = BatchLeg(run, raws, hints, LOCAL_HINTS, MessageType.REQ, 0)
        self._legs.append((joined, count, local))
        leg = BatchLeg(run, raws, hints, name, target.kind, flags)
        extra = SAME_DC_EXTRA if target.dc == self.topology.local.dc else REMOTE_DC_EXTRA
        if True in writes:
            extra += WRITE_EXTRA
        self.counters.peer_requests += count
        self._peer_leg(name, (target.kind, joined, leg, now + self.timeout + extra, flags))

    def _peer_leg(self, name: str, leg: PeerLeg) -> None:
        """Collect a leg for ``name`` inside ``route_run``, after its others."""
        peer_legs = self._peer_legs
        assert peer_legs is not None
        if (these := peer_legs.get(name)) is None:
            peer_legs[name] = [leg]
        else:
            these.append(leg)

    def _key_token(self, key: bytes) -> int:
        """``topology.token(key)``, remembered for the last key object hashed.

        A request that ``_answered_locally`` turns down goes on to ``route``,
        which needs the same key's token: the hash is computed once.
        """
        if key is not self._last_key:
            self._last_key = key
            topology = self.topology
            if topology.one_owner_per_rack:  # any token routes alike: skip the hash
                part = tagged(key, topology.hash_tag)
                self._last_token = 0 if part else LOCAL_TOKEN
            else:
                self._last_token = topology.token(key)
        return self._last_token

    def _local_run(
        self,
        session: Caller,
        group: list[list[bytes]],
        copies: dict[str, Copies],
        sink: ReplySink,
        now: float,
        joined: bytes | None = None,
    ) -> None:
        """Send a local group (``joined``: its exact encoding, if known) and its copies."""
        if copies:
            self._send_copies(session, copies, now)
        raw = joined if joined is not None else b"".join(map(encode_command, group))
        if self._legs is not None:
            self._legs.append((raw, len(group), sink))
            return
        deadline = now + self.timeout
        self.local.pool.send(session.id, session.protocol, raw, len(group), sink, deadline)

    def _plan(self, token: int, write: bool, level: Consistency) -> Plan:
        peers = self.peers
        if peers.generation != self._plans_generation:
            self._plans.clear()  # a peer went up or down: plans route differently now
            self._plans_generation = peers.generation
        return self._plans.plan(token, write=write, level=level, is_up=peers.is_up)

    def _hint_dropped(self, chosen: Plan, token: int, raw: bytes, session: Caller) -> None:
        """A write no node of a remote DC could take: a hint for its preselected owner."""
        if self.hints is None:
            return
        flags = FLAG_RESP3 if session.protocol == 3 else 0
        for dc in chosen.dropped_dcs:
            owner = self.topology.remote_rings(dc)[0].owner(token)
            self.hints.add(owner.name, MessageType.REQ_FORWARD, flags, raw)

    def _account(self, chosen: Plan) -> None:
        counters = self.counters
        counters.read_failover_requests += chosen.failover
        counters.remote_peer_failover_requests += chosen.remote_failovers
        counters.remote_peer_dropped_requests += len(chosen.dropped_dcs)

    def _local(self, session: Caller, raw: bytes, sink: ReplySink, now: float, write: bool) -> None:
        if self._legs is not None:  # inside route_run, NORMAL: sent with the run's others
            self._legs.append((raw, 1, sink))
            return
        self.local.send(session.id, session.protocol, raw, sink, now + self.timeout, write)

    def _send(
        self,
        session: Caller,
        target: Target,
        raw: bytes,
        sink: ReplySink,
        write: bool,
        now: float,
        hint: bool = True,
    ) -> None:
        """Send one leg; a write leg that misses becomes a hint unless ``hint`` is False."""
        peer = target.peer
        if peer.local:
            if write and hint and self.hints is not None:
                # A quorum's local leg can miss too (this node's datastore is down).
                self._overtakes(LOCAL_HINTS, raw)
                sink = HintOnMiss(self.hints, LOCAL_HINTS, MessageType.REQ, 0, raw, sink)
            self._local(session, raw, sink, now, write)
            return
        extra = SAME_DC_EXTRA if peer.dc == self.topology.local.dc else REMOTE_DC_EXTRA
        flags = FLAG_RESP3 if session.protocol == 3 else 0
        if write:
            extra += WRITE_EXTRA
            if hint and self.hints is not None:
                sink = self._hinted(peer.name, target.kind, flags, raw, sink, target.counted)
        self.counters.peer_requests += 1
        deadline = now + self.timeout + extra
        if self._peer_legs is not None:  # inside route_run: sent with the run's other legs
            self._peer_leg(peer.name, (target.kind, raw, sink, deadline, flags))
            return
        self.peers.send(peer.name, session.id, target.kind, raw, sink, deadline, flags)

    def _hinted(
        self, name: str, kind: MessageType, flags: int, raw: bytes, sink: ReplySink, counted: bool
    ) -> ReplySink:
        """The sink for a write leg to ``name``: a miss becomes a hint.

        A leg sent while ``name`` has hints waiting overtakes them: the keys
        it overwrites are recorded so older hints for them are skipped.  The
        leg that alone is a DC_ONE client's reply (the own-rack owner) is never
        hinted: its miss is the client's error, the write was not
        acknowledged, and a late replay could overwrite a newer one.
        """
        hints = self.hints
        if hints is None:
            return sink
        self._overtakes(name, raw)
        return HintOnMiss(hints, name, kind, flags, raw, sink)

    def _overtakes(self, name: str, raw: bytes) -> None:
        """A write sent live to ``name`` while it has hints: older hints for the key
        it overwrites must not be replayed after it.  Decided at send time, since
        the replay may send before this write's reply is in."""
        hints = self.hints
        if hints is not None and hints.has_pending(name):
            key = overwritten_key(raw, unconditional=True)
            if key is not None:
                hints.note_overwrite(name, key)
