"""The admin paths as a table: request line and headers in, one ``Response`` out.

Theory of operation
-------------------
This module is the sans-IO half of the admin server.  It never touches a
socket and never awaits; ``server.py`` owns the connection, parses the request
head with h11 and hands the method, target and headers to ``dispatch``::

    dispatch(api, policy, method, target, headers)
      |-- target -> path            (query dropped, %-escapes decoded)  else 400
      |-- path -> Route             (ROUTES, a table of templates)      else 404
      |-- method allowed?           GET (+ HEAD on read paths)          else 405
      |-- write path authorised?    Bearer token / loopback bind        else 401 / 403
      `-- route.handler(api, params) -> Response
                                    ValueError (bad level, ...)         -> 400
                                    any other Exception (a bug)         -> 500, logged

Every path is one ``Route`` row: its template (``<name>`` matches one path
segment), whether it changes state (``write``), a one-line summary for
``/help``, and a handler over the ``AdminApi`` interface.  Bodies are
byte-for-byte Dynomite's where Dynomite defines them (``OK\\r\\n``,
``State: NORMAL\\n``, ...; dynomite.md section 7.2); ``docs/admin.md`` lists
the differences (status codes instead of Dynomite's blanket ``200 OK``).

``encode`` turns a ``Response`` into bytes through the connection's h11 state
machine: a real status line, CRLF headers, ``Content-Length`` and
``Connection: close`` (the server closes after every reply, as Dynomite does).
"""

from __future__ import annotations

import enum
import hmac
import http
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import h11

from ..config.model import Consistency
from .api import AdminApi, NodeState, PeerAction

__all__ = [
    "FEED_PATH",
    "JSON",
    "METRICS",
    "ROUTES",
    "TEXT",
    "Policy",
    "Response",
    "Route",
    "authorize",
    "dispatch",
    "encode",
    "error",
    "match",
    "request_path",
    "to_json",
]

log = logging.getLogger("trinomite.admin")

JSON = "application/json; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
METRICS = "text/plain; version=0.0.4; charset=utf-8"
#: The WebSocket feed's path (served by ``feed.py``; a plain GET gets 426).
FEED_PATH = "/feed"
OK = b"OK\r\n"
MIN_LOG_LEVEL, MAX_LOG_LEVEL = 0, 11
MIN_TIMEOUT_FACTOR, MAX_TIMEOUT_FACTOR = 1, 10
_INTEGER = re.compile(r"[+-]?[0-9]{1,9}")

Params = Mapping[str, str]
Handler = Callable[[AdminApi, Params], "Response"]


@attrs.frozen
class Response:
    """One HTTP reply: status, body and the headers that go with it."""

    status: int
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class Policy:
    """Who may call the state-changing paths.

    ``token``: the ``admin_token`` (None = none configured).  ``loopback``:
    the server is bound to loopback addresses only.
    """

    token: str | None
    loopback: bool


@attrs.frozen
class Route:
    """One row of the path table."""

    template: str
    handler: Handler
    write: bool
    summary: str

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.template.split("/")[1:])


def error(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    """A plain-text error reply; the body is the message plus CRLF."""
    return Response(status, f"{message}\r\n".encode(), TEXT, headers)


def to_json(value: Any) -> str:
    """JSON for the admin API's plain data; enums become their names."""
    return json.dumps(value, default=_json_default)


def _json_default(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _text(body: str) -> Response:
    return Response(200, body.encode())


def _ok() -> Response:
    return Response(200, OK)


# -- handlers: reads --------------------------------------------------------------


def _info(api: AdminApi, params: Params) -> Response:
    return Response(200, to_json(api.info()).encode(), JSON)


def _ping(api: AdminApi, params: Params) -> Response:
    return _ok()


def _cluster_describe(api: AdminApi, params: Params) -> Response:
    return Response(200, to_json(api.cluster_describe()).encode(), JSON)


def _get_consistency(api: AdminApi, params: Params) -> Response:
    read, write = api.consistency()
    return _text(f"Read Consistency: {read.value}\r\nWrite Consistency: {write.value}\r\n")


def _get_state(api: AdminApi, params: Params) -> Response:
    return _text(f"State: {api.state().name}\n")


def _get_timeout_factor(api: AdminApi, params: Params) -> Response:
    return _text(f"Timeout factor: {api.timeout_factor()}\n")


def _help(api: AdminApi, params: Params) -> Response:
    width = max(len(route.template) for route in ROUTES)
    lines = [f"{route.template:<{width}}  {route.summary}\n" for route in ROUTES]
    return _text("".join(lines))


def _metrics(api: AdminApi, params: Params) -> Response:
    return Response(200, api.metrics_text().encode(), METRICS)


def _feed(api: AdminApi, params: Params) -> Response:
    return error(
        426,
        f"{FEED_PATH} is a WebSocket: connect with a WebSocket client (ws://host:port{FEED_PATH})",
        (("Upgrade", "websocket"),),
    )


# -- handlers: writes -------------------------------------------------------------


def _set_consistency(which: str) -> Handler:
    def handler(api: AdminApi, params: Params) -> Response:
        text = params["level"]
        try:
            level = Consistency(text.upper())
        except ValueError:
            names = ", ".join(known.value.lower() for known in Consistency)
            raise ValueError(
                f"invalid {which} consistency level {text!r}: expected one of {names}"
            ) from None
        api.set_consistency(which, level)
        return _ok()

    return handler


def _set_state(state: NodeState) -> Handler:
    def handler(api: AdminApi, params: Params) -> Response:
        api.set_state(state)
        return _ok()

    return handler


def _parse_int(text: str, what: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"invalid {what} {text!r}: expected an integer")
    return int(text)


def _set_log_level(api: AdminApi, params: Params) -> Response:
    level = _parse_int(params["level"], "log level")
    if not MIN_LOG_LEVEL <= level <= MAX_LOG_LEVEL:
        raise ValueError(f"invalid log level {level}: expected {MIN_LOG_LEVEL}..{MAX_LOG_LEVEL}")
    api.set_log_level(level)
    return _ok()


def _log_level_step(step: int) -> Handler:
    def handler(api: AdminApi, params: Params) -> Response:
        level = min(MAX_LOG_LEVEL, max(MIN_LOG_LEVEL, api.log_level() + step))
        api.set_log_level(level)
        return _ok()

    return handler


def _histo_reset(api: AdminApi, params: Params) -> Response:
    api.reset_histograms()
    return _ok()


def _set_timeout_factor(api: AdminApi, params: Params) -> Response:
    factor = _parse_int(params["factor"], "timeout factor")
    api.set_timeout_factor(min(MAX_TIMEOUT_FACTOR, max(MIN_TIMEOUT_FACTOR, factor)))
    return _ok()


def _peer(action: PeerAction) -> Handler:
    def handler(api: AdminApi, params: Params) -> Response:
        name = params["name"]
        matched = api.peer_control(action, name)
        if matched == 0 and name != "all":
            return error(404, f"No peer named {name!r}")
        return _ok()

    return handler


def _read_repairs(enabled: bool) -> Handler:
    def handler(api: AdminApi, params: Params) -> Response:
        api.set_read_repairs(enabled)
        return _text(f"Read Repairs: {'ENABLED' if api.read_repairs() else 'DISABLED'}\r\n")

    return handler


def _reload_tls(api: AdminApi, params: Params) -> Response:
    problem = api.reload_tls()
    if problem:
        return error(500, f"TLS reload failed, the loaded certificates stay in use: {problem}")
    return _ok()


# -- the table --------------------------------------------------------------------


def _state_routes() -> list[Route]:
    return [
        Route(
            f"/state/{state.name.lower()}",
            _set_state(state),
            True,
            f"set this node's state to {state.name}",
        )
        for state in (
            NodeState.STANDBY,
            NodeState.WRITES_ONLY,
            NodeState.RESUMING,
            NodeState.NORMAL,
        )
    ]


def _peer_routes() -> list[Route]:
    return [
        Route(
            f"/peer/{action.value}/<name>",
            _peer(action),
            True,
            f"mark the peer (host:port, host or 'all') {action.name}",
        )
        for action in PeerAction
    ]


#: Every admin path, in /help order.
ROUTES: tuple[Route, ...] = (
    Route("/info", _info, False, "stats JSON (Dynomite's /info fields, and more)"),
    Route("/help", _help, False, "this list"),
    Route("/ping", _ping, False, "OK"),
    Route("/cluster_describe", _cluster_describe, False, "topology JSON: dcs, racks, servers"),
    Route("/get_consistency", _get_consistency, False, "read and write consistency"),
    Route("/state/get_state", _get_state, False, "this node's state"),
    Route("/get_timeout_factor", _get_timeout_factor, False, "request timeout multiplier"),
    Route("/metrics", _metrics, False, "Prometheus text exposition (0.0.4)"),
    Route(FEED_PATH, _feed, False, "WebSocket: live JSON snapshots and events"),
    Route(
        "/set_consistency/read/<level>",
        _set_consistency("read"),
        True,
        "dc_one|dc_quorum|dc_safe_quorum|dc_each_safe_quorum, for new connections",
    ),
    Route(
        "/set_consistency/write/<level>",
        _set_consistency("write"),
        True,
        "dc_one|dc_quorum|dc_safe_quorum|dc_each_safe_quorum, for new connections",
    ),
    *_state_routes(),
    Route("/setloglevel/<level>", _set_log_level, True, "log verbosity 0..11"),
    Route("/loglevelup", _log_level_step(+1), True, "log verbosity + 1"),
    Route("/logleveldown", _log_level_step(-1), True, "log verbosity - 1"),
    Route("/historeset", _histo_reset, True, "reset the latency histograms"),
    Route("/set_timeout_factor/<factor>", _set_timeout_factor, True, "1..10 (clamped)"),
    *_peer_routes(),
    Route("/read_repairs/enable", _read_repairs(True), True, "enable read repairs"),
    Route("/read_repairs/disable", _read_repairs(False), True, "disable read repairs"),
    Route("/tls/reload", _reload_tls, True, "reload TLS certificates and keys (as SIGHUP)"),
    Route("/", _info, False, "same as /info"),
)


def match(path: str, routes: Iterable[Route] = ROUTES) -> tuple[Route, dict[str, str]] | None:
    """The route for a decoded path and its ``<name>`` parameters, or None."""
    segments = path.split("/")[1:]
    for route in routes:
        template = route.segments
        if len(template) != len(segments):
            continue
        params: dict[str, str] = {}
        for expected, actual in zip(template, segments, strict=True):
            if expected.startswith("<") and expected.endswith(">"):
                if not actual:
                    break
                params[expected[1:-1]] = actual
            elif expected != actual:
                break
        else:
            return route, params
    return None


def request_path(target: bytes) -> str:
    """The decoded path of a request target (origin or absolute form); ValueError if bad."""
    try:
        text = target.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("request target is not ASCII") from None
    if not text.startswith("/"):
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.path.startswith("/"):
            raise ValueError(f"unsupported request target {text!r}")
        text = parts.path
    path = text.split("?", 1)[0].split("#", 1)[0]
    return "/".join(urllib.parse.unquote(segment, errors="strict") for segment in path.split("/"))


def _bearer(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, credentials = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return credentials.strip()
    return None


def authorize(policy: Policy, headers: Iterable[tuple[bytes, bytes]]) -> Response | None:
    """None if a state-changing request may proceed, else the 401/403 reply."""
    if policy.token is None:
        if policy.loopback:
            return None
        return error(
            403,
            "Forbidden: state-changing admin paths are disabled because the admin port is "
            "not bound to loopback and no admin_token is set; set admin_token in the config "
            "and send 'Authorization: Bearer <token>'",
        )
    supplied = _bearer(headers)
    if supplied is not None and hmac.compare_digest(supplied, policy.token.encode()):
        return None
    return error(
        401,
        "Unauthorized: this path changes the node; send 'Authorization: Bearer <admin_token>'",
        (("WWW-Authenticate", 'Bearer realm="trinomite-admin"'),),
    )


def dispatch(
    api: AdminApi,
    policy: Policy,
    method: bytes,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]],
) -> Response:
    """Route one request and run its handler; always returns a reply, never raises."""
    try:
        path = request_path(target)
    except ValueError as exc:
        return error(400, f"Bad Request: {exc}")
    found = match(path)
    if found is None:
        return error(404, f"Not Found: {path} (GET /help lists the paths)")
    route, params = found
    allowed = ("GET",) if route.write else ("GET", "HEAD")
    if method.decode("ascii", "replace") not in allowed:
        return error(
            405,
            f"Method Not Allowed: {path} accepts {' and '.join(allowed)}",
            (("Allow", ", ".join(allowed)),),
        )
    if route.write:
        refusal = authorize(policy, headers)
        if refusal is not None:
            return refusal
    try:
        return route.handler(api, params)
    except ValueError as exc:
        return error(400, f"Bad Request: {exc}")
    except Exception:
        log.exception("admin path %s failed", path)
        return error(500, "Internal Server Error (see the node's log)")


def encode(conn: h11.Connection, response: Response, *, head_only: bool) -> bytes:
    """The reply's bytes, through ``conn`` (headers only for HEAD), closing the connection."""
    phrase = http.HTTPStatus(response.status).phrase.encode()
    headers = [
        ("Content-Type", response.content_type),
        ("Content-Length", str(len(response.body))),
        ("Connection", "close"),
        ("Cache-Control", "no-store"),
        *response.headers,
    ]
    events: list[h11.Event] = [
        h11.Response(status_code=response.status, reason=phrase, headers=headers)
    ]
    if not head_only and response.body:
        events.append(h11.Data(data=response.body))
    events.append(h11.EndOfMessage())
    return b"".join(conn.send(event) or b"" for event in events)
