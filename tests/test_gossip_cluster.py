"""Gossip in running clusters: convergence from one seed, failure detection,
nodes joining, being replaced and being removed at run time.

In-process nodes on real sockets (127.0.0.1, ephemeral ports); time is a
``MockClock`` that jumps ahead whenever every task has been idle for a few
real milliseconds, so gossip intervals of a second cost nothing, while
bytes in flight on loopback always land before the clock moves.
"""

from __future__ import annotations

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
