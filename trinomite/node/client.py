"""The client side of a node: accept loop and one task per client connection.

Theory of operation
-------------------
``serve_clients`` accepts connections and starts ``ClientConnection.run``
for each in the handler nursery it is given.  Each client task loops::

    receive_some --> RequestParser.feed/parse --> Dispatcher.execute (one await
    for the whole batch) --> one send_all with every reply, in order

so a client costs one task, not one per request, and a pipeline of N
requests costs one receive, one wait and one send.  Pipelines are bounded:
at most ``max_client_pipeline`` requests are in flight at once (a longer
pipeline from one receive is executed in slices), and the socket is not
read again until a round is answered, which is the backpressure a slow
reader needs.

Failure handling: a framing error is answered with Redis's
``-ERR Protocol error: ...`` line, then the connection closes (the stream
can no longer be trusted).  Anything unexpected in one client's task is
logged and counted and closes only that client.  ``Cancelled`` always
propagates.  While the node drains, idle clients are closed at once and a
client with requests in flight gets its replies before closing.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
from collections.abc import Callable

import attrs
import trio

from ..protocol.requests import Limits, RequestParser
from .dispatch import Dispatcher
from .local import Session
from .sockets import LeanSocketStream, accept_forever

__all__ = ["ClientConnection", "ClientCounters", "ClientRegistry", "serve_clients"]

log = logging.getLogger("trinomite.client")

RECEIVE_SIZE = 64 * 1024
_MAX_CLIENTS_REPLY = b"-ERR max number of clients reached\r\n"


@attrs.define
class ClientCounters:
    """Dynomite's client stats (``client_*`` in /info)."""

    client_connections: int = 0
    client_eof: int = 0
    client_err: int = 0


class ClientRegistry:
    """The live client connections of a node, so draining can reach them."""

    def __init__(self) -> None:
        self.connections: set[ClientConnection] = set()
        self._empty = trio.Event()
        self._empty.set()

    def add(self, connection: ClientConnection) -> None:
        if not self.connections:
            self._empty = trio.Event()
        self.connections.add(connection)

    def discard(self, connection: ClientConnection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._empty.set()

    async def wait_empty(self) -> None:
        await self._empty.wait()


class ClientConnection:
    """One accepted client: parse, dispatch, reply, until EOF or error."""

    def __init__(
        self,
        stream: LeanSocketStream,
        session: Session,
        dispatcher: Dispatcher,
        limits: Limits,
        max_pipeline: int,
        counters: ClientCounters,
        registry: ClientRegistry,
    ) -> None:
        self.stream = stream
        self.registry = registry
        registry.add(self)
        self.session = session
        self.dispatcher = dispatcher
        self.parser = RequestParser(limits)
        self.max_pipeline = max_pipeline
        self.counters = counters
        self.reading = False
        self.draining = False

    async def run(self) -> None:
        counters = self.counters
        try:
            await self._serve()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            counters.client_eof += 1
        except Exception:
            counters.client_err += 1
            log.exception("client %s: handler failed", self.session.address)
        finally:
            counters.client_connections -= 1
            self.registry.discard(self)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _serve(self) -> None:
        stream, parser, session = self.stream, self.parser, self.session
        dispatcher, max_pipeline = self.dispatcher, self.max_pipeline
        while True:
            if self.draining:
                return
            self.reading = True
            try:
                # Right after a reply the client has usually sent nothing yet.
                data = await stream.receive_next(RECEIVE_SIZE)
            finally:
                self.reading = False
            if not data:
                self.counters.client_eof += 1
                return
            parser.feed(data)
            requests = parser.parse()
            if len(requests) <= max_pipeline:
                if requests:
                    await stream.send_all(await dispatcher.execute(session, requests, parser.blob))
            else:
                # Bounded in-flight work: execute a long pipeline in slices.
                for i in range(0, len(requests), max_pipeline):
                    part = requests[i : i + max_pipeline]
                    await stream.send_all(await dispatcher.execute(session, part, None))
                    if session.closing:
                        break
            if session.closing:
                return
            if parser.error is not None:
                self.counters.client_err += 1
                await stream.send_all(parser.error.reply)
                return

    def stop_reading(self) -> None:
        """Drain: read no more requests; an idle client is closed at once."""
        self.draining = True
        if self.reading:
            self.stream.shutdown_reading()  # its receive_some returns b"" now


async def serve_clients(
    listeners: list[socket.socket],
    make_connection: Callable[[LeanSocketStream, int], ClientConnection],
    handler_nursery: trio.Nursery,
    counters: ClientCounters,
    max_clients: int,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept clients on every listener until cancelled.

    Resource handling: each accepted stream is owned by its connection task
    in ``handler_nursery``; a client over ``max_clients`` is told so and closed.
    """
    ids = itertools.count(1)

    def handle(stream: LeanSocketStream) -> None:
        if max_clients and counters.client_connections >= max_clients:
            handler_nursery.start_soon(_refuse, stream)
            return
        counters.client_connections += 1
        handler_nursery.start_soon(make_connection(stream, next(ids)).run)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_forever, listener, handle)
        task_status.started()


async def _refuse(stream: LeanSocketStream) -> None:
    with trio.move_on_after(1), contextlib.suppress(
        trio.BrokenResourceError, trio.ClosedResourceError
    ):
        await stream.send_all(_MAX_CLIENTS_REPLY)
    await trio.aclose_forcefully(stream)
