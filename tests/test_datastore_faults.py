"""The node facing a failing datastore: killed, silent, resetting, slow, absent.

Every scenario runs real redis-servers, a real node and raw clients, with a
fault proxy (``tests/faultproxy.py``) between node and redis where the
fault is on the wire.  The contract checked each time:

* every request gets a reply (its value, or a ``-ERR Storage: ...`` error),
  and no client hangs (every wait is inside ``trio.fail_after``);
* the node keeps running (a crash would fail the test's nursery);
* once the fault is gone the node recovers by itself, on the client
  connections that were already open.

Recovery is polled (bounded in count and time): it depends on an external
redis-server process coming back and on the node's reconnect backoff.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import redis
import trio
import trio.testing

from trinomite import DatastoreSpec, Node, open_node
from trinomite.testing import RedisServer
from trinomite.testing.faultproxy import FaultProxy, Mode

from .conftest import node_config
from .rawclient import RawClient, bulk, encode, encode_all, storage_error

REFUSED = b"-ERR Storage: Datastore refused connection\r\n"
TIMED_OUT = b"-ERR Storage: Connection timed out\r\n"
#: Reconnect backoff capped at 200 ms, so recovery takes well under a second.
FAST_RETRY = {"server_retry_timeout": 200}


@asynccontextmanager
async def node_via(proxy: FaultProxy, **overrides: Any) -> AsyncIterator[Node]:
    """A node whose datastore is reached through ``proxy``."""
    config = node_config(DatastoreSpec.tcp(proxy.host, proxy.port), **{**FAST_RETRY, **overrides})
    async with open_node(config) as node:
        yield node


async def set_get(client: RawClient, key: str, value: str | int) -> list[bytes]:
    return await client.pipeline(encode_all([("SET", key, value), ("GET", key)]), 2)


async def wait_recovered(client: RawClient, *, attempts: int = 200, pause: float = 0.05) -> int:
    """Poll SET/GET until both succeed; returns the number of failed attempts.

    Bounded: at most ``attempts`` tries, ``pause`` seconds apart.
    """
    for attempt in range(attempts):
        replies = await set_get(client, "probe", attempt)
        if replies == [b"+OK\r\n", bulk(attempt)]:
            return attempt
        assert all(storage_error(reply) for reply in replies), replies
        await trio.sleep(pause)
    raise AssertionError(f"node did not recover after {attempts} attempts")


# -- the fault proxy itself ----------------------------------------------------


async def test_fault_proxy_modes(proxy: FaultProxy) -> None:
    with trio.fail_after(10):
        async with await RawClient.connect(proxy.host, proxy.port) as client:
            assert await client.call("PING") == b"+PONG\r\n"
            assert proxy.accepted == 1

            proxy.latency(0.1)
            start = trio.current_time()
            assert await client.call("PING") == b"+PONG\r\n"
            assert trio.current_time() - start >= 0.2  # request and reply each delayed

            proxy.drop()
            await client.send(encode_all([("PING",)]))
            with trio.move_on_after(0.3) as blackholed:
                await client.read(1)
            assert blackholed.cancelled_caught
            proxy.pass_through()  # the dropped PING is gone; the link still works
            assert await client.call("ECHO", "back") == bulk("back")

            proxy.reset()
            with pytest.raises(trio.BrokenResourceError):
                await client.wait_closed()
        assert await new_connection_fate(proxy) == "reset"

        proxy.pass_through()
        async with await RawClient.connect(proxy.host, proxy.port) as client:
            assert await client.call("PING") == b"+PONG\r\n"
            proxy.partition()
            assert proxy.mode is Mode.REFUSE
            assert await client.wait_closed() == b""  # cut with a FIN
        assert await new_connection_fate(proxy) == "closed"
        await proxy.wait_until(lambda p: p.live == 0)


async def new_connection_fate(proxy: FaultProxy) -> str:
    """How a new connection to ``proxy`` ends: "reset" or "closed" (a FIN)."""
    try:
        client = await RawClient.connect(proxy.host, proxy.port)
    except OSError:  # the RST raced the end of connect()
        return "reset"
    async with client:
        try:
            received = await client.wait_closed()
        except trio.BrokenResourceError:
            return "reset"
    assert received == b""
    return "closed"


# -- load with a fault in the middle -------------------------------------------


@attrs.define
class LoadStats:
    rounds: int = 0
    ok: int = 0
    errors: int = 0
    progress: trio.Event = attrs.field(factory=trio.Event)

    def record(self, replies: list[bytes], expected: list[bytes]) -> None:
        self.rounds += 1
        for reply, want in zip(replies, expected, strict=True):
            if reply == want:
                self.ok += 1
            else:
                assert storage_error(reply), f"unexpected reply {reply!r} (wanted {want!r})"
                self.errors += 1
        self.progress.set()
        self.progress = trio.Event()

    async def wait_for(self, condition: Callable[[LoadStats], bool]) -> None:
        while not condition(self):
            await self.progress.wait()


async def client_load(
    client: RawClient, name: str, stats: LoadStats, stop: trio.Event, pipeline: int = 4
) -> None:
    """Pipelines of SET/GET on fresh keys until ``stop``; every reply is checked."""
    for round_ in range(100_000):
        if stop.is_set():
            return
        commands, expected = [], []
        for i in range(pipeline):
            key, value = f"{name}:{round_}:{i}", f"v{round_}.{i}"
            commands += [("SET", key, value), ("GET", key)]
            expected += [b"+OK\r\n", bulk(value)]
        with trio.fail_after(5):  # a hung request fails the test here
            stats.record(await client.pipeline(encode_all(commands), len(commands)), expected)
        await trio.lowlevel.checkpoint()  # fairness: failing requests are answered at once
    raise AssertionError("load was never stopped")


async def run_load_with_fault(
    node: Node, fault: Callable[[], Awaitable[None]], clients: int = 8
) -> tuple[LoadStats, list[RawClient]]:
    """Start ``clients`` load clients, inject ``fault`` mid-load, stop once it shows.

    Every other client speaks RESP3, so both datastore connection groups
    see the fault.  Returns the stats and the (still open) connections.
    """
    stats, stop = LoadStats(), trio.Event()
    connections = [await RawClient.to_node(node) for _ in range(clients)]
    for client in connections[::2]:
        assert (await client.call("HELLO", 3)).startswith(b"%")
    async with trio.open_nursery() as nursery:
        for i, client in enumerate(connections):
            nursery.start_soon(client_load, client, f"c{i}", stats, stop)
        await stats.wait_for(lambda s: s.rounds >= 5 * clients)
        ok_before = stats.ok
        await fault()
        await stats.wait_for(lambda s: s.errors >= 4 * clients)
        stop.set()
    assert ok_before > 0
    return stats, connections


async def all_recovered(connections: list[RawClient]) -> None:
    """Every connection open during the fault, RESP2 and RESP3, is served again."""
    for client in connections:
        await wait_recovered(client)
        await client.aclose()


async def test_backend_killed_mid_load(redis_backend: RedisServer) -> None:
    config = node_config(DatastoreSpec.tcp(redis_backend.host, redis_backend.port), **FAST_RETRY)
    with trio.fail_after(20):
        async with open_node(config) as node:
            port = redis_backend.port
            stats, connections = await run_load_with_fault(
                node, lambda: trio.to_thread.run_sync(redis_backend.stop)
            )
            assert stats.errors > 0
            assert stats.ok > 0

            await trio.to_thread.run_sync(redis_backend.start)
            assert redis_backend.port == port, "redis came back on another port"
            await all_recovered(connections)


async def test_reset_mid_load(proxy: FaultProxy) -> None:
    async def reset() -> None:
        proxy.reset()
        await trio.lowlevel.checkpoint()

    with trio.fail_after(20):
        async with node_via(proxy) as node:
            stats, connections = await run_load_with_fault(node, reset)
            assert stats.errors > 0
            proxy.pass_through()
            await all_recovered(connections)


# -- a datastore that never answers, or answers slowly ---------------------------


async def test_blackholed_datastore_times_out_then_recovers(proxy: FaultProxy) -> None:
    with trio.fail_after(15):
        async with node_via(proxy, timeout=200) as node, await RawClient.to_node(node) as client:
            assert await set_get(client, "k", "v") == [b"+OK\r\n", bulk("v")]

            proxy.drop()
            start = trio.current_time()
            assert await client.call("GET", "k") == TIMED_OUT
            elapsed = trio.current_time() - start
            assert 0.19 <= elapsed < 1.0, f"timed out after {elapsed:.2f}s, not ~0.2s"

            # A whole pipeline in flight gets one error per request, in time.
            commands = [("GET", "k")] * 10
            with trio.fail_after(2):
                replies = await client.pipeline(encode_all(commands), 10)
            assert set(replies) <= {TIMED_OUT, REFUSED}, replies

            proxy.pass_through()
            await wait_recovered(client)
            assert await client.call("GET", "k") == bulk("v")


async def test_latency_below_timeout_gives_correct_replies(proxy: FaultProxy) -> None:
    with trio.fail_after(15):
        async with node_via(proxy, timeout=2000) as node, await RawClient.to_node(node) as client:
            proxy.latency(0.05)
            start = trio.current_time()
            assert await set_get(client, "slow", "value") == [b"+OK\r\n", bulk("value")]
            assert trio.current_time() - start >= 0.1  # the proxy really delayed it
            commands = [("INCR", "counter")] * 100
            replies = await client.pipeline(encode_all(commands), 100)
            assert replies == [b":%d\r\n" % i for i in range(1, 101)]
            assert await client.call("GET", "counter") == bulk(100)


async def test_pipeline_depth_bound_holds_at_the_datastore(proxy: FaultProxy) -> None:
    """With ``max_client_pipeline: 10`` a 50-request pipeline reaches redis 10 at a time."""
    request = encode("INCR", "depth")
    with trio.fail_after(10):
        async with (
            node_via(proxy, max_client_pipeline=10) as node,
            await RawClient.to_node(node) as client,
        ):
            proxy.latency(0.05)  # each slice is answered before the next is sent
            before = proxy.bytes_up
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send, request * 50)
                await proxy.wait_until(lambda p: p.bytes_up > before)
                first_chunk = proxy.bytes_up - before
            # Each run is followed by the pool's run delimiter, ECHO <32 hex digits>.
            assert first_chunk <= 10 * len(request) + len(encode("ECHO", "0" * 32))
            assert await client.read(50) == [b":%d\r\n" % i for i in range(1, 51)]


# -- datastore absent when the node starts ----------------------------------------


async def test_backend_down_at_start_refuses_at_once_then_recovers(
    redis_backend: RedisServer,
) -> None:
    config = node_config(
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port), preconnect=True, **FAST_RETRY
    )
    with trio.fail_after(15):
        await trio.to_thread.run_sync(redis_backend.stop)
        async with open_node(config) as node, await RawClient.to_node(node) as client:
            start = trio.current_time()
            assert await set_get(client, "k", "v") == [REFUSED, REFUSED]
            assert trio.current_time() - start < 0.5

            port = redis_backend.port
            await trio.to_thread.run_sync(redis_backend.start)
            assert redis_backend.port == port
            await wait_recovered(client)


async def test_datastore_refusing_the_run_delimiter_fails_its_connections(
    redis_backend: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Runs are delimited with ECHO: a datastore that refuses it is refused, loudly.

    An ACL that denies ECHO stands in for any datastore that will not echo.
    Requests fail fast with the refused error (never a hang), the reason is
    logged, and the node recovers once ECHO is allowed again.
    """
    admin = redis.Redis(host=redis_backend.host, port=redis_backend.port, socket_timeout=5)
    await trio.to_thread.run_sync(admin.execute_command, "ACL", "SETUSER", "default", "-echo")
    config = node_config(
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port), preconnect=True, **FAST_RETRY
    )
    with trio.fail_after(15):
        async with open_node(config) as node, await RawClient.to_node(node) as client:
            assert await set_get(client, "k", "v") == [REFUSED, REFUSED]
            assert "handshake refused: -NOPERM" in caplog.text
            await trio.to_thread.run_sync(
                admin.execute_command, "ACL", "SETUSER", "default", "+echo"
            )
            await wait_recovered(client)
            assert await set_get(client, "k", "v") == [b"+OK\r\n", bulk("v")]


async def test_lazy_connect_without_preconnect(proxy: FaultProxy) -> None:
    with trio.fail_after(10):
        async with node_via(proxy, preconnect=False) as node:
            await trio.testing.wait_all_tasks_blocked()
            assert proxy.accepted == 0, "preconnect: false must not connect at start"
            async with await RawClient.to_node(node) as client:
                assert await set_get(client, "lazy", 1) == [b"+OK\r\n", bulk(1)]
            assert proxy.accepted == 1  # only the RESP2 connection was needed
