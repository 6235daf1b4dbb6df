# Theory of operation: the bench targets. Each is a function
# `start(lab, opts) -> port` that starts its processes through the Lab and
# returns the RESP port to drive; TARGETS names them for --targets.
from __future__ import annotations

import json
import socket
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab import HOST, REPO, Lab, Proc, free_port, tail, yaml_block

# ---- targets ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    datastore_connections: int


def start_direct(lab: Lab, opts: Options) -> int:
    return lab.start_redis("redis-direct")


def start_twemproxy(lab: Lab, opts: Options) -> int:
    backend, port = lab.start_redis("redis-twemproxy"), free_port()
    conf = yaml_block(
        "bench",
        {
            "listen": f"{HOST}:{port}",
            "hash": "fnv1a_64",
            "distribution": "ketama",
            "redis": "true",
            "timeout": 5000,
            "preconnect": "true",
            "auto_eject_hosts": "false",
            "server_connections": opts.datastore_connections,
            "servers": [f"{HOST}:{backend}:1"],
        },
    )
    conf_path, out = lab.write("twemproxy.yml", conf), lab.workdir / "nutcracker.out"
    argv = ["nutcracker", "-c", str(conf_path), "-o", str(out)]
    argv += f"-s {free_port()} -a {HOST}".split()  # stats port, loopback only
    return lab.wait_ready(lab.spawn("twemproxy", argv, watch_rss=True), port)


def start_trinomite_node(
    lab: Lab,
    name: str,
    items: dict[str, str | int | list[str]],
    port: int = 0,
    dyn_port: int = 0,
    stats_port: int = 0,
) -> int:
    """Start `python -m trinomite` on a generated Dynomite-style config."""
    port = port or free_port()
    conf = yaml_block(
        "dyn_o_mite",
        {
            "listen": f"{HOST}:{port}",
            "dyn_listen": f"{HOST}:{dyn_port or free_port()}",
            "stats_listen": f"{HOST}:{stats_port or free_port()}",
            **items,
        },
    )
    argv = [sys.executable, "-m", "trinomite", str(lab.write(f"{name}.yml", conf))]
    return lab.wait_ready(lab.spawn(name, argv, watch_rss=True), port)


def start_trinomite(lab: Lab, opts: Options) -> int:
    backend = lab.start_redis("redis-trinomite")
    return start_trinomite_node(
        lab,
        "trinomite",
        {
            "servers": [f"{HOST}:{backend}:1"],
            "tokens": "'0'",
            "data_store": 0,
            "datastore_connections": opts.datastore_connections,
        },
    )


def quorum_write_ok(port: int, level: str = "DC_QUORUM") -> bool:
    """True once a write at ``level`` through the node succeeds (peer links are up)."""
    request = (
        b"*2\r\n$28\r\ndyno_config:conn_consistency\r\n$%d\r\n%s\r\n"
        b"*3\r\n$3\r\nSET\r\n$12\r\n__bench_warm\r\n$1\r\n1\r\n"
    ) % (len(level), level.encode())
    try:
        with socket.create_connection((HOST, port), timeout=2) as sock:
            sock.sendall(request)
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+OK\r\n+OK\r\n"
    except OSError:
        return False


def cluster_certificates(lab: Lab, racks: list[str], dyn_ports: list[int]) -> list[dict[str, str]]:
    """A CA and one certificate per node (URI SAN for its dyn_listen); its tls_* settings."""
    if str(REPO) not in sys.path:  # the nodes get REPO on PYTHONPATH; this script may not
        sys.path.insert(0, str(REPO))
    from trinomite.tls import certs
    from trinomite.tls.policy import node_uri

    directory = lab.workdir / "tls"
    directory.mkdir(exist_ok=True)
    ca = certs.make_ca("trinomite bench CA", days=2)
    ca_file = directory / "ca.crt"
    certs.write_public(ca_file, ca.cert_pem)
    settings = []
    for rack, dyn_port in zip(racks, dyn_ports, strict=True):
        issued = certs.issue(
            ca,
            f"{HOST}:{dyn_port}",
            [HOST],
            [node_uri("dc1", rack, HOST, dyn_port)],
            unit=f"dc1/{rack}",
            days=2,
        )
        cert, key = directory / f"{rack}.crt", directory / f"{rack}.key"
        certs.write_public(cert, issued.cert_pem)
        certs.write_key(key, issued.key_pem)
        settings.append(
            {
                "secure_server_option": "all",
                "tls_cert_file": str(cert),
                "tls_key_file": str(key),
                "tls_ca_file": str(ca_file),
            }
        )
    return settings


def admin_info(port: int) -> dict[str, Any]:
    """A node's admin /info JSON."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/info", timeout=2) as reply:
        info: dict[str, Any] = json.loads(reply.read())
    return info


#: Log text of a refused or failed secured link: the receiver's "peer X: refused: ...",
#: the dialler's "TLS handshake failed/timed out ..." and "TLS peer refused: ...".
TLS_TROUBLE = ("refused:", "TLS handshake", "TLS peer")


def tls_problems(procs: list[Proc], stats_ports: list[int]) -> list[str]:
    """Why the started TLS cluster's peer links might not be TLS ([] if they are).

    The quorum write that already went through needed a working link, and with
    `secure_server_option: all` a receiver refuses plaintext peers; on top of
    that no log may show a refused or failed TLS link, and where /info has a
    `tls` section every peer link must report a negotiated TLS version.
    """
    problems = []
    for proc in procs:
        for line in proc.log.read_text(errors="replace").splitlines():
            if any(trouble in line for trouble in TLS_TROUBLE):
                problems.append(f"{proc.name}: {line.strip()}")
    for proc, stats_port in zip(procs, stats_ports, strict=True):
        try:
            tls = admin_info(stats_port).get("tls")
        except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors
            problems.append(f"{proc.name}: no /info on :{stats_port}: {exc}")
            continue
        if tls is None:  # an /info without TLS details: the log and write checks stand
            continue
        if tls.get("secure_server_option") != "all":
            problems.append(f"{proc.name}: /info says secure_server_option {tls!r}")
        for peer, link in tls.get("peers", {}).items():
            if not link.get("secured") or not str(link.get("version", "")).startswith("TLS"):
                problems.append(f"{proc.name}: link to {peer} is not TLS (yet): {link}")
        if tls.get("inbound_handshake_failures"):
            problems.append(f"{proc.name}: {tls['inbound_handshake_failures']}")
    return problems


def start_cluster(
    lab: Lab,
    opts: Options,
    consistency: str,
    tls: bool = False,
    extra: dict[str, Any] | None = None,
    two_dcs: bool = False,
) -> int:
    """Two racks of one node each (each node its own process and redis-server).

    With ``tls`` every peer link runs mutual TLS (``secure_server_option: all``,
    one certificate per node from a fresh CA), checked after start.  ``extra``:
    more settings for both nodes.  ``two_dcs``: two datacenters of one rack
    each instead (the other node is then a remote DC, reached by REQ_FORWARD).
    """
    ports = [free_port(), free_port()]
    dyn_ports = [free_port(), free_port()]
    stats_ports = [free_port(), free_port()]
    racks = ["rack1", "rack2"]
    dcs = ["dc1", "dc2"] if two_dcs else ["dc1", "dc1"]
    label = consistency + ("-tls" if tls else "") + ("-extra" if extra else "")
    secure = cluster_certificates(lab, racks, dyn_ports) if tls else [{}, {}]
    names = [f"trinomite-{label}-{rack}" for rack in racks]
    first = 0
    for i in (1, 0):  # the node the benchmark talks to starts last
        other = 1 - i
        backend = lab.start_redis(f"redis-{label}-{racks[i]}")
        first = start_trinomite_node(
            lab,
            names[i],
            {
                "servers": [f"{HOST}:{backend}:1"],
                "tokens": "'0'",
                "data_store": 0,
                "datacenter": dcs[i],
                "rack": racks[i],
                "dyn_seeds": [f"{HOST}:{dyn_ports[other]}:{racks[other]}:{dcs[other]}:0"],
                "read_consistency": consistency,
                "write_consistency": consistency,
                "server_retry_timeout": 1000,
                "datastore_connections": opts.datastore_connections,
                **secure[i],
                **(extra or {}),
            },
            port=ports[i],
            dyn_port=dyn_ports[i],
            stats_port=stats_ports[i],
        )
    nodes = [next(p for p in lab.procs if p.name == name + lab.suffix) for name in names]
    deadline = time.monotonic() + 20
    ready_level = "DC_EACH_SAFE_QUORUM" if two_dcs else "DC_QUORUM"
    while not quorum_write_ok(first, ready_level):
        if time.monotonic() > deadline:
            logs = "".join(tail(p) for p in nodes)
            raise RuntimeError(f"cluster peer links did not come up within 20 s{logs}")
        time.sleep(0.05)
    # The node started first dialled the other before it listened and retries
    # after a backoff (server_retry_timeout), so its link may still be down.
    while tls and (problems := tls_problems(nodes, stats_ports)):
        if time.monotonic() > deadline:
            raise RuntimeError("TLS cluster links are not clean TLS:\n  " + "\n  ".join(problems))
        time.sleep(0.1)
    return first


def start_cluster_one(lab: Lab, opts: Options) -> int:
    return start_cluster(lab, opts, "DC_ONE")


def start_cluster_quorum(lab: Lab, opts: Options) -> int:
    return start_cluster(lab, opts, "DC_QUORUM")


def start_cluster_one_tls(lab: Lab, opts: Options) -> int:
    return start_cluster(lab, opts, "DC_ONE", tls=True)


def start_cluster_one_nohints(lab: Lab, opts: Options) -> int:
    """cluster-one with hinted handoff off: what keeping missed writes costs."""
    return start_cluster(lab, opts, "DC_ONE", extra={"hinted_handoff": "false"})


def start_dc_each(lab: Lab, opts: Options) -> int:
    """Two DCs of one rack each at DC_EACH_SAFE_QUORUM: every write crosses DCs."""
    return start_cluster(lab, opts, "DC_EACH_SAFE_QUORUM", two_dcs=True)


def start_naive(lab: Lab, opts: Options) -> int:
    backend, port = lab.start_redis("redis-naive"), free_port()
    script = str(REPO / "bench" / "naive_forwarder.py")
    proc = lab.spawn("naive", [sys.executable, script, str(port), str(backend)], watch_rss=True)
    return lab.wait_ready(proc, port)


Starter = Callable[[Lab, Options], int]
TARGETS: dict[str, Starter] = {
    "direct": start_direct,
    "twemproxy": start_twemproxy,
    "trinomite": start_trinomite,
    "naive": start_naive,
    "cluster-one": start_cluster_one,
    "cluster-quorum": start_cluster_quorum,
    "cluster-one-tls": start_cluster_one_tls,
    "cluster-one-nohints": start_cluster_one_nohints,
    "dc-each": start_dc_each,
}
#: TLS target -> its plaintext twin, for the summary's "TLS cost".
TLS_TWINS = {"cluster-one-tls": "cluster-one"}
