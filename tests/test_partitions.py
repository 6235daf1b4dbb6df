"""Partitions between nodes of an in-process cluster, through the fault proxy on each link.

``open_cluster(fault_proxies=True)`` puts a proxy on every directed peer
link; ``partition`` cuts the links across two groups (both directions),
``heal`` restores them and the nodes reconnect by themselves.  Asserted
through real clients (redis-py in a thread) and the nodes' own link state.
"""

from __future__ import annotations

import pytest
import trio

from trinomite import Consistency
from trinomite.testing.cluster import open_cluster

from .clusterutil import WAIT, call, error

LAYOUT = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}
QUORUM = {
    "read_consistency": Consistency.DC_QUORUM,
    "write_consistency": Consistency.DC_QUORUM,
}


async def test_reject_fails_at_once_and_heal_reconnects() -> None:
    with trio.fail_after(3 * WAIT):
        async with open_cluster(LAYOUT, fault_proxies=True, **QUORUM) as cluster:
            a, b, c = cluster.nodes
            assert await call(a.client(), "SET", "k", "v1") is True
            cluster.partition(a, [b, c])
            assert cluster.unconnected() == []  # cut links are not "missing"
            assert a.node is not None
            for other in (b, c):
                name = f"127.0.0.1:{cluster.peer_port(a, other)}"
                while a.node.peers.is_up(name):
                    await a.node.peers.wait_changed()
            assert "Peer" in await error(a.client(), "SET", "k", "v2")
            # b and c still reach each other: a quorum on their side.
            assert await call(b.client(), "SET", "k", "v3") is True
            cluster.heal()
            await cluster.wait_connected()
            assert await call(a.client(), "SET", "k", "v4") is True
            assert (await cluster.replicas("k"))["dc1/r2"] == b"v4"


async def test_drop_is_a_blackhole_requests_across_time_out() -> None:
    with trio.fail_after(3 * WAIT):
        async with open_cluster(LAYOUT, fault_proxies=True, timeout=300, **QUORUM) as cluster:
            a, b, c = cluster.nodes
            cluster.partition([a], [b, c], how="drop")
            start = trio.current_time()
            message = await error(a.client(), "GET", "k")
            assert "timed out" in message
            assert trio.current_time() - start >= 0.25
            cluster.heal()


async def test_partitions_need_the_proxies_and_sane_sides() -> None:
    async with open_cluster({"dc1": {"r1": 1, "r2": 1}}, fault_proxies=True) as cluster:
        a, b = cluster.nodes
        with pytest.raises(ValueError, match="both sides"):
            cluster.partition(a, [a, b])
        with pytest.raises(ValueError, match="how must be"):
            cluster.partition(a, b, how="sever")
    async with open_cluster({"dc1": {"r1": 1}}) as plain:
        with pytest.raises(RuntimeError, match="fault_proxies=True"):
            plain.partition(plain.nodes[0], [])


async def test_clients_still_reach_a_partitioned_node() -> None:
    async with open_cluster({"dc1": {"r1": 1, "r2": 1}}, fault_proxies=True) as cluster:
        a, b = cluster.nodes
        cluster.partition(a, b)
        assert await call(a.client(), "SET", "only-here", "1") is True  # DC_ONE: local ack
        assert await call(a.client(), "GET", "only-here") == b"1"
        assert (await cluster.replicas("only-here"))["dc1/r2"] is None
        assert await call(b.client(), "GET", "only-here") is None
