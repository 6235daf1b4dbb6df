"""Versioned writes and read repair of string keys, with real redis-servers.

Three racks of one node at DC_QUORUM with ``read_repairs_enabled`` and
hinted handoff off (so only read repair can fix a stale replica).  A rack is
partitioned while a key changes; after healing, a quorum read through the
stale node returns the newest value (or nothing, for a delete: no
resurrection) and the stale replica's own datastore is repaired.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trinomite import Consistency
from trinomite.cluster.repair import versioned_write
from trinomite.cluster.scripts import elements_key, meta_key
from trinomite.cluster.versions import HybridClock
from trinomite.testing.cluster import Cluster, open_cluster

from .clusterutil import call, direct, stored, wait_until

LAYOUT = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}


@asynccontextmanager
async def repairing_cluster(
    layout: dict[str, dict[str, int]] = LAYOUT, level: Consistency = Consistency.DC_QUORUM
) -> AsyncIterator[Cluster]:
    async with open_cluster(
        layout,
        datastore="redis",
        fault_proxies=True,
        hinted_handoff=False,
        read_repairs_enabled=True,
        read_consistency=level,
        write_consistency=level,
        server_retry_timeout=200,
    ) as cluster:
        yield cluster


async def test_a_quorum_read_returns_the_newest_value_and_repairs_the_stale_replica() -> None:
    with trio.fail_after(30):
        async with repairing_cluster() as cluster:
            a, b, c = (cluster.node("dc1", rack) for rack in ("r1", "r2", "r3"))
            assert await call(a.client(), "SET", "k", "v1") is True
            cluster.partition(c, [a, b])
            assert await call(a.client(), "SET", "k", "v2") is True  # a and b: a quorum
            assert await stored(c, b"k") == b"v1"  # c missed it (no hints here)
            cluster.heal()
            await cluster.wait_connected()
            # Through c: its own stale copy and a newer one make the quorum.
            assert await call(c.client(), "GET", "k") == b"v2"

            async def repaired() -> bool:
                return await stored(c, b"k") == b"v2"

            await wait_until(repaired, "c's datastore to be repaired")
            newest = await direct(a, "GET", meta_key(b"k"))
            assert await direct(c, "GET", meta_key(b"k")) == newest
            assert c.node is not None
            assert c.node.cluster_counters.read_repairs >= 1


async def test_a_delete_is_not_undone_by_a_replica_that_missed_it() -> None:
    with trio.fail_after(30):
        async with repairing_cluster() as cluster:
            a, b, c = (cluster.node("dc1", rack) for rack in ("r1", "r2", "r3"))
            assert await call(a.client(), "SET", "gone", "v") is True
            cluster.partition(c, [a, b])
            assert await call(a.client(), "DEL", "gone") == 1
            cluster.heal()
            await cluster.wait_connected()
            assert await stored(c, b"gone") == b"v"  # c still has it
            assert await call(c.client(), "GET", "gone") is None  # the tombstone wins

            async def deleted() -> bool:
                return await stored(c, b"gone") is None

            await wait_until(deleted, "the delete to reach c")
            meta = await direct(c, "GET", meta_key(b"gone"))
            assert meta is not None
            assert meta.endswith(b":1")  # a tombstone, kept until the sweeper collects it
            assert await direct(c, "PTTL", meta_key(b"gone")) == -1


async def test_an_older_write_is_discarded_by_a_replica_that_holds_a_newer_one() -> None:
    with trio.fail_after(30):
        async with repairing_cluster() as cluster:
            a = cluster.node("dc1", "r1")
            assert await call(a.client(), "SET", "k", "new") is True
            late = versioned_write([b"SET", b"k", b"old"], 5)  # stamped long ago
            raw = late.split(b"\r\n")
            assert await direct(a, *[raw[i] for i in range(2, len(raw) - 1, 2)]) == b"OK"
            assert await stored(a, b"k") == b"new"


async def test_clients_never_see_the_metadata() -> None:
    with trio.fail_after(30):
        async with repairing_cluster() as cluster:
            a = cluster.node("dc1", "r1")
            assert await call(a.client(), "SET", "k", "v") is True
            assert await direct(a, "EXISTS", meta_key(b"k")) == 1
            assert await call(a.client(), "KEYS", "*") == [b"k"]


async def test_hash_fields_set_members_and_scores_are_repaired_per_element() -> None:
    with trio.fail_after(30):
        async with repairing_cluster() as cluster:
            a, b, c = (cluster.node("dc1", rack) for rack in ("r1", "r2", "r3"))
            client = a.client()
            assert await call(client, "HSET", "h", "f", "v1", "gone", "x") == 2
            assert await call(client, "SADD", "s", "m", "out") == 2
            assert await call(client, "ZADD", "z", "1", "m") == 1
            cluster.partition(c, [a, b])
            assert await call(client, "HSET", "h", "f", "v2") == 0
            assert await call(client, "HDEL", "h", "gone") == 1
            assert await call(client, "SREM", "s", "out") == 1
            assert await call(client, "ZADD", "z", "5", "m") == 0
            cluster.heal()
            await cluster.wait_connected()
            assert await direct(c, "HGET", "h", "f") == b"v1"  # c missed all of it
            through_c = c.client()
            assert await call(through_c, "HGET", "h", "f") == b"v2"
            assert await call(through_c, "HGET", "h", "gone") is None
            assert await call(through_c, "SISMEMBER", "s", "out") == 0
            assert await call(through_c, "SISMEMBER", "s", "m") == 1
            assert float(await call(through_c, "ZSCORE", "z", "m")) == 5.0

            async def repaired() -> bool:
                return (
                    await direct(c, "HGETALL", "h") == {b"f": b"v2"}
                    and await direct(c, "SMEMBERS", "s") == {b"m"}
                    and await direct(c, "ZSCORE", "z", "m") == 5.0
                )

            await wait_until(repaired, "c's hash, set and sorted set to be repaired")
            assert c.node is not None
            assert c.node.cluster_counters.read_repairs == 4


async def test_each_safe_quorum_reads_repair_every_datacenter() -> None:
    layout = {"dc1": {"r1": 1, "r2": 1, "r3": 1}, "dc2": {"r1": 1, "r2": 1, "r3": 1}}
    with trio.fail_after(45):
        async with repairing_cluster(layout, Consistency.DC_EACH_SAFE_QUORUM) as cluster:
            a = cluster.node("dc1", "r1")
            stale = [cluster.node("dc1", "r3"), cluster.node("dc2", "r3")]
            others = [m for m in cluster.nodes if m not in stale]
            assert await call(a.client(), "SET", "k", "v1") is True
            cluster.partition(stale, others)
            assert await call(a.client(), "SET", "k", "v2") is True  # 2 of 3 in each DC
            cluster.heal()
            await cluster.wait_connected()
            assert [await stored(m, b"k") for m in stale] == [b"v1", b"v1"]
            assert await call(stale[0].client(), "GET", "k") == b"v2"

            async def repaired() -> bool:
                return [await stored(m, b"k") for m in stale] == [b"v2", b"v2"]

            await wait_until(repaired, "the stale replica in each DC to be repaired")


async def test_old_tombstones_are_collected_counted_and_not_written_back() -> None:
    with trio.fail_after(30):
        async with repairing_cluster() as cluster:
            a, b, c = (cluster.node("dc1", rack) for rack in ("r1", "r2", "r3"))
            assert await call(a.client(), "SET", "gone", "v") is True
            assert await call(a.client(), "SADD", "s", "m", "kept") == 2
            assert await call(a.client(), "DEL", "gone") == 1
            assert await call(a.client(), "SREM", "s", "m") == 1
            nodes = [m.node for m in (a, b, c)]
            for node in nodes:
                assert node is not None
                await node.sweeper.sweep()  # young tombstones stay
                assert node.cluster_counters.tombstones_collected == 0
            later = time.time() + 11 * 24 * 3600  # past the ten-day grace
            for node in nodes:
                assert node is not None
                node.sweeper.wall = lambda: later
                node.coordinator.clock = HybridClock(lambda: later)
                passes = node.cluster_counters.tombstone_sweeps
                await node.sweeper.sweep()
                assert node.cluster_counters.tombstones_collected == 2
                assert node.cluster_counters.tombstone_sweeps == passes + 1
            assert await direct(c, "EXISTS", meta_key(b"gone")) == 0
            assert await direct(c, "HKEYS", elements_key(b"s")) == [b"kept"]
            # A quorum read of a collected delete finds nothing and writes nothing back.
            assert await call(c.client(), "GET", "gone") is None
            assert await call(c.client(), "SISMEMBER", "s", "m") == 0
            assert await direct(c, "EXISTS", meta_key(b"gone")) == 0
            assert c.node is not None
            assert c.node.cluster_counters.read_repairs == 0
