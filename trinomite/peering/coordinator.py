"""The coordinator: route one client request across the cluster and collect its reply.

Theory of operation
-------------------
``Coordinator.route(session, spec, args, sink, deadline)`` never awaits.  It
picks the command's routing class (``protocol.commands.Route``), builds the
legs, sends each one (local datastore or peer link) and arranges for the
client's reply to land in ``sink`` once it is decided::

    KEY / SAME / RACK  -> routing.plan(token) -> legs -> collector -> sink
    SCATTER (MGET ...) -> one fragment per owner -> each routed as above
                          -> Merge (key order, sum or +OK) -> sink
    ALL (SCRIPT ...)   -> every node; the client gets the local reply
    LOCAL (KEYS ...)   -> the local datastore only

Collectors are reply sinks too, so every layer composes: a datastore or peer
connection only ever calls ``sink.set(reply)``.

* ``Mode.ONE``: the counted leg writes straight into the sink.
* ``Mode.QUORUM/SAFE``: a ``QuorumDecision`` over the local racks.
* ``Mode.EACH``: an ``EachQuorum``, one decision per datacenter.
* Uncounted legs (other racks under DC_ONE, remote-DC forwards) go to
  ``Swallow``, which only counts errors.

Requests that arrive from a remote DC as ``REQ_FORWARD`` are applied to the
local datastore and re-sent to the owner in each other rack of this DC
(``handle_forward``), as Dynomite's ``dnode_req_forward`` does.
"""

from __future__ import annotations

from typing import Protocol

from ..admin.api import NodeState
from ..cluster.quorum import EachQuorum, QuorumDecision
from ..cluster.repair import READS, ReadKind, versioned_kind, versioned_write
from ..cluster.routing import Mode, Plan, PlanCache, Target
from ..cluster.versions import HybridClock, Reading, collectable
from ..config.model import Consistency, NodeConfig
from ..datastore.gate import StateGate
from ..datastore.pool import RunItem
from ..errors import NodeError, redis_error
from ..hints.log import overwritten_key
from ..hints.replay import LOCAL_HINTS, HintOnMiss
from ..hints.store import HintStore
from ..net.slots import Gather, ReplySink
from ..protocol.commands import BY_BYTES, COMMANDS, CommandSpec, Route, extract_keys, lookup
from ..protocol.peer import FLAG_RESP3, MAX_BUNDLE, MessageType
from ..protocol.requests import encode_command
from ..ring.topology import LOCAL_TOKEN, Topology
from .batches import BatchLeg, CopyRun, Encoded, PairRun
from .collectors import (
    ClusterCounters,
    EachLeg,
    Merge,
    PairQuorum,
    QuorumSink,
    SetHeader,
    Swallow,
)
from .pools import PeerLeg, PeerPools
from .repairs import RepairRead

__all__ = ["Caller", "ClusterCounters", "Coordinator"]


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


_SMEMBERS = COMMANDS["smembers"]


class _Copies:
    """A local group's copies for one peer, sent as one batch leg."""

    __slots__ = ("requests", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.requests: list[list[bytes]] = []


class Coordinator:
    """Routes requests for one node; shared by all of its client connections."""

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

    # -- entry points --------------------------------------------------------

    def route_run(
        self,
        session: Caller,
        run: list[list[bytes]],
        gather: Gather,
        now: float,
        blob: bytes | None = None,
    ) -> None:
        """Route consecutive validated requests, their replies into ``gather`` in order.

        Requests whose client reply is the local datastore's alone (DC_ONE
        with this node as the own-rack owner, key-less and local commands)
        travel to it together, as one run with one slot, while their other
        legs go out one by one as usual.  Other requests go through ``route``.

        With the node NORMAL, every local datastore leg of the run (those
        groups and the legs ``route`` sends) is collected in request order
        and sent at the end as one shared run (``DatastorePool.send_run``):
        one send and one delimiter for the whole run instead of one per leg.
        Likewise each peer's legs are collected and sent in order as one
        write (``PeerPools.send_many``).  Consecutive two-replica quorum
        requests become one batch (``peering.batches``); ``blob``, the run's
        exact encoding if known, is then the payload of a batch that is the
        whole run, and nothing is re-encoded.
        """
        grouping = self.local.state is NodeState.NORMAL  # else the gate sees each one
        group: list[list[bytes]] = []  # requests the local datastore's reply answers
        copies: dict[str, _Copies] = {}  # the group's copies for other replicas, by peer
        legs: list[RunItem] = []
        peer_legs: dict[str, list[PeerLeg]] = {}
        self._peer_legs = peer_legs
        if grouping:
            self._legs = legs
        plain = not self.read_repairs  # no versioned writes or repair reads to build
        read_level, write_level = session.read_consistency, session.write_consistency
        # The pending batch of two-replica requests (see peering.batches).
        pair: Target | None = None
        pair_mode = Mode.QUORUM
        raws: list[list[bytes]] = []  # the batch's requests (encoded when it is sent)
        writes: list[bool] = []
        whole = len(run) if blob is not None else -1  # a batch of all: sent as ``blob``
        try:
            for args in run:
                spec = BY_BYTES.get(args[0]) or lookup(args[0])
                assert spec is not None
                if plain and spec.keys == "1" and spec.route is Route.KEY and spec is not _SMEMBERS:
                    # The common request: one key, routed by it alone.
                    write = spec.is_write(args)
                    level = write_level if write else read_level
                    token = self._key_token(args[1])
                    if grouping and token >= 0:
                        chosen = self._plan(token, write, level)
                        if chosen.local_one:  # DC_ONE, answered here: joins the local group
                            if raws:
                                self._pairs(session, pair, pair_mode, raws, writes, gather, now)
                                raws, writes = [], []
                            group.append(args)
                            if len(chosen.targets) > 1 or chosen.dropped_dcs:
                                self._copy(session, chosen, token, args, copies)
                            continue
                        other = chosen.pair
                        if other is not None:
                            if group:
                                self._local_run(session, group, copies, gather.slot(), now)
                                group = []
                            mode = chosen.mode
                            if raws and (
                                other.peer is not pair.peer  # type: ignore[union-attr]
                                or mode is not pair_mode
                                or len(raws) == MAX_BUNDLE
                            ):
                                self._pairs(session, pair, pair_mode, raws, writes, gather, now)
                                raws, writes = [], []
                            pair, pair_mode = other, mode
                            raws.append(args)
                            writes.append(write)
                            continue
                    if level is not Consistency.DC_ONE:
                        if raws:
                            self._pairs(session, pair, pair_mode, raws, writes, gather, now)
                            raws, writes = [], []
                        if group:
                            self._local_run(session, group, copies, gather.slot(), now)
                            group = []
                        encoded = encode_command(args)
                        self.replicate(session, token, encoded, write, level, gather.slot(), now)
                        continue
                if raws:
                    self._pairs(session, pair, pair_mode, raws, writes, gather, now)
                    raws, writes = [], []
                if copies:  # before any other leg to their peers
                    self._send_copies(session, copies, now)
                if grouping and self._answered_locally(session, spec, args, now):
                    group.append(args)
                    continue
                if group:
                    self._local_run(session, group, copies, gather.slot(), now)
                    group = []
                self.route(session, spec, args, gather.slot(), now)
            if raws:
                joined = blob if len(raws) == whole else None
                self._pairs(session, pair, pair_mode, raws, writes, gather, now, joined)
            if group:
                joined = blob if len(group) == whole else None
                self._local_run(session, group, copies, gather.slot(), now, joined)
        finally:
            self._legs = None
            self._peer_legs = None
        if grouping and legs:
            self.local.pool.send_run(session.id, session.protocol, legs, now + self.timeout)
        for name, these in peer_legs.items():
            self.peers.send_many(name, session.id, these)

    def _copy(
        self,
        session: Caller,
        chosen: Plan,
        token: int,
        args: list[bytes],
        copies: dict[str, _Copies],
    ) -> None:
        """A local-group request's legs to other replicas, into ``copies`` (DC_ONE writes)."""
        if chosen.remote_failovers or chosen.dropped_dcs:
            self._account(chosen)
        if chosen.dropped_dcs:
            self._hint_dropped(chosen, token, encode_command(args), session)
        for target in chosen.targets[1:]:
            batch = copies.get(target.peer.name)
            if batch is None:  # a peer's message type is its DC's: one batch per peer
                batch = copies[target.peer.name] = _Copies(target)
            batch.requests.append(args)

    def _send_copies(self, session: Caller, copies: dict[str, _Copies], now: float) -> None:
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
            entry = (target.kind, raws.joined(), leg, deadline, flags)
            if (these := self._peer_legs.get(name)) is None:
                self._peer_legs[name] = [entry]
            else:
                these.append(entry)
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
        entry = (target.kind, joined, leg, now + self.timeout + extra, flags)
        if (these := self._peer_legs.get(name)) is None:
            self._peer_legs[name] = [entry]
        else:
            these.append(entry)

    def route(
        self, session: Caller, spec: CommandSpec, args: list[bytes], sink: ReplySink, now: float
    ) -> None:
        """Send one client request; its reply will be set on ``sink``."""
        route = spec.route
        keys = extract_keys(spec, args) if route is not Route.LOCAL else []
        if route is Route.LOCAL or not keys:
            # Key-less, or a malformed key spec: the datastore answers (and
            # produces Redis's own error for bad arguments).
            if route is Route.ALL:
                self._to_all(session, args, sink, now)
            else:
                self._local(session, encode_command(args), sink, now, spec.is_write(args))
            return
        if route in (Route.SCATTER_ARRAY, Route.SCATTER_SUM, Route.SCATTER_OK):
            self._scatter(session, spec, args, keys, sink, now)
            return
        topology = self.topology
        if route is Route.SAME:
            # The keys must share an owner in *every* rack the request reaches:
            # racks may hold different numbers of nodes.
            owners = topology.owners(topology.token(keys[0]))
            if any(topology.owners(topology.token(k)) != owners for k in keys[1:]):
                scripts = spec.name.startswith("eval")
                error = NodeError.SCRIPT_SPANS_NODES if scripts else NodeError.KEYS_SPAN_NODES
                sink.set(redis_error(error))
                return
        write = spec.is_write(args)
        level = session.write_consistency if write else session.read_consistency
        if route is Route.RACK:
            level = Consistency.DC_ONE
        if spec is _SMEMBERS and level is Consistency.DC_SAFE_QUORUM:
            # Replicas return set members in any order; SORT ALPHA makes them comparable.
            args = [b"sort", args[1], b"alpha"]
            if session.protocol == 3:
                sink = SetHeader(sink)
        kind = versioned_kind(spec.name, args) if self.read_repairs else None
        if kind == "write":
            raw = versioned_write(args, self.clock.tick(), self.grace)
        elif kind == "read" and level is not Consistency.DC_ONE:
            token = self._key_token(keys[0])
            self._repair_read(session, READS[spec.name], token, args, level, sink, now)
            return
        else:
            raw = encode_command(args)
        self.replicate(session, self._key_token(keys[0]), raw, write, level, sink, now)

    # -- RepairHost (peering.repairs) ------------------------------------------

    def repaired(self) -> None:
        self.counters.read_repairs += 1

    def no_quorum(self) -> None:
        self.counters.client_non_quorum_r_responses += 1

    def observe(self, version: int) -> None:
        self.clock.observe(version)

    def outlived(self, tombstone: Reading) -> bool:
        return collectable(tombstone, self.clock.wall(), self.grace / 1000)

    def send_repair(self, session: Caller, target: Target, raw: bytes, now: float) -> None:
        self._send(session, target, raw, self._swallow, True, now)

    def _stamped(self, spec: CommandSpec, args: list[bytes]) -> bytes:
        """``args`` encoded, as a versioned write when read repair versions it (DEL k)."""
        if self.read_repairs and versioned_kind(spec.name, args) == "write":
            return versioned_write(args, self.clock.tick(), self.grace)
        return encode_command(args)

    def _repair_read(
        self,
        session: Caller,
        kind: ReadKind,
        token: int,
        args: list[bytes],
        level: Consistency,
        sink: ReplySink,
        now: float,
    ) -> None:
        """A quorum read that reads versions and repairs the stale replicas it finds."""
        chosen = self._plan(token, False, level)
        self._account(chosen)
        targets = [t for t in chosen.targets if t.counted]
        per_dc = chosen.mode is Mode.EACH
        read = RepairRead(self, session, kind, args, targets, sink, now, per_dc=per_dc)
        raw = kind.request(args)
        for index, target in enumerate(targets):
            self._send(session, target, raw, read.leg(index), False, now)

    def _answered_locally(
        self, session: Caller, spec: CommandSpec, args: list[bytes], now: float
    ) -> bool:
        """Whether the request's client reply is the local datastore's alone.

        Its other legs (uncounted copies to other racks and DCs) are sent here;
        the caller sends the request to the local datastore.
        """
        route = spec.route
        if route is Route.LOCAL:
            return True
        if route is not Route.KEY and route is not Route.RACK:
            return False
        write = spec.is_write(args)
        if write and self.read_repairs and versioned_kind(spec.name, args) == "write":
            return False  # route() stamps it with a version
        if route is not Route.RACK:
            level = session.write_consistency if write else session.read_consistency
            if level is not Consistency.DC_ONE:
                return False  # checked first: route() will hash the key itself
        keys = extract_keys(spec, args)
        token = self._key_token(keys[0]) if keys else LOCAL_TOKEN
        if token < 0:
            return True  # key-less or an empty hashed key: local, as route()
        chosen = self._plan(token, write, Consistency.DC_ONE)
        if not chosen.local_one:
            return False
        self._account(chosen)
        raw = encode_command(args)
        if chosen.dropped_dcs:
            self._hint_dropped(chosen, token, raw, session)
        for target in chosen.targets[1:]:
            self._send(session, target, raw, self._swallow, write, now)
        return True

    def _key_token(self, key: bytes) -> int:
        """``topology.token(key)``, remembered for the last key object hashed.

        A request that ``_answered_locally`` turns down goes on to ``route``,
        which needs the same key's token: the hash is computed once.
        """
        if key is not self._last_key:
            self._last_key = key
            self._last_token = self.topology.token(key)
        return self._last_token

    def _local_run(
        self,
        session: Caller,
        group: list[list[bytes]],
        copies: dict[str, _Copies],
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

    def handle_forward(
        self, args: list[bytes], raw: bytes, protocol: int, sink: ReplySink, now: float
    ) -> None:
        """A remote DC's write: apply locally, re-send to this DC's other racks."""
        self.counters.forwarded_requests += 1
        self.local.send(0, protocol, raw, sink, now + self.timeout, True)
        spec = COMMANDS.get(args[0].decode("latin-1").lower()) if args else None
        keys = extract_keys(spec, args) if spec is not None and spec.arity_ok(len(args)) else None
        if not keys:
            return
        token = self.topology.token(keys[0])
        if token < 0:
            return
        flags = FLAG_RESP3 if protocol == 3 else 0
        deadline = now + self.timeout + SAME_DC_EXTRA + WRITE_EXTRA
        for ring in self.topology.local_rings[1:]:
            owner = ring.owner(token)
            if not owner.local:
                self.counters.peer_requests += 1
                leg = self._hinted(owner.name, MessageType.REQ, flags, raw, self._swallow, False)
                self.peers.send(owner.name, 0, MessageType.REQ, raw, leg, deadline, flags)

    # -- the routing classes -------------------------------------------------

    def replicate(
        self,
        session: Caller,
        token: int,
        raw: bytes,
        write: bool,
        level: Consistency,
        sink: ReplySink,
        now: float,
        multikey: bool = False,
    ) -> None:
        """Send one keyed request to its replicas and collect the client's reply."""
        if token < 0:  # an empty hashed key: the local node only, as Dynomite
            self._local(session, raw, sink, now, write)
            return
        chosen = self._plan(token, write, level)
        self._account(chosen)
        if chosen.dropped_dcs:
            self._hint_dropped(chosen, token, raw, session)
        counters = self.counters
        mode = chosen.mode
        if mode is Mode.ONE:
            for target in chosen.targets:
                if target.counted:  # the client's reply: a miss is its error, not a hint
                    self._send(session, target, raw, sink, write, now, hint=False)
                else:
                    self._send(session, target, raw, self._swallow, write, now)
            return
        if mode is Mode.EACH:
            each = EachQuorum(chosen.counted_per_dc(), self.topology.local.dc, multikey)
            for target in chosen.targets:
                self._send(session, target, raw, EachLeg(each, target.dc, sink), write, now)
            return
        collector: ReplySink
        if chosen.counted == 2 and not multikey:
            collector = PairQuorum(sink, counters, write, mode is Mode.SAFE)
        else:
            decision = QuorumDecision(chosen.counted, safe=mode is Mode.SAFE, multikey=multikey)
            collector = QuorumSink(decision, sink, counters, write)
        for target in chosen.targets:
            self._send(
                session, target, raw, collector if target.counted else self._swallow, write, now
            )

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

    def _scatter(
        self,
        session: Caller,
        spec: CommandSpec,
        args: list[bytes],
        keys: list[bytes],
        sink: ReplySink,
        now: float,
    ) -> None:
        topology = self.topology
        # One fragment per distinct set of owners across every rack, so each
        # fragment has a single owner wherever it is applied (racks and DCs
        # may shard differently).
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, key in enumerate(keys):
            groups.setdefault(topology.owners(topology.token(key)), []).append(index)
        write = spec.is_write(args)
        level = session.write_consistency if write else session.read_consistency
        pairs = spec.route is Route.SCATTER_OK  # MSET: key value pairs
        if len(groups) == 1:
            token = topology.token(keys[0])
            raw = self._stamped(spec, args)
            self.replicate(session, token, raw, write, level, sink, now, True)
            return
        merge = Merge(spec.route, len(keys), len(groups), sink)
        self.counters.fragments += len(groups)
        for indices in groups.values():
            fragment = [args[0]]
            for index in indices:
                fragment.append(keys[index])
                if pairs:
                    fragment.append(args[2 + 2 * index])
            token = topology.token(keys[indices[0]])
            raw = self._stamped(spec, fragment)
            self.replicate(session, token, raw, write, level, merge.part(indices), now, True)

    def _to_all(self, session: Caller, args: list[bytes], sink: ReplySink, now: float) -> None:
        raw = encode_command(args)
        self._local(session, raw, sink, now, True)
        flags = FLAG_RESP3 if session.protocol == 3 else 0
        for peer in self.topology.peers:
            if not peer.local:
                same_dc = peer.dc == self.topology.local.dc
                deadline = now + self.timeout + (SAME_DC_EXTRA if same_dc else REMOTE_DC_EXTRA)
                self.counters.peer_requests += 1
                self.peers.send(
                    peer.name, session.id, MessageType.REQ, raw, self._swallow, deadline, flags
                )

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
        peer_legs = self._peer_legs
        if peer_legs is not None:  # inside route_run: sent with the run's other legs
            leg = (target.kind, raw, sink, deadline, flags)
            if (these := peer_legs.get(peer.name)) is None:
                peer_legs[peer.name] = [leg]
            else:
                these.append(leg)
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
