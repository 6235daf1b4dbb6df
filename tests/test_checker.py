"""The checker (``trinomite.testing.checker``), bounded, at each consistency level below EACH.

A 2-rack cluster (2 nodes per rack) with real redis-servers that keep
their data across a kill (AOF, fsync always) and nodes that keep their hints
across a restart (a ``hints_dir`` each), writing unique keys and set members
while a nemesis stops nodes, kills redis-servers and partitions racks.  After
healing, no acknowledged write may be missing from any replica.  ``nox -s
chaos`` runs the same for longer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from trinomite import Consistency
from trinomite.testing.checker import check
from trinomite.testing.cluster import ClusterNode, open_cluster

LAYOUT = {"dc1": {"r1": 2, "r2": 2}}
DURABLE_REDIS = {"appendonly": "yes", "appendfsync": "always"}


@pytest.mark.parametrize(
    "level", [Consistency.DC_ONE, Consistency.DC_QUORUM], ids=lambda level: level.value
)
async def test_no_acknowledged_write_is_lost(tmp_path: Path, level: Consistency) -> None:
    def own_hints(member: ClusterNode) -> dict[str, object]:
        return {"hints_dir": str(tmp_path / member.name.replace("/", "-"))}

    with trio.fail_after(120):
        async with open_cluster(
            LAYOUT,
            datastore="redis",
            fault_proxies=True,
            redis_options=DURABLE_REDIS,
            per_node=own_hints,
            read_consistency=level,
            write_consistency=level,
            timeout=1000,
            server_retry_timeout=200,
        ) as cluster:
            report = await check(cluster, writers=4, writes=60, faults=4, outage=0.4, seed=7)
    print(report.summary())
    assert report.acked > 0
    assert len(report.faults) == 4
    assert report.lost == []


async def test_three_racks_with_read_repair_lose_nothing(tmp_path: Path) -> None:
    """Uneven racks, DC_QUORUM, versions on: this run found the unhinted local leg."""

    def own_hints(member: ClusterNode) -> dict[str, object]:
        return {"hints_dir": str(tmp_path / member.name.replace("/", "-"))}

    with trio.fail_after(120):
        async with open_cluster(
            {"dc1": {"r1": 2, "r2": 2, "r3": 1}},
            datastore="redis",
            fault_proxies=True,
            redis_options=DURABLE_REDIS,
            per_node=own_hints,
            read_repairs_enabled=True,
            read_consistency=Consistency.DC_QUORUM,
            write_consistency=Consistency.DC_QUORUM,
            timeout=1000,
            server_retry_timeout=200,
        ) as cluster:
            report = await check(cluster, writers=4, writes=60, faults=4, outage=0.4, seed=3)
    print(report.summary())
    assert report.acked > 0
    assert report.lost == []


async def test_the_checker_sees_what_dynomite_loses(tmp_path: Path) -> None:
    """With hinted handoff off (Dynomite's fire-and-forget), the same run loses acked writes."""
    with trio.fail_after(120):
        async with open_cluster(
            LAYOUT,
            datastore="redis",
            fault_proxies=True,
            redis_options=DURABLE_REDIS,
            hinted_handoff=False,
            timeout=1000,
            server_retry_timeout=200,
        ) as cluster:
            report = await check(cluster, writers=4, writes=60, faults=3, outage=0.4, seed=7)
    print(report.summary())
    assert report.acked > 0
    assert report.lost  # the checker is not vacuous: these are real losses
