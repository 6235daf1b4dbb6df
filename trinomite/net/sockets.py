"""TCP and unix sockets for the hot path: listeners, connects, and a lean stream.

Theory of operation
-------------------
``trio.SocketStream`` is correct and general, but every ``send`` and
``receive`` goes through an async context manager and ends with a forced
yield to the scheduler.  A proxy does two socket operations per request per
side, so that overhead, not parsing, bounds unpipelined throughput.

``LeanSocketStream`` implements the same ``trio.abc.Stream`` contract on a
plain non-blocking stdlib socket using only Trio's public low-level API:

    receive_some: sock.recv()  --EAGAIN-->  wait_readable(sock), retry
    send_all:     sock.send()  --EAGAIN-->  wait_writable(sock), retry

An operation that completes at once does not yield, *except* every
``FAIRNESS_EVERY``-th one in a row, so a peer that always has data ready
cannot starve other tasks; every wait is a normal Trio checkpoint, so
cancellation and deadlines work as usual.  OS errors become
``trio.BrokenResourceError`` and use after ``aclose`` raises
``trio.ClosedResourceError``, as with Trio's own streams.

``open_listeners`` binds listening sockets (TCP for each resolved address,
or a unix path), ``adopt_listener`` takes over one an embedder bound, and
``accept`` waits for a connection on one;
``connect_tcp``/``connect_unix`` open outgoing streams.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Callable

import trio

__all__ = [
    "LeanSocketStream",
    "accept",
    "accept_forever",
    "adopt_listener",
    "check_bound",
    "connect_tcp",
    "connect_unix",
    "open_tcp_listeners",
    "open_unix_listener",
    "peer_name",
]

log = logging.getLogger("trinomite.sockets")

FAIRNESS_EVERY = 16
RECEIVE_SIZE = 256 * 1024


class LeanSocketStream(trio.abc.Stream):
    """A ``trio.abc.Stream`` over a non-blocking stdlib socket."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = sock
        self._closed = False
        self._streak = 0

    async def _fairness(self) -> None:
        self._streak += 1
        if self._streak >= FAIRNESS_EVERY:
            self._streak = 0
            await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        sock = self.socket
        size = max_bytes or RECEIVE_SIZE
        try:
            data = sock.recv(size)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        else:
            await self._fairness()
            return data
        return await self._receive_when_readable(size)

    async def _receive_when_readable(self, size: int) -> bytes:
        """Wait until the socket is readable, then ``recv`` (retrying a spurious wake)."""
        self._streak = 0
        sock = self.socket
        while True:
            await trio.lowlevel.wait_readable(sock)
            if self._closed:
                raise trio.ClosedResourceError("stream closed while receiving")
            try:
                return sock.recv(size)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream is closed")
        sock = self.socket
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc
        if sent == len(data):
            await self._fairness()
            return
        self._streak = 0
        view = memoryview(data)
        while sent < len(view):
            await trio.lowlevel.wait_writable(sock)
            if self._closed:
                raise trio.ClosedResourceError("stream closed while sending")
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                continue
            except OSError as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self.socket)

    def shutdown_reading(self) -> None:
        """Make a pending or future ``receive_some`` return b"" (EOF)."""
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RD)

    def peer_name(self) -> str:
        return peer_name(self.socket)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()


def peer_name(sock: socket.socket) -> str:
    """``host:port`` of the other end (``unix`` for a unix socket, ``?`` if gone)."""
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(peer, tuple):
        return f"{peer[0]}:{peer[1]}"
    return str(peer) or "unix"


async def open_tcp_listeners(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of ``host``."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
            if port == 0:
                break  # an ephemeral port: one address only, its port is the node's
    except OSError:
        for sock in listeners:
            sock.close()
        raise
    return listeners


def check_bound(sock: socket.socket, host: str, port: int) -> None:
    """Refuse a socket an embedder bound anywhere but the configured address.

    ``host``/``port`` are the configured address; port 0 accepts any port.
    A socket bound elsewhere would make the node serve on an address its
    peers and seeds do not know.
    """
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("a listener must be a SOCK_STREAM socket")
    bound_host, bound_port = sock.getsockname()[:2]
    if bound_port == 0:
        raise ValueError(f"the socket given for {host}:{port} is not bound")
    if port not in (0, bound_port) or not _same_host(host, bound_host):
        raise ValueError(
            f"the socket given for {host}:{port} is bound to {bound_host}:{bound_port}"
        )


def adopt_listener(sock: socket.socket, backlog: int) -> socket.socket:
    """Make a socket bound by an embedder (see ``check_bound``) listen."""
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def _same_host(configured: str, bound: str) -> bool:
    """False only when ``configured`` is a specific IP literal other than ``bound``."""
    try:
        address = ipaddress.ip_address(configured)
    except ValueError:
        return True  # a name or a wildcard: the embedder resolved it
    return address.is_unspecified or address == ipaddress.ip_address(bound)


def open_unix_listener(path: str, backlog: int) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket file from a previous run
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def accept(listener: socket.socket) -> LeanSocketStream:
    """Wait for and accept one connection."""
    while True:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            await trio.lowlevel.wait_readable(listener)
            continue
        return LeanSocketStream(sock)


async def accept_forever(
    listener: socket.socket, handle: Callable[[LeanSocketStream], None]
) -> None:
    """Accept connections until cancelled or the listener is closed.

    Transient accept errors (EMFILE and friends) are logged and retried
    after a short pause, so a burst of connections cannot stop the loop.
    """
    while True:
        try:
            stream = await accept(listener)
        except trio.ClosedResourceError:
            return  # the listener was closed (node shutting down)
        except OSError as exc:
            if listener.fileno() == -1:
                return
            log.warning("accept failed: %s", exc)
            await trio.sleep(0.1)
            continue
        handle(stream)


async def _connect(sock: socket.socket, address: object) -> LeanSocketStream:
    sock.setblocking(False)
    try:
        code = sock.connect_ex(address)  # type: ignore[arg-type]
        if code not in (0, errno.EINPROGRESS, errno.EAGAIN):
            raise OSError(code, os.strerror(code))
        if code != 0:
            await trio.lowlevel.wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"connect to {address}: {os.strerror(code)}")
    except BaseException:
        trio.lowlevel.notify_closing(sock)
        sock.close()
        raise
    return LeanSocketStream(sock)


async def connect_tcp(host: str, port: int) -> LeanSocketStream:
    """Connect to the first address of ``host`` that accepts."""
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        try:
            stream = await _connect(socket.socket(family, kind, proto), address)
        except OSError as exc:
            error = exc
            continue
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return stream
    raise error or OSError(f"no address for {host}")


async def connect_unix(path: str) -> LeanSocketStream:
    return await _connect(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path)
