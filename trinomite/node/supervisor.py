"""The node supervisor: one nursery that owns every task of a node.

Theory of operation
-------------------
``serve_node(config, task_status=...)`` builds a ``Node`` and runs it::

    serve_node nursery (root)
    |-- DatastorePool.run            started first; ready once every
    |                                connection made its first attempt
    |-- handler nursery holder       one task per inbound peer connection
    |-- serve_peers                  accept loops on dyn_listen (if set)
    |-- PeerPools.run                one task per outgoing peer connection
    |-- ClientReactor.run            every client connection, one task
    `-- accept scope
        `-- serve_clients            one accept loop per client listener
            `-- client.tls.admit     client_tls: one short task per handshake

``task_status.started(node)`` is called only once the listeners are bound,
so ``node.client_address`` is the real address (listen ports may be 0).
``open_node`` is the ``async with`` form for embedding.  An embedder that
must know every port before any node starts (a cluster whose seeds name
each other's ports) binds the sockets itself and hands them over as
``ListenSockets``; the node adopts them (listen, non-blocking, closed on
exit) instead of binding ``listen``/``dyn_listen`` again, so no other
process can take a port between choosing it and serving on it.

Shutdown (``Node.shutdown``): close the listeners, mark the dispatcher
draining (new requests are refused with a clear error), cancel every idle
client's read, wait for clients with requests in flight to get their replies
(bounded by the grace period), then cancel the root nursery.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import attrs
import trio

from ..admin.api import NodeState
from ..admin.server import open_admin_listeners, serve_admin
from ..client.auth import Authenticator
from ..client.bounds import ClientBounds
from ..client.dispatch import Dispatcher
from ..client.local import Session
from ..client.memcache import McClientParser, McDispatcher
from ..client.reactor import ClientCounters, ClientReactor, serve_clients
from ..client.tls import admit as admit_client
from ..config.model import DataStore, HostPort, NodeConfig, UnixPath
from ..config.topology import seed_peer, topology_of
from ..datastore.gate import StateGate
from ..datastore.memcache import MemcachePool
from ..datastore.pool import DatastorePool
from ..datastore.sweep import Sweeper
from ..gossip.seeds import SeedList
from ..hints.replay import LocalOrPeers, serve_replay, serve_sync
from ..hints.store import DISK_HINTS, MEMORY_HINTS, HintStore
from ..net.links import Link, WriteHold
from ..net.sockets import (
    LeanSocketStream,
    adopt_listener,
    check_bound,
    open_tcp_listeners,
    open_unix_listener,
    peer_name,
)
from ..peering.coordinator import ClusterCounters, Coordinator
from ..peering.link import PeerConnection
from ..peering.memcache import McRouter
from ..peering.pools import PeerPools
from ..peering.server import PeerConnectionHandler, PeerServerCounters, serve_peers
from ..protocol.guard import CommandGuard
from ..protocol.memcache import MemcacheLimits
from ..protocol.requests import Limits
from ..ring.topology import PeerInfo, Topology, TopologyError
from ..stats.requests import RequestStats
from ..tls.peers import TlsState
from .admin import NodeAdmin
from .membership import Membership, start_membership

__all__ = ["ListenError", "ListenSockets", "Node", "open_node", "serve_node"]

log = logging.getLogger("trinomite.node")


class ListenError(OSError):
    """A listener could not be opened; the message names the config key and the address."""


@contextmanager
def _naming(key: str, address: HostPort | UnixPath) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if isinstance(exc, ListenError):
            raise
        raise ListenError(
            exc.errno, f"cannot listen on {address} ({key}): {exc.strerror or exc}"
        ) from None


@attrs.frozen
class ListenSockets:
    """Bound TCP sockets a node adopts instead of binding ``listen``/``dyn_listen``.

    Each must be bound to the configured address (any port when the
    configured port is 0); the node makes it listen and closes it on exit.
    """

    client: socket.socket | None = None
    peer: socket.socket | None = None

    @property
    def given(self) -> list[socket.socket]:
        return [sock for sock in (self.client, self.peer) if sock is not None]

    def close(self) -> None:
        for sock in self.given:
            sock.close()


class Node:
    """A running node.  Create it with ``serve_node`` or ``open_node``."""

    def __init__(self, config: NodeConfig, sockets: ListenSockets | None = None) -> None:
        memcache = config.data_store is DataStore.MEMCACHE
        if memcache:
            _check_memcache(config)
        self.config = config
        self._given = sockets or ListenSockets()
        _check_given(self._given, config)
        self.topology = _topology(config)
        #: Members join, leave and fail at run time (gossip, seed providers).
        dynamic = config.enable_gossip or config.dyn_seed_provider != "simple_provider"
        #: Gossip membership (``node.membership``), once dyn_listen is bound.
        self.membership: Membership | None = None
        #: The latest seed provider list's other nodes (they keep a pool).
        self._provided: list[PeerInfo] = []
        #: Certificates and keys in use (reloaded by SIGHUP and /tls/reload).
        self.tls = TlsState(config)
        self.pool = MemcachePool(config) if memcache else DatastorePool(config)
        others = [peer for peer in self.topology.peers if not peer.local]
        self.peers = PeerPools(config, others, self.topology.local, self.tls)
        #: One write hold for every link and every task that submits to them.
        self.writes = WriteHold()
        for link in self._links():
            link.hold = self.writes
        self.cluster_counters = ClusterCounters()
        #: Collects read repair's old tombstones from the datastore (``datastore.sweep``).
        self.sweeper = Sweeper(self.pool, self.cluster_counters, config.tombstone_grace)
        self.peer_counters = PeerServerCounters()
        self.request_stats = RequestStats()
        #: The levels new client connections get (REST /set_consistency).
        self.read_consistency = config.read_consistency
        self.write_consistency = config.write_consistency
        self.admin = NodeAdmin(self)
        self.gate = StateGate(self.pool, config.max_msgs, self.admin.state_changed)
        if config.enable_gossip:
            self.gate.set_state(NodeState.JOINING)  # NORMAL once gossip says it is safe
        #: Writes replicas missed, replayed when they are back (``trinomite.hints``).
        self.hints: HintStore | None = None
        if config.hinted_handoff and (dynamic or not self.topology.single_node):
            cap = config.hints_max_bytes or (DISK_HINTS if config.hints_dir else MEMORY_HINTS)
            self.hints = HintStore(
                config.hints_dir, window=config.max_hint_window / 1000, max_bytes=cap
            )
        self.coordinator = Coordinator(
            self.topology, self.gate, self.peers, config, self.cluster_counters, self.hints
        )
        cluster = dynamic or not self.topology.single_node
        self.dispatcher: Dispatcher | McDispatcher
        if memcache:
            self.coordinator.read_repairs = False  # versions are Redis scripts
            self.dispatcher = McDispatcher(
                self.pool,
                McRouter(self.coordinator),
                self.gate,
                self.request_stats,
                cluster=cluster,
            )
        else:
            self.dispatcher = Dispatcher(
                self.pool,
                self.coordinator,
                self.gate,
                self.request_stats,
                cluster=cluster,
                guard=CommandGuard(config.allowed_commands),
            )
        #: Client credentials (``client.auth``); None when clients need not AUTH.
        self.authenticator: Authenticator | None = None
        if config.requirepass or config.users:
            self.authenticator = Authenticator(config.requirepass, config.users)
        self.peers.on_peer_change = self._peer_changed
        self.peers.on_new_connection = self._new_peer_connection
        for link in self.pool.connections:
            link.on_state_change = self.admin.link_changed
        self.counters = ClientCounters()
        self.limits = Limits(
            max_bulk_len=config.max_bulk_len,
            max_multibulk_len=config.max_multibulk_len,
            max_inline_len=config.max_inline_len,
        )
        self.clients = ClientReactor(
            self.dispatcher,
            self.request_stats,
            self.limits,
            config.max_client_pipeline,
            self.counters,
            self._make_session,
            ClientBounds.from_config(config),
            make_parser=functools.partial(McClientParser, _memcache_limits(config))
            if memcache
            else None,
        )
        self.clients.hold = self.writes
        self.client_address: HostPort | UnixPath = config.listen
        #: The bound peer (dyn_listen) address, once listening; None without dyn_listen.
        self.peer_address: HostPort | None = None
        #: The bound admin/stats (stats_listen) address, once listening.
        self.admin_address: HostPort | None = None
        self._listeners: list[socket.socket] = []
        self._peer_listeners: list[socket.socket] = []
        self._admin_listeners: list[trio.SocketListener] = []
        self._bound = False
        self._accept_scope = trio.CancelScope()
        self._root: trio.Nursery | None = None
        self._shutting_down = False

    # -- lifecycle ---------------------------------------------------------

    async def _run(self, task_status: trio.TaskStatus[Node]) -> None:
        try:
            await self.bind()
            await self._serve(task_status)
        finally:
            self._close_listeners()

    async def bind(self) -> None:
        """Open every listener (admin, peer, client); done before any task starts.

        Idempotent.  A listener that cannot be opened raises one
        ``ListenError`` naming the config key and the address; whatever was
        opened before it is closed again.
        """
        if self._bound:
            return
        config = self.config
        try:
            stats = config.stats_listen
            with _naming("stats_listen", stats):
                self._admin_listeners = await open_admin_listeners(stats.host, stats.port)
            if config.dyn_listen is not None:
                with _naming("dyn_listen", config.dyn_listen):
                    self._peer_listeners = await _listen_on(
                        config.dyn_listen, self._given.peer, config.backlog
                    )
            with _naming("listen", config.listen):
                self._listeners = await _listen_on(
                    config.listen, self._given.client, config.backlog
                )
        except BaseException:
            self._close_listeners()
            raise
        self._bound = True

    def _close_listeners(self) -> None:
        for listener in self._listeners + self._peer_listeners + self._given.given:
            if listener.fileno() != -1:
                trio.lowlevel.notify_closing(listener)
                listener.close()
        for admin in self._admin_listeners:
            admin.socket.close()
        self._admin_listeners = []

    async def _serve(self, task_status: trio.TaskStatus[Node]) -> None:
        try:
            await self._serve_tasks(task_status)
        finally:
            if self.hints is not None:
                self.hints.close()

    async def _serve_tasks(self, task_status: trio.TaskStatus[Node]) -> None:
        memcache = self.config.data_store is DataStore.MEMCACHE
        async with trio.open_nursery() as root:
            self._root = root
            await root.start(self.pool.run)
            await root.start(self.gate.run)
            handlers: trio.Nursery = await root.start(_hold_nursery)
            stats = self.config.stats_listen
            host, port = await root.start(
                functools.partial(
                    serve_admin,
                    self.admin,
                    stats.host,
                    stats.port,
                    token=self.config.admin_token,
                    feed_interval=self.config.feed_interval / 1000,
                    listeners=self._admin_listeners,
                )
            )
            self._admin_listeners = []  # serve_admin owns (and closes) them now
            self.admin_address = HostPort(host, port)
            log.info("node serving admin/stats on %s", self.admin_address)
            dyn_listen = self.config.dyn_listen
            if dyn_listen is not None:
                bound = _bound_address(dyn_listen, self._peer_listeners[0])
                assert isinstance(bound, HostPort)
                self.peer_address = bound
                self.coordinator.topology = self.topology = self.topology.with_local_address(
                    bound.host, bound.port
                )
                await root.start(serve_peers, self._peer_listeners, self._peer_handler, handlers)
                log.info("node listening for peers on %s", bound)
            await root.start(self.peers.run)
            if self.config.enable_gossip:
                if self.peer_address is None:
                    log.warning("%s: enable_gossip needs dyn_listen; no gossip", self.config.source)
                else:
                    self.membership = start_membership(self, self.peer_address)
                    await root.start(self.membership.run)
            if self.config.dyn_seed_provider != "simple_provider":
                # Imported here: dns_provider's resolver (dnspython) costs a few
                # MiB and a quarter second that other nodes need not pay.
                from ..gossip.providers import poll_seeds, provider_from_config

                await root.start(poll_seeds, provider_from_config(self.config), self._seeds)
            if self.hints is not None:
                self.hints.open_existing()  # hints kept before a restart
                rate = self.config.hint_replay_rate
                senders = LocalOrPeers(self.peers, self.pool)
                await root.start(serve_replay, self.hints, senders, rate)
                interval = self.config.hints_sync_interval / 1000
                await root.start(serve_sync, self.hints, interval)
            if self.dispatcher.cluster and not memcache:  # only Redis replicas carry versions
                await root.start(self.sweeper.run)
            await root.start(self.clients.run)
            await root.start(self.clients.watch)
            self.client_address = _bound_address(self.config.listen, self._listeners[0])
            await root.start(self._accept)
            log.info("node listening for clients on %s", self.client_address)
            task_status.started(self)

    async def _accept(self, *, task_status: trio.TaskStatus[None]) -> None:
        with self._accept_scope:
            secure = None
            if self.tls.client is not None:
                secure = functools.partial(admit_client, state=self.tls, reactor=self.clients)
            await serve_clients(
                self._listeners,
                self.clients,
                self.config.client_connections,
                secure=secure,
                task_status=task_status,
            )

    def _links(self) -> list[Link]:
        peer_links = [c for pool in self.peers.pools.values() for c in pool.connections]
        return [*self.pool.connections, *peer_links]

    def _peer_handler(self, stream: LeanSocketStream) -> PeerConnectionHandler:
        handler = PeerConnectionHandler(
            stream,
            self.gate,
            self.coordinator,
            self.peer_counters,
            self.config.timeout / 1000,
            self.writes,
            self.tls,
        )
        if self.membership is not None:
            handler.gossip = self.membership.inbound
        handler.memcache = self.config.data_store is DataStore.MEMCACHE
        return handler

    def _new_peer_connection(self, connection: PeerConnection) -> None:
        connection.hold = self.writes
        if self.membership is not None:
            self.membership.attach(connection)

    def set_topology(self, others: list[PeerInfo]) -> None:
        """Swap in the cluster of this node and ``others`` (membership changed)."""
        current = self.topology
        wanted = {p.name: p for p in [*others, *self._provided] if p.name != current.local.name}
        try:
            topology = Topology.from_peers(
                current.local, others, current.hash_name, current.hash_tag
            )
        except TopologyError as exc:
            log.warning("membership: the new view cannot be routed (%s); kept the old one", exc)
            return
        opened, closed = self.peers.sync(list(wanted.values()))
        self.topology = self.coordinator.topology = topology
        for name in opened:
            self.admin.events.publish("peer_added", peer=name)
        for name in closed:
            self.admin.events.publish("peer_removed", peer=name)
        if opened or closed:
            log.info("membership: %d nodes (+%s -%s)", len(topology.peers), opened, closed)

    def _seeds(self, seeds: SeedList) -> None:
        """A seed provider's new list: gossip contacts them; without gossip they are the ring."""
        local = self.topology.local.name
        self._provided = [seed_peer(s) for s in seeds.seeds if f"{s.host}:{s.port}" != local]
        if self.membership is not None:
            self.membership.state.add_seeds(p.name for p in self._provided)
            others = [p for p in self.topology.peers if not p.local]
            self.set_topology(others)  # keeps the view's ring, opens pools for new seeds
        else:
            self.set_topology(list(self._provided))

    def _peer_changed(self, name: str, up: bool) -> None:
        self.admin.events.publish("peer_up" if up else "peer_down", peer=name)
        if self.membership is not None:
            self.membership.state.set_reachable(name, up)
            self.membership.poke()  # its conviction time may be sooner now
        if self.hints is not None:
            if up:
                self.hints.peer_up(name)
            else:
                self.hints.peer_down(name)

    def _make_session(self, sock: socket.socket, client_id: int) -> Session:
        session = Session.open(client_id, peer_name(sock), self.authenticator)
        session.read_consistency = self.read_consistency
        session.write_consistency = self.write_consistency
        return session

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let in-flight requests finish within ``grace`` s, then stop.

        Idempotent.  Returns once the node's tasks are being cancelled;
        ``serve_node`` returns right after.
        """
        if grace is None:
            grace = self.config.shutdown_grace / 1000
        if self._shutting_down:
            return
        self._shutting_down = True
        log.info("node shutting down (grace %.1fs)", grace)
        self._accept_scope.cancel()
        self._close_listeners()
        self.dispatcher.draining = True
        self.clients.stop_reading()
        with trio.move_on_after(grace):
            await self.clients.wait_empty()
        if self._root is not None:
            self._root.cancel_scope.cancel()

    def stop(self) -> None:
        """Cancel every task of the node now, without a grace period."""
        if self._root is not None:
            self._root.cancel_scope.cancel()


def _topology(config: NodeConfig) -> Topology:
    """The cluster as configured; a lone node without tokens owns the whole ring."""
    if not config.tokens and not config.dyn_seeds:
        config = attrs.evolve(config, tokens=(0,))
    try:
        return topology_of(config)
    except TopologyError as exc:
        raise ValueError(f"{config.source}: {exc}") from None


async def _hold_nursery(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


def _check_memcache(config: NodeConfig) -> None:
    """What a memcached node (``data_store: 1``) cannot do, said before it starts."""
    if config.datastore.kind == "embedded":
        raise ValueError(
            f"{config.source}: data_store: 1 (memcached) needs a real memcached in "
            "servers: (memcached 1.6 or newer); the embedded datastore speaks Redis only"
        )
    if config.requirepass or config.users:
        raise ValueError(
            f"{config.source}: requirepass/users need data_store: 0; memcached's ASCII "
            "protocol has no AUTH"
        )


def _memcache_limits(config: NodeConfig) -> MemcacheLimits:
    return MemcacheLimits(max_item_size=config.max_item_size)


def _check_given(sockets: ListenSockets, config: NodeConfig) -> None:
    for sock, address, key in (
        (sockets.client, config.listen, "listen"),
        (sockets.peer, config.dyn_listen, "dyn_listen"),
    ):
        if sock is None:
            continue
        if not isinstance(address, HostPort):
            raise ValueError(f"a bound TCP socket was given for {key}: {address or 'unset'}")
        check_bound(sock, address.host, address.port)


async def _listen_on(
    address: HostPort | UnixPath, given: socket.socket | None, backlog: int
) -> list[socket.socket]:
    if given is not None:  # checked against the config by Node()
        return [adopt_listener(given, backlog)]
    if isinstance(address, UnixPath):
        return [open_unix_listener(address.path, backlog)]
    return await open_tcp_listeners(address.host, address.port, backlog)


def _bound_address(configured: HostPort | UnixPath, listener: socket.socket) -> HostPort | UnixPath:
    if isinstance(configured, UnixPath):
        return configured
    host, port = listener.getsockname()[:2]
    return HostPort(host, port)


async def serve_node(
    config: NodeConfig,
    *,
    sockets: ListenSockets | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a node until cancelled or shut down; ``started(node)`` once listening.

    Error handling: failures of one client are contained in that client's
    task; failing to bind a listener raises out of here (the node never
    started).  Resource handling: every socket and task is closed when this
    returns.
    """
    node = _build(config, sockets)
    await node.bind()  # before any task: a bind failure is one plain ListenError
    await node._run(task_status)


def _build(config: NodeConfig, sockets: ListenSockets | None) -> Node:
    """A node, or the config's error; given sockets are closed either way."""
    try:
        return Node(config, sockets)
    except BaseException:
        if sockets is not None:
            sockets.close()
        raise


@asynccontextmanager
async def open_node(
    config: NodeConfig, *, sockets: ListenSockets | None = None
) -> AsyncIterator[Node]:
    """``async with open_node(cfg) as node:`` runs a node inside the caller's Trio program.

    Leaving the block shuts the node down immediately (no grace period);
    call ``await node.shutdown()`` first for a graceful drain.  A config the
    node cannot run raises ``ValueError`` here, before anything starts.
    """
    node = _build(config, sockets)
    await node.bind()  # outside the nursery: a bind failure is one plain ListenError
    async with trio.open_nursery() as nursery:
        await nursery.start(node._run)
        try:
            yield node
        finally:
            node.stop()
