"""Every peer's connections: one ``PeerPool`` per other node, supervised as one task.

Theory of operation
-------------------
``PeerPools`` holds a ``PeerPool`` of ``local_peer_connections`` (same DC)
or ``remote_peer_connections`` (other DC) ``PeerConnection``s for every
other node (``peering.link``), and answers the routing layer's one question
about the outside world, ``is_up(name)``: a connection is up, an operator
did not mark the peer down.  ``generation`` changes whenever that answer may
change, so plan caches know when to forget.

A client is pinned to its "home" connection of a pool (``client_id`` modulo
the pool size), so one client's requests to a peer stay in order; another
connection is used only while the home one is down.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import trio

from ..config.model import DataStore, NodeConfig
from ..net.links import ConnState, Link
from ..net.slots import ReplySink
from ..protocol.peer import MessageType
from ..ring.topology import PeerInfo
from ..tls.peers import TlsState
from .batches import BatchLeg
from .link import NOT_CONNECTED, PeerConnection, PeerLeg

__all__ = ["PeerConnection", "PeerLeg", "PeerPool", "PeerPools"]


class PeerPool:
    """The connections to one peer."""

    def __init__(self, connections: list[PeerConnection]) -> None:
        self.connections = connections
        self.peer = connections[0].peer

    @property
    def up(self) -> bool:
        return any(c.state is ConnState.UP for c in self.connections)

    def submit(
        self,
        client_id: int,
        kind: MessageType,
        payload: bytes,
        sink: ReplySink,
        deadline: float,
        flags: int = 0,
    ) -> bool:
        """Send on the client's home connection, or any that is up; False if none can."""
        connections = self.connections
        home = connections[client_id % len(connections)]
        if home.state is not ConnState.UP:
            home = next((c for c in connections if c.state is ConnState.UP), home)
        return home.submit(kind, payload, sink, deadline, flags)

    def submit_many(self, client_id: int, legs: list[PeerLeg]) -> bool:
        """``submit`` for several requests, as one write on one connection."""
        connections = self.connections
        home = connections[client_id % len(connections)]
        if home.state is not ConnState.UP:
            home = next((c for c in connections if c.state is ConnState.UP), home)
        return home.submit_many(legs)


class PeerPools:
    """Every peer's pool, by peer name; started and supervised as one task.

    Membership may change at run time (gossip, seed providers): ``sync``
    opens pools for new peers, in the nursery ``run`` holds, and closes the
    pools of peers that left (each connection runs in its own cancel scope;
    what was in flight on it fails with ``Peer Node is not connected``).
    """

    def __init__(
        self,
        config: NodeConfig,
        peers: list[PeerInfo],
        local: PeerInfo,
        tls: TlsState | None = None,
    ) -> None:
        """``tls``: the node's TLS state; links it secures (is_secure) run over TLS."""
        self._config = config
        self._local = local
        self._tls = tls
        self._ids = itertools.count(1)
        self._changed = trio.Event()
        #: Peers an operator marked down (REST /peer/down): routed around.
        self.admin_down: set[str] = set()
        #: Peers the failure detector (gossip) holds down: routed around too.
        self.gossip_down: set[str] = set()
        #: Bumped whenever ``is_up`` may answer differently (for plan caches).
        self.generation = 0
        #: Called with (peer name, up) when a peer becomes reachable or not.
        self.on_peer_change: Callable[[str, bool], None] | None = None
        #: Called with each connection opened later (``sync``), before it runs.
        self.on_new_connection: Callable[[PeerConnection], None] | None = None
        self._was_up: dict[str, bool] = {}
        self.pools: dict[str, PeerPool] = {}
        self._scopes: dict[str, list[trio.CancelScope]] = {}
        self._nursery: trio.Nursery | None = None
        for peer in peers:
            self.pools[peer.name] = self._pool(peer)

    def _pool(self, peer: PeerInfo) -> PeerPool:
        config, local, tls = self._config, self._local, self._tls
        same_dc = peer.dc == local.dc
        secured = tls is not None and tls.secured(local, peer)
        count = config.local_peer_connections if same_dc else config.remote_peer_connections
        pool = PeerPool(
            [
                PeerConnection(
                    peer=peer,
                    index=i,
                    same_dc=same_dc,
                    ids=self._ids,
                    timeout=config.timeout / 1000,
                    # Dynomite hard-codes 10 s for peers; trinomite uses the
                    # same configurable cap as for the datastore.
                    max_backoff=config.server_retry_timeout / 1000,
                    preconnect=config.preconnect,
                    rate=0 if same_dc else config.conn_msg_rate,
                    tls=tls if secured else None,
                )
                for i in range(count)
            ]
        )
        memcache = config.data_store is DataStore.MEMCACHE
        for connection in pool.connections:
            connection.on_state_change = self._state_changed
            connection.memcache = memcache
        return pool

    def _state_changed(self, connection: Link) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = trio.Event()
        assert isinstance(connection, PeerConnection)
        name = connection.peer.name
        pool = self.pools.get(name)
        if pool is None or connection not in pool.connections:
            return  # a closed pool's connection winding down
        up = pool.up
        if self._was_up.get(name, False) != up:
            self._was_up[name] = up
            if self.on_peer_change is not None:
                self.on_peer_change(name, up)

    async def wait_changed(self) -> None:
        """Wait until any peer connection changes state (up, down, ...)."""
        await self._changed.wait()

    def __getitem__(self, name: str) -> PeerPool:
        return self.pools[name]

    def set_admin_down(self, name: str, down: bool) -> None:
        """An operator's REST /peer/down (True) or /peer/up (False)."""
        if down:
            self.admin_down.add(name)
        else:
            self.admin_down.discard(name)
        self.generation += 1

    def set_gossip_down(self, names: set[str]) -> None:
        """The peers the failure detector now holds down."""
        if names != self.gossip_down:
            self.gossip_down = set(names)
            self.generation += 1

    def _refused(self, name: str) -> bool:
        return name in self.admin_down or name in self.gossip_down

    def is_up(self, name: str) -> bool:
        pool = self.pools.get(name)
        return pool is not None and pool.up and not self._refused(name)

    def sync(self, peers: list[PeerInfo]) -> tuple[list[str], list[str]]:
        """Have a pool for exactly ``peers`` (by name): (opened, closed) names."""
        wanted = {peer.name: peer for peer in peers}
        closed = [name for name in self.pools if name not in wanted]
        for name in closed:
            pool = self.pools.pop(name)
            for scope in self._scopes.pop(name, []):
                scope.cancel()
            for connection in pool.connections:
                connection.close_for_good()
            self._was_up.pop(name, None)
            self.admin_down.discard(name)
            self.gossip_down.discard(name)
        opened = [name for name in wanted if name not in self.pools]
        for name in opened:
            pool = self.pools[name] = self._pool(wanted[name])
            for connection in pool.connections:
                if self.on_new_connection is not None:
                    self.on_new_connection(connection)
                if self._nursery is not None:
                    self._nursery.start_soon(self._run_one, name, connection)
        if opened or closed:
            self.generation += 1
        return opened, closed

    async def _run_one(self, name: str, connection: PeerConnection) -> None:
        scope = trio.CancelScope()
        self._scopes.setdefault(name, []).append(scope)
        with scope:
            await connection.run()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every connection; ready once each made its first attempt (or is lazy)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for name, pool in self.pools.items():
                for connection in pool.connections:
                    nursery.start_soon(self._run_one, name, connection)
            task_status.started()
            await trio.sleep_forever()  # pools opened later (``sync``) run here too

    def send(
        self,
        name: str,
        client_id: int,
        kind: MessageType,
        payload: bytes,
        sink: ReplySink,
        deadline: float,
        flags: int = 0,
    ) -> None:
        """Send to a peer; an unreachable peer answers ``Peer Node is not connected`` now."""
        pool = self.pools.get(name)
        if (
            pool is None
            or self._refused(name)
            or not pool.submit(client_id, kind, payload, sink, deadline, flags)
        ):
            sink.set(NOT_CONNECTED)

    def send_many(self, name: str, client_id: int, legs: list[PeerLeg]) -> None:
        """``send`` for several requests to one peer, in order, as one write."""
        pool = self.pools.get(name)
        if len(legs) == 1 and not isinstance(legs[0][2], BatchLeg):
            kind, payload, sink, deadline, flags = legs[0]
            self.send(name, client_id, kind, payload, sink, deadline, flags)
        elif pool is None or self._refused(name) or not pool.submit_many(client_id, legs):
            for leg in legs:
                leg[2].set(NOT_CONNECTED)
