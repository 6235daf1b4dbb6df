"""Bounds on hostile clients: slowloris, idle clients, non-reading pipeliners, memory hogs.

A node in front of a real redis-server, raw sockets for the hostile
clients, and a well-behaved redis-py client beside them that must keep
getting correct replies.  Timeouts are short (hundreds of ms) so the waits
are bounded; the sweep that enforces them is the node's own.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio.testing

from trinomite import DatastoreSpec, Node, open_node
from trinomite.client.bounds import ClientBounds, offenders
from trinomite.testing import RedisServer

from .conftest import client_for, in_thread, node_config
from .rawclient import RawClient

WAIT = 10.0
MIB = 1024 * 1024


@asynccontextmanager
async def bounded_node(backend: RedisServer, **overrides: Any) -> AsyncIterator[Node]:
    config = node_config(DatastoreSpec.tcp(backend.host, backend.port), **overrides)
    async with open_node(config) as node:
        yield node


async def closed_by_node(raw: RawClient) -> bool:
    """Whether the node closed this connection (EOF or reset), reading what it sent."""
    try:
        return await raw.stream.receive_some(65536) == b""
    except trio.BrokenResourceError:
        return True


def test_offenders_are_the_biggest_first() -> None:
    class H:
        def __init__(self, held: int) -> None:
            self.held = held

    conns = [H(1), H(50), H(0), H(30), H(20)]
    assert [c.held for c in offenders(conns, 60)] == [50, 30]
    assert [c.held for c in offenders(conns, 1)] == [50]
    assert offenders(conns, 0) == []
    assert ClientBounds(read_timeout=0.2).sweep_interval == 0.05
    assert ClientBounds(read_timeout=0, idle_timeout=0).sweep_interval == 1.0


async def test_slowloris_clients_are_closed_and_others_served(redis_backend: RedisServer) -> None:
    count = 500
    async with bounded_node(redis_backend, client_read_timeout=400) as node:
        good = client_for(node)
        assert await in_thread(good.set, "k", "v")
        lorises = [await RawClient.to_node(node) for _ in range(count)]
        for raw in lorises:
            await raw.send(b"*2\r\n$3\r\nGET\r\n$1")  # a request begun, never finished
        with trio.fail_after(WAIT):
            # One more byte each, as slowloris does: it must not reset the clock.
            for raw in lorises[:50]:
                await raw.send(b"\r")
            for _ in range(20):
                assert await in_thread(good.get, "k") == b"v"
            for raw in lorises:
                assert await closed_by_node(raw)
        assert node.counters.client_read_timeouts == count
        assert await in_thread(good.get, "k") == b"v"
        assert node.counters.client_connections == 1


async def test_idle_clients_are_closed_only_when_asked(redis_backend: RedisServer) -> None:
    async with bounded_node(redis_backend, client_idle_timeout=300) as node:
        idle = await RawClient.to_node(node)
        busy = await RawClient.to_node(node)
        with trio.fail_after(WAIT):
            while node.counters.client_idle_timeouts == 0:
                assert await busy.call("PING") == b"+PONG\r\n"
                await trio.sleep(0.05)
            assert await closed_by_node(idle)
            assert await busy.call("PING") == b"+PONG\r\n"
        assert node.counters.client_idle_timeouts == 1
    async with bounded_node(redis_backend) as node:  # default: never
        assert node.config.client_idle_timeout == 0
        assert node.clients.bounds.idle_timeout == 0


async def test_a_client_that_never_reads_hits_the_output_limit(
    redis_backend: RedisServer,
) -> None:
    value = b"x" * (100 * 1024)
    async with bounded_node(redis_backend, client_output_buffer_limit=4 * MIB) as node:
        good = client_for(node)
        assert await in_thread(good.set, "big", value)
        hog = socket.create_connection((node.client_address.host, node.client_address.port))
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 500)  # 50 MB of replies, unread
        with trio.fail_after(WAIT):
            while node.counters.client_output_limit_closes == 0:
                assert await in_thread(good.strlen, "big") == len(value)
        hog.close()
        assert node.clients.held < MIB
        assert await in_thread(good.get, "big") == value


async def test_unread_replies_below_the_output_limit_are_kept(redis_backend: RedisServer) -> None:
    value = b"x" * (100 * 1024)
    async with bounded_node(redis_backend, client_output_buffer_limit=16 * MIB) as node:
        assert await in_thread(client_for(node).set, "big", value)
        reader = socket.socket()
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # little room in the kernel
        reader.connect((node.client_address.host, node.client_address.port))
        reader.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 100)  # 10 MB, not read yet
        with trio.fail_after(WAIT):
            while node.clients.held < 4 * MIB:  # the replies wait in the node, under 16 MiB
                await trio.testing.wait_all_tasks_blocked(0.01)
        assert node.counters.client_output_limit_closes == 0
        expected = (b"$102400\r\n" + value + b"\r\n") * 100
        received = await in_thread(_read_exactly, reader, len(expected))
        assert received == expected
        reader.close()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(WAIT)
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        assert chunk, "the node closed the connection"
        out += chunk
    return bytes(out)


async def test_the_memory_budget_disconnects_the_biggest_holders(
    redis_backend: RedisServer,
) -> None:
    chunk = b"y" * (3 * MIB)
    async with bounded_node(redis_backend, client_memory_budget=8 * MIB) as node:
        good = client_for(node)
        assert await in_thread(good.set, "k", "v")
        hogs = []
        with trio.fail_after(WAIT):
            for _ in range(4):
                raw = await RawClient.to_node(node)
                # Part of a 100 MB bulk: each one alone is within every per-client limit.
                await raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nh\r\n$104857600\r\n" + chunk)
                hogs.append(raw)
                assert await in_thread(good.get, "k") == b"v"
            while node.clients.held > 6.5 * MIB:  # the last chunk still arriving
                await trio.testing.wait_all_tasks_blocked(0.01)
        evicted = node.counters.client_memory_evictions
        assert 1 <= evicted <= 3
        assert node.clients.held <= 8 * MIB
        assert node.counters.client_connections == 1 + 4 - evicted
        assert await in_thread(good.get, "k") == b"v"
