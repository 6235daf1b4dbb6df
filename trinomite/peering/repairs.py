"""A versioned quorum read: the newest value of a quorum answers, stale replicas are repaired.

Theory of operation
-------------------
``Coordinator`` sends ``cluster.repair.versioned_read`` to each counted
replica of a quorum GET (with ``read_repairs_enabled``) and hands the
replies to one ``RepairRead``.  Once a quorum of replicas answered with a
version, ``versions.newest`` picks the winner: the client gets its value
(nil for a tombstone), and every answering replica that holds something
else is sent ``repair_write`` of the winner through the coordinator (a
write leg like any other: a miss becomes a hint).  A reply that comes after
the decision is repaired too if it is stale.  When errors leave no quorum
possible, the client gets the first error.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..cluster.quorum import quorum_size
from ..cluster.repair import client_reply, parse_reading, repair_write
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
    def send_repair(self, session: Any, target: Target, raw: bytes, now: float) -> None: ...


NO_QUORUM_REPLY = redis_error(NodeError.NO_QUORUM)


class RepairRead:
    """A versioned quorum read: the newest of a quorum answers; stale replicas are repaired."""

    def __init__(
        self,
        coordinator: RepairHost,
        session: Any,
        key: bytes,
        targets: list[Target],
        sink: ReplySink,
        now: float,
    ) -> None:
        self.coordinator = coordinator
        self.session = session
        self.key = key
        self.targets = targets
        self.sink = sink
        self.now = now
        self.needed = quorum_size(len(targets))
        self.readings: dict[int, Reading] = {}
        self.errors: list[bytes] = []
        self.winner: Reading | None = None

    def leg(self, index: int) -> ReplySink:
        return _RepairLeg(self, index)

    def add(self, index: int, reply: bytes) -> None:
        reading = parse_reading(reply)
        if reading is None:
            self.errors.append(reply if is_error(reply) else NO_QUORUM_REPLY)
        else:
            self.readings[index] = reading
        if self.winner is None:
            if len(self.readings) >= self.needed:
                self._decide()
            elif len(self.errors) > len(self.targets) - self.needed:
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
        self.sink.set(client_reply(self.winner, self.session.protocol))
        self._repair([indices[i] for i in stale])

    def _repair(self, indices: list[int]) -> None:
        winner = self.winner
        assert winner is not None
        for index in indices:
            if self.readings[index].same(winner) or winner.version == 0:
                continue
            self.coordinator.repaired()
            raw = repair_write(self.key, winner)
            self.coordinator.send_repair(self.session, self.targets[index], raw, self.now)


class _RepairLeg:
    __slots__ = ("index", "read")

    def __init__(self, read: RepairRead, index: int) -> None:
        self.read = read
        self.index = index

    def set(self, reply: bytes) -> None:
        self.read.add(self.index, reply)
