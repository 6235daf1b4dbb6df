"""Node states: what may reach the local datastore, for client and peer requests alike.

Theory of operation
-------------------
Every request bound for this node's own datastore, whether a client's or a
peer's, passes ``StateGate.send`` (dynomite.md §6.1,
``req_forward_local_datastore``)::

    NORMAL       everything goes through
    STANDBY      everything is refused: -ERR Dynomite: Dynomite's current state
                 does not allow this request
    WRITES_ONLY  reads refused; writes are *held* (queued, not sent)
    RESUMING     reads refused; held writes are flushed, new writes sent
    JOINING      as WRITES_ONLY (Dynomite's behaviour, code reading)

Held writes keep their order and their deadline: when the state moves to
RESUMING or NORMAL they are sent, in order, unless their deadline has passed,
in which case the client gets the timeout error (as the held request would
have timed out in Dynomite's queue).  The hold is bounded (``max_held``);
beyond it writes are refused.  ``run`` is the supervised task that expires
held writes on time.

Nothing moves RESUMING to NORMAL by itself, as in Dynomite.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from ..admin.api import NodeState
from ..errors import NodeError, redis_error
from ..net.slots import Parker, ReplySink
from .pool import DatastorePool

__all__ = ["SETTABLE_STATES", "StateGate"]

REFUSED = redis_error(NodeError.INVALID_STATE)
TIMED_OUT = redis_error(NodeError.STORAGE_TIMEOUT)
#: The states an operator may set (REST /state/...).
SETTABLE_STATES = (
    NodeState.STANDBY,
    NodeState.WRITES_ONLY,
    NodeState.RESUMING,
    NodeState.NORMAL,
)
_HOLDING = (NodeState.WRITES_ONLY, NodeState.JOINING)


class StateGate:
    """The local datastore as the node's state allows it to be used."""

    def __init__(
        self,
        pool: DatastorePool,
        max_held: int,
        on_change: Callable[[NodeState, NodeState], None] | None = None,
    ) -> None:
        self.pool = pool
        self.state = NodeState.NORMAL
        self.max_held = max_held
        self.refused = 0
        self.on_change = on_change
        self._held: deque[tuple[int, int, bytes, ReplySink, float]] = deque()
        self._expiry = Parker()

    @property
    def held(self) -> int:
        return len(self._held)

    def send(
        self,
        client_id: int,
        protocol: int,
        raw: bytes,
        sink: ReplySink,
        deadline: float,
        write: bool,
    ) -> None:
        """One request for the local datastore (``write``: is it a write?)."""
        state = self.state
        if state is NodeState.NORMAL or (state is NodeState.RESUMING and write):
            self.pool.send(client_id, protocol, raw, 1, sink, deadline)
        elif write and state in _HOLDING and len(self._held) < self.max_held:
            self._held.append((client_id, protocol, raw, sink, deadline))
            self._expiry.unpark()
        else:
            self.refused += 1
            sink.set(REFUSED)

    def set_state(self, state: NodeState) -> None:
        old, self.state = self.state, state
        if state in (NodeState.RESUMING, NodeState.NORMAL):
            self._flush()
        elif state is NodeState.STANDBY:
            self._refuse_held()
        if old is not state and self.on_change is not None:
            self.on_change(old, state)

    def _flush(self) -> None:
        now = trio.current_time()
        held, self._held = self._held, deque()
        for client_id, protocol, raw, sink, deadline in held:
            if deadline <= now:
                sink.set(TIMED_OUT)
            else:
                self.pool.send(client_id, protocol, raw, 1, sink, deadline)

    def _refuse_held(self) -> None:
        held, self._held = self._held, deque()
        for entry in held:
            entry[3].set(REFUSED)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire held writes whose deadline passed, forever."""
        task_status.started()
        held = self._held
        while True:
            held = self._held
            if not held:
                await self._expiry.park()
                continue
            deadline = held[0][4]
            if trio.current_time() >= deadline:
                held.popleft()[3].set(TIMED_OUT)
                continue
            await trio.sleep_until(deadline)
