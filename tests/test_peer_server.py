"""The peer listener, driven by a raw peer: pipelined rounds, replies in order.

A node's ``dyn_listen`` is spoken to directly in Dynomite frames, with the
node's datastore behind the fault proxy so a request can be held in flight
for as long as the test needs (an event, not a sleep).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct

import pytest
import trio
import trio.testing

from trinomite import DatastoreSpec, HostPort, open_node
from trinomite.protocol.peer import Frame, FrameParser, MessageType, encode_frame
from trinomite.protocol.requests import encode_command
from trinomite.testing.faultproxy import FaultProxy

from .conftest import node_config

TIMED_OUT = b"-ERR Storage: Connection timed out\r\n"


def request(msg_id: int, *args: bytes) -> bytes:
    return encode_frame(msg_id, MessageType.REQ, encode_command(list(args)), same_dc=True)


async def read_frames(stream: trio.SocketStream, count: int) -> list[Frame]:
    parser = FrameParser()
    frames: list[Frame] = []
    while len(frames) < count:
        data = await stream.receive_some(65536)
        assert data, "the node closed the peer connection"
        parser.feed(data)
        frames += parser.frames()
    return frames


async def test_a_peer_link_keeps_reading_while_rounds_are_in_flight(proxy: FaultProxy) -> None:
    config = node_config(
        DatastoreSpec.tcp(proxy.host, proxy.port),
        dyn_listen=HostPort("127.0.0.1", 0),
        timeout=2000,
        server_retry_timeout=200,
    )
    with trio.fail_after(10):
        async with open_node(config) as node:
            assert node.peer_address is not None
            peer = await trio.open_tcp_stream(node.peer_address.host, node.peer_address.port)
            async with peer:
                assert (await read_frames_after(peer, request(1, b"SET", b"a", b"1"))) == [
                    (1, b"+OK\r\n")
                ]
                proxy.drop()  # the datastore now answers nothing
                before = proxy.bytes_up
                await peer.send_all(request(2, b"INCR", b"n"))
                await proxy.wait_until(lambda p: p.bytes_up > before)
                # Round 2 is unanswered; round 3 must still be read and passed on.
                middle = proxy.bytes_up
                await peer.send_all(request(3, b"SET", b"b", b"2") + request(4, b"GET", b"a"))
                await proxy.wait_until(lambda p: p.bytes_up > middle)
                assert not has_data(peer), "round 3 was read only after round 2 was answered"
                # Every request times out, and the replies keep the request order.
                frames = await read_frames(peer, 3)
                assert [(f.msg_id, f.type, f.payload) for f in frames] == [
                    (2, MessageType.RES, TIMED_OUT),
                    (3, MessageType.RES, TIMED_OUT),
                    (4, MessageType.RES, TIMED_OUT),
                ]
                proxy.pass_through()


def has_data(stream: trio.SocketStream) -> bool:
    """Whether the node has sent anything not read yet (a zero-timeout poll)."""
    readable, _, _ = select.select([stream.socket.fileno()], [], [], 0)
    return bool(readable)


async def read_frames_after(stream: trio.SocketStream, data: bytes) -> list[tuple[int, bytes]]:
    await stream.send_all(data)
    return [(f.msg_id, f.payload) for f in await read_frames(stream, 1)]


async def test_a_peer_that_resets_its_connection_is_an_eof_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A caller's RST mid-request (a partition, a killed peer) is counted and logged quietly."""
    config = node_config(DatastoreSpec.embedded(), dyn_listen=HostPort("127.0.0.1", 0))
    with trio.fail_after(10):
        async with open_node(config) as node:
            assert node.peer_address is not None
            counters = node.peer_counters
            peer = await trio.open_tcp_stream(node.peer_address.host, node.peer_address.port)
            assert (await read_frames_after(peer, request(1, b"SET", b"a", b"1"))) == [
                (1, b"+OK\r\n")
            ]
            await peer.send_all(request(2, b"GET", b"a")[:9])  # half a frame, then RST
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.socket.close()
            while counters.dnode_client_connections:  # the handler sees the RST and ends
                await trio.testing.wait_all_tasks_blocked(0.01)
    assert counters.dnode_client_eof == 1
    assert counters.dnode_client_err == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("data", "eof"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 4000, False),  # not a peer at all: ~100 KB
        (b"   $2014$ 1 3 0 1 1 *1 d *99999999999\r\n", False),  # oversized payload declared
        (request(1, b"SET", b"a", b"1")[:-3], True),  # truncated, then the caller leaves
    ],
    ids=["garbage", "oversized", "truncated"],
)
async def test_bad_peers_are_disconnected_and_counted(data: bytes, eof: bool) -> None:
    config = node_config(DatastoreSpec.embedded(), dyn_listen=HostPort("127.0.0.1", 0))
    with trio.fail_after(10):
        async with open_node(config) as node:
            assert node.peer_address is not None
            counters = node.peer_counters
            peer = await trio.open_tcp_stream(node.peer_address.host, node.peer_address.port)
            await peer.send_all(data)
            if eof:
                await peer.send_eof()
            else:
                with contextlib.suppress(trio.BrokenResourceError):  # closed, or reset
                    assert await peer.receive_some(4096) == b""
            while counters.dnode_client_connections:
                await trio.testing.wait_all_tasks_blocked(0.01)
            assert (counters.dnode_client_eof, counters.dnode_client_err) == (
                (1, 0) if eof else (0, 1)
            )
            # The node is unharmed: a well-formed peer request is answered.
            good = await trio.open_tcp_stream(node.peer_address.host, node.peer_address.port)
            assert await read_frames_after(good, request(2, b"PING")) == [(2, b"+PONG\r\n")]
            await good.aclose()
            await peer.aclose()
