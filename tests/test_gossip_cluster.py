"""Gossip in running clusters: convergence from one seed, failure detection,
nodes joining, being replaced and being removed at run time.

In-process nodes on real sockets (127.0.0.1, ephemeral ports); time is a
``MockClock`` that jumps ahead whenever every task has been idle for a few
real milliseconds, so gossip intervals of a second cost nothing, while
bytes in flight on loopback always land before the clock moves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from trinomite.admin.api import NodeState, PeerAction
from trinomite.config.model import Consistency, HostPort, Seed
from trinomite.gossip.wire import State
from trinomite.node.supervisor import Node
from trinomite.protocol.peer import MessageType, encode_frame
from trinomite.testing.cluster import Cluster, ClusterNode, open_cluster

from .rawclient import RawClient

GOS_INTERVAL = 1000  # ms: the bound below is stated for it
STEP = 0.05  # seconds between checks (mock time)
#: The failure detector's bound at 1000 ms (``gossip.detector``), plus relay lag.
DETECTION_BOUND = 5.0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    # pytest-trio runs the test on any Clock fixture it is given.
    return trio.testing.MockClock(autojump_threshold=0.02)


def node_of(member: ClusterNode) -> Node:
    assert member.node is not None
    return member.node


def one_seed() -> Callable[[ClusterNode], dict[str, Any]]:
    """Every node names only the first node as its seed (the first names none)."""
    first: list[ClusterNode] = []

    def overrides(member: ClusterNode) -> dict[str, Any]:
        if not first:
            first.append(member)
            return {"dyn_seeds": ()}
        seed = first[0]
        return {
            "dyn_seeds": (Seed("127.0.0.1", seed.peer_port, seed.rack, seed.dc, (seed.token,)),)
        }

    return overrides


def views(cluster: Cluster) -> list[list[tuple[str, str, int, str]]]:
    """Every running node's ring: (dc, rack, token, peer address) of each member."""
    out = []
    for member in cluster.nodes:
        if member.node is None:
            continue
        topology = member.node.topology
        out.append(sorted((p.dc, p.rack, p.tokens[0], p.name) for p in topology.peers))
    return out


async def wait_for(check: Callable[[], bool], what: str, limit: float = 60.0) -> float:
    """Wait (on the mock clock) until ``check()``; return how long it took."""
    start = trio.current_time()
    for _ in range(int(limit / STEP)):
        if check():
            return trio.current_time() - start
        await trio.sleep(STEP)
    raise AssertionError(f"gave up waiting for {what} after {limit} s")


def gossip(**extra: Any) -> dict[str, Any]:
    return {"enable_gossip": True, "gos_interval": GOS_INTERVAL, **extra}


LAYOUT = {"dc1": {"r1": 2, "r2": 2}}


async def test_every_node_learns_the_cluster_from_one_seed() -> None:
    async with open_cluster(
        LAYOUT, wait_connected=False, per_node=one_seed(), **gossip()
    ) as cluster:
        took = await wait_for(lambda: all(len(v) == 4 for v in views(cluster)), "convergence")
        assert len({tuple(v) for v in views(cluster)}) == 1
        assert took < 20 * GOS_INTERVAL / 1000
        await wait_for(
            lambda: all(node_of(m).gate.state is NodeState.NORMAL for m in cluster.nodes),
            "every node NORMAL",
        )
        describe = [node_of(m).admin.cluster_describe() for m in cluster.nodes]
        assert all(d == describe[0] for d in describe)


def peer_of(member: ClusterNode) -> str:
    return f"127.0.0.1:{member.peer_port}"


def member_state(observer: ClusterNode, name: str) -> State | None:
    membership = node_of(observer).membership
    assert membership is not None
    member = membership.state.members.get(name)
    return None if member is None else member.state


THREE_RACKS = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}


async def test_a_stopped_node_is_down_everywhere_within_the_bound_and_back_after_restart() -> None:
    async with open_cluster(THREE_RACKS, per_node=one_seed(), **gossip()) as cluster:
        await wait_for(lambda: all(len(v) == 3 for v in views(cluster)), "convergence")
        a, b, c = cluster.nodes
        name = peer_of(c)
        await wait_for(
            lambda: all(member_state(m, name) is State.NORMAL for m in (a, b)), "c NORMAL"
        )
        await cluster.stop_node(c)
        took = await wait_for(
            lambda: all(member_state(m, name) is State.DOWN for m in (a, b)), "c DOWN"
        )
        assert took <= DETECTION_BOUND
        for m in (a, b):
            assert not node_of(m).peers.is_up(name)
            assert name in node_of(m).peers.gossip_down
        # Routing works around it: a DC_QUORUM write still has two of three racks.
        async with await RawClient.to_node(node_of(a)) as client:
            assert await client.call("SET", "k", "v") == b"+OK\r\n"
        await cluster.start_node(c)  # a new generation at the same address
        await wait_for(lambda: all(member_state(m, name) is State.NORMAL for m in (a, b)), "c back")
        assert all(name not in node_of(m).peers.gossip_down for m in (a, b))


async def test_a_node_started_later_joins_and_owns_new_writes() -> None:
    from trinomite.testing.members import reserve

    level = {"read_consistency": Consistency.DC_QUORUM, "write_consistency": Consistency.DC_QUORUM}
    async with open_cluster(
        {"dc1": {"r1": 1, "r2": 1}}, per_node=one_seed(), **gossip(**level)
    ) as cluster:
        await wait_for(lambda: all(len(v) == 2 for v in views(cluster)), "convergence")
        a = cluster.nodes[0]
        (new,) = reserve({"dc1": {"r3": 1}})
        assert a.config is not None
        seed = Seed("127.0.0.1", a.peer_port, a.rack, a.dc, (a.token,))
        new.config = attrs.evolve(
            a.config,
            listen=HostPort("127.0.0.1", new.client_port),
            dyn_listen=HostPort("127.0.0.1", new.peer_port),
            rack="r3",
            tokens=(new.token,),
            dyn_seeds=(seed,),
        )
        cluster.nodes.append(new)
        await cluster.start_node(new)
        await wait_for(lambda: all(len(v) == 3 for v in views(cluster)), "the new rack known")
        await wait_for(lambda: node_of(new).gate.state is NodeState.NORMAL, "new NORMAL")
        async with await RawClient.to_node(node_of(a)) as client:
            assert await client.call("SET", "fresh", "1") == b"+OK\r\n"
        # The new rack's owner has it: read at DC_ONE from its own datastore.
        async with await RawClient.to_node(node_of(new)) as client:
            await client.call("DYNO_CONFIG:CONN_CONSISTENCY", "DC_ONE")
            assert await client.call("GET", "fresh") == b"$1\r\n1\r\n"


async def test_a_dead_node_is_replaced_by_a_new_address_and_an_old_one_removed() -> None:
    from trinomite.testing.members import reserve

    async with open_cluster(THREE_RACKS, per_node=one_seed(), **gossip()) as cluster:
        await wait_for(lambda: all(len(v) == 3 for v in views(cluster)), "convergence")
        a, b, c = cluster.nodes
        old = peer_of(c)
        await cluster.stop_node(c)
        await wait_for(lambda: member_state(a, old) is State.DOWN, "c DOWN")
        # A new node with c's rack and token at a new address: Dynomite's peer replace.
        (new,) = reserve({"dc1": {"r3": 1}})
        assert c.config is not None
        new.config = attrs.evolve(
            c.config,
            listen=HostPort("127.0.0.1", new.client_port),
            dyn_listen=HostPort("127.0.0.1", new.peer_port),
        )
        cluster.nodes.append(new)
        await cluster.start_node(new)
        replaced = peer_of(new)

        def swapped() -> bool:
            for m in (a, b):
                names = {p.name for p in node_of(m).topology.peers}
                if replaced not in names or old in names:
                    return False
            return True

        await wait_for(swapped, "c's tokens moved to the new address everywhere")
        assert all(old not in node_of(m).peers.pools for m in (a, b))
        # Removal: stop the replacement, then remove it by the admin path.
        await cluster.stop_node(new)
        await wait_for(
            lambda: all(member_state(m, replaced) is State.DOWN for m in (a, b)), "new DOWN"
        )
        assert node_of(a).admin.peer_control(PeerAction.REMOVE, replaced) == 1

        def gone() -> bool:
            return all(replaced not in {p.name for p in node_of(m).topology.peers} for m in (a, b))

        await wait_for(gone, "the removal gossiped to every node")
        assert member_state(b, replaced) is State.REMOVED


async def test_hostile_and_dynomite_gossip_reach_a_node_without_harm() -> None:
    """Garbage in gossip frames is counted; Dynomite's captured SYNs are understood."""
    from .test_gossip_wire import gossip_frames

    async with open_cluster({"dc1": {"r1": 1}}, **gossip()) as cluster:
        (only,) = cluster.nodes
        node = node_of(only)
        assert node.membership is not None
        assert node.peer_address is not None
        counters = node.membership.state.counters
        peer = await trio.open_tcp_stream(node.peer_address.host, node.peer_address.port)
        async with peer:
            await peer.send_all(
                encode_frame(1, MessageType.DIGEST_SYN, b"TG1 SYN \xff\x00", same_dc=True)
                + encode_frame(2, MessageType.DIGEST_ACK, b"x" * 5000, same_dc=True)
                + b"".join(frame.encode() for _, frame in gossip_frames())
            )
            await wait_for(
                lambda: (
                    node.membership is not None
                    and node.membership.state.counters["dropped_malformed"] >= 2
                ),
                "the bad payloads counted",
            )
        state = node.membership.state
        assert state.counters["messages_in"] >= counters["messages_in"] + 2 + len(gossip_frames())
        # The captured Dynomite nodes are datacenter dc1... or not: either way
        # they were merged or dropped by rule, and the node still serves.
        async with await RawClient.to_node(node) as client:
            assert await client.call("SET", "still", "here") == b"+OK\r\n"
        assert "gossip" in node.admin.info()
        metrics = node.admin.metrics_text()
        assert "trinomite_gossip_dropped_malformed_total" in metrics


async def test_a_florida_provider_gives_a_node_without_gossip_its_peers(monkeypatch) -> None:
    served: list[bytes] = []
    seed_line: list[bytes] = []

    async def florida(stream: trio.SocketStream) -> None:
        served.append(await stream.receive_some(4096))
        await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\n" + seed_line[0])
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(
            functools.partial(trio.serve_tcp, florida, 0, host="127.0.0.1")
        )
        port = listener.socket.getsockname()[1]
        monkeypatch.setenv("DYNOMITE_FLORIDA_IP", "127.0.0.1")
        monkeypatch.setenv("DYNOMITE_FLORIDA_PORT", str(port))
        chosen: list[ClusterNode] = []

        def overrides(member: ClusterNode) -> dict[str, Any]:
            chosen.append(member)
            if len(chosen) == 1:  # r1 knows nobody: Florida names r2
                return {"dyn_seeds": (), "dyn_seed_provider": "florida_provider"}
            seed_line.append(b"127.0.0.1:%d:r2:dc1:%d" % (member.peer_port, member.token))
            return {"dyn_seeds": ()}

        level = Consistency.DC_QUORUM
        async with open_cluster(
            {"dc1": {"r1": 1, "r2": 1}},
            wait_connected=False,
            per_node=overrides,
            read_consistency=level,
            write_consistency=level,
        ) as cluster:
            a, b = cluster.nodes
            await wait_for(lambda: len(node_of(a).topology.peers) == 2, "r2 from Florida")
            assert served[0].startswith(b"GET /REST/v1/admin/get_seeds HTTP/1.0\r\n")
            await wait_for(lambda: node_of(a).peers.is_up(peer_of(b)), "the link to r2")
            async with await RawClient.to_node(node_of(a)) as client:
                assert await client.call("SET", "via", "florida") == b"+OK\r\n"  # both racks
        nursery.cancel_scope.cancel()


async def test_a_new_token_in_an_existing_rack_splits_its_ring() -> None:
    """A second node in rack r1 takes the keys its token now owns; r2 keeps them all."""
    from trinomite.testing.members import reserve

    async with open_cluster(
        {"dc1": {"r1": 1, "r2": 1}}, per_node=one_seed(), **gossip()
    ) as cluster:
        await wait_for(lambda: all(len(v) == 2 for v in views(cluster)), "convergence")
        a = cluster.nodes[0]
        assert a.config is not None
        (new,) = reserve({"dc1": {"r1": 1}})
        token = 2**31  # half of r1's ring moves to the new node
        new.config = attrs.evolve(
            a.config,
            listen=HostPort("127.0.0.1", new.client_port),
            dyn_listen=HostPort("127.0.0.1", new.peer_port),
            tokens=(token,),
            dyn_seeds=(Seed("127.0.0.1", a.peer_port, a.rack, a.dc, (a.token,)),),
        )
        cluster.nodes.append(new)
        await cluster.start_node(new)
        await wait_for(lambda: all(len(v) == 3 for v in views(cluster)), "the new node known")
        ring = node_of(a).topology.ring("dc1", "r1")
        assert sorted(ring.tokens) == sorted((a.token, token))
        moved = next(
            key for i in range(1000)
            if ring.owner(node_of(a).topology.token(key := b"k%d" % i)).name == peer_of(new)
        )  # fmt: skip
        await wait_for(lambda: node_of(new).gate.state is NodeState.NORMAL, "new NORMAL")
        async with await RawClient.to_node(node_of(a)) as client:
            assert await client.call("SET", moved, "1") == b"+OK\r\n"
        async with await RawClient.to_node(node_of(new)) as client:
            assert await client.call("GET", moved) == b"$1\r\n1\r\n"  # DC_ONE: its own store
