"""A versioned quorum read: the newest value of a quorum answers, stale replicas are repaired.

Theory of operation
-------------------
``Coordinator`` sends a ``cluster.repair.ReadKind``'s request to each
counted replica of a quorum read (with ``read_repairs_enabled``) and hands
the replies to one ``RepairRead``.  The replicas form groups: one for
DC_QUORUM and DC_SAFE_QUORUM, one per datacenter for DC_EACH_SAFE_QUORUM.
Once every group has a quorum of readings, ``versions.newest`` picks the
winner among all readings in: the client gets its reply, and every
answering replica that holds something else is sent the kind's repair
write of the winner through the coordinator (a write leg like any other:
a miss becomes a hint).  A reply that comes after the decision is repaired
too if it is stale.  When errors leave some group without a possible
quorum, the client gets the first error.

A tombstone older than the grace is not written to a replica that holds
nothing: that replica has already collected it (``scripts.COLLECT_SCRIPT``)
or never needed it, and writing it back would only make it live again.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..cluster.quorum import quorum_size
from ..cluster.repair import ReadKind
from ..cluster.routing import Target
from ..cluster.versions import Reading, newest
from ..errors import NodeError, redis_error
from ..net.slots import ReplySink
from ..protocol.replies import is_error

__all__ = ["RepairHost", "RepairRead"]


class RepairHost(Protocol):
    """What a repair read needs of its coordinator."""

    def repaired(self) -> None: ...
    def no_quorum(self) -> None: ...
    def observe(self, version: int) -> None: ...
    def outlived(self, tombstone: Reading) -> bool: ...
    def send_repair(self, session: Any, target: Target, raw: bytes, now: float) -> None: ...

    @property
    def grace(self) -> int: ...


NO_QUORUM_REPLY = redis_error(NodeError.NO_QUORUM)


class RepairRead:
    """A versioned quorum read: the newest of a quorum answers; stale replicas are repaired."""

    def __init__(
        self,
        coordinator: RepairHost,
        session: Any,
        kind: ReadKind,
        args: list[bytes],
        targets: list[Target],
        sink: ReplySink,
        now: float,
        *,
        per_dc: bool = False,
    ) -> None:
        self.coordinator = coordinator
        self.session = session
        self.kind = kind
        self.args = args
        self.targets = targets
        self.sink = sink
        self.now = now
        #: Each target's group (its DC under DC_EACH_SAFE_QUORUM, else one group).
        self.group = [t.dc if per_dc else "" for t in targets]
        sizes: dict[str, int] = {}
        for name in self.group:
            sizes[name] = sizes.get(name, 0) + 1
        self.sizes = sizes
        self.answered = dict.fromkeys(sizes, 0)
        self.failed = dict.fromkeys(sizes, 0)
        self.readings: dict[int, Reading] = {}
        self.errors: list[bytes] = []
        self.winner: Reading | None = None

    def leg(self, index: int) -> ReplySink:
        return _RepairLeg(self, index)

    def add(self, index: int, reply: bytes) -> None:
        reading = self.kind.parse(reply)
        group = self.group[index]
        if reading is None:
            self.errors.append(reply if is_error(reply) else NO_QUORUM_REPLY)
            self.failed[group] += 1
        else:
            self.readings[index] = reading
            self.answered[group] += 1
        if self.winner is None:
            sizes = self.sizes
            if all(self.answered[g] >= quorum_size(n) for g, n in sizes.items()):
                self._decide()
            elif any(self.failed[g] > n - quorum_size(n) for g, n in sizes.items()):
                self.winner = Reading(None)  # decided: no quorum possible
                self.coordinator.no_quorum()
                self.sink.set(self.errors[0])
        elif reading is not None:
            self._repair([index])  # a late reply: repair it too if it is stale

    def _decide(self) -> None:
        indices = list(self.readings)
        winner_at, stale = newest([self.readings[i] for i in indices])
        self.winner = self.readings[indices[winner_at]]
        self.coordinator.observe(self.winner.version)
        self.sink.set(self.kind.reply(self.winner, self.session.protocol))
        self._repair([indices[i] for i in stale])

    def _repair(self, indices: list[int]) -> None:
        winner = self.winner
        assert winner is not None
        if winner.version == 0:
            return  # nothing versioned to repair with
        coordinator = self.coordinator
        for index in indices:
            reading = self.readings[index]
            if reading.same(winner):
                continue
            if winner.deleted and reading.value is None and coordinator.outlived(winner):
                continue
            coordinator.repaired()
            raw = self.kind.repair(self.args, winner, coordinator.grace)
            coordinator.send_repair(self.session, self.targets[index], raw, self.now)


class _RepairLeg:
    __slots__ = ("index", "read")

    def __init__(self, read: RepairRead, index: int) -> None:
        self.read = read
        self.index = index

    def set(self, reply: bytes) -> None:
        self.read.add(self.index, reply)
