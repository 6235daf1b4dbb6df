"""``python -m trinomite node.yml`` with a Dynomite file, a real redis-server and real tools.

The config is Dynomite's own single-node layout (only the ports are changed
to free ones): the node must accept it unchanged and then serve redis-cli,
redis-py with default options (RESP3 HELLO, CLIENT SETINFO) and
redis-benchmark (which probes CONFIG GET first).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from trinomite.testing import RedisServer, free_ports

from .conftest import run_node

ROOT = Path(__file__).resolve().parent.parent

DYNOMITE_SINGLE = """\
dyn_o_mite:
  datacenter: dc
  rack: rack1
  dyn_listen: 127.0.0.1:{dyn}
  dyn_seed_provider: simple_provider
  listen: 127.0.0.1:{port}
  servers:
  - 127.0.0.1:{redis}:1
  tokens: '101134286'
  data_store: 0
  stats_listen: 127.0.0.1:{stats}
"""


@pytest.fixture
def node_process(tmp_path: Path, redis_backend: RedisServer) -> Iterator[int]:
    port, dyn, stats = free_ports(3)  # one batch: three distinct ports
    conf = tmp_path / "redis_single.yml"
    conf.write_text(
        DYNOMITE_SINGLE.format(port=port, dyn=dyn, stats=stats, redis=redis_backend.port)
    )
    log = tmp_path / "node.log"
    with run_node(conf, log) as process:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            probe = subprocess.run(
                ["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True, timeout=5
            )
            if probe.stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"node did not start (exit {process.poll()}): {log.read_text()}")
        yield port
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def cli(port: int, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


@pytest.mark.slow
def test_cli_node_serves_redis_cli_redis_py_and_benchmark(node_process, redis_backend):
    port = node_process
    assert cli(port, "SET", "tool", "redis-cli").strip() == "OK"
    assert cli(port, "GET", "tool").strip() == "redis-cli"
    # Several commands on one connection: the error does not close it.
    out = [line for line in cli(port, stdin="INCR c\nBOGUS x\nINCR c\n").splitlines() if line]
    assert out[0] == "1"
    assert out[1].startswith("ERR unknown command 'BOGUS'")
    assert out[2] == "2"

    client = redis.Redis(port=port, socket_timeout=10)  # default options: RESP3
    assert client.get("tool") == b"redis-cli"
    assert client.client_info()["lib-name"].startswith("redis-py")
    client.close()

    bench = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-q", "-t", "set,get", "-n", "2000", "-c", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bench.returncode == 0, bench.stderr
    assert "SET:" in bench.stdout
    assert "GET:" in bench.stdout
    assert "requests per second" in bench.stdout
    # The data really is in the redis-server behind the node.
    direct = redis.Redis(port=redis_backend.port)
    assert direct.get("tool") == b"redis-cli"
    assert direct.get("c") == b"2"
    direct.close()
