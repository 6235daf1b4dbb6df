"""memcached clients: a node with ``data_store: 1`` answers the ASCII protocol.

Theory of operation
-------------------
The client reactor (``client.reactor``) is the same for both datastores: one
task, one epoll set, one round in flight per client.  Only two pieces
differ, and this module supplies them for memcached:

* the parser: ``McClientParser`` is ``protocol.memcache``'s parser with the
  attributes the reactor reads (``blob``: unknown, the dispatcher joins the
  requests' own bytes);
* the dispatcher: ``McDispatcher.start`` takes a round's ``McRequest``s and
  hands the client's replies, in request order, to the reactor's sink.

``McDispatcher.start`` decides per request, without awaiting::

    refused by the parser       -> its error line now (none if noreply)
    version / verbosity / quit  -> answered here (quit closes after the replies owed)
    a key under __trinomite:    -> CLIENT_ERROR (the node's own keys)
    anything else               -> the datastore (lone node) or the cluster
                                   (``peering.memcache.McRouter``)

In a cluster (or a node not NORMAL) the round's requests are routed
between ``McRoute.begin`` and ``end``, so their legs leave in batches.
A lone node in state NORMAL sends a round that is all datastore requests as
the clients' own bytes, in one piece, to its memcached (``noreply``
requests included: memcached itself then answers exactly what memcached
answers).  Errors the node makes travel as RESP lines inside the node and
are rewritten to ``SERVER_ERROR <source> <message>`` here, per reply
(``to_memcache``), so a client only ever sees memcached's protocol.

memcached's ASCII protocol has no authentication (SASL is binary-only), so
memcached clients are always authenticated; a config that asks for
passwords with ``data_store: 1`` is refused at start (``config``).
"""

from __future__ import annotations

from typing import Protocol

import trio

from .._version import __version__
from ..admin.api import NodeState
from ..datastore.gate import StateGate
from ..datastore.pool import DatastorePool
from ..errors import NodeError, redis_error
from ..net.slots import Gather, ReplySink, Slot
from ..protocol.commands import COMMANDS
from ..protocol.memcache import McKind, McRequest, MemcacheRequestParser
from ..protocol.memcache_replies import OK, client_error, to_memcache, version
from ..protocol.reserved import RESERVED_PREFIX
from ..stats.requests import RequestStats
from .local import Session

__all__ = ["STATS_AS", "McClientParser", "McDispatcher", "McRoute"]

#: What /info and /metrics count each memcached command as (their Redis twins).
STATS_AS = {
    b"get": "get",
    b"gets": "get",
    b"gat": "getex",
    b"gats": "getex",
    b"set": "set",
    b"add": "setnx",
    b"replace": "set",
    b"cas": "set",
    b"append": "append",
    b"prepend": "append",
    b"incr": "incrby",
    b"decr": "decrby",
    b"delete": "del",
    b"touch": "expire",
    b"version": "ping",
    b"verbosity": "ping",
    b"quit": "quit",
}
_INDEX = {name: COMMANDS[spec].index for name, spec in STATS_AS.items()}
#: Kinds whose requests go to the datastore.
_FORWARDED = frozenset(
    {McKind.RETRIEVAL, McKind.STORAGE, McKind.ARITHMETIC, McKind.DELETE, McKind.TOUCH}
)
_RESERVED_KEY = client_error(
    f"keys starting with {RESERVED_PREFIX.decode()} are reserved for the node's own use"
)
_SHUTTING_DOWN = to_memcache(redis_error(NodeError.SHUTTING_DOWN))
_VERSION = version(f"trinomite-{__version__}")


class McClientParser(MemcacheRequestParser):
    """The memcached request parser as the client reactor drives it."""

    #: The exact bytes of the requests ``parse`` returned (unknown here: None).
    blob: bytes | None = None


class McRoute(Protocol):
    """Where a memcached node's cluster requests go (``peering.memcache.McRouter``)."""

    def begin(self) -> None: ...
    def route(self, session: Session, request: McRequest, sink: ReplySink, now: float) -> None: ...
    def end(self, session: Session, now: float) -> None: ...


class _Converted:
    """A sink that hands on a reply with the node's own errors in memcached's form."""

    __slots__ = ("sink",)

    def __init__(self, sink: ReplySink) -> None:
        self.sink = sink

    def set(self, reply: bytes) -> None:
        self.sink.set(to_memcache(reply) if reply[:1] == b"-" else reply)


class _McGather(Gather):
    """``Gather`` whose slots' node-made errors are rewritten for memcached."""

    __slots__ = ()

    def completed(self) -> None:
        parts = self.parts
        self.parts = []
        out = []
        for part in parts:
            reply = part if isinstance(part, bytes) else part.reply or b""
            out.append(to_memcache(reply) if reply[:1] == b"-" else reply)
        self.sink.set(b"".join(out))


class _Drop:
    """The sink of a ``noreply`` request routed in a cluster: the client wants nothing."""

    __slots__ = ()

    def set(self, reply: bytes) -> None:
        pass


_DROP = _Drop()


class McDispatcher:
    """Executes memcached request rounds for every client of one node."""

    def __init__(
        self,
        pool: DatastorePool,
        router: McRoute,
        gate: StateGate,
        stats: RequestStats,
        *,
        cluster: bool,
    ) -> None:
        self.pool = pool
        self.router = router
        self.gate = gate
        self.stats = stats
        self.cluster = cluster
        self.timeout = pool.connections[0].timeout if pool.connections else 5.0
        self.draining = False

    def start(
        self, session: Session, requests: list[McRequest], blob: bytes | None, sink: ReplySink
    ) -> list[int]:
        """Start a round; ``sink.set`` later gets every reply owed, in order, as one ``bytes``."""
        now = trio.current_time()
        index = _INDEX
        indices: list[int] = []
        if not self.cluster and not self.draining and self.gate.state is NodeState.NORMAL:
            count = 0
            for request in requests:
                if request.error is not None or request.kind not in _FORWARDED:
                    break
                indices.append(index[request.command])
                count += not request.noreply
            else:
                raw = b"".join([request.raw for request in requests])
                if RESERVED_PREFIX not in raw:
                    self.pool.send(session.id, 2, raw, count, _Converted(sink), now + self.timeout)
                    return indices
            indices = []
        gather = _McGather(sink)
        routed = self.cluster or self.gate.state is not NodeState.NORMAL
        if routed:
            self.router.begin()
        try:
            self._start(session, requests, gather, routed, indices, now)
        finally:
            if routed:
                self.router.end(session, now)
        gather.seal()
        return indices

    def _start(
        self,
        session: Session,
        requests: list[McRequest],
        gather: Gather,
        routed: bool,
        indices: list[int],
        now: float,
    ) -> None:
        """The per-request decisions of ``start`` (see the module doc)."""
        index = _INDEX
        run: list[bytes] = []  # a lone node's consecutive datastore requests
        owed = 0
        for request in requests:
            reply: bytes | None = None
            if request.error is not None:
                self.stats.unknown += 1
                reply = request.error.reply
            else:
                indices.append(index.get(request.command, index[b"version"]))
                if request.kind is McKind.LOCAL:
                    if request.command == b"quit":
                        session.closing = True
                        break  # nothing after it is executed
                    reply = _VERSION if request.command == b"version" else OK
                elif self.draining:
                    reply = _SHUTTING_DOWN
                elif any(key.startswith(RESERVED_PREFIX) for key in request.keys):
                    reply = _RESERVED_KEY
                elif routed:
                    slot: ReplySink = _DROP if request.noreply else gather.slot()
                    self.router.route(session, request, slot, now)
                    continue
                else:
                    run.append(request.raw)
                    owed += not request.noreply
                    continue
            if request.noreply:
                continue  # memcached sends nothing, not even an error
            if run:
                self._send(session, run, owed, gather.slot(), now)
                run, owed = [], 0
            gather.add(reply)
        if run:
            self._send(session, run, owed, gather.slot(), now)

    def _send(self, session: Session, run: list[bytes], owed: int, slot: Slot, now: float) -> None:
        self.pool.send(session.id, 2, b"".join(run), owed, slot, now + self.timeout)

    def before_auth(self, session: Session, args: list[bytes]) -> bytes:
        """Never called: memcached clients need no AUTH (see the module doc)."""
        raise AssertionError("memcached clients are always authenticated")
