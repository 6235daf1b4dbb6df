"""``trinomite status``: a live table of a whole cluster, fed by each node's admin feed.

Theory of operation
-------------------
Two layers, as in h11 and its Trio examples::

    ClusterView (sans-IO, no Trio)        the Trio shell
    ------------------------------        ------------------------------------------
    feed(node, message)        <-------   follow(): one task per node, reading
    connected(node)                         ws://host:port/feed; reconnects with a
    disconnected(node, reason)              doubling, bounded backoff
    render(width) -> str       ------->   draw(): every --refresh s, the table on
    missing() -> [node, ...]                stdout (ANSI redraw on a TTY, else plain
                                            tables separated by blank lines)

``ClusterView`` keeps, per node, the last snapshot and the state of its feed,
plus a bounded log of the newest events of all nodes.  It never raises on
odd input: a missing or mistyped field renders as ``-``, a message of an
unknown type is ignored.  Time comes from an injected ``clock`` (wall time,
since events carry the nodes' unix timestamps), so tests drive it by hand.

A node's FEED column says how fresh its row is: ``ok``; ``waiting`` while
connected without a snapshot yet; ``stale Ns`` once no snapshot came for
more than ``STALE_INTERVALS`` feed intervals (a node's interval is measured
from the ``ts`` of its consecutive snapshots); ``unreachable: reason``
while its feed is down (the row then keeps the last values it had).

``--once`` waits until every node has sent a snapshot, or ``--timeout``
seconds, prints one table and exits 0, or 1 naming the silent nodes; so
does the command whenever its output is not a terminal.  Without an
address it watches the default admin address, ``127.0.0.1:22222``.
Ctrl-C (or SIGTERM) stops the tool with exit status 0; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn, TextIO

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from .config.model import STATS_LISTEN_FILE_DEFAULT, HostPort
from .config.values import HOST_PORT, Invalid

__all__ = ["ClusterView", "Options", "follow", "main", "parse_args", "watch"]

#: Feed period assumed until two snapshots of a node have shown the real one.
DEFAULT_INTERVAL = 1.0
#: A node is stale once no snapshot came for more than this many intervals.
STALE_INTERVALS = 3
#: How many of the newest events the log under the table keeps.
MAX_EVENTS = 8

#: Reconnect backoff: first delay, doubled after each failed attempt, up to the cap.
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
#: A connected feed silent this many intervals (and at least SILENCE_MIN s) is reopened.
SILENCE_INTERVALS = 10
SILENCE_MIN = 5.0
#: Bounds of one WebSocket handshake and closing handshake.
CONNECT_TIMEOUT = 5.0
DISCONNECT_TIMEOUT = 1.0

#: Table width when stdout is not a terminal.
PIPE_WIDTH = 120
_GAP = "  "
#: How much of the last column must fit before other columns are dropped.
_ELASTIC = 16
_CLEAR = "\x1b[H\x1b[2J"


# ---- the sans-IO view ------------------------------------------------------


@attrs.define
class _Feed:
    """What the view knows about one node."""

    #: "connecting" (never connected yet), "up" or "down".
    link: str = "connecting"
    reason: str = ""
    #: clock() when the link last came up, and when the last snapshot arrived.
    since: float | None = None
    received: float | None = None
    snapshot: Mapping[str, Any] = attrs.field(factory=dict)
    snapshot_ts: float | None = None
    interval: float = DEFAULT_INTERVAL


@attrs.frozen
class _Event:
    ts: float
    node: str
    text: str


@attrs.frozen
class _Column:
    title: str
    cell: Callable[[str, _Feed, float], str]
    #: Right-aligned (numbers) or left-aligned (text).
    right: bool = False
    #: Narrow terminals drop the columns with the highest ``drop`` first; 0 = never.
    drop: int = 0


class ClusterView:
    """The cluster as its feeds describe it; see the module docstring."""

    def __init__(
        self,
        nodes: Iterable[str],
        *,
        clock: Callable[[], float] = time.time,
        max_events: int = MAX_EVENTS,
    ) -> None:
        self._clock = clock
        self._feeds: dict[str, _Feed] = {node: _Feed() for node in nodes}
        self._events: collections.deque[_Event] = collections.deque(maxlen=max_events)

    # -- input -------------------------------------------------------------

    def feed(self, node: str, message: Mapping[str, Any]) -> None:
        """Take one decoded feed message (a snapshot or an event) from ``node``."""
        feed = self._feed(node)
        kind = message.get("type")
        if kind == "snapshot":
            now = self._clock()
            ts = _number(message.get("ts"))
            if ts is not None and feed.snapshot_ts is not None and ts > feed.snapshot_ts:
                feed.interval = ts - feed.snapshot_ts
            feed.snapshot, feed.snapshot_ts, feed.received = dict(message), ts, now
        elif kind == "event":
            ts = _number(message.get("ts"))
            self._log(node, _event_text(message), self._clock() if ts is None else ts)

    def connected(self, node: str) -> None:
        feed = self._feed(node)
        if feed.link != "up":
            feed.link, feed.reason, feed.since = "up", "", self._clock()

    def disconnected(self, node: str, reason: str) -> None:
        """The feed of ``node`` is down (or could not be opened) because of ``reason``."""
        feed = self._feed(node)
        if feed.link != "down":  # log changes only, not every retry
            lost = "feed lost" if feed.link == "up" else "cannot open feed"
            self._log(node, f"{lost}: {reason}", self._clock())
        feed.link, feed.reason = "down", reason

    def note(self, node: str, text: str) -> None:
        """Add a line of the tool's own (not from the node) to the event log."""
        self._log(node, text, self._clock())

    # -- queries -----------------------------------------------------------

    @property
    def nodes(self) -> list[str]:
        return list(self._feeds)

    def missing(self) -> list[str]:
        """The nodes that never sent a snapshot, in the order they were given."""
        return [node for node, feed in self._feeds.items() if feed.received is None]

    def interval(self, node: str) -> float:
        """The feed period of ``node`` (seconds), as measured from its snapshots."""
        return self._feed(node).interval

    def render(self, width: int) -> str:
        """The table (and the event log under it), every line at most ``width`` wide."""
        width = max(width, 20)
        now = self._clock()
        ok = sum(_freshness(feed, now) == "ok" for feed in self._feeds.values())
        count = f"{len(self._feeds)} node{'' if len(self._feeds) == 1 else 's'}"
        title = f"trinomite status  {_clock_text(now)}  {count}, {ok} ok"
        lines = [title, *_table(self._feeds, now, width)]
        if self._events:
            lines += ["", "events:"]
            lines += [f"{_clock_text(e.ts)}  {e.node}  {e.text}" for e in self._events]
        return "\n".join(_fit(line, width) for line in lines) + "\n"

    # -- internals ---------------------------------------------------------

    def _feed(self, node: str) -> _Feed:
        return self._feeds.setdefault(node, _Feed())

    def _log(self, node: str, text: str, ts: float) -> None:
        self._events.append(_Event(ts, node, text))


def _table(feeds: Mapping[str, _Feed], now: float, width: int) -> list[str]:
    """Header and rows; the lowest-priority columns go until the table fits ``width``."""
    columns = list(_COLUMNS)
    cells = {c.title: [c.cell(node, feed, now) for node, feed in feeds.items()] for c in columns}
    widths = {c.title: max([len(c.title), *map(len, cells[c.title])]) for c in columns}

    def total() -> int:
        # The last column may run on to the end of the line, where _fit cuts it.
        *fixed, last = (widths[c.title] for c in columns)
        return sum(fixed) + min(last, _ELASTIC) + len(_GAP) * len(fixed)

    while total() > width and any(c.drop for c in columns):
        columns.remove(max(columns, key=lambda c: c.drop))

    def line(texts: Sequence[str]) -> str:
        padded = [
            text.rjust(widths[c.title]) if c.right else text.ljust(widths[c.title])
            for c, text in zip(columns, texts, strict=True)
        ]
        return _GAP.join(padded).rstrip()

    rows = [line([cells[c.title][i] for c in columns]) for i in range(len(feeds))]
    return [line([c.title for c in columns]), *rows]


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "~"


def _freshness(feed: _Feed, now: float) -> str:
    if feed.link == "down":
        return f"unreachable: {feed.reason}" if feed.reason else "unreachable"
    if feed.link == "connecting":
        return "connecting"
    heard = feed.received if feed.received is not None else feed.since
    age = now - heard if heard is not None else 0.0
    if age > STALE_INTERVALS * feed.interval:
        return f"stale {age:.0f}s"
    return "waiting" if feed.received is None else "ok"


# -- cells: each takes (node, feed, now) and never raises on odd snapshots --


def _number(value: object) -> float | None:
    """A finite int or float (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: object) -> str:
    if isinstance(value, str) and value:
        return value
    number = _number(value)
    return "-" if number is None else f"{number:g}"


def _field(feed: _Feed, *path: str) -> object:
    value: object = feed.snapshot
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _location(_node: str, feed: _Feed, _now: float) -> str:
    dc, rack = _field(feed, "dc"), _field(feed, "rack")
    if dc is None and rack is None:
        return "-"
    # A memcached node (data_store: 1) says so; Redis is the default, unmarked.
    store = " mc" if _field(feed, "data_store") == "memcached" else ""
    return f"{_text(dc)}/{_text(rack)}{store}"


def _rate(_node: str, feed: _Feed, _now: float) -> str:
    rate = _number(_field(feed, "req_per_sec"))
    return "-" if rate is None else f"{rate:.1f}"


def _p99_ms(_node: str, feed: _Feed, _now: float) -> str:
    micros = _number(_field(feed, "latency_us", "p99"))
    if micros is None:
        return "-"
    ms = micros / 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _errors(_node: str, feed: _Feed, _now: float) -> str:
    errors = _number(_field(feed, "errors"))
    return "-" if errors is None else f"{errors:.0f}"


def _peers(_node: str, feed: _Feed, _now: float) -> str:
    up, total = _number(_field(feed, "peers", "up")), _number(_field(feed, "peers", "total"))
    return "-" if up is None or total is None else f"{up:.0f}/{total:.0f}"


def _hints(_node: str, feed: _Feed, _now: float) -> str:
    pending = _number(_field(feed, "hints", "pending"))
    return "-" if pending is None else f"{pending:.0f}"


#: Member states as the GOSSIP column abbreviates them.
_GOSSIP_STATES = {"NORMAL": "N", "JOINING": "J", "LEAVING": "L", "DOWN": "D"}


def _gossip(_node: str, feed: _Feed, _now: float) -> str:
    """The node's gossip view, members by state (``3N 1D``); ``-`` without gossip."""
    counts = _field(feed, "gossip")
    if not isinstance(counts, dict) or not counts:
        return "-"
    parts = [
        f"{amount:.0f}{short}"
        for state, short in _GOSSIP_STATES.items()
        if (amount := _number(counts.get(state)))
    ]
    return " ".join(parts) or "-"


_COLUMNS = (
    _Column("NODE", lambda node, _feed, _now: node),
    _Column("DC/RACK", _location, drop=6),
    _Column("STATE", lambda _node, feed, _now: _text(_field(feed, "state")), drop=2),
    _Column("REQ/S", _rate, right=True, drop=4),
    _Column("P99 MS", _p99_ms, right=True, drop=5),
    _Column("ERRORS", _errors, right=True, drop=7),
    _Column("PEERS", _peers, right=True, drop=3),
    _Column("HINTS", _hints, right=True, drop=8),
    _Column("GOSSIP", _gossip, drop=9),
    _Column("FEED", lambda _node, feed, now: _freshness(feed, now), drop=1),
)


def _event_text(message: Mapping[str, Any]) -> str:
    """``name key=value ...`` from an event message (``type`` and ``ts`` left out)."""
    name = message.get("event")
    words = [name if isinstance(name, str) and name else "event"]
    for key, value in message.items():
        if key not in ("type", "event", "ts"):
            shown = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            words.append(f"{key}={shown}")
    return " ".join(words)


def _clock_text(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


# ---- the Trio shell --------------------------------------------------------


@attrs.frozen
class Options:
    nodes: tuple[HostPort, ...]
    once: bool = False
    refresh: float = 1.0
    timeout: float = 10.0


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _address(text: str) -> HostPort:
    try:
        address = HOST_PORT.convert(text)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    assert isinstance(address, HostPort)
    if address.port == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: port 0 cannot be connected to")
    return address


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _build_parser() -> _Parser:
    parser = _Parser(
        prog="trinomite status",
        add_help=False,
        description="A live table of a trinomite cluster, from each node's admin feed "
        "(ws://HOST:PORT/feed, where HOST:PORT is the node's stats_listen).",
    )
    add = parser.add_argument
    add(
        "nodes",
        nargs="*",
        type=_address,
        metavar="HOST:PORT",
        help=f"admin address of a node (default {STATS_LISTEN_FILE_DEFAULT})",
    )
    add("--once", action="store_true", help="print one table once every node answered, exit")
    add("--refresh", type=_seconds, default=1.0, metavar="S", help="redraw period (default 1)")
    add(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="with --once: how long to wait for every node (default 10)",
    )
    add("-h", "--help", action="store_true", help="show this help and exit")
    return parser


def parse_args(argv: Sequence[str]) -> Options | None:
    """``Options`` from the command line, or None for ``-h``; ``_UsageError`` if invalid."""
    args = _build_parser().parse_args(list(argv))
    if args.help:
        return None
    nodes = tuple(args.nodes) or (STATS_LISTEN_FILE_DEFAULT,)  # a node's default stats_listen
    return Options(nodes, args.once, args.refresh, args.timeout)


def main(argv: Sequence[str]) -> int:
    """Run ``trinomite status`` with ``argv`` (the words after ``status``); the exit code."""
    parser = _build_parser()
    try:
        options = parse_args(argv)
    except _UsageError as exc:
        print(f"trinomite status: {exc}", file=sys.stderr)
        print(parser.format_usage(), end="", file=sys.stderr)
        return 2
    if options is None:
        print(parser.format_help(), end="")
        return 0
    try:
        return trio.run(_until_signal, options)
    except KeyboardInterrupt:  # Ctrl-C before the signal receiver was open
        return 0


async def _until_signal(options: Options) -> int:
    code = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
            code = await watch(options, sys.stdout, sys.stderr)
            nursery.cancel_scope.cancel()
    return code


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def watch(options: Options, out: TextIO, err: TextIO) -> int:
    """Follow every node and draw (or, with ``--once``, print one table); the exit code."""
    view = ClusterView(str(node) for node in options.nodes)
    answered = trio.Event()
    async with trio.open_nursery() as nursery:
        for node in options.nodes:
            nursery.start_soon(follow, view, node, answered)
        if not options.once and out.isatty():
            await draw(view, out, options.refresh)  # until cancelled
        # Not a terminal (a pipe, a log): one table, as --once, not one a second.
        with trio.move_on_after(options.timeout):
            await answered.wait()
        nursery.cancel_scope.cancel()
    out.write(view.render(_width(out)))
    out.flush()
    if silent := view.missing():
        err.write(
            f"trinomite status: no snapshot within {options.timeout:g} s from: "
            f"{', '.join(silent)}\n"
        )
        return 1
    return 0


async def draw(view: ClusterView, out: TextIO, refresh: float) -> NoReturn:
    """Redraw the table every ``refresh`` seconds, forever."""
    tty = out.isatty()
    while True:
        table = view.render(_width(out))
        out.write(_CLEAR + table if tty else table + "\n")
        out.flush()
        await trio.sleep(refresh)


def _width(out: TextIO) -> int:
    if out.isatty():
        return shutil.get_terminal_size().columns
    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns


async def follow(view: ClusterView, node: HostPort, answered: trio.Event) -> NoReturn:
    """Feed ``view`` from the feed of ``node`` forever, reconnecting with backoff.

    ``answered`` is set once every node of ``view`` has sent a snapshot.
    """
    name, url = str(node), f"ws://{node}/feed"
    backoff = BACKOFF_FIRST
    while True:
        try:
            async with open_websocket_url(
                url, connect_timeout=CONNECT_TIMEOUT, disconnect_timeout=DISCONNECT_TIMEOUT
            ) as ws:
                view.connected(name)
                while True:
                    silence = max(SILENCE_MIN, SILENCE_INTERVALS * view.interval(name))
                    with trio.move_on_after(silence) as wait:
                        text = await ws.get_message()
                    if wait.cancelled_caught:
                        reason = f"no message for {silence:g} s"
                        break
                    message = _decode(text)
                    if message is None:
                        view.note(name, "unreadable feed message ignored")
                        continue
                    view.feed(name, message)
                    if message.get("type") == "snapshot":
                        backoff = BACKOFF_FIRST
                        if not view.missing():
                            answered.set()
        except ConnectionClosed as exc:
            reason = _closed_reason(exc)
        except (HandshakeError, OSError) as exc:
            reason = _failure_reason(exc)
        view.disconnected(name, reason)
        await trio.sleep(backoff)
        backoff = min(backoff * 2, BACKOFF_MAX)


def _decode(message: str | bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _closed_reason(exc: ConnectionClosed) -> str:
    reason = exc.reason
    if reason is None:
        return "connection closed"
    detail = f": {reason.reason}" if reason.reason else ""
    return f"closed ({reason.code} {reason.name}{detail})"


def _failure_reason(exc: BaseException) -> str:
    """The OS's words (``connection refused``) from ``exc``, its causes or groups, if any."""
    pending = [exc]
    while pending:
        inner = pending.pop(0)
        if isinstance(inner, OSError) and inner.errno is not None:
            # errno > 0: a system call's error; < 0: getaddrinfo's (socket.gaierror).
            text = os.strerror(inner.errno) if inner.errno > 0 else inner.strerror
            return (text or f"error {inner.errno}").lower()
        if isinstance(inner, BaseExceptionGroup):
            pending += inner.exceptions
        if inner.__cause__ is not None:
            pending.append(inner.__cause__)
    return str(exc) or type(exc).__name__
