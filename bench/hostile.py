"""Hostile clients against one node process: what they cost the well-behaved ones.

Theory of operation
-------------------
One ``python -m trinomite`` node in front of a redis-server.  A
well-behaved redis-py client measures GET latency (p50, p99 over
``--requests`` calls) alone, then with ``--lorises`` slowloris connections
attached (each sends a byte of an unfinished request every 2 s), and the
node's RSS (from its ``/info``) is read after each phase, and after:

* ``pipeliners``: 4 clients that pipeline 2,000 GETs of a 100 KB value and
  never read (each is cut at ``client_output_buffer_limit``);
* ``bulks``: 4 clients that each declare a 512 MiB bulk and send 128 MiB of
  it (the sum passes ``client_memory_budget``; the biggest are cut).

Prints one table; figures go in notes and docs, never into a timed test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import redis

from trinomite.testing import RedisServer, free_ports

MIB = 1024 * 1024


def info(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as reply:
        data: dict[str, object] = json.load(reply)
        return data


def pool_stat(data: dict[str, object], name: str) -> int:
    pool = data["dyn_o_mite"]
    assert isinstance(pool, dict)
    return int(pool[name])


def latencies(client: redis.Redis, count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        client.get("k")
        samples.append(time.perf_counter() - start)
    samples.sort()
    return samples[len(samples) // 2] * 1e3, samples[int(len(samples) * 0.99)] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--lorises", type=int, default=500)
    args = parser.parse_args()

    store = RedisServer()
    store.start()
    client_port, stats_port = free_ports(2)
    work = Path(tempfile.mkdtemp(prefix="trinomite-hostile-"))
    config = work / "node.yml"
    config.write_text(
        "dyn_o_mite:\n"
        f"  listen: 127.0.0.1:{client_port}\n  stats_listen: 127.0.0.1:{stats_port}\n"
        f"  servers:\n  - 127.0.0.1:{store.port}:1\n  tokens: '0'\n"
    )
    with open(work / "node.log", "wb") as log:
        node = subprocess.Popen(
            [sys.executable, "-m", "trinomite", str(config)], stdout=log, stderr=log
        )
    rows: list[tuple[str, str]] = []
    lorises: list[socket.socket] = []
    stop = threading.Event()
    try:
        good = redis.Redis(port=client_port, socket_timeout=10)
        for _ in range(100):
            try:
                good.set("k", "v" * 100)
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        latencies(good, 500)  # warm up
        p50, p99 = latencies(good, args.requests)
        rows.append(
            (
                "alone",
                f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, RSS {pool_or_top(stats_port) / MIB:.1f} MB",
            )
        )

        for _ in range(args.lorises):
            sock = socket.create_connection(("127.0.0.1", client_port))
            sock.sendall(b"*2\r\n$3\r\nGET\r\n$1")
            lorises.append(sock)

        def drip() -> None:
            while not stop.wait(2):
                for sock in lorises:
                    with contextlib.suppress(OSError):
                        sock.send(b"\r")

        threading.Thread(target=drip, daemon=True).start()
        p50, p99 = latencies(good, args.requests)
        rows.append(
            (
                f"{args.lorises} slowloris attached",
                f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, RSS {pool_or_top(stats_port) / MIB:.1f} MB",
            )
        )
        stop.set()
        for sock in lorises:
            sock.close()

        good.set("big", b"x" * 100 * 1024)
        hogs = []
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", client_port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n" * 2000)
            hogs.append(sock)
        time.sleep(3)
        data = info(stats_port)
        rows.append(
            (
                "4 pipeliners, 200 MB unread each",
                f"RSS {int(data['dyn_memory']) / MIB:.1f} MB, "
                f"output-limit closes {pool_stat(data, 'client_output_limit_closes')}, "
                f"GET still {latencies(good, 200)[1]:.3f} ms p99",
            )
        )
        for sock in hogs:
            sock.close()

        bulks = []
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", client_port))
            sock.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nh\r\n$536870912\r\n")
            bulks.append(sock)
        chunk = b"y" * MIB
        for _ in range(128):
            for sock in bulks:
                with contextlib.suppress(OSError):
                    sock.sendall(chunk)
        time.sleep(2)
        data = info(stats_port)
        rows.append(
            (
                "4 x 128 MB of 512 MB bulks",
                f"RSS {int(data['dyn_memory']) / MIB:.1f} MB, "
                f"budget evictions {pool_stat(data, 'client_memory_evictions')}, "
                f"buffered {pool_stat(data, 'client_buffered_bytes') / MIB:.1f} MB, "
                f"GET still {latencies(good, 200)[1]:.3f} ms p99",
            )
        )
        for sock in bulks:
            sock.close()
    finally:
        stop.set()
        node.kill()
        node.wait()
        store.close()
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")


def pool_or_top(stats_port: int) -> int:
    return int(info(stats_port)["dyn_memory"])


if __name__ == "__main__":
    main()
