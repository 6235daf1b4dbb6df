"""The admin HTTP paths on real nodes and clusters: bodies and their effects.

Theory of operation
-------------------
These tests start real nodes (``open_node`` with ``stats_listen`` on
port 0, and ``open_cluster``) and speak HTTP over loopback TCP, checking
bodies *and* effects through redis-py.  Every test is bounded by ``fail_after``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import redis
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from tests.adminfake import TIMEOUT, Reply, http_get
from tests.conftest import client_for, in_thread, node_config
from trinomite import DatastoreSpec, Node, open_node
from trinomite.admin.api import NodeState
from trinomite.admin.http import METRICS, ROUTES
from trinomite.logs import python_level
from trinomite.testing.cluster import Cluster, ClusterNode, open_cluster

# -- a real node -------------------------------------------------------------------

#: Dynomite's /info fields (dynomite.md section 7.3): top level, pool, server.
INFO_TOP = (
    "service source version uptime timestamp rack dc latency_max latency_999th latency_99th "
    "latency_95th latency_mean payload_size_max payload_size_999th payload_size_99th "
    "payload_size_95th payload_size_mean average_cross_region_rtt 99_cross_region_rtt "
    "average_cross_zone_latency 99_cross_zone_latency average_server_latency 99_server_latency "
    "average_cross_region_queue_wait 99_cross_region_queue_wait average_cross_zone_queue_wait "
    "99_cross_zone_queue_wait average_server_queue_wait 99_server_queue_wait client_out_queue_99 "
    "server_in_queue_99 server_out_queue_99 dnode_client_out_queue_99 peer_in_queue_99 "
    "peer_out_queue_99 remote_peer_out_queue_99 remote_peer_in_queue_99 alloc_msgs free_msgs "
    "alloc_mbufs free_mbufs dyn_memory"
).split()
INFO_POOL = (
    "client_eof client_err client_connections client_read_requests client_write_requests "
    "client_dropped_requests client_non_quorum_w_responses client_non_quorum_r_responses "
    "server_ejects dnode_client_eof dnode_client_err dnode_client_connections "
    "dnode_client_in_queue dnode_client_in_queue_bytes dnode_client_out_queue "
    "dnode_client_out_queue_bytes peer_dropped_requests peer_timedout_requests "
    "remote_peer_dropped_requests remote_peer_timedout_requests remote_peer_failover_requests "
    "peer_eof peer_err peer_timedout remote_peer_timedout peer_connections peer_forward_error "
    "peer_requests peer_request_bytes peer_responses peer_response_bytes peer_ejected_at "
    "peer_ejects peer_in_queue remote_peer_in_queue peer_in_queue_bytes "
    "remote_peer_in_queue_bytes peer_out_queue remote_peer_out_queue peer_out_queue_bytes "
    "remote_peer_out_queue_bytes peer_mismatch_requests forward_error fragments stats_count"
).split()
INFO_SERVER = (
    "server_eof server_err server_timedout server_ejected_at server_dropped_requests "
    "server_timedout_requests read_requests read_request_bytes write_requests "
    "write_request_bytes read_responses read_response_bytes write_responses "
    "write_response_bytes in_queue in_queue_bytes out_queue out_queue_bytes redis_req_get "
    "redis_req_set redis_req_del redis_req_incr_decr redis_req_keys redis_req_mget "
    "redis_req_scan redis_req_sort redis_req_lreqm redis_req_sunion redis_req_ping "
    "redis_req_lists redis_req_sets redis_req_hashes redis_req_sortedsets redis_req_other"
).split()
TWO_RACKS = {"dc1": {"r1": 1, "r2": 1}}
REFUSED = "Dynomite: Dynomite's current state does not allow this request"


def admin_of(node: Node) -> tuple[str, int]:
    address = node.admin_address
    assert address is not None
    return address.host, address.port


async def get(node: Node, target: str, headers: Sequence[tuple[str, str]] = (), **kw: Any) -> Reply:
    return await http_get(admin_of(node), target, headers, **kw)


async def ok(node: Node, target: str) -> None:
    reply = await get(node, target)
    assert (reply.status, reply.text) == (200, "OK\r\n"), (target, reply)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` every 10 ms (bounded; callers also hold a fail_after)."""
    for _ in range(1000):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition never held")


async def refused(fn: Any, *args: Any) -> str:
    with pytest.raises(redis.ResponseError) as info:
        await in_thread(fn, *args)
    return str(info.value)


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with open_node(node_config(DatastoreSpec.embedded())) as running:
        yield running


def test_dynomite_field_lists_are_complete():
    assert (len(INFO_POOL), len(INFO_SERVER)) == (45, 34)


async def test_info_has_every_dynomite_field(node):
    with trio.fail_after(TIMEOUT):
        reply = await get(node, "/info")
    assert reply.headers["content-type"] == "application/json; charset=utf-8"
    info = json.loads(reply.body)
    assert [f for f in INFO_TOP if f not in info] == []
    assert info["service"] == "dynomite"
    assert (info["dc"], info["rack"]) == ("localdc", "localrack")
    pool = info[node.config.pool_name]
    assert [f for f in INFO_POOL if f not in pool] == []
    server = pool[node.config.datastore.stats_name]
    assert [f for f in INFO_SERVER if f not in server] == []


async def test_read_paths_on_a_node(node):
    with trio.fail_after(TIMEOUT):
        assert (await get(node, "/ping")).text == "OK\r\n"
        assert (await get(node, "/state/get_state")).text == "State: NORMAL\n"
        assert (await get(node, "/get_timeout_factor")).text == "Timeout factor: 1\n"
        consistency = (await get(node, "/get_consistency")).text
        assert consistency == "Read Consistency: DC_ONE\r\nWrite Consistency: DC_ONE\r\n"
        described = json.loads((await get(node, "/cluster_describe")).body)
        [dc] = described["dcs"]
        [rack] = dc["racks"]
        assert (dc["name"], rack["name"], len(rack["servers"])) == ("localdc", "localrack", 1)
        assert {"name", "host", "port", "token"} <= set(rack["servers"][0])
        help_text = (await get(node, "/help")).text
        assert all(route.template in help_text for route in ROUTES)
        assert (await get(node, "/nope")).status == 404
        assert (await get(node, "/ping", raw=b"POST /ping HTTP/1.0\r\n\r\n")).status == 405


async def test_metrics_parse_as_prometheus_text(node):
    client = client_for(node)
    with trio.fail_after(TIMEOUT):
        await in_thread(client.set, "k", "v")
        reply = await get(node, "/metrics")
    assert reply.headers["content-type"] == METRICS
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    assert families
    samples = [s for f in families.values() for s in f.samples]
    assert all(isinstance(s.value, (int, float)) for s in samples)
    writes = [s for s in samples if s.name == "trinomite_client_write_requests_total"]
    assert writes
    assert writes[0].value >= 1


async def test_states_gate_clients(node):
    client = client_for(node)
    with trio.fail_after(TIMEOUT):
        await in_thread(client.set, "k", "v0")
        await ok(node, "/state/standby")
        assert (await get(node, "/state/get_state")).text == "State: STANDBY\n"
        assert REFUSED in await refused(client.get, "k")
        assert REFUSED in await refused(client.set, "k", "v1")
        await ok(node, "/state/writes_only")
        assert REFUSED in await refused(client.get, "k")
        writer = client_for(node)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_thread, writer.set, "k", "v2")  # held, not sent
            await wait_until(lambda: node.gate.held == 1)
            await ok(node, "/state/resuming")  # flushes the held write
        assert REFUSED in await refused(client.get, "k")
        await ok(node, "/state/normal")
        assert (await get(node, "/state/get_state")).text == "State: NORMAL\n"
        assert await in_thread(client.get, "k") == b"v2"


async def test_timeout_factor(node):
    with trio.fail_after(TIMEOUT):
        await ok(node, "/set_timeout_factor/3")
        assert (await get(node, "/get_timeout_factor")).text == "Timeout factor: 3\n"
        assert node.dispatcher.timeout == pytest.approx(node.config.timeout / 1000 * 3)
        await ok(node, "/set_timeout_factor/50")
        assert (await get(node, "/get_timeout_factor")).text == "Timeout factor: 10\n"
        assert (await get(node, "/set_timeout_factor/x")).status == 400


async def test_log_level_paths_on_a_node(node):
    logger = logging.getLogger("trinomite")
    saved = logger.level
    try:
        with trio.fail_after(TIMEOUT):
            await ok(node, "/setloglevel/3")
            assert logger.getEffectiveLevel() == python_level(3)
            await ok(node, "/loglevelup")
            assert logger.getEffectiveLevel() == python_level(4)
            await ok(node, "/logleveldown")
            await ok(node, "/logleveldown")
            assert logger.getEffectiveLevel() == python_level(2)
            assert (await get(node, "/setloglevel/12")).status == 400
    finally:
        logger.setLevel(saved)


async def test_historeset_on_a_node(node):
    client = client_for(node)
    with trio.fail_after(TIMEOUT):
        await in_thread(client.set, "k", "v")
        assert json.loads((await get(node, "/info")).body)["latency_max"] > 0
        await ok(node, "/historeset")
        assert json.loads((await get(node, "/info")).body)["latency_max"] == 0


async def test_read_repairs_on_a_node(node):
    with trio.fail_after(TIMEOUT):
        reply = await get(node, "/read_repairs/enable")
        assert reply.text == "Read Repairs: ENABLED\r\n"
        assert node.admin.read_repairs()
        reply = await get(node, "/read_repairs/disable")
        assert reply.text == "Read Repairs: DISABLED\r\n"
        assert not node.admin.read_repairs()


async def test_admin_token_on_a_node():
    config = node_config(DatastoreSpec.embedded(), admin_token="tok")
    with trio.fail_after(TIMEOUT):
        async with open_node(config) as node:
            assert (await get(node, "/state/standby")).status == 401
            assert (await get(node, "/state/get_state")).text == "State: NORMAL\n"
            auth = [("Authorization", "Bearer tok")]
            assert (await get(node, "/state/standby", auth)).text == "OK\r\n"
            assert node.admin.state() is NodeState.STANDBY


# -- a cluster -----------------------------------------------------------------------


def peer_up(text: str, peer: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trinomite_peer_link_up" and sample.labels["peer"] == peer:
                return sample.value
    raise AssertionError(f"no trinomite_peer_link_up for {peer}")


def two_racks(cluster: Cluster) -> tuple[ClusterNode, Node, ClusterNode]:
    """The r1 member, its running node, and the r2 member of a TWO_RACKS cluster."""
    first, second = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
    assert first.node is not None
    return first, first.node, second


async def test_consistency_applies_to_new_connections_only():
    with trio.fail_after(4 * TIMEOUT):
        async with open_cluster(TWO_RACKS) as cluster:
            first, node, second = two_racks(cluster)
            # single_connection_client connects at once: off the Trio loop.
            old = await in_thread(first.client, single_connection_client=True)
            await in_thread(old.set, "k", "v")
            await cluster.stop_node(second)
            await ok(node, "/set_consistency/read/DC_QUORUM")
            await ok(node, "/set_consistency/write/dc_safe_quorum")
            got = (await get(node, "/get_consistency")).text
            assert got == "Read Consistency: DC_QUORUM\r\nWrite Consistency: DC_SAFE_QUORUM\r\n"
            assert await in_thread(old.get, "k") == b"v"  # still DC_ONE: the local replica
            new = await in_thread(first.client, single_connection_client=True)
            message = await refused(new.get, "k")  # DC_QUORUM: needs the stopped rack too
            assert REFUSED not in message
            bad = await get(node, "/set_consistency/read/dc_two")
            assert bad.status == 400
            assert "dc_two" in bad.text
            await ok(node, "/set_consistency/read/dc_one")
            newest = await in_thread(first.client, single_connection_client=True)
            assert await in_thread(newest.get, "k") == b"v"


async def test_peer_paths_on_a_cluster():
    with trio.fail_after(4 * TIMEOUT):
        async with open_cluster(TWO_RACKS) as cluster:
            _, node, second = two_racks(cluster)
            peer = f"127.0.0.1:{second.peer_port}"
            assert peer_up((await get(node, "/metrics")).text, peer) == 1
            await ok(node, f"/peer/down/{peer}")
            assert peer_up((await get(node, "/metrics")).text, peer) == 0
            await ok(node, f"/peer/up/{peer}")
            assert peer_up((await get(node, "/metrics")).text, peer) == 1
            await ok(node, "/peer/down/127.0.0.1")  # by host
            assert peer_up((await get(node, "/metrics")).text, peer) == 0
            await ok(node, "/peer/reset/all")  # reset also clears the operator's "down"
            for _ in range(1000):  # the links reconnect
                if peer_up((await get(node, "/metrics")).text, peer) == 1:
                    break
                await trio.sleep(0.01)
            assert peer_up((await get(node, "/metrics")).text, peer) == 1
            missing = await get(node, "/peer/down/10.1.2.3:8101")
            assert missing.status == 404
            assert "10.1.2.3:8101" in missing.text
