"""Shared helpers for the admin tests: a fake AdminApi and an h11 HTTP client.

Theory of operation
-------------------
``FakeAdmin`` is a small hand-written ``AdminApi`` that records what was
asked of it, for unit tests of the HTTP layer (no node, no sockets).
``exchange`` speaks HTTP/1.1 through an h11 *client* state machine over any
stream, so every reply is also checked to be well-formed; ``request`` drives
``AdminServer.handle`` over an in-memory stream pair, ``http_get`` a real
listener over loopback TCP.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import attrs
import h11
import trio
import trio.testing

from trinomite.admin.api import NodeState, PeerAction
from trinomite.admin.http import Policy
from trinomite.admin.server import AdminServer
from trinomite.config.model import Consistency

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
        self.tls_reloads = 0
        self.tls_problem = ""
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

    def reload_tls(self) -> str:
        self.tls_reloads += 1
        return self.tls_problem

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


async def http_get(
    address: tuple[str, int], target: str, headers: Sequence[tuple[str, str]] = (), **kw: Any
) -> Reply:
    with trio.fail_after(TIMEOUT):
        stream = await trio.open_tcp_stream(*address)
        return await exchange(stream, target=target, headers=headers, **kw)
