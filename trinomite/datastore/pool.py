"""The datastore pool: a few long-lived, pipelined connections shared by all clients.

Theory of operation
-------------------
Dynomite pins each client to one datastore connection and sends requests
one message at a time through an mbuf chain.  Trinomite multiplexes instead:
every client's requests are appended to a connection's *outbox* and its
*in-flight FIFO*; the whole outbox goes out in one send per burst of
submissions (see ``links.WriteHold``; the writer task sends what the socket
did not take); a reader task frames replies (without decoding them) and
fills the FIFO's slots in order::

    clients --submit--> outbox ---one send per burst-----------------> datastore
       ^                in-flight FIFO                                   |
       +---- slot.set <-- reader: ReplyFramer, FIFO pop per reply <------+

The connection's life (connect, reader/writer/watchdog, reconnect with
backoff) is ``links.Link``'s; this module adds FIFO matching:

* Each FIFO entry is a *run*: ``count`` consecutive requests of one client
  batch whose replies go, concatenated, to one sink.
* While the datastore is down, ``submit`` refuses at once, so clients get
  an error instead of hanging, one that says why the link is down:
  ``Datastore refused connection`` (connect refused, or the handshake
  rejected: Dynomite's words), ``Datastore not answering, reconnecting``
  (it timed out) or ``Datastore connection lost, reconnecting``.
* The watchdog times requests out one by one: a request past its deadline
  gets ``-ERR Storage: Connection timed out`` and keeps its FIFO place with
  a sink that drops the late reply, so no other request fails with it.
  Only when the oldest request is still unanswered a whole ``timeout``
  after that is the datastore hung: then the connection is replaced, and
  the requests in flight on it fail.
* Reconnect backoff starts at 100 ms and doubles up to
  ``server_retry_timeout`` (Dynomite starts at 1 s).

A RESP3 client's requests must be answered in RESP3, so the pool keeps two
groups of ``datastore_connections`` connections: RESP2 ones and RESP3 ones
(which send ``HELLO 3`` after connecting).

Delimited runs.  Framing replies one by one in Python costs about a
microsecond each, and an aggregate costs that per element.  So, in front of
a real Redis, every run is followed on the wire by ``ECHO <token>``, where
the token is 128 fresh random bits per run: the run's replies are then
everything before the token's echo, found with one C-level search
(``ReplyFramer.take_until``) whatever their number and size.  A client
cannot forge the echo: the token is unknown until the run is sent, and one
that leaks afterwards (a slow log read from a script) is never used again.
ECHO works while Redis loads data or serves stale data.  The
connect handshake checks the echo, so a datastore that refuses ECHO (an ACL,
a password) fails the connection with its own error message.  The
embedded store, which runs in this process, gets no delimiters: for it an
extra command costs more than framing.  Redis counts one ECHO per run in
``INFO commandstats``.

Runs of several requesters.  ``send_run`` sends requests that have
different sinks (the legs of a cluster client's pipelined run, a peer
connection's frames) as one run: one send, one delimiter, and ``RunSplit``
hands each sink its own replies, split by count.  Replies that do not
split into exactly the expected number give every sink an error rather
than a neighbour's reply.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections import deque
from typing import Protocol

import trio

from ..config.model import DatastoreSpec, HostPort, NodeConfig, UnixPath
from ..errors import NodeError, redis_error
from ..net.links import Connector, ConnState, Link, LinkFailed
from ..net.slots import PartsSink, ReplySink
from ..net.sockets import connect_tcp, connect_unix
from ..protocol.replies import (
    ReplyFramer,
    ReplyProtocolError,
    is_error,
    split_counts,
    split_replies,
)
from ..protocol.requests import encode_command
from ..stats.histogram import Histogram
from .embedded import EmbeddedStore

__all__ = [
    "DatastoreConnection",
    "DatastorePool",
    "ReplySink",
    "RunFramer",
    "RunItem",
    "RunSplit",
]

log = logging.getLogger("trinomite.datastore")

RECEIVE_SIZE = 256 * 1024
_TIMED_OUT = redis_error(NodeError.STORAGE_TIMEOUT)
_HELLO3 = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"
#: A run delimiter: ``ECHO`` with a 32-hex-digit token, and its bulk reply.
_ECHO_HEADER = b"*2\r\n$4\r\nECHO\r\n$32\r\n"
_TOKEN_HEADER = b"$32\r\n"
_UNSPLIT = redis_error(NodeError.STORAGE_PROTOCOL)

#: One requester's part of a shared run: its requests, their number, its sink.
RunItem = tuple[bytes, int, ReplySink]


class RunSplit:
    """Hands each requester of a shared run its own replies (see the module doc)."""

    __slots__ = ("items", "total")

    def __init__(self, items: list[RunItem], total: int) -> None:
        self.items = items
        self.total = total

    def set(self, replies: bytes) -> None:
        items = self.items
        if not any(isinstance(item[2], PartsSink) for item in items):
            joined = split_counts(replies, [count for _, count, _ in items])
            for index, (_, count, sink) in enumerate(items):
                sink.set(_UNSPLIT * count if joined is None else joined[index])
            return
        parts = split_replies(replies, self.total)
        at = 0
        for _, count, sink in items:
            if parts is None:
                sink.set(_UNSPLIT * count)
            elif count == 1:
                sink.set(parts[at])
            elif isinstance(sink, PartsSink):
                sink.set_parts(parts[at : at + count])
            else:
                sink.set(b"".join(parts[at : at + count]))
            at += count


class RunFramer(Protocol):
    """What the reader needs of a reply framer (RESP's, or memcached's runs)."""

    @property
    def buffered(self) -> int: ...
    def feed(self, data: bytes | bytearray) -> None: ...
    def take(self, count: int) -> bytes | None: ...
    def take_until(self, delimiter: bytes) -> bytes | None: ...


class _Expired:
    """The sink of a timed-out run: its client has its error; the late reply is dropped."""

    __slots__ = ("hung_at",)

    def __init__(self, hung_at: float) -> None:
        #: If this run is still the oldest unanswered then, the datastore is hung.
        self.hung_at = hung_at

    def set(self, reply: bytes) -> None:
        pass


#: Why a down connection refuses requests (``Link.down_cause``) -> the client's error.
_DOWN_REPLIES = {
    "refused": redis_error(NodeError.STORAGE_CONNECTION_REFUSE),
    "timeout": redis_error(NodeError.STORAGE_NOT_ANSWERING),
    "lost": redis_error(NodeError.STORAGE_RECONNECTING),
}


class DatastoreConnection(Link):
    """One pipelined connection to the datastore: replies matched in FIFO runs."""

    broken_error = NodeError.STORAGE_CONNECTION_REFUSE
    #: Most bytes a read may leave unframed before the connection is out of
    #: step (0: no bound beyond the framer's own).
    max_buffered = 0

    @property
    def protocol_error(self) -> NodeError:
        return NodeError.STORAGE_PROTOCOL

    def _framer(self) -> RunFramer:
        """A new connection's reply framer."""
        return ReplyFramer(self._max_bulk_len)

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
        delimited: bool = True,
        credentials: tuple[bytes, ...] = (),
    ) -> None:
        super().__init__(
            name=name,
            connect=connect,
            timeout=timeout,
            max_backoff=max_backoff,
            preconnect=preconnect,
        )
        self.protocol = protocol
        self._max_bulk_len = max_bulk_len
        #: Whether each run is followed by ``ECHO <token>`` (see the module doc).
        self.delimited = delimited
        #: ``AUTH`` arguments sent first on every connection (the datastore's
        #: own credentials, never a client's); empty for none.
        self.credentials = credentials
        self._entropy = b""  # random bytes, drawn 16 at a time for tokens
        self._entropy_at = 0
        # (sink, number of replies it takes, deadline, delimiter reply or b""),
        # in send order.
        self._inflight: deque[tuple[ReplySink, int, float, bytes]] = deque()
        #: Round-trip time to the datastore, microseconds: per read, the oldest
        #: request it answered, counted once per reply in it.
        self.latency = Histogram()
        self.requests = 0
        self.request_bytes = 0
        self.responses = 0
        self.response_bytes = 0
        self.dropped_requests = 0
        self.timedout_requests = 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def submit(self, raw: bytes, count: int, sink: ReplySink, deadline: float) -> bool:
        """Queue ``count`` requests encoded in ``raw``; ``sink`` gets their replies.

        Returns False (and queues nothing) while the datastore is down.
        """
        if not self._enqueue(raw):
            self.dropped_requests += count
            return False
        delimiter = b""
        if self.delimited:
            request, delimiter = self._new_delimiter()
            self._outbox.append(request)
        self._inflight.append((sink, count, deadline, delimiter))
        self.requests += count
        self.request_bytes += len(raw)
        return True

    def _new_delimiter(self) -> tuple[bytes, bytes]:
        """A fresh ``ECHO <token>`` request and the exact reply it will get."""
        at = self._entropy_at
        if at + 16 > len(self._entropy):
            self._entropy, at = secrets.token_bytes(4096), 0
        self._entropy_at = at + 16
        token = self._entropy[at : at + 16].hex().encode()
        return _ECHO_HEADER + token + b"\r\n", _TOKEN_HEADER + token + b"\r\n"

    async def _handshake(self, stream: trio.abc.Stream) -> None:
        expected: list[bytes | None] = []  # None: any reply that is not an error
        request = b""
        if self.credentials:
            request += encode_command([b"AUTH", *self.credentials])
            expected.append(b"+OK\r\n")
        if self.protocol == 3:
            request += _HELLO3
            expected.append(None)
        if self.delimited:
            echo, echoed = self._new_delimiter()
            request += echo
            expected.append(echoed)
        if not request:
            await trio.lowlevel.checkpoint()
            return
        await stream.send_all(request)
        framer = ReplyFramer(self._max_bulk_len)
        for want in expected:
            while (reply := framer.take(1)) is None:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    raise LinkFailed(self.broken_error, "closed during the handshake")
                framer.feed(data)
            if is_error(reply) or (want is not None and reply != want):
                what = reply.decode(errors="replace").strip()
                raise LinkFailed(self.broken_error, f"handshake refused: {what}")

    async def _read_replies(self, stream: trio.abc.Stream) -> None:
        framer = self._framer()
        inflight = self._inflight
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise LinkFailed(self.broken_error, "datastore closed the connection")
            if not inflight:
                raise ReplyProtocolError("reply with no request in flight")
            framer.feed(data)
            oldest = inflight[0][2]
            answered = 0
            with self.hold:  # replies start clients' next rounds: send them together
                while inflight:
                    sink, count, _, delimiter = inflight[0]
                    replies = framer.take_until(delimiter) if delimiter else framer.take(count)
                    if replies is None:
                        break
                    inflight.popleft()
                    answered += count
                    sink.set(replies)
            if self.max_buffered and framer.buffered > self.max_buffered:
                raise ReplyProtocolError(f"over {self.max_buffered} bytes of replies unframed")
            if answered:
                # One measurement per read: the round trip of the oldest request
                # it answered, for every reply in it (an upper bound for the rest).
                self.responses += answered
                self.response_bytes += len(data)
                elapsed = trio.current_time() - oldest + self.timeout
                self.latency.observe(int(elapsed * 1e6), answered)

    async def _watch_deadlines(self, stream: trio.abc.Stream) -> None:
        """Time out late requests one by one; replace a connection that answers nothing.

        A request past its deadline gets ``-ERR Storage: Connection timed
        out`` and its FIFO entry stays, with a sink that drops the late
        reply, so every other request keeps its place and its connection.
        If the oldest request is still unanswered ``timeout`` after it timed
        out, the datastore is hung: the connection is replaced.
        """
        inflight = self._inflight
        while True:
            now = trio.current_time()
            wake = now + self.timeout
            for index, (sink, count, deadline, delimiter) in enumerate(inflight):
                if isinstance(sink, _Expired):
                    if index == 0:
                        if now >= sink.hung_at:
                            self.timeouts += 1
                            raise LinkFailed(
                                NodeError.STORAGE_TIMEOUT,
                                f"no reply for {2 * self.timeout:g}s: the datastore is hung",
                            )
                        wake = min(wake, sink.hung_at)
                    continue
                if deadline > now:
                    wake = min(wake, deadline)
                    break
                self.timedout_requests += count
                inflight[index] = (_Expired(deadline + self.timeout), count, deadline, delimiter)
                sink.set(_TIMED_OUT * count)
            await trio.sleep_until(wake)

    def _fail_inflight(self, error: NodeError) -> None:
        reply = _DOWN_REPLIES[self.down_cause] if error is self.broken_error else redis_error(error)
        inflight, self._inflight = self._inflight, deque()
        self._outbox = []
        for sink, count, _, _ in inflight:
            if isinstance(sink, _Expired):
                continue  # its client already has its timeout error
            if error is NodeError.STORAGE_TIMEOUT:
                self.timedout_requests += count
            sink.set(reply * count)


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


def _credentials(config: NodeConfig) -> tuple[bytes, ...]:
    """``AUTH`` arguments for the datastore: [username] password, or none."""
    if config.datastore_password is None:
        return ()
    password = config.datastore_password.encode()
    if config.datastore_username is None:
        return (password,)
    return (config.datastore_username.encode(), password)


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
                    max_backoff=config.server_retry_timeout / 1000,
                    max_bulk_len=config.max_bulk_len,
                    preconnect=config.preconnect,
                    delimited=spec.kind != "embedded",
                    credentials=_credentials(config) if spec.kind != "embedded" else (),
                )
                for i in range(config.datastore_connections)
            ]
            for protocol in (2, 3)
        }

    @property
    def up(self) -> bool:
        """Whether any connection to the datastore is up (so it can take a replay)."""
        return any(c.state is ConnState.UP for c in self.connections)

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

    def send(
        self,
        client_id: int,
        protocol: int,
        raw: bytes,
        count: int,
        sink: ReplySink,
        deadline: float,
    ) -> None:
        """Send ``count`` requests; ``sink`` gets their replies, or one error per request."""
        connection = self.pick(client_id, protocol)
        if not connection.submit(raw, count, sink, deadline):
            sink.set(_DOWN_REPLIES[connection.down_cause] * count)

    def send_run(
        self, client_id: int, protocol: int, items: list[RunItem], deadline: float
    ) -> None:
        """Send several requesters' requests as one run; each sink gets its own replies."""
        if len(items) == 1:
            raw, count, sink = items[0]
            self.send(client_id, protocol, raw, count, sink, deadline)
            return
        total = 0
        for _, count, _ in items:
            total += count
        raw = b"".join([item[0] for item in items])
        self.send(client_id, protocol, raw, total, RunSplit(items, total), deadline)
