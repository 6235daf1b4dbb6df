"""The nodes of an in-process test cluster: their places, ports, sockets and configs.

Theory of operation
-------------------
``reserve(layout)`` makes one ``ClusterNode`` per node of ``{dc: {rack:
count}}`` with evenly spaced tokens per rack, and binds its client and peer
sockets (port 0) at once.  They stay bound, and listening, until the node
adopts them as ``ListenSockets``: no other process, and not another node's
outgoing peer connect (which takes an ephemeral port too), can take a port
between choosing it and serving on it, and a node that dials a peer that
has not started yet waits in that peer's backlog instead of being refused.
A restarted node binds its old ports again (``take_sockets``), retrying for
a bounded time.

``configure(members, ...)`` then writes each node's ``NodeConfig``: the
others as seeds, at the address ``peer_port(observer, other)`` gives (the
other's own peer port, or a fault proxy in front of it: see ``mesh``), an
ephemeral admin port, and the caller's overrides.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio
from redis import Redis

from ..config.model import DataStore, DatastoreSpec, HostPort, NodeConfig, Seed
from ..node.supervisor import ListenSockets, Node
from .memcached_server import MemcachedServer
from .redis_server import RedisServer

__all__ = ["ClusterNode", "Layout", "PerNode", "configure", "even_tokens", "reserve"]

Layout = Mapping[str, Mapping[str, int]]
RING = 1 << 32
HOST = "127.0.0.1"
#: Backlog of a node's sockets between reserving them and the node adopting them.
START_BACKLOG = 128
#: How long a restarted node may wait for its old ports to be free again.
REBIND_TIMEOUT = 5.0


def bind_loopback(port: int = 0) -> socket.socket:
    """A TCP socket bound to 127.0.0.1:``port`` (not listening yet)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
    except OSError:
        sock.close()
        raise
    return sock


def _reserve_sockets() -> tuple[ListenSockets, tuple[int, int]]:
    """A node's client and peer sockets, bound and listening on fresh ports, and those ports."""
    client = bind_loopback()
    try:
        peer = bind_loopback()
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
                return bind_loopback(port)
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
    #: The node's memcached (``open_cluster(..., datastore="memcached")``).
    memcached: MemcachedServer | None = None
    config: NodeConfig | None = None
    node: Node | None = None
    _scope: trio.CancelScope | None = None
    _stopped: trio.Event | None = None

    @property
    def name(self) -> str:
        """``dc/rack/index``: how the cluster's methods and errors name this node."""
        return f"{self.dc}/{self.rack}/{self.index}"

    @property
    def host(self) -> str:
        return HOST

    @property
    def address(self) -> str:
        """The client address, ``127.0.0.1:port``, for any Redis client."""
        return f"{HOST}:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.node is not None

    @property
    def admin_url(self) -> str:
        """``http://host:port`` of the node's admin/stats server (while it runs)."""
        node = self.node
        if node is None or node.admin_address is None:
            raise RuntimeError(f"{self.name} is not running: it has no admin address")
        return f"http://{node.admin_address}"

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
        """A redis-py client for this node (blocking: from a Trio task, use it in a thread)."""
        kwargs.setdefault("socket_timeout", 30)
        return Redis(host=HOST, port=self.client_port, **kwargs)

    def memcache_client(self, direct: bool = False, **kwargs: Any) -> Any:
        """A pymemcache client for this node, or (``direct``) for its own memcached."""
        from pymemcache.client.base import Client

        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("default_noreply", False)  # say what the node answered
        if not direct:
            return Client((HOST, self.client_port), **kwargs)
        if self.memcached is None:
            raise RuntimeError("this node has no memcached; use datastore='memcached'")
        return Client((self.memcached.host, self.memcached.port), **kwargs)

    def datastore(self, **kwargs: Any) -> Redis:
        """A redis-py client straight to this node's redis-server."""
        if self.redis is None:
            raise RuntimeError("embedded datastores have no address; use datastore='redis'")
        return Redis(host=self.redis.host, port=self.redis.port, **kwargs)


PerNode = Callable[[ClusterNode], Mapping[str, Any]]
PeerPort = Callable[[ClusterNode, ClusterNode], int]


def reserve(layout: Layout) -> list[ClusterNode]:
    """One member per node of ``layout``, its sockets bound and listening (see the module doc)."""
    members: list[ClusterNode] = []
    try:
        for dc, racks in layout.items():
            for rack, count in racks.items():
                if count < 1:
                    raise ValueError(f"rack {dc}/{rack} needs at least one node, not {count}")
                for index, token in enumerate(even_tokens(count)):
                    sockets, ports = _reserve_sockets()
                    members.append(ClusterNode(dc, rack, index, token, *ports, sockets))
    except BaseException:
        for member in members:
            member.release()
        raise
    if not members:
        raise ValueError("a cluster layout needs at least one node: {dc: {rack: count}}")
    return members


def configure(
    members: list[ClusterNode],
    overrides: Mapping[str, Any],
    per_node: PerNode | None,
    peer_port: PeerPort,
) -> None:
    """Write every member's ``NodeConfig`` (its datastore: its redis-server, or embedded)."""
    for member in members:
        extra: dict[str, Any] = {}
        if member.redis is not None:
            spec = DatastoreSpec.tcp(member.redis.host, member.redis.port)
        elif member.memcached is not None:
            spec = DatastoreSpec.tcp(member.memcached.host, member.memcached.port)
            extra["data_store"] = DataStore.MEMCACHE
        else:
            spec = DatastoreSpec.embedded()
        seeds = tuple(
            Seed(HOST, peer_port(member, other), other.rack, other.dc, (other.token,))
            for other in members
            if other is not member
        )
        member.config = NodeConfig(
            listen=HostPort(HOST, member.client_port),
            dyn_listen=HostPort(HOST, member.peer_port),
            servers=(spec,),
            datacenter=member.dc,
            rack=member.rack,
            tokens=(member.token,),
            dyn_seeds=seeds,
            **{"stats_listen": HostPort(HOST, 0), **extra, **overrides},
        )
        if per_node is not None:
            member.config = attrs.evolve(member.config, **per_node(member))
