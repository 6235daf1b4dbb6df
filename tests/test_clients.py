"""The client reactor: backpressure, half-close, resets and failures, one client at a time.

All clients of a node share one task and one epoll set, so these tests
check that no client can hold up or break another: a client that does not
read its replies, one that half-closes, one that resets mid-round, and one
whose handling raises.  Each runs next to a well-behaved client that must
keep getting correct replies.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio

from trinomite import DatastoreSpec, Node, open_node
from trinomite.client.reactor import RECEIVE_SIZE
from trinomite.testing import RedisServer

from .conftest import node_config
from .rawclient import RawClient, bulk, encode, encode_all, node_address

BIG = b"v" * (256 * 1024)


@pytest.fixture
async def node(redis_backend: RedisServer) -> AsyncIterator[Node]:
    # One datastore connection: replies come back in the order requests were sent.
    config = node_config(
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port), datastore_connections=1
    )
    async with open_node(config) as running:
        yield running


async def small_window_client(node: Node) -> trio.SocketStream:
    """A client whose receive buffer is small, so unread replies back up in the node."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(node_address(node))
    return trio.SocketStream(sock)


async def round_trips(client: RawClient, count: int) -> None:
    for i in range(count):
        assert await client.call("SET", f"k{i}", i) == b"+OK\r\n"
        assert await client.call("GET", f"k{i}") == bulk(i)


async def test_a_client_that_does_not_read_holds_up_nobody(node: Node) -> None:
    with trio.fail_after(20):
        async with await RawClient.to_node(node) as good:
            assert await good.call("SET", "big", BIG) == b"+OK\r\n"
            slow = RawClient(await small_window_client(node))
            count = 40  # 10 MB of replies, far more than the socket buffers hold
            await slow.send(encode_all([("GET", "big")] * count))
            # The slow client's round went to the datastore first, so by the time
            # the good client is answered, the node holds unsent replies for it.
            await round_trips(good, 50)
            backlogged = [c for c in node.clients.connections.values() if c.backlog]
            assert len(backlogged) == 1
            # The slow client then reads everything, byte for byte.
            assert await slow.read(count) == [bulk(BIG)] * count
            assert await slow.call("PING") == b"+PONG\r\n"
            assert not any(c.backlog for c in node.clients.connections.values())
            await slow.aclose()


async def test_half_closed_client_gets_every_reply(node: Node) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(*node_address(node))
        client = RawClient(stream)
        commands = [("SET", f"h{i}", i) for i in range(100)] + [("GET", "h99")]
        await client.send(encode_all(commands))
        await stream.send_eof()
        received = await client.wait_closed()
        assert received == b"+OK\r\n" * 100 + bulk(99)
        await node.clients.wait_empty()
        assert node.counters.client_eof >= 1


async def test_reset_in_mid_round_is_contained(node: Node) -> None:
    with trio.fail_after(20):
        async with await RawClient.to_node(node) as good:
            assert await good.call("SET", "big", BIG) == b"+OK\r\n"
            victim = await small_window_client(node)
            await victim.send_all(encode_all([("GET", "big")] * 20))
            await round_trips(good, 20)  # the victim's replies are now backed up
            # Close with a reset (linger 0) while the node still owes it replies.
            victim.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            victim.socket.close()
            await round_trips(good, 20)
            errors = node.counters.client_err
        await node.clients.wait_empty()
        assert node.counters.client_connections == 0
        assert node.counters.client_err == errors == 0


async def test_a_failing_handler_closes_only_its_client(
    node: Node, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    start = node.dispatcher.start

    def start_or_fail(session, requests, blob, sink):  # type: ignore[no-untyped-def]
        if requests[0][0] == b"BOOM":
            raise RuntimeError("injected fault")
        return start(session, requests, blob, sink)

    monkeypatch.setattr(node.dispatcher, "start", start_or_fail)
    with trio.fail_after(10), caplog.at_level(logging.ERROR, "trinomite.client"):
        async with await RawClient.to_node(node) as good, await RawClient.to_node(node) as bad:
            assert await good.call("SET", "a", 1) == b"+OK\r\n"
            await bad.send(encode("BOOM"))
            assert await bad.wait_closed() == b""
            assert await good.call("GET", "a") == bulk(1)
    assert node.counters.client_err == 1
    assert "handler failed" in caplog.text


@pytest.mark.parametrize(
    "size", [RECEIVE_SIZE - 1, RECEIVE_SIZE, RECEIVE_SIZE + 1, 3 * RECEIVE_SIZE]
)
async def test_pipelines_around_the_receive_size(node: Node, size: int) -> None:
    """Edge-triggered reads: nothing is left unread when a read fills the buffer exactly."""
    one = encode("SET", "key", "v")
    pad = size - len(one) - len(encode("SET", "pad", b""))
    while len(encode("SET", "pad", b"x" * pad)) + len(one) > size:
        pad -= 1  # the bulk header grows with the value's length
    data = encode("SET", "pad", b"x" * pad) + one
    assert len(data) == size
    with trio.fail_after(10):
        async with await RawClient.to_node(node) as client:
            for _ in range(3):
                assert await client.pipeline(data, 2) == [b"+OK\r\n"] * 2
            assert await client.call("GET", "key") == bulk("v")


async def test_many_clients_in_one_reactor(node: Node) -> None:
    async def client(i: int) -> None:
        async with await RawClient.to_node(node) as c:
            commands = [("SET", f"c{i}:{j}", j) for j in range(20)] + [("MGET", f"c{i}:19")]
            replies = await c.pipeline(encode_all(commands), 21)
            assert replies == [b"+OK\r\n"] * 20 + [b"*1\r\n" + bulk(19)]

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(client, i)
        await node.clients.wait_empty()
    assert node.counters.client_connections == 0


async def test_delimited_runs_are_byte_exact_for_big_and_tricky_replies(
    node: Node, redis_backend: RedisServer
) -> None:
    """Large aggregates and values that look like a run delimiter, against redis itself."""
    lookalike = b"$32\r\n" + b"0123456789abcdef" * 2 + b"\r\n"  # the shape of a delimiter echo
    setup = [
        ("DEL", "list", "hash", "look"),
        ("RPUSH", "list", *[f"item-{i}" for i in range(5000)]),
        ("HSET", "hash", *[x for i in range(2000) for x in (f"f{i}", lookalike * 2)]),
        ("SET", "look", lookalike),
    ]
    queries = [
        ("LRANGE", "list", 0, -1),
        ("GET", "look"),
        ("HGETALL", "hash"),
        ("ECHO", lookalike),  # answered by the node itself
        ("LRANGE", "list", 10, 20),
        ("GET", "look"),
    ]
    with trio.fail_after(20):
        async with (
            await RawClient.connect(redis_backend.host, redis_backend.port) as direct,
            await RawClient.to_node(node) as proxied,
        ):
            await direct.pipeline(encode_all(setup), len(setup))
            want = await direct.pipeline(encode_all(queries), len(queries))
            got = await proxied.pipeline(encode_all(queries), len(queries))
            assert got == want
            assert [await proxied.call(*q) for q in queries] == want


async def test_a_leaked_run_delimiter_cannot_split_a_later_run(
    node: Node, redis_backend: RedisServer
) -> None:
    """Each run gets a fresh ECHO token, so one read from redis's slow log is useless.

    With ``slowlog-log-slower-than 0`` every command, the node's ECHO
    delimiters included, is logged where a client could read it (a script can
    call SLOWLOG).  A value holding a logged token's echo must come back
    whole, with every other reply in its place.
    """
    with trio.fail_after(20):
        async with (
            await RawClient.connect(redis_backend.host, redis_backend.port) as admin,
            await RawClient.to_node(node) as client,
        ):
            assert await admin.call("CONFIG", "SET", "slowlog-log-slower-than", "0") == b"+OK\r\n"
            assert await admin.call("SLOWLOG", "RESET") == b"+OK\r\n"
            for i in range(3):
                assert await client.call("SET", f"s{i}", i) == b"+OK\r\n"
            log = await admin.call("SLOWLOG", "GET", "100")
            tokens = set(re.findall(rb"\$4\r\nECHO\r\n\$32\r\n([0-9a-f]{32})\r\n", log))
            assert len(tokens) >= 3  # one per run (and one per connect), all different
            for token in tokens:
                forged = b"$32\r\n" + token + b"\r\n"
                assert await client.call("SET", "forged", b"x" + forged + b"y") == b"+OK\r\n"
                replies = await client.pipeline(
                    encode_all([("GET", "forged"), ("GET", "s1"), ("PING",)]), 3
                )
                assert replies == [bulk(b"x" + forged + b"y"), bulk(1), b"+PONG\r\n"]
