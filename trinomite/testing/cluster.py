"""Start a whole Dynomite-style topology in-process, for tests and examples.

Theory of operation
-------------------
``open_cluster({"dc1": {"r1": 2, "r2": 2}, "dc2": {"r1": 1}})`` builds one
``NodeConfig`` per node (ephemeral loopback ports, evenly spaced tokens per
rack, every other node as a seed), starts every node in the caller's Trio
program, and yields a ``Cluster``.  Each node runs in its own cancel scope,
so a test can stop and restart single nodes (same ports, same datastore) or
their datastores to inject faults::

    async with open_cluster(layout, datastore="redis") as cluster:
        node = cluster.node("dc1", "r1", 0)
        client = node.client()             # a redis-py client for that node
        await cluster.stop_node(node)      # the node goes away, ports kept
        await cluster.stop_datastore(node) # redis-server killed (redis only)
        await cluster.start_node(node)

Ports: every node's client and peer sockets are bound (port 0) while the
configs are built and handed to the nodes as ``ListenSockets``, so nothing
(not even another node's outgoing peer connect, which takes an ephemeral
port) can take a port between choosing it and serving on it.  A restarted
node binds its old ports again, retrying for a bounded time.

``datastore="embedded"`` (default) gives every node its own in-process
store; ``"redis"`` starts one real ``redis-server`` per node.  Leaving the
block stops every node and datastore.
"""

from __future__ import annotations

import errno
import functools
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from redis import Redis

from ..config.model import DatastoreSpec, HostPort, NodeConfig, Seed
from ..node.supervisor import ListenSockets, Node, serve_node
from .redis_server import RedisServer, free_ports

__all__ = ["Cluster", "ClusterNode", "even_tokens", "open_cluster"]

Layout = Mapping[str, Mapping[str, int]]
RING = 1 << 32
#: How long a new cluster may take until every peer link is up.
CONNECT_TIMEOUT = 20.0
#: Backlog of a node's sockets between reserving them and the node adopting them.
START_BACKLOG = 128
#: How long a restarted node may wait for its old ports to be free again.
REBIND_TIMEOUT = 5.0


def _bind(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def _reserve() -> tuple[ListenSockets, tuple[int, int]]:
    """A node's client and peer sockets, bound and listening on fresh ports, and those ports.

    Listening at once means a node that dials a peer not started yet is
    queued in the peer's backlog instead of refused (and logged) while the
    cluster starts.
    """
    client = _bind()
    try:
        peer = _bind()
        client.listen(START_BACKLOG)
        peer.listen(START_BACKLOG)
    except BaseException:
        client.close()
        raise
    return ListenSockets(client, peer), (client.getsockname()[1], peer.getsockname()[1])


async def _rebind(port: int) -> socket.socket:
    """Bind ``port`` again; an outgoing connection may hold it for a moment."""
    with trio.fail_after(REBIND_TIMEOUT):
        while True:
            try:
                return _bind(port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
            await trio.sleep(0.05)


def even_tokens(count: int) -> list[int]:
    """Tokens spread evenly over the uint32 ring, as Dynomite's tooling picks them."""
    return [i * (RING // count) for i in range(count)]


@attrs.define(eq=False)
class ClusterNode:
    """One node of a test cluster, running or stopped."""

    dc: str
    rack: str
    index: int
    token: int
    client_port: int
    peer_port: int
    #: Bound sockets waiting for the node's next start (consumed by it).
    sockets: ListenSockets | None = None
    redis: RedisServer | None = None
    config: NodeConfig | None = None
    node: Node | None = None
    _scope: trio.CancelScope | None = None
    _stopped: trio.Event | None = None

    @property
    def name(self) -> str:
        return f"{self.dc}/{self.rack}/{self.index}"

    @property
    def running(self) -> bool:
        return self.node is not None

    def release(self) -> None:
        """Close sockets bound for a start that never happened."""
        if self.sockets is not None:
            self.sockets.close()
        self.sockets = None

    async def take_sockets(self) -> ListenSockets:
        """The sockets for this start: the reserved ones, else the old ports again."""
        sockets, self.sockets = self.sockets, None
        if sockets is None:
            client = await _rebind(self.client_port)
            try:
                sockets = ListenSockets(client, await _rebind(self.peer_port))
            except BaseException:
                client.close()
                raise
        return sockets

    def client(self, **kwargs: Any) -> Redis:
        """A redis-py client for this node (blocking: use it from a thread)."""
        kwargs.setdefault("socket_timeout", 30)
        return Redis(host="127.0.0.1", port=self.client_port, **kwargs)

    def datastore(self, **kwargs: Any) -> Redis:
        """A redis-py client straight to this node's redis-server."""
        if self.redis is None:
            raise RuntimeError("embedded datastores have no address; use datastore='redis'")
        return Redis(host=self.redis.host, port=self.redis.port, **kwargs)


class Cluster:
    """A running in-process topology."""

    def __init__(self, nodes: list[ClusterNode], nursery: trio.Nursery) -> None:
        self.nodes = nodes
        self._nursery = nursery

    def node(self, dc: str, rack: str, index: int = 0) -> ClusterNode:
        for member in self.nodes:
            if (member.dc, member.rack, member.index) == (dc, rack, index):
                return member
        raise KeyError(f"no node {dc}/{rack}/{index}")

    def rack(self, dc: str, rack: str) -> list[ClusterNode]:
        return [n for n in self.nodes if n.dc == dc and n.rack == rack]

    def owner(self, dc: str, rack: str, key: bytes) -> ClusterNode:
        """The node owning ``key`` in a rack, computed by a running node's ring."""
        running = next(n.node for n in self.nodes if n.node is not None)
        peer = running.topology.ring(dc, rack).owner(running.topology.token(key))
        return next(n for n in self.rack(dc, rack) if n.peer_port == peer.port)

    def unconnected(self) -> list[tuple[Node, str]]:
        """(node, peer name) for every missing link between running nodes."""
        missing: list[tuple[Node, str]] = []
        running = [n for n in self.nodes if n.node is not None]
        for member in running:
            assert member.node is not None
            for other in running:
                name = f"127.0.0.1:{other.peer_port}"
                if other is not member and not member.node.peers.is_up(name):
                    missing.append((member.node, name))
        return missing

    async def wait_connected(self) -> None:
        """Wait until every running node links to every other (bound it with fail_after)."""
        while missing := self.unconnected():
            await missing[0][0].peers.wait_changed()

    async def start_node(self, member: ClusterNode) -> Node:
        if member.node is not None:
            return member.node
        node: Node = await self._nursery.start(self._run, member)
        return node

    async def stop_node(self, member: ClusterNode) -> None:
        """Stop a node now (its listeners close; peers see it as down)."""
        if member._scope is None or member._stopped is None:
            return
        member._scope.cancel()
        await member._stopped.wait()

    async def stop_datastore(self, member: ClusterNode) -> None:
        if member.redis is None:
            raise RuntimeError("only redis datastores can be stopped")
        await trio.to_thread.run_sync(member.redis.stop)

    async def start_datastore(self, member: ClusterNode) -> None:
        if member.redis is None:
            raise RuntimeError("only redis datastores can be started")
        await trio.to_thread.run_sync(member.redis.start)

    async def _run(self, member: ClusterNode, *, task_status: trio.TaskStatus[Node]) -> None:
        assert member.config is not None
        member._stopped = trio.Event()
        try:
            with trio.CancelScope() as scope:
                member._scope = scope
                async with trio.open_nursery() as nursery:
                    sockets = await member.take_sockets()
                    node: Node = await nursery.start(
                        functools.partial(serve_node, member.config, sockets=sockets)
                    )
                    member.node = node
                    task_status.started(node)
        finally:
            member.node = None
            member._scope = None
            member._stopped.set()


PerNode = Callable[[ClusterNode], Mapping[str, Any]]


def _configs(
    layout: Layout, datastore: str, overrides: Mapping[str, Any], per_node: PerNode | None
) -> list[ClusterNode]:
    members: list[ClusterNode] = []
    total = sum(count for racks in layout.values() for count in racks.values())
    # Node sockets stay bound from here on; redis-server ports come from one
    # batch chosen while they are held, so every port is distinct.
    try:
        for dc, racks in layout.items():
            for rack, count in racks.items():
                for index, token in enumerate(even_tokens(count)):
                    sockets, ports = _reserve()
                    members.append(ClusterNode(dc, rack, index, token, *ports, sockets))
        redis_ports = iter(free_ports(total if datastore == "redis" else 0))
    except BaseException:
        for member in members:
            member.release()
        raise
    for member in members:
        if datastore == "redis":
            member.redis = RedisServer(port=next(redis_ports))
            spec = DatastoreSpec.tcp(member.redis.host, member.redis.port)
        else:
            spec = DatastoreSpec.embedded()
        seeds = tuple(
            Seed("127.0.0.1", other.peer_port, other.rack, other.dc, (other.token,))
            for other in members
            if other is not member
        )
        member.config = NodeConfig(
            listen=HostPort("127.0.0.1", member.client_port),
            dyn_listen=HostPort("127.0.0.1", member.peer_port),
            servers=(spec,),
            datacenter=member.dc,
            rack=member.rack,
            tokens=(member.token,),
            dyn_seeds=seeds,
            **{"stats_listen": HostPort("127.0.0.1", 0), **overrides},
        )
        if per_node is not None:
            member.config = attrs.evolve(member.config, **per_node(member))
    return members


@asynccontextmanager
async def open_cluster(
    layout: Layout,
    *,
    datastore: str = "embedded",
    per_node: PerNode | None = None,
    wait_connected: bool = True,
    **config: Any,
) -> AsyncIterator[Cluster]:
    """Run ``layout`` (``{dc: {rack: nodes}}``) in-process; see the module docstring.

    ``config`` overrides NodeConfig fields on every node (e.g.
    ``read_consistency=Consistency.DC_QUORUM``, ``timeout=500``);
    ``per_node(member)`` returns overrides for one node (its certificate,
    say: see ``testing.tls``).  ``wait_connected=False`` yields as soon as
    every node started, for tests of links that must not come up.
    """
    if datastore not in ("embedded", "redis"):
        raise ValueError("datastore must be 'embedded' or 'redis'")
    members = _configs(layout, datastore, config, per_node)
    try:
        for member in members:
            if member.redis is not None:
                await trio.to_thread.run_sync(member.redis.start)
        async with trio.open_nursery() as nursery:
            cluster = Cluster(members, nursery)
            for member in members:
                await cluster.start_node(member)
            if wait_connected:
                with trio.fail_after(CONNECT_TIMEOUT):
                    await cluster.wait_connected()
            try:
                yield cluster
            finally:
                nursery.cancel_scope.cancel()
    finally:
        for member in members:
            member.release()
            if member.redis is not None:
                member.redis.close()
