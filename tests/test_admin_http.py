"""The admin HTTP server: the path table over a fake AdminApi, then every path on real nodes.

Theory of operation
-------------------
Unit tests drive ``AdminServer.handle`` over ``trio.testing.memory_stream_pair``
with a small hand-written ``FakeAdmin`` (no sockets, no node): routing, bodies,
status codes, authorisation, malformed and slow clients.  Slow-client tests run
under ``autojump_clock`` (in-memory streams only: the mock clock would jump
past real socket waits).  ``HttpClient`` is an h11 *client* state machine on
the other end, so every reply is also checked to be well-formed HTTP/1.1.

Integration tests start real nodes (``open_node`` with ``stats_listen`` on
port 0, and ``open_cluster``) and speak HTTP over loopback TCP, checking
bodies *and* effects through redis-py.  Every test is bounded by ``fail_after``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import attrs
import h11
import pytest
import redis
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import client_for, in_thread, node_config
from trinomite import DatastoreSpec, Node, open_node
from trinomite.admin.api import NodeState, PeerAction
from trinomite.admin.http import METRICS, ROUTES, Policy, dispatch, match, request_path
from trinomite.admin.server import MAX_HEAD, AdminServer, is_loopback, serve_admin
from trinomite.config.model import Consistency
from trinomite.logs import python_level
from trinomite.testing.cluster import Cluster, ClusterNode, open_cluster

TIMEOUT = 10
LOOPBACK = Policy(token=None, loopback=True)


class FakeAdmin:
    """An in-memory AdminApi: records every write, publishes events on demand."""

    def __init__(self, peers: Sequence[str] = ("127.0.0.1:8101", "127.0.0.2:8101")) -> None:
        self.read = self.write = Consistency.DC_ONE
        self.node_state = NodeState.NORMAL
        self.factor = 1
        self.repairs = False
        self.level = 5
        self.histo_resets = 0
        self.peers = {name: "NORMAL" for name in peers}
        self.snapshots = 0
        self.fail_info = False
        self._subscribers: list[trio.MemorySendChannel[dict[str, Any]]] = []

    # reads
    def info(self) -> dict[str, Any]:
        if self.fail_info:
            raise RuntimeError("boom")
        return {"service": "dynomite", "dc": "dc1", "rack": "r1", "read": self.read}

    def metrics_text(self) -> str:
        return "# HELP up Up.\n# TYPE up gauge\nup 1\n"

    def snapshot(self) -> dict[str, Any]:
        self.snapshots += 1
        return {"n": self.snapshots, "state": self.node_state.name, "type": "ignored"}

    def cluster_describe(self) -> dict[str, Any]:
        return {"dcs": [{"name": "dc1", "racks": [{"name": "r1", "servers": []}]}]}

    def consistency(self) -> tuple[Consistency, Consistency]:
        return self.read, self.write

    def state(self) -> NodeState:
        return self.node_state

    def timeout_factor(self) -> int:
        return self.factor

    def read_repairs(self) -> bool:
        return self.repairs

    def log_level(self) -> int:
        return self.level

    # writes
    def set_consistency(self, which: str, level: Consistency) -> None:
        setattr(self, which, level)

    def set_state(self, state: NodeState) -> None:
        self.node_state = state

    def set_log_level(self, level: int) -> None:
        if not 0 <= level <= 11:
            raise ValueError("log level out of range")
        self.level = level

    def reset_histograms(self) -> None:
        self.histo_resets += 1

    def set_timeout_factor(self, factor: int) -> None:
        self.factor = max(1, min(10, factor))

    def peer_control(self, action: PeerAction, name: str) -> int:
        names = [n for n in self.peers if name in ("all", n, n.split(":")[0])]
        for n in names:
            self.peers[n] = action.name
        return len(names)

    def set_read_repairs(self, enabled: bool) -> None:
        self.repairs = enabled

    # events
    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](16)
        self._subscribers.append(send)
        return receive

    @property
    def subscribers(self) -> int:
        """Subscribers whose receive side is still open."""
        return sum(s.statistics().open_receive_channels for s in self._subscribers)

    def publish(self, event: dict[str, Any]) -> None:
        for send in self._subscribers:
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                send.send_nowait(event)

    def close_events(self) -> None:
        for send in self._subscribers:
            send.close()


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    raw_head: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode()


async def exchange(
    stream: trio.abc.Stream,
    method: str = "GET",
    target: str = "/ping",
    headers: Sequence[tuple[str, str]] = (),
    raw: bytes | None = None,
) -> Reply:
    """Send one request (or ``raw`` bytes) and parse the reply with an h11 client."""
    conn = h11.Connection(h11.CLIENT)
    request = h11.Request(method=method, target=target, headers=[("Host", "t"), *headers])
    data = conn.send(request) + conn.send(h11.EndOfMessage())
    await stream.send_all(data if raw is None else raw)
    received = bytearray()
    status, reply_headers, body = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            chunk = await stream.receive_some(65536)
            received += chunk
            conn.receive_data(chunk)
        elif isinstance(event, h11.Response):
            status = event.status_code
            reply_headers = {k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            raise AssertionError(f"unexpected {event!r}")
    await stream.aclose()
    return Reply(status, reply_headers, bytes(body), bytes(received).split(b"\r\n\r\n")[0])


async def request(
    target: str,
    method: str = "GET",
    api: FakeAdmin | None = None,
    policy: Policy = LOOPBACK,
    headers: Sequence[tuple[str, str]] = (),
    raw: bytes | None = None,
) -> Reply:
    """One request to an in-memory AdminServer."""
    server = AdminServer(api or FakeAdmin(), policy, feed_interval=1.0)
    client, end = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, end)
            return await exchange(client, method, target, headers, raw)
    raise AssertionError("unreachable")


# -- the path table --------------------------------------------------------------

READS = [
    ("/ping", "OK\r\n"),
    ("/get_consistency", "Read Consistency: DC_ONE\r\nWrite Consistency: DC_ONE\r\n"),
    ("/state/get_state", "State: NORMAL\n"),
    ("/get_timeout_factor", "Timeout factor: 1\n"),
    ("/metrics", "# HELP up Up.\n# TYPE up gauge\nup 1\n"),
]


@pytest.mark.parametrize(("path", "body"), READS)
async def test_read_paths_have_dynomites_bodies(path, body):
    reply = await request(path)
    assert (reply.status, reply.text) == (200, body)
    assert reply.headers["content-length"] == str(len(body))
    assert reply.headers["connection"] == "close"


async def test_replies_are_well_formed_http():
    reply = await request("/ping")
    assert reply.raw_head.startswith(b"HTTP/1.1 200 OK\r\n")
    lines = reply.raw_head.split(b"\r\n")
    assert all(b"\n" not in line and b": " in line for line in lines[1:])


async def test_json_paths():
    info = await request("/info")
    assert info.headers["content-type"] == "application/json; charset=utf-8"
    assert json.loads(info.body) == {
        "service": "dynomite",
        "dc": "dc1",
        "rack": "r1",
        "read": "DC_ONE",
    }
    assert json.loads((await request("/")).body)["service"] == "dynomite"
    described = json.loads((await request("/cluster_describe")).body)
    assert described["dcs"][0]["racks"][0]["name"] == "r1"


async def test_metrics_content_type():
    assert (await request("/metrics")).headers["content-type"] == METRICS


async def test_help_lists_every_path():
    text = (await request("/help")).text
    for route in ROUTES:
        assert route.template in text


@pytest.mark.parametrize("level", list(Consistency))
@pytest.mark.parametrize("which", ["read", "write"])
async def test_set_consistency_every_level_case_insensitive(which, level):
    api = FakeAdmin()
    name = level.value.lower().replace("dc_", "Dc_")
    reply = await request(f"/set_consistency/{which}/{name}", api=api)
    assert (reply.status, reply.text) == (200, "OK\r\n")
    assert getattr(api, which) is level
    got = (await request("/get_consistency", api=api)).text
    assert f"{which.capitalize()} Consistency: {level.value}\r\n" in got


async def test_set_consistency_invalid_level_is_400_and_changes_nothing():
    api = FakeAdmin()
    reply = await request("/set_consistency/read/dc_all", api=api)
    assert reply.status == 400
    assert "dc_all" in reply.text
    assert "dc_each_safe_quorum" in reply.text
    assert api.read is Consistency.DC_ONE


@pytest.mark.parametrize(
    "state", [NodeState.STANDBY, NodeState.WRITES_ONLY, NodeState.RESUMING, NodeState.NORMAL]
)
async def test_set_state(state):
    api = FakeAdmin()
    api.node_state = NodeState.JOINING
    assert (await request(f"/state/{state.name.lower()}", api=api)).text == "OK\r\n"
    assert api.node_state is state
    assert (await request("/state/get_state", api=api)).text == f"State: {state.name}\n"


async def test_log_level_paths():
    api = FakeAdmin()
    assert (await request("/setloglevel/11", api=api)).text == "OK\r\n"
    assert api.level == 11
    assert (await request("/loglevelup", api=api)).status == 200
    assert api.level == 11  # clamped, as Dynomite
    await request("/logleveldown", api=api)
    assert api.level == 10
    for bad in ("12", "-1", "x", "1_0"):
        reply = await request(f"/setloglevel/{bad}", api=api)
        assert reply.status == 400, bad
    assert api.level == 10
    api.level = 0
    await request("/logleveldown", api=api)
    assert api.level == 0


async def test_historeset():
    api = FakeAdmin()
    assert (await request("/historeset", api=api)).text == "OK\r\n"
    assert api.histo_resets == 1


@pytest.mark.parametrize(("given", "factor"), [("3", 3), ("0", 1), ("-4", 1), ("99", 10)])
async def test_set_timeout_factor_clamps(given, factor):
    api = FakeAdmin()
    assert (await request(f"/set_timeout_factor/{given}", api=api)).text == "OK\r\n"
    assert api.factor == factor
    assert (await request("/get_timeout_factor", api=api)).text == f"Timeout factor: {factor}\n"


async def test_set_timeout_factor_not_a_number():
    api = FakeAdmin()
    reply = await request("/set_timeout_factor/fast", api=api)
    assert reply.status == 400
    assert "timeout factor" in reply.text
    assert api.factor == 1


@pytest.mark.parametrize("action", list(PeerAction))
async def test_peer_paths(action):
    api = FakeAdmin()
    reply = await request(f"/peer/{action.value}/127.0.0.1%3A8101", api=api)
    assert reply.text == "OK\r\n"
    assert api.peers == {"127.0.0.1:8101": action.name, "127.0.0.2:8101": "NORMAL"}
    assert (await request(f"/peer/{action.value}/all", api=api)).status == 200
    assert set(api.peers.values()) == {action.name}


async def test_unknown_peer_is_404_but_all_is_always_ok():
    reply = await request("/peer/down/10.9.9.9")
    assert reply.status == 404
    assert "10.9.9.9" in reply.text
    assert (await request("/peer/reset/all", api=FakeAdmin(peers=()))).text == "OK\r\n"


async def test_read_repairs():
    api = FakeAdmin()
    assert (await request("/read_repairs/enable", api=api)).text == "Read Repairs: ENABLED\r\n"
    assert api.repairs
    assert (await request("/read_repairs/disable", api=api)).text == "Read Repairs: DISABLED\r\n"
    assert not api.repairs


async def test_unknown_path_is_404():
    reply = await request("/nope")
    assert reply.status == 404
    assert "/help" in reply.text
    assert (await request("/state/bogus")).status == 404
    assert (await request("/peer/up")).status == 404


async def test_query_string_is_ignored_and_absolute_form_accepted():
    assert (await request("/ping?x=1")).text == "OK\r\n"
    assert (await request("http://127.0.0.1:22222/ping")).text == "OK\r\n"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_other_methods_are_405(method):
    reply = await request("/ping", method=method)
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"


async def test_head_on_a_read_path_has_headers_only():
    reply = await request("/ping", method="HEAD")
    assert (reply.status, reply.body, reply.headers["content-length"]) == (200, b"", "4")


async def test_head_on_a_write_path_is_405_and_changes_nothing():
    api = FakeAdmin()
    reply = await request("/state/standby", method="HEAD", api=api)
    assert reply.status == 405
    assert reply.headers["allow"] == "GET"
    assert api.node_state is NodeState.NORMAL


async def test_handler_failure_is_500_and_logged(caplog):
    api = FakeAdmin()
    api.fail_info = True
    reply = await request("/info", api=api)
    assert reply.status == 500
    assert "admin path /info failed" in caplog.text


# -- authorisation ----------------------------------------------------------------

TOKEN = Policy(token="s3cret", loopback=False)


async def test_token_required_for_writes():
    api = FakeAdmin()
    missing = await request("/state/standby", api=api, policy=TOKEN)
    assert missing.status == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = await request(
        "/state/standby", api=api, policy=TOKEN, headers=[("Authorization", "Bearer nope")]
    )
    assert wrong.status == 401
    basic = await request(
        "/state/standby", api=api, policy=TOKEN, headers=[("Authorization", "Basic s3cret")]
    )
    assert basic.status == 401
    assert api.node_state is NodeState.NORMAL
    good = await request(
        "/state/standby", api=api, policy=TOKEN, headers=[("Authorization", "bearer s3cret")]
    )
    assert good.text == "OK\r\n"
    assert api.node_state is NodeState.STANDBY


async def test_reads_need_no_token():
    assert (await request("/state/get_state", policy=TOKEN)).status == 200
    assert (await request("/info", policy=Policy(token=None, loopback=False))).status == 200


async def test_writes_refused_without_token_off_loopback():
    api = FakeAdmin()
    reply = await request("/state/standby", api=api, policy=Policy(token=None, loopback=False))
    assert reply.status == 403
    assert "admin_token" in reply.text
    assert api.node_state is NodeState.NORMAL


async def test_token_also_required_on_loopback_when_set():
    reply = await request("/historeset", policy=Policy(token="t", loopback=True))
    assert reply.status == 401


def test_is_loopback():
    assert is_loopback("127.0.0.1")
    assert is_loopback("127.5.0.1")
    assert is_loopback("::1")
    assert not is_loopback("0.0.0.0")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("::")
    assert not is_loopback("localhost")


# -- malformed and slow clients ----------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /ping HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
        b"GET /ping HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: t\r\nX: " + b"a" * (MAX_HEAD + 10) + b"\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: t\r\n" + b"X: y\r\n" * (MAX_HEAD // 6) + b"\r\n",
    ],
    ids=["garbage", "no-host", "bad-header", "long-header", "non-ascii", "many-headers"],
)
async def test_malformed_or_oversized_requests_are_400(raw):
    reply = await request("/ping", raw=raw)
    assert reply.status == 400
    assert reply.text.startswith("Bad Request")


async def test_http_1_0_without_host_is_fine():
    reply = await request("/ping", raw=b"GET /ping HTTP/1.0\r\n\r\n")
    assert reply.text == "OK\r\n"


async def test_bad_percent_encoding_is_400():
    assert request_path(b"/peer/up/a%20b") == "/peer/up/a b"
    with pytest.raises(ValueError, match="ASCII"):
        request_path(b"/\xff")
    assert (await request("/peer/up/%ff")).status == 400


async def test_silent_client_is_closed_after_the_request_timeout(autojump_clock):
    """Autojump clock: a client that never finishes its head is dropped, with no reply."""
    server = AdminServer(FakeAdmin(), LOOPBACK, feed_interval=1.0, request_timeout=5.0)
    client, end = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, end)
            await client.send_all(b"GET /ping HTTP/1.1\r\nHost: t\r\n")
            assert await client.receive_some(100) == b""
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_client_that_closes_early_is_not_an_error(caplog):
    server = AdminServer(FakeAdmin(), LOOPBACK, feed_interval=1.0)
    client, end = trio.testing.memory_stream_pair()
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle, end)
            await client.aclose()
    assert "failed" not in caplog.text


def test_match_table():
    route, params = match("/peer/reset/all") or (None, {})
    assert route is not None
    assert route.write
    assert params == {"name": "all"}
    assert match("/peer/reset/") is None
    assert match("/set_consistency/read") is None
    assert dispatch(FakeAdmin(), LOOPBACK, b"GET", b"/ping", []).body == b"OK\r\n"


# -- a real listener ---------------------------------------------------------------


async def http_get(
    address: tuple[str, int], target: str, headers: Sequence[tuple[str, str]] = (), **kw: Any
) -> Reply:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*address)
        return await exchange(stream, target=target, headers=headers, **kw)


async def test_serve_admin_on_a_real_socket(nursery):
    api = FakeAdmin()
    address = await nursery.start(
        lambda task_status: serve_admin(
            api, "127.0.0.1", 0, token=None, feed_interval=1.0, task_status=task_status
        )
    )
    assert address[0] == "127.0.0.1"
    assert address[1] > 0
    oversized = b"GET /ping HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 200_000 + b"\r\n\r\n"
    assert (await http_get(address, "/ping", raw=oversized)).status == 400
    assert (await http_get(address, "/ping", raw=b"\x00\x01garbage\r\n\r\n")).status == 400
    assert (await http_get(address, "/ping")).text == "OK\r\n"  # still serving
    assert (await http_get(address, "/state/standby")).text == "OK\r\n"  # loopback: allowed
    assert api.node_state is NodeState.STANDBY


async def test_serve_admin_with_token(nursery):
    api = FakeAdmin()
    address = await nursery.start(
        lambda task_status: serve_admin(
            api, "127.0.0.1", 0, token="tok", feed_interval=1.0, task_status=task_status
        )
    )
    assert (await http_get(address, "/historeset")).status == 401
    auth = [("Authorization", "Bearer tok")]
    assert (await http_get(address, "/historeset", headers=auth)).status == 200
    assert api.histo_resets == 1


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
