"""The checker for longer, at every consistency level: ``nox -s chaos``.

Theory of operation
-------------------
For each level, an in-process cluster of two datacenters with two racks of
two nodes each (16 real redis-servers with AOF, a ``hints_dir`` per node,
fault proxies on every peer link) runs ``trinomite.testing.checker.check``
with ``--faults`` faults of ``--outage`` seconds and ``--writes`` writes per
writer at least, and prints its report.  Exit status 1 if any acknowledged
write is missing from a replica, or any acknowledged delete was undone.
``--read-repairs`` runs it with versioned writes and read repair on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import trio

from trinomite import Consistency
from trinomite.testing.checker import check
from trinomite.testing.cluster import ClusterNode, open_cluster

LAYOUT = {"dc1": {"r1": 2, "r2": 2}, "dc2": {"r1": 2, "r2": 2}}


async def run(level: Consistency, args: argparse.Namespace, work: Path) -> int:
    def own_hints(member: ClusterNode) -> dict[str, object]:
        return {"hints_dir": str(work / level.value / member.name.replace("/", "-"))}

    async with open_cluster(
        LAYOUT,
        datastore="redis",
        fault_proxies=True,
        redis_options={"appendonly": "yes", "appendfsync": "always"},
        per_node=own_hints,
        read_consistency=level,
        write_consistency=level,
        read_repairs_enabled=args.read_repairs,
        timeout=1000,
        server_retry_timeout=200,
    ) as cluster:
        report = await check(
            cluster, writers=args.writers, writes=args.writes, faults=args.faults,
            outage=args.outage, seed=args.seed,
        )  # fmt: skip
    print(report.summary(), flush=True)
    for replica, what in report.lost[:20]:
        print(f"  lost on {replica}: {what}")
    for replica, what in report.resurrected[:20]:
        print(f"  resurrected on {replica}: {what}")
    return len(report.lost) + len(report.resurrected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=30)
    parser.add_argument("--outage", type=float, default=1.0)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--levels", default=",".join(c.value for c in Consistency))
    parser.add_argument(
        "--read-repairs", action="store_true", help="versioned writes and read repair on"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trinomite-chaos-"))
    lost = 0
    for name in args.levels.split(","):
        lost += trio.run(run, Consistency(name.strip().upper()), args, work)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
