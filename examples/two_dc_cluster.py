"""Two datacenters in one process: replication, quorum reads, and a rack going away.

Theory of operation
-------------------
Starts dc1 with 3 racks and dc2 with 2 racks, two nodes per rack (ten
trinomite nodes), on the embedded store by default or one real redis-server
per node with ``--redis``.  Then, through redis-py:

1. writes keys through one node (DC_ONE) and shows every rack of both DCs
   holding the whole data set, each key on exactly its token owner;
2. reads the keys back under DC_QUORUM through another node;
3. stops a whole rack of dc1: DC_QUORUM still answers (2 of 3 racks), and
   after a second rack stops it fails with Dynomite's error, while a
   DC_ONE read whose own-rack owner is down is served by the surviving rack.

Per-node contents are read with DBSIZE/KEYS, which a node answers from its
own datastore only (as Dynomite does).

    python examples/two_dc_cluster.py [--redis] [--keys 30]
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Callable
from typing import Any

import redis
import trio

from trinomite.testing.cluster import Cluster, ClusterNode, open_cluster

LAYOUT = {"dc1": {"rack1": 2, "rack2": 2, "rack3": 2}, "dc2": {"rack1": 2, "rack2": 2}}


async def call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking redis-py call off the Trio loop that serves the nodes."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args))


async def connect(member: ClusterNode, consistency: str = "") -> redis.Redis:
    """One connection to a node, optionally pinned to a consistency level."""

    def make() -> redis.Redis:
        client = redis.Redis(
            host="127.0.0.1",
            port=member.client_port,
            single_connection_client=True,  # the level is per connection
            decode_responses=True,
        )
        if consistency:
            client.execute_command("dyno_config:conn_consistency", consistency)
        return client

    return await call(make)


async def show_placement(cluster: Cluster, keys: list[str]) -> None:
    print("\nkeys held by each node (DBSIZE answers from the node's own datastore):")
    for dc in LAYOUT:
        for rack in LAYOUT[dc]:
            sizes = [await call(m.client(protocol=2).dbsize) for m in cluster.rack(dc, rack)]
            print(f"  {dc}/{rack}: {sizes} -> {sum(sizes)} keys in the rack")
    key = keys[0]
    owners = [cluster.owner(dc, rack, key.encode()) for dc in LAYOUT for rack in LAYOUT[dc]]
    names = ", ".join(f"{o.dc}/{o.rack}/node{o.index}" for o in owners)
    print(f"  {key!r} lives on its token owner in every rack: {names}")


async def wait_replicated(cluster: Cluster, count: int) -> None:
    """Remote DCs are written asynchronously: wait (bounded) until they caught up."""
    with trio.fail_after(10):
        while True:
            totals = []
            for dc in LAYOUT:
                for rack in LAYOUT[dc]:
                    rack_nodes = cluster.rack(dc, rack)
                    totals.append(
                        sum([await call(m.client(protocol=2).dbsize) for m in rack_nodes])
                    )
            if all(total == count for total in totals):
                return
            await trio.sleep(0.05)


async def main(use_redis: bool, count: int) -> None:
    datastore = "redis" if use_redis else "embedded"
    print(f"starting 10 nodes (dc1: 3 racks, dc2: 2 racks, 2 nodes each) on {datastore} stores")
    async with open_cluster(LAYOUT, datastore=datastore, server_retry_timeout=500) as cluster:
        entry = cluster.node("dc1", "rack1", 0)
        keys = [f"user:{i}" for i in range(count)]
        writer = await connect(entry)
        for key in keys:
            await call(writer.set, key, key.upper())
        print(f"wrote {count} keys through {entry.name} (DC_ONE)")
        await wait_replicated(cluster, count)
        await show_placement(cluster, keys)

        reader = await connect(cluster.node("dc1", "rack2", 1), "DC_QUORUM")
        values = [await call(reader.get, key) for key in keys]
        print(
            f"\nDC_QUORUM read of all {count} keys through dc1/rack2/node1: "
            f"{'all correct' if values == [k.upper() for k in keys] else values}"
        )

        for member in cluster.rack("dc1", "rack3"):
            await cluster.stop_node(member)
        print("\nstopped dc1/rack3 (both nodes)")
        print(f"  DC_QUORUM GET {keys[0]!r} -> {await call(reader.get, keys[0])!r} (2 of 3 racks)")
        print(f"  DC_QUORUM SET new:key   -> {await call(reader.set, 'new:key', 'v')}")

        for member in cluster.rack("dc1", "rack2"):
            if member is not cluster.node("dc1", "rack2", 1):
                await cluster.stop_node(member)
        quorum = await connect(entry, "DC_QUORUM")
        key = next(k for k in keys if cluster.owner("dc1", "rack2", k.encode()).node is None)
        try:
            await call(quorum.get, key)
        except redis.ResponseError as exc:
            print(f"  with dc1/rack2/node0 down too, DC_QUORUM GET {key!r} -> error: {exc}")
        stopped_owner = next(
            k for k in keys if cluster.owner("dc1", "rack1", k.encode()).index == 1
        )
        await cluster.stop_node(cluster.node("dc1", "rack1", 1))
        one = await connect(entry)
        print(
            f"  stopped dc1/rack1/node1; DC_ONE GET {stopped_owner!r} through dc1/rack1/node0 -> "
            f"{await call(one.get, stopped_owner)!r} (served by another rack)"
        )
        assert entry.node is not None
        print(f"  read failovers counted: {entry.node.cluster_counters.read_failover_requests}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", action="store_true", help="one real redis-server per node")
    parser.add_argument("--keys", type=int, default=30, help="how many keys to write")
    options = parser.parse_args()
    # Stopping racks on purpose makes peer links log warnings; keep the output readable.
    logging.basicConfig(level=logging.ERROR)
    trio.run(main, options.redis, options.keys)
