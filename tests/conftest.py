"""Shared fixtures: real redis-server processes and in-process nodes.

Every server listens on an ephemeral loopback port.  Nodes run inside the
test's own Trio run (pytest-trio), started with ``open_node`` on port 0.
Blocking clients (redis-py, redis-cli) run in threads via ``in_thread``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import trio

from trinomite import DatastoreSpec, HostPort, Node, NodeConfig, open_node
from trinomite.testing import MemcachedServer, RedisServer, memcached_server
from trinomite.testing.faultproxy import FaultProxy, serve_fault_proxy

#: pytester runs example suites against the plugin (tests/test_pytest_plugin.py).
pytest_plugins = ["pytester"]

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def run_node(conf: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m trinomite -o log conf`` from the repository; killed if still running."""
    process = subprocess.Popen(
        [sys.executable, "-m", "trinomite", "-o", str(log), str(conf)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


async def in_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking client call without blocking the node's Trio loop."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def node_config(datastore: DatastoreSpec, **overrides: Any) -> NodeConfig:
    """A single-node config on an ephemeral port in front of ``datastore``."""
    overrides.setdefault("stats_listen", HostPort("127.0.0.1", 0))
    overrides.setdefault("listen", HostPort("127.0.0.1", 0))
    return NodeConfig(servers=(datastore,), **overrides)


def client_for(node: Node, **kwargs: Any) -> redis.Redis:
    address = node.client_address
    assert isinstance(address, HostPort)
    kwargs.setdefault("socket_timeout", 10)
    return redis.Redis(host=address.host, port=address.port, **kwargs)


@pytest.fixture
def memcached_backend() -> Iterator[MemcachedServer]:
    """A memcached of the test's own (a node's datastore, or a reference to compare with)."""
    with memcached_server() as server:
        yield server


@pytest.fixture
def redis_backend() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
async def redis_node(redis_backend: RedisServer) -> AsyncIterator[Node]:
    """A node in front of a real redis-server."""
    config = node_config(DatastoreSpec.tcp(redis_backend.host, redis_backend.port))
    async with open_node(config) as node:
        yield node


@pytest.fixture
async def embedded_node() -> AsyncIterator[Node]:
    """A node in front of the embedded datastore."""
    async with open_node(node_config(DatastoreSpec.embedded())) as node:
        yield node


@pytest.fixture(name="proxy")
async def proxy_fixture(nursery: trio.Nursery, redis_backend: RedisServer) -> FaultProxy:
    """A fault proxy (in pass mode) in front of the ``redis_backend`` fixture."""
    started: FaultProxy = await nursery.start(
        serve_fault_proxy, redis_backend.host, redis_backend.port
    )
    return started
