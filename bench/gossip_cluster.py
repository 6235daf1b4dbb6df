# Theory of operation: gossip measured on real nodes. Runs N in-process nodes
# (embedded datastores, real sockets on 127.0.0.1) in one Trio loop under a
# MockClock that jumps ahead only when every task has been idle for a few real
# milliseconds, so a 1000 ms gossip interval costs no real second. Each node
# names only the first node as its seed. Reports the mock seconds (and rounds)
# until every node's ring holds every node and every node is NORMAL, the
# gossip payload bytes each node sent per second over the 30 s that follow,
# and the seconds from stopping one node until every other node holds it DOWN.
#
#     python bench/gossip_cluster.py                # 3 and 12 nodes
#     python bench/gossip_cluster.py --sizes 3,12,48
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trinomite.admin.api import NodeState
from trinomite.config.model import Seed
from trinomite.gossip.wire import State
from trinomite.testing.cluster import open_cluster

INTERVAL_MS = 1000
STEADY = 30.0  # seconds of steady state over which bytes are averaged


async def until(check) -> None:
    for _ in range(100_000):  # 5000 mock seconds at most
        if check():
            return
        await trio.sleep(0.05)
    raise RuntimeError("gave up")


def layout(size: int) -> dict[str, dict[str, int]]:
    racks = 3 if size >= 3 else size
    counts = {f"r{i + 1}": size // racks + (1 if i < size % racks else 0) for i in range(racks)}
    return {"dc1": counts}


async def measure(size: int) -> dict[str, float]:
    first: list = []

    def one_seed(member):
        if not first:
            first.append(member)
            return {"dyn_seeds": ()}
        seed = first[0]
        return {
            "dyn_seeds": (Seed("127.0.0.1", seed.peer_port, seed.rack, seed.dc, (seed.token,)),)
        }

    async with open_cluster(
        layout(size),
        wait_connected=False,
        per_node=one_seed,
        enable_gossip=True,
        gos_interval=INTERVAL_MS,
        startup_timeout=600,
    ) as cluster:
        nodes = [m.node for m in cluster.nodes]
        start = trio.current_time()

        def converged() -> bool:
            return all(
                n is not None and len(n.topology.peers) == size and n.gate.state is NodeState.NORMAL
                for n in nodes
            )

        await until(converged)
        took = trio.current_time() - start
        before = [n.membership.state.counters["bytes_out"] for n in nodes]
        await trio.sleep(STEADY)
        after = [n.membership.state.counters["bytes_out"] for n in nodes]
        per_node = sum(b - a for a, b in zip(before, after, strict=True)) / size / STEADY
        victim = cluster.nodes[-1]
        name = f"127.0.0.1:{victim.peer_port}"
        await cluster.stop_node(victim)
        stopped = trio.current_time()
        others = [m.node for m in cluster.nodes[:-1]]

        def down() -> bool:
            return all(n.membership.state.members[name].state is State.DOWN for n in others)

        await until(down)
        detection = trio.current_time() - stopped
        return {"converge_s": took, "bytes_per_node_s": per_node, "detect_s": detection}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="3,12")
    args = parser.parse_args()
    print(f"gos_interval {INTERVAL_MS} ms, one seed per node, in-process nodes, mock clock")
    print("nodes  converge s (rounds)  gossip B/node/s  stop->DOWN everywhere s")
    for size in (int(s) for s in args.sizes.split(",")):
        clock = trio.testing.MockClock(autojump_threshold=0.02)
        row = trio.run(measure, size, clock=clock)
        rounds = row["converge_s"] / (INTERVAL_MS / 1000)
        print(
            f"{size:5d}  {row['converge_s']:8.1f} ({rounds:4.1f})"
            f"  {row['bytes_per_node_s']:15.0f}  {row['detect_s']:22.2f}"
        )


if __name__ == "__main__":
    main()
