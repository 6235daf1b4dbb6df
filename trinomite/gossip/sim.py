"""A simulated network of ``GossipState``s, for tests and measurements.

Theory of operation
-------------------
A discrete-event loop over one heap of timed actions::

    (time, seq, "tick", name)                 a node's next_deadline()
    (time, seq, "deliver", src, dst, type, payload)

Every node is a real ``GossipState``; messages are its real payload bytes,
decoded again by the receiver (``receive``), so the wire format is
exercised too.  Each message is lost with probability ``loss``, delivered
after a uniform random delay in ``delay`` (so messages reorder), and
delivered a second time, after an independent delay, with probability
``duplicate``.  ``stop`` silences a node (no ticks, nothing in or out),
``isolate`` keeps it running with its links cut, ``start`` (re)starts one
with a fresh state.  Everything random comes from one ``random.Random``,
so a run is a pure function of its seed.

Only for tests and benchmarks; pure code, no clock, no trio.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable

import attrs

from .events import Event, Step
from .state import GossipState
from .wire import NodeRecord, State

__all__ = ["Network", "SimNode"]


@attrs.frozen
class _Tick:
    name: str
    ticket: int


@attrs.frozen
class _Deliver:
    src: str
    dst: str
    frame_type: int
    payload: bytes
    incarnation: int


@attrs.define
class SimNode:
    state: GossipState
    running: bool = True
    isolated: bool = False
    events: list[tuple[float, Event]] = attrs.field(factory=list)
    incarnation: int = 0  #: bumped by a restart: messages to the old process are lost
    ticket: int = 0  #: invalidates older scheduled ticks


class Network:
    """Nodes plus a lossy, reordering, duplicating message network in simulated time."""

    def __init__(
        self,
        rng: random.Random,
        *,
        gos_interval_ms: int = 1000,
        loss: float = 0.0,
        duplicate: float = 0.0,
        delay: tuple[float, float] = (0.001, 0.05),
    ) -> None:
        self.rng = rng
        self.gos_interval_ms = gos_interval_ms
        self.loss = loss
        self.duplicate = duplicate
        self.delay = delay
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.delivered = 0
        self._heap: list[tuple[float, int, _Tick | _Deliver]] = []
        self._seq = 0

    @property
    def interval(self) -> float:
        return self.gos_interval_ms / 1000.0

    # -- membership of the simulation ------------------------------------------------

    def start(
        self, record: NodeRecord, seeds: Iterable[str], *, at: float | None = None, **kwargs: object
    ) -> GossipState:
        """Start (or restart, replacing its state) the node of ``record``."""
        when = self.now if at is None else at
        state = GossipState(
            record,
            seeds=seeds,
            gos_interval_ms=self.gos_interval_ms,
            rng=random.Random(self.rng.getrandbits(64)),
            now=when,
            **kwargs,  # type: ignore[arg-type]
        )
        old = self.nodes.get(record.name)
        node = SimNode(state, incarnation=old.incarnation + 1 if old else 0)
        if old is not None:
            node.ticket = old.ticket + 1
        self.nodes[record.name] = node
        self._push(when, _Tick(record.name, node.ticket))
        return state

    def stop(self, name: str) -> None:
        self.nodes[name].running = False

    def isolate(self, name: str, isolated: bool = True) -> None:
        self.nodes[name].isolated = isolated

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.running and not n.isolated]

    # -- running -------------------------------------------------------------------

    def run(self, until: float) -> None:
        """Process every action up to ``until``, then set the clock there."""
        while self._heap and self._heap[0][0] <= until:
            when, _, action = heapq.heappop(self._heap)
            self.now = max(self.now, when)
            if isinstance(action, _Tick):
                node = self.nodes[action.name]
                if node.running and node.ticket == action.ticket:
                    self.apply(action.name, node.state.tick(self.now))
                continue
            target = self.nodes.get(action.dst)
            if target is None or not target.running or target.isolated:
                continue
            if target.incarnation != action.incarnation:
                continue  # sent to a process that has since restarted
            self.delivered += 1
            step = target.state.receive(action.frame_type, action.payload, self.now)
            self.apply(action.dst, step)
        self.now = max(self.now, until)

    def run_until(
        self, done: Callable[[], bool], limit: float, *, step: float | None = None
    ) -> float | None:
        """Run until ``done()`` holds (checked every ``step``, default one interval).

        Returns the simulated time it first held, or None if not by ``limit``.
        """
        step = step or self.interval
        while self.now < limit:
            self.run(min(limit, self.now + step))
            if done():
                return self.now
        return None

    def converged(self) -> bool:
        """Every live node is NORMAL and holds every live node's position as NORMAL."""
        live = self.live()
        for viewer in live:
            if viewer.state.local.state is not State.NORMAL:
                return False
            members = viewer.state.members
            for node in live:
                member = members.get(node.state.local.name)
                if member is None or member.state is not State.NORMAL:
                    return False
                if member.record.position != node.state.local.position:
                    return False
        return True

    def bytes_out(self) -> int:
        return sum(n.state.counters["bytes_out"] for n in self.nodes.values())

    # -- internals -------------------------------------------------------------------

    def _push(self, when: float, action: _Tick | _Deliver) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, action))

    def apply(self, name: str, step: Step) -> None:
        """Record ``step``'s events for ``name`` and send its messages (also for operator calls)."""
        node = self.nodes[name]
        node.events.extend((self.now, event) for event in step.events)
        if not node.isolated:
            for out in step.outgoing:
                copies = 2 if self.rng.random() < self.duplicate else 1
                for _ in range(copies):
                    if self.rng.random() < self.loss:
                        continue
                    target = self.nodes.get(out.to)
                    incarnation = target.incarnation if target is not None else -1
                    when = self.now + self.rng.uniform(*self.delay)
                    self._push(
                        when, _Deliver(name, out.to, out.frame_type, out.payload, incarnation)
                    )
        node.ticket += 1
        self._push(node.state.next_deadline(), _Tick(name, node.ticket))
