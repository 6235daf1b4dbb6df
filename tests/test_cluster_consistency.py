"""Consistency levels end to end (dynomite.md §3): who is asked, what the client gets.

Replicas are made to disagree by writing straight into their redis-servers,
and racks are taken away by stopping their nodes, so each test can tell
which replies the coordinator waited for and how it decided.
"""

from __future__ import annotations

from typing import Any

import trio

from trinomite.config.model import Consistency
from trinomite.testing.cluster import Cluster, ClusterNode

from .clusterutil import (
    NO_QUORUM,
    NOT_CONNECTED,
    WAIT,
    call,
    counters,
    direct,
    error,
    holders,
    in_thread,
    keys_owned_by,
    rack_pair,
    redis_cluster,
    replicas,
    stop,
    stored,
    wait_until,
)
from .rawclient import RawClient, bulk

THREE_RACKS = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}


def levels(level: Consistency) -> dict[str, Any]:
    return {"read_consistency": level, "write_consistency": level}


async def write_everywhere(cluster: Cluster, client: Any, pairs: dict[bytes, bytes]) -> None:
    """MSET through the cluster, then wait until every replica holds every value."""
    assert await call(client, "MSET", *[x for kv in pairs.items() for x in kv]) is True

    async def replicated() -> bool:
        for key, value in pairs.items():
            for member in replicas(cluster, key):
                if await stored(member, key) != value:
                    return False
        return True

    await wait_until(replicated, "every replica to hold the values")


async def set_level(client: Any, level: Consistency) -> None:
    """Dynomite's per-connection override (the client must hold one connection)."""
    assert await call(client, "dyno_config:conn_consistency", level.value) == b"OK"


async def one_connection(member: ClusterNode) -> Any:
    """A client on one connection (it connects at once, so off the Trio loop)."""
    return await in_thread(member.client, single_connection_client=True)


async def test_dc_quorum_serves_with_one_of_three_racks_down_and_fails_with_two() -> None:
    with trio.fail_after(3 * WAIT):
        layout = {"dc1": {"r1": 2, "r2": 2, "r3": 2}}
        async with redis_cluster(layout, **levels(Consistency.DC_QUORUM)) as cluster:
            coordinator = cluster.node("dc1", "r1", 0)
            client = coordinator.client()
            keys = [
                *keys_owned_by(cluster, coordinator, 3),
                *keys_owned_by(cluster, cluster.node("dc1", "r1", 1), 3),
            ]
            await stop(cluster, *cluster.rack("dc1", "r3"))
            for key in keys:
                assert await call(client, "SET", key, b"v-" + key) is True
                # The quorum (r1 and r2) answered before the client got +OK.
                assert {await stored(cluster.owner("dc1", r, key), key) for r in ("r1", "r2")} == {
                    b"v-" + key
                }
                assert await call(client, "GET", key) == b"v-" + key
            stats = counters(coordinator)
            assert (stats.client_non_quorum_w_responses, stats.client_non_quorum_r_responses) == (
                0,
                0,
            )
            await stop(cluster, *cluster.rack("dc1", "r2"))
            for key in keys:
                assert await error(client, "SET", key, b"lost") == NOT_CONNECTED
                assert await error(client, "GET", key) == NOT_CONNECTED
            assert stats.client_non_quorum_w_responses == len(keys)
            assert stats.client_non_quorum_r_responses == len(keys)


async def test_dc_safe_quorum_refuses_disagreeing_replicas_and_dc_quorum_answers() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(THREE_RACKS, **levels(Consistency.DC_SAFE_QUORUM)) as cluster:
            r1, r2, r3 = (cluster.node("dc1", r) for r in ("r1", "r2", "r3"))
            client = r1.client()
            await write_everywhere(cluster, client, {b"k": b"v"})
            assert await call(client, "GET", b"k") == b"v"
            await direct(r2, "SET", b"k", b"x")
            await direct(r3, "SET", b"k", b"y")
            assert await error(client, "GET", b"k") == NO_QUORUM
            assert counters(r1).client_non_quorum_r_responses == 1
            quorum = await one_connection(r1)
            await set_level(quorum, Consistency.DC_QUORUM)
            assert await call(quorum, "GET", b"k") in {b"v", b"x", b"y"}
            # Two of three agree: that value wins, although the coordinator's own copy differs.
            await direct(r3, "SET", b"k", b"x")
            assert await call(client, "GET", b"k") == b"x"
            assert await call(quorum, "GET", b"k") == b"x"


async def test_dc_safe_quorum_mget_reconciles_element_by_element() -> None:
    with trio.fail_after(2 * WAIT):
        layout = {"dc1": {"r1": 2, "r2": 2, "r3": 2}}
        async with redis_cluster(layout, **levels(Consistency.DC_SAFE_QUORUM)) as cluster:
            first, second = cluster.rack("dc1", "r1")
            client = first.client()
            # Two fragments of three keys each (one per owner in the rack).
            keys = [*keys_owned_by(cluster, first, 3), *keys_owned_by(cluster, second, 3)]
            values = {key: b"v-" + key for key in keys}
            await write_everywhere(cluster, client, values)
            expected = list(values.values())
            assert await call(client, "MGET", *keys) == expected

            def owner(rack: str, key: bytes) -> ClusterNode:
                return cluster.owner("dc1", rack, key)

            # One element wrong in one replica: the other two agree on the whole reply.
            await direct(owner("r2", keys[1]), "SET", keys[1], b"bad-r2")
            assert await call(client, "MGET", *keys) == expected
            # Now all three replicas' replies differ, but every element has a 2-of-3 majority.
            await direct(owner("r1", keys[2]), "SET", keys[2], b"bad-r1")
            await direct(owner("r3", keys[4]), "SET", keys[4], b"bad-r3")
            assert await call(client, "MGET", *keys) == expected
            # An element with three different copies fails the whole request...
            await direct(owner("r3", keys[1]), "SET", keys[1], b"bad-r3")
            assert await error(client, "MGET", *keys) == NO_QUORUM
            # ...while DC_QUORUM takes one copy of that element and the majority of the rest.
            quorum = await one_connection(first)
            await set_level(quorum, Consistency.DC_QUORUM)
            reply = await call(quorum, "MGET", *keys)
            assert reply[1] in {values[keys[1]], b"bad-r2", b"bad-r3"}
            assert reply[:1] + reply[2:] == expected[:1] + expected[2:]


async def test_dc_safe_quorum_smembers_compares_sorted_members() -> None:
    """Replicas list a set's strings in hash-seed order; SMEMBERS is read as SORT ALPHA."""
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(THREE_RACKS, **levels(Consistency.DC_SAFE_QUORUM)) as cluster:
            r1 = cluster.node("dc1", "r1")
            members = [f"member-{i}".encode() for i in range(40)]  # a hashtable, not an intset
            assert await call(r1.client(), "SADD", b"set", *members) == len(members)

            async def replicated() -> bool:
                cards = [await direct(m, "SCARD", b"set") for m in cluster.nodes]
                return cards == [len(members)] * len(cards)

            await wait_until(replicated, "every rack to hold the set")
            async with await RawClient.connect("127.0.0.1", r1.client_port) as client:
                reply = await client.call("SMEMBERS", "set")
                assert reply == b"*40\r\n" + b"".join(bulk(m) for m in sorted(members))
                assert (await client.call("HELLO", 3)).startswith(b"%")
                assert await client.call("SMEMBERS", "set") == b"~" + reply[1:]


async def test_dc_each_safe_quorum_needs_a_quorum_in_every_dc() -> None:
    layout = {"dc1": {"r1": 1, "r2": 1}, "dc2": {"r1": 1, "r2": 1, "r3": 1}}
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(layout, **levels(Consistency.DC_EACH_SAFE_QUORUM)) as cluster:
            local = cluster.node("dc1", "r1")
            client = local.client()
            dc1 = [m for m in cluster.nodes if m.dc == "dc1"]
            dc2 = [m for m in cluster.nodes if m.dc == "dc2"]
            all_names = {m.name for m in cluster.nodes}
            # The write returns once each DC has a quorum: both dc1 racks and 2 of 3 in dc2.
            assert await call(client, "SET", b"k", b"v") is True
            assert await holders(dc1, b"k") == {m.name for m in dc1}
            assert len(await holders(dc2, b"k")) >= 2
            assert await call(client, "GET", b"k") == b"v"

            async def everywhere() -> bool:
                return await holders(cluster.nodes, b"k") == all_names

            await wait_until(everywhere, "the third dc2 rack to get the write")
            # Written in dc2: the remote DC (dc1, quorum 2 of 2) holds it on return.
            remote_writer = cluster.node("dc2", "r1").client()
            assert await call(remote_writer, "SET", b"k2", b"v2") is True
            assert await holders(dc1, b"k2") == {m.name for m in dc1}

            await stop(cluster, cluster.node("dc2", "r3"))
            assert await call(client, "SET", b"k3", b"v3") is True
            assert await call(client, "GET", b"k3") == b"v3"
            # The remote DC's replicas are compared too: disagreement there fails the read.
            await direct(cluster.node("dc2", "r2"), "SET", b"k3", b"tampered")
            assert await error(client, "GET", b"k3") == NO_QUORUM

            await stop(cluster, cluster.node("dc2", "r2"))
            assert await error(client, "SET", b"k4", b"v4") == NOT_CONNECTED
            assert await error(client, "GET", b"k") == NOT_CONNECTED
            # Under DC_QUORUM the same connection only needs the local DC.
            quorum = await one_connection(local)
            await set_level(quorum, Consistency.DC_QUORUM)
            assert await call(quorum, "GET", b"k") == b"v"


async def test_dc_one_read_fails_over_to_another_rack_when_its_owner_is_down() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster({"dc1": {"r1": 2, "r2": 2}}) as cluster:
            coordinator, owner, key, local_key = rack_pair(cluster)
            other_rack_owner = cluster.node("dc1", "r2", 1)
            client = coordinator.client()
            assert cluster.owner("dc1", "r2", key) is other_rack_owner
            await write_everywhere(cluster, client, {key: b"v", local_key: b"local"})
            # Mark r2's copy so the reply shows who served it.
            await direct(other_rack_owner, "SET", key, b"served-by-r2")
            await stop(cluster, owner)
            stats = counters(coordinator)
            assert stats.read_failover_requests == 0
            assert await call(client, "GET", key) == b"served-by-r2"
            assert stats.read_failover_requests == 1
            assert await call(client, "GET", local_key) == b"local"
            assert stats.read_failover_requests == 1
            # A multi-key read fails over per fragment: only the stopped owner's one.
            assert await call(client, "MGET", local_key, key) == [b"local", b"served-by-r2"]
            assert stats.read_failover_requests == 2
            # Writes do not fail over: the own-rack owner's error reaches the client.
            assert await error(client, "SET", key, b"w") == NOT_CONNECTED


async def test_conn_consistency_overrides_reads_and_writes_of_one_connection() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(THREE_RACKS) as cluster:
            r1, r2, r3 = (cluster.node("dc1", r) for r in ("r1", "r2", "r3"))
            await direct(r1, "SET", b"k", b"stale")
            for member in (r2, r3):
                await direct(member, "SET", b"k", b"fresh")
            default = r1.client()
            assert await call(default, "GET", b"k") == b"stale"  # DC_ONE: own rack only
            override = await one_connection(r1)
            await set_level(override, Consistency.DC_QUORUM)
            assert await call(override, "GET", b"k") == b"fresh"
            assert await call(default, "GET", b"k") == b"stale"  # other connections unchanged
            assert "DC_QUORUM" in await error(override, "dyno_config:conn_consistency", "DC_TWO")
            await set_level(override, Consistency.DC_SAFE_QUORUM)
            await direct(r3, "SET", b"k", b"other")
            assert await error(override, "GET", b"k") == NO_QUORUM
            assert await call(default, "GET", b"k") == b"stale"
            # The override sets the write level too.
            await stop(cluster, r2, r3)
            assert await error(override, "SET", b"k", b"w") == NOT_CONNECTED
            assert await call(default, "SET", b"k", b"w") is True
            assert await stored(r1, b"k") == b"w"
