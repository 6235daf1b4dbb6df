"""A small fault-injecting TCP proxy, in Trio, for fault tests of datastores and peers.

Theory of operation
-------------------
``serve_fault_proxy(host, port, task_status=...)`` listens on an ephemeral
loopback port and forwards every accepted connection to ``host:port``::

    node --> [listener] --link--> upstream (a real redis-server)
               |  pump client->upstream, pump upstream->client
               `- mode, switchable at any time by the test

Each forwarded chunk looks at the *current* mode, so switching affects
live connections as well as new ones:

* ``pass_through()``: forward unchanged.
* ``latency(s)``: sleep ``s`` seconds before forwarding each chunk.
* ``drop()``: a blackhole: accept and read, forward nothing either way
  (a new connection is still connected upstream, so ``pass_through()``
  brings every connection back).
* ``reset()``: RST every live connection (``SO_LINGER`` 0, then close) and
  every new one as soon as it is accepted.
* ``refuse()`` (alias ``partition()``): close new connections at once and
  cut every live one (FIN).
* ``reject()``: what a firewall's REJECT does: reset every live connection
  and stop listening, so connects fail with "Connection refused" at the
  caller.  Any other mode listens again on the same port.

The proxy counts what it saw (``accepted``, ``bytes_up``) and tests can
wait for a count with ``wait_until``, which parks on an event instead of
sleeping on the clock.  The proxy runs until its nursery is cancelled.
The test suite's ``proxy`` fixture (tests/conftest.py) starts one in front
of its ``redis_backend`` redis-server.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
from collections.abc import Callable

import attrs
import trio

__all__ = ["FaultProxy", "Mode", "serve_fault_proxy"]

RECEIVE_SIZE = 64 * 1024
#: How long the proxy may wait to listen on its own port again after reject().
RELISTEN_TIMEOUT = 5.0
_LINGER_ZERO = struct.pack("ii", 1, 0)


class Mode(enum.Enum):
    PASS = "pass"
    LATENCY = "latency"
    DROP = "drop"
    RESET = "reset"
    REFUSE = "refuse"
    REJECT = "reject"


@attrs.define(eq=False)
class _Link:
    """One proxied connection; cancelling ``scope`` cuts it."""

    client: trio.SocketStream
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    upstream: trio.SocketStream | None = None
    rst: bool = False


def _abort(stream: trio.SocketStream | None, rst: bool) -> None:
    """Close now; with ``rst`` the peer sees a reset instead of a FIN."""
    if stream is None:
        return
    if rst:
        with contextlib.suppress(OSError):  # already closed or reset by the peer
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    stream.socket.close()


class FaultProxy:
    """Handle on a running proxy: its address, counters and mode switches."""

    def __init__(self, listener: trio.SocketListener, target: tuple[str, int]) -> None:
        self.listener = listener
        self.host, self.port = listener.socket.getsockname()[:2]
        self.target = target
        self.mode = Mode.PASS
        self.delay = 0.0
        self.accepted = 0
        self.bytes_up = 0  # client -> upstream bytes received (forwarded or not)
        self._links: set[_Link] = set()
        self._changed = trio.Event()

    # -- mode switches (synchronous, effective at once) ---------------------

    def pass_through(self) -> None:
        self._set(Mode.PASS)

    def latency(self, seconds: float) -> None:
        self.delay = seconds
        self._set(Mode.LATENCY)

    def drop(self) -> None:
        self._set(Mode.DROP)

    def reset(self) -> None:
        self._set(Mode.RESET)
        self._cut_all(rst=True)

    def refuse(self) -> None:
        self._set(Mode.REFUSE)
        self._cut_all(rst=False)

    def reject(self) -> None:
        self._set(Mode.REJECT)
        self._cut_all(rst=True)
        self.listener.socket.close()  # connects are refused from now on

    @property
    def listening(self) -> bool:
        return self.listener.socket.fileno() != -1

    partition = refuse

    @property
    def live(self) -> int:
        """Connections currently proxied."""
        return len(self._links)

    async def wait_until(self, condition: Callable[[FaultProxy], bool]) -> None:
        """Park until ``condition(self)`` holds (bound it with ``fail_after``)."""
        while not condition(self):
            await self._changed.wait()

    # -- internals ----------------------------------------------------------

    def _set(self, mode: Mode) -> None:
        self.mode = mode
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _cut_all(self, *, rst: bool) -> None:
        for link in self._links:
            link.rst = rst
            link.scope.cancel()

    async def _listen_again(self) -> None:
        """After reject(): park until another mode is chosen, then listen on the old port."""
        while self.mode is Mode.REJECT:
            await self._changed.wait()
        with trio.fail_after(RELISTEN_TIMEOUT):
            while True:
                sock = trio.socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    await sock.bind((self.host, self.port))
                    break
                except OSError:
                    sock.close()
                    await trio.sleep(0.02)  # an outgoing connection holds the port
        sock.listen(128)
        self.listener = trio.SocketListener(sock)
        self._notify()

    async def serve(self, handlers: trio.Nursery) -> None:
        while True:
            if not self.listening:
                await self._listen_again()
            try:
                client = await self.listener.accept()
            except (trio.ClosedResourceError, OSError):
                continue  # reject() closed the listener under us
            self.accepted += 1
            self._notify()
            if self.mode is Mode.RESET:
                _abort(client, rst=True)
            elif self.mode is Mode.REFUSE:
                _abort(client, rst=False)
            else:
                handlers.start_soon(self._proxy, _Link(client))

    async def _proxy(self, link: _Link) -> None:
        self._links.add(link)
        self._notify()
        try:
            with link.scope:
                try:
                    link.upstream = await trio.open_tcp_stream(*self.target)
                except OSError:
                    link.rst = True  # upstream refused: so does the proxy
                    return
                async with trio.open_nursery() as pumps:
                    pumps.start_soon(self._pump, link.client, link.upstream, pumps, True)
                    pumps.start_soon(self._pump, link.upstream, link.client, pumps, False)
        finally:
            self._links.discard(link)
            _abort(link.client, link.rst)
            _abort(link.upstream, link.rst)
            self._notify()

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        pumps: trio.Nursery,
        upward: bool,
    ) -> None:
        """Copy chunks from ``source`` to ``sink``; either side closing ends the link."""
        try:
            while data := await source.receive_some(RECEIVE_SIZE):
                if upward:
                    self.bytes_up += len(data)
                    self._notify()
                if self.mode is Mode.LATENCY:
                    await trio.sleep(self.delay)
                if self.mode is not Mode.DROP:
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # one side went away: the link is over
        pumps.cancel_scope.cancel()


async def serve_fault_proxy(
    target_host: str,
    target_port: int,
    *,
    task_status: trio.TaskStatus[FaultProxy] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a fault proxy to ``target_host:target_port`` until cancelled.

    ``task_status.started(proxy)`` once it listens on 127.0.0.1 (ephemeral
    port).  Resource handling: the listener and every proxied connection
    are closed when this returns.
    """
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    proxy = FaultProxy(listeners[0], (target_host, target_port))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proxy.serve, nursery)
            task_status.started(proxy)
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(proxy.listener)
