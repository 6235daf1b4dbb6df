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

from ..admin.api import NodeState
from ..cluster.quorum import EachQuorum, QuorumDecision
from ..cluster.repair import READS, ReadKind, versioned_kind, versioned_write
from ..cluster.routing import Mode, Target
from ..cluster.versions import Reading, collectable
from ..config.model import Consistency
from ..datastore.pool import RunItem
from ..errors import NodeError, redis_error
from ..net.slots import Gather, ReplySink
from ..protocol.commands import BY_BYTES, COMMANDS, CommandSpec, Route, extract_keys, lookup
from ..protocol.peer import FLAG_RESP3, MAX_BUNDLE, MessageType
from ..protocol.requests import encode_command
from ..ring.topology import LOCAL_TOKEN
from .collectors import (
    ClusterCounters,
    EachLeg,
    Merge,
    PairQuorum,
    QuorumSink,
    SetHeader,
)
from .legs import REMOTE_DC_EXTRA, SAME_DC_EXTRA, WRITE_EXTRA, Caller, Copies, Legs
from .pools import PeerLeg
from .repairs import RepairRead

__all__ = ["Caller", "ClusterCounters", "Coordinator"]


_SMEMBERS = COMMANDS["smembers"]


class Coordinator(Legs):
    """Routes requests for one node; shared by all of its client connections."""

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
        copies: dict[str, Copies] = {}  # the group's copies for other replicas, by peer
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
        # A lone request is cheaper on its own than as a batch of one.
        batching = grouping and len(run) > 1
        try:
            for args in run:
                spec = BY_BYTES.get(args[0]) or lookup(args[0])
                assert spec is not None
                if plain and spec.one_key:
                    # The common request: one key, routed by it alone.
                    write = spec.writes
                    if write is None:
                        write = spec.is_write(args)
                    level = write_level if write else read_level
                    token = self._key_token(args[1])
                    if batching and token >= 0:
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

    def handle_forward(
        self, args: list[bytes], raw: bytes, protocol: int, sink: ReplySink, now: float
    ) -> None:
        """A remote DC's write: apply locally, re-send to this DC's other racks."""
        spec = COMMANDS.get(args[0].decode("latin-1").lower()) if args else None
        keys = extract_keys(spec, args) if spec is not None and spec.arity_ok(len(args)) else None
        self.forward(keys[0] if keys else None, raw, protocol, sink, now)

    def forward(
        self, key: bytes | None, raw: bytes, protocol: int, sink: ReplySink, now: float
    ) -> None:
        """``handle_forward`` of a request whose key is known (any datastore's payload)."""
        self.counters.forwarded_requests += 1
        self.local.send(0, protocol, raw, sink, now + self.timeout, True)
        if key is None:
            return
        token = self.topology.token(key)
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
