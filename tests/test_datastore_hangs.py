"""A datastore that is slow, hung, reset, garbled, loading or locked: clear errors, in time.

Each fault comes from the fault proxy in front of a real redis-server, or
from a scripted fake datastore (garbage and -LOADING, which a real server
cannot be made to send on demand), and the node must say what happened,
fail only the requests that had to fail, and recover by itself.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import hiredis
import trio

from trinomite import DatastoreSpec, Node, open_node
from trinomite.testing import RedisServer
from trinomite.testing.faultproxy import FaultProxy

from .conftest import in_thread, node_config
from .rawclient import RawClient, bulk

TIMED_OUT = b"-ERR Storage: Connection timed out\r\n"
NOT_ANSWERING = b"-ERR Storage: Datastore not answering, reconnecting\r\n"
LOST = b"-ERR Storage: Datastore connection lost, reconnecting\r\n"
REFUSED = b"-ERR Storage: Datastore refused connection\r\n"
INVALID = b"-ERR Storage: Datastore sent an invalid reply\r\n"
WAIT = 15.0


@asynccontextmanager
async def node_at(host: str, port: int, **overrides: Any) -> AsyncIterator[Node]:
    overrides.setdefault("server_retry_timeout", 200)
    async with open_node(node_config(DatastoreSpec.tcp(host, port), **overrides)) as node:
        yield node


def connects(node: Node) -> int:
    return sum(c.connects for c in node.pool.connections)


async def until_answered(client: RawClient, *command: str) -> bytes:
    """Repeat ``command`` until it gets a reply that is not a Storage error (bounded)."""
    for _ in range(300):
        reply = await client.call(*command)
        if not reply.startswith(b"-ERR Storage:"):
            return reply
        await trio.sleep(0.02)
    raise AssertionError(f"{command} never got past the Storage errors")


async def test_a_slow_reply_times_out_alone_and_the_connection_stays(proxy: FaultProxy) -> None:
    async with node_at(proxy.host, proxy.port, timeout=300) as node:
        client = await RawClient.to_node(node)
        assert await client.call("SET", "k", "v") == b"+OK\r\n"
        before = connects(node)
        proxy.latency(0.45)  # longer than timeout, shorter than twice it
        with trio.fail_after(WAIT):
            assert await client.call("GET", "k") == TIMED_OUT
            proxy.pass_through()
            # The late reply is dropped; the next request is answered on the same connection.
            assert await client.call("GET", "k") == bulk("v")
        assert connects(node) == before
        assert sum(c.timedout_requests for c in node.pool.connections) == 1
        await client.aclose()


async def test_a_hung_datastore_is_replaced_and_clients_hear_why(proxy: FaultProxy) -> None:
    async with node_at(proxy.host, proxy.port, timeout=200) as node:
        client = await RawClient.to_node(node)
        assert await client.call("SET", "k", "v") == b"+OK\r\n"
        proxy.drop()  # accepts, reads, never answers
        with trio.fail_after(WAIT):
            assert await client.call("GET", "k") == TIMED_OUT
            seen = set()
            while NOT_ANSWERING not in seen:  # hung after 2 x timeout, then reconnecting
                seen.add(await client.call("GET", "k"))
            assert seen <= {TIMED_OUT, NOT_ANSWERING}
            proxy.pass_through()
            assert await until_answered(client, "GET", "k") == bulk("v")
        await client.aclose()


async def test_a_reset_says_the_connection_was_lost(proxy: FaultProxy) -> None:
    async with node_at(proxy.host, proxy.port, server_retry_timeout=2000) as node:
        client = await RawClient.to_node(node)
        assert await client.call("SET", "k", "v") == b"+OK\r\n"
        with trio.fail_after(WAIT):
            proxy.reset()  # every connection, new ones too, is reset
            reply = await client.call("GET", "k")
            while reply == bulk("v"):  # the reset may land after this request
                reply = await client.call("GET", "k")
            assert reply == LOST
            proxy.pass_through()
            assert await until_answered(client, "GET", "k") == bulk("v")
        await client.aclose()


class FakeDatastore:
    """Answers ECHO (the node's run delimiter) truly and everything else by ``mode``."""

    REPLIES: ClassVar[dict[str, bytes]] = {
        "ok": b"+OK\r\n",
        "loading": b"-LOADING Redis is loading the dataset in memory\r\n",
        "garbage": b"?this is not RESP\r\n",
    }

    def __init__(self) -> None:
        self.mode = "ok"

    async def handle(self, stream: trio.SocketStream) -> None:
        reader = hiredis.Reader()
        async with stream:
            while data := await stream.receive_some(65536):
                reader.feed(data)
                out = b""
                while (request := reader.gets()) is not False:
                    if request[0].upper() == b"ECHO":
                        out += bulk(request[1])
                    else:
                        out += self.REPLIES[self.mode]
                await stream.send_all(out)


@asynccontextmanager
async def fake_datastore() -> AsyncIterator[tuple[FakeDatastore, int]]:
    fake = FakeDatastore()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, fake.handle, 0, host="127.0.0.1")
        )
        yield fake, listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_loading_is_passed_on_and_garbage_is_a_clear_error() -> None:
    async with fake_datastore() as (fake, port), node_at("127.0.0.1", port, timeout=500) as node:
        client = await RawClient.to_node(node)
        with trio.fail_after(WAIT):
            assert await client.call("SET", "k", "v") == b"+OK\r\n"
            fake.mode = "loading"  # as Redis answers while it loads its dataset
            assert await client.call("GET", "k") == FakeDatastore.REPLIES["loading"]
            fake.mode = "garbage"
            assert await client.call("GET", "k") == INVALID
            assert node.counters.client_connections == 1  # the client keeps its connection
            fake.mode = "ok"
            assert await until_answered(client, "SET", "k", "v") == b"+OK\r\n"
        await client.aclose()


async def test_a_datastore_that_wants_a_password_is_refused_clearly(caplog) -> None:
    backend = RedisServer(options={"requirepass": "only-the-operator-knows"})
    await in_thread(backend.start)
    try:
        async with node_at(backend.host, backend.port) as node:
            client = await RawClient.to_node(node)
            with trio.fail_after(WAIT):
                assert await client.call("GET", "k") == REFUSED
            await client.aclose()
        assert "handshake refused: -NOAUTH" in caplog.text
    finally:
        backend.close()
