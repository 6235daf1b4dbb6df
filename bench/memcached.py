"""Memcached benchmark: trinomite (data_store: 1) against memcached and twemproxy.

Theory of operation
-------------------
One run starts every target from scratch, each with its own ``memcached``
(``-U 0 -l 127.0.0.1 -p PORT -t 1``, plus ``-u root`` when run as root) on a
free loopback port, through the same process ``Lab`` as ``bench/run.py``
(``lab.py``), and drives them all with one load generator, interleaved: round
1 runs every target in every test and pipelining mode, then round 2, ...,
with the target order rotated per round so machine drifts are shared by all
targets. Per cell (target x test x mode) it reports the median req/s over
rounds with min/max, ratios of medians to ``direct`` and ``twemproxy``, and
the proxy processes' CPU time per request (from /proc/PID/stat around every
load-generator run; a cluster's nodes summed), then each proxy's peak RSS
(VmHWM). CPU used by other processes during the run is measured with
lab.CpuMeter; over lab.FOREIGN_CPU (10%) the run is printed NOT CLEAN and the
script exits with status 3.

Targets:

- ``direct``: memcached itself; the ceiling.
- ``twemproxy``: nutcracker with a one-server pool, ``redis: false``
  (``fnv1a_64``/``ketama``, ``timeout: 5000``, ``preconnect: true``, one
  server connection).
- ``single``: one trinomite node, ``data_store: 1``, ``tokens: '0'``, one
  datastore connection, in front of its own memcached.
- ``cluster-one``: two racks of one node each in dc1 (each node its own
  process and memcached), ``tokens: '0'`` on both, DC_ONE reads and writes;
  the bench talks to rack1's node, so every write is also replicated to rack2.
  The start waits until a key set through each node has reached the other
  node's memcached, so both peer links carry writes before measuring.

Trinomite nodes run as ``python -m trinomite node.yml`` (targets.py's
``start_trinomite_node``); a node is ready when a ``set`` through it is
``STORED`` (the RESP ``PING`` of lab.py does not apply, so ``McLab``
overrides ``wait_ready``).

Tests, each with ``--clients`` connections (default 50), once unpipelined
(``P1``) and once with 16 requests in flight per connection (``P16``):

- ``set``: ``set key:NNNNNNN 0 0 <value-size>`` (32-byte values by default),
  keys in turn over a key space of ``--keyspace`` keys, so every key exists
  after the first ``set`` run of a target;
- ``get``: ``get key:NNNNNNN`` of those keys (every reply must be a hit);
- ``mget``: ``get k1 ... k10``, ten consecutive keys per request (one
  request = one ``get`` line of 10 keys; req/s counts lines, not keys).

The load generator is a small C program (``bench/mcload.c``),
compiled with ``cc -O2`` into the run's work directory at start. Why not
the alternatives: a Python generator needs several processes to push
memcached and would then take most of the 2-core machine from the processes
under test, its own speed (not the target's) limiting the direct and
twemproxy cells; ``memcslap`` (libmemcached-tools) reports only coarse totals,
mixes its own get/set ratio and warm-up into them, and offers no pipelining
of plain ``get``/``set`` or fixed multi-get width, so cells would not line up
with the Redis bench. The C generator is one thread with epoll, like
redis-benchmark: every connection sends a batch of P requests, reads all P
replies (parsing VALUE/END/STORED properly, counting hits, misses and error
replies), and sends the next batch, until ``--requests`` requests have been
answered; the clock starts once all connections are open. Each run is
bounded by a request count and by ``RUN_TIMEOUT`` seconds (the generator
gives up itself and the subprocess is killed a little later). Any error
reply, or a miss in ``get``/``mget``, fails the run.

Everything runs on 127.0.0.1 with free ephemeral ports; every wait and
subprocess is bounded in time; every process is stopped at the end.

Usage: python3 bench/memcached.py [--requests N] [--rounds R]
       [--targets direct,twemproxy,single,cluster-one] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lab import (
    HOST,
    CpuMeter,
    Lab,
    Row,
    free_port,
    report_machine,
    summary_rows,
    yaml_block,
)
from lab import tail as log_tail
from targets import start_trinomite_node

MODES = {"P1": 1, "P16": 16}
TESTS = ("set", "get", "mget")
MGET_KEYS = 10
RUN_TIMEOUT = 120  # seconds for one load-generator run
COMPILE_TIMEOUT = 60  # seconds for cc
CLUSTER_TIMEOUT = 20.0  # seconds for a cluster's replication to show

# ---- the load generator ----------------------------------------------------

#: The load generator's source (compiled at start: ``build_loadgen``).
LOADGEN_C = Path(__file__).with_name("mcload.c")


def build_loadgen(workdir: Path) -> Path:
    """Compile ``mcload.c`` into ``workdir``; the binary's path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("no C compiler (cc) on PATH: the memcached load generator is compiled at start")
    source, binary = LOADGEN_C, workdir / "mcload"
    done = subprocess.run(
        [cc, "-O2", "-Wall", "-o", str(binary), str(source)],
        capture_output=True,
        text=True,
        timeout=COMPILE_TIMEOUT,
    )
    if done.returncode:
        sys.exit(f"compiling the load generator failed:\n{done.stderr}")
    return binary


def loadgen(binary: Path, port: int, test: str, depth: int, args: argparse.Namespace) -> Row:
    """One run of the load generator; its figures (rps, values, misses, ...)."""
    argv = [str(binary), HOST, str(port), test, str(args.requests), str(args.clients)]
    argv += [str(depth), str(args.keyspace), str(args.value_size), str(MGET_KEYS)]
    argv.append(str(RUN_TIMEOUT))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT + 10)
    figures: Row = {}
    for item in done.stdout.split():
        key, _, value = item.partition("=")
        figures[key] = float(value)
    expected_values = args.requests * (MGET_KEYS if test == "mget" else 1)
    problems = []
    if done.returncode:
        problems.append(f"exit status {done.returncode}")
    if figures.get("answered") != args.requests:
        problems.append(f"{figures.get('answered')} of {args.requests} answered")
    if figures.get("errors"):
        problems.append(f"{figures['errors']:.0f} error replies")
    if test != "set" and (figures.get("misses") or figures.get("values") != expected_values):
        problems.append(
            f"{figures.get('misses', 0):.0f} misses, {figures.get('values', 0):.0f} values "
            f"of {expected_values}"
        )
    if problems:
        raise RuntimeError(
            f"{test} P{depth} on :{port}: {'; '.join(problems)}\n{done.stdout}{done.stderr}"
        )
    return figures


# ---- targets ---------------------------------------------------------------


def stored(port: int, key: str = "__bench_ready") -> bool:
    """True when a ``set`` through ``port`` answers STORED."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(f"set {key} 0 0 1\r\n1\r\n".encode())
            return s.recv(64) == b"STORED\r\n"
    except OSError:
        return False


def has_key(port: int, key: str) -> bool:
    """True when memcached on ``port`` holds ``key``."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            s.sendall(f"get {key}\r\n".encode())
            reply = b""
            while not reply.endswith(b"END\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    return False
                reply += chunk
            return reply.startswith(b"VALUE ")
    except OSError:
        return False


class McLab(Lab):
    """A Lab whose processes speak memcached: ready means a ``set`` is STORED."""

    ready_what = "store a key"

    def is_ready(self, port: int) -> bool:
        return stored(port)

    def start_memcached(self, name: str) -> int:
        def argv(port: int) -> list[str]:
            root = ["-u", "root"] if os.geteuid() == 0 else []
            return ["memcached", "-U", "0", "-l", HOST, "-p", str(port), "-t", "1", *root]

        return self.start_server(name, argv)


def start_direct(lab: McLab) -> int:
    return lab.start_memcached("memcached-direct")


def start_twemproxy(lab: McLab) -> int:
    backend, port = lab.start_memcached("memcached-twemproxy"), free_port()
    conf = yaml_block(
        "bench",
        {
            "listen": f"{HOST}:{port}",
            "hash": "fnv1a_64",
            "distribution": "ketama",
            "redis": "false",
            "timeout": 5000,
            "preconnect": "true",
            "auto_eject_hosts": "false",
            "server_connections": 1,
            "servers": [f"{HOST}:{backend}:1"],
        },
    )
    conf_path, out = lab.write("twemproxy-mc.yml", conf), lab.workdir / "nutcracker-mc.out"
    argv = ["nutcracker", "-c", str(conf_path), "-o", str(out)]
    argv += f"-s {free_port()} -a {HOST}".split()  # stats port, loopback only
    return lab.wait_ready(lab.spawn("twemproxy-mc", argv, watch_rss=True), port)


def start_single(lab: McLab) -> int:
    backend = lab.start_memcached("memcached-single")
    return start_trinomite_node(
        lab,
        "trinomite-mc",
        {
            "servers": [f"{HOST}:{backend}:1"],
            "tokens": "'0'",
            "data_store": 1,
            "datastore_connections": 1,
        },
    )


def start_cluster_one(lab: McLab) -> int:
    """Two racks of one node each in dc1 at DC_ONE; the rack1 node's port."""
    ports, dyn_ports = [free_port(), free_port()], [free_port(), free_port()]
    racks = ["rack1", "rack2"]
    backends = [0, 0]
    for i in (1, 0):  # the node the benchmark talks to starts last
        other = 1 - i
        backends[i] = lab.start_memcached(f"memcached-cluster-{racks[i]}")
        start_trinomite_node(
            lab,
            f"trinomite-mc-cluster-{racks[i]}",
            {
                "servers": [f"{HOST}:{backends[i]}:1"],
                "tokens": "'0'",
                "data_store": 1,
                "datacenter": "dc1",
                "rack": racks[i],
                "dyn_seeds": [f"{HOST}:{dyn_ports[other]}:{racks[other]}:dc1:0"],
                "read_consistency": "DC_ONE",
                "write_consistency": "DC_ONE",
                "server_retry_timeout": 1000,
                "datastore_connections": 1,
            },
            port=ports[i],
            dyn_port=dyn_ports[i],
        )
    # Replication is asynchronous at DC_ONE: set a fresh key through each node
    # until it shows in the other rack's memcached (both peer links carry writes).
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    for i in (0, 1):
        key = f"__bench_repl_{racks[i]}"
        while not (stored(ports[i], key) and has_key(backends[1 - i], key)):
            if time.monotonic() > deadline:
                logs = "".join(log_tail(p) for p in lab.procs if p.target == lab.target)
                raise RuntimeError(
                    f"cluster: a key set on {racks[i]} did not reach the other rack "
                    f"within {CLUSTER_TIMEOUT} s{logs}"
                )
            time.sleep(0.1)
    return ports[0]


TARGETS: dict[str, Callable[[McLab], int]] = {
    "direct": start_direct,
    "twemproxy": start_twemproxy,
    "single": start_single,
    "cluster-one": start_cluster_one,
}

# ---- rounds and summary ----------------------------------------------------


def run_rounds(lab: McLab, binary: Path, ports: dict[str, int], args: argparse.Namespace):
    """Every target x mode x test per round (target order rotated); one sample each."""
    samples: list[Row] = []
    names = list(ports)
    for rnd in range(args.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for name in order:
            for mode, depth in MODES.items():
                cells = []
                for test in TESTS:  # set first: get and mget read the keys it wrote
                    cpu_before = lab.proxy_cpu(name)
                    figures = loadgen(binary, ports[name], test, depth, args)
                    cpu_after = lab.proxy_cpu(name)
                    cpu_us = None
                    if cpu_before is not None and cpu_after is not None:
                        cpu_us = (cpu_after - cpu_before) * 1e6 / args.requests
                    samples.append(
                        {
                            "round": rnd + 1,
                            "target": name,
                            "test": test,
                            "mode": mode,
                            "rps": figures["rps"],
                            "seconds": figures["seconds"],
                            "cpu_us": cpu_us,
                        }
                    )
                    cpu = f" ({cpu_us:5.1f} us)" if cpu_us is not None else ""
                    cells.append(f"{test} {figures['rps']:>9,.0f}{cpu}")
                print(f"  round {rnd + 1}  {name:<12} {mode:<4} " + "  ".join(cells), flush=True)
    return samples


def summarise(samples: list[Row], names: list[str]) -> list[Row]:
    rps: dict[tuple[str, str, str], list[float]] = {}
    cpu: dict[tuple[str, str, str], list[float]] = {}
    for s in samples:
        cell = (s["target"], s["test"], s["mode"])
        rps.setdefault(cell, []).append(s["rps"])
        if s["cpu_us"] is not None:
            cpu.setdefault(cell, []).append(s["cpu_us"])
    summary = summary_rows(rps, names, TESTS, list(MODES))
    for row in summary:
        cell = (row["target"], row["test"], row["mode"])
        if cell in cpu:
            row["cpu_us"] = statistics.median(cpu[cell])
    return summary


def print_table(summary: list[Row], rss: dict[str, dict[str, int]]) -> None:
    print()
    head = f"{'target':<12} {'test':<4} {'mode':<4} {'median req/s':>13} {'min':>10} {'max':>10}"
    print(f"{head} {'vs direct':>9} {'vs twem':>8} {'proxy CPU us/req':>17}")
    for r in summary:
        ratios = "".join(
            f" {r[k]:>8.2f}x" if k in r else f" {'-':>9}" for k in ("vs_direct", "vs_twemproxy")
        )
        cpu = f"{r['cpu_us']:>17.1f}" if "cpu_us" in r else f"{'-':>17}"
        print(
            f"{r['target']:<12} {r['test']:<4} {r['mode']:<4} {r['median']:>13,.0f} "
            f"{r['min']:>10,.0f} {r['max']:>10,.0f}{ratios} {cpu}"
        )
    print(f"  (mget: one request = one get of {MGET_KEYS} keys; cluster CPU: both nodes)")
    if rss:
        print("\npeak RSS (VmHWM) of proxy processes:")
        for name, kb in rss.items():
            print(f"  {name:<32} {kb.get('VmHWM', 0) / 1024:8.1f} MiB")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trinomite memcached benchmark (see the docstring)")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS)}",
    )
    p.add_argument(
        "-n", "--requests", type=int, default=150_000, help="requests per test run (default 150000)"
    )
    p.add_argument("-c", "--clients", type=int, default=50, help="connections per test run")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--keyspace", type=int, default=10_000, help="distinct keys (default 10000)")
    p.add_argument("--value-size", type=int, default=32, help="bytes per value (default 32)")
    p.add_argument("--json", type=Path, help="write all raw figures to this file")
    args = p.parse_args(argv)
    names = list(dict.fromkeys(t for t in args.targets.split(",") if t))
    unknown = [t for t in names if t not in TARGETS]
    if unknown or not names:
        p.error(f"unknown targets {unknown}; choose from {','.join(TARGETS)}")
    if args.rounds < 1 or args.requests < 1 or args.clients < 1 or args.value_size < 1:
        p.error("--rounds, --requests, --clients and --value-size must be positive")
    # Every key get/mget asks for must have been set by the set run before them.
    args.keyspace = max(1, min(args.keyspace, args.requests))
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("memcached", "nutcracker"):
        if shutil.which(tool) is None and (tool == "memcached" or "twemproxy" in args.names):
            sys.exit(f"{tool} not found on PATH")
    meter = CpuMeter()
    lab = McLab(Path(tempfile.mkdtemp(prefix="trinomite-bench-mc-")))
    try:
        binary = build_loadgen(lab.workdir)
        ports: dict[str, int] = {}
        for name in args.names:
            lab.target = name
            ports[name] = TARGETS[name](lab)
        lab.target = ""
        print(
            f"targets up: {ports}; {args.requests} requests x {args.clients} clients per run, "
            f"{args.value_size}-byte values over {args.keyspace} keys, {args.rounds} round(s)",
            flush=True,
        )
        samples = run_rounds(lab, binary, ports, args)
        lab.read_rss()
    finally:
        lab.stop_all()
        shutil.rmtree(lab.workdir, ignore_errors=True)
    foreign = meter.foreign_share()
    stolen = meter.steal_share()
    summary = summarise(samples, args.names)
    print_table(summary, lab.rss)
    if args.rounds < 3:
        print("\nfewer than 3 rounds: the medians are not robust; use --rounds 3 or more.")
    clean = report_machine(foreign, stolen)
    if args.json:
        config = {k: v for k, v in vars(args).items() if k != "json"}
        report = {
            "config": config,
            "samples": samples,
            "summary": summary,
            "rss_kb": lab.rss,
            "foreign_cpu_share": foreign,
            "steal_cpu_share": stolen,
            "clean": clean,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if clean else 3


if __name__ == "__main__":
    sys.exit(main())
