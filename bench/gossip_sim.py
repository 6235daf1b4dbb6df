"""Convergence time, failure-detection time and gossip traffic of the gossip core, simulated.

    python bench/gossip_sim.py                 # 3, 12, 48 nodes, 5 seeds each
    python bench/gossip_sim.py --sizes 3,12,48,96 --seeds 3 --loss 0.1

Runs ``trinomite.gossip.sim.Network`` (pure, simulated time: no sockets,
no sleeping; the real ``GossipState`` and the real payload bytes) with
``gos_interval`` 1000 ms, so a round is a simulated second.  Every node
starts within the first second knowing only one seed.  Reported per size:

* rounds until every live view holds every node NORMAL (min/median/max);
* gossip payload bytes sent per node per second, steady state (the 60 s
  after convergence), and payloads per node per second;
* false convictions in those 60 s;
* seconds from cutting one node's links until every other node has it DOWN.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trinomite.gossip.detector import conviction_bounds
from trinomite.gossip.events import StateChanged
from trinomite.gossip.sim import Network
from trinomite.gossip.wire import NodeRecord, State


def record(i: int) -> NodeRecord:
    name = f"10.0.{i // 250}.{i % 250}"
    return NodeRecord.make(name, 8101, "dc1", f"rack{i % 3}", [i * 1000 + 1], generation=10**12 + i)


def counter(net: Network, name: str) -> int:
    return sum(node.state.counters[name] for node in net.nodes.values())


def one_run(n: int, seed: int, loss: float, duplicate: float, max_delay: float) -> dict[str, float]:
    net = Network(random.Random(seed), loss=loss, duplicate=duplicate, delay=(0.001, max_delay))
    for i in range(n):
        net.start(record(i), [record(0).name], at=net.rng.uniform(0, 1))
    converged = net.run_until(net.converged, 120.0)
    if converged is None:
        raise SystemExit(f"{n} nodes, seed {seed}: not converged in 120 s")
    before = {k: counter(net, k) for k in ("bytes_out", "messages_out", "convictions")}
    net.run(converged + 60.0)  # steady state
    after = {k: counter(net, k) for k in before}
    victim = record(n - 1).name
    net.isolate(victim)
    cut = net.now
    net.run(cut + 15.0)
    downs = []
    for name, node in net.nodes.items():
        if name == victim:
            continue
        times = [
            t
            for t, e in node.events
            if t >= cut and isinstance(e, StateChanged) and e.name == victim and e.new is State.DOWN
        ]
        downs.append(times[0] - cut if times else float("inf"))
    return {
        "converged": converged,
        "steady_bytes": (after["bytes_out"] - before["bytes_out"]) / n / 60.0,
        "payloads": (after["messages_out"] - before["messages_out"]) / n / 60.0,
        "false": float(after["convictions"] - before["convictions"]),
        "detect": max(downs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="3,12,48")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--loss", type=float, default=0.1)
    parser.add_argument("--duplicate", type=float, default=0.1)
    parser.add_argument("--max-delay", type=float, default=0.3)
    args = parser.parse_args()
    t_min, t_max = conviction_bounds(1.0)
    print(
        f"gos_interval 1000 ms; loss {args.loss:.0%}, duplication {args.duplicate:.0%}, "
        f"delay 1-{args.max_delay * 1000:.0f} ms; conviction after {t_min:.2f}-{t_max:.2f} s "
        "of silence"
    )
    print(
        f"{'nodes':>5} {'rounds to converge (min/med/max)':>34} {'B/node/s':>9} "
        f"{'msgs/node/s':>11} {'false DOWN':>10} {'cut->DOWN everywhere s (med/max)':>33}"
    )
    for n in (int(x) for x in args.sizes.split(",")):
        runs = [
            one_run(n, seed, args.loss, args.duplicate, args.max_delay)
            for seed in range(args.seeds)
        ]
        conv = sorted(r["converged"] for r in runs)
        detect = sorted(r["detect"] for r in runs)
        print(
            f"{n:>5} {conv[0]:>14.0f} / {statistics.median(conv):>5.0f} / {conv[-1]:>5.0f}     "
            f"{statistics.mean(r['steady_bytes'] for r in runs):>9.0f} "
            f"{statistics.mean(r['payloads'] for r in runs):>11.1f} "
            f"{sum(r['false'] for r in runs):>10.0f} "
            f"{statistics.median(detect):>20.2f} / {detect[-1]:>5.2f}"
        )


if __name__ == "__main__":
    main()
