# Theory of operation: one run of this script starts every target from scratch
# (each with its own redis-server on a free loopback port), then drives them
# all with redis-benchmark, interleaved: round 1 runs every target in every
# pipelining mode, then round 2, ... and the target order rotates per round so
# no target always runs first or last. Interleaving spreads machine noise
# (thermal, other jobs) over all targets instead of letting it bias one.
# Per cell (target x test x mode) it reports the median over rounds plus
# min/max, and ratios of medians to "direct" and "twemproxy". Peak RSS
# (VmHWM) of every proxy process is read from /proc before it is stopped.
#
# A target is a function `start(lab, opts) -> port`: it starts its processes
# through the Lab (which records them for cleanup) and returns the RESP port to
# bench. To add one (e.g. a trinomite cluster), write such a function, using
# lab.start_redis() and start_trinomite_node(), and register it in TARGETS.
# cluster-one-tls is cluster-one with `secure_server_option: all`: the same two
# racks, but the peer link between them runs mutual TLS with certificates made
# here by trinomite.tls.certs; the start checks the link really is TLS. Each
# TLS target names its plaintext twin in TLS_TWINS, and the summary prints the
# TLS cost (throughput lost, CPU per request gained) against that twin.
# cluster-one-nohints is cluster-one with `hinted_handoff: false`: comparing the
# two in one run gives what keeping missed writes costs while every replica is up.
# CPU used by other processes during the run is measured and reported, since
# on a shared 2-core machine it silently skews every figure. So is each proxy's
# own CPU time per request (from /proc/PID/stat around every redis-benchmark
# run): on a VM whose hypervisor steals time, req/s swings by 2-3x between
# rounds, while CPU per request stays put, so it is the steadier comparison.
# Everything runs on 127.0.0.1; every wait and subprocess is bounded in time.
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0  # seconds for a process to answer PING
BENCH_TIMEOUT = 300.0  # seconds for one redis-benchmark invocation
STOP_TIMEOUT = 5.0  # seconds between terminate and kill
FOREIGN_CPU = 0.10  # share of all CPUs used by others during the run that taints the figures
Row = dict[str, Any]  # one sample or summary cell, as written to --json
MODES = {"P1": 1, "P16": 16}
TESTS = ("SET", "GET")


def free_port() -> int:
    """A currently free loopback port (bind to :0, read it, close)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def ping(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    watch_rss: bool
    target: str = ""  # the target it was started for


@dataclass
class Lab:
    """Owns a temp dir and every process started for the run."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)
    rss: dict[str, dict[str, int]] = field(default_factory=dict)
    target: str = ""  # the target being started; its processes are tagged with it

    def write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    def spawn(self, name: str, argv: list[str], *, watch_rss: bool = False) -> Proc:
        log = self.workdir / f"{name}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
            )
        proc = Proc(name, popen, log, watch_rss, self.target)
        self.procs.append(proc)
        return proc

    def wait_ready(self, proc: Proc, port: int, timeout: float = READY_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}){tail(proc)}")
            if ping(port):
                return port
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name} did not answer PING on :{port} in {timeout}s{tail(proc)}")

    def start_redis(self, name: str, attempts: int = 3) -> int:
        for attempt in range(1, attempts + 1):
            port = free_port()
            argv = ["redis-server", *f"--port {port} --bind {HOST}".split(), "--save", ""]
            argv += ["--appendonly", "no", "--daemonize", "no"]
            proc = self.spawn(name, argv)
            try:
                return self.wait_ready(proc, port)
            except RuntimeError:
                # An exit usually means another process took the port first: retry.
                if proc.popen.poll() is None or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def proxy_cpu(self, target: str) -> float | None:
        """CPU seconds used so far by the proxy processes of ``target`` (None: it has none)."""
        pids = [p.popen.pid for p in self.procs if p.target == target and p.watch_rss]
        if not pids:
            return None
        return sum(proc_cpu_seconds(pid) for pid in pids)

    def read_rss(self) -> None:
        for proc in self.procs:
            if proc.watch_rss and proc.popen.poll() is None:
                self.rss[proc.name] = proc_status_kb(proc.popen.pid)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(STOP_TIMEOUT)


def tail(proc: Proc, lines: int = 15) -> str:
    try:
        text = proc.log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n  | " + "\n  | ".join(text) if text else ""


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS in kB from /proc/PID/status."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by processes outside this run, from /proc/stat minus our rusage.

    Our own CPU is this script plus every child it has reaped (servers, proxies,
    redis-benchmark), so foreign_share() must be called after all of them are waited for.
    """

    def __init__(self) -> None:
        self.start = (time.monotonic(), self.system_busy(), self.ours())
        self.steal_start = self.steal()

    @staticmethod
    def _cpu_fields() -> list[int]:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]

    @classmethod
    def system_busy(cls) -> float:
        # user + nice + system: process time only (irq, softirq, steal, guest left out).
        return sum(cls._cpu_fields()[:3]) / os.sysconf("SC_CLK_TCK")

    @classmethod
    def steal(cls) -> float:
        """CPU seconds the hypervisor gave to other guests (the 8th /proc/stat field)."""
        fields = cls._cpu_fields()
        return (fields[7] if len(fields) > 7 else 0) / os.sysconf("SC_CLK_TCK")

    def steal_share(self) -> float:
        """Stolen CPU / (wall seconds x CPU count) since construction."""
        wall = (time.monotonic() - self.start[0]) * (os.cpu_count() or 1)
        return max(0.0, self.steal() - self.steal_start) / wall

    @staticmethod
    def ours() -> float:
        usages = (
            resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
        )
        return sum(u.ru_utime + u.ru_stime for u in usages)

    def foreign_share(self) -> float:
        """Foreign CPU seconds / (wall seconds x CPU count) since construction."""
        wall0, busy0, ours0 = self.start
        foreign = (self.system_busy() - busy0) - (self.ours() - ours0)
        return max(0.0, foreign) / ((time.monotonic() - wall0) * (os.cpu_count() or 1))


def yaml_block(root: str, items: dict[str, str | int | list[str]]) -> str:
    """Tiny YAML emitter for flat configs (scalars and lists of scalars)."""
    lines = [f"{root}:"]
    for key, value in items.items():
        if isinstance(value, list):
            lines.append(f"  {key}:")
            lines.extend(f"  - {v}" for v in value)
        else:
            lines.append(f"  {key}: {value}")
    return "\n".join(lines) + "\n"


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


def quorum_write_ok(port: int) -> bool:
    """True once a DC_QUORUM write through the node succeeds (peer links are up)."""
    request = (
        b"*2\r\n$28\r\ndyno_config:conn_consistency\r\n$9\r\nDC_QUORUM\r\n"
        b"*3\r\n$3\r\nSET\r\n$12\r\n__bench_warm\r\n$1\r\n1\r\n"
    )
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
) -> int:
    """Two racks of one node each (each node its own process and redis-server).

    With ``tls`` every peer link runs mutual TLS (``secure_server_option: all``,
    one certificate per node from a fresh CA), checked after start.  ``extra``:
    more settings for both nodes.
    """
    ports = [free_port(), free_port()]
    dyn_ports = [free_port(), free_port()]
    stats_ports = [free_port(), free_port()]
    racks = ["rack1", "rack2"]
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
                "datacenter": "dc1",
                "rack": racks[i],
                "dyn_seeds": [f"{HOST}:{dyn_ports[other]}:{racks[other]}:dc1:0"],
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
    nodes = [next(p for p in lab.procs if p.name == name) for name in names]
    deadline = time.monotonic() + 20
    while not quorum_write_ok(first):
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
}
#: TLS target -> its plaintext twin, for the summary's "TLS cost".
TLS_TWINS = {"cluster-one-tls": "cluster-one"}

# ---- measuring -------------------------------------------------------------


def redis_benchmark(
    port: int, requests: int, clients: int, pipeline: int
) -> dict[str, dict[str, float]]:
    argv = f"redis-benchmark -h {HOST} -p {port} -t set,get --csv".split()
    argv += f"-n {requests} -c {clients} -P {pipeline}".split()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=BENCH_TIMEOUT)
    rows: dict[str, dict[str, float]] = {}
    header: list[str] = []
    for line in done.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if cells[0] == "test":
            header = cells
        elif header and cells[0] in TESTS:
            rows[cells[0]] = {k: float(v) for k, v in zip(header[1:], cells[1:], strict=True)}
    if done.returncode or set(rows) != set(TESTS):
        raise RuntimeError(
            f"redis-benchmark on :{port} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        )
    return rows


def run_rounds(lab: Lab, ports: dict[str, int], args: argparse.Namespace) -> list[Row]:
    """Every target in every mode, per round; each sample has req/s and proxy CPU.

    ``cpu_us`` is the proxy processes' CPU time per request over one
    redis-benchmark invocation (its SET and GET tests together).  Unlike
    req/s, it barely moves when the hypervisor steals time.
    """
    samples: list[Row] = []
    names = list(ports)
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            for mode, depth in MODES.items():
                cpu_before = lab.proxy_cpu(name)
                rows = redis_benchmark(ports[name], args.requests, args.clients, depth)
                cpu_after = lab.proxy_cpu(name)
                cpu_us = None
                if cpu_before is not None and cpu_after is not None:
                    cpu_us = (cpu_after - cpu_before) * 1e6 / (args.requests * len(TESTS))
                for test, row in rows.items():
                    samples.append(
                        {
                            "round": rnd + 1,
                            "target": name,
                            "mode": mode,
                            "test": test,
                            "cpu_us": cpu_us,
                            **row,
                        }
                    )
                got = "  ".join(f"{t} {rows[t]['rps']:>10,.0f}" for t in TESTS)
                cpu = f"  proxy CPU {cpu_us:5.1f} us/req" if cpu_us is not None else ""
                print(f"  round {rnd + 1}  {name:<15} {mode:<4} {got}{cpu}", flush=True)
    return samples


def summarise_cpu(samples: list[Row], names: list[str]) -> list[Row]:
    """Median proxy CPU per request, per target and mode (targets with a proxy only)."""
    cells: dict[tuple[str, str], list[float]] = {}
    for s in samples:
        if s["cpu_us"] is not None and s["test"] == TESTS[0]:  # one per invocation
            cells.setdefault((s["target"], s["mode"]), []).append(s["cpu_us"])
    out: list[Row] = []
    for name in names:
        for mode in MODES:
            if (name, mode) not in cells:
                continue
            row: Row = {
                "target": name,
                "mode": mode,
                "cpu_us": statistics.median(cells[name, mode]),
            }
            plain = statistics.median(cells.get((TLS_TWINS.get(name, ""), mode)) or [0.0])
            if plain:  # 0: no twin, or too few requests for one clock tick of CPU
                row["tls_cpu_cost"] = row["cpu_us"] / plain - 1
            out.append(row)
    return out


def print_cpu_table(cpu: list[Row]) -> None:
    if not cpu:
        return
    by_cell = {(r["target"], r["mode"]): r["cpu_us"] for r in cpu}
    print("\nproxy CPU per request (us, SET and GET together, median; lower is better):")
    print(f"{'target':<15} " + " ".join(f"{m:>8} {'vs naive':>9}" for m in MODES))
    for name in dict.fromkeys(r["target"] for r in cpu):
        cells = []
        for mode in MODES:
            value, naive = by_cell.get((name, mode)), by_cell.get(("naive", mode))
            ratio = f"{value / naive:8.2f}x" if value and naive else f"{'-':>9}"
            cells.append(f"{value:8.2f} {ratio}" if value is not None else f"{'-':>8} {'-':>9}")
        print(f"{name:<15} " + " ".join(cells))


def print_tls_cost(summary: list[Row], cpu: list[Row]) -> None:
    """Each TLS target against its plaintext twin, per test and mode (medians)."""
    rows = [r for r in summary if "tls_cost" in r]
    if not rows:
        return
    cpu_cells = {(r["target"], r["mode"]): r for r in cpu}
    rps_cells = {(r["target"], r["test"], r["mode"]): r["median"] for r in summary}
    print("\nTLS cost (req/s: 1 - TLS/plaintext; CPU: TLS/plaintext - 1; >0 = TLS is dearer):")
    head = f"{'TLS target':<16} {'vs':<12} {'test':<4} {'mode':<4}"
    print(f"{head} {'plain req/s':>12} {'TLS req/s':>11} {'TLS cost':>9} {'CPU cost':>9}")
    for r in rows:
        twin = TLS_TWINS[r["target"]]
        cpu_row = cpu_cells.get((r["target"], r["mode"]), {})
        cpu_cost = f"{cpu_row['tls_cpu_cost']:>9.1%}" if "tls_cpu_cost" in cpu_row else f"{'-':>9}"
        print(
            f"{r['target']:<16} {twin:<12} {r['test']:<4} {r['mode']:<4} "
            f"{rps_cells[(twin, r['test'], r['mode'])]:>12,.0f} {r['median']:>11,.0f} "
            f"{r['tls_cost']:>9.1%} {cpu_cost}"
        )
    print("  (CPU per request is per redis-benchmark run, SET and GET together: same in both rows)")


def summarise(samples: list[Row], names: list[str]) -> list[Row]:
    cells: dict[tuple[str, str, str], list[float]] = {}
    for s in samples:
        cells.setdefault((s["target"], s["test"], s["mode"]), []).append(s["rps"])
    summary: list[Row] = []
    for name in names:
        for test in TESTS:
            for mode in MODES:
                rps = cells[(name, test, mode)]
                median = statistics.median(rps)
                row: Row = {
                    "target": name,
                    "test": test,
                    "mode": mode,
                    "median": median,
                    "min": min(rps),
                    "max": max(rps),
                    "n": len(rps),
                }
                for ref in ("direct", "twemproxy"):
                    if (ref, test, mode) in cells:
                        row[f"vs_{ref}"] = median / statistics.median(cells[(ref, test, mode)])
                plain = cells.get((TLS_TWINS.get(name, ""), test, mode))
                if plain:
                    row["tls_cost"] = 1 - median / statistics.median(plain)
                summary.append(row)
    return summary


def print_table(summary: list[Row], rss: dict[str, dict[str, int]], quick: bool) -> None:
    print()
    if quick:
        print("*** QUICK RUN: tiny -n, one round. NOT a real measurement. ***")
    head = f"{'target':<15} {'test':<4} {'mode':<4} {'median req/s':>13} {'min':>11} {'max':>11}"
    print(f"{head} {'vs direct':>9} {'vs twem':>8}")
    for r in summary:
        ratios = "".join(
            f" {r[k]:>8.2f}x" if k in r else f" {'-':>9}" for k in ("vs_direct", "vs_twemproxy")
        )
        print(
            f"{r['target']:<15} {r['test']:<4} {r['mode']:<4} {r['median']:>13,.0f} "
            f"{r['min']:>11,.0f} {r['max']:>11,.0f}{ratios}"
        )
    if rss:
        print("\npeak RSS (VmHWM) of proxy processes:")
        for name, kb in rss.items():
            print(f"  {name:<28} {kb.get('VmHWM', 0) / 1024:8.1f} MiB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__ or "trinomite benchmark")
    p.add_argument(
        "--targets",
        default="direct,twemproxy,trinomite,naive,cluster-one,cluster-quorum,cluster-one-tls",
        help=f"comma-separated subset of {','.join(TARGETS)}",
    )
    p.add_argument(
        "--naive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="include the naive Trio forwarder yardstick (default on)",
    )
    p.add_argument("-n", "--requests", type=int, default=200_000)
    p.add_argument("-c", "--clients", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3)")
    p.add_argument(
        "--datastore-connections",
        type=int,
        default=1,
        help="backend connections: trinomite datastore_connections "
        "and twemproxy server_connections",
    )
    p.add_argument("--quick", action="store_true", help="-n 20000, 1 round; smoke test only")
    p.add_argument("--json", type=Path, help="write all raw figures to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.rounds = 20_000, 1
    elif args.rounds < 3:
        p.error("--rounds must be at least 3 (use --quick for a smoke run)")
    names = [t for t in args.targets.split(",") if t and (args.naive or t != "naive")]
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        p.error(f"unknown targets {unknown}; choose from {','.join(TARGETS)}")
    args.names = list(dict.fromkeys(names))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("redis-server", "redis-benchmark", "nutcracker"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH")
    opts = Options(datastore_connections=args.datastore_connections)
    meter = CpuMeter()
    lab = Lab(Path(tempfile.mkdtemp(prefix="trinomite-bench-")))
    try:
        ports: dict[str, int] = {}
        for name in args.names:
            lab.target = name
            ports[name] = TARGETS[name](lab, opts)
        lab.target = ""
        print(
            f"targets up: {ports}; -n {args.requests} -c {args.clients}, {args.rounds} round(s)",
            flush=True,
        )
        samples = run_rounds(lab, ports, args)
        lab.read_rss()
    finally:
        lab.stop_all()
        shutil.rmtree(lab.workdir, ignore_errors=True)
    foreign = meter.foreign_share()
    summary = summarise(samples, args.names)
    cpu = summarise_cpu(samples, args.names)
    print_table(summary, lab.rss, args.quick)
    print_cpu_table(cpu)
    print_tls_cost(summary, cpu)
    stolen = meter.steal_share()
    print(f"\nCPU used by other processes during the run: {foreign:.0%} of the machine")
    print(f"CPU stolen by the hypervisor during the run: {stolen:.0%} of the machine")
    if foreign > FOREIGN_CPU:
        print("WARNING: other work was running on the machine; these figures are not clean.")
    if stolen > FOREIGN_CPU:
        print("WARNING: the hypervisor took CPU from this machine; ratios hold, rates do not.")
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        report = {
            "config": config,
            "quick": args.quick,
            "samples": samples,
            "summary": summary,
            "proxy_cpu_us": cpu,
            "rss_kb": lab.rss,
            "foreign_cpu_share": foreign,
            "steal_cpu_share": stolen,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
