"""A whole in-process cluster for synchronous code: a background thread with its own Trio loop.

Theory of operation
-------------------
``run_in_thread(layout, **options)`` is a plain context manager, for
scripts, unittest, Django's test runner or any sync pytest suite::

    with run_in_thread({"dc1": {"r1": 2, "r2": 2}}, datastore="redis") as cluster:
        client = cluster.client(cluster.node("dc1", "r1"))
        client.set("k", "v")
        cluster.stop_node(cluster.node("dc1", "r2"))
        print(cluster.replicas(b"k"))          # {"dc1/r1": b"v", "dc1/r2": b"v"}

A daemon thread runs ``trio.run`` around ``open_cluster`` (the one way of
starting nodes) and parks until told to stop; the calling thread waits for
the cluster to be up, then gets a ``ThreadCluster`` whose methods run on the
cluster's loop through ``trio.from_thread.run`` and return their results.
Leaving the block, normally or by an exception (a failing test, Ctrl-C),
cancels the loop and joins the thread, which stops every node and
redis-server and closes every socket.  A cluster that fails to start raises
its error in the calling thread.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
from redis import Redis

from .cluster import Cluster, ClusterNode, Layout, open_cluster

__all__ = ["ThreadCluster", "run_in_thread"]

T = TypeVar("T")
#: Longest wait for the cluster to start or stop (seconds).
START_TIMEOUT = 60.0


async def _read_direct(member: ClusterNode, key: bytes) -> bytes | None:
    """``GET key`` from the member's own datastore, bypassing every node."""
    if member.redis is not None:

        def get() -> Any:
            with member.datastore(socket_timeout=10) as client:
                return client.get(key)

        value: bytes | None = await trio.to_thread.run_sync(get)
        return value
    node = member.node
    if node is None or node.pool.store is None:
        raise RuntimeError(f"{member.name} is not running: its embedded store is gone")
    stream = node.pool.store.connect()
    await stream.send_all(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
    reply = await stream.receive_some()
    await stream.aclose()
    if reply.startswith(b"$-1"):
        return None
    _, _, rest = reply.partition(b"\r\n")
    return rest[: -len(b"\r\n")]


class ThreadCluster:
    """A running cluster, driven from another thread (see the module doc)."""

    def __init__(self, cluster: Cluster, token: trio.lowlevel.TrioToken) -> None:
        self.cluster = cluster
        self._token = token

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    @property
    def nodes(self) -> list[ClusterNode]:
        return self.cluster.nodes

    def node(self, dc: str, rack: str, index: int = 0) -> ClusterNode:
        return self.cluster.node(dc, rack, index)

    def client(self, member: ClusterNode, **kwargs: Any) -> Redis:
        """A redis-py client for ``member``'s client port."""
        return member.client(**kwargs)

    def admin_url(self, member: ClusterNode) -> str:
        node = member.node
        if node is None or node.admin_address is None:
            raise RuntimeError(f"{member.name} is not running")
        return f"http://{node.admin_address}"

    def stop_node(self, member: ClusterNode) -> None:
        self._run(self.cluster.stop_node, member)

    def start_node(self, member: ClusterNode) -> None:
        self._run(self.cluster.start_node, member)

    def stop_datastore(self, member: ClusterNode) -> None:
        self._run(self.cluster.stop_datastore, member)

    def start_datastore(self, member: ClusterNode) -> None:
        self._run(self.cluster.start_datastore, member)

    def wait_connected(self, timeout: float = START_TIMEOUT) -> None:
        async def wait() -> None:
            with trio.fail_after(timeout):
                await self.cluster.wait_connected()

        self._run(wait)

    def replicas(self, key: bytes | str) -> dict[str, bytes | None]:
        """What each rack's owner of ``key`` holds, read from its own datastore."""
        raw = key.encode() if isinstance(key, str) else key

        async def read() -> dict[str, bytes | None]:
            out: dict[str, bytes | None] = {}
            for dc, rack in dict.fromkeys((n.dc, n.rack) for n in self.cluster.nodes):
                owner = self.cluster.owner(dc, rack, raw)
                out[f"{dc}/{rack}"] = await _read_direct(owner, raw)
            return out

        return self._run(read)


@contextmanager
def run_in_thread(layout: Layout, **options: Any) -> Iterator[ThreadCluster]:
    """Run ``open_cluster(layout, **options)`` in a background thread for the block."""
    ready: list[ThreadCluster] = []
    failure: list[BaseException] = []
    started = threading.Event()
    stop: list[Callable[[], None]] = []

    async def main() -> None:
        token = trio.lowlevel.current_trio_token()
        async with open_cluster(layout, **options) as cluster:
            done = trio.Event()
            stop.append(lambda: token.run_sync_soon(done.set))
            ready.append(ThreadCluster(cluster, token))
            started.set()
            await done.wait()

    def body() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the caller, not lost in the thread
            failure.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=body, name="trinomite-cluster", daemon=True)
    thread.start()
    try:
        if not started.wait(START_TIMEOUT):
            raise TimeoutError(f"the cluster did not start within {START_TIMEOUT:g}s")
        if failure:
            raise failure[0]
        yield ready[0]
    finally:
        if stop:
            stop[0]()
        thread.join(START_TIMEOUT)
    if failure:
        raise failure[0]
