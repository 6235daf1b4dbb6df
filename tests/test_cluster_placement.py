"""Where keys land: on their token owner in every rack of every DC, and nowhere else.

Keys are written through randomly chosen nodes (seeded), then every node's
redis-server is read directly.  Copies in the coordinator's own rack are
there when the write returns; other racks (swallowed under DC_ONE) and
remote DCs (a ``REQ_FORWARD`` re-fanned by the receiver) are asynchronous,
so the backends are polled, bounded, until they converge.

Layouts include racks with different node counts, where one rack's owner of
a group of keys is not another rack's: multi-key writes and same-owner
commands must still put every key on its own owner in each rack.
"""

from __future__ import annotations

import errno
import random
import socket
from collections import Counter

import pytest
import trio

from trinomite.ring.topology import PeerInfo, RackRing
from trinomite.testing.cluster import Cluster, Layout, even_tokens
from trinomite.testing.members import reserve

from .clusterutil import (
    WAIT,
    attempt,
    call,
    counters,
    direct,
    keys_owned_by,
    redis_cluster,
    replicas,
    wait_until,
)

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


def flat(pairs: dict[bytes, bytes]) -> list[bytes]:
    return [x for pair in pairs.items() for x in pair]


async def assert_placement(cluster: Cluster, values: dict[bytes, bytes]) -> None:
    """Every backend ends up holding exactly the keys it owns, with their values."""
    expected = {
        member.name: {key for key in values if member in replicas(cluster, key)}
        for member in cluster.nodes
    }
    misplaced: list[str] = []

    async def converged() -> bool:
        misplaced.clear()
        for member in cluster.nodes:
            held, owned = set(await direct(member, "KEYS", "*")), expected[member.name]
            misplaced.extend(f"{member.name} holds {k!r}, owned elsewhere" for k in held - owned)
            misplaced.extend(f"{member.name} lacks {k!r}" for k in owned - held)
        return not misplaced

    try:
        await wait_until(converged, "every rack's owner to hold its keys (and no others)")
    except AssertionError:
        shown = sorted(misplaced)
        raise AssertionError("\n".join([f"{len(shown)} misplaced:", *shown[:20]])) from None
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


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
async def test_multi_key_writes_put_each_key_on_its_owners(layout: Layout) -> None:
    """MSET and DEL are split per owner; each key must still land on its owner in every rack.

    The split follows the coordinator's own rack; racks (and remote DCs) with
    other node counts shard the same keys differently.
    """
    rng = random.Random(5)
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(layout) as cluster:
            values: dict[bytes, bytes] = {}
            for n, member in enumerate(cluster.nodes):
                batch = {f"multi:{n}:{i}".encode(): f"v{n}.{i}".encode() for i in range(12)}
                assert await call(member.client(), "MSET", *flat(batch)) is True
                values.update(batch)
            doomed = rng.sample(sorted(values), len(values) // 3)
            assert await call(rng.choice(cluster.nodes).client(), "DEL", *doomed) == len(doomed)
            for key in doomed:
                del values[key]
            await assert_placement(cluster, values)


async def test_same_owner_commands_keep_keys_on_their_owners_in_every_rack() -> None:
    """RENAME's keys share an owner in the coordinator's one-node rack, but not in r1.

    Acceptable outcomes: the request is refused as spanning nodes, or the new
    key ends up on its own owner in every rack.
    """
    with trio.fail_after(3 * WAIT):
        async with redis_cluster({"dc1": {"r1": 3, "r2": 1}}) as cluster:
            (old,) = keys_owned_by(cluster, cluster.node("dc1", "r1", 0), 1)
            (new,) = keys_owned_by(cluster, cluster.node("dc1", "r1", 1), 1)
            client = cluster.node("dc1", "r2", 0).client()
            assert await call(client, "SET", old, b"v") is True
            reply = await attempt(client, "RENAME", old, new)
            if reply is True:
                await assert_placement(cluster, {new: b"v"})
            else:
                assert str(reply) == "Dynomite: Keys in the request cannot span multiple nodes"


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
            assert await call(writer.client(), "MSET", *flat(values)) is True
            await assert_placement(cluster, values)


def test_cluster_ports_are_distinct_and_held_until_start() -> None:
    """Every node of a layout gets ports of its own, held from the start.

    Ports chosen and then released could be taken before a node binds them;
    the likeliest taker is another node of the same cluster, whose outgoing
    peer connects take ephemeral ports (about one 8-node start in a hundred
    failed with EADDRINUSE that way).  So ``reserve`` keeps every node's
    sockets bound until the node adopts them.  (redis-servers choose their
    own ports and move to another if theirs was taken before they started.)
    No process is started here.
    """
    members = reserve({"dc1": {"r1": 150}})
    try:
        ports = Counter(port for m in members for port in (m.client_port, m.peer_port))
        assert [port for port, uses in ports.items() if uses > 1] == []
        for member in members[:10]:
            for port in (member.client_port, member.peer_port):
                with socket.socket() as other, pytest.raises(OSError, match="in use") as caught:
                    other.bind(("127.0.0.1", port))
                assert caught.value.errno == errno.EADDRINUSE
    finally:
        for member in members:
            member.release()
