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

import contextlib
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio
from redis import Redis

from .cluster import STARTUP_TIMEOUT, Cluster, ClusterNode, Layout, open_cluster
from .mesh import Side

__all__ = ["ThreadCluster", "run_in_thread"]

T = TypeVar("T")
#: Longest wait for the cluster's thread to stop (seconds).
STOP_TIMEOUT = 60.0
#: Beyond the cluster's own startup_timeout, for its datastores to start.
START_MARGIN = 60.0


class ThreadCluster:
    """A running cluster, driven from another thread (see the module doc).

    The same methods as ``Cluster``, blocking instead of async.
    """

    def __init__(self, cluster: Cluster, token: trio.lowlevel.TrioToken) -> None:
        self.cluster = cluster
        self._token = token

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def _run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return trio.from_thread.run_sync(fn, *args, trio_token=self._token)

    @property
    def nodes(self) -> list[ClusterNode]:
        return self.cluster.nodes

    def node(self, dc: str, rack: str, index: int = 0) -> ClusterNode:
        return self.cluster.node(dc, rack, index)

    def rack(self, dc: str, rack: str) -> list[ClusterNode]:
        return self.cluster.rack(dc, rack)

    def dc(self, dc: str) -> list[ClusterNode]:
        return self.cluster.dc(dc)

    def owner(self, dc: str, rack: str, key: bytes) -> ClusterNode:
        return self._run_sync(self.cluster.owner, dc, rack, key)

    def client(self, member: ClusterNode, **kwargs: Any) -> Redis:
        """A redis-py client for ``member``'s client port."""
        return member.client(**kwargs)

    def admin_url(self, member: ClusterNode) -> str:
        return member.admin_url

    def stop_node(self, member: ClusterNode) -> None:
        self._run(self.cluster.stop_node, member)

    def start_node(self, member: ClusterNode) -> None:
        self._run(self.cluster.start_node, member)

    def stop_datastore(self, member: ClusterNode) -> None:
        self._run(self.cluster.stop_datastore, member)

    def start_datastore(self, member: ClusterNode) -> None:
        self._run(self.cluster.start_datastore, member)

    def partition(self, side_a: Side, side_b: Side, how: str = "reject") -> None:
        self._run_sync(self.cluster.partition, side_a, side_b, how)

    def heal(self) -> None:
        self._run_sync(self.cluster.heal)

    def restore(self) -> None:
        self._run(self.cluster.restore)

    def wait_connected(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Block until every unpartitioned link is up (TooSlowError after ``timeout``)."""

        async def wait() -> None:
            with trio.fail_after(timeout):
                await self.cluster.wait_connected()

        self._run(wait)

    def replicas(self, key: bytes | str) -> dict[str, bytes | None]:
        """What each rack's owner of ``key`` holds, read from its own datastore."""
        return self._run(self.cluster.replicas, key)


@contextmanager
def run_in_thread(layout: Layout, **options: Any) -> Iterator[ThreadCluster]:
    """Run ``open_cluster(layout, **options)`` in a background thread for the block."""
    ready: list[ThreadCluster] = []
    failure: list[BaseException] = []
    loop_up = threading.Event()
    started = threading.Event()
    scope = trio.CancelScope()
    tokens: list[trio.lowlevel.TrioToken] = []

    async def main() -> None:
        tokens.append(trio.lowlevel.current_trio_token())
        loop_up.set()
        with scope:
            async with open_cluster(layout, **options) as cluster:
                ready.append(ThreadCluster(cluster, tokens[0]))
                started.set()
                await trio.sleep_forever()

    def body() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the caller, not lost in the thread
            failure.append(exc)
        finally:
            loop_up.set()
            started.set()

    def stop() -> None:
        if tokens:
            with contextlib.suppress(trio.RunFinishedError):
                tokens[0].run_sync_soon(scope.cancel)
        thread.join(STOP_TIMEOUT)

    limit = options.get("startup_timeout", STARTUP_TIMEOUT) + START_MARGIN
    thread = threading.Thread(target=body, name="trinomite-cluster", daemon=True)
    thread.start()
    try:
        loop_up.wait()
        if not started.wait(limit):
            raise TimeoutError(f"the cluster did not start within {limit:g}s")
        if failure:
            raise failure[0]
        yield ready[0]
    finally:
        stop()  # also on Ctrl-C while starting: the start is cancelled
    if failure:
        raise failure[0]
