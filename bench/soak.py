"""Soak: a cluster of node processes under steady load while a nemesis breaks parts of it.

Theory of operation
-------------------
Four ``python -m trinomite`` processes (one DC, two racks of two nodes, each
in front of its own redis-server) serve ``--clients`` threads of SET/GET
through random nodes.  Every ``--nemesis`` seconds the nemesis picks a
fault and undoes it ``--outage`` seconds later: SIGKILL one redis-server,
or SIGKILL the *victim* node (always the same one, rack2's second node),
restarting either on the same port.  Every ``--report`` seconds the run
prints, for each node that is never killed, its RSS, open fds and Trio
task count (from its own ``/info``, sampled while no fault is in force, five
seconds after the last one was undone), and the clients' p99 latency, ops
and errors for the window.

After ``--warmup`` windows, each survivor's RSS, fds and tasks must stay
within +-10% of their first measured value (the exit status says whether
they did); errors are expected while a part is down and are only counted.
Bounded: the run stops after ``--minutes``, and every process it started
is killed on the way out.  ``nox -s soak`` runs it for 10 minutes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import redis

from trinomite.testing import RedisServer, free_ports

LAYOUT = [("rack1", 0), ("rack1", 2147483648), ("rack2", 0), ("rack2", 2147483648)]
VICTIM = 3
FLAT = 0.10
#: Seconds after the last fault is undone before sampling (reconnect backoff).
SETTLE = 5.0


class Node:
    def __init__(self, index: int, rack: str, token: int, ports: list[int], store: RedisServer):
        self.index, self.rack, self.token = index, rack, token
        self.client, self.peer, self.stats = ports
        self.store = store
        self.process: subprocess.Popen[bytes] | None = None

    def config(self, others: list[Node]) -> str:
        seeds = "".join(
            f"  - 127.0.0.1:{o.peer}:{o.rack}:dc1:{o.token}\n" for o in others if o is not self
        )
        return (
            "dyn_o_mite:\n  datacenter: dc1\n"
            f"  rack: {self.rack}\n  tokens: '{self.token}'\n"
            f"  listen: 127.0.0.1:{self.client}\n  dyn_listen: 127.0.0.1:{self.peer}\n"
            f"  stats_listen: 127.0.0.1:{self.stats}\n"
            f"  servers:\n  - 127.0.0.1:{self.store.port}:1\n"
            "  timeout: 1000\n  server_retry_timeout: 1000\n"
            f"  dyn_seed_provider: simple_provider\n  dyn_seeds:\n{seeds}"
        )

    def start(self, path: Path, log: Path) -> None:
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trinomite", str(path)], stdout=out, stderr=out
            )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def info(self) -> dict[str, object]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats}/info", timeout=5) as reply:
            data: dict[str, object] = json.load(reply)
            return data


class Load:
    """Client threads: SET then GET of random keys through random nodes."""

    def __init__(self, nodes: list[Node], clients: int) -> None:
        self.nodes = nodes
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.ok = self.errors = 0
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(clients)]

    def run(self, seed: int) -> None:
        rng = random.Random(seed)
        clients = [redis.Redis(port=n.client, socket_timeout=5, retry=None) for n in self.nodes]
        while not self.stop.is_set():
            client = rng.choice(clients)
            key = f"soak:{rng.randrange(10_000)}"
            start = time.perf_counter()
            try:
                client.set(key, "v" * rng.randrange(1, 512))
                client.get(key)
            except (redis.RedisError, OSError):
                with self.lock:
                    self.errors += 1
                time.sleep(0.01)
                continue
            with self.lock:
                self.latencies.append(time.perf_counter() - start)
                self.ok += 2

    def window(self) -> tuple[float, int, int]:
        with self.lock:
            latencies, self.latencies = sorted(self.latencies), []
            ok, errors, self.ok, self.errors = self.ok, self.errors, 0, 0
        p99 = latencies[int(len(latencies) * 0.99)] if latencies else float("nan")
        return p99 * 1e3, ok, errors


def nemesis(
    nodes: list[Node],
    paths: list[Path],
    logs: list[Path],
    args: argparse.Namespace,
    stop: threading.Event,
    events: list[str],
    healthy: threading.Event,
) -> None:
    rng = random.Random(7)
    turns = itertools.count()
    while not stop.wait(args.nemesis):
        healthy.clear()
        if rng.random() < 0.5:
            node = nodes[VICTIM]
            events.append(f"kill node {node.index}")
            node.kill()
            stop.wait(args.outage)
            node.start(paths[VICTIM], logs[VICTIM])
        else:
            store = nodes[next(turns) % len(nodes)].store  # each datastore in turn
            events.append(f"kill redis :{store.port}")
            store.stop()
            stop.wait(args.outage)
            store.start()
        healthy.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--report", type=float, default=30.0, help="seconds per window")
    parser.add_argument("--nemesis", type=float, default=20.0, help="seconds between faults")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds a fault lasts")
    parser.add_argument("--warmup", type=int, default=2, help="windows before measuring")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="trinomite-soak-"))
    ports = iter(free_ports(3 * len(LAYOUT)))
    stores = [RedisServer() for _ in LAYOUT]
    nodes = [
        Node(i, rack, token, [next(ports), next(ports), next(ports)], stores[i])
        for i, (rack, token) in enumerate(LAYOUT)
    ]
    paths = [work / f"node{i}.yml" for i in range(len(nodes))]
    logs = [work / f"node{i}.log" for i in range(len(nodes))]
    stop = threading.Event()
    healthy = threading.Event()
    healthy.set()
    events: list[str] = []
    load = Load(nodes, args.clients)
    history: dict[int, list[tuple[int, int, int]]] = {n.index: [] for n in nodes}
    try:
        for store in stores:
            store.start()
        for node, path, log in zip(nodes, paths, logs, strict=True):
            path.write_text(node.config(nodes))
            node.start(path, log)
        time.sleep(3)
        for thread in load.threads:
            thread.start()
        chaos = threading.Thread(
            target=nemesis, args=(nodes, paths, logs, args, stop, events, healthy), daemon=True
        )
        chaos.start()
        deadline = time.monotonic() + args.minutes * 60
        window = 0
        print(
            f"soak: {len(nodes)} nodes, {args.clients} clients, {args.minutes:g} min, "
            f"a fault every {args.nemesis:g}s for {args.outage:g}s; logs in {work}"
        )
        while time.monotonic() < deadline:
            time.sleep(min(args.report, max(0.0, deadline - time.monotonic())))
            window += 1
            p99, ok, errors = load.window()
            # Sample with every part up and relinked, so counts compare like with like.
            for _ in range(3):
                healthy.wait(args.outage + 5)
                time.sleep(SETTLE)
                if healthy.is_set():
                    break
            cells = []
            for node in nodes:
                if node.index == VICTIM:
                    continue
                info = node.info()
                sample = (int(info["dyn_memory"]), int(info["open_fds"]), int(info["trio_tasks"]))
                if window > args.warmup:
                    history[node.index].append(sample)
                cells.append(
                    f"n{node.index} {sample[0] / 2**20:.1f}MB {sample[1]}fd {sample[2]}tasks"
                )
            faults, events[:] = list(events), []
            print(
                f"[{window:3d}] p99 {p99:6.2f} ms  ops {ok:7d}  errors {errors:5d}  "
                + "  ".join(cells)
                + (f"  ({'; '.join(faults)})" if faults else ""),
                flush=True,
            )
    finally:
        stop.set()
        load.stop.set()
        for thread in load.threads:
            thread.join(10)
        for node in nodes:
            node.kill()
        for store in stores:
            store.close()
    flat = True
    for index, samples in history.items():
        if len(samples) < 2:
            continue
        for name, column in zip(("RSS", "fds", "tasks"), zip(*samples, strict=True), strict=True):
            first, low, high = column[0], min(column), max(column)
            drift = max(high - first, first - low) / first
            ok = drift <= FLAT
            flat &= ok
            print(
                f"node {index} {name}: first {first}, min {low}, max {high}, "
                f"drift {drift:.1%} {'ok' if ok else 'OVER +-10%'}"
            )
    print("flat" if flat else "NOT flat")
    return 0 if flat else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
