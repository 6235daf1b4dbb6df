"""Graceful shutdown (``Node.shutdown``) and the client connection limit.

Requests are made slow or endless with the fault proxy between node and
redis, so a request is provably in flight when the drain starts: the test
waits until the proxy has received the request's bytes (an event, not a
sleep).
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from trinomite import DatastoreSpec, Node, NodeConfig, open_node, serve_node
from trinomite.testing import RedisServer
from trinomite.testing.faultproxy import FaultProxy

from .conftest import node_config
from .rawclient import RawClient, bulk, encode, node_address

MAX_CLIENTS = b"-ERR max number of clients reached\r\n"


@attrs.define
class RunningNode:
    """A node run by ``serve_node`` in a test nursery; ``returned`` is set when it returns."""

    node: Node
    returned: trio.Event


async def start_node(nursery: trio.Nursery, config: NodeConfig) -> RunningNode:
    returned = trio.Event()

    async def run(*, task_status: trio.TaskStatus[Node]) -> None:
        await serve_node(config, task_status=task_status)
        returned.set()

    node: Node = await nursery.start(run)
    return RunningNode(node, returned)


async def send_in_flight(proxy: FaultProxy, client: RawClient, *args: str) -> None:
    """Send a request and return once the node has passed it on to the datastore."""
    request = encode(*args)
    before = proxy.bytes_up
    await client.send(request)
    await proxy.wait_until(lambda p: p.bytes_up >= before + len(request))


async def test_shutdown_drains_in_flight_and_closes_idle(
    nursery: trio.Nursery, proxy: FaultProxy
) -> None:
    config = node_config(DatastoreSpec.tcp(proxy.host, proxy.port), timeout=5000)
    with trio.fail_after(10):
        running = await start_node(nursery, config)
        address = node_address(running.node)
        async with (
            await RawClient.connect(*address) as busy,
            await RawClient.connect(*address) as idle,
        ):
            assert await busy.call("SET", "slow", "value") == b"+OK\r\n"
            assert await idle.call("PING") == b"+PONG\r\n"

            proxy.latency(0.3)
            await send_in_flight(proxy, busy, "GET", "slow")
            start = trio.current_time()
            nursery.start_soon(running.node.shutdown, 5.0)

            assert await idle.wait_closed() == b"", "an idle client must be closed at once"
            # The listener is closed before idle clients are.
            with pytest.raises(OSError, match="all attempts to connect"):
                await trio.open_tcp_stream(*address)
            assert await busy.read(1) == [bulk("value")], "the in-flight request is answered"
            assert await busy.wait_closed() == b""
        await running.returned.wait()
        assert trio.current_time() - start < 2.0, "shutdown waited for the whole grace period"


@pytest.mark.parametrize("from_config", [False, True], ids=["argument", "shutdown_grace"])
async def test_shutdown_grace_bounds_the_drain(
    nursery: trio.Nursery, proxy: FaultProxy, from_config: bool
) -> None:
    """A request that never completes holds the drain for the grace period only."""
    config = node_config(
        DatastoreSpec.tcp(proxy.host, proxy.port),
        timeout=10_000,
        shutdown_grace=300 if from_config else 60_000,
    )
    with trio.fail_after(10):
        running = await start_node(nursery, config)
        async with await RawClient.connect(*node_address(running.node)) as client:
            proxy.drop()  # the request below is never answered
            await send_in_flight(proxy, client, "GET", "never")
            start = trio.current_time()
            if from_config:
                nursery.start_soon(running.node.shutdown)
            else:
                nursery.start_soon(running.node.shutdown, 0.3)
            await running.returned.wait()
            elapsed = trio.current_time() - start
            assert 0.3 <= elapsed < 2.0, f"serve_node returned after {elapsed:.2f}s"
            with pytest.raises(EOFError):  # cut without a reply
                await client.read(1)


async def test_client_connection_limit(redis_backend: RedisServer) -> None:
    config = node_config(
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port), client_connections=2
    )
    with trio.fail_after(10):
        async with open_node(config) as node:
            address = node_address(node)
            first = await RawClient.connect(*address)  # closed below, to free its place
            async with await RawClient.connect(*address) as second:
                assert await first.call("PING") == b"+PONG\r\n"
                assert await second.call("SET", "k", "v") == b"+OK\r\n"
                async with await RawClient.connect(*address) as third:
                    assert await third.wait_closed() == MAX_CLIENTS
                assert await second.call("GET", "k") == bulk("v")  # the others are unaffected

                await first.aclose()
                await trio.testing.wait_all_tasks_blocked()  # the node has seen the close
                async with await RawClient.connect(*address) as replacement:
                    assert await replacement.call("PING") == b"+PONG\r\n"
