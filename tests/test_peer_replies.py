"""Peer replies that do not match what is in flight, late quorum replies, gone clients.

The batched cluster path (one write per peer and one datastore run per
client round) must keep Dynomite's reply matching: a RES for an id that is
not in flight is dropped, requests a newer reply overtook are failed, a
reply after its deadline is swallowed without disturbing the next request,
and a client that goes away with requests in flight harms nobody else.

The first test scripts the far end of one peer link (it answers frames the
way a broken or malicious peer might); the others run real clusters with
the fault proxy on the peer links.
"""

from __future__ import annotations

import itertools
import socket

import trio

from trinomite.config.model import Consistency
from trinomite.errors import NodeError, redis_error
from trinomite.peering.pools import PeerConnection
from trinomite.protocol.peer import FrameParser, MessageType, encode_frame
from trinomite.ring.topology import PeerInfo
from trinomite.testing.cluster import ClusterNode

from .clusterutil import WAIT, call, counters, error, redis_cluster, wait_until

TWO_RACKS = {"dc1": {"r1": 1, "r2": 1}}


def only_link(member: ClusterNode) -> PeerConnection:
    """The one peer connection of a node in a two-node cluster."""
    assert member.node is not None
    (pool,) = member.node.peers.pools.values()
    return pool.connections[0]


class Sink:
    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.done = trio.Event()

    def set(self, reply: bytes) -> None:
        self.replies.append(reply)
        self.done.set()


async def test_replies_for_unknown_late_and_overtaking_ids() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    peer = PeerInfo(name=f"127.0.0.1:{port}", host="127.0.0.1", port=port, dc="dc1", rack="r2",
                    tokens=(0,))  # fmt: skip
    connection = PeerConnection(
        peer=peer, index=0, same_dc=True, ids=itertools.count(1), timeout=5.0,
        max_backoff=0.2, preconnect=True,
    )  # fmt: skip
    sinks = [Sink() for _ in range(4)]
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.run)
            stream = await listener.accept()

            async def up() -> bool:
                return connection.state.name == "UP"

            await wait_until(up, "the link to come up")
            legs = [(MessageType.REQ, b"*1\r\n$4\r\nPING\r\n", s, trio.current_time() + 5, 0)
                    for s in sinks]  # fmt: skip
            assert connection.submit_many(legs)
            parser = FrameParser()
            frames = []
            while len(frames) < 5:
                parser.feed(await stream.receive_some(65536))
                frames += parser.frames()
            # The hello comes first; this end does not answer it, as Dynomite,
            # so the requests go one frame each.
            hello, *frames = frames
            assert (hello.type, hello.payload) == (MessageType.CRYPTO_HANDSHAKE, b"")
            assert not connection.bundles
            ids = [frame.msg_id for frame in frames]
            assert ids == sorted(ids)
            assert len(set(ids)) == 4  # one write, four frames, four ids

            def res(msg_id: int, payload: bytes) -> bytes:
                return encode_frame(msg_id, MessageType.RES, payload, same_dc=True)

            await stream.send_all(
                res(ids[0] - 1, b"+stale\r\n")  # older than anything in flight: dropped
                + res(ids[1], b"+second\r\n")  # overtakes ids[0]: that one never gets a reply
                + res(ids[1], b"+again\r\n")  # a duplicate: dropped
                + res(ids[3], b"+fourth\r\n")  # overtakes ids[2]
                + res(ids[3] + 10**6, b"+unknown\r\n")  # nothing in flight: dropped
            )
            for sink in sinks:
                await sink.done.wait()
            mismatch = redis_error(NodeError.PEER_CONNECTION_REFUSE)
            assert [s.replies for s in sinks] == [
                [mismatch], [b"+second\r\n"], [mismatch], [b"+fourth\r\n"]
            ]  # fmt: skip
            assert connection.mismatches == 2
            assert connection.state.name == "UP"  # none of it broke the link
            nursery.cancel_scope.cancel()
    listener.socket.close()


async def test_a_quorum_reply_after_its_deadline_is_dropped_and_the_link_carries_on() -> None:
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(
            TWO_RACKS,
            fault_proxies=True,
            timeout=300,
            hinted_handoff=False,
            read_consistency=Consistency.DC_QUORUM,
            write_consistency=Consistency.DC_QUORUM,
        ) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            client = a.client()
            assert cluster.mesh is not None
            proxy = cluster.mesh.proxies[(a, b)]
            assert await call(client, "SET", "late", "v") is True
            proxy.latency(0.6)  # twice the timeout: the peer's reply comes late
            message = await error(client, "GET", "late")
            assert "timed out" in message
            proxy.pass_through()
            connection = only_link(a)

            async def late_reply_in() -> bool:
                return connection.inflight == 0

            await wait_until(late_reply_in, "the late reply to arrive and be dropped")
            for n in range(20):  # the link and the quorum path still work, in order
                assert await call(client, "SET", f"k{n}", n) is True
            assert await call(client, "MGET", *[f"k{n}" for n in range(20)]) == [
                str(n).encode() for n in range(20)
            ]
            assert connection.mismatches == 0


async def test_a_client_gone_with_requests_in_flight_on_peer_links_harms_no_one() -> None:
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(
            TWO_RACKS,
            fault_proxies=True,
            read_consistency=Consistency.DC_QUORUM,
            write_consistency=Consistency.DC_QUORUM,
        ) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            assert cluster.mesh is not None
            proxy = cluster.mesh.proxies[(a, b)]
            proxy.latency(0.2)  # keeps the pipeline in flight on the peer link
            pipeline = b"".join(
                b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(k), k)
                for k in (b"gone:%d" % n for n in range(200))
            )
            with socket.create_connection(("127.0.0.1", a.client_port)) as sock:
                sock.sendall(pipeline)
                sock.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            # The client is gone (reset); its requests are still on the link.
            other = a.client()
            assert await call(other, "SET", "after", "1") is True
            proxy.pass_through()
            assert await call(other, "GET", "after") == b"1"
            assert a.node is not None
            assert counters(a).peer_requests >= 200

            link = only_link(a)

            async def drained() -> bool:
                return link.inflight == 0

            await wait_until(drained, "the gone client's peer requests to be answered")
            assert await call(other, "DBSIZE") >= 1
