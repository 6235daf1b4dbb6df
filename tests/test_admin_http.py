"""The admin HTTP server over a fake AdminApi: routing, bodies, status codes, clients.

Theory of operation
-------------------
Unit tests drive ``AdminServer.handle`` over ``trio.testing.memory_stream_pair``
with a small hand-written ``FakeAdmin`` (no sockets, no node): routing, bodies,
status codes, authorisation, malformed and slow clients.  Slow-client tests run
under ``autojump_clock`` (in-memory streams only: the mock clock would jump
past real socket waits).  ``HttpClient`` is an h11 *client* state machine on
the other end, so every reply is also checked to be well-formed HTTP/1.1.
The same paths on real nodes are in ``test_admin_node.py``.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from tests.adminfake import (
    LOOPBACK,
    TIMEOUT,
    FakeAdmin,
    http_get,
    request,
)
from trinomite.admin.api import NodeState, PeerAction
from trinomite.admin.http import METRICS, ROUTES, Policy, dispatch, match, request_path
from trinomite.admin.server import MAX_HEAD, AdminServer, is_loopback, serve_admin
from trinomite.config.model import Consistency

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
    assert reply.status in (400, 431)
    assert reply.text.startswith(("Bad Request: ", "Request Header Fields Too Large: "))
    # The reason is described, never echoed back (no repr of the client's bytes).
    assert "bytearray" not in reply.text
    assert "b'" not in reply.text


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
    assert (await http_get(address, "/ping", raw=oversized)).status == 431
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


async def test_a_flood_of_idle_connections_is_bounded_and_passes(nursery):
    """Idle admin connections past the cap: the next one gets 503; the server recovers."""
    api = FakeAdmin()
    address = await nursery.start(
        lambda task_status: serve_admin(
            api,
            "127.0.0.1",
            0,
            token=None,
            feed_interval=1.0,
            request_timeout=3.0,
            task_status=task_status,
        )
    )
    # More than the cap, opened well within the request timeout.
    idle = [await trio.open_tcp_stream(*address) for _ in range(400)]
    busy = await http_get(address, "/ping")
    assert busy.status == 503
    assert busy.text == "Service Unavailable: too many admin connections, retry\r\n"
    with trio.fail_after(10):
        for stream in idle:  # each idle one is closed once its request time is up
            while await stream.receive_some(4096):
                pass
    assert (await http_get(address, "/ping")).text == "OK\r\n"
    for stream in idle:
        await stream.aclose()
