"""The metric table, histograms, -D, and node states enforced on a real node."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import client_for, in_thread, node_config
from trinomite import DatastoreSpec, open_node
from trinomite.admin.api import NodeState
from trinomite.stats.histogram import Histogram, bucket, upper_bound
from trinomite.stats.metrics import METRICS

# dynomite.md §7.3, verbatim.
DYNOMITE_TOP = """service source version uptime timestamp rack dc latency_max latency_999th
latency_99th latency_95th latency_mean payload_size_max payload_size_999th payload_size_99th
payload_size_95th payload_size_mean average_cross_region_rtt 99_cross_region_rtt
average_cross_zone_latency 99_cross_zone_latency average_server_latency 99_server_latency
average_cross_region_queue_wait 99_cross_region_queue_wait average_cross_zone_queue_wait
99_cross_zone_queue_wait average_server_queue_wait 99_server_queue_wait client_out_queue_99
server_in_queue_99 server_out_queue_99 dnode_client_out_queue_99 peer_in_queue_99
peer_out_queue_99 remote_peer_out_queue_99 remote_peer_in_queue_99 alloc_msgs free_msgs
alloc_mbufs free_mbufs dyn_memory""".split()
DYNOMITE_POOL = """client_eof client_err client_connections client_read_requests
client_write_requests client_dropped_requests client_non_quorum_w_responses
client_non_quorum_r_responses server_ejects dnode_client_eof dnode_client_err
dnode_client_connections dnode_client_in_queue dnode_client_in_queue_bytes
dnode_client_out_queue dnode_client_out_queue_bytes peer_dropped_requests
peer_timedout_requests remote_peer_dropped_requests remote_peer_timedout_requests
remote_peer_failover_requests peer_eof peer_err peer_timedout remote_peer_timedout
peer_connections peer_forward_error peer_requests peer_request_bytes peer_responses
peer_response_bytes peer_ejected_at peer_ejects peer_in_queue remote_peer_in_queue
peer_in_queue_bytes remote_peer_in_queue_bytes peer_out_queue remote_peer_out_queue
peer_out_queue_bytes remote_peer_out_queue_bytes peer_mismatch_requests forward_error
fragments stats_count""".split()
DYNOMITE_SERVER = """server_eof server_err server_timedout server_ejected_at
server_dropped_requests server_timedout_requests read_requests read_request_bytes
write_requests write_request_bytes read_responses read_response_bytes write_responses
write_response_bytes in_queue in_queue_bytes out_queue out_queue_bytes redis_req_get
redis_req_set redis_req_del redis_req_incr_decr redis_req_keys redis_req_mget redis_req_scan
redis_req_sort redis_req_lreqm redis_req_sunion redis_req_ping redis_req_lists redis_req_sets
redis_req_hashes redis_req_sortedsets redis_req_other""".split()


def test_table_is_a_superset_of_dynomite():
    assert len(DYNOMITE_POOL) == 45
    assert len(DYNOMITE_SERVER) == 34
    scopes = ("pool", "server")
    by_scope = {scope: {m.name for m in METRICS if m.scope == scope} for scope in scopes}
    assert set(DYNOMITE_POOL) <= by_scope["pool"]
    assert set(DYNOMITE_SERVER) <= by_scope["server"]
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))


@given(st.integers(min_value=0, max_value=2**40))
def test_buckets_bound_their_values(value):
    index = bucket(value)
    assert upper_bound(index) >= value
    assert index == 0 or upper_bound(index - 1) < value
    assert upper_bound(index) <= max(value * 1.26, 3)


def test_histogram_percentiles_never_under_report():
    histogram = Histogram()
    for value in range(1, 10001):
        histogram.observe(value)
    assert histogram.total == 10000
    assert histogram.max == 10000
    assert histogram.mean == pytest.approx(5000.5)
    assert 9900 <= histogram.percentile(0.99) <= 10000
    assert 5000 <= histogram.percentile(0.5) <= 6300
    histogram.reset()
    assert histogram.percentile(0.99) == 0


def test_describe_stats_cli():
    done = subprocess.run(
        [sys.executable, "-m", "trinomite", "-D"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    for name in ("client_eof", "redis_req_get", "latency_99th", "peer_mismatch_requests"):
        assert name in done.stdout


async def test_info_metrics_and_snapshot_of_a_busy_node(redis_backend):
    spec = DatastoreSpec.tcp(redis_backend.host, redis_backend.port)
    async with open_node(node_config(spec)) as node:
        client = client_for(node, protocol=2)
        for i in range(50):
            await in_thread(client.set, f"k{i}", i)
            await in_thread(client.get, f"k{i}")
        with pytest.raises(redis.ResponseError):
            await in_thread(client.execute_command, "NOPE")
        info = node.admin.info()
        assert set(DYNOMITE_TOP) <= set(info)
        pool = info[node.config.pool_name]
        assert set(DYNOMITE_POOL) <= set(pool)
        server = pool[node.config.datastore.stats_name]
        assert set(DYNOMITE_SERVER) <= set(server)
        assert server["redis_req_get"] == 50
        assert server["redis_req_set"] == 50
        assert pool["client_write_requests"] >= 50
        assert info["latency_max"] > 0
        families = {f.name: f for f in text_string_to_metric_families(node.admin.metrics_text())}
        assert "trinomite_client_read_requests" in families
        commands = {
            s.labels["command"]
            for s in families["trinomite_command_latency_seconds"].samples
            if "command" in s.labels
        }
        assert {"get", "set"} <= commands
        snapshot = node.admin.snapshot()
        assert snapshot["state"] == "NORMAL"
        assert snapshot["requests"] >= 100
        assert snapshot["errors"] >= 1
        assert snapshot["latency_us"]["p99"] > 0


async def test_node_states_for_client_requests(redis_backend):
    spec = DatastoreSpec.tcp(redis_backend.host, redis_backend.port)
    async with open_node(node_config(spec)) as node:
        client = client_for(node, protocol=2)
        events = node.admin.subscribe()
        await in_thread(client.set, "a", "1")
        refused = "Dynomite's current state does not allow this request"

        node.admin.set_state(NodeState.STANDBY)
        for call in (lambda: client.get("a"), lambda: client.set("a", "2")):
            with pytest.raises(redis.ResponseError, match=refused):
                await in_thread(call)
        assert await in_thread(client.ping)  # the node itself still answers

        node.admin.set_state(NodeState.WRITES_ONLY)
        with pytest.raises(redis.ResponseError, match=refused):
            await in_thread(client.get, "a")
        async with trio.open_nursery() as nursery:
            held: list[object] = []

            async def write() -> None:
                held.append(await in_thread(client_for(node, protocol=2).set, "a", "held"))

            nursery.start_soon(write)
            with trio.fail_after(10):
                # Bounded wait for a write sent from a client thread to reach the gate.
                while node.gate.held == 0:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert held == []  # queued, not applied
            direct = redis.Redis(host=redis_backend.host, port=redis_backend.port)
            assert await in_thread(direct.get, "a") == b"1"
            node.admin.set_state(NodeState.RESUMING)  # flushes held writes
        assert held == [True]
        assert await in_thread(direct.get, "a") == b"held"
        with pytest.raises(redis.ResponseError, match=refused):
            await in_thread(client.get, "a")  # RESUMING still refuses reads

        node.admin.set_state(NodeState.NORMAL)
        assert await in_thread(client.get, "a") == b"held"
        changes = []
        while True:
            try:
                changes.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        states = [(e["from"], e["to"]) for e in changes if e["event"] == "state_changed"]
        assert states == [
            ("NORMAL", "STANDBY"),
            ("STANDBY", "WRITES_ONLY"),
            ("WRITES_ONLY", "RESUMING"),
            ("RESUMING", "NORMAL"),
        ]
        with pytest.raises(ValueError, match="state must be one of"):
            node.admin.set_state(NodeState.JOINING)
