"""A long-lived, pipelined, self-reconnecting connection: the base of every link.

Theory of operation
-------------------
Both kinds of outgoing connection a node keeps, to its datastore and to its
peers, have the same life::

    IDLE --(first request, preconnect=false)--> CONNECTING --ok--> UP
    UP --(EOF, error, dead peer)--> DOWN --backoff--> CONNECTING
    CONNECTING --fail--> DOWN

and the same shape while UP: requests are appended to an *outbox* by any
task (``_enqueue``, never awaits), one writer task sends the whole outbox
with one ``send_all`` per scheduling round, a reader task matches replies to
the requests in flight, and a watchdog enforces deadlines.  The three run in
one nursery owned by ``run``; the first failure cancels the other two and
every request still in flight gets an error reply.

* While DOWN, ``_enqueue`` refuses at once so callers fail fast with a clear
  error instead of hanging.  While IDLE or CONNECTING, requests queue.
* Backoff starts at ``INITIAL_BACKOFF`` and doubles up to ``max_backoff``.

Subclasses supply ``_read_replies``, ``_watch_deadlines`` and
``_fail_inflight`` (and optionally ``_handshake``): the datastore link matches
RESP replies in FIFO runs, the peer link matches framed replies by id.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Awaitable, Callable

import trio

from ..errors import NodeError
from ..protocol.replies import ReplyProtocolError
from .slots import Parker

__all__ = ["INITIAL_BACKOFF", "ConnState", "Link", "LinkFailed"]

log = logging.getLogger("trinomite.links")

INITIAL_BACKOFF = 0.1

Connector = Callable[[], Awaitable[trio.abc.Stream]]


class ConnState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


class LinkFailed(Exception):
    """The live connection must be dropped; ``error`` goes to requests in flight."""

    def __init__(self, error: NodeError, reason: str) -> None:
        super().__init__(reason)
        self.error = error


class Link(abc.ABC):
    """Connect, serve and reconnect one pipelined connection, forever."""

    #: The error in-flight requests get when the connection breaks.
    broken_error = NodeError.STORAGE_CONNECTION_REFUSE
    #: Errors that are expected when a connection breaks (not bugs).
    failure_types: tuple[type[Exception], ...] = (
        trio.BrokenResourceError,
        trio.ClosedResourceError,
        OSError,
    )

    @property
    def connect_failures(self) -> tuple[type[Exception], ...]:
        return (trio.TooSlowError, LinkFailed, *self.failure_types)

    def __init__(
        self,
        *,
        name: str,
        connect: Connector,
        timeout: float,
        max_backoff: float,
        preconnect: bool,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.max_backoff = max(max_backoff, INITIAL_BACKOFF)
        #: Read freely; changed only through ``_set_state`` (which notifies).
        self.state = ConnState.CONNECTING if preconnect else ConnState.IDLE
        self.connects = 0
        self.timeouts = 0
        self.errors = 0
        self._connect = connect
        #: Called after every change of ``state`` (pools use it to publish events).
        self.on_state_change: Callable[[Link], None] | None = None
        self._outbox: list[bytes] = []
        self._writer = Parker()
        self._wanted = Parker()  # a request arrived while IDLE
        self._live: trio.CancelScope | None = None
        self._reset = False

    def _set_state(self, value: ConnState) -> None:
        changed = value is not self.state
        self.state = value
        if changed and self.on_state_change is not None:
            self.on_state_change(self)

    def _enqueue(self, data: bytes) -> bool:
        """Queue bytes to send; False while the link is down."""
        state = self.state
        if state is ConnState.DOWN:
            return False
        self._outbox.append(data)
        if state is ConnState.UP:
            self._writer.unpark()
        elif state is ConnState.IDLE:
            self._wanted.unpark()
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own this connection forever; ``started()`` after the first connect attempt."""
        started = False
        backoff = INITIAL_BACKOFF
        while True:
            if self.state is ConnState.IDLE:
                if not started:
                    task_status.started()
                    started = True
                await self._wanted.park()
            if self.state is not ConnState.DOWN:
                self._set_state(ConnState.CONNECTING)
            stream = await self._open()
            if not started:
                task_status.started()
                started = True
            if stream is None:
                self._set_state(ConnState.DOWN)
                self._fail_inflight(self.broken_error)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            backoff = INITIAL_BACKOFF
            self._set_state(ConnState.UP)
            self.connects += 1
            log.info("%s: connected", self.name)
            self._writer.unpark()  # requests queued while connecting
            error = await self._serve(stream)
            self._set_state(ConnState.DOWN)
            self.errors += 1
            self._fail_inflight(error)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            await trio.sleep(backoff)

    async def _open(self) -> trio.abc.Stream | None:
        try:
            with trio.fail_after(self.timeout):
                stream = await self._connect()
                try:
                    await self._handshake(stream)
                except BaseException:
                    await trio.aclose_forcefully(stream)
                    raise
        except self.connect_failures as exc:
            # Warn once per outage; the retries that follow log at debug level.
            level = logging.DEBUG if self.state is ConnState.DOWN else logging.WARNING
            log.log(level, "%s: connect failed: %s", self.name, exc or type(exc).__name__)
            return None
        return stream

    async def _handshake(self, stream: trio.abc.Stream) -> None:
        """Anything to exchange before the link carries requests."""
        await trio.lowlevel.checkpoint()

    async def _serve(self, stream: trio.abc.Stream) -> NodeError:
        """Run reader, writer and watchdog until the connection fails; say why."""
        failure: list[LinkFailed] = []

        async def guard(task: Callable[[trio.abc.Stream], Awaitable[None]]) -> None:
            try:
                await task(stream)
            except LinkFailed as exc:
                failure.append(exc)
            except self.failure_types as exc:
                failure.append(LinkFailed(self.broken_error, str(exc) or type(exc).__name__))
            except ReplyProtocolError as exc:
                failure.append(LinkFailed(self.broken_error, f"protocol error: {exc}"))
            nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            self._live = nursery.cancel_scope
            nursery.start_soon(guard, self._read_replies)
            nursery.start_soon(guard, self._write_requests)
            nursery.start_soon(guard, self._watch_deadlines)
        self._live = None
        if self._reset and not failure:
            failure.append(LinkFailed(self.broken_error, "reset by the operator"))
        self._reset = False
        reason = failure[0] if failure else LinkFailed(self.broken_error, "closed")
        log.warning("%s: connection lost: %s", self.name, reason)
        return reason.error

    def reset(self) -> None:
        """Drop the live connection now (requests in flight fail); it reconnects."""
        if self._live is not None:
            self._reset = True
            self._live.cancel()

    async def _write_requests(self, stream: trio.abc.Stream) -> None:
        while True:
            if not self._outbox:
                await self._writer.park()
                continue
            data = b"".join(self._outbox)
            self._outbox = []
            await stream.send_all(data)

    @abc.abstractmethod
    async def _read_replies(self, stream: trio.abc.Stream) -> None:
        """Match incoming replies to requests in flight, forever."""

    @abc.abstractmethod
    async def _watch_deadlines(self, stream: trio.abc.Stream) -> None:
        """Enforce request deadlines, forever."""

    @abc.abstractmethod
    def _fail_inflight(self, error: NodeError) -> None:
        """Answer every request in flight (and queued) with ``error``."""
