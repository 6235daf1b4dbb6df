"""Membership at run time: the gossip ticker and seed providers, wired to a node.

Theory of operation
-------------------
``gossip.state.GossipState`` decides everything about membership; this is
the thin trio shell around it.  It owns no sockets of its own: gossip rides
the peer links that requests use::

    ticker (a task in the node's nursery)
        tick(now) at next_deadline()  -> SYNs, each on the peer's pool
    peer server: a gossip frame in    -> receive()  -> its answer (the ACK)
                                         written back on that connection
    peer link: an answer in (ACK)     -> receive(sender=the link's peer)
                                      -> the ACK2 on that link
    any events                        -> on_view(state, events): the node
                                         builds a new Topology, swaps it in,
                                         opens and closes peer pools, and
                                         routes around members held DOWN

A payload for a node this one has no pool for (not in the view yet) is
dropped and counted (``unsendable``); gossip is lossy by design and the
next round repeats it.  Nothing a peer sends can raise out of ``receive``,
so one bad peer never stops the ticker.

``start_membership`` builds it for a node once its peer port is bound: the
local record (a new generation, the start time in ms, on every start), the
configured seeds to contact and the configured datacenters as the
allow-list.  ``view_changed`` is what the node does with events:

* the local member NORMAL: the node's state gate goes NORMAL (it starts
  JOINING with gossip on: reads refused, writes held);
* members joined, replaced, updated, removed, or turned NORMAL from
  JOINING: a new ``Topology`` of the ring members (JOINING ones excluded)
  is swapped in whole (``Node.set_topology``; plan caches go with it);
* members convicted DOWN or heard from again: ``PeerPools.gossip_down``,
  so requests to them fail at once instead of waiting on a link.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ..admin.api import NodeState
from ..config.model import HostPort, NodeConfig
from ..datastore.gate import StateGate
from ..gossip.detector import conviction_bounds
from ..gossip.events import Counter, Event, Outgoing, StateChanged, Step
from ..gossip.state import GossipState
from ..gossip.view import peer_infos
from ..gossip.wire import NodeRecord, State
from ..peering.link import PeerConnection
from ..peering.pools import PeerPools
from ..protocol.peer import Frame, encode_frame
from ..ring.topology import PeerInfo, Topology
from ..stats.metrics import counter_lines, gauge_lines

__all__ = [
    "Membership",
    "MembershipHost",
    "gossip_info",
    "gossip_metrics",
    "member_counts",
    "start_membership",
    "view_changed",
]

log = logging.getLogger("trinomite.membership")

ViewChanged = Callable[[GossipState, tuple[Event, ...]], None]


class Membership:
    """Drives one node's ``GossipState`` (see the module doc)."""

    def __init__(self, state: GossipState, peers: PeerPools, on_view: ViewChanged) -> None:
        self.state = state
        self.peers = peers
        self.on_view = on_view
        #: Payloads for a node with no pool, or whose link was down: lost.
        self.unsendable = 0
        self._wake = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The gossip ticker: rounds and convictions, each when it is due."""
        task_status.started()
        while True:
            self._apply(self.state.tick(trio.current_time()))
            with trio.move_on_at(self.state.next_deadline()):
                await self._wake.wait()
            self._wake = trio.Event()

    def poke(self) -> None:
        """Run the ticker now (an operator action changed the view)."""
        self._wake.set()

    def inbound(self, frame: Frame) -> list[bytes]:
        """A gossip frame the peer server read: the frames to answer it with there."""
        step = self.state.receive(frame.type, frame.payload, trio.current_time())
        answers = [
            encode_frame(0, out.frame_type, out.payload, same_dc=frame.same_dc, data=b"a")
            for out in step.outgoing
        ]
        if step.events:
            self.on_view(self.state, step.events)
        return answers

    def answered(self, link: PeerConnection, frame: Frame) -> None:
        """A gossip frame that came back on one of our links (an ACK to our SYN)."""
        name = link.peer.name
        step = self.state.receive(frame.type, frame.payload, trio.current_time(), sender=name)
        for out in step.outgoing:
            if out.to == name:
                if not link.send_gossip(out.frame_type, out.payload):
                    self.unsendable += 1
            else:
                self._send(out)
        if step.events:
            self.on_view(self.state, step.events)

    def mark_normal(self) -> None:
        """An operator made this node NORMAL: gossip says so too."""
        self._apply(self.state.mark_normal(trio.current_time()))

    def remove(self, name: str) -> None:
        """An operator's removal of a DOWN member (ValueError if it cannot be removed)."""
        self._apply(self.state.remove(name, trio.current_time()))

    def _apply(self, step: Step) -> None:
        for out in step.outgoing:
            self._send(out)
        if step.events:
            self.on_view(self.state, step.events)

    def _send(self, out: Outgoing) -> None:
        pool = self.peers.pools.get(out.to)
        if pool is None or not pool.connections[0].send_gossip(out.frame_type, out.payload):
            self.unsendable += 1

    def attach(self, connection: PeerConnection) -> None:
        """Have ``connection`` hand us the gossip answers it reads."""
        connection.on_gossip = self.answered


class _Events(Protocol):
    def publish(self, event: str, **fields: Any) -> None: ...


class _Admin(Protocol):
    @property
    def events(self) -> _Events: ...


class MembershipHost(Protocol):
    """What membership needs of a node (``node.supervisor.Node``)."""

    config: NodeConfig
    topology: Topology
    peers: PeerPools
    gate: StateGate

    @property
    def admin(self) -> _Admin: ...

    def set_topology(self, others: list[PeerInfo]) -> None: ...


#: How far ahead of this node's clock another node's start time (its gossip
#: generation) may be; beyond it the record is taken for a forgery.
MAX_CLOCK_SKEW_MS = 10 * 60 * 1000

#: Changes of a member's state that change who is in the ring.
_RING_STATES = frozenset({State.JOINING, State.REMOVED})


def start_membership(node: MembershipHost, address: HostPort) -> Membership:
    """The gossip shell for ``node``, whose peer listener is bound at ``address``."""
    config = node.config
    topology = node.topology
    local = NodeRecord.make(
        address.host,
        address.port,
        config.datacenter,
        config.rack,
        topology.local.tokens,
        generation=time.time_ns() // 1_000_000,
        tls_name=topology.local.alias,
    )
    state = GossipState(
        local,
        seeds=[peer.name for peer in topology.peers if not peer.local],
        gos_interval_ms=config.gos_interval,
        rng=random.Random(),
        now=trio.current_time(),
        dcs={peer.dc for peer in topology.peers},
        latest_generation=lambda: time.time_ns() // 1_000_000 + MAX_CLOCK_SKEW_MS,
    )
    membership = Membership(state, node.peers, functools.partial(view_changed, node))
    for pool in node.peers.pools.values():
        for connection in pool.connections:
            membership.attach(connection)
    return membership


def view_changed(node: MembershipHost, state: GossipState, events: tuple[Event, ...]) -> None:
    """Apply gossip's events to the node (see the module doc)."""
    local = state.local.name
    ring = False
    for event in events:
        log.debug("membership: %s", event)
        if isinstance(event, StateChanged):
            if event.name == local:
                if event.new is State.NORMAL and node.gate.state is NodeState.JOINING:
                    node.gate.set_state(NodeState.NORMAL)
                continue
            ring = ring or event.old in _RING_STATES or event.new in _RING_STATES
            node.admin.events.publish(
                "member_state", peer=event.name, old=event.old.name, new=event.new.name
            )
        else:
            ring = True
            node.admin.events.publish(f"member_{type(event).__name__.lower()}", detail=str(event))
    if ring:
        _, others = peer_infos(state.members)
        node.set_topology(others)
    members = state.members
    node.peers.set_gossip_down(
        {name for name, m in members.items() if m.state is State.DOWN and not m.local}
    )


_HELPS = {counter.name.lower(): counter.value for counter in Counter}
_HELPS["unsendable"] = "gossip payloads lost: no pool for the node, or its link down"


def gossip_metrics(labels: dict[str, str], membership: Membership) -> str:
    """/metrics lines for gossip: its counters and the view's members per state."""
    state = membership.state
    counters = {**state.counters, "unsendable": membership.unsendable}
    by_state = dict.fromkeys((s.name for s in State), 0.0)
    for member in state.members.values():
        by_state[member.state.name] += 1
    return counter_lines(labels, "gossip", counters, _HELPS) + gauge_lines(
        labels, "gossip_members", "members of the gossip view, by state", by_state, "state"
    )


def member_counts(membership: Membership) -> dict[str, int]:
    """Members of the view by state (the feed's snapshots)."""
    counts: dict[str, int] = {}
    for member in membership.state.members.values():
        counts[member.state.name] = counts.get(member.state.name, 0) + 1
    return counts


def gossip_info(membership: Membership) -> dict[str, Any]:
    """/info's "gossip": the local record, every member, the detector's window, counters."""
    state = membership.state
    low, high = conviction_bounds(state.interval)
    return {
        "enabled": True,
        "local": {"name": state.local.name, "state": state.local.state.name},
        "generation": state.local.generation,
        "heartbeat": state.local.heartbeat,
        "members": {
            name: {
                "state": member.state.name,
                "dc": member.record.dc,
                "rack": member.record.rack,
                "tokens": list(member.record.tokens),
                "generation": member.record.generation,
                "heartbeat": member.record.heartbeat,
            }
            for name, member in sorted(state.members.items())
        },
        "detector": {"convicts_after_s": [round(low, 3), round(high, 3)]},
        "counters": {**state.counters, "unsendable": membership.unsendable},
        "last_problem": state.last_problem,
    }
