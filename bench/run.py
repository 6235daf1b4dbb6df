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
# lab.start_redis() and start_trinomite_node(), and register it in TARGETS
# (targets.py; the process lab is lab.py).
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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab import (
    BENCH_TIMEOUT,
    HOST,
    MODES,
    REPO,
    TESTS,
    CpuMeter,
    Lab,
    Row,
    proc_status_kb,
    report_machine,
    summary_rows,
)
from targets import TARGETS, TLS_TWINS, Options

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
    summary = summary_rows(cells, names, TESTS, list(MODES))
    for row in summary:
        plain = cells.get((TLS_TWINS.get(row["target"], ""), row["test"], row["mode"]))
        if plain:
            row["tls_cost"] = 1 - row["median"] / statistics.median(plain)
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
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run every trinomite target from git revision REV (a temporary "
        "worktree), as <target>@base, and print after/before ratios",
    )
    p.add_argument(
        "--idle-clients",
        type=int,
        default=1000,
        help="idle connections opened to the single node for its idle-RSS figure (0: skip)",
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
    names = list(dict.fromkeys(names))
    if args.baseline:
        names += [t + BASE for t in names if t not in NOT_TRINOMITE]
    args.names = names
    return args


#: The suffix of a target run from the --baseline worktree.
BASE = "@base"
#: Targets that run no trinomite code (a baseline run of them would be the same).
NOT_TRINOMITE = frozenset({"direct", "twemproxy", "naive"})


def baseline_worktree(rev: str, workdir: Path) -> Path:
    """A detached git worktree of ``rev`` under ``workdir`` (removed by the caller)."""
    tree = workdir / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return tree


def print_baseline(summary: list[Row], cpu: list[Row]) -> None:
    """Each target against its @base twin: req/s and CPU per request, after/before."""
    rps = {(r["target"], r["test"], r["mode"]): r for r in summary}
    cpus = {(r["target"], r["mode"]): r["cpu_us"] for r in cpu}
    rows = [r for r in summary if (r["target"] + BASE, r["test"], r["mode"]) in rps]
    if not rows:
        return
    print("\nafter / before (--baseline), medians; req/s >1 and CPU <1 are better:")
    print(f"{'target':<20} {'test':<4} {'mode':<4} {'req/s':>8} {'vs direct':>20} {'CPU/req':>8}")
    for r in rows:
        base = rps[(r["target"] + BASE, r["test"], r["mode"])]
        ratio = r["median"] / base["median"]
        direct = f"{base.get('vs_direct', 0):.3f} -> {r.get('vs_direct', 0):.3f}"
        now, before = cpus.get((r["target"], r["mode"])), cpus.get((r["target"] + BASE, r["mode"]))
        cpu_ratio = f"{now / before:8.2f}" if now and before else f"{'-':>8}"
        print(
            f"{r['target']:<20} {r['test']:<4} {r['mode']:<4} {ratio:8.2f} {direct:>20} {cpu_ratio}"
        )


def idle_rss(pid: int, port: int, clients: int) -> dict[str, int]:
    """VmRSS of ``pid`` before and with ``clients`` idle connections open (kB)."""
    before = proc_status_kb(pid).get("VmRSS", 0)
    sockets = []
    try:
        for _ in range(clients):
            sockets.append(socket.create_connection((HOST, port), timeout=5))
        for sock in sockets[:: max(1, clients // 20)]:  # every connection is accepted
            sock.sendall(b"PING\r\n")
            sock.recv(16)
        time.sleep(0.5)  # bounded: lets the node finish accepting the rest
        loaded = proc_status_kb(pid).get("VmRSS", 0)
    finally:
        for sock in sockets:
            sock.close()
    return {"VmRSS_before": before, "VmRSS_idle_clients": loaded, "clients": clients}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("redis-server", "redis-benchmark", "nutcracker"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found on PATH")
    opts = Options(datastore_connections=args.datastore_connections)
    meter = CpuMeter()
    lab = Lab(Path(tempfile.mkdtemp(prefix="trinomite-bench-")))
    tree = baseline_worktree(args.baseline, lab.workdir) if args.baseline else None
    idle: dict[str, int] = {}
    try:
        ports: dict[str, int] = {}
        for name in args.names:
            lab.target = name
            based = tree is not None and name.endswith(BASE)
            lab.code, lab.suffix = (tree, BASE) if based and tree else (REPO, "")
            ports[name] = TARGETS[name.removesuffix(BASE)](lab, opts)
        lab.target, lab.code, lab.suffix = "", REPO, ""
        single = next((p for p in lab.procs if p.target == "trinomite" and p.watch_rss), None)
        if single is not None and args.idle_clients:
            idle = idle_rss(single.popen.pid, ports["trinomite"], args.idle_clients)
        print(
            f"targets up: {ports}; -n {args.requests} -c {args.clients}, {args.rounds} round(s)",
            flush=True,
        )
        samples = run_rounds(lab, ports, args)
        lab.read_rss()
    finally:
        lab.stop_all()
        if tree is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(lab.workdir, ignore_errors=True)
    foreign = meter.foreign_share()
    summary = summarise(samples, args.names)
    cpu = summarise_cpu(samples, args.names)
    print_table(summary, lab.rss, args.quick)
    print_cpu_table(cpu)
    print_tls_cost(summary, cpu)
    print_baseline(summary, cpu)
    if idle:
        print(
            f"\nsingle node RSS: {idle['VmRSS_before'] / 1024:.1f} MiB at start, "
            f"{idle['VmRSS_idle_clients'] / 1024:.1f} MiB with {idle['clients']} idle clients; "
            "after the run: see VmRSS below"
        )
    for name, kb in lab.rss.items():
        if "VmRSS" in kb:
            print(f"  {name:<28} VmRSS after the run {kb['VmRSS'] / 1024:8.1f} MiB")
    stolen = meter.steal_share()
    clean = report_machine(foreign, stolen)
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
            "clean": clean,
            "idle_rss_kb": idle,
            "steal_cpu_share": stolen,
        }
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0 if clean else 3


if __name__ == "__main__":
    sys.exit(main())
