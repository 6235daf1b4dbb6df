"""Bundles between trinomite nodes, and two-replica quorum batches.

A trinomite peer that answers a link's hello gets a client run's requests as
bundle frames (many requests, one header, one reply); a peer that does not
(Dynomite) keeps one frame per request.  The peer server is driven with raw
frames in front of a real redis-server; the link end is scripted; the batch
collector is checked against ``PairQuorum`` for every pair of replies.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import trio

from trinomite import DatastoreSpec, HostPort, Node, open_node
from trinomite.admin.api import NodeState
from trinomite.cluster.quorum import NO_QUORUM, EachQuorum
from trinomite.cluster.routing import Mode
from trinomite.config.model import Consistency
from trinomite.errors import NodeError, redis_error
from trinomite.net.slots import ReplySink
from trinomite.peering.batches import BatchLeg, CopyRun, Encoded, PairRun, split_leg_reply
from trinomite.peering.collectors import ClusterCounters, PairQuorum, Swallow
from trinomite.peering.pools import PeerConnection
from trinomite.protocol.peer import (
    FLAG_BUNDLE,
    HELLO_REPLY,
    MAX_BUNDLE,
    Frame,
    FrameParser,
    MessageType,
    encode_frame,
)
from trinomite.protocol.requests import encode_command
from trinomite.ring.topology import PeerInfo
from trinomite.testing.cluster import ClusterNode
from trinomite.testing.redis_server import RedisServer

from .clusterutil import WAIT, call, counters, direct, redis_cluster, stored, wait_until
from .conftest import in_thread, node_config
from .test_peer_replies import Sink

PING = encode_command([b"PING"])
PEER_PROTOCOL = redis_error(NodeError.PEER_PROTOCOL)
TWO_RACKS = {"dc1": {"r1": 1, "r2": 1}}


async def frames_from(stream: trio.SocketStream, parser: FrameParser, count: int) -> list[Frame]:
    frames: list[Frame] = []
    while len(frames) < count:
        data = await stream.receive_some(65536)
        assert data, "the other end closed the connection"
        parser.feed(data)
        frames += parser.frames()
    return frames


# -- the peer server ---------------------------------------------------------


def stored_in(server: RedisServer, key: str) -> bytes | None:
    with redis.Redis(server.host, server.port, socket_timeout=WAIT) as client:
        value: bytes | None = client.get(key)
        return value


@asynccontextmanager
async def raw_peer_of(backend: RedisServer) -> AsyncIterator[tuple[Node, trio.SocketStream]]:
    """A node in front of ``backend``, and a raw connection to its peer port."""
    config = node_config(
        DatastoreSpec.tcp(backend.host, backend.port), dyn_listen=HostPort("127.0.0.1", 0)
    )
    async with open_node(config) as node:
        assert node.peer_address is not None
        peer = await trio.open_tcp_stream(node.peer_address.host, node.peer_address.port)
        async with peer:
            yield node, peer


def bundle_of(*requests: list[bytes]) -> bytes:
    return b"".join(map(encode_command, requests))


async def test_peer_server_answers_the_hello_and_a_bundle_in_one_frame(
    redis_backend: RedisServer,
) -> None:
    with trio.fail_after(WAIT):
        async with raw_peer_of(redis_backend) as (_, peer):
            parser = FrameParser()
            await peer.send_all(encode_frame(7, MessageType.CRYPTO_HANDSHAKE, b"", same_dc=True))
            (hello,) = await frames_from(peer, parser, 1)
            assert (hello.msg_id, hello.type, hello.payload) == (
                7,
                MessageType.CRYPTO_HANDSHAKE,
                HELLO_REPLY,
            )
            bundle = bundle_of([b"SET", b"b1", b"x"], [b"INCR", b"b2"], [b"GET", b"b1"])
            single = encode_command([b"GET", b"b2"])
            await peer.send_all(
                encode_frame(8, MessageType.REQ, bundle, same_dc=True, flags=FLAG_BUNDLE)
                + encode_frame(9, MessageType.REQ, single, same_dc=True)
                # Not whole requests: refused with one error for the lot.
                + encode_frame(10, MessageType.REQ, bundle[:-3], same_dc=True, flags=8)
                + encode_frame(11, MessageType.REQ, PING * 2, same_dc=True, flags=8)
            )
            frames = await frames_from(peer, parser, 4)
            assert [f.msg_id for f in frames] == [8, 9, 10, 11]
            assert {f.type for f in frames} == {MessageType.RES}
            assert frames[0].payload == b"+OK\r\n:1\r\n$1\r\nx\r\n"
            assert frames[1].payload == b"$1\r\n1\r\n"
            assert frames[2].payload.startswith(b"-ERR Protocol error: peer bundle payload")
            assert frames[3].payload == b"+PONG\r\n+PONG\r\n"
        # The refused bundle reached nothing: b1 is still x.
        assert stored_in(redis_backend, "b1") == b"x"


async def test_a_bundle_of_more_than_max_bundle_requests_is_refused(
    redis_backend: RedisServer,
) -> None:
    with trio.fail_after(WAIT):
        async with raw_peer_of(redis_backend) as (_, peer):
            too_many = encode_command([b"INCR", b"over"]) * (MAX_BUNDLE + 1)
            await peer.send_all(
                encode_frame(1, MessageType.REQ, too_many, same_dc=True, flags=FLAG_BUNDLE)
            )
            (frame,) = await frames_from(peer, FrameParser(), 1)
            assert frame.payload.startswith(b"-ERR Protocol error: peer bundle payload")
        assert stored_in(redis_backend, "over") is None


async def test_a_bundle_meets_the_node_state_request_by_request(
    redis_backend: RedisServer,
) -> None:
    """Outside NORMAL each request of a bundle passes the state gate on its own."""
    with trio.fail_after(WAIT):
        async with raw_peer_of(redis_backend) as (node, peer):
            node.admin.set_state(NodeState.RESUMING)  # writes go through, reads are refused
            bundle = bundle_of([b"SET", b"s", b"1"], [b"GET", b"s"], [b"INCR", b"t"])
            await peer.send_all(
                encode_frame(3, MessageType.REQ, bundle, same_dc=True, flags=FLAG_BUNDLE)
            )
            (frame,) = await frames_from(peer, FrameParser(), 1)
            refused = redis_error(NodeError.INVALID_STATE)
            assert frame.payload == b"+OK\r\n" + refused + b":1\r\n"
        assert stored_in(redis_backend, "s") == b"1"


# -- the link end ------------------------------------------------------------


def res(msg_id: int, payload: bytes) -> bytes:
    return encode_frame(msg_id, MessageType.RES, payload, same_dc=True)


def scripted_link(port: int) -> PeerConnection:
    peer = PeerInfo(f"127.0.0.1:{port}", "127.0.0.1", port, "dc1", "r2", (0,))
    return PeerConnection(
        peer=peer, index=0, same_dc=True, ids=itertools.count(1), timeout=5.0,
        max_backoff=0.2, preconnect=True,
    )  # fmt: skip


async def test_a_link_bundles_once_its_hello_is_answered() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    connection = scripted_link(listener.socket.getsockname()[1])
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            stream = await listener.accept()
            parser = FrameParser()
            (hello,) = await frames_from(stream, parser, 1)
            assert (hello.type, hello.payload) == (MessageType.CRYPTO_HANDSHAKE, b"")
            await stream.send_all(
                encode_frame(hello.msg_id, MessageType.CRYPTO_HANDSHAKE, HELLO_REPLY, same_dc=True)
            )

            async def bundling() -> bool:
                return connection.bundles

            await wait_until(bundling, "the hello reply to turn bundles on")

            def legs(sinks: list[Sink], kind: MessageType = MessageType.REQ) -> list:
                deadline = trio.current_time() + 5
                return [(kind, PING, s, deadline, 0) for s in sinks]

            # Four like legs and a REQ_FORWARD: two frames, a bundle of four and a single.
            sinks = [Sink() for _ in range(5)]
            assert connection.submit_many(
                legs(sinks[:4]) + legs(sinks[4:], MessageType.REQ_FORWARD)
            )
            bundle, single = await frames_from(stream, parser, 2)
            assert bundle.flags & FLAG_BUNDLE
            assert bundle.payload == PING * 4
            assert not single.flags & FLAG_BUNDLE
            assert single.type is MessageType.REQ_FORWARD
            await stream.send_all(
                res(bundle.msg_id, b"+a\r\n:2\r\n$1\r\nc\r\n+d\r\n") + res(single.msg_id, b"+e\r\n")
            )
            for sink in sinks:
                await sink.done.wait()
            assert [s.replies for s in sinks] == [
                [b"+a\r\n"], [b":2\r\n"], [b"$1\r\nc\r\n"], [b"+d\r\n"], [b"+e\r\n"]
            ]  # fmt: skip
            assert (connection.bundles_sent, connection.bundled_requests) == (1, 4)

            # A bundle reply that does not split: the peer's protocol error, for each.
            sinks = [Sink() for _ in range(3)]
            assert connection.submit_many(legs(sinks))
            (bundle,) = await frames_from(stream, parser, 1)
            await stream.send_all(res(bundle.msg_id, b"+only\r\n"))
            for sink in sinks:
                await sink.done.wait()
            assert [s.replies for s in sinks] == [[PEER_PROTOCOL]] * 3

            # One error line stands for the whole bundle (as the peer's refusal).
            sinks = [Sink() for _ in range(2)]
            assert connection.submit_many(legs(sinks))
            (bundle,) = await frames_from(stream, parser, 1)
            refusal = b"-ERR Protocol error: peer bundle payload is not whole requests\r\n"
            await stream.send_all(res(bundle.msg_id, refusal))
            for sink in sinks:
                await sink.done.wait()
            assert [s.replies for s in sinks] == [[refusal]] * 2
            assert connection.state.name == "UP"
            nursery.cancel_scope.cancel()
    listener.socket.close()


async def test_a_batch_leg_to_a_peer_without_bundles_goes_frame_by_frame() -> None:
    """Dynomite never answers the hello: a batch leg is one frame per request."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    connection = scripted_link(listener.socket.getsockname()[1])
    got: list[list[bytes]] = []

    class Run(PairRun):
        def arrive(self, parts: list[bytes], local: bool) -> None:
            got.append(parts)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            stream = await listener.accept()
            parser = FrameParser()
            await frames_from(stream, parser, 1)  # the hello, left unanswered

            async def up() -> bool:
                return connection.state.name == "UP"

            await wait_until(up, "the link to come up")
            requests = [[b"GET", b"k%d" % i] for i in range(3)]
            run = Run(Sink(), [False] * 3, ClusterCounters(), Mode.QUORUM)
            leg = BatchLeg(run, Encoded(requests), None, "peer", MessageType.REQ, 0)
            joined = b"".join(map(encode_command, requests))
            deadline = trio.current_time() + 5
            assert connection.submit_many([(MessageType.REQ, joined, leg, deadline, 0)])
            frames = await frames_from(stream, parser, 3)
            assert [f.payload for f in frames] == [encode_command(r) for r in requests]
            assert not any(f.flags & FLAG_BUNDLE for f in frames)
            # Replies in reverse id order would be mismatches; answer in order.
            await stream.send_all(
                b"".join(
                    encode_frame(f.msg_id, MessageType.RES, b"$1\r\n%d\r\n" % i, same_dc=True)
                    for i, f in enumerate(frames)
                )
            )

            async def arrived() -> bool:
                return bool(got)

            await wait_until(arrived, "the batch leg's replies")
            assert got == [[b"$1\r\n0\r\n", b"$1\r\n1\r\n", b"$1\r\n2\r\n"]]
            nursery.cancel_scope.cancel()
    listener.socket.close()


# -- the batch collector -------------------------------------------------------

REPLIES = [b"+OK\r\n", b"$1\r\nv\r\n", b"$1\r\nw\r\n", b"$-1\r\n", b":1\r\n",
           b"-ERR Peer: Connection timed out\r\n", b"-WRONGTYPE x\r\n"]  # fmt: skip


@pytest.mark.parametrize("safe", [False, True])
def test_pair_run_decides_every_request_as_pair_quorum_does(safe: bool) -> None:
    pairs = list(itertools.product(REPLIES, repeat=2))
    writes = [i % 2 == 0 for i in range(len(pairs))]
    expected = []
    reference = ClusterCounters()
    for (one, two), write in zip(pairs, writes, strict=True):
        sink = Sink()
        quorum = PairQuorum(sink, reference, write, safe)
        quorum.set(one)
        quorum.set(two)
        expected.append(sink.replies[0])
    sink = Sink()
    counted = ClusterCounters()
    run = PairRun(sink, writes, counted, Mode.SAFE if safe else Mode.QUORUM)
    run.arrive([one for one, _ in pairs], True)
    assert not sink.replies  # one leg is not a quorum of two
    run.arrive([two for _, two in pairs], False)
    run.arrive([two for _, two in pairs], False)  # a late duplicate changes nothing
    assert sink.replies == [b"".join(expected)]
    assert counted == reference
    if safe:
        assert NO_QUORUM in expected


@pytest.mark.parametrize("local_first", [False, True])
def test_pair_run_at_dc_each_decides_as_each_quorum_does(local_first: bool) -> None:
    """Two DCs of one rack: EachQuorum with one replica per DC, per request."""
    pairs = list(itertools.product(REPLIES, repeat=2))  # (local's reply, remote's reply)
    expected = []
    for mine, theirs in pairs:
        each = EachQuorum({"dc1": 1, "dc2": 1}, "dc1", multikey=False)
        order = [("dc1", mine), ("dc2", theirs)]
        if not local_first:
            order.reverse()
        results = [each.add(dc, reply) for dc, reply in order]
        expected.append(next(r for r in results if r is not None))
    sink = Sink()
    counted = ClusterCounters()
    run = PairRun(sink, [True] * len(pairs), counted, Mode.EACH)
    local = [mine for mine, _ in pairs]
    remote = [theirs for _, theirs in pairs]
    if local_first:
        run.arrive(local, True)
        run.arrive(remote, False)
    else:
        run.arrive(remote, False)
        run.arrive(local, True)
    assert sink.replies == [b"".join(expected)]
    assert counted == ClusterCounters()  # EachLeg counts no quorum failures either


def test_copy_run_counts_errors_as_swallow_does() -> None:
    counted = ClusterCounters()
    CopyRun([True] * len(REPLIES), counted).arrive(REPLIES, False)
    reference = ClusterCounters()
    swallow = Swallow(reference)
    for reply in REPLIES:
        swallow.set(reply)
    assert counted == reference
    assert counted.peer_forward_error == 2


def test_split_leg_reply() -> None:
    assert split_leg_reply(b"+a\r\n", 1) == [b"+a\r\n"]
    assert split_leg_reply(b"+a\r\n:1\r\n", 2) == [b"+a\r\n", b":1\r\n"]
    timeout = redis_error(NodeError.PEER_TIMEOUT)
    assert split_leg_reply(timeout, 3) == [timeout] * 3
    assert split_leg_reply(b"+a\r\n", 2) == [PEER_PROTOCOL] * 2
    assert split_leg_reply(b"+a\r\n:1\r\n:2\r\n", 2) == [PEER_PROTOCOL] * 2


class Recorder:
    """A hint store stand-in for BatchLeg's bookkeeping (pure logic)."""

    def __init__(self, pending: bool) -> None:
        self.pending = pending
        self.added: list[tuple[str, int, int, bytes]] = []
        self.overwrites: list[tuple[str, bytes]] = []

    def has_pending(self, peer: str) -> bool:
        return self.pending

    def add(self, peer: str, kind: int, flags: int, raw: bytes) -> None:
        self.added.append((peer, kind, flags, raw))

    def note_overwrite(self, peer: str, key: bytes) -> None:
        self.overwrites.append((peer, key))


def test_a_batch_leg_hints_exactly_the_writes_it_missed() -> None:
    requests = [[b"SET", b"a", b"1"], [b"GET", b"a"], [b"SET", b"b", b"2"], [b"SET", b"c", b"3"]]
    writes = [True, False, True, True]
    timeout = redis_error(NodeError.PEER_TIMEOUT)
    store = Recorder(pending=False)
    sink: ReplySink = Sink()
    run = PairRun(sink, writes, ClusterCounters(), Mode.QUORUM)
    leg = BatchLeg(run, Encoded(requests), store, "p", MessageType.REQ, 0)  # type: ignore[arg-type]
    leg.set_parts([timeout, timeout, b"+OK\r\n", b"-WRONGTYPE x\r\n"])
    # The read's miss is no hint; a write's other error is not a miss.
    assert store.added == [("p", MessageType.REQ, 0, encode_command(requests[0]))]
    # While the peer has hints, applied live writes mark their keys.
    store = Recorder(pending=True)
    run = PairRun(Sink(), writes, ClusterCounters(), Mode.QUORUM)
    leg = BatchLeg(run, Encoded(requests), store, "p", MessageType.REQ, 0)  # type: ignore[arg-type]
    leg.set(b"+OK\r\n$1\r\n1\r\n+OK\r\n+OK\r\n")
    assert store.overwrites == [("p", b"a"), ("p", b"b"), ("p", b"c")]


# -- a real two-rack cluster ---------------------------------------------------


def pipelined(member: ClusterNode, commands: list[tuple[str, ...]]) -> list[Any]:
    with member.client(socket_timeout=WAIT) as client:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies


@pytest.mark.parametrize("level", [Consistency.DC_QUORUM, Consistency.DC_SAFE_QUORUM])
async def test_pipelines_at_quorum_travel_as_bundles_and_keep_their_order(level) -> None:
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(
            TWO_RACKS, read_consistency=level, write_consistency=level
        ) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            assert await call(a.client(), "SET", "warm", "1") is True  # link up, hello done
            steps: list[tuple[str, ...]] = [("SET", f"k{i}", str(i)) for i in range(50)]
            steps += [("INCR", "n"), ("GET", "k7"), ("INCR", "n"), ("DEL", "k3"), ("GET", "k3")]
            steps += [("PING",), ("INCR", "n"), ("LPUSH", "k1", "x"), ("GET", "k1")]
            replies = await in_thread(pipelined, a, steps)
            assert replies[:50] == [True] * 50
            assert replies[50:55] == [1, b"7", 2, 1, None]
            assert replies[55:57] == [True, 3]
            assert isinstance(replies[57], redis.ResponseError)  # WRONGTYPE, from both racks
            assert replies[58] == b"1"
            assert counters(a).client_non_quorum_w_responses == 1
            (pool,) = a.node.peers.pools.values()  # type: ignore[union-attr]
            link = pool.connections[0]
            assert link.bundles
            assert link.bundles_sent >= 2
            assert link.bundled_requests >= 50  # DEL and PING split the run
            for member in (a, b):
                assert await stored(member, "k49") == b"49"
                assert await stored(member, "n") == b"3"
                assert await direct(member, "EXISTS", "k3") == 0
