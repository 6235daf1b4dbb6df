"""``trinomite status``: the sans-IO ``ClusterView``, the Trio shell and the command.

``ClusterView`` is tested synchronously with a hand-driven clock.  The shell
(``follow``, ``draw``, ``watch``) and the command run against small fake feed
servers (``serve_websocket`` on 127.0.0.1, port 0) that speak the feed's
message format, and finally against a real in-process 3-node cluster.
Every async test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

from trinomite import HostPort, cli
from trinomite.status import ClusterView, Options, draw, follow, main, watch
from trinomite.testing import free_port
from trinomite.testing.cluster import open_cluster


@pytest.fixture(autouse=True)
def _pipe_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables written to a pipe get PIPE_WIDTH, whatever COLUMNS a test runner exports."""
    monkeypatch.delenv("COLUMNS", raising=False)


ROOT = Path(__file__).resolve().parent.parent
NODE = "127.0.0.1:8101"


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_795_400_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def snapshot(**fields: Any) -> dict[str, Any]:
    """A full snapshot as the feed sends it; ``fields`` override or add."""
    message: dict[str, Any] = {
        "type": "snapshot",
        "ts": 1_795_400_000.1,
        "node": "127.0.0.1:8101",
        "client_address": "127.0.0.1:8102",
        "dc": "dc1",
        "rack": "rack1",
        "state": "NORMAL",
        "uptime": 12.3,
        "requests": 12345,
        "errors": 3,
        "req_per_sec": 1523.4,
        "latency_us": {"p50": 210, "p95": 480, "p99": 900, "p999": 2100, "max": 5400},
        "peers": {"up": 3, "total": 3},
        "hints": {
            "pending": 12,
            "peers": {"10.0.0.2:8101": {"pending": 12, "replayed": 40, "dropped": 0}},
        },
        "client_connections": 5,
        "consistency": {"read": "DC_ONE", "write": "DC_ONE"},
        "gossip": {"NORMAL": 4},
    }
    message.update(fields)
    return message


def row(table: str, node: str) -> list[str]:
    """The whitespace-separated cells of ``node``'s row."""
    lines = [line for line in table.splitlines() if line.startswith(node + " ")]
    assert len(lines) == 1, table
    return lines[0].split()


def live_view(*nodes: str, clock: Clock | None = None) -> ClusterView:
    view = ClusterView(nodes or [NODE], clock=clock or Clock())
    for node in nodes or [NODE]:
        view.connected(node)
    return view


# ---- ClusterView -----------------------------------------------------------


def test_full_snapshot_renders_every_column() -> None:
    view = live_view()
    view.feed(NODE, snapshot())
    table = view.render(120)
    header = table.splitlines()[1].split()
    assert header == [
        "NODE", "DC/RACK", "STATE", "REQ/S", "P99", "MS", "ERRORS", "PEERS", "HINTS", "GOSSIP",
        "FEED"
    ]  # fmt: skip
    assert row(table, NODE) == [
        NODE, "dc1/rack1", "NORMAL", "1523.4", "0.90", "3", "3/3", "12", "4N", "ok"
    ]  # fmt: skip
    assert "1 node, 1 ok" in table.splitlines()[0]
    assert view.missing() == []


def test_latency_precision_follows_magnitude() -> None:
    view = live_view("a:1", "b:2", "c:3")
    for node, p99 in [("a:1", 15_250), ("b:2", 250_400), ("c:3", 999)]:
        view.feed(node, snapshot(latency_us={"p99": p99}))
    table = view.render(120)
    assert [row(table, node)[4] for node in ("a:1", "b:2", "c:3")] == ["15.2", "250", "1.00"]


def test_missing_and_mistyped_fields_render_as_dashes() -> None:
    view = live_view("a:1", "b:2")
    view.feed("a:1", {"type": "snapshot"})
    view.feed(
        "b:2",
        {
            "type": "snapshot",
            "ts": "soon",
            "dc": "dc2",
            "state": None,
            "req_per_sec": True,
            "errors": float("nan"),
            "latency_us": "fast",
            "peers": [1, 2],
        },
    )
    table = view.render(120)
    assert row(table, "a:1") == ["a:1", "-", "-", "-", "-", "-", "-", "-", "-", "ok"]
    assert row(table, "b:2") == ["b:2", "dc2/-", "-", "-", "-", "-", "-", "-", "-", "ok"]


def test_numeric_state_and_partial_peers() -> None:
    view = live_view()
    view.feed(NODE, snapshot(state=4, peers={"up": 1}))
    cells = row(view.render(120), NODE)
    assert cells[2] == "4"
    assert cells[6] == "-"


def test_unknown_messages_are_ignored() -> None:
    view = live_view()
    view.feed(NODE, {"type": "hello", "state": "NORMAL"})
    view.feed(NODE, {"no": "type"})
    assert view.missing() == [NODE]
    assert "events:" not in view.render(120)


def test_events_are_logged_newest_last_and_bounded() -> None:
    clock = Clock()
    view = ClusterView([NODE], clock=clock, max_events=3)
    view.connected(NODE)
    view.feed(NODE, {"type": "event", "event": "state_changed", "ts": clock.now,
                     "from": "NORMAL", "to": "STANDBY"})  # fmt: skip
    for n in range(3):
        view.feed(NODE, {"type": "event", "event": "peer_down", "peer": f"127.0.0.1:{n}"})
    view.feed(NODE, {"type": "event", "detail": {"a": 1}})
    events = view.render(120).split("events:\n")[1].splitlines()
    assert len(events) == 3
    assert events[0].endswith(f"{NODE}  peer_down peer=127.0.0.1:1")
    assert events[1].endswith("peer_down peer=127.0.0.1:2")
    assert events[2].endswith('event detail={"a":1}')


def test_state_change_event_shows_from_and_to() -> None:
    view = live_view()
    view.feed(NODE, {"type": "event", "event": "state_changed", "ts": 1_795_400_000.0,
                     "from": "NORMAL", "to": "STANDBY"})  # fmt: skip
    assert "state_changed from=NORMAL to=STANDBY" in view.render(120)


def test_node_goes_stale_after_three_measured_intervals() -> None:
    clock = Clock()
    view = live_view(clock=clock)
    view.feed(NODE, snapshot(ts=100.0))
    clock.now += 0.5
    view.feed(NODE, snapshot(ts=100.5))
    assert view.interval(NODE) == 0.5
    clock.now += 1.4
    assert row(view.render(120), NODE)[-1] == "ok"
    clock.now += 0.6
    assert row(view.render(120), NODE)[-2:] == ["stale", "2s"]
    assert "1 node, 0 ok" in view.render(120)


def test_default_interval_until_measured() -> None:
    clock = Clock()
    view = live_view(clock=clock)
    view.feed(NODE, snapshot())
    clock.now += 3.0
    assert row(view.render(120), NODE)[-1] == "ok"
    clock.now += 2.0
    assert row(view.render(120), NODE)[-2:] == ["stale", "5s"]


def test_connected_node_without_snapshot_waits_then_goes_stale() -> None:
    clock = Clock()
    view = ClusterView(["a:1", "b:2"], clock=clock)
    assert row(view.render(120), "a:1")[-1] == "connecting"
    view.connected("a:1")
    assert row(view.render(120), "a:1")[-1] == "waiting"
    clock.now += 4
    assert row(view.render(120), "a:1")[-2:] == ["stale", "4s"]
    assert view.missing() == ["a:1", "b:2"]


def test_unreachable_node_keeps_last_values_and_logs_the_loss_once() -> None:
    view = live_view()
    view.feed(NODE, snapshot())
    view.disconnected(NODE, "connection refused")
    view.disconnected(NODE, "connection refused")
    table = view.render(120)
    assert row(table, NODE)[:3] == [NODE, "dc1/rack1", "NORMAL"]
    assert row(table, NODE)[-3:] == ["unreachable:", "connection", "refused"]
    assert table.count("feed lost: connection refused") == 1
    view.connected(NODE)
    view.feed(NODE, snapshot())
    assert row(view.render(120), NODE)[-1] == "ok"


def test_never_reached_node_is_unreachable_and_logged_once() -> None:
    view = ClusterView(["a:1"], clock=Clock())
    view.disconnected("a:1", "connection refused")
    view.disconnected("a:1", "connection refused")
    table = view.render(120)
    assert row(table, "a:1")[-1] == "refused"
    assert table.count("a:1  cannot open feed: connection refused") == 1


@pytest.mark.parametrize("width", [10, 20, 30, 40, 50, 60, 70, 80, 100])
def test_every_line_fits_the_width(width: int) -> None:
    view = live_view("127.0.0.1:8101", "127.0.0.1:8102")
    view.feed("127.0.0.1:8101", snapshot())
    view.disconnected("127.0.0.1:8102", "a rather long reason " * 5)
    view.note("127.0.0.1:8102", "a very long note " * 10)
    for line in view.render(width).splitlines():
        assert len(line) <= max(width, 20)


def test_narrow_widths_drop_the_least_useful_columns_first() -> None:
    view = live_view()
    view.feed(NODE, snapshot())
    headers = {w: view.render(w).splitlines()[1].split() for w in (80, 65, 50, 32)}
    assert headers[80] == ["NODE", "DC/RACK", "STATE", "REQ/S", "P99", "MS", "ERRORS", "PEERS",
                           "HINTS", "FEED"]  # fmt: skip
    assert "HINTS" not in headers[65]
    assert "ERRORS" not in headers[65]
    assert "DC/RACK" not in headers[50]
    assert headers[32] == ["NODE", "STATE", "FEED"]
    assert row(view.render(32), NODE) == [NODE, "NORMAL", "ok"]


def test_long_feed_reason_does_not_push_columns_out() -> None:
    view = live_view()
    view.feed(NODE, snapshot())
    view.disconnected(NODE, "x" * 200)
    table = view.render(100)
    assert "ERRORS" in table
    assert row(table, NODE)[-1].endswith("~")


def test_empty_view_renders() -> None:
    assert "0 nodes" in ClusterView([], clock=Clock()).render(80)


# ---- the command line ------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["localhost"], "'localhost'"),
        (["127.0.0.1:99999"], "'127.0.0.1:99999'"),
        (["127.0.0.1:0"], "port 0"),
        (["127.0.0.1:1", "--refresh", "0"], "positive number of seconds"),
        (["127.0.0.1:1", "--timeout", "soon"], "positive number of seconds"),
        (["127.0.0.1:1", "--bogus"], "unrecognized arguments"),
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("trinomite status: ")
    assert message in err
    assert "usage: trinomite status" in err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: trinomite status")  # no version banner first
    for option in ("--once", "--refresh", "--timeout", "HOST:PORT"):
        assert option in out


def test_trinomite_command_dispatches_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status", "--help"]) == 0
    assert "usage: trinomite status" in capsys.readouterr().out
    assert cli.main(["status", "nohost"]) == 2
    assert "'nohost'" in capsys.readouterr().err


# ---- the Trio shell against fake feed servers ------------------------------


Handler = Callable[[WebSocketRequest], Awaitable[None]]


async def start_feed(nursery: trio.Nursery, handler: Handler) -> HostPort:
    server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
    return HostPort("127.0.0.1", server.port)


def steady_feed(dc: str, rack: str, interval: float = 0.05) -> Handler:
    """A node's feed: a snapshot at once and every ``interval``, one event after the first."""

    async def handler(request: WebSocketRequest) -> None:
        if request.path != "/feed":
            await request.reject(404)
            return
        ws = await request.accept()
        event = {"type": "event", "event": "peer_up", "ts": 1.0, "peer": "127.0.0.1:9"}
        try:
            await ws.send_message(json.dumps(snapshot(dc=dc, rack=rack)))
            await ws.send_message(json.dumps(event))
            while True:
                await trio.sleep(interval)
                await ws.send_message(json.dumps(snapshot(dc=dc, rack=rack)))
        except ConnectionClosed:
            return  # the client went away

    return handler


def closed_port() -> HostPort:
    return HostPort("127.0.0.1", free_port())


class WatchedView(ClusterView):
    """A ClusterView that a test can wait on."""

    def __init__(self, nodes: list[str]) -> None:
        super().__init__(nodes)
        self._changed = trio.Event()

    def feed(self, node: str, message: Any) -> None:
        super().feed(node, message)
        self._changed.set()

    def disconnected(self, node: str, reason: str) -> None:
        super().disconnected(node, reason)
        self._changed.set()

    def note(self, node: str, text: str) -> None:
        super().note(node, text)
        self._changed.set()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed = trio.Event()
            await self._changed.wait()


async def test_watch_once_prints_one_table(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        a = await start_feed(nursery, steady_feed("dc1", "r1"))
        b = await start_feed(nursery, steady_feed("dc2", "r2"))
        out, err = io.StringIO(), io.StringIO()
        assert await watch(Options((a, b), once=True, timeout=5), out, err) == 0
    table = out.getvalue()
    assert row(table, str(a))[1:3] == ["dc1/r1", "NORMAL"]
    assert row(table, str(b))[1:3] == ["dc2/r2", "NORMAL"]
    assert err.getvalue() == ""


async def test_watch_once_names_silent_nodes(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        a = await start_feed(nursery, steady_feed("dc1", "r1"))
        dead = closed_port()
        out, err = io.StringIO(), io.StringIO()
        assert await watch(Options((a, dead), once=True, timeout=2), out, err) == 1
    assert row(out.getvalue(), str(dead))[-3:] == ["unreachable:", "connection", "refused"]
    assert err.getvalue() == f"trinomite status: no snapshot within 2 s from: {dead}\n"


async def test_rejected_and_garbled_feeds_are_survived(nursery: trio.Nursery) -> None:
    async def reject(request: WebSocketRequest) -> None:
        await request.reject(503)

    async def garbled(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("not json")
        await ws.send_message("[1, 2]")
        await trio.sleep_forever()

    with trio.fail_after(10):
        rejecting = await start_feed(nursery, reject)
        garbling = await start_feed(nursery, garbled)
        view = WatchedView([str(rejecting), str(garbling)])
        nursery.start_soon(follow, view, rejecting, trio.Event())
        nursery.start_soon(follow, view, garbling, trio.Event())
        await view.wait_until(
            lambda: (
                "unreachable" in view.render(200)
                and view.render(200).count("unreadable feed message ignored") == 2
            )
        )
    table = view.render(200)
    assert "unreachable:" in row(table, str(rejecting))
    assert row(table, str(garbling))[-1] == "waiting"


async def test_follow_reconnects_after_the_feed_drops(nursery: trio.Nursery) -> None:
    connections = 0
    second = trio.Event()

    async def flaky(request: WebSocketRequest) -> None:
        nonlocal connections
        connections += 1
        ws = await request.accept()
        state = "STANDBY" if connections == 1 else "NORMAL"
        await ws.send_message(json.dumps(snapshot(state=state)))
        if connections == 1:
            await ws.aclose(1011, "restarting")
            return
        second.set()
        await trio.sleep_forever()

    with trio.fail_after(10):
        node = await start_feed(nursery, flaky)
        view = WatchedView([str(node)])
        nursery.start_soon(follow, view, node, trio.Event())
        await second.wait()
        await view.wait_until(lambda: "NORMAL" in view.render(200))
    table = view.render(200)
    assert row(table, str(node))[2:3] == ["NORMAL"]
    assert "feed lost: closed (1011 INTERNAL_ERROR: restarting)" in table


async def test_follow_marks_unreachable_while_retrying(nursery: trio.Nursery) -> None:
    node = closed_port()
    view = WatchedView([str(node)])
    with trio.fail_after(10):
        nursery.start_soon(follow, view, node, trio.Event())
        await view.wait_until(lambda: "unreachable" in view.render(200))
    assert row(view.render(200), str(node))[-1] == "refused"


async def test_draw_plain_tables_separated_by_blank_lines(autojump_clock: Any) -> None:
    view = live_view()
    view.feed(NODE, snapshot())
    out = io.StringIO()
    with trio.fail_after(10), trio.move_on_after(2.5):
        await draw(view, out, 1.0)
    tables = out.getvalue().split("\n\n")
    assert len(tables) == 4  # three tables, each followed by a blank line
    assert all(table.startswith("trinomite status") for table in tables[:3])
    assert "\x1b" not in out.getvalue()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_draw_clears_the_screen_on_a_terminal(autojump_clock: Any) -> None:
    view = live_view()
    out = Terminal()
    with trio.fail_after(10), trio.move_on_after(1.5):
        await draw(view, out, 1.0)
    frames = out.getvalue().split("\x1b[H\x1b[2J")
    assert frames[0] == ""
    assert len(frames) == 3
    assert all(frame.startswith("trinomite status") for frame in frames[1:])


# ---- the command, as a process ---------------------------------------------


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trinomite", "status", *args]


ENV = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}


async def test_command_once_against_fake_feeds(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        a = await start_feed(nursery, steady_feed("dc1", "r1"))
        done = await trio.run_process(
            command(str(a), "--once", "--timeout", "10"),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
            env=ENV,
        )
    assert done.returncode == 0, done.stderr
    assert row(done.stdout.decode(), str(a))[1:3] == ["dc1/r1", "NORMAL"]


async def test_command_live_mode_stops_on_ctrl_c(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        a = await start_feed(nursery, steady_feed("dc1", "r1"))
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                command(str(a), "--refresh", "0.1"),
                stdout=subprocess.PIPE,
                check=False,
                cwd=ROOT,
                env=ENV,
            )
        )
        assert process.stdout is not None
        seen = b""
        while b" ok\n" not in seen:  # the header of a table where the node is up
            seen += await process.stdout.receive_some()
        process.send_signal(signal.SIGINT)
        assert await process.wait() == 0


# ---- against a real cluster ------------------------------------------------


async def test_command_once_against_a_real_cluster() -> None:
    with trio.fail_after(60):
        async with open_cluster({"dc1": {"r1": 1, "r2": 1, "r3": 1}}) as cluster:
            members = [member for member in cluster.nodes if member.node is not None]
            addresses = [str(member.node.admin_address) for member in members]
            done = await trio.run_process(
                command(*addresses, "--once", "--timeout", "15"),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=ROOT,
                env=ENV,
            )
    table = done.stdout.decode()
    assert done.returncode == 0, (table, done.stderr.decode())
    for member, address in zip(members, addresses, strict=True):
        cells = row(table, address)
        assert cells[1:3] == [f"{member.dc}/{member.rack}", "NORMAL"], table
        assert cells[-4:] == ["2/2", "0", "-", "ok"], table  # no gossip: "-"


def test_no_address_means_the_default_admin_address() -> None:
    from trinomite.status import parse_args

    options = parse_args([])
    assert options is not None
    assert [str(node) for node in options.nodes] == ["127.0.0.1:22222"]


async def test_watch_into_a_pipe_prints_one_table_and_exits(nursery: trio.Nursery) -> None:
    with trio.fail_after(10):
        a = await start_feed(nursery, steady_feed("dc1", "r1"))
        out, err = io.StringIO(), io.StringIO()
        assert await watch(Options((a,), timeout=5), out, err) == 0
    assert out.getvalue().count("trinomite status") == 1
