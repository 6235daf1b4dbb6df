"""Client connections: one task serves every client of a node, over one epoll set.

Theory of operation
-------------------
A Trio task per client costs two scheduler steps per request round (woken
by the client's data, then again by the replies), and those steps, more
than parsing, bounded a node's throughput.  So clients are not tasks.
``ClientReactor.run`` is one task that owns a private, edge-triggered epoll
set holding every client socket; Trio watches that set's one descriptor::

    wait_readable(epoll fd) -> epoll.poll(0) -> for each ready client: pump()

Each ``ClientConnection`` is a small synchronous state machine.  ``pump``
repeats, while it can make progress:

    replies arrived?          -> record stats, write them (non-blocking send)
    round in flight, or unsent output?  -> stop: nothing to do until it ends
    requests parsed, not started?       -> start the next slice of them
    QUIT / protocol error / EOF / drain -> write what is owed, then close
    readable?                 -> recv once, parse

A round's replies reach the connection through ``set`` (it is the
dispatcher's ``ReplySink``), usually called by the datastore reader task,
which thereby writes the replies and reads and starts the client's next
round without any task switch.  Only when the socket buffer is full does
the connection ask for EPOLLOUT and finish the write when it is writable.

Bounds and backpressure: one round (at most ``max_client_pipeline``
requests) per client is in flight, and the socket is not read again until
that round's replies are written, which is the backpressure a slow reader
needs.  Edge-triggered readiness is tracked explicitly: a connection stays
"readable" until a ``recv`` comes back short (the kernel buffer was empty
then; data arriving later raises a new edge).

The parser and the dispatcher are the datastore's: RESP's (``Dispatcher``)
or, on a memcached node, memcached's ASCII protocol (``client.memcache``);
the reactor only feeds one, hands its requests to the other and writes
what comes back.

Failure handling: a framing error is answered with Redis's
``-ERR Protocol error: ...`` line, after the replies owed before it, then
the connection closes.  An exception while handling one connection is
logged and counted and closes only that connection; nothing propagates into
the task that delivered a reply.  While the node drains, idle clients are
closed at once and a client with a round in flight gets its replies first.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import select
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import trio

from ..net.links import WriteHold
from ..net.sockets import LeanSocketStream, accept_forever
from ..protocol.requests import Limits, RequestParser
from ..stats.requests import RequestStats
from .bounds import ClientBounds, offenders
from .dispatch import Dispatcher
from .local import Session
from .memcache import McDispatcher

__all__ = ["ClientConnection", "ClientCounters", "ClientReactor", "serve_clients"]

log = logging.getLogger("trinomite.client")

RECEIVE_SIZE = 64 * 1024
#: Readiness events taken from the epoll set per reactor wake-up (fairness).
MAX_EVENTS = 256
_MAX_CLIENTS_REPLY = b"-ERR max number of clients reached\r\n"
#: Bounds of the lingering close after a protocol error (``_linger``).
LINGER_TIME = 2.0
LINGER_BYTES = 4 * 1024 * 1024

if hasattr(select, "epoll"):
    _READ_EVENTS = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET
    _WRITE_EVENTS = _READ_EVENTS | select.EPOLLOUT


class ClientParser(Protocol):
    """What the reactor needs of a request parser (RESP's, or memcached's)."""

    @property
    def blob(self) -> bytes | None: ...  # the exact bytes ``parse`` consumed, if known
    @property
    def error(self) -> Any: ...  # with ``.reply``: sent before the connection closes
    @property
    def buffered(self) -> int: ...
    def feed(self, data: bytes) -> None: ...
    def parse(self) -> list[Any]: ...


@attrs.define
class ClientCounters:
    """Dynomite's client stats (``client_*`` in /info)."""

    client_connections: int = 0
    client_eof: int = 0
    client_err: int = 0
    # trinomite's bounds (``bounds``): why connections were closed by the node
    client_read_timeouts: int = 0
    client_idle_timeouts: int = 0
    client_output_limit_closes: int = 0
    client_memory_evictions: int = 0


class ClientConnection:
    """One accepted client: its parser, its round in flight and its unsent output."""

    __slots__ = (
        "backlog",
        "closed",
        "discarded",
        "eof",
        "error_sent",
        "fd",
        "held",
        "in_flight",
        "indices",
        "last_active",
        "lingering",
        "parser",
        "partial_since",
        "pumping",
        "queued",
        "queued_blob",
        "reactor",
        "readable",
        "reply",
        "session",
        "sock",
        "started",
    )

    def __init__(self, sock: socket.socket, session: Session, reactor: ClientReactor) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.reactor = reactor
        self.parser = reactor.new_parser(session.authenticated)
        self.readable = True  # data may have arrived before the socket was registered
        self.eof = False
        self.closed = False
        self.error_sent = False
        self.in_flight = False
        self.pumping = False
        self.reply: bytes | None = None
        self.backlog: bytes | memoryview = b""
        self.queued: list[Any] = []
        self.queued_blob: bytes | None = None
        self.indices: list[int] = []
        self.started = 0.0
        #: Bytes this connection holds (unparsed input + unsent output), as
        #: counted in ``reactor.held``.
        self.held = 0
        self.last_active = trio.current_time()
        #: When the first byte of a request not yet complete arrived (0: none).
        self.partial_since = 0.0
        #: After a protocol error: when lingering must end (0: not lingering).
        self.lingering = 0.0
        self.discarded = 0

    def set(self, reply: bytes) -> None:
        """The replies of the round in flight (``ReplySink``)."""
        self.reply = reply
        if not self.pumping:
            self.pump()

    def pump(self) -> None:
        """Make every step of progress possible now; never raises."""
        if self.closed:
            self.reply = None
            return
        self.pumping = True
        try:
            self._pump()
            self._account()
        except Exception:
            self.reactor.counters.client_err += 1
            log.exception("client %s: handler failed", self.session.address)
            self.close()
        finally:
            self.pumping = False

    def _pump(self) -> None:
        reactor = self.reactor
        while not self.closed:
            reply = self.reply
            if reply is not None:
                self.reply = None
                self.in_flight = False
                elapsed = int((trio.current_time() - self.started) * 1e6)
                reactor.stats.record(self.indices, elapsed)
                self._write(reply)
                continue
            if self.backlog and not self._flush():
                return
            if self.in_flight:
                return
            session = self.session
            if self.queued and not session.closing:
                self._start_round()
                continue
            error = self.parser.error
            if error is not None and not self.error_sent and not session.closing:
                self.error_sent = True
                reactor.counters.client_err += 1
                self._write(error.reply)
                continue
            if session.closing or self.error_sent or self.eof or reactor.draining:
                if self.error_sent and not (self.eof or session.closing or reactor.draining):
                    self._linger()
                else:
                    self.close()
                return
            if not self.readable:
                return
            self._read()

    def _linger(self) -> None:
        """After a protocol error: stop sending, discard input, close at EOF or a bound.

        Closing with unread input would reset the connection, and the reset
        can destroy the error reply before the client reads it.  So the
        write side is shut down and what the client still sends (the rest of
        an oversized bulk, say) is read and dropped, up to ``LINGER_BYTES``
        or ``LINGER_TIME`` (enforced by the sweep).
        """
        if not self.lingering:
            self.lingering = trio.current_time() + LINGER_TIME
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.close()
                return
        while (data := self._recv()) is not None:
            self.discarded += len(data)
            if not data or self.discarded > LINGER_BYTES:
                self.close()
                return

    def _recv(self) -> bytes | None:
        """One non-blocking read: None when nothing is there (no longer readable);
        b"" at EOF or a reset (the same to us)."""
        try:
            return self.sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            self.readable = False
            return None
        except OSError:
            return b""

    def _read(self) -> None:
        data = self._recv()
        if data is None:
            return
        if not data:
            self.reactor.counters.client_eof += 1
            self.eof = True
            return
        if len(data) < RECEIVE_SIZE:
            self.readable = False  # drained: the next data raises a new edge
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        self.last_active = now = trio.current_time()
        if not self.session.authenticated and not self._before_auth():
            self._track_partial(now)
            return
        requests = parser.parse()
        if requests:
            self.queued = requests
            self.queued_blob = parser.blob
        self._track_partial(now)

    def _track_partial(self, now: float) -> None:
        if not self.parser.buffered:
            self.partial_since = 0.0
        elif not self.partial_since:
            self.partial_since = now

    def _account(self) -> None:
        """Report what this connection holds; enforce the output cap and the budget."""
        backlog = len(self.backlog)
        held = 0 if self.closed else self.parser.buffered + backlog
        reactor = self.reactor
        reactor.held += held - self.held
        self.held = held
        bounds = reactor.bounds
        if bounds.output_limit and backlog > bounds.output_limit:
            reactor.counters.client_output_limit_closes += 1
            log.warning(
                "client %s: disconnected: %d bytes of replies unread, over "
                "client_output_buffer_limit (%d)",
                self.session.address,
                backlog,
                bounds.output_limit,
            )
            self.close()
        elif bounds.memory_budget and reactor.held > bounds.memory_budget:
            reactor.shed()

    def _before_auth(self) -> bool:
        """Answer requests one at a time until the client authenticates.

        All of them are answered at once by the node (``Dispatcher.before_auth``),
        so nothing is in flight.  True once authenticated: what was sent after
        the AUTH is then parsed with the normal limits.
        """
        session = self.session
        parser = self.parser
        assert isinstance(parser, RequestParser)  # memcached clients need no AUTH
        reactor = self.reactor
        replies = []
        while not session.authenticated and not session.closing:
            args = parser.next_request()
            if args is None:
                break
            replies.append(reactor.dispatcher.before_auth(session, args))
        if replies:
            self._write(b"".join(replies))
        if not session.authenticated or session.closing:
            return False
        parser.set_limits(reactor.limits)
        return True

    def _start_round(self) -> None:
        reactor = self.reactor
        requests = self.queued
        limit = reactor.max_pipeline
        if len(requests) <= limit:
            blob, self.queued = self.queued_blob, []
        else:
            # Bounded in-flight work: a long pipeline is executed in slices.
            blob, requests, self.queued = None, requests[:limit], requests[limit:]
            self.queued_blob = None  # it encodes the whole pipeline, not a slice
        self.in_flight = True
        self.started = trio.current_time()
        # May call self.set at once; pump's loop then picks the reply up.
        self.indices = reactor.dispatcher.start(self.session, requests, blob, self)

    def _write(self, data: bytes) -> None:
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        if sent < len(data):
            self.backlog = memoryview(data)[sent:]
            self.reactor.want_writable(self, True)

    def _flush(self) -> bool:
        """Send more of the backlog; True once it is all sent."""
        try:
            sent = self.sock.send(self.backlog)
        except BlockingIOError:
            return False
        except OSError:
            self._lost()
            return False
        self.backlog = self.backlog[sent:]
        if self.backlog:
            return False
        self.backlog = b""
        self.reactor.want_writable(self, False)
        return True

    def _lost(self) -> None:
        self.reactor.counters.client_eof += 1
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reply = None
        self.queued = []
        self.backlog = b""
        reactor = self.reactor
        reactor.held -= self.held
        self.held = 0
        reactor.remove(self)
        self.sock.close()


class ClientReactor:
    """Every client connection of a node, served by one task over one epoll set."""

    def __init__(
        self,
        dispatcher: Dispatcher | McDispatcher,
        stats: RequestStats,
        limits: Limits,
        max_pipeline: int,
        counters: ClientCounters,
        make_session: Callable[[socket.socket, int], Session],
        bounds: ClientBounds | None = None,
        make_parser: Callable[[], ClientParser] | None = None,
    ) -> None:
        """``make_parser``: a new client's parser, for clients that never AUTH
        (memcached's); by default a RESP parser with ``limits``."""
        if not hasattr(select, "epoll"):
            raise RuntimeError("trinomite's client server needs Linux (epoll)")
        self.dispatcher = dispatcher
        self.stats = stats
        self.limits = limits
        self.preauth_limits = attrs.evolve(limits, unauthenticated=True)
        self.bounds = bounds or ClientBounds()
        #: Bytes held by every connection together (``bounds``).
        self.held = 0
        self.max_pipeline = max_pipeline
        self.counters = counters
        self.make_session = make_session
        self.connections: dict[int, ClientConnection] = {}
        #: Set by ``stop_reading``: read no more requests, close clients once idle.
        self.draining = False
        #: Held while handling a batch of events (see ``links.WriteHold``).
        self.hold = WriteHold()
        #: Client TLS handshakes in progress (``client.tls.admit``).
        self.handshakes = 0
        self._make_parser = make_parser
        self._epoll = select.epoll()
        self._ids = itertools.count(1)
        self._empty = trio.Event()
        self._empty.set()

    def new_parser(self, authenticated: bool) -> ClientParser:
        if self._make_parser is not None:
            return self._make_parser()
        return RequestParser(self.limits if authenticated else self.preauth_limits)

    def add(
        self,
        sock: socket.socket,
        make: Callable[[Session], ClientConnection] | None = None,
    ) -> None:
        """Serve a newly accepted (non-blocking) socket; ``make`` builds a special connection."""
        session = self.make_session(sock, next(self._ids))
        connection = ClientConnection(sock, session, self) if make is None else make(session)
        if not self.connections:
            self._empty = trio.Event()
        self.connections[connection.fd] = connection
        self.counters.client_connections += 1
        self._epoll.register(connection.fd, _READ_EVENTS)
        connection.pump()

    def remove(self, connection: ClientConnection) -> None:
        if self.connections.pop(connection.fd, None) is None:
            return
        self.counters.client_connections -= 1
        with contextlib.suppress(OSError, ValueError):
            self._epoll.unregister(connection.fd)
        if not self.connections:
            self._empty.set()

    def want_writable(self, connection: ClientConnection, writable: bool) -> None:
        self._epoll.modify(connection.fd, _WRITE_EVENTS if writable else _READ_EVENTS)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve readiness events until cancelled; every client is closed on the way out."""
        epoll = self._epoll
        connections = self.connections
        try:
            task_status.started()
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                with self.hold:  # every round these events start goes out together
                    for fd, events in epoll.poll(0, MAX_EVENTS):
                        connection = connections.get(fd)
                        if connection is not None:
                            connection.readable = connection.readable or events != select.EPOLLOUT
                            connection.pump()
        finally:
            for connection in list(connections.values()):
                connection.close()
            trio.lowlevel.notify_closing(epoll.fileno())
            epoll.close()

    def shed(self) -> None:
        """Over the memory budget: disconnect the biggest holders until under it."""
        excess = self.held - self.bounds.memory_budget
        for connection in offenders(self.connections.values(), excess):
            self.counters.client_memory_evictions += 1
            log.warning(
                "client %s: disconnected: it held %d bytes while all clients held %d, "
                "over client_memory_budget (%d)",
                connection.session.address,
                connection.held,
                self.held,
                self.bounds.memory_budget,
            )
            connection.close()

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close clients past their read or idle timeout, checking every sweep interval."""
        task_status.started()
        interval = self.bounds.sweep_interval
        while True:
            await trio.sleep(interval)
            self.sweep(trio.current_time())

    def sweep(self, now: float) -> None:
        bounds = self.bounds
        read, idle = 0, 0
        for connection in list(self.connections.values()):
            if connection.lingering:
                if now > connection.lingering:
                    connection.close()
                continue
            if connection.in_flight or connection.backlog or connection.closed:
                continue  # the node owes it replies, or it is reading them
            since = connection.partial_since
            if bounds.read_timeout and since and now - since > bounds.read_timeout:
                read += 1
                connection.close()
            elif (
                bounds.idle_timeout
                and not since
                and not connection.queued
                and now - connection.last_active > bounds.idle_timeout
            ):
                idle += 1
                connection.close()
        self.counters.client_read_timeouts += read
        self.counters.client_idle_timeouts += idle
        if read:
            log.info(
                "closed %d client(s) that did not complete a request within %gs "
                "(client_read_timeout)",
                read,
                bounds.read_timeout,
            )
        if idle:
            log.info(
                "closed %d client(s) idle for %gs (client_idle_timeout)", idle, bounds.idle_timeout
            )

    def stop_reading(self) -> None:
        """Drain: read no more requests; idle clients are closed now, busy ones once answered."""
        self.draining = True
        for connection in list(self.connections.values()):
            connection.pump()

    async def wait_empty(self) -> None:
        await self._empty.wait()


async def serve_clients(
    listeners: list[socket.socket],
    reactor: ClientReactor,
    max_clients: int,
    *,
    secure: Callable[[LeanSocketStream], Awaitable[None]] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients on every listener until cancelled and hand them to ``reactor``.

    A client over ``max_clients`` is told so and closed.  With ``secure``
    (client TLS), each new client goes to ``secure(stream)`` in a task of its
    own instead, which hands it to the reactor after the handshake.
    """

    async with trio.open_nursery() as nursery:

        def handle(stream: LeanSocketStream) -> None:
            if max_clients and len(reactor.connections) + reactor.handshakes >= max_clients:
                nursery.start_soon(_refuse, stream)
                return
            if secure is not None:
                nursery.start_soon(secure, stream)
                return
            reactor.add(stream.socket)

        for listener in listeners:
            nursery.start_soon(accept_forever, listener, handle)
        task_status.started()


async def _refuse(stream: LeanSocketStream) -> None:
    with (
        trio.move_on_after(1),
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
    ):
        await stream.send_all(_MAX_CLIENTS_REPLY)
    await trio.aclose_forcefully(stream)
