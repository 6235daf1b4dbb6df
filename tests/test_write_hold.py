"""Write holds: submissions in a burst go out in one direct send when the burst ends.

A node's client reactor, datastore readers and peer handlers each hold the
node's ``WriteHold`` while they start requests; the links then send from
that task instead of waking their writer tasks.  These tests run links
against a bare listening socket (to see exactly when bytes reach the wire)
and against a real redis-server (to check order and content when a send
only partly fits and the writer task takes over).
"""

from __future__ import annotations

import itertools
import select
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trinomite.datastore.pool import DatastoreConnection
from trinomite.net.links import ConnState, Link, WriteHold
from trinomite.net.sockets import connect_tcp
from trinomite.peering.pools import PeerConnection
from trinomite.protocol.peer import MessageType
from trinomite.protocol.requests import encode_command
from trinomite.ring.topology import PeerInfo
from trinomite.testing import RedisServer

PING = encode_command([b"PING"])


class Replies:
    """A ReplySink that keeps what it was given."""

    def __init__(self) -> None:
        self.reply: bytes | None = None
        self.event = trio.Event()

    def set(self, reply: bytes) -> None:
        self.reply = reply
        self.event.set()

    async def wait(self) -> bytes:
        with trio.fail_after(20):
            await self.event.wait()
        assert self.reply is not None
        return self.reply


def datastore_link(host: str, port: int, *, delimited: bool) -> DatastoreConnection:
    async def connect() -> trio.abc.Stream:
        return await connect_tcp(host, port)

    return DatastoreConnection(
        name="test",
        connect=connect,
        protocol=2,
        timeout=10.0,
        max_backoff=0.2,
        max_bulk_len=512 * 1024 * 1024,
        preconnect=True,
        delimited=delimited,
    )


def peer_link(port: int, rate: int) -> PeerConnection:
    peer = PeerInfo(f"127.0.0.1:{port}", "127.0.0.1", port, "dc2", "r1", (0,))
    return PeerConnection(
        peer=peer,
        index=0,
        same_dc=False,
        ids=itertools.count(1),
        timeout=10.0,
        max_backoff=0.2,
        preconnect=True,
        rate=rate,
    )


@asynccontextmanager
async def running(link: Link) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        assert link.state is ConnState.UP
        yield
        nursery.cancel_scope.cancel()


@pytest.fixture
def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    yield sock
    sock.close()


def accepted(listener: socket.socket) -> socket.socket:
    """The link's connection, server side (the kernel finished it on connect)."""
    server, _ = listener.accept()
    server.setblocking(False)
    return server


def pending(server: socket.socket) -> bytes:
    """What reached the server so far, without waiting."""
    try:
        return server.recv(1 << 20)
    except BlockingIOError:
        return b""


async def arrived(server: socket.socket) -> bytes:
    """What reaches the server once something does (the writer task sent it)."""
    with trio.fail_after(10):
        await trio.lowlevel.wait_readable(server)
    return pending(server)


@asynccontextmanager
async def held_link(
    listener: socket.socket,
) -> AsyncIterator[tuple[DatastoreConnection, WriteHold, socket.socket]]:
    """An undelimited datastore link to ``listener`` with a hold of its own, and its server side."""
    link = datastore_link(*listener.getsockname()[:2], delimited=False)
    hold = WriteHold()
    link.hold = hold
    async with running(link):
        with accepted(listener) as server:
            yield link, hold, server


async def test_a_held_burst_is_sent_by_the_releasing_task(listener: socket.socket) -> None:
    async with held_link(listener) as (link, hold, server):
        sinks = [Replies() for _ in range(3)]
        deadline = trio.current_time() + 10
        with hold:
            for sink in sinks:
                assert link.submit(PING, 1, sink, deadline)
            assert pending(server) == b""  # held: nothing sent yet
        # No checkpoint since the release, so the writer task cannot have
        # run: the releasing task sent all three, in one piece.
        assert pending(server) == PING * 3
        server.send(b"+PONG\r\n" * 3)
        assert [await sink.wait() for sink in sinks] == [b"+PONG\r\n"] * 3


async def test_holds_nest_and_only_the_outermost_release_sends(listener: socket.socket) -> None:
    async with held_link(listener) as (link, hold, server):
        deadline = trio.current_time() + 10
        with hold:
            with hold:
                assert link.submit(PING, 1, Replies(), deadline)
            assert pending(server) == b""
            assert link.submit(PING, 1, Replies(), deadline)
        assert pending(server) == PING * 2


async def test_without_a_hold_the_writer_task_sends(listener: socket.socket) -> None:
    link = datastore_link(*listener.getsockname()[:2], delimited=False)
    async with running(link):
        with accepted(listener) as server:
            assert link.submit(PING, 1, Replies(), trio.current_time() + 10)
            assert pending(server) == b""  # queued for the writer task
            assert await arrived(server) == PING


async def test_a_paced_peer_link_leaves_sending_to_its_writer(listener: socket.socket) -> None:
    """conn_msg_rate pacing lives in the writer task; a released hold must not bypass it."""
    link = peer_link(listener.getsockname()[1], rate=1)
    hold = WriteHold()
    link.hold = hold
    async with running(link):
        with accepted(listener) as server:
            # The link's hello went out on connect, before anything was held.
            assert pending(server).endswith(b" 6 0 1 0 *1 d *0\r\n")
            deadline = trio.current_time() + 10
            with hold:
                for _ in range(3):
                    assert link.submit(MessageType.REQ, PING, Replies(), deadline)
            assert pending(server) == b""
            data = await arrived(server)
            # The bucket starts with ``rate`` (1) frame; the next waits a second.
            assert data.count(PING) == 1


async def test_order_holds_when_a_direct_send_only_partly_fits(
    redis_backend: RedisServer,
) -> None:
    """A run bigger than the socket buffer: the writer sends the rest, later runs queue behind."""
    link = datastore_link(redis_backend.host, redis_backend.port, delimited=True)
    hold = WriteHold()
    link.hold = hold
    big = b"v" * (32 * 1024 * 1024)
    requests = [
        [b"SET", b"big", big],
        [b"SET", b"small", b"1"],
        [b"GET", b"big"],
        [b"APPEND", b"small", b"2"],
        [b"GET", b"small"],
        [b"STRLEN", b"big"],
    ]
    sinks = [Replies() for _ in requests]
    async with running(link):
        deadline = trio.current_time() + 20
        with hold:  # far more than a socket buffer holds: the writer takes the rest
            assert link.submit(encode_command(requests[0]), 1, sinks[0], deadline)
        assert link._outbox  # the remainder, waiting for the writer
        with hold:  # behind the remainder, before the writer ever ran
            for args, sink in zip(requests[1:3], sinks[1:3], strict=True):
                assert link.submit(encode_command(args), 1, sink, deadline)
        # The writer starts sending the remainder and waits for buffer space.
        await trio.testing.wait_all_tasks_blocked()
        assert link._sending
        # Block this thread (so the writer cannot resume) until redis has read
        # enough for the socket to take more: a direct send now would land in
        # the middle of the remainder.
        sock = link._socket
        assert sock is not None
        assert select.select([], [sock], [], 10)[1] == [sock]
        with hold:
            for args, sink in zip(requests[3:], sinks[3:], strict=True):
                assert link.submit(encode_command(args), 1, sink, deadline)
        replies = [await sink.wait() for sink in sinks]
    assert replies == [
        b"+OK\r\n",
        b"+OK\r\n",
        b"$%d\r\n%s\r\n" % (len(big), big),
        b":2\r\n",
        b"$2\r\n12\r\n",
        b":%d\r\n" % len(big),
    ]
