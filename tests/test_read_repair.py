"""Versioned writes and read repair of string keys, with real redis-servers.

Three racks of one node at DC_QUORUM with ``read_repairs_enabled`` and
hinted handoff off (so only read repair can fix a stale replica).  A rack is
partitioned while a key changes; after healing, a quorum read through the
stale node returns the newest value (or nothing, for a delete: no
resurrection) and the stale replica's own datastore is repaired.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trinomite import Consistency
from trinomite.cluster.repair import meta_key, versioned_write
from trinomite.testing.cluster import Cluster, open_cluster

from .clusterutil import call, direct, stored, wait_until

LAYOUT = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}


@asynccontextmanager
async def repairing_cluster() -> AsyncIterator[Cluster]:
    async with open_cluster(
        LAYOUT,
        datastore="redis",
        fault_proxies=True,
        hinted_handoff=False,
        read_repairs_enabled=True,
        read_consistency=Consistency.DC_QUORUM,
        write_consistency=Consistency.DC_QUORUM,
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
            assert meta.endswith(b":1")  # a tombstone, with a TTL
            assert await direct(c, "PTTL", meta_key(b"gone")) > 0


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
