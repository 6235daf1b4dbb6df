"""The datastore pool: a few long-lived, pipelined connections shared by all clients.

Theory of operation
-------------------
Dynomite pins each client to one datastore connection and sends requests
one message at a time through an mbuf chain.  Trinomite multiplexes instead:
every client's requests are appended to a connection's *outbox* and its
*in-flight FIFO*; a writer task sends the whole outbox with one
``send_all`` per scheduling round; a reader task frames replies (without
decoding them) and fills the FIFO's slots in order::

    clients --submit--> outbox ---writer: one send_all per round---> datastore
       ^                in-flight FIFO                                   |
       +---- slot.set <-- reader: ReplyFramer, FIFO pop per reply <------+

Per connection there are three tasks in one nursery (reader, writer,
watchdog) supervised by ``run``, which owns the connection's life:

    IDLE --(first request, preconnect=false)--> CONNECTING --ok--> UP
    UP --(EOF, error, timeout)--> DOWN --backoff--> CONNECTING
    CONNECTING --fail--> DOWN

* While DOWN, ``submit`` refuses at once so clients get
  ``-ERR Storage: Datastore refused connection`` instead of hanging.
* While IDLE or CONNECTING, requests queue and are sent once connected (or
  failed if the attempt fails).
* The watchdog compares the oldest in-flight request's deadline with the
  clock.  When it passes, every in-flight request on the connection gets
  ``-ERR Storage: Connection timed out`` and the connection is replaced:
  replies still owed by the old connection can no longer be matched.
* Reconnect backoff starts at 100 ms and doubles up to
  ``server_retry_timeout`` (Dynomite starts at 1 s).

A RESP3 client's requests must be answered in RESP3, so the pool keeps two
groups of ``datastore_connections`` connections: RESP2 ones and RESP3 ones
(which send ``HELLO 3`` after connecting).
"""

from __future__ import annotations

import enum
import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from ..config.model import DatastoreSpec, HostPort, NodeConfig, UnixPath
from ..errors import NodeError, redis_error
from ..protocol.replies import ReplyFramer, ReplyProtocolError, is_error
from .embedded import EmbeddedStore
from .slots import Batch, Parker, Slot
from .sockets import connect_tcp, connect_unix

__all__ = ["ConnState", "DatastoreConnection", "DatastorePool"]

log = logging.getLogger("trinomite.datastore")

RECEIVE_SIZE = 256 * 1024
INITIAL_BACKOFF = 0.1
_HELLO3 = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"

Connector = Callable[[], Awaitable[trio.abc.Stream]]


class ConnState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


class _ConnectionFailed(Exception):
    """The live connection must be dropped; ``error`` goes to in-flight requests."""

    def __init__(self, error: NodeError, reason: str) -> None:
        super().__init__(reason)
        self.error = error


class DatastoreConnection:
    """One pipelined connection to the datastore, with reconnects."""

    def __init__(
        self,
        *,
        name: str,
        connect: Connector,
        protocol: int,
        timeout: float,
        max_backoff: float,
        max_bulk_len: int,
        preconnect: bool,
    ) -> None:
        self.name = name
        self.protocol = protocol
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.state = ConnState.CONNECTING if preconnect else ConnState.IDLE
        self.connects = 0
        self.timeouts = 0
        self.errors = 0
        self._connect = connect
        self._max_bulk_len = max_bulk_len
        self._outbox: list[bytes] = []
        # (slot, number of replies it takes, deadline), in send order.
        self._inflight: deque[tuple[Slot, int, float]] = deque()
        self._writer = Parker()
        self._wanted = Parker()  # a request arrived while IDLE

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def submit(self, raw: bytes, count: int, slot: Slot, deadline: float) -> bool:
        """Queue ``count`` requests encoded in ``raw``; ``slot`` gets their replies.

        Returns False (and queues nothing) while the datastore is down.
        """
        state = self.state
        if state is ConnState.DOWN:
            return False
        self._outbox.append(raw)
        self._inflight.append((slot, count, deadline))
        if state is ConnState.UP:
            self._writer.unpark()
        elif state is ConnState.IDLE:
            self._wanted.unpark()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own this connection forever: connect, serve, and reconnect with backoff."""
        started = False
        backoff = INITIAL_BACKOFF
        while True:
            if self.state is ConnState.IDLE:
                if not started:
                    task_status.started()
                    started = True
                await self._wanted.park()
            self.state = ConnState.CONNECTING
            stream = await self._open()
            if not started:
                task_status.started()
                started = True
            if stream is None:
                self.state = ConnState.DOWN
                self._fail_inflight(NodeError.STORAGE_CONNECTION_REFUSE)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = INITIAL_BACKOFF
            self.state = ConnState.UP
            self.connects += 1
            log.info("datastore connection %s up (RESP%d)", self.name, self.protocol)
            error = await self._serve(stream)
            self.state = ConnState.DOWN
            self.errors += 1
            self._fail_inflight(error)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            await trio.sleep(backoff)

    async def _open(self) -> trio.abc.Stream | None:
        try:
            with trio.fail_after(self.timeout):
                stream = await self._connect()
                if self.protocol == 3:
                    await self._handshake(stream)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, _ConnectionFailed) as exc:
            log.warning("datastore %s: connect failed: %s", self.name, exc or type(exc).__name__)
            return None
        return stream

    async def _handshake(self, stream: trio.abc.Stream) -> None:
        await stream.send_all(_HELLO3)
        framer = ReplyFramer(self._max_bulk_len)
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise _ConnectionFailed(NodeError.STORAGE_CONNECTION_REFUSE, "closed during HELLO")
            framer.feed(data)
            replies = framer.replies()
            if replies:
                if is_error(replies[0]):
                    await trio.aclose_forcefully(stream)
                    raise _ConnectionFailed(
                        NodeError.STORAGE_CONNECTION_REFUSE, replies[0].decode(errors="replace")
                    )
                return

    async def _serve(self, stream: trio.abc.Stream) -> NodeError:
        """Run reader, writer and watchdog until the connection fails; say why."""
        failure: list[_ConnectionFailed] = []

        async def guard(task: Callable[[trio.abc.Stream], Awaitable[None]]) -> None:
            try:
                await task(stream)
            except _ConnectionFailed as exc:
                failure.append(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                failure.append(_ConnectionFailed(NodeError.STORAGE_CONNECTION_REFUSE, str(exc)))
            except ReplyProtocolError as exc:
                failure.append(_ConnectionFailed(NodeError.STORAGE_PROTOCOL, str(exc)))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guard, self._read_replies)
            nursery.start_soon(guard, self._write_requests)
            nursery.start_soon(guard, self._watch_deadlines)
        reason = failure[0] if failure else _ConnectionFailed(
            NodeError.STORAGE_CONNECTION_REFUSE, "closed"
        )
        log.warning("datastore connection %s lost: %s", self.name, reason)
        return reason.error

    async def _read_replies(self, stream: trio.abc.Stream) -> None:
        framer = ReplyFramer(self._max_bulk_len)
        inflight = self._inflight
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise _ConnectionFailed(NodeError.STORAGE_CONNECTION_REFUSE, "datastore closed")
            if not inflight:
                raise ReplyProtocolError("reply with no request in flight")
            framer.feed(data)
            while inflight:
                slot, count, _ = inflight[0]
                replies = framer.take(count)
                if replies is None:
                    break
                inflight.popleft()
                slot.set(replies)

    async def _write_requests(self, stream: trio.abc.Stream) -> None:
        while True:
            if not self._outbox:
                await self._writer.park()
                continue
            data = b"".join(self._outbox)
            self._outbox = []
            await stream.send_all(data)

    async def _watch_deadlines(self, stream: trio.abc.Stream) -> None:
        inflight = self._inflight
        while True:
            now = trio.current_time()
            if inflight:
                deadline = inflight[0][2]
                if now >= deadline:
                    self.timeouts += 1
                    raise _ConnectionFailed(NodeError.STORAGE_TIMEOUT, "request timed out")
                await trio.sleep_until(deadline)
            else:
                await trio.sleep(self.timeout)

    def _fail_inflight(self, error: NodeError) -> None:
        reply = redis_error(error)
        inflight, self._inflight = self._inflight, deque()
        self._outbox = []
        for slot, count, _ in inflight:
            slot.set(reply * count)


def _connector(spec: DatastoreSpec, store: EmbeddedStore | None) -> Connector:
    if spec.kind == "embedded":
        assert store is not None

        async def connect_embedded() -> trio.abc.Stream:
            await trio.lowlevel.checkpoint()
            return store.connect()

        return connect_embedded
    address = spec.address
    if isinstance(address, UnixPath):
        return functools.partial(connect_unix, address.path)
    assert isinstance(address, HostPort)
    return functools.partial(connect_tcp, address.host, address.port)


class DatastorePool:
    """``datastore_connections`` connections per RESP version to the one datastore."""

    def __init__(self, config: NodeConfig) -> None:
        spec = config.datastore
        self.spec = spec
        self.store = EmbeddedStore() if spec.kind == "embedded" else None
        connect = _connector(spec, self.store)
        self.groups: dict[int, list[DatastoreConnection]] = {
            protocol: [
                DatastoreConnection(
                    name=f"{spec.stats_name}#{protocol}.{i}",
                    connect=connect,
                    protocol=protocol,
                    timeout=config.timeout / 1000,
                    max_backoff=max(config.server_retry_timeout / 1000, INITIAL_BACKOFF),
                    max_bulk_len=config.max_bulk_len,
                    preconnect=config.preconnect,
                )
                for i in range(config.datastore_connections)
            ]
            for protocol in (2, 3)
        }

    @property
    def connections(self) -> list[DatastoreConnection]:
        return [c for group in self.groups.values() for c in group]

    def set_timeout(self, seconds: float) -> None:
        for conn in self.connections:
            conn.timeout = seconds

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every connection (first connect attempts done), then serve forever."""
        async with trio.open_nursery() as nursery:
            for conn in self.connections:
                await nursery.start(conn.run)
            task_status.started()

    def pick(self, client_id: int, protocol: int) -> DatastoreConnection:
        """The client's home connection, or any connection that is up instead."""
        group = self.groups[protocol]
        home = group[client_id % len(group)]
        if home.state is ConnState.UP:
            return home
        for conn in group:
            if conn.state is ConnState.UP:
                return conn
        return home

    def submit(
        self, client_id: int, protocol: int, raw: bytes, count: int, batch: Batch, deadline: float
    ) -> Slot:
        """Send ``count`` requests; the slot gets their replies, or one error per request."""
        slot = batch.slot()
        if not self.pick(client_id, protocol).submit(raw, count, slot, deadline):
            slot.set(redis_error(NodeError.STORAGE_CONNECTION_REFUSE) * count)
        return slot
