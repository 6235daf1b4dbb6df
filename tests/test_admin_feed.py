"""The admin WebSocket feed: snapshots, events, closing, slow clients, real nodes.

Theory of operation
-------------------
Interval and timeout tests run the whole admin connection handler
(``AdminServer.handle``: h11 head, replay, trio-websocket handshake, feed)
over trio's in-memory streams under ``autojump_clock``, so "every 2 s" is
checked exactly and instantly.  The mock clock cannot be used with real
sockets (it would jump past the waits for network data), so the socket tests
use the real clock with a short feed interval, each bounded by ``fail_after``.
The fake AdminApi is ``FakeAdmin`` from ``test_admin_http``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket
import wsproto
import wsproto.events

from tests.adminfake import LOOPBACK, FakeAdmin, exchange
from trinomite import Consistency, DatastoreSpec, open_node
from trinomite.admin.feed import GOING_AWAY, ReplayStream, message
from trinomite.admin.server import AdminServer
from trinomite.testing.cluster import open_cluster

from .conftest import node_config

#: Virtual seconds under autojump_clock; real seconds otherwise.
TIMEOUT = 30
UPGRADE = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
]


async def connect(
    nursery: trio.Nursery, server: AdminServer, path: str = "/feed"
) -> trio_websocket.WebSocketConnection:
    """A WebSocket client connected to ``server.handle`` over memory streams."""
    client, end = trio.testing.memory_stream_pair()
    nursery.start_soon(server.handle, end)
    return await trio_websocket.wrap_client_stream(nursery, client, "t", path)  # type: ignore[arg-type]


async def receive(ws: trio_websocket.WebSocketConnection) -> dict[str, Any]:
    text = await ws.get_message()
    assert isinstance(text, str)
    decoded: dict[str, Any] = json.loads(text)
    return decoded


@pytest.fixture
def api() -> FakeAdmin:
    return FakeAdmin()


@pytest.fixture
def server(api: FakeAdmin) -> AdminServer:
    return AdminServer(api, LOOPBACK, feed_interval=1.0)


async def drain(ws: trio_websocket.WebSocketConnection) -> None:
    """Read messages until the connection closes (raises ConnectionClosed)."""
    while True:
        await ws.get_message()


async def test_snapshot_at_once_then_every_interval_and_events_as_they_happen(autojump_clock, api):
    server = AdminServer(api, LOOPBACK, feed_interval=2.0)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            ws = await connect(nursery, server)
            start = trio.current_time()
            assert await receive(ws) == {"type": "snapshot", "n": 1, "state": "NORMAL"}
            assert trio.current_time() == start
            assert api.subscribers == 1
            assert (await receive(ws))["n"] == 2
            assert trio.current_time() == pytest.approx(start + 2.0)
            await trio.sleep(0.5)
            api.publish({"event": "state_changed", "ts": 1.5, "to": "STANDBY"})
            event = await receive(ws)
            assert event == {"type": "event", "event": "state_changed", "ts": 1.5, "to": "STANDBY"}
            assert trio.current_time() == pytest.approx(start + 2.5)
            third = await receive(ws)
            assert third["type"] == "snapshot"
            assert third["n"] == 3
            assert trio.current_time() == pytest.approx(start + 4.0)  # no drift
            await ws.aclose()
    assert api.subscribers == 0  # unsubscribed when the client left


async def test_client_close_ends_the_feed_and_unsubscribes(autojump_clock, api, server):
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            ws = await connect(nursery, server)
            await receive(ws)
            await ws.send_message("anything: the feed ignores what clients say")
            await receive(ws)
            await ws.aclose()
            assert ws.closed is not None
            assert ws.closed.code == 1000
    assert api.subscribers == 0


async def test_node_closing_its_event_stream_closes_the_feed_going_away(
    autojump_clock, api, server
):
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            ws = await connect(nursery, server)
            await receive(ws)
            api.close_events()
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await drain(ws)
            assert closed.value.reason is not None
            assert closed.value.reason.code == GOING_AWAY


async def test_client_that_stops_reading_is_dropped(autojump_clock, caplog, api, server):
    """Lockstep streams: a send blocks until the client reads, so a client can stall it."""
    caplog.set_level(logging.INFO, "trinomite.admin")
    client, end = trio.testing.lockstep_stream_pair()
    ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, end)
            await client.send_all(ws.send(wsproto.events.Request(host="t", target="/feed")))
            accepted = False
            while not accepted:
                ws.receive_data(await client.receive_some(65536))
                accepted = any(isinstance(e, wsproto.events.AcceptConnection) for e in ws.events())
            start = trio.current_time()
            # ...and never read again: the first snapshot's send stalls.
    assert trio.current_time() - start == pytest.approx(10.0)  # feed.SEND_TIMEOUT
    assert "too slow" in caplog.text
    assert api.subscribers == 0


async def test_feed_clients_are_bounded(autojump_clock, api):
    server = AdminServer(api, LOOPBACK, feed_interval=1.0, feed_clients=trio.CapacityLimiter(1))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            ws = await connect(nursery, server)
            await receive(ws)
            client, end = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle, end)
            busy = await exchange(client, target="/feed", headers=UPGRADE)
            assert busy.status == 503
            await ws.aclose()


async def test_plain_get_of_the_feed_is_426(server):
    client, end = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, end)
            reply = await exchange(client, target="/feed")
    assert reply.status == 426
    assert reply.headers["upgrade"] == "websocket"


async def test_upgrade_to_another_path_is_plain_http(server):
    client, end = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, end)
            reply = await exchange(client, target="/ping", headers=UPGRADE)
    assert (reply.status, reply.text) == (200, "OK\r\n")


async def test_replay_stream_returns_the_prefix_first():
    a, b = trio.testing.memory_stream_pair()
    replay = ReplayStream(b, b"hello")
    await a.send_all(b"world")
    assert await replay.receive_some(3) == b"hel"
    assert await replay.receive_some() == b"lo"
    assert await replay.receive_some() == b"world"
    await replay.send_all(b"back")
    assert await a.receive_some() == b"back"
    await replay.aclose()
    assert await a.receive_some() == b""


def test_message_type_is_first_and_cannot_be_overridden():
    text = message("event", {"type": "x", "event": "peer_down", "level": Consistency.DC_ONE})
    assert text.startswith('{"type": "event"')
    assert json.loads(text) == {"type": "event", "event": "peer_down", "level": "DC_ONE"}


# -- real sockets (real clock) -----------------------------------------------------


async def test_feed_from_a_real_node():
    config = node_config(DatastoreSpec.embedded(), feed_interval=50)
    with trio.fail_after(TIMEOUT):
        async with open_node(config) as node:
            address = node.admin_address
            assert address is not None
            url = f"ws://{address.host}:{address.port}/feed"
            async with trio_websocket.open_websocket_url(url) as ws:
                first = await receive(ws)
                assert first["type"] == "snapshot"
                assert first["state"] == "NORMAL"
                second = await receive(ws)
                assert second["type"] == "snapshot"
                assert second["ts"] > first["ts"]


async def test_peer_down_event_when_a_peer_stops():
    with trio.fail_after(TIMEOUT):
        async with open_cluster({"dc1": {"r1": 1, "r2": 1}}, feed_interval=60_000) as cluster:
            watcher, victim = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            assert watcher.node is not None
            assert watcher.node.admin_address is not None
            address = watcher.node.admin_address
            url = f"ws://{address.host}:{address.port}/feed"
            async with trio_websocket.open_websocket_url(url) as ws:
                assert (await receive(ws))["type"] == "snapshot"
                await cluster.stop_node(victim)
                while True:
                    got = await receive(ws)
                    if got["type"] == "event" and got["event"] == "peer_down":
                        break
                assert got["peer"] == f"127.0.0.1:{victim.peer_port}"
                assert isinstance(got["ts"], float)
