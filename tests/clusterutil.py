"""Helpers shared by the cluster tests (``tests/test_cluster_*.py``).

Every cluster test runs a whole topology in-process (``open_cluster``) with
one real redis-server per node, talks to it through real clients (redis-py
in a thread, or ``RawClient``), and inspects the backends directly.

Waiting follows two rules:

* a peer link going down is an event (``PeerPools.wait_changed``), so
  ``stop`` waits for it without polling;
* replication to racks nobody waits for (DC_ONE's other racks, remote DCs)
  and a datastore coming back are done by other processes and by reconnect
  backoff: ``wait_until`` polls those, bounded in count and time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import trio

from trinomite.peering.coordinator import ClusterCounters
from trinomite.testing.cluster import Cluster, ClusterNode, Layout, open_cluster

from .conftest import in_thread

__all__ = [
    "NOT_CONNECTED",
    "NO_QUORUM",
    "WAIT",
    "attempt",
    "call",
    "counters",
    "direct",
    "error",
    "holders",
    "in_thread",
    "keys_owned_by",
    "peer_name",
    "rack_pair",
    "racks",
    "redis_cluster",
    "replicas",
    "stop",
    "stored",
    "wait_until",
]

#: How long any single wait in these tests may take.
WAIT = 10.0
#: Polling interval for ``wait_until``.
STEP = 0.02
#: Errors as redis-py reports them (it strips the leading ``ERR ``).
NOT_CONNECTED = "Peer: Peer Node is not connected"
NO_QUORUM = "Dynomite: Failed to achieve Quorum"


@asynccontextmanager
async def redis_cluster(layout: Layout, **config: Any) -> AsyncIterator[Cluster]:
    """``open_cluster`` with redis-server datastores and quick (500 ms max) reconnects."""
    config.setdefault("server_retry_timeout", 500)
    async with open_cluster(layout, datastore="redis", **config) as cluster:
        yield cluster


async def call(client: redis.Redis, *args: Any) -> Any:
    """One command through a redis-py client, off the Trio loop."""
    return await in_thread(client.execute_command, *args)


async def error(client: redis.Redis, *args: Any) -> str:
    """The error message a command gets (the command must fail)."""
    with pytest.raises(redis.ResponseError) as info:
        await call(client, *args)
    return str(info.value)


def _direct(member: ClusterNode, *args: Any) -> Any:
    with member.datastore(socket_timeout=WAIT) as client:
        return client.execute_command(*args)


async def direct(member: ClusterNode, *args: Any) -> Any:
    """One command straight to a node's own redis-server (bypassing every node)."""
    return await in_thread(_direct, member, *args)


async def attempt(client: redis.Redis, *args: Any) -> Any:
    """A command's reply, or the ``ResponseError`` it got."""
    try:
        return await call(client, *args)
    except redis.ResponseError as exc:
        return exc


async def stored(member: ClusterNode, key: bytes | str) -> bytes | None:
    """``GET key`` straight from a node's own redis-server."""
    value: bytes | None = await direct(member, "GET", key)
    return value


def racks(cluster: Cluster) -> list[tuple[str, str]]:
    """Every (dc, rack) of the cluster, in layout order."""
    return list(dict.fromkeys((n.dc, n.rack) for n in cluster.nodes))


def replicas(cluster: Cluster, key: bytes) -> list[ClusterNode]:
    """The owner of ``key`` in every rack of every DC: where its copies belong."""
    return [cluster.owner(dc, rack, key) for dc, rack in racks(cluster)]


def keys_owned_by(
    cluster: Cluster, member: ClusterNode, count: int, prefix: str = "key"
) -> list[bytes]:
    """``count`` keys whose owner in ``member``'s rack is ``member``."""
    keys: list[bytes] = []
    for i in range(10_000):
        key = f"{prefix}:{i}".encode()
        if cluster.owner(member.dc, member.rack, key) is member:
            keys.append(key)
            if len(keys) == count:
                return keys
    raise AssertionError(f"found only {len(keys)} keys owned by {member.name}")


def rack_pair(cluster: Cluster) -> tuple[ClusterNode, ClusterNode, bytes, bytes]:
    """dc1/r1's first two nodes (coordinator, other), a key the other owns, one the first owns."""
    coordinator, other = cluster.rack("dc1", "r1")[:2]
    (key,) = keys_owned_by(cluster, other, 1)
    (local_key,) = keys_owned_by(cluster, coordinator, 1)
    return coordinator, other, key, local_key


def peer_name(member: ClusterNode) -> str:
    """The name other nodes know ``member`` by (its peer address)."""
    return f"127.0.0.1:{member.peer_port}"


def counters(member: ClusterNode) -> ClusterCounters:
    assert member.node is not None, f"{member.name} is not running"
    return member.node.cluster_counters


async def stop(cluster: Cluster, *members: ClusterNode) -> None:
    """Stop nodes and wait until every running node sees their peer links down."""
    for member in members:
        await cluster.stop_node(member)
    names = {peer_name(m) for m in members}
    with trio.fail_after(WAIT):
        while True:
            seeing = [
                n.node
                for n in cluster.nodes
                if n.node is not None and any(n.node.peers.is_up(name) for name in names)
            ]
            if not seeing:
                return
            await seeing[0].peers.wait_changed()


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds (only for other processes and reconnects)."""
    with trio.move_on_after(WAIT):
        for _ in range(int(WAIT / STEP) + 1):
            if await check():
                return
            await trio.sleep(STEP)
    raise AssertionError(f"gave up waiting for {what}")


async def holders(members: Iterable[ClusterNode], key: bytes) -> set[str]:
    """Names of the nodes whose redis-server holds ``key``."""
    found: set[str] = set()
    for member in members:
        if await direct(member, "EXISTS", key):
            found.add(member.name)
    return found
