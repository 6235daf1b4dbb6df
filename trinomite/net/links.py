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
* Write holds.  Waking the writer task costs a scheduler step, more than the
  ``send`` itself.  A task about to make many submissions in one burst (the
  client reactor handling a batch of readiness events, a datastore reader
  delivering a read's replies, which starts those clients' next rounds)
  enters the links' shared ``WriteHold``; submissions made meanwhile only
  mark their link, and when the burst ends each marked link sends its whole
  outbox right there with one non-blocking ``send``.  Only what the kernel
  did not take, or a link whose writer is in the middle of a send, wakes the
  writer.  Order is kept because a direct send always takes the whole
  outbox from its head and never runs while the writer is sending.
* Backoff starts at ``INITIAL_BACKOFF`` and doubles up to ``max_backoff``.
  It starts over only after a connection stayed up for ``STABLE_AFTER``: a
  peer (or a proxy in front of it) that accepts and then drops every
  connection at once is retried with growing backoff, not ten times a
  second, and its repeated losses are logged once, like failed connects.

Subclasses supply ``_read_replies``, ``_watch_deadlines`` and
``_fail_inflight`` (and optionally ``_handshake``): the datastore link matches
RESP replies in FIFO runs, the peer link matches framed replies by id.
"""

from __future__ import annotations

import abc
import enum
import logging
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType

import trio

from ..errors import NodeError
from ..protocol.replies import ReplyProtocolError
from .slots import Parker
from .sockets import LeanSocketStream

__all__ = ["INITIAL_BACKOFF", "ConnState", "Link", "LinkFailed", "WriteHold"]

log = logging.getLogger("trinomite.links")

INITIAL_BACKOFF = 0.1
#: A connection that lived this long (seconds) resets the backoff when lost.
STABLE_AFTER = 1.0

Connector = Callable[[], Awaitable[trio.abc.Stream]]


class ConnState(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


class WriteHold:
    """Defers link writes made during a burst of work to one send per link at its end.

    ``with hold:`` nests; the outermost exit flushes.  Shared by all links of
    a node and by the tasks that submit to them (see the module doc).
    """

    __slots__ = ("_depth", "_marked")

    def __init__(self) -> None:
        self._depth = 0
        self._marked: list[Link] = []

    @property
    def held(self) -> bool:
        return self._depth > 0

    def mark(self, link: Link) -> None:
        self._marked.append(link)

    def __enter__(self) -> None:
        self._depth += 1

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if not self._depth and self._marked:
            marked, self._marked = self._marked, []
            for link in marked:
                link._flush()


_TIMEOUTS = frozenset({NodeError.STORAGE_TIMEOUT, NodeError.PEER_TIMEOUT})


def _cause_of(exc: BaseException) -> str:
    """``Link.down_cause`` for a failed connect."""
    if isinstance(exc, trio.TooSlowError):
        return "timeout"
    if isinstance(exc, (ConnectionRefusedError, LinkFailed)):
        return "refused"
    return "lost"


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

    #: What requests in flight get when the other end sends something unparsable.
    @property
    def protocol_error(self) -> NodeError:
        return self.broken_error

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
        #: Submissions made while this is held are sent when it is released;
        #: a node gives all its links and their submitters one shared hold.
        self.hold = WriteHold()
        self._marked = False  # waiting in ``hold`` for its flush
        self._sending = False  # the writer task is inside send_all
        self._socket: socket.socket | None = None  # while UP over a plain socket
        self._writer = Parker()
        self._wanted = Parker()  # a request arrived while IDLE
        self._live: trio.CancelScope | None = None
        self._reset = False
        self._last_failure = ""  # why the last connect failed, to log each reason once
        #: Why the link is (or was last) down: "refused" (connect refused or
        #: handshake rejected), "timeout" (no answer) or "lost" (it broke), so
        #: requests refused meanwhile can say what happened.
        self.down_cause = "refused"
        self._last_loss = ""  # why a short-lived connection was lost, likewise
        self._up_since = 0.0

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
            hold = self.hold
            if not hold.held:
                self._writer.unpark()
            elif not self._marked:
                self._marked = True
                hold.mark(self)
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
            self._set_state(ConnState.UP)
            self.connects += 1
            self._up_since = trio.current_time()
            log.log(logging.DEBUG if self._last_loss else logging.INFO, "%s: connected", self.name)
            self._writer.unpark()  # requests queued while connecting
            if isinstance(stream, LeanSocketStream):
                self._socket = stream.socket
            try:
                error = await self._serve(stream)
            finally:
                self._socket = None
            self.down_cause = "timeout" if error in _TIMEOUTS else "lost"
            self._set_state(ConnState.DOWN)
            self.errors += 1
            self._fail_inflight(error)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            if not self._last_loss:  # the connection was stable: start over
                backoff = INITIAL_BACKOFF
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

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
            self.down_cause = _cause_of(exc)
            # Warn once per outage and reason; retries failing alike log at debug level.
            reason = str(exc) or type(exc).__name__
            again = self.state is ConnState.DOWN and reason == self._last_failure
            self._last_failure = reason
            log.log(
                logging.DEBUG if again else logging.WARNING,
                "%s: connect failed: %s",
                self.name,
                reason,
            )
            return None
        self._last_failure = ""
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
                failure.append(LinkFailed(self.protocol_error, f"protocol error: {exc}"))
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
        text = str(reason)
        stable = trio.current_time() - self._up_since >= STABLE_AFTER
        level = logging.DEBUG if not stable and text == self._last_loss else logging.WARNING
        self._last_loss = "" if stable else text
        log.log(level, "%s: connection lost: %s", self.name, text)
        return reason.error

    def reset(self) -> None:
        """Drop the live connection now (requests in flight fail); it reconnects."""
        if self._live is not None:
            self._reset = True
            self._live.cancel()

    @property
    def throttled_link(self) -> bool:
        """Whether only the writer task may send (it paces the sends)."""
        return False

    def _flush(self) -> None:
        """Send the outbox now, from the task releasing the hold; else wake the writer."""
        self._marked = False
        outbox = self._outbox
        sock = self._socket
        if not outbox:
            return
        if sock is None or self._sending or self.throttled_link or self.state is not ConnState.UP:
            self._writer.unpark()
            return
        data = outbox[0] if len(outbox) == 1 else b"".join(outbox)
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # full, or broken: the writer's send_all finds out which
        if sent == len(data):
            self._outbox = []
            return
        self._outbox = [data[sent:]]
        self._writer.unpark()

    async def _write_requests(self, stream: trio.abc.Stream) -> None:
        while True:
            if not self._outbox:
                await self._writer.park()
                continue
            data = b"".join(self._outbox)
            self._outbox = []
            self._sending = True
            try:
                await stream.send_all(data)
            finally:
                self._sending = False

    @abc.abstractmethod
    async def _read_replies(self, stream: trio.abc.Stream) -> None:
        """Match incoming replies to requests in flight, forever."""

    @abc.abstractmethod
    async def _watch_deadlines(self, stream: trio.abc.Stream) -> None:
        """Enforce request deadlines, forever."""

    @abc.abstractmethod
    def _fail_inflight(self, error: NodeError) -> None:
        """Answer every request in flight (and queued) with ``error``."""
