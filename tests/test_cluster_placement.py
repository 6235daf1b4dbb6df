"""Where keys land: on their token owner in every rack of every DC, and nowhere else.

Keys are written through randomly chosen nodes (seeded), then every node's
redis-server is read directly.  Copies in the coordinator's own rack are
there when the write returns; other racks (swallowed under DC_ONE) and
remote DCs (a ``REQ_FORWARD`` re-fanned by the receiver) are asynchronous,
so the backends are polled, bounded, until they converge.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import trio

from trinomite.ring.topology import PeerInfo, RackRing
from trinomite.testing.cluster import Cluster, Layout, _configs, even_tokens

from .clusterutil import WAIT, call, counters, direct, redis_cluster, replicas, wait_until

LAYOUTS: dict[str, Layout] = {
    "1dc-2racks-2nodes": {"dc1": {"r1": 2, "r2": 2}},
    "2dcs-3and2racks": {"dc1": {"r1": 2, "r2": 1, "r3": 2}, "dc2": {"r1": 1, "r2": 2}},
    "asymmetric": {"dc1": {"r1": 3, "r2": 1}, "dc2": {"r1": 2}},
}

#: dynomite_hashes.json ``routing_example``: murmur, racks with tokens 0 and
#: 2147483647; True for the keys the token-0 node owns.
REFERENCE_KEYS = {
    b"test2": True,
    b"test2222": True,
    b"foo": True,
    b"user:1000": True,
    b"test1": False,
    b"test1111": False,
    b"bar": False,
}


async def assert_placement(cluster: Cluster, values: dict[bytes, bytes]) -> None:
    """Every backend ends up holding exactly the keys it owns, with their values."""
    expected = {
        member.name: {key for key in values if member in replicas(cluster, key)}
        for member in cluster.nodes
    }

    async def converged() -> bool:
        for member in cluster.nodes:
            if set(await direct(member, "KEYS", "*")) != expected[member.name]:
                return False
        return True

    await wait_until(converged, "every rack's owner to hold its keys (and no others)")
    for member in cluster.nodes:
        keys = sorted(expected[member.name])
        assert keys, f"{member.name} owns none of the keys: the test proves nothing there"
        assert await direct(member, "MGET", *keys) == [values[k] for k in keys]


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
async def test_each_key_is_on_its_owner_in_every_rack_and_nowhere_else(layout: Layout) -> None:
    rng = random.Random(20240611)
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(layout) as cluster:
            clients = {m.name: m.client() for m in cluster.nodes}
            values: dict[bytes, bytes] = {}
            for i in range(100):
                key = f"placed:{rng.randrange(1 << 30)}:{i}".encode()
                values[key] = f"value-{i}".encode()
                coordinator = rng.choice(cluster.nodes)
                assert await call(clients[coordinator.name], "SET", key, values[key]) is True
            await assert_placement(cluster, values)
            # One REQ_FORWARD per write and remote DC: nothing more, nothing less.
            dcs = len(layout)
            assert sum(counters(m).forwarded_requests for m in cluster.nodes) == 100 * (dcs - 1)
            # And every node reads every key back from its own DC's replicas.
            for key, value in values.items():
                reader = rng.choice(cluster.nodes)
                assert await call(clients[reader.name], "GET", key) == value


async def test_reference_keys_land_where_dynomite_puts_them() -> None:
    """The quickstart shape routes the reference keys like Dynomite's 0/2147483647 ring."""
    with trio.fail_after(2 * WAIT):
        async with redis_cluster({"dc1": {"r1": 2, "r2": 2}}) as cluster:
            assert [m.token for m in cluster.rack("dc1", "r1")] == even_tokens(2) == [0, 1 << 31]
            first = cluster.nodes[0].node
            assert first is not None
            a, b = (PeerInfo(f"n{t}", "127.0.0.1", t, "dc1", "r1", (t,)) for t in (0, 2147483647))
            reference = RackRing.build("dc1", "r1", [a, b])
            for key, on_token_zero in REFERENCE_KEYS.items():
                assert (reference.owner(first.topology.token(key)) is a) == on_token_zero
                for dc, rack in (("dc1", "r1"), ("dc1", "r2")):
                    assert (cluster.owner(dc, rack, key).token == 0) == on_token_zero, key
            writer = cluster.node("dc1", "r2", 1)
            values = {key: b"ref-" + key for key in REFERENCE_KEYS}
            assert await call(writer.client(), "MSET", *[x for kv in values.items() for x in kv])
            await assert_placement(cluster, values)


def test_cluster_ports_are_distinct() -> None:
    """Every node of a layout needs its own client and peer ports.

    ``open_cluster`` (``_configs``) asks ``free_port()`` for each port
    separately, and a released ephemeral port is soon handed out again: in a
    layout this size some ports repeat, and with 4-8 nodes about one start in
    twenty fails ("a node is listed twice", or EADDRINUSE).  No node is
    started here; the configs alone show it.
    """
    members = _configs({"dc1": {"r1": 250}}, "embedded", {})
    ports = Counter(port for m in members for port in (m.client_port, m.peer_port))
    assert [port for port, uses in ports.items() if uses > 1] == []
