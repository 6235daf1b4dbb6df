"""memcached clusters (``data_store: 1``): replication, quorums, hints, forwards and TLS.

Every node fronts its own real memcached; placement and convergence are
checked by reading each memcached directly.  A stopped memcached is a
killed process (it comes back empty), so hints are what bring a replica's
missed writes back.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from pymemcache.exceptions import MemcacheServerError

from trinomite import Consistency
from trinomite.admin.api import NodeState
from trinomite.config.model import SecureServerOption
from trinomite.protocol.peer import FrameParser, MessageType, encode_frame
from trinomite.testing import MemcachedServer
from trinomite.testing.cluster import Cluster, ClusterNode, open_cluster
from trinomite.testing.tls import ClusterCertificates

from .clusterutil import WAIT, wait_until

ROOT = Path(__file__).resolve().parent.parent
PAIR = {"dc1": {"r1": 1, "r2": 1}}
FOUR = {"dc1": {"r1": 2, "r2": 2}}
QUORUM = {
    "read_consistency": Consistency.DC_QUORUM,
    "write_consistency": Consistency.DC_QUORUM,
}


async def run(member: ClusterNode, fn: Any, *, direct: bool = False) -> Any:
    """``fn(client)`` with a pymemcache client for ``member`` (or its memcached), in a thread."""

    def work() -> Any:
        client = member.memcache_client(direct=direct)
        try:
            return fn(client)
        finally:
            client.close()

    return await trio.to_thread.run_sync(work)


async def direct_get(member: ClusterNode, key: str) -> bytes | None:
    return await run(member, lambda c: c.get(key), direct=True)


def hints_pending(cluster: Cluster) -> int:
    return sum(m.node.hints.pending for m in cluster.nodes if m.node and m.node.hints)


async def test_writes_reach_the_owner_in_every_rack_and_only_it() -> None:
    with trio.fail_after(WAIT):
        async with open_cluster(FOUR, datastore="memcached") as cluster:
            keys = [f"place:{i}" for i in range(40)]
            for i, key in enumerate(keys):
                writer = cluster.nodes[i % len(cluster.nodes)]
                assert await run(writer, lambda c, k=key: c.set(k, k.upper())) is True
            for key in keys:
                for rack in ("r1", "r2"):
                    owner = cluster.owner("dc1", rack, key.encode())
                    for member in cluster.rack("dc1", rack):
                        held = await direct_get(member, key)
                        assert held == (key.upper().encode() if member is owner else None)


async def test_a_multi_get_across_owners_keeps_the_client_key_order() -> None:
    with trio.fail_after(WAIT):
        async with open_cluster(FOUR, datastore="memcached") as cluster:
            a = cluster.node("dc1", "r1")
            keys = [f"mg:{i}" for i in range(12)]
            for key in keys[::2]:  # every other key exists
                assert await run(a, lambda c, k=key: c.set(k, k)) is True
            owners = {cluster.owner("dc1", "r1", k.encode()).name for k in keys}
            assert len(owners) == 2  # the request really spans nodes
            wanted = [*keys[::-1], keys[0], keys[4]]  # reversed, with repeats

            def raw(client: Any) -> bytes:
                sock = client.sock or client._connect() or client.sock
                line = b"get " + b" ".join(k.encode() for k in wanted) + b"\r\n"
                sock.sendall(line)
                out = b""
                while not out.endswith(b"END\r\n"):
                    out += sock.recv(65536)
                return out

            reply = await run(a, lambda c: (c.version(), raw(c))[1])
            expected = b"".join(
                b"VALUE %s 0 %d\r\n%s\r\n" % (k.encode(), len(k), k.encode())
                for k in wanted
                if int(k.split(":")[1]) % 2 == 0
            )
            assert reply == expected + b"END\r\n"
            assert a.node is not None
            assert a.node.coordinator.counters.fragments >= 2


async def test_cas_is_decided_by_the_owner_and_copied_to_every_replica() -> None:
    with trio.fail_after(WAIT):
        async with open_cluster(PAIR, datastore="memcached", **QUORUM) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            assert await run(a, lambda c: c.set("c", "v1")) is True
            _, unique = await run(a, lambda c: c.gets("c"))
            assert await run(a, lambda c: c.cas("c", "v2", unique)) is True
            assert await run(a, lambda c: c.cas("c", "v3", unique)) is False  # stale: EXISTS
            assert await direct_get(a, "c") == b"v2"
            assert await direct_get(b, "c") == b"v2"
            assert await run(b, lambda c: c.get("c")) == b"v2"  # a quorum read agrees


async def test_a_quorum_fails_clearly_with_one_memcached_stopped() -> None:
    with trio.fail_after(WAIT):
        async with open_cluster(PAIR, datastore="memcached", hinted_handoff=False, **QUORUM) as (
            cluster
        ):
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            assert await run(a, lambda c: c.set("k", "v")) is True
            await cluster.stop_datastore(b)
            with pytest.raises(MemcacheServerError, match="Storage: "):
                await run(a, lambda c: c.set("k", "w"))
            with pytest.raises(MemcacheServerError, match="Storage: "):
                await run(a, lambda c: c.get("k"))
            assert a.node is not None
            counters = a.node.coordinator.counters
            assert counters.client_non_quorum_w_responses == 1
            assert counters.client_non_quorum_r_responses == 1
            # DC_ONE on the other hand is answered by the coordinator's own rack.
            a.node.read_consistency = a.node.write_consistency = Consistency.DC_ONE
            assert await run(a, lambda c: c.set("one", "x")) is True
            assert await run(a, lambda c: c.get("one")) == b"x"


async def test_diverged_replicas_fail_a_safe_quorum_read() -> None:
    levels = {"read_consistency": Consistency.DC_SAFE_QUORUM}
    with trio.fail_after(WAIT):
        async with open_cluster(PAIR, datastore="memcached", **levels) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            assert await run(a, lambda c: c.set("d", "same")) is True
            assert await run(a, lambda c: c.get("d")) == b"same"
            assert await run(b, lambda c: c.set("d", "other"), direct=True) is True
            with pytest.raises(MemcacheServerError, match="Dynomite: Failed to achieve Quorum"):
                await run(a, lambda c: c.get("d"))


async def test_noreply_quorum_writes_still_reach_their_quorum() -> None:
    with trio.fail_after(WAIT):
        async with open_cluster(PAIR, datastore="memcached", **QUORUM) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            for i in range(20):
                await run(a, lambda c, i=i: c.set(f"nr:{i}", str(i), noreply=True))
            assert await run(a, lambda c: c.get("nr:19")) == b"19"  # after every write
            for i in range(20):
                assert await direct_get(b, f"nr:{i}") == str(i).encode()


async def test_hints_refill_a_memcached_that_restarted() -> None:
    with trio.fail_after(3 * WAIT):
        async with open_cluster(PAIR, datastore="memcached") as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            await cluster.stop_datastore(b)
            for i in range(30):  # DC_ONE: acked by a's own rack
                assert await run(a, lambda c, i=i: c.set(f"h:{i}", str(i))) is True
            assert await run(a, lambda c: c.delete("h:0")) is True

            async def stored() -> bool:  # a copy's miss may come after the client's reply
                return hints_pending(cluster) == 31

            await wait_until(stored, "a hint for each write b missed")
            await cluster.start_datastore(b)  # back, and empty

            async def drained() -> bool:
                return hints_pending(cluster) == 0

            await wait_until(drained, "the hints to be replayed")
            assert await direct_get(b, "h:0") is None
            for i in range(1, 30):
                assert await direct_get(b, f"h:{i}") == str(i).encode()


async def test_a_remote_dc_gets_writes_by_forward() -> None:
    layout = {"dc1": {"r1": 1}, "dc2": {"r1": 1, "r2": 1}}
    with trio.fail_after(WAIT):
        async with open_cluster(layout, datastore="memcached") as cluster:
            a = cluster.node("dc1", "r1")
            assert await run(a, lambda c: c.set("far", "away")) is True
            remote = [cluster.node("dc2", "r1"), cluster.node("dc2", "r2")]

            async def everywhere() -> bool:
                return all([await direct_get(m, "far") == b"away" for m in remote])

            await wait_until(everywhere, "the forward to reach both racks of dc2")
            each = {"read_consistency": Consistency.DC_EACH_SAFE_QUORUM}
            assert a.node is not None
            a.node.read_consistency = each["read_consistency"]
            assert await run(a, lambda c: c.get("far")) == b"away"


async def test_a_memcached_cluster_over_mutual_tls(tmp_path: Path) -> None:
    certs = ClusterCertificates(tmp_path)
    option = {"secure_server_option": SecureServerOption.ALL}
    with trio.fail_after(WAIT):
        async with open_cluster(PAIR, datastore="memcached", per_node=certs, **option) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            assert a.node is not None
            links = [c for pool in a.node.peers.pools.values() for c in pool.connections]
            assert links
            assert all(link.secure and link.tls_version for link in links)
            assert await run(a, lambda c: c.set("t", "tls")) is True
            assert await direct_get(b, "t") == b"tls"


def _holding(tree: Any, key: str) -> dict[str, Any]:
    """The dict somewhere in ``tree`` that has ``key``."""
    if isinstance(tree, dict):
        if key in tree:
            return tree
        for value in tree.values():
            found = _holding(value, key)
            if found:
                return found
    return {}


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_info_metrics_and_status_show_memcached_nodes() -> None:
    with trio.fail_after(WAIT):
        async with open_cluster(PAIR, datastore="memcached") as cluster:
            a = cluster.node("dc1", "r1")
            for i in range(5):
                assert await run(a, lambda c, i=i: c.set(f"s:{i}", "v")) is True
            assert await run(a, lambda c: c.get_many(["s:1", "s:2"])) == {
                "s:1": b"v",
                "s:2": b"v",
            }
            info = await trio.to_thread.run_sync(_get_json, f"{a.admin_url}/info")
            assert info["data_store"] == "memcached"
            server = _holding(info, "redis_req_set")
            assert server["redis_req_set"] == 5  # memcached commands count as their Redis twins
            assert server["redis_req_get"] == 1
            text = await trio.to_thread.run_sync(_get_text, f"{a.admin_url}/metrics")
            samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
            assert samples
            assert all(s.labels.get("data_store") == "memcached" for s in samples if s.labels)
            addresses = [str(m.node.admin_address) for m in cluster.nodes if m.node]
            done = await trio.run_process(
                [sys.executable, "-m", "trinomite", "status", *addresses, "--once"],
                capture_stdout=True,
                check=False,
                env=os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "200"},
            )
    table = done.stdout.decode()
    assert done.returncode == 0, table
    for address in addresses:
        line = next(line for line in table.splitlines() if line.startswith(address + " "))
        assert line.split()[1:4] == [line.split()[1], "mc", "NORMAL"], table


def _frames_exchange(port: int, frames: bytes, count: int) -> list[Any]:
    """Send Dynomite frames to a node's dyn_listen; the first ``count`` RES frames back."""
    parser = FrameParser()
    got: list[Any] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(frames)
        while len(got) < count:
            data = sock.recv(65536)
            assert data, got
            parser.feed(data)
            got += [f for f in parser.frames() if f.type is MessageType.RES]
    return got


async def test_peer_frames_carry_memcached_payloads_as_dynomite_does() -> None:
    """A Dynomite peer's REQ frames, each one memcached request; RES frames echo the ids."""
    with trio.fail_after(WAIT):
        async with open_cluster({"dc1": {"r1": 1}}, datastore="memcached") as cluster:
            member = cluster.node("dc1", "r1")
            frames = b"".join(
                encode_frame(msg_id, MessageType.REQ, payload, same_dc=True)
                for msg_id, payload in [
                    (7, b"set p 3 0 2\r\nhi\r\n"),
                    (8, b"get p\r\n"),
                    (9, b"get\r\n"),  # not one request with a key: refused, link kept
                    (10, b"delete p\r\n"),
                ]
            )
            replies = await trio.to_thread.run_sync(_frames_exchange, member.peer_port, frames, 4)
            assert [(f.msg_id, f.payload) for f in replies] == [
                (7, b"STORED\r\n"),
                (8, b"VALUE p 3 2\r\nhi\r\nEND\r\n"),
                (9, replies[2].payload),
                (10, b"DELETED\r\n"),
            ]
            # The node's own errors go out in memcached's form, as Dynomite's.
            assert replies[2].payload.startswith(b"SERVER_ERROR Protocol error: ")
            await cluster.stop_datastore(member)
            frame = encode_frame(11, MessageType.REQ, b"get p\r\n", same_dc=True)
            (down,) = await trio.to_thread.run_sync(_frames_exchange, member.peer_port, frame, 1)
            assert down.payload.startswith(b"SERVER_ERROR Storage: ")


@pytest.mark.parametrize(
    "level", [Consistency.DC_ONE, Consistency.DC_QUORUM, Consistency.DC_SAFE_QUORUM]
)
async def test_a_pipelined_round_through_two_racks_answers_as_one_memcached(
    level: Consistency, memcached_backend: MemcachedServer
) -> None:
    """Every command, pipelined in one write: the replies, in order, are memcached's own.

    One node per rack, so the coordinator's own memcached sees every request,
    as the reference does (cas uniques then agree).  The round's local legs
    travel as one shared run and its peer legs as one write, on both nodes.
    """
    from .test_memcache_node import EVERY_COMMAND, exchange

    levels = {"read_consistency": level, "write_consistency": level}
    with trio.fail_after(WAIT):
        async with open_cluster(PAIR, datastore="memcached", **levels) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            through = await trio.to_thread.run_sync(exchange, a.client_port, EVERY_COMMAND)
            direct = await trio.to_thread.run_sync(exchange, memcached_backend.port, EVERY_COMMAND)
            assert through == direct
            assert await direct_get(b, "a") == await direct_get(a, "a") == b"<<foobar"
            assert b.node is not None
            assert b.node.peer_counters.dnode_client_err == 0


async def test_memcached_nodes_gossip_from_one_seed_and_replicate() -> None:
    """Membership is datastore-blind: a gossiping memcached cluster routes like any."""
    from .test_gossip_cluster import gossip, node_of, one_seed, views, wait_for

    layout = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}
    with trio.fail_after(WAIT):
        async with open_cluster(
            layout,
            datastore="memcached",
            wait_connected=False,
            per_node=one_seed(),
            **gossip(gos_interval=200),
        ) as cluster:
            await wait_for(lambda: all(len(v) == 3 for v in views(cluster)), "convergence")
            await wait_for(
                lambda: all(node_of(m).gate.state is NodeState.NORMAL for m in cluster.nodes),
                "every node NORMAL",
            )
            await cluster.wait_connected()
            first, *others = cluster.nodes
            assert await run(first, lambda c: c.set("g", "gossiped")) is True

            async def everywhere() -> bool:
                return all([await direct_get(m, "g") == b"gossiped" for m in others])

            await wait_until(everywhere, "the write on every rack")


async def test_a_dc_one_read_fails_over_to_another_rack() -> None:
    """The own-rack owner of a key is stopped: the read is served by the other rack's."""
    with trio.fail_after(WAIT):
        async with open_cluster(FOUR, datastore="memcached") as cluster:
            a = cluster.node("dc1", "r1", 0)
            other = cluster.node("dc1", "r1", 1)
            key = next(
                k
                for k in (f"fo:{i}" for i in range(100))
                if cluster.owner("dc1", "r1", k.encode()) is other
            )
            assert await run(a, lambda c: c.set(key, "v")) is True
            await cluster.stop_node(other)

            async def served() -> bool:
                try:
                    return bool(await run(a, lambda c: c.get(key)) == b"v")
                except MemcacheServerError:
                    return False  # until a sees the link down

            await wait_until(served, "the read to fail over")
            assert a.node is not None
            assert a.node.coordinator.counters.read_failover_requests >= 1


async def test_cas_at_each_safe_quorum_reaches_every_dc() -> None:
    layout = {"dc1": {"r1": 1}, "dc2": {"r1": 1}}
    each = {"write_consistency": Consistency.DC_EACH_SAFE_QUORUM}
    with trio.fail_after(WAIT):
        async with open_cluster(layout, datastore="memcached", **each) as cluster:
            a, far = cluster.node("dc1", "r1"), cluster.node("dc2", "r1")
            assert await run(a, lambda c: c.set("ec", "v1")) is True
            _, unique = await run(a, lambda c: c.gets("ec"))
            assert await run(a, lambda c: c.cas("ec", "v2", unique)) is True
            assert await direct_get(far, "ec") == b"v2"  # acked only once dc2 stored it
            assert await run(a, lambda c: c.cas("ec", "v3", unique)) is False
            await cluster.stop_datastore(far)
            _, unique = await run(a, lambda c: c.gets("ec"))
            with pytest.raises(MemcacheServerError, match="Storage: "):
                await run(a, lambda c: c.cas("ec", "v4", unique))  # dc2 cannot make its quorum
