"""Demo: a four-node, two-rack trinomite cluster on the embedded store, used through redis-py.

Theory of operation
-------------------
Starts Dynomite's quickstart layout in this process: one datacenter, two
racks (each a full replica), two nodes per rack with tokens 0 and 2^31,
every node in front of its own embedded Redis-compatible store, so nothing
else needs to be installed or running.  A real client (redis-py, in a worker
thread so the nodes' Trio loop keeps serving) then writes through one node,
reads through another, runs a pipeline and a multi-key MGET that the
cluster splits per owner, shows an error reply, and prints where each key
landed: on its token owner in *each* rack.  With ``--serve`` the cluster
keeps running for ``redis-cli -p PORT``.

    python examples/demo.py [--serve]
"""

from __future__ import annotations

import argparse
import logging
import sys

import redis
import trio

import trinomite
from trinomite.testing.cluster import Cluster, open_cluster

LAYOUT = {"dc1": {"rack1": 2, "rack2": 2}}
KEYS = ["test1", "test2", "test1111", "test2222", "user:1000", "foo"]


def use_cluster(cluster: Cluster) -> None:
    """What an application does: talk to any node like to any Redis server."""
    a = cluster.node("dc1", "rack1", 0).client(decode_responses=True)
    d = cluster.node("dc1", "rack2", 1).client(decode_responses=True)
    print(f"PING                         -> {a.ping()}")
    for key in KEYS:
        a.set(key, key.upper())
    print(f"SET {len(KEYS)} keys through rack1/node0")
    print(f"GET test1 through rack2/node1 -> {d.get('test1')!r}")
    print(f"INCR visits (x3)             -> {[a.incr('visits') for _ in range(3)]}")
    a.hset("user:1", mapping={"name": "Ada", "lang": "Python"})
    print(f"HGETALL user:1               -> {d.hgetall('user:1')}")
    pipe = a.pipeline(transaction=False)
    for i in range(5):
        pipe.set(f"item:{i}", i * i)
    pipe.mget([f"item:{i}" for i in range(5)])
    print(f"pipeline + MGET across owners -> {pipe.execute()[-1]}")
    try:
        a.execute_command("NOSUCHCOMMAND", "x")
    except redis.ResponseError as exc:
        print(f"unknown command              -> error {exc!s:.40}... (connection stays open)")
    print("\nwhere the keys live (KEYS is answered by each node's own store):")
    for member in cluster.nodes:
        local = sorted(k for k in member.client(decode_responses=True).keys("*") if k in KEYS)
        print(f"  {member.rack}/node{member.index} (token {member.token:>10}): {local}")


async def main(serve: bool) -> None:
    async with open_cluster(LAYOUT) as cluster:
        ports = ", ".join(f"{m.rack}/node{m.index}={m.client_port}" for m in cluster.nodes)
        print(f"trinomite {trinomite.__version__}: 4 nodes, 2 racks, embedded stores ({ports})\n")
        await trio.to_thread.run_sync(use_cluster, cluster)
        if serve:
            port = cluster.nodes[0].client_port
            print(f"\nserving; try: redis-cli -p {port}   (Ctrl-C to stop)")
            await trio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help="keep serving after the demo")
    options = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    try:
        trio.run(main, options.serve)
    except KeyboardInterrupt:
        sys.exit(0)
