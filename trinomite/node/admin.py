"""NodeAdmin: the admin interface of one running node (reads, controls, events).

Theory of operation
-------------------
The admin server and the status feed only see ``AdminApi``; this module
implements it over a live ``Node``.  Reads gather values from the node's
own counters and histograms when asked (``values()``), and the views come
from the one metric table (``stats.metrics``).  Controls change the node's
runtime knobs:

    consistency      the levels *new* client connections get (as Dynomite;
                     existing connections keep theirs, see docs/admin.md)
    state            the StateGate (STANDBY / WRITES_ONLY / RESUMING / NORMAL)
    timeout factor   every datastore and peer timeout, x1..x10
    peer up/down     an operator's override of a peer's reachability;
                     reset drops and reconnects its links
    log level        the ``trinomite`` logger, Dynomite verbosity 0..11

Events go to every subscriber through a bounded channel each
(``EventHub``); a subscriber that does not keep up loses events (counted),
it never slows the node.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Protocol

import trio

from .._version import __version__
from ..admin.api import NodeState, PeerAction
from ..client.auth import Authenticator
from ..client.dispatch import Dispatcher
from ..client.memcache import McDispatcher
from ..client.reactor import ClientCounters, ClientReactor
from ..config.model import Consistency, DataStore, HostPort, NodeConfig, UnixPath
from ..datastore.gate import SETTABLE_STATES, StateGate
from ..datastore.pool import DatastorePool
from ..hints.store import HintStore
from ..logs import LEVELS, python_level
from ..net.links import ConnState, Link
from ..peering.coordinator import ClusterCounters, Coordinator
from ..peering.pools import PeerPools
from ..peering.server import PeerServerCounters
from ..ring.topology import Topology
from ..stats.histogram import Histogram
from ..stats.metrics import info_json, prometheus
from ..stats.requests import RequestStats
from ..tls.peers import TlsState
from .membership import Membership, gossip_info, gossip_metrics, member_counts
from .readings import hint_totals, hints_per_peer, open_fds, peer_hint_row, rss_bytes, trio_tasks

__all__ = ["AdminTarget", "EventHub", "NodeAdmin"]

#: ``data_store`` as /info, /metrics (a label) and the feed name it.
_STORE_NAMES = {DataStore.REDIS: "redis", DataStore.MEMCACHE: "memcached"}

EVENT_QUEUE = 256


class EventHub:
    """Fan-out of node events to bounded subscriber channels."""

    def __init__(self) -> None:
        self._subscribers: list[trio.MemorySendChannel[dict[str, Any]]] = []
        self.dropped = 0

    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        send, receive = trio.open_memory_channel[dict[str, Any]](EVENT_QUEUE)
        self._subscribers.append(send)
        return receive

    def publish(self, event: str, **fields: Any) -> None:
        message = {"event": event, "ts": time.time(), **fields}
        alive = []
        for channel in self._subscribers:
            try:
                channel.send_nowait(message)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                continue  # the subscriber went away
            alive.append(channel)
        self._subscribers = alive


class AdminTarget(Protocol):
    """The parts of a running node the admin interface reads and controls (``Node``)."""

    config: NodeConfig
    topology: Topology
    client_address: HostPort | UnixPath
    #: The levels new client connections get (REST /set_consistency).
    read_consistency: Consistency
    write_consistency: Consistency
    pool: DatastorePool
    peers: PeerPools
    gate: StateGate
    dispatcher: Dispatcher | McDispatcher
    coordinator: Coordinator
    request_stats: RequestStats
    counters: ClientCounters
    clients: ClientReactor
    hints: HintStore | None
    authenticator: Authenticator | None
    cluster_counters: ClusterCounters
    peer_counters: PeerServerCounters
    tls: TlsState
    membership: Membership | None


class NodeAdmin:
    """``AdminApi`` for one node."""

    def __init__(self, node: AdminTarget) -> None:
        self.node = node
        self.events = EventHub()
        self.started = time.time()
        self.stats_reads = 0
        self.factor = 1
        self.repairs = node.config.read_repairs_enabled
        self._logger = logging.getLogger("trinomite")
        self._last = (time.monotonic(), 0)

    # -- values ---------------------------------------------------------------

    def values(self) -> dict[str, float]:
        node = self.node
        stats: RequestStats = node.request_stats
        reads, writes = stats.totals()
        latency = stats.latency
        datastores = node.pool.connections
        server_latency = _merged(c.latency for c in datastores)
        peers = [c for pool in node.peers.pools.values() for c in pool.connections]
        near = [c for c in peers if c.same_dc]
        far = [c for c in peers if not c.same_dc]
        near_latency = _merged(c.latency for c in near)
        far_latency = _merged(c.latency for c in far)
        cluster = node.cluster_counters
        clients = node.counters
        inbound = node.peer_counters
        values: dict[str, float] = {
            "uptime": int(time.time() - self.started),
            "timestamp": int(time.time()),
            "latency_max": latency.max,
            "latency_999th": latency.percentile(0.999),
            "latency_99th": latency.percentile(0.99),
            "latency_95th": latency.percentile(0.95),
            "latency_mean": round(latency.mean, 1),
            "average_cross_region_rtt": round(far_latency.mean, 1),
            "99_cross_region_rtt": far_latency.percentile(0.99),
            "average_cross_zone_latency": round(near_latency.mean, 1),
            "99_cross_zone_latency": near_latency.percentile(0.99),
            "average_server_latency": round(server_latency.mean, 1),
            "99_server_latency": server_latency.percentile(0.99),
            "server_in_queue_99": sum(c.inflight for c in datastores),
            "server_out_queue_99": sum(len(c._outbox) for c in datastores),
            "peer_in_queue_99": sum(c.inflight for c in near),
            "peer_out_queue_99": sum(len(c._outbox) for c in near),
            "remote_peer_in_queue_99": sum(c.inflight for c in far),
            "remote_peer_out_queue_99": sum(len(c._outbox) for c in far),
            "dyn_memory": rss_bytes(),
            "open_fds": open_fds(),
            "trio_tasks": trio_tasks(),
            "client_eof": clients.client_eof,
            "client_err": clients.client_err,
            "client_connections": clients.client_connections,
            "client_read_requests": reads,
            "client_write_requests": writes,
            "client_non_quorum_w_responses": cluster.client_non_quorum_w_responses,
            "client_non_quorum_r_responses": cluster.client_non_quorum_r_responses,
            "dnode_client_eof": inbound.dnode_client_eof,
            "dnode_client_err": inbound.dnode_client_err,
            "dnode_client_connections": inbound.dnode_client_connections,
            "peer_dropped_requests": sum(c.dropped for c in peers),
            "peer_timedout_requests": sum(c.timeouts for c in near),
            "remote_peer_dropped_requests": cluster.remote_peer_dropped_requests,
            "remote_peer_timedout_requests": sum(c.timeouts for c in far),
            "remote_peer_failover_requests": cluster.remote_peer_failover_requests,
            "peer_err": sum(c.errors for c in peers),
            "peer_connections": sum(1 for c in peers if c.state is ConnState.UP),
            "peer_forward_error": cluster.peer_forward_error,
            "peer_requests": sum(c.requests for c in peers),
            "peer_request_bytes": sum(c.request_bytes for c in peers),
            "peer_responses": sum(c.responses for c in peers),
            "peer_response_bytes": sum(c.response_bytes for c in peers),
            "peer_in_queue": sum(c.inflight for c in near),
            "remote_peer_in_queue": sum(c.inflight for c in far),
            "peer_out_queue": sum(len(c._outbox) for c in near),
            "remote_peer_out_queue": sum(len(c._outbox) for c in far),
            "peer_mismatch_requests": sum(c.mismatches for c in peers),
            "tls_handshake_failures": sum(c.tls_handshake_failures for c in peers)
            + sum(node.tls.inbound_failures.values()),
            "client_tls_handshake_failures": node.tls.client_handshake_failures,
            **hint_totals(node.hints),
            "client_auth_failures": (
                node.authenticator.failures if node.authenticator is not None else 0
            ),
            "client_read_timeouts": clients.client_read_timeouts,
            "client_idle_timeouts": clients.client_idle_timeouts,
            "client_output_limit_closes": clients.client_output_limit_closes,
            "client_memory_evictions": clients.client_memory_evictions,
            "client_buffered_bytes": node.clients.held,
            "fragments": cluster.fragments,
            "stats_count": self.stats_reads,
            "read_failover_requests": cluster.read_failover_requests,
            "forwarded_requests": cluster.forwarded_requests,
            "read_repairs": cluster.read_repairs,
            "tombstones_collected": cluster.tombstones_collected,
            "tombstone_sweeps": cluster.tombstone_sweeps,
            "state_refused_requests": node.gate.refused,
            "state_held_writes": node.gate.held,
            "server_err": sum(c.errors for c in datastores),
            "server_timedout": sum(c.timeouts for c in datastores),
            "server_dropped_requests": sum(c.dropped_requests for c in datastores),
            "server_timedout_requests": sum(c.timedout_requests for c in datastores),
            "read_requests": reads,
            "write_requests": writes,
            "write_request_bytes": sum(c.request_bytes for c in datastores),
            "read_responses": sum(c.responses for c in datastores),
            "read_response_bytes": sum(c.response_bytes for c in datastores),
            "in_queue": sum(c.inflight for c in datastores),
            "out_queue": sum(len(c._outbox) for c in datastores),
        }
        for category, count in stats.by_category().items():
            values[f"redis_req_{category}"] = count
        self.stats_reads += 1
        return values

    def _identity(self) -> dict[str, object]:
        topology = self.node.topology
        return {
            "service": "dynomite",
            "source": socket.gethostname(),
            "version": f"trinomite-{__version__}",
            "uptime": int(time.time() - self.started),
            "timestamp": int(time.time()),
            "rack": topology.local.rack,
            "dc": topology.local.dc,
        }

    def _labels(self) -> dict[str, str]:
        config = self.node.config
        return {
            "pool": config.pool_name,
            "datastore": config.datastore.stats_name,
            "data_store": _STORE_NAMES[config.data_store],
            "dc": config.datacenter,
            "rack": config.rack,
        }

    # -- reads ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        config = self.node.config
        tls = self.node.tls.describe()
        tls["peers"] = {
            name: {
                "secured": any(c.secure for c in pool.connections),
                "version": next((c.tls_version for c in pool.connections if c.tls_version), ""),
                "handshake_failures": sum(c.tls_handshake_failures for c in pool.connections),
                "certificate": next((c.tls_peer for c in pool.connections if c.tls_peer), ""),
            }
            for name, pool in self.node.peers.pools.items()
        }
        extra = {
            "state": self.state().name,
            "implementation": "trinomite",
            "data_store": _STORE_NAMES[config.data_store],
            "tls": tls,
            "hints": hints_per_peer(self.node.hints),
            "gossip": self.gossip(),
        }
        return info_json(
            self._identity(), self.values(), config.pool_name, config.datastore.stats_name, extra
        )

    def metrics_text(self) -> str:
        node = self.node
        peers = []
        histograms: list[tuple[str, str, dict[str, str], Histogram]] = [
            ("client_latency", "client request latency", {}, node.request_stats.latency),
            (
                "server_latency",
                "datastore round trip",
                {},
                _merged(c.latency for c in node.pool.connections),
            ),
        ]
        for name, pool in node.peers.pools.items():
            links = pool.connections
            info = pool.peer
            labels = {"peer": name, "peer_dc": info.dc, "peer_rack": info.rack}
            peers.append(
                (
                    labels,
                    {
                        "up": 1.0 if node.peers.is_up(name) else 0.0,
                        "requests": sum(c.requests for c in links),
                        "responses": sum(c.responses for c in links),
                        "timeouts": sum(c.timeouts for c in links),
                        "errors": sum(c.errors for c in links),
                        "inflight": sum(c.inflight for c in links),
                        "connects": sum(c.connects for c in links),
                        "throttled": sum(c.throttled for c in links),
                        "tls_handshake_failures": sum(c.tls_handshake_failures for c in links),
                        "gossip_down": 1.0 if name in node.peers.gossip_down else 0.0,
                        **peer_hint_row(node.hints, name),
                    },
                )
            )
            histograms.append(
                ("peer_latency", "round trip to a peer", labels, _merged(c.latency for c in links))
            )
        from ..protocol.commands import COMMANDS

        for spec in COMMANDS.values():
            histogram = node.request_stats.by_command[spec.index]
            if histogram is not None:
                histograms.append(
                    ("command_latency", "latency per command", {"command": spec.name}, histogram)
                )
        text = prometheus(self.values(), self._labels(), peers, histograms)
        membership = node.membership
        if membership is None:
            return text
        return text + gossip_metrics(self._labels(), membership)

    def gossip(self) -> dict[str, Any]:
        """The gossip view and its counters (/info "gossip", ``trinomite status``)."""
        membership = self.node.membership
        return {"enabled": False} if membership is None else gossip_info(membership)

    def snapshot(self) -> dict[str, Any]:
        node = self.node
        stats = node.request_stats
        now = time.monotonic()
        total = stats.latency.total
        then, before = self._last
        self._last = (now, total)
        rate = (total - before) / (now - then) if now > then else 0.0
        values = self.values()
        errors = (
            stats.unknown
            + values["server_timedout_requests"]
            + values["server_dropped_requests"]
            + values["peer_dropped_requests"]
            + values["client_non_quorum_r_responses"]
            + values["client_non_quorum_w_responses"]
            + values["state_refused_requests"]
        )
        up = sum(1 for name in node.peers.pools if node.peers.is_up(name))
        read, write = self.consistency()
        return {
            "ts": time.time(),
            "node": node.topology.local.name,
            "client_address": str(node.client_address),
            "dc": node.topology.local.dc,
            "rack": node.topology.local.rack,
            "data_store": _STORE_NAMES[node.config.data_store],
            "state": self.state().name,
            "uptime": round(time.time() - self.started, 1),
            "requests": total,
            "errors": errors,
            "req_per_sec": round(rate, 1),
            "latency_us": stats.latency.summary(),
            "peers": {"up": up, "total": len(node.peers.pools)},
            "hints": {
                "pending": node.hints.pending if node.hints is not None else 0,
                "peers": {
                    name: {
                        "pending": row["hints_pending"],
                        "replayed": row["hints_replayed"],
                        "dropped": row["hints_dropped"],
                    }
                    for name in node.peers.pools
                    if any((row := peer_hint_row(node.hints, name)).values())
                },
            },
            "client_connections": node.counters.client_connections,
            "consistency": {"read": read.value, "write": write.value},
            "gossip": {} if node.membership is None else member_counts(node.membership),
            "dropped_events": self.events.dropped,
        }

    def cluster_describe(self) -> dict[str, Any]:
        topology = self.node.topology
        dcs = []
        for dc, racks in topology.racks.items():
            rack_list = []
            for rack, ring in racks.items():
                servers = [
                    {"name": p.host, "host": p.host, "port": p.port, "token": p.tokens[0]}
                    for p in ring.members
                ]
                rack_list.append({"name": rack, "servers": servers})
            dcs.append({"name": dc, "racks": rack_list})
        return {"dcs": dcs}

    def consistency(self) -> tuple[Consistency, Consistency]:
        return self.node.read_consistency, self.node.write_consistency

    def state(self) -> NodeState:
        return self.node.gate.state

    def timeout_factor(self) -> int:
        return self.factor

    def read_repairs(self) -> bool:
        return self.repairs

    def log_level(self) -> int:
        level = self._logger.getEffectiveLevel()
        return min(range(len(LEVELS)), key=lambda v: abs(LEVELS[v][1] - level))

    # -- writes -----------------------------------------------------------------

    def set_consistency(self, which: str, level: Consistency) -> None:
        if which == "read":
            self.node.read_consistency = level
        elif which == "write":
            self.node.write_consistency = level
        else:
            raise ValueError(f"consistency is 'read' or 'write', not {which!r}")
        self.events.publish("consistency_changed", which=which, level=level.value)

    def set_state(self, state: NodeState) -> None:
        if state not in SETTABLE_STATES:
            names = ", ".join(s.name.lower() for s in SETTABLE_STATES)
            raise ValueError(f"state must be one of {names}")
        self.node.gate.set_state(state)
        membership = self.node.membership
        if state is NodeState.NORMAL and membership is not None:
            membership.mark_normal()  # the operator's override, gossiped as NORMAL

    def set_log_level(self, level: int) -> None:
        if not 0 <= level < len(LEVELS):
            raise ValueError(f"log level must be 0..{len(LEVELS) - 1}")
        self._logger.setLevel(python_level(level))

    def reset_histograms(self) -> None:
        node = self.node
        node.request_stats.reset_histograms()
        for link in [*node.pool.connections, *_peer_links(node)]:
            link.latency.reset()

    def set_timeout_factor(self, factor: int) -> None:
        self.factor = min(max(factor, 1), 10)
        node = self.node
        seconds = node.config.timeout / 1000 * self.factor
        node.pool.set_timeout(seconds)
        for link in _peer_links(node):
            link.timeout = seconds
        node.dispatcher.timeout = seconds
        node.coordinator.timeout = seconds

    def peer_control(self, action: PeerAction, name: str) -> int:
        peers = self.node.peers
        matched = [n for n, pool in peers.pools.items() if name in ("all", n, pool.peer.host)]
        if action is PeerAction.REMOVE:
            return self._remove(matched)
        for peer in matched:
            peers.set_admin_down(peer, action is PeerAction.DOWN)
            if action is PeerAction.RESET:
                for link in peers.pools[peer].connections:
                    link.reset()
            self.events.publish(f"peer_{action.value}", peer=peer, by="admin")
        return len(matched)

    def _remove(self, names: list[str]) -> int:
        """REST /peer/remove: members that are DOWN leave the cluster (gossip only)."""
        membership = self.node.membership
        removed = 0
        for peer in names:
            if membership is None:
                break
            try:
                membership.remove(peer)
            except ValueError:
                continue  # alive, or not a member: a live node would gossip itself back
            removed += 1
            self.events.publish("peer_removed", peer=peer, by="admin")
        return removed

    def set_read_repairs(self, enabled: bool) -> None:
        self.repairs = enabled
        self.node.coordinator.read_repairs = enabled

    def reload_tls(self) -> str:
        problem = self.node.tls.reload()
        self.events.publish("tls_reload", ok=not problem, error=problem)
        return problem

    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        return self.events.subscribe()

    # -- event sources ------------------------------------------------------------

    def state_changed(self, old: NodeState, new: NodeState) -> None:
        self.events.publish("state_changed", **{"from": old.name, "to": new.name})

    def link_changed(self, link: Link) -> None:
        if link in self.node.pool.connections:
            if link.state is ConnState.UP:
                self.events.publish("datastore_connected", connection=link.name)
            elif link.state is ConnState.DOWN:
                self.events.publish("datastore_lost", connection=link.name)


def _peer_links(node: AdminTarget) -> list[Any]:
    return [c for pool in node.peers.pools.values() for c in pool.connections]


def _merged(histograms: Any) -> Histogram:
    merged = Histogram()
    for histogram in histograms:
        for index, count in enumerate(histogram.counts):
            if count:
                merged.counts[index] += count
        merged.total += histogram.total
        merged.sum += histogram.sum
        merged.max = max(merged.max, histogram.max)
    return merged
