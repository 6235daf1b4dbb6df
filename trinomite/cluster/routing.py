"""Where a keyed request goes, and whose replies the client waits for.

Theory of operation
-------------------
``plan(topology, token, write=..., level=..., is_up=...)`` is Dynomite's
fan-out matrix (dynomite.md §3.1, §4.2) as a pure function.  It returns the
replicas to send to, each marked *counted* (its reply feeds the client's
reply) or not (fire-and-forget: the reply is swallowed, errors are counted):

    level                reads                        writes
    DC_ONE               own-rack owner               owner in every local rack
                                                      + one per remote DC (forward)
    DC_QUORUM / SAFE     owner in every local rack    same, remote DCs forwarded
    DC_EACH_SAFE_QUORUM  owner in every rack of every DC (direct, all counted)

* DC_ONE counts only the own-rack owner; QUORUM/SAFE count every local rack;
  EACH counts every rack of every DC, decided per DC.
* Remote DCs (writes below EACH) get one ``REQ_FORWARD`` to the owner in
  the preselected rack, failing over to the DC's other racks when that
  owner is unreachable; the receiver re-fans it to its own DC's racks.  A DC
  with no reachable owner is reported in ``dropped_dcs``.
* Beyond Dynomite: a DC_ONE read whose own-rack owner is unreachable is
  served by the owner in another local rack (``failover``), instead of
  failing with "Peer Node is not connected".
* DC_EACH_SAFE_QUORUM sends plain ``REQ`` to every remote rack owner and
  counts their replies itself, instead of Dynomite's beta re-fan of a
  re-fan (about R squared writes per remote DC).

``is_up(name)`` is the only view of the outside world: whether a peer link
is connected.  Pure code, no I/O.

``PlanCache`` memoizes plans: a plan depends on the token only through its
owner in each rack, which is constant between consecutive ring tokens, so
plans are kept per *segment* of the merged rings (one bisect finds it), per
read/write and per level.  The shell clears the cache whenever reachability
changes.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable

import attrs

from ..config.model import Consistency
from ..protocol.peer import MessageType
from ..ring.topology import PeerInfo, Topology

__all__ = ["Mode", "Plan", "PlanCache", "Target", "plan"]


class Mode(enum.Enum):
    """How the counted replies become the client's reply."""

    ONE = "one"  # the single counted reply, as is
    QUORUM = "quorum"  # DC_QUORUM over the local racks
    SAFE = "safe"  # DC_SAFE_QUORUM over the local racks
    EACH = "each"  # a safe quorum in every DC


@attrs.frozen
class Target:
    peer: PeerInfo
    kind: MessageType
    counted: bool
    dc: str


@attrs.frozen
class Plan:
    targets: tuple[Target, ...]
    mode: Mode
    #: A DC_ONE read served by another local rack's owner.
    failover: bool = False
    #: Remote DCs whose forward went to a rack other than the preselected one.
    remote_failovers: int = 0
    #: Remote DCs with no reachable owner: the write is lost there.
    dropped_dcs: tuple[str, ...] = ()
    #: DC_ONE with this node as the counted target (always ``targets[0]``):
    #: the client's reply is the local datastore's alone.
    local_one: bool = False
    #: How many targets are counted (precomputed: plans are cached and reused).
    counted_replies: int = 0
    #: The other replica when the plan is a quorum of exactly this node and one
    #: peer, both counted, nothing else (two racks, or two DCs of one rack at
    #: DC_EACH_SAFE_QUORUM): such requests are collected per run
    #: (``peering.batches.PairRun``).
    pair: Target | None = None

    @property
    def counted(self) -> int:
        return self.counted_replies

    def counted_per_dc(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for target in self.targets:
            if target.counted:
                counts[target.dc] = counts.get(target.dc, 0) + 1
        return counts


_MODES = {
    Consistency.DC_ONE: Mode.ONE,
    Consistency.DC_QUORUM: Mode.QUORUM,
    Consistency.DC_SAFE_QUORUM: Mode.SAFE,
    Consistency.DC_EACH_SAFE_QUORUM: Mode.EACH,
}


def _reachable(peer: PeerInfo, is_up: Callable[[str], bool]) -> bool:
    return peer.local or is_up(peer.name)


def plan(
    topology: Topology,
    token: int,
    *,
    write: bool,
    level: Consistency,
    is_up: Callable[[str], bool],
) -> Plan:
    """The replicas for one keyed request (see the module docstring)."""
    mode = _MODES[level]
    local_dc = topology.local.dc
    rings = topology.local_rings
    targets: list[Target] = []
    failover = False
    if write or mode is not Mode.ONE:
        for index, ring in enumerate(rings):
            counted = mode is not Mode.ONE or index == 0
            targets.append(Target(ring.owner(token), MessageType.REQ, counted, local_dc))
    else:
        owner = rings[0].owner(token)
        if not _reachable(owner, is_up):
            for ring in rings[1:]:
                candidate = ring.owner(token)
                if _reachable(candidate, is_up):
                    owner, failover = candidate, True
                    break
        targets.append(Target(owner, MessageType.REQ, True, local_dc))
    remote_failovers = 0
    dropped: list[str] = []
    for dc in topology.remote_dcs:
        remote = topology.remote_rings(dc)
        if mode is Mode.EACH:
            targets.extend(Target(r.owner(token), MessageType.REQ, True, dc) for r in remote)
        elif write:
            for index, ring in enumerate(remote):
                owner = ring.owner(token)
                if _reachable(owner, is_up):
                    targets.append(Target(owner, MessageType.REQ_FORWARD, False, dc))
                    remote_failovers += index > 0
                    break
            else:
                dropped.append(dc)
    local_one = mode is Mode.ONE and targets[0].peer.local
    counted_replies = sum(1 for t in targets if t.counted)
    pair = None
    if (
        mode is not Mode.ONE
        and len(targets) == 2
        and counted_replies == 2
        and targets[0].peer.local != targets[1].peer.local
        and not dropped
    ):
        pair = targets[1] if targets[0].peer.local else targets[0]
    return Plan(
        tuple(targets),
        mode,
        failover,
        remote_failovers,
        tuple(dropped),
        local_one,
        counted_replies,
        pair,
    )


class PlanCache:
    """``plan`` memoized per ring segment, write flag and level (see the module doc)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        #: Every ring token of every rack, sorted: owners change only at these.
        self._bounds = sorted({t for ring in topology.all_rings for t in ring.tokens})
        self._plans: dict[tuple[int, bool, Consistency], Plan] = {}

    def plan(
        self, token: int, *, write: bool, level: Consistency, is_up: Callable[[str], bool]
    ) -> Plan:
        """``plan(self.topology, token, ...)``, computed once per segment until ``clear``."""
        bounds = self._bounds
        if len(bounds) == 1:
            segment = 0  # one token in all: a single segment, the whole ring
        else:
            segment = bisect.bisect_left(bounds, token)
            if segment == len(bounds):
                segment = 0  # past the last token: the ring wraps to the first owner
        key = (segment, write, level)
        found = self._plans.get(key)
        if found is None:
            found = plan(self.topology, token, write=write, level=level, is_up=is_up)
            self._plans[key] = found
        return found

    def clear(self) -> None:
        """Forget every plan (a peer's reachability changed)."""
        self._plans.clear()
