"""The admin server's socket shell: accept, read one request head, reply, close.

Theory of operation
-------------------
``serve_admin`` binds the admin listeners and runs ``trio.serve_listeners``
with ``AdminServer.handle`` as the per-connection handler.  One connection
carries one request, as in Dynomite (which closes after every reply)::

    handle(stream)                          supervisor: Exception -> log, close
    `-- within request_timeout:
        |-- h11 reads the request head      malformed -> 400, > MAX_HEAD bytes -> 431
        |-- GET /feed + Upgrade: websocket  -> feed.serve_feed(ReplayStream)
        |                                      (outside the request deadline)
        `-- http.dispatch(...) -> Response  -> h11 bytes -> send_all
    `-- linger: half-close, drain what the client still sends (bounded)

The request deadline covers reading the head and sending the reply, so a
slow or silent client costs one task for at most ``request_timeout``
seconds; it is then closed without a reply.  The lingering close matters
when a request is refused before it was fully read (an oversized head): a
plain close with unread input would reset the connection and the client
could lose the 400.

Write paths need ``Authorization: Bearer <admin_token>`` when a token is set.
Without one they are allowed only when every listening address is loopback
(``Policy.loopback``), which is decided from the *bound* addresses, so
``localhost`` and ``::1`` count and ``0.0.0.0`` does not.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from http import HTTPStatus

import attrs
import h11
import trio

from .api import AdminApi
from .feed import MAX_FEED_CLIENTS, ReplayStream, serve_feed
from .http import FEED_PATH, Policy, Response, dispatch, encode, error, request_path

__all__ = ["MAX_HEAD", "REQUEST_TIMEOUT", "AdminServer", "open_admin_listeners", "serve_admin"]

log = logging.getLogger("trinomite.admin")

#: Largest request head (request line + headers) accepted, in bytes.
MAX_HEAD = 8 * 1024
#: Longest time a client may take to send its request and read the reply, in s.
REQUEST_TIMEOUT = 10.0
#: Bounds of the lingering close after a reply.
LINGER_TIMEOUT = 2.0
LINGER_BYTES = 256 * 1024
RECEIVE_SIZE = 4096
#: Admin connections served at once (feed clients included); more get 503 and
#: are closed at once, so a flood of idle connections costs a bounded amount.
MAX_CONNECTIONS = 256
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 56\r\nConnection: close\r\n\r\n"
    b"Service Unavailable: too many admin connections, retry\r\n"
)


def is_loopback(host: str) -> bool:
    """True for loopback IP literals (``127.0.0.0/8``, ``::1``)."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


@attrs.define
class AdminServer:
    """Serves admin connections for one node; ``handle`` is the per-connection task."""

    api: AdminApi
    policy: Policy
    feed_interval: float
    request_timeout: float = REQUEST_TIMEOUT
    feed_clients: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(MAX_FEED_CLIENTS)
    )
    max_connections: int = MAX_CONNECTIONS
    #: Connections being served now, and those turned away for being over the cap.
    active: int = 0
    refused: int = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        """Serve one connection; never raises ``Exception`` (logged instead).

        Resource handling: ``stream`` is closed on return.
        """
        if self.active >= self.max_connections:
            self.refused += 1
            with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(_BUSY)
            await trio.aclose_forcefully(stream)
            return
        self.active += 1
        try:
            await self._serve(stream)
        except trio.BrokenResourceError:
            log.debug("admin client went away")
        except Exception:
            log.exception("admin connection failed")
        finally:
            self.active -= 1
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        received = bytearray()
        feed_head: bytes | None = None
        with trio.move_on_after(self.request_timeout):
            try:
                request = await _read_head(stream, conn, received)
            except h11.RemoteProtocolError as exc:
                await self._reply(stream, conn, _malformed(exc), False)
                return
            if request is None:
                return
            if not _is_feed_upgrade(request):
                response = dispatch(
                    self.api, self.policy, request.method, request.target, request.headers
                )
                await self._reply(stream, conn, response, request.method == b"HEAD")
                return
            feed_head = bytes(received)
        if feed_head is not None:  # the feed lives past the request deadline
            await self._feed(stream, conn, feed_head)

    async def _reply(
        self, stream: trio.abc.Stream, conn: h11.Connection, response: Response, head_only: bool
    ) -> None:
        await stream.send_all(encode(conn, response, head_only=head_only))
        await _linger(stream)

    async def _feed(self, stream: trio.abc.Stream, conn: h11.Connection, head: bytes) -> None:
        try:
            self.feed_clients.acquire_nowait()
        except trio.WouldBlock:
            limit = int(self.feed_clients.total_tokens)
            busy = error(503, f"Service Unavailable: {limit} feed clients already")
            with trio.move_on_after(self.request_timeout):
                await self._reply(stream, conn, busy, False)
            return
        try:
            await serve_feed(
                self.api,
                ReplayStream(stream, head),
                self.feed_interval,
                handshake_timeout=self.request_timeout,
            )
        finally:
            self.feed_clients.release()


async def _read_head(
    stream: trio.abc.Stream, conn: h11.Connection, received: bytearray
) -> h11.Request | None:
    """The request head, or None if the client closed first.

    Raises ``h11.RemoteProtocolError`` for a malformed head or one larger than
    MAX_HEAD (h11 alone would let one read's worth more through).
    Every byte read is appended to ``received`` (at most MAX_HEAD plus one
    read), so it can be replayed into the WebSocket handshake.
    """
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(RECEIVE_SIZE)
            received += data
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Request):
            if len(received) - len(conn.trailing_data[0]) > MAX_HEAD:
                raise h11.RemoteProtocolError(f"request head larger than {MAX_HEAD} bytes")
            return event
        else:
            return None


def _is_feed_upgrade(request: h11.Request) -> bool:
    if request.method != b"GET":
        return False
    try:
        if request_path(request.target) != FEED_PATH:
            return False
    except ValueError:
        return False
    return any(
        name == b"upgrade" and value.strip().lower() == b"websocket"
        for name, value in request.headers
    )


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read and drop input until EOF (bounded), so no reset eats the reply."""
    if not isinstance(stream, trio.abc.HalfCloseableStream):
        return
    try:
        await stream.send_eof()
        drained = 0
        with trio.move_on_after(LINGER_TIMEOUT):
            while drained < LINGER_BYTES:
                data = await stream.receive_some(RECEIVE_SIZE)
                if not data:
                    break
                drained += len(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def open_admin_listeners(
    host: str, port: int, backlog: int = 128
) -> list[trio.SocketListener]:
    """Bound, listening admin sockets for ``host:port`` (``port`` may be 0)."""
    return await trio.open_tcp_listeners(port, host=host, backlog=backlog)


async def serve_admin(
    api: AdminApi,
    host: str,
    port: int,
    *,
    token: str | None,
    feed_interval: float,
    backlog: int = 128,
    request_timeout: float = REQUEST_TIMEOUT,
    listeners: list[trio.SocketListener] | None = None,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin HTTP paths and the WebSocket feed on ``host:port`` until cancelled.

    ``task_status.started((host, port))`` reports the bound address once
    listening (``port`` may be 0).  ``token`` is the ``admin_token``;
    ``feed_interval`` the seconds between feed snapshots.  ``listeners``:
    already bound and listening (``open_admin_listeners``) instead of binding.

    Error handling: failing to bind raises out of here (nothing started);
    a failing connection is logged and closed, it never stops the server.
    Resource handling: the listeners and every connection are closed when
    this returns (cancelled).
    """
    if listeners is None:
        listeners = await open_admin_listeners(host, port, backlog)
    addresses = [listener.socket.getsockname() for listener in listeners]
    loopback = all(is_loopback(address[0]) for address in addresses)
    server = AdminServer(
        api,
        Policy(token=token, loopback=loopback),
        feed_interval=feed_interval,
        request_timeout=request_timeout,
    )
    bound = (str(addresses[0][0]), int(addresses[0][1]))
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, server.handle, listeners)
        if not loopback and token is None:
            log.warning(
                "admin port %s:%d is not loopback-only and admin_token is unset: "
                "state-changing admin paths are refused",
                *bound,
            )
        log.info("admin listening on %s:%d", *bound)
        task_status.started(bound)


def _malformed(exc: h11.RemoteProtocolError) -> Response:
    """400 (or h11's 431 for an oversized head) naming the problem, never echoing the input.

    h11's messages end with a repr of the offending bytes
    (``illegal request line: bytearray(b'...')``): only the part before
    the first colon is a description.
    """
    status = exc.error_status_hint
    what = str(exc).split(":", 1)[0].strip() or "malformed request"
    return error(status, f"{HTTPStatus(status).phrase}: {what}")
