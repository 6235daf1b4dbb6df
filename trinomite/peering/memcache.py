"""Route memcached requests through the one coordinator the Redis path uses.

Theory of operation
-------------------
A memcached node's requests take the same machinery as Redis ones:
``Coordinator.replicate`` (the plan cache, the four consistency levels,
read failover, the quorum collectors, remote-DC forwards, hinted handoff),
the same datastore pools and peer links.  This module only decides what
memcached needs decided first, per request (``McRouter.route``)::

    get/gat with keys of several owners -> one fragment per owner set,
                                  each replicated; ``McMerge`` joins the
                                  VALUE blocks in the client's key order
    gets/gats                  -> read at DC_ONE (a cas unique is one replica's)
    cas                        -> decided by the own-rack owner; if STORED,
                                  copied as a ``set`` to the other replicas
                                  (``CasThen``), counted as a write quorum
    any other                  -> ``replicate(token of its key)``

A client round's requests are routed between ``begin`` and ``end``: their
local datastore legs go out as one shared run and each peer's as one write
(``Coordinator.route_run``'s batching; no bundles, which carry RESP only).

Replicas always answer: a ``noreply`` request is sent without its
``noreply`` (``McRequest.without_noreply``), so a quorum write waits for
its quorum and a replica's miss becomes a hint as for any write; only the
client's reply is dropped.  A noreply write that fails its quorum is
counted in ``client_non_quorum_w_responses`` (memcached's protocol has no
way to tell the client).

Quorum reconciliation compares whole replies, as Dynomite's
``memcache_reconcile_responses``: equal replies are the reply; an error
(memcached's ``SERVER_ERROR``/``CLIENT_ERROR``/``ERROR`` or the node's own)
decides; different ones give the first at DC_QUORUM and
``SERVER_ERROR Dynomite: Failed to achieve Quorum`` at DC_SAFE_QUORUM.
Read repair (versions) is Redis-only: memcached has no scripts to stamp
values with.  Pure routing: no I/O of its own.
"""

from __future__ import annotations

from ..admin.api import NodeState
from ..cluster.quorum import EachQuorum, QuorumDecision
from ..cluster.routing import Mode, Plan
from ..config.model import Consistency
from ..datastore.pool import RunItem
from ..errors import NodeError, redis_error
from ..net.slots import ReplySink
from ..protocol.commands import Access
from ..protocol.memcache import McKind, McRequest, encode_request
from ..protocol.memcache_replies import merge_gets
from ..protocol.replies import is_error
from .collectors import EachLeg, QuorumSink
from .coordinator import Coordinator
from .legs import Caller
from .link import PeerLeg

__all__ = ["CasThen", "McMerge", "McRouter"]

_INVALID_REPLY = redis_error(NodeError.STORAGE_PROTOCOL)
#: Retrievals whose reply holds a replica's cas unique.
_CAS_READS = frozenset({b"gets", b"gats"})


class McMerge:
    """The fragments of a multi-key retrieval, joined in the client's key order."""

    __slots__ = ("keys", "parts", "pending", "sink")

    def __init__(self, keys: tuple[bytes, ...], fragments: int, sink: ReplySink) -> None:
        self.keys = keys
        self.pending = fragments
        self.sink = sink
        self.parts: list[bytes] = []

    def set(self, reply: bytes) -> None:
        self.parts.append(reply)
        self.pending -= 1
        if self.pending:
            return
        errors = [part for part in self.parts if is_error(part)]
        if errors:
            self.sink.set(errors[0])
            return
        try:
            merged = merge_gets(*self.parts, keys=self.keys)
        except ValueError:
            merged = _INVALID_REPLY
        self.sink.set(merged)


class CasThen:
    """A ``cas`` decided by the own-rack owner, then copied to the other replicas.

    Every replica keeps its own cas uniques, so sending the ``cas`` itself
    everywhere would store it on one replica at most.  The owner's reply
    decides; a ``STORED`` is then replicated as the equivalent ``set`` (its
    flags, exptime and data), and the client gets ``STORED`` once the write
    level's quorum of replicas stored it (the owner's vote included; at
    DC_EACH_SAFE_QUORUM a safe quorum in every DC).
    """

    __slots__ = ("now", "plan", "request", "router", "session", "sink", "token")

    def __init__(
        self,
        router: McRouter,
        session: Caller,
        request: McRequest,
        token: int,
        plan: Plan,
        sink: ReplySink,
        now: float,
    ) -> None:
        self.router = router
        self.session = session
        self.request = request
        self.token = token
        self.plan = plan
        self.sink = sink
        self.now = now

    def set(self, reply: bytes) -> None:
        chosen = self.plan
        others = chosen.targets[1:]
        if not reply.startswith(b"STORED") or not (others or chosen.dropped_dcs):
            self.sink.set(reply)
            return
        coordinator = self.router.coordinator
        request = self.request
        key, flags, exptime, size = request.args[:4]
        data = request.data
        assert data is not None
        raw = encode_request([b"set", key, flags, exptime, size], data)
        if chosen.dropped_dcs:
            coordinator._hint_dropped(chosen, self.token, raw, self.session)
        swallow = coordinator._swallow
        mode = chosen.mode
        counted: ReplySink = swallow  # where the counted copies' replies go
        if mode is Mode.ONE:
            self.sink.set(reply)
        elif mode is Mode.EACH:  # a safe quorum in every DC, the owner's vote in its own
            each = EachQuorum(chosen.counted_per_dc(), chosen.targets[0].dc, False)
            each.add(chosen.targets[0].dc, reply)
            for target in others:
                leg = EachLeg(each, target.dc, self.sink)
                coordinator._send(self.session, target, raw, leg, True, self.now)
            return
        else:
            decision = QuorumDecision(chosen.counted, safe=mode is Mode.SAFE)
            quorum = QuorumSink(decision, self.sink, coordinator.counters, True)
            quorum.set(reply)
            counted = quorum
        for target in others:
            sink = counted if target.counted else swallow
            coordinator._send(self.session, target, raw, sink, True, self.now)


class McRouter:
    """Routes a memcached node's cluster requests (see the module doc)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self._legs: list[RunItem] = []
        self._peer_legs: dict[str, list[PeerLeg]] = {}

    def begin(self) -> None:
        """Collect the legs of the requests routed until ``end``, as ``route_run`` does.

        With the node NORMAL, the local datastore legs become one shared run
        (one send, one delimiter); each peer's legs one write.
        """
        coordinator = self.coordinator
        self._legs, self._peer_legs = [], {}
        coordinator._peer_legs = self._peer_legs
        if coordinator.local.state is NodeState.NORMAL:  # else the gate sees each one
            coordinator._legs = self._legs

    def end(self, session: Caller, now: float) -> None:
        """Send what was collected since ``begin``."""
        coordinator = self.coordinator
        coordinator._legs = coordinator._peer_legs = None
        legs, peer_legs = self._legs, self._peer_legs
        self._legs, self._peer_legs = [], {}
        if legs:
            coordinator.local.pool.send_run(session.id, 2, legs, now + coordinator.timeout)
        for name, these in peer_legs.items():
            coordinator.peers.send_many(name, session.id, these)

    def route(self, session: Caller, request: McRequest, sink: ReplySink, now: float) -> None:
        coordinator = self.coordinator
        spec = request.spec
        assert spec is not None
        write = spec.access is Access.WRITE
        level = session.write_consistency if write else session.read_consistency
        raw = request.without_noreply()
        if request.kind is McKind.RETRIEVAL:
            if request.command in _CAS_READS:
                level = Consistency.DC_ONE
            keys = request.keys
            if len(keys) > 1:
                self._fragments(session, request, write, level, sink, now)
                return
        token = coordinator._key_token(request.keys[0])
        if request.command == b"cas" and token >= 0:
            chosen = coordinator._plan(token, True, level)
            coordinator._account(chosen)
            then = CasThen(self, session, request, token, chosen, sink, now)
            coordinator._send(session, chosen.targets[0], raw, then, True, now, hint=False)
            return
        coordinator.replicate(session, token, raw, write, level, sink, now)

    def _fragments(
        self,
        session: Caller,
        request: McRequest,
        write: bool,
        level: Consistency,
        sink: ReplySink,
        now: float,
    ) -> None:
        """A retrieval of keys with different owners: one fragment per owner set."""
        coordinator = self.coordinator
        topology = coordinator.topology
        if topology.one_owner_per_rack:  # every key has the same owners: no fragments
            token = coordinator._key_token(request.keys[0])
            coordinator.replicate(session, token, request.raw, write, level, sink, now)
            return
        groups: dict[tuple[str, ...], list[bytes]] = {}
        for key in dict.fromkeys(request.keys):  # a repeated key is fetched once
            groups.setdefault(topology.owners(topology.token(key)), []).append(key)
        if len(groups) == 1:
            token = topology.token(request.keys[0])
            coordinator.replicate(session, token, request.raw, write, level, sink, now)
            return
        merge = McMerge(request.keys, len(groups), sink)
        coordinator.counters.fragments += len(groups)
        for keys in groups.values():
            raw = request.for_keys(keys)
            token = topology.token(keys[0])
            coordinator.replicate(session, token, raw, write, level, merge, now)
