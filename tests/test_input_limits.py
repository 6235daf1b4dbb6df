"""Input limits on a running node: exact errors just above each limit, nothing just below,
and huge declarations that cost the process (measured by its RSS) almost nothing.

The node runs in this process in front of a real redis-server; the
hostile input comes over real sockets.  RSS is read from /proc before and
after, so it includes everything the node allocated for the attempts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trinomite import DatastoreSpec, Node, open_node
from trinomite.testing import RedisServer

from .conftest import node_config
from .rawclient import RawClient, bulk, encode

MIB = 1024 * 1024


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@asynccontextmanager
async def limited_node(backend: RedisServer, **overrides: Any) -> AsyncIterator[Node]:
    config = node_config(DatastoreSpec.tcp(backend.host, backend.port), **overrides)
    async with open_node(config) as node:
        yield node


async def refused(node: Node, data: bytes) -> bytes:
    """What the node answers ``data`` with, on a connection it must then close."""
    with trio.fail_after(10):
        async with await RawClient.to_node(node) as raw:
            await raw.send(data)
            return await raw.wait_closed()


def protocol_error(message: str) -> bytes:
    return b"-ERR Protocol error: " + message.encode() + b"\r\n"


async def test_each_limit_just_below_and_just_above(redis_backend: RedisServer) -> None:
    limits = {"max_bulk_len": 1024, "max_multibulk_len": 8, "max_inline_len": 100}
    async with limited_node(redis_backend, **limits) as node:
        async with await RawClient.to_node(node) as raw:
            assert await raw.call("SET", "k", b"v" * 1024) == b"+OK\r\n"
            assert await raw.call("DEL", *["k"] * 7) == b":1\r\n"  # 8 arguments
            inline = b"ECHO " + b"e" * 95  # 100 bytes
            await raw.send(inline + b"\r\n")
            assert await raw.read(1) == [bulk(b"e" * 95)]
        too_big = encode("SET", "k", b"v" * 1025)
        assert await refused(node, too_big) == protocol_error("invalid bulk length")
        assert await refused(node, encode("DEL", *["k"] * 8)) == protocol_error(
            "invalid multibulk length"
        )
        assert await refused(node, b"ECHO " + b"e" * 96 + b"\r\n") == protocol_error(
            "too big inline request"
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*2147483648\r\n", "invalid multibulk length"),
        (b"*2000000000\r\n", "invalid multibulk length"),
        (b"*1\r\n$9999999999\r\n", "invalid bulk length"),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$629145600\r\n" + b"x" * MIB, "invalid bulk length"),
        (b"x" * (70 * 1024), "too big inline request"),
    ],
    ids=["count-2^31", "count-2e9", "bulk-10GB", "bulk-600MB-partly-sent", "inline-70KB"],
)
async def test_huge_declarations_are_refused_and_cost_nothing(
    redis_backend: RedisServer, data: bytes, message: str
) -> None:
    async with limited_node(redis_backend) as node:
        before = rss()
        for _ in range(4):  # four clients at once would need four allocations
            assert (await refused(node, data)).endswith(protocol_error(message))
        assert rss() - before < 5 * MIB
        async with await RawClient.to_node(node) as raw:  # others are served
            assert await raw.call("PING") == b"+PONG\r\n"


async def test_an_abandoned_half_sent_bulk_is_freed(redis_backend: RedisServer) -> None:
    async with limited_node(redis_backend) as node:
        raw = await RawClient.to_node(node)
        await raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$419430400\r\n" + b"x" * (4 * MIB))
        with trio.fail_after(10):
            while node.clients.held < 4 * MIB:
                await trio.testing.wait_all_tasks_blocked(0.01)
            await raw.aclose()
            while node.clients.held:
                await trio.testing.wait_all_tasks_blocked(0.01)
        assert node.counters.client_connections == 0
