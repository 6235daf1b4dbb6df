"""Turn one client's batch of parsed requests into replies, in request order.

Theory of operation
-------------------
``Dispatcher.start`` is the per-batch hot path.  For each request it looks
the command up in the table and decides, without awaiting:

* unknown / unsupported / wrong arity / refused subcommand -> an error reply
  now (the connection stays open, unlike Dynomite which drops it);
* a command on the datastore's server state (``protocol.guard``) -> refused
  with ``-NOPERM`` unless the operator allowed it; INFO is forwarded on its
  own and its reply redacted;
* ``node`` route -> answered by ``local.answer`` now;
* anything else -> handed to the datastore pool (or the coordinator) with a
  slot of the batch to fill later.

Nothing awaits: the batch's replies are gathered in request order and
handed, joined into one ``bytes``, to the client's sink once the last one
is in.  A request never waits behind a later one, and a client's replies
can never be reordered, whichever connection answers first.

On a lone node, consecutive datastore-bound requests travel as one run, and
a batch that is one run (the usual case) goes to the datastore as the
client's own bytes with the client as the sink: no per-batch objects at
all.  In a cluster a run goes to ``Coordinator.route_run`` (token owners,
racks, DCs, quorum).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import trio

from ..admin.api import NodeState
from ..datastore.gate import StateGate
from ..datastore.pool import DatastorePool
from ..errors import NodeError, redis_error
from ..net.slots import Gather, ReplySink
from ..peering.coordinator import Coordinator
from ..protocol import replies as r
from ..protocol.commands import (
    BY_BYTES,
    CHECKED_SUBCOMMANDS,
    GUARDED_COMMANDS,
    LISTING_COMMANDS,
    Access,
    CommandSpec,
    Route,
    arity_error,
    lookup,
    unknown_command_error,
    unsupported_reason,
)
from ..protocol.guard import CommandGuard, redact_info
from ..protocol.requests import encode_command
from ..protocol.reserved import RESERVED_PREFIX, hide
from ..protocol.reserved import refusal as reserved_refusal
from ..stats.requests import RequestStats
from .auth import NOAUTH
from .local import Session, answer

__all__ = ["Dispatcher"]


def _unsupported(name: str, why: str) -> bytes:
    return r.error(f"ERR unsupported command '{name}': {why}")


#: What an unauthenticated client may run (Redis's no-auth commands).
PRE_AUTH_COMMANDS = frozenset({"auth", "hello", "quit"})
#: Server-state commands a read-only user may not run even where they read.
_NOT_READ_ONLY = frozenset({"script", "config", "replicaof", "slaveof"})


def _read_only_refusal(session: Session, spec: CommandSpec, args: list[bytes]) -> bytes | None:
    if spec.name in _NOT_READ_ONLY or spec.is_write(args):
        return r.error(
            f"NOPERM User {session.user} has no permissions to run the '{spec.name}' command"
        )
    return None


class _Filtered:
    """A sink that hands on a reply rewritten by ``rewrite`` (INFO redacted, keys hidden)."""

    __slots__ = ("rewrite", "sink")

    def __init__(self, rewrite: Callable[[bytes], bytes], sink: ReplySink) -> None:
        self.rewrite = rewrite
        self.sink = sink

    def set(self, reply: bytes) -> None:
        self.sink.set(self.rewrite(reply))


class Dispatcher:
    """Executes request batches for every client of one node."""

    def __init__(
        self,
        pool: DatastorePool,
        coordinator: Coordinator,
        gate: StateGate,
        stats: RequestStats,
        *,
        cluster: bool,
        guard: CommandGuard | None = None,
    ) -> None:
        self.pool = pool
        self.guard = guard or CommandGuard()
        self.timeout = pool.connections[0].timeout if pool.connections else 5.0
        self.draining = False
        #: Routes requests across the cluster (and through the state gate).
        self.coordinator = coordinator
        self.gate = gate
        self.stats = stats
        #: False for a lone node: consecutive requests then go to the
        #: datastore as one run, as long as the node state is NORMAL.
        self.cluster = cluster

    def start(
        self, session: Session, requests: list[list[bytes]], blob: bytes | None, sink: ReplySink
    ) -> list[int]:
        """Start ``requests`` (whose exact encoding is ``blob``, if known).

        ``sink.set`` later gets every reply, in request order, as one
        ``bytes`` (possibly before this returns, when no reply has to wait).
        Returns the command index of each request answered, for the stats.
        """
        started = trio.current_time()
        deadline = started + self.timeout
        draining = self.draining
        readonly = session.readonly
        # A request can name a reserved key only if the prefix occurs at all.
        if blob is not None:
            reserved = RESERVED_PREFIX in blob
        else:
            reserved = any(RESERVED_PREFIX in arg for args in requests for arg in args)
        by_bytes = BY_BYTES
        indices: list[int] = []  # each answered request's command, for the latency stats
        for args in requests:
            spec = by_bytes.get(args[0])
            if (
                spec is None
                or not spec.plain
                or not spec.min_args <= len(args) <= spec.max_args
                or draining
                or reserved
                or (readonly and spec.access is not Access.READ)
            ):
                break
            indices.append(spec.index)
        else:
            # The common case: every request is forwarded as is.
            if not self.cluster and self.gate.state is NodeState.NORMAL:
                raw = blob if blob is not None else b"".join(map(encode_command, requests))
                self.pool.send(session.id, session.protocol, raw, len(requests), sink, deadline)
                return indices
            gather = Gather(sink)
            self.coordinator.route_run(session, requests, gather, started, blob)
            gather.seal()
            return indices
        gather = Gather(sink)
        run = requests[: len(indices)]  # consecutive requests bound for the datastore
        for args in requests[len(indices) :]:
            spec = by_bytes.get(args[0]) or lookup(args[0])
            if spec is not None:
                indices.append(spec.index)
            else:
                self.stats.unknown += 1
            if spec is None:
                reply = self._reject_unknown(args)
            elif not spec.arity_ok(len(args)):
                reply = r.error(arity_error(spec.name))
            elif spec.route is Route.NODE:
                reply = answer(spec, session, args)
            elif readonly and (refused := _read_only_refusal(session, spec, args)):
                reply = refused
            elif draining:
                reply = redis_error(NodeError.SHUTTING_DOWN)
            elif refused := self._refuse(spec, args, reserved):
                reply = refused
            elif spec.name in LISTING_COMMANDS or (spec.name == "info" and self.guard.redact):
                if run:
                    self._forward(session, run, gather, deadline)
                    run = []
                raw = encode_command(args)
                rewrite = redact_info if spec.name == "info" else functools.partial(hide, spec.name)
                sink = _Filtered(rewrite, gather.slot())
                self.pool.send(session.id, session.protocol, raw, 1, sink, deadline)
                continue
            else:
                run.append(args)
                continue
            if run:
                self._forward(session, run, gather, deadline)
                run = []
            gather.add(reply)
            if session.closing:
                break  # QUIT: nothing after it is executed
        if run:
            self._forward(session, run, gather, deadline)
        gather.seal()
        return indices

    def before_auth(self, session: Session, args: list[bytes]) -> bytes:
        """The reply to a request from a client that has not authenticated yet.

        As Redis orders its checks: an unknown command or a wrong argument
        count is said first, then anything but AUTH, HELLO and QUIT gets
        ``-NOAUTH``.  Never forwarded, so always answered at once.
        """
        spec = BY_BYTES.get(args[0]) or lookup(args[0])
        if spec is None:
            self.stats.unknown += 1
            return self._reject_unknown(args)
        if not spec.arity_ok(len(args)):
            return r.error(arity_error(spec.name))
        if spec.name not in PRE_AUTH_COMMANDS:
            return NOAUTH
        return answer(spec, session, args)

    def _forward(
        self, session: Session, run: list[list[bytes]], gather: Gather, deadline: float
    ) -> None:
        """Send a run of validated requests.

        A lone node in state NORMAL sends the whole run to its datastore in
        one piece; otherwise each request is routed on its own by the
        coordinator (which applies the node state to local requests).
        """
        if not self.cluster and self.gate.state is NodeState.NORMAL:
            raw = b"".join(map(encode_command, run))
            self.pool.send(session.id, session.protocol, raw, len(run), gather.slot(), deadline)
            return
        self.coordinator.route_run(session, run, gather, deadline - self.timeout)

    @staticmethod
    def _reject_unknown(args: list[bytes]) -> bytes:
        why = unsupported_reason(args[0])
        if why is not None:
            return _unsupported(args[0].decode("latin-1").lower(), why)
        return r.error(unknown_command_error(args))

    def _refuse(self, spec: CommandSpec, args: list[bytes], reserved: bool) -> bytes | None:
        """Why a request is not forwarded (a reserved key, a checked or guarded command)."""
        if reserved and (refused := reserved_refusal(spec, args)):
            return refused
        if spec.name in CHECKED_SUBCOMMANDS and (refused := self._refuse_subcommand(spec, args)):
            return refused
        if spec.name in GUARDED_COMMANDS:
            return self.guard.refusal(spec.name, args)
        return None

    @staticmethod
    def _refuse_subcommand(spec: CommandSpec, args: list[bytes]) -> bytes | None:
        allowed = CHECKED_SUBCOMMANDS[spec.name]
        if args[1].lower() in allowed:
            return None
        sub = args[1].decode("latin-1").lower()
        return _unsupported(
            f"{spec.name} {sub}",
            f"only {spec.name.upper()} {'/'.join(sorted(a.decode().upper() for a in allowed))} "
            "is proxied",
        )
