"""The metric table: every stat a node reports, declared once.

Theory of operation
-------------------
``METRICS`` is the one table (like Dynomite's ``STATS_POOL_CODEC`` /
``STATS_SERVER_CODEC``): name, kind, scope and help text for every stat.
The node fills a ``Values`` mapping from its live objects when someone asks
(nothing is aggregated on the request path), and every view is built from
the table plus those values:

    /info      info_json()     Dynomite's JSON: top-level fields, then
                               {pool: {pool stats, server: {server stats}}}
    /metrics   prometheus()    trinomite_<name>{pool,datastore,dc,rack,...}
    -D         describe()      one line per stat, as Dynomite's -D
    feed       (snapshots carry a subset; see node.admin)

Scopes: ``node`` (top-level /info fields), ``pool`` (Dynomite's pool
counters), ``server`` (the datastore's counters).  Per-peer series and
latency histograms are Prometheus-only extras with their own labels.
Stats Dynomite has and trinomite cannot have (mbuf pools, queue-wait
timings) are reported as 0 and marked "(0: ...)" in their help.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from .histogram import Histogram

__all__ = ["METRICS", "Metric", "describe", "info_json", "prometheus"]

PREFIX = "trinomite_"


@attrs.frozen
class Metric:
    name: str
    kind: str  # counter | gauge
    scope: str  # node | pool | server
    help: str


_TABLE = """
node gauge uptime seconds since the node started
node gauge timestamp unix time of this report
node gauge latency_max client request latency, maximum (us)
node gauge latency_999th client request latency, 99.9th percentile (us)
node gauge latency_99th client request latency, 99th percentile (us)
node gauge latency_95th client request latency, 95th percentile (us)
node gauge latency_mean client request latency, mean (us)
node gauge payload_size_max client request size, maximum (bytes)
node gauge payload_size_999th client request size, 99.9th percentile (bytes)
node gauge payload_size_99th client request size, 99th percentile (bytes)
node gauge payload_size_95th client request size, 95th percentile (bytes)
node gauge payload_size_mean client request size, mean (bytes)
node gauge average_cross_region_rtt round trip to remote-DC peers, mean (us)
node gauge 99_cross_region_rtt round trip to remote-DC peers, 99th percentile (us)
node gauge average_cross_zone_latency round trip to same-DC peers, mean (us)
node gauge 99_cross_zone_latency round trip to same-DC peers, 99th percentile (us)
node gauge average_server_latency datastore round trip, mean (us)
node gauge 99_server_latency datastore round trip, 99th percentile (us)
node gauge average_cross_region_queue_wait (0: not measured) queue wait for remote peers
node gauge 99_cross_region_queue_wait (0: not measured) queue wait for remote peers
node gauge average_cross_zone_queue_wait (0: not measured) queue wait for same-DC peers
node gauge 99_cross_zone_queue_wait (0: not measured) queue wait for same-DC peers
node gauge average_server_queue_wait (0: not measured) queue wait for the datastore
node gauge 99_server_queue_wait (0: not measured) queue wait for the datastore
node gauge client_out_queue_99 (0: replies are written at once) client out queue
node gauge server_in_queue_99 datastore requests in flight
node gauge server_out_queue_99 datastore requests waiting to be written
node gauge dnode_client_out_queue_99 (0: replies are written at once) peer reply queue
node gauge peer_in_queue_99 requests in flight to same-DC peers
node gauge peer_out_queue_99 requests waiting to be written to same-DC peers
node gauge remote_peer_out_queue_99 requests waiting to be written to remote-DC peers
node gauge remote_peer_in_queue_99 requests in flight to remote-DC peers
node gauge alloc_msgs (0: no message pool) allocated messages
node gauge free_msgs (0: no message pool) free messages
node gauge alloc_mbufs (0: no mbufs) allocated mbufs
node gauge free_mbufs (0: no mbufs) free mbufs
node gauge dyn_memory resident memory of the node process (bytes)
node gauge open_fds open file descriptors of the node process (trinomite)
node gauge trio_tasks tasks alive in the node's Trio run (trinomite)
pool counter client_eof client connections closed by the client
pool counter client_err client connections closed on an error
pool gauge client_connections open client connections
pool counter client_read_requests client read requests
pool counter client_write_requests client write requests
pool counter client_dropped_requests client requests refused while draining
pool counter client_non_quorum_w_responses writes that failed to reach quorum
pool counter client_non_quorum_r_responses reads that failed to reach quorum
pool counter server_ejects (0: no ejection) datastore ejections
pool counter dnode_client_eof peer connections closed by the peer
pool counter dnode_client_err peer connections closed on an error
pool gauge dnode_client_connections open inbound peer connections
pool gauge dnode_client_in_queue (0: not queued) inbound peer requests queued
pool gauge dnode_client_in_queue_bytes (0: not queued) inbound peer bytes queued
pool gauge dnode_client_out_queue (0: not queued) inbound peer replies queued
pool gauge dnode_client_out_queue_bytes (0: not queued) inbound peer reply bytes queued
pool counter peer_dropped_requests requests to a peer that was not connected
pool counter peer_timedout_requests requests to same-DC peers that timed out
pool counter remote_peer_dropped_requests writes lost for a DC with no reachable node
pool counter remote_peer_timedout_requests requests to remote-DC peers that timed out
pool counter remote_peer_failover_requests remote-DC writes sent to a failover rack
pool counter peer_eof (0: counted in peer_err) peer connections closed by the peer
pool counter peer_err peer connections lost
pool counter peer_timedout same-DC peer connections dropped as unresponsive
pool counter remote_peer_timedout remote-DC peer connections dropped as unresponsive
pool gauge peer_connections peer connections up
pool counter peer_forward_error errors from replicas nobody waited for
pool counter peer_requests requests sent to peers
pool counter peer_request_bytes bytes sent to peers
pool counter peer_responses replies received from peers
pool counter peer_response_bytes bytes received from peers
pool gauge peer_ejected_at (0: no ejection) time of the last peer ejection
pool counter peer_ejects (0: no ejection) peer ejections
pool gauge peer_in_queue requests in flight to same-DC peers
pool gauge remote_peer_in_queue requests in flight to remote-DC peers
pool gauge peer_in_queue_bytes (0: not measured) bytes in flight to same-DC peers
pool gauge remote_peer_in_queue_bytes (0: not measured) bytes in flight to remote-DC peers
pool gauge peer_out_queue requests waiting to be written to same-DC peers
pool gauge remote_peer_out_queue requests waiting to be written to remote-DC peers
pool gauge peer_out_queue_bytes (0: not measured) bytes waiting for same-DC peers
pool gauge remote_peer_out_queue_bytes (0: not measured) bytes waiting for remote-DC peers
pool counter peer_mismatch_requests peer requests whose reply never came (out of order)
pool counter tls_handshake_failures failed or refused TLS peer links, both directions (trinomite)
pool counter client_tls_handshake_failures failed client TLS handshakes (trinomite)
pool gauge hints_pending missed writes kept, not yet replayed (trinomite)
pool counter hints_stored writes kept as hints (trinomite)
pool counter hints_replayed hints replayed to their replica (trinomite)
pool counter hints_dropped hints dropped by max_hint_window or hints_max_bytes (trinomite)
pool counter hints_rejected replayed hints the replica refused, not retried (trinomite)
pool counter hints_superseded hints skipped: a newer overwrite got there live (trinomite)
pool gauge hints_bytes bytes of hint logs not yet replayed (trinomite)
pool counter client_auth_failures AUTH attempts refused: wrong password or unknown user (trinomite)
pool counter client_read_timeouts clients closed by client_read_timeout (trinomite)
pool counter client_idle_timeouts clients closed after client_idle_timeout idle (trinomite)
pool counter client_output_limit_closes clients closed over client_output_buffer_limit (trinomite)
pool counter client_memory_evictions clients closed over client_memory_budget (trinomite)
pool gauge client_buffered_bytes unparsed input and unsent replies of all clients (trinomite)
pool counter forward_error (0: counted per link) forwarding errors
pool counter fragments fragments of scatter-gathered requests
pool counter stats_count times the stats were read
pool counter read_failover_requests DC_ONE reads served by another rack (trinomite)
pool counter read_repairs stale replicas sent the newest value by quorum reads (trinomite)
pool counter tombstones_collected tombstones older than tombstone_grace removed (trinomite)
pool counter tombstone_sweeps passes of the tombstone sweeper over the keyspace (trinomite)
pool counter forwarded_requests writes re-fanned for a remote DC (trinomite)
pool counter state_refused_requests requests refused by the node state (trinomite)
pool gauge state_held_writes writes held by WRITES_ONLY (trinomite)
server counter server_eof (0: counted in server_err) datastore connections closed
server counter server_err datastore connections lost
server counter server_timedout datastore connections dropped on a timeout
server gauge server_ejected_at (0: no ejection) time of the last datastore ejection
server counter server_dropped_requests requests refused while the datastore was down
server counter server_timedout_requests requests that timed out at the datastore
server counter read_requests read requests (counted at the coordinator)
server counter read_request_bytes (0: counted in write_request_bytes) read request bytes
server counter write_requests write requests (counted at the coordinator)
server counter write_request_bytes request bytes sent to the datastore
server counter read_responses replies from the datastore
server counter read_response_bytes reply bytes from the datastore
server counter write_responses (0: counted in read_responses) write replies
server counter write_response_bytes (0: counted in read_response_bytes) write reply bytes
server gauge in_queue requests in flight to the datastore
server gauge in_queue_bytes (0: not measured) bytes in flight to the datastore
server gauge out_queue requests waiting to be written to the datastore
server gauge out_queue_bytes (0: not measured) bytes waiting to be written
server counter redis_req_get GET requests
server counter redis_req_set SET requests
server counter redis_req_del DEL/UNLINK requests
server counter redis_req_incr_decr INCR/DECR family requests
server counter redis_req_keys KEYS requests
server counter redis_req_mget MGET requests
server counter redis_req_scan SCAN requests
server counter redis_req_sort SORT requests
server counter redis_req_lreqm LREM requests
server counter redis_req_sunion SUNION requests
server counter redis_req_ping PING requests
server counter redis_req_lists list requests
server counter redis_req_sets set requests
server counter redis_req_hashes hash requests
server counter redis_req_sortedsets sorted-set requests
server counter redis_req_other other requests
"""


def _parse(text: str) -> tuple[Metric, ...]:
    out = []
    for line in text.strip().splitlines():
        scope, kind, name, help_text = line.split(" ", 3)
        out.append(Metric(name, kind, scope, help_text))
    return tuple(out)


METRICS: tuple[Metric, ...] = _parse(_TABLE)
#: Top-level /info fields that are not numbers, in Dynomite's order.
IDENTITY = ("service", "source", "version", "uptime", "timestamp", "rack", "dc")

Values = Mapping[str, float]


def describe() -> str:
    """Every stat and its meaning, like Dynomite's ``-D``."""
    lines = []
    for scope, title in (("node", "node"), ("pool", "pool"), ("server", "server")):
        lines.append(f"{title} stats:")
        for metric in METRICS:
            if metric.scope == scope:
                lines.append(f"  {metric.name:<34} {metric.kind:<8} {metric.help}")
        lines.append("")
    return "\n".join(lines)


def info_json(
    identity: Mapping[str, object],
    values: Values,
    pool_name: str,
    server_name: str,
    extra: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """Dynomite's /info shape: identity, node stats, then pool {.., server {..}}."""
    out: dict[str, object] = dict(identity)
    for metric in METRICS:
        if metric.scope == "node" and metric.name not in out:
            out[metric.name] = values.get(metric.name, 0)
    pool: dict[str, object] = {m.name: values.get(m.name, 0) for m in METRICS if m.scope == "pool"}
    pool[server_name] = {m.name: values.get(m.name, 0) for m in METRICS if m.scope == "server"}
    out[pool_name] = pool
    if extra:
        out.update(extra)
    return out


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}"


def prometheus(
    values: Values,
    labels: Mapping[str, str],
    peers: Iterable[tuple[Mapping[str, str], Mapping[str, float]]],
    histograms: Iterable[tuple[str, str, Mapping[str, str], Histogram]],
) -> str:
    """Prometheus text format 0.0.4.

    ``peers``: (labels, {stat: value}) per peer.  ``histograms``: (name, help,
    labels, histogram in microseconds) exported in seconds.
    """
    lines: list[str] = []
    base = _labels(labels)
    for metric in METRICS:
        name = PREFIX + metric.name
        kind = "counter" if metric.kind == "counter" else "gauge"
        if kind == "counter":
            name += "_total"
        lines.append(f"# HELP {name} {metric.help}")
        lines.append(f"# TYPE {name} {kind}")
        lines.append(f"{name}{base} {values.get(metric.name, 0)}")
    peer_rows = list(peers)
    if peer_rows:
        stats = sorted({stat for _, row in peer_rows for stat in row})
        for stat in stats:
            name = f"{PREFIX}peer_link_{stat}"
            lines.append(f"# HELP {name} per-peer link statistic: {stat}")
            lines.append(f"# TYPE {name} gauge")
            for peer_labels, row in peer_rows:
                lines.append(f"{name}{_labels({**labels, **peer_labels})} {row.get(stat, 0)}")
    seen: set[str] = set()
    for name, help_text, extra, histogram in histograms:
        full = f"{PREFIX}{name}_seconds"
        if full not in seen:
            lines.append(f"# HELP {full} {help_text}")
            lines.append(f"# TYPE {full} histogram")
            seen.add(full)
        series = {**labels, **extra}
        for bound, count in histogram.cumulative():
            le = {**series, "le": repr(bound / 1e6)}
            lines.append(f"{full}_bucket{_labels(le)} {count}")
        lines.append(f"{full}_bucket{_labels({**series, 'le': '+Inf'})} {histogram.total}")
        lines.append(f"{full}_sum{_labels(series)} {histogram.sum / 1e6}")
        lines.append(f"{full}_count{_labels(series)} {histogram.total}")
    return "\n".join(lines) + "\n"


def counter_lines(
    labels: Mapping[str, str],
    group: str,
    counters: Mapping[str, float],
    helps: Mapping[str, str],
) -> str:
    """Counters of one subsystem (``trinomite_<group>_<name>_total``), one family each."""
    lines: list[str] = []
    base = _labels(labels)
    for counter, value in counters.items():
        name = f"{PREFIX}{group}_{counter}_total"
        lines.append(f"# HELP {name} {helps.get(counter, counter)}")
        lines.append(f"# TYPE {name} counter")
        lines.append(f"{name}{base} {value}")
    return "\n".join(lines) + "\n" if lines else ""


def gauge_lines(
    labels: Mapping[str, str], name: str, help_text: str, series: Mapping[str, float], key: str
) -> str:
    """One gauge family with one series per value of label ``key``."""
    full = PREFIX + name
    lines = [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
    for value, amount in series.items():
        lines.append(f"{full}{_labels({**labels, key: value})} {amount}")
    return "\n".join(lines) + "\n"
