"""The live feed: JSON snapshots and events over a WebSocket on the admin port.

Theory of operation
-------------------
The admin port speaks plain HTTP/1.1 (h11) and, on ``GET /feed`` with
``Upgrade: websocket``, the WebSocket protocol (trio-websocket over wsproto).
Both share one listener, so ``server.py`` reads the request head with h11
first; when it is an upgrade to ``/feed`` it hands the stream here, wrapped
in a ``ReplayStream`` that returns the bytes h11 already consumed before
reading the socket again.  wsproto therefore parses the very same request and
the handshake happens as if trio-websocket had owned the socket from the
start::

    socket --> h11 (request head) --> ReplayStream(head bytes, socket)
                                          `--> wrap_server_stream -> accept()

Once accepted, ``run_feed`` sends text messages, each one JSON object::

    {"type": "snapshot", ...api.snapshot()}    at once, then every interval
    {"type": "event", ...event}                each api.subscribe() event

One task (the pump) alternates between the two sources: send a snapshot,
forward events until the next snapshot is due (``move_on_at``), repeat; so
snapshots keep a fixed period (no drift) and messages never interleave.  A
second task reads and discards whatever the client sends, which is how a
close from the client is noticed; whichever task ends first cancels the
other.  Every send is bounded by ``send_timeout``: a client that stops
reading is dropped, it never holds the node's events back (the subscription
channel is bounded and lossy on the node's side).  On exit the subscription
channel is closed (that is the unsubscribe) and the WebSocket closed with a
close handshake bounded by ``CLOSE_TIMEOUT``.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
import trio_websocket

from .api import AdminApi
from .http import to_json

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_FEED_CLIENTS",
    "SEND_TIMEOUT",
    "ReplayStream",
    "message",
    "run_feed",
    "serve_feed",
]

log = logging.getLogger("trinomite.admin")

#: Longest time one message may take to reach a client before it is dropped.
SEND_TIMEOUT = 10.0
#: Longest wait for the client's answer to our close frame.
CLOSE_TIMEOUT = 5.0
#: Most feed clients at once; more are answered 503.
MAX_FEED_CLIENTS = 64
#: Largest message accepted from a client (it has nothing to say).
MAX_CLIENT_MESSAGE = 4096
#: Close code when the node stops publishing events (shutting down).
GOING_AWAY = 1001


class ReplayStream(trio.abc.Stream):
    """A stream that first returns ``prefix``, then reads ``stream``.

    Sending, waiting and closing go straight to ``stream`` (no half-close).
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            size = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


def message(kind: str, payload: dict[str, Any]) -> str:
    """One feed message: ``{"type": kind, ...payload}`` (``type`` always first and ours)."""
    body: dict[str, Any] = {"type": kind}
    body.update((key, value) for key, value in payload.items() if key != "type")
    return to_json(body)


async def serve_feed(
    api: AdminApi,
    stream: trio.abc.Stream,
    interval: float,
    *,
    handshake_timeout: float,
    send_timeout: float = SEND_TIMEOUT,
) -> None:
    """Complete the WebSocket handshake on ``stream`` and run the feed until it ends.

    ``stream`` must yield the upgrade request from its start (a
    ``ReplayStream``).  Error handling: a handshake that does not complete
    within ``handshake_timeout``, a client that goes away and a client too
    slow to read all end the feed quietly; other exceptions propagate to the
    connection's supervisor.  Resource handling: the stream is closed on
    return.
    """
    try:
        async with trio.open_nursery() as nursery:
            ws: trio_websocket.WebSocketConnection | None = None
            with trio.move_on_after(handshake_timeout):
                request = await trio_websocket.wrap_server_stream(
                    nursery, stream, max_message_size=MAX_CLIENT_MESSAGE
                )
                ws = await request.accept()
            if ws is not None:
                await _run_and_close(api, ws, interval, send_timeout)
            nursery.cancel_scope.cancel()  # the trio-websocket reader task
    finally:
        # Not inside the (cancelled) nursery: an await there would raise
        # Cancelled and hide the exception being propagated.
        await trio.aclose_forcefully(stream)


async def _run_and_close(
    api: AdminApi, ws: trio_websocket.WebSocketConnection, interval: float, send_timeout: float
) -> None:
    code = await run_feed(api, ws, interval, send_timeout=send_timeout)
    if code is None:
        # A send was cut mid-frame: no close handshake on a corrupt stream.
        log.info("admin feed: client %s too slow to read, dropped", ws.remote)
        return
    with trio.move_on_after(CLOSE_TIMEOUT):
        await ws.aclose(code)


async def run_feed(
    api: AdminApi,
    ws: trio_websocket.WebSocketConnection,
    interval: float,
    *,
    send_timeout: float = SEND_TIMEOUT,
) -> int | None:
    """Stream snapshots and events to an open WebSocket until either side stops.

    Returns the close code to use: 1000 when the client closed (or went
    away), ``GOING_AWAY`` when the node closed the event stream, None when
    one send took longer than ``send_timeout`` (the client is too slow; the
    stream may hold half a frame, so it should be closed without a close
    handshake).  Resource handling: the event subscription is closed on
    return.
    """
    code: int | None = 1000
    with api.subscribe() as events:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, ws, nursery.cancel_scope)
            try:
                code = await _pump(api, ws, events, interval, send_timeout)
            except trio_websocket.ConnectionClosed:
                code = 1000
            except trio.TooSlowError:
                code = None
            nursery.cancel_scope.cancel()
    return code


async def _pump(
    api: AdminApi,
    ws: trio_websocket.WebSocketConnection,
    events: trio.MemoryReceiveChannel[dict[str, Any]],
    interval: float,
    send_timeout: float,
) -> int:
    """Send a snapshot, forward events until the next is due; repeat.  See module doc.

    Only the waits for events are cut by the snapshot deadline, never a send.
    """
    due = trio.current_time()
    while True:
        with trio.fail_after(send_timeout):
            await ws.send_message(message("snapshot", api.snapshot()))
        due += interval
        if due <= trio.current_time():  # fell behind: skip the missed ticks
            due = trio.current_time() + interval
        while True:
            event: dict[str, Any] | None = None
            with trio.move_on_at(due):
                try:
                    event = await events.receive()
                except trio.EndOfChannel:
                    return GOING_AWAY  # the node closed the event stream
            if event is None:
                break
            with trio.fail_after(send_timeout):
                await ws.send_message(message("event", event))


async def _drain(ws: trio_websocket.WebSocketConnection, done: trio.CancelScope) -> None:
    """Read and drop client messages until the client closes, then end the feed."""
    try:
        while True:
            await ws.get_message()
    except trio_websocket.ConnectionClosed:
        done.cancel()
