"""Hinted handoff in running clusters with real redis-servers: no acknowledged write is lost.

The start-up case from the issue (writes while links are still coming up),
a stopped replica that rejoins, a coordinator restarted in the middle of a
replay (hints on disk), a replica that refuses a replayed write, and a full
hint store.  Convergence is checked in each replica's own redis-server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import redis
import trio

from trinomite import Consistency
from trinomite.testing import RedisServer, free_ports
from trinomite.testing.cluster import Cluster, ClusterNode

from .clusterutil import WAIT, call, direct, redis_cluster, stored, wait_until
from .conftest import in_thread

QUICKSTART = {"dc1": {"rack1": 2, "rack2": 2}}
PAIR = {"dc1": {"r1": 1, "r2": 1}}


def hints_of(member: ClusterNode):
    assert member.node is not None, member.name
    assert member.node.hints is not None, member.name
    return member.node.hints


def peer_name(member: ClusterNode) -> str:
    return f"127.0.0.1:{member.peer_port}"


async def replayed_everywhere(cluster: Cluster) -> None:
    async def drained() -> bool:
        return all(hints_of(m).pending == 0 for m in cluster.nodes if m.node is not None)

    await wait_until(drained, "every hint to be replayed")


async def test_writes_made_while_links_come_up_reach_every_replica() -> None:
    """The quickstart cluster written to at once: 0 of 60 acknowledged writes miss a replica."""
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(QUICKSTART, wait_connected=False) as cluster:
            keys = [f"startup:{i}".encode() for i in range(60)]
            for i, key in enumerate(keys):
                writer = cluster.nodes[i % len(cluster.nodes)]
                assert await call(writer.client(), "SET", key, key) is True
            await cluster.wait_connected()
            await replayed_everywhere(cluster)
            missing = [
                (key, rack)
                for key in keys
                for rack in ("rack1", "rack2")
                if await stored(cluster.owner("dc1", rack, key), key) != key
            ]
            assert missing == []
            stored_hints = sum(hints_of(m).totals()["hints_stored"] for m in cluster.nodes)
            print(f"hints stored while the links came up: {stored_hints}")


async def test_a_stopped_replica_gets_its_writes_in_order_when_it_rejoins() -> None:
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(PAIR) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            await cluster.stop_node(b)
            client = a.client()
            for value in range(1, 6):  # one key written five times: order matters
                assert await call(client, "SET", "k", value) is True
            for i in range(50):
                assert await call(client, "SET", f"other:{i}", i) is True
            assert hints_of(a).peers[peer_name(b)].pending == 55
            # Shown per peer: /info, /metrics, the feed's snapshot.
            assert a.node is not None
            admin = a.node.admin
            assert admin.info()["hints"][peer_name(b)]["pending"] == 55
            assert admin.snapshot()["hints"]["peers"][peer_name(b)]["pending"] == 55
            series = [
                line for line in admin.metrics_text().splitlines()
                if line.startswith("trinomite_peer_link_hints_pending{") and peer_name(b) in line
            ]  # fmt: skip
            assert len(series) == 1
            assert series[0].endswith(" 55")
            await cluster.start_node(b)
            await replayed_everywhere(cluster)
            assert await stored(b, b"k") == b"5"
            assert [await stored(b, f"other:{i}".encode()) for i in (0, 49)] == [b"0", b"49"]
            counts = hints_of(a).peers[peer_name(b)]
            # The first four SETs of "k" were overtaken by the fifth: skipped, not replayed.
            assert (counts.replayed, counts.superseded, counts.rejected, counts.pending) == (
                51,
                4,
                0,
                0,
            )


async def test_a_coordinator_restarted_mid_replay_loses_no_hint(tmp_path: Path) -> None:
    def own_dir(member: ClusterNode) -> dict[str, object]:
        return {"hints_dir": str(tmp_path / member.rack), "hint_replay_rate": 50}

    with trio.fail_after(4 * WAIT):
        async with redis_cluster(PAIR, per_node=own_dir) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            await cluster.stop_node(b)
            keys = [f"restart:{i}".encode() for i in range(300)]
            for key in keys:
                assert await call(a.client(), "SET", key, key) is True
            await cluster.start_node(b)

            async def under_way() -> bool:
                return hints_of(a).peers[peer_name(b)].replayed > 0

            await wait_until(under_way, "the replay to start")
            # 300 hints at 50 a second: seconds of replay are still to come.
            assert hints_of(a).peers[peer_name(b)].pending > 0
            await cluster.stop_node(a)  # in the middle of the replay
            left_on_disk = (tmp_path / "r1").iterdir()
            assert any(p.suffix == ".hints" and p.stat().st_size > 0 for p in left_on_disk)
            await cluster.start_node(a)
            await replayed_everywhere(cluster)
            assert all([await stored(b, key) == key for key in keys])


async def test_a_replica_that_refuses_a_replayed_write_is_counted_not_retried() -> None:
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(PAIR) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            await cluster.stop_node(b)
            assert await call(a.client(), "LPUSH", "l", "x") == 1
            assert await call(a.client(), "SET", "after", "yes") is True
            await direct(b, "SET", "l", "a string")  # the replay of LPUSH will get WRONGTYPE
            await cluster.start_node(b)
            await replayed_everywhere(cluster)
            counts = hints_of(a).peers[peer_name(b)]
            assert (counts.replayed, counts.rejected) == (1, 1)
            assert await stored(b, b"after") == b"yes"


async def test_a_full_hint_store_drops_and_counts() -> None:
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(PAIR, hints_max_bytes=400) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            await cluster.stop_node(b)
            for i in range(20):
                assert await call(a.client(), "SET", f"k{i}", i) is True  # acked locally
            counts = hints_of(a).peers[peer_name(b)]
            assert counts.stored + counts.dropped["full"] == 20
            assert counts.dropped["full"] > 0
            assert hints_of(a).bytes <= 400


async def test_the_quickstart_started_process_by_process_loses_no_write(tmp_path: Path) -> None:
    """The issue's case, as a user runs it: node processes started one after another, each
    seeding the other three, written to as soon as they answer; the last node starts only
    after all 60 writes.  Links to nodes not started yet are refused and back off; the
    writes those nodes miss are hinted and replayed, so every acknowledged key ends up on
    exactly one node of each rack."""
    stores = [RedisServer() for _ in range(4)]
    ports = free_ports(12)
    layout = [("rack1", 0), ("rack1", 2147483647), ("rack2", 0), ("rack2", 2147483647)]
    nodes = [(rack, token, ports[3 * i : 3 * i + 3]) for i, (rack, token) in enumerate(layout)]
    processes: list[subprocess.Popen[bytes]] = []
    keys = [f"quick:{i}".encode() for i in range(60)]
    try:
        for store in stores:
            await in_thread(store.start)
        clients = [redis.Redis(port=p[0], socket_timeout=10) for _, _, p in nodes]
        acked = 0
        with trio.fail_after(3 * WAIT):
            # Three nodes come up one after another; the fourth only after the writes.
            for i in range(3):
                processes.append(await _start_node(tmp_path, nodes, i, stores[i].port))
            for i, key in enumerate(keys):
                acked += await _write_somewhere(clients[:3], i, key)
            processes.append(await _start_node(tmp_path, nodes, 3, stores[3].port))

            async def drained() -> bool:
                try:
                    infos = [await in_thread(_info, p[2]) for _, _, p in nodes]
                except OSError:
                    return False  # the last node is still starting
                return all(info["hints_pending"] == 0 for info in infos)

            await wait_until(drained, "every node's hints to be replayed")
        stored_hints = sum([(await in_thread(_info, p[2]))["hints_stored"] for _, _, p in nodes])
        directs = [redis.Redis(host=s.host, port=s.port) for s in stores]
        for key in keys:
            holders = [i for i, d in enumerate(directs) if await in_thread(d.get, key) == key]
            assert sum(1 for i in holders if layout[i][0] == "rack1") == 1, (key, holders)
            assert sum(1 for i in holders if layout[i][0] == "rack2") == 1, (key, holders)
        assert acked == len(keys)
        assert stored_hints > 0  # the case really happened: writes were handed off
        print(f"hints stored while the quickstart came up: {stored_hints}")
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for store in stores:
            store.close()


async def _write_somewhere(clients: list[redis.Redis], first: int, key: bytes) -> int:
    """SET through the nodes in turn from ``first`` until one acknowledges it (as a user retries).

    A node whose own-rack owner of ``key`` is down answers an error (DC_ONE):
    that write is not acknowledged, and the next node is tried.
    """
    for attempt in range(600):
        client = clients[(first + attempt) % len(clients)]
        try:
            if await in_thread(client.set, key, key):
                return 1
        except (redis.ConnectionError, redis.ResponseError):
            await trio.sleep(0.02)
    raise AssertionError(f"no node acknowledged {key!r}")


async def _start_node(
    tmp_path: Path, nodes: list[tuple[str, int, list[int]]], i: int, store_port: int
) -> subprocess.Popen[bytes]:
    rack, token, (client, peer, stats) = nodes[i]
    seeds = "".join(
        f"  - 127.0.0.1:{p[1]}:{r}:dc1:{t}\n" for j, (r, t, p) in enumerate(nodes) if j != i
    )
    path = tmp_path / f"node{i}.yml"
    path.write_text(
        f"dyn_o_mite:\n  datacenter: dc1\n  rack: {rack}\n  tokens: '{token}'\n"
        f"  listen: 127.0.0.1:{client}\n  dyn_listen: 127.0.0.1:{peer}\n"
        f"  stats_listen: 127.0.0.1:{stats}\n  servers:\n  - 127.0.0.1:{store_port}:1\n"
        f"  dyn_seed_provider: simple_provider\n  dyn_seeds:\n{seeds}"
    )
    command = [sys.executable, "-m", "trinomite", str(path)]
    return await in_thread(
        subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _info(stats_port: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/info", timeout=10) as reply:
        pool: dict[str, int] = json.load(reply)["dyn_o_mite"]
        return pool


class FakeWallClock:
    """The hint store's clock (hint ages and the window), moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_partition_shorter_than_the_window_is_healed_by_hints_alone() -> None:
    clock = FakeWallClock()
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(PAIR, fault_proxies=True) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            hints_of(a).clock = clock
            cluster.partition(a, b)
            for i in range(5):
                assert await call(a.client(), "SET", f"early:{i}", i) is True
            clock.now += 2 * 3600  # two hours later, still inside the 3 h window
            for i in range(5):
                assert await call(a.client(), "SET", f"late:{i}", i) is True
            cluster.heal()
            await cluster.wait_connected()
            await replayed_everywhere(cluster)
            for prefix in ("early", "late"):
                assert [await stored(b, f"{prefix}:{i}") for i in range(5)] == [
                    str(i).encode() for i in range(5)
                ]
            counts = hints_of(a).peers[f"127.0.0.1:{cluster.peer_port(a, b)}"]
            assert (counts.replayed, counts.dropped) == (10, {"window": 0, "full": 0})


async def test_a_partition_longer_than_the_window_drops_and_counts_hints() -> None:
    clock = FakeWallClock()
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(PAIR, fault_proxies=True) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            hints_of(a).clock = clock
            cluster.partition(a, b)
            for i in range(5):
                assert await call(a.client(), "SET", f"old:{i}", i) is True
            clock.now += 3 * 3600 + 60  # past the window: b has been away too long
            for i in range(5):
                assert await call(a.client(), "SET", f"new:{i}", i) is True  # acked, not hinted
            cluster.heal()
            await cluster.wait_connected()
            await replayed_everywhere(cluster)
            counts = hints_of(a).peers[f"127.0.0.1:{cluster.peer_port(a, b)}"]
            # 5 writes were refused a hint, and the 5 older hints expired unreplayed:
            # both left for anti-entropy.
            assert counts.dropped == {"window": 10, "full": 0}
            assert counts.replayed == 0
            assert await stored(b, b"old:0") is None


async def test_a_quorum_write_its_coordinators_own_datastore_missed_is_replayed_into_it() -> None:
    """Found by the checker: the local leg of a quorum write was never hinted."""
    layout = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}
    quorum = {
        "read_consistency": Consistency.DC_QUORUM,
        "write_consistency": Consistency.DC_QUORUM,
    }
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(layout, **quorum) as cluster:
            c = cluster.node("dc1", "r3")
            await cluster.stop_datastore(c)
            # c's own leg fails; the other two racks make the quorum: acked.
            assert await call(c.client(), "SET", "k", "v") is True
            assert hints_of(c).peers["local"].pending == 1
            await cluster.start_datastore(c)
            await replayed_everywhere(cluster)
            assert await stored(c, b"k") == b"v"
