"""Start a whole Dynomite-style topology in-process, for tests and examples.

Theory of operation
-------------------
``open_cluster({"dc1": {"r1": 2, "r2": 2}, "dc2": {"r1": 1}})`` reserves
every node's ports (``members``), starts one ``redis-server`` per node when
``datastore="redis"``, one ``memcached`` per node (``data_store: 1``) with
``datastore="memcached"``, else each node gets its own embedded store, writes
the configs (every other node a seed, evenly spaced tokens per rack), starts
every node in the caller's Trio program, waits until every peer link is up
and yields a ``Cluster``.  Each node runs in its own cancel scope, so a test
can stop and restart single nodes (same ports, same datastore), their
datastores, or, with ``fault_proxies=True``, the links between them::

    async with open_cluster(layout, datastore="redis", fault_proxies=True) as cluster:
        a, b = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
        client = a.client()                # a redis-py client for that node
        await cluster.stop_node(b)         # the node goes away, ports kept
        await cluster.start_node(b)
        await cluster.stop_datastore(a)    # redis-server killed (redis only)
        cluster.partition(a, b)            # through the fault proxies (mesh)
        cluster.heal()
        await cluster.replicas(b"key")     # {"dc1/r1": b"v", "dc1/r2": None}

If anything fails before the cluster is up (a datastore that will not
start, a node that cannot listen, links that do not come up within
``startup_timeout``), ``ClusterStartError`` says what, with the nodes' last
log lines, and everything started so far is stopped.  Leaving the block
stops every node, proxy and datastore and closes every socket.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from typing import Any

import trio
from redis import Redis

from ..node.supervisor import Node, serve_node
from .members import ClusterNode, Layout, PerNode, configure, even_tokens, reserve
from .memcached_server import MemcachedServer
from .mesh import PeerMesh, Side
from .redis_server import RedisServer
from .startup import ClusterStartError, StartupLog, capture_logs, innermost

__all__ = [
    "STARTUP_TIMEOUT",
    "Cluster",
    "ClusterNode",
    "ClusterStartError",
    "Layout",
    "even_tokens",
    "open_cluster",
]

#: How long a new cluster may take until every peer link is up (seconds).
STARTUP_TIMEOUT = 30.0
#: Kept for callers of the old name.
CONNECT_TIMEOUT = STARTUP_TIMEOUT
DATASTORES = ("embedded", "redis", "memcached")


async def read_direct(member: ClusterNode, key: bytes) -> bytes | None:
    """``GET key`` from the member's own datastore, bypassing every node."""
    if member.memcached is not None:

        def get_mc() -> Any:
            client = member.memcache_client(direct=True, timeout=10)
            try:
                return client.get(key)
            finally:
                client.close()

        found: bytes | None = await trio.to_thread.run_sync(get_mc)
        return found
    if member.redis is not None:

        def get() -> Any:
            with member.datastore(socket_timeout=10) as client:
                return client.get(key)

        value: bytes | None = await trio.to_thread.run_sync(get)
        return value
    node = member.node
    if node is None or node.pool.store is None:
        raise RuntimeError(f"{member.name} is not running: its embedded store is gone")
    stream = node.pool.store.connect()
    try:
        await stream.send_all(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
        reply = await stream.receive_some()
    finally:
        await stream.aclose()
    if reply.startswith(b"$-1"):
        return None
    _, _, rest = reply.partition(b"\r\n")
    return rest[: -len(b"\r\n")]


class Cluster:
    """A running in-process topology (see the module doc)."""

    def __init__(
        self, nodes: list[ClusterNode], nursery: trio.Nursery, mesh: PeerMesh | None = None
    ) -> None:
        self.nodes = nodes
        self.mesh = mesh
        self._nursery = nursery

    # -- finding nodes -------------------------------------------------------

    def node(self, dc: str, rack: str, index: int = 0) -> ClusterNode:
        for member in self.nodes:
            if (member.dc, member.rack, member.index) == (dc, rack, index):
                return member
        raise KeyError(f"no node {dc}/{rack}/{index}")

    def rack(self, dc: str, rack: str) -> list[ClusterNode]:
        return [n for n in self.nodes if n.dc == dc and n.rack == rack]

    def dc(self, dc: str) -> list[ClusterNode]:
        return [n for n in self.nodes if n.dc == dc]

    def peer_port(self, observer: ClusterNode, other: ClusterNode) -> int:
        """The port ``observer`` dials for ``other`` (a fault proxy's, with a mesh)."""
        if other is observer or self.mesh is None:
            return other.peer_port
        return self.mesh.port(observer, other)

    def owner(self, dc: str, rack: str, key: bytes) -> ClusterNode:
        """The node owning ``key`` in a rack, computed by a running node's ring."""
        observer = next((n for n in self.nodes if n.node is not None), None)
        if observer is None or observer.node is None:
            raise RuntimeError("no node is running: nothing can compute the ring")
        node = observer.node
        peer = node.topology.ring(dc, rack).owner(node.topology.token(key))
        return next(n for n in self.rack(dc, rack) if self.peer_port(observer, n) == peer.port)

    def client(self, member: ClusterNode, **kwargs: Any) -> Redis:
        """A redis-py client for ``member`` (blocking: use it in a thread)."""
        return member.client(**kwargs)

    def admin_url(self, member: ClusterNode) -> str:
        return member.admin_url

    # -- links -----------------------------------------------------------------

    def unconnected(self) -> list[tuple[Node, str]]:
        """(node, peer name) for every missing link between running, unpartitioned nodes."""
        missing: list[tuple[Node, str]] = []
        running = [n for n in self.nodes if n.node is not None]
        for member in running:
            assert member.node is not None
            for other in running:
                if other is member or (self.mesh is not None and self.mesh.cut(member, other)):
                    continue
                name = f"127.0.0.1:{self.peer_port(member, other)}"
                peers = member.node.peers
                if name not in peers.pools or not peers.is_up(name):  # unknown: seeded elsewhere
                    missing.append((member.node, name))
        return missing

    async def wait_connected(self) -> None:
        """Wait until every running node links to every other it is not partitioned from.

        Bound it with ``trio.fail_after``.
        """
        while missing := self.unconnected():
            await missing[0][0].peers.wait_changed()

    def partition(self, side_a: Side, side_b: Side, how: str = "reject") -> None:
        """Cut the links between two groups of nodes (needs ``fault_proxies=True``).

        ``how="reject"``: connects refused, requests across fail at once;
        ``how="drop"``: a blackhole, requests across time out.  See ``mesh``.
        """
        self._mesh().partition(side_a, side_b, how)

    def heal(self) -> None:
        """End every partition; links come back by the nodes' own reconnects."""
        self._mesh().heal()

    def _mesh(self) -> PeerMesh:
        if self.mesh is None:
            raise RuntimeError("partitions need open_cluster(..., fault_proxies=True)")
        return self.mesh

    # -- faults on nodes and datastores ----------------------------------------

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
        """Kill the member's redis-server or memcached (a memcached restarts empty)."""
        server = _server(member)
        await trio.to_thread.run_sync(server.stop)

    async def start_datastore(self, member: ClusterNode) -> None:
        server = _server(member)
        await trio.to_thread.run_sync(server.start)

    async def restore(self) -> None:
        """Undo every fault: datastores and nodes running, no partition, links up."""
        for member in self.nodes:
            server = member.redis or member.memcached
            if server is not None and not server.running:
                await self.start_datastore(member)
        for member in self.nodes:
            await self.start_node(member)
        if self.mesh is not None:
            self.mesh.heal()
        with trio.fail_after(STARTUP_TIMEOUT):
            await self.wait_connected()

    async def replicas(self, key: bytes | str) -> dict[str, bytes | None]:
        """What each rack's owner of ``key`` holds, read from its own datastore."""
        raw = key.encode() if isinstance(key, str) else key
        out: dict[str, bytes | None] = {}
        for dc, rack in dict.fromkeys((n.dc, n.rack) for n in self.nodes):
            out[f"{dc}/{rack}"] = await read_direct(self.owner(dc, rack, raw), raw)
        return out

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


def _server(member: ClusterNode) -> RedisServer | MemcachedServer:
    server = member.redis or member.memcached
    if server is None:
        raise RuntimeError(
            "only redis-server and memcached datastores can be stopped and started "
            "(datastore='redis' or 'memcached')"
        )
    return server


async def _start_datastores(
    members: list[ClusterNode], redis_exec: str | None, options: dict[str, str] | None
) -> None:
    for member in members:
        member.redis = RedisServer(binary=redis_exec, options=options)
        await trio.to_thread.run_sync(member.redis.start)


async def _start_memcacheds(members: list[ClusterNode]) -> None:
    for member in members:
        member.memcached = MemcachedServer()
        await trio.to_thread.run_sync(member.memcached.start)


async def _start(
    cluster: Cluster, members: list[ClusterNode], log: StartupLog, wait: bool, limit: float
) -> None:
    for member in members:
        try:
            await cluster.start_node(member)
        except Exception as exc:
            raise log.error(f"node {member.name} did not start", exc) from innermost(exc)
    if wait:
        try:
            with trio.fail_after(limit):
                await cluster.wait_connected()
        except trio.TooSlowError as exc:
            links = cluster.unconnected()
            missing = ", ".join(f"{node.config.dyn_listen}->{peer}" for node, peer in links)
            raise log.error(f"links still down after {limit:g}s ({missing})", exc) from exc


@asynccontextmanager
async def open_cluster(
    layout: Layout,
    *,
    datastore: str = "embedded",
    per_node: PerNode | None = None,
    wait_connected: bool = True,
    fault_proxies: bool = False,
    startup_timeout: float = STARTUP_TIMEOUT,
    redis_exec: str | None = None,
    redis_options: dict[str, str] | None = None,
    **config: Any,
) -> AsyncIterator[Cluster]:
    """Run ``layout`` (``{dc: {rack: nodes}}``) in-process; see the module docstring.

    ``config`` overrides NodeConfig fields on every node (e.g.
    ``read_consistency=Consistency.DC_QUORUM``, ``timeout=500``);
    ``per_node(member)`` returns overrides for one node (its certificate,
    say: see ``testing.tls``).  ``wait_connected=False`` yields as soon as
    every node started, for tests of links that must not come up.
    ``fault_proxies=True`` puts a fault proxy on every peer link, for
    ``Cluster.partition``.  ``redis_exec`` is the redis-server to run
    (default: the one on PATH), ``redis_options`` extra options for each
    (``{"appendonly": "yes"}`` to keep data across ``stop_datastore``).
    """
    if datastore not in DATASTORES:
        raise ValueError(f"datastore must be one of {', '.join(DATASTORES)}, not {datastore!r}")
    members = reserve(layout)
    failure: ClusterStartError | None = None
    startup = ExitStack()
    try:
        log = startup.enter_context(capture_logs())
        if datastore == "redis":
            try:
                await _start_datastores(members, redis_exec, redis_options)
            except Exception as exc:
                raise log.error("a redis-server did not start", exc) from innermost(exc)
        elif datastore == "memcached":
            try:
                await _start_memcacheds(members)
            except Exception as exc:
                raise log.error("a memcached did not start", exc) from innermost(exc)
        async with trio.open_nursery() as nursery:
            mesh = PeerMesh() if fault_proxies else None
            cluster = Cluster(members, nursery, mesh)
            try:
                if mesh is not None:
                    await mesh.open(nursery, members)
                configure(members, config, per_node, cluster.peer_port)
                await _start(cluster, members, log, wait_connected, startup_timeout)
            except Exception as exc:
                failure = exc if isinstance(exc, ClusterStartError) else None
                if failure is None:
                    failure = log.error("the cluster did not start", exc)
                nursery.cancel_scope.cancel()
            else:
                startup.close()
                try:
                    yield cluster
                finally:
                    nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
    finally:
        startup.close()
        for member in members:
            member.release()
            if member.redis is not None:
                member.redis.close()
            if member.memcached is not None:
                member.memcached.close()
