"""Turn one client's batch of parsed requests into replies, in request order.

Theory of operation
-------------------
``Dispatcher.execute`` is the per-batch hot path.  For each request it looks
the command up in the table and decides, without awaiting:

* unknown / unsupported / wrong arity / refused subcommand -> an error reply
  now (the connection stays open, unlike Dynomite which drops it);
* ``node`` route -> answered by ``local.answer`` now;
* anything else -> handed to the datastore pool, which returns a ``Slot``.

Only then does it await, once, for every slot of the batch, and join the
replies in request order.  The result is one ``bytes`` to write with one
``send_all``.  A request never waits behind a later one, and a client's
replies can never be reordered, whichever connection answers first.

This is the single-node dispatcher: every datastore-bound request goes to
the local datastore.  Cluster routing (token owners, racks, DCs, quorum)
plugs in at ``_forward``.
"""

from __future__ import annotations

import trio

from ..errors import NodeError, redis_error
from ..protocol import replies as r
from ..protocol.commands import (
    CommandSpec,
    Route,
    arity_error,
    lookup,
    unknown_command_error,
    unsupported_reason,
)
from ..protocol.requests import Request
from .datastore import DatastorePool
from .local import Session, answer
from .slots import Batch, Slot

__all__ = ["Dispatcher"]

#: Subcommands allowed for container commands that reach a datastore.
_ALLOWED_SUBCOMMANDS: dict[str, frozenset[bytes]] = {
    "config": frozenset({b"get"}),
    "script": frozenset({b"load", b"exists", b"flush", b"kill"}),
}


def _unsupported(name: str, why: str) -> bytes:
    return r.error(f"ERR unsupported command '{name}': {why}")


class Dispatcher:
    """Executes request batches for every client of one node."""

    def __init__(self, pool: DatastorePool) -> None:
        self.pool = pool
        self.timeout = pool.connections[0].timeout if pool.connections else 5.0
        self.draining = False

    async def execute(self, session: Session, requests: list[Request]) -> bytes:
        batch = Batch()
        parts: list[bytes | Slot] = []
        deadline = trio.current_time() + self.timeout
        for request in requests:
            if session.closing:
                break  # nothing after QUIT is executed
            args = request.args
            spec = lookup(args[0])
            if spec is None:
                parts.append(self._reject_unknown(args))
            elif not spec.arity_ok(len(args)):
                parts.append(r.error(arity_error(spec.name)))
            elif spec.route is Route.NODE:
                parts.append(answer(spec, session, args))
            elif self.draining:
                parts.append(redis_error(NodeError.SHUTTING_DOWN))
            else:
                refused = self._refuse_subcommand(spec, args)
                if refused is not None:
                    parts.append(refused)
                else:
                    parts.append(self._forward(session, spec, request, batch, deadline))
        await batch.wait()
        return b"".join([p if isinstance(p, bytes) else p.reply or b"" for p in parts])

    def _forward(
        self, session: Session, spec: CommandSpec, request: Request, batch: Batch, deadline: float
    ) -> Slot:
        return self.pool.submit(session.id, session.protocol, request.raw, batch, deadline)

    @staticmethod
    def _reject_unknown(args: list[bytes]) -> bytes:
        why = unsupported_reason(args[0])
        if why is not None:
            return _unsupported(args[0].decode("latin-1").lower(), why)
        return r.error(unknown_command_error(args))

    @staticmethod
    def _refuse_subcommand(spec: CommandSpec, args: list[bytes]) -> bytes | None:
        allowed = _ALLOWED_SUBCOMMANDS.get(spec.name)
        if allowed is None or args[1].lower() in allowed:
            return None
        sub = args[1].decode("latin-1").lower()
        return _unsupported(
            f"{spec.name} {sub}",
            f"only {spec.name.upper()} {'/'.join(sorted(a.decode().upper() for a in allowed))} "
            "is proxied",
        )
