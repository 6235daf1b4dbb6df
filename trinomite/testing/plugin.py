"""The pytest plugin: trinomite nodes and whole clusters as fixtures, in sync and Trio tests.

Theory of operation
-------------------
pytest loads this module through the ``pytest11`` entry point of the
installed package (disable it with ``-p no:trinomite``).  It is a thin
layer over ``open_cluster``; there is no second way of starting nodes.

Fixtures (the function-scoped ones fresh for every test):

``trinomite_node``
    One node (dc1/rack1) on the default datastore (embedded unless
    configured), as a ``ClusterNode``: ``.address``, ``.client_port``,
    ``.client()``, ``.admin_url``.
``trinomite_redis``
    A redis-py ``Redis`` connected to ``trinomite_node``.  In a Trio test
    it is a ``TrioRedis``: the same client, each command awaited.
``trinomite_cluster``
    A factory: ``trinomite_cluster({"dc1": {"r1": 2, "r2": 2}},
    datastore="redis", read_consistency=..., **overrides)`` starts that
    topology (with a fault proxy on every peer link, so ``partition`` and
    ``heal`` work) and returns its handle; every cluster it made stops
    after the test.
``trinomite_node_module``, ``trinomite_node_session``,
``trinomite_cluster_module``, ``trinomite_cluster_session``
    The same, shared by a module or the whole session.  The scoped
    factories start each distinct (layout, options) once; a later call
    with the same arguments gets the same cluster back with every fault
    undone (``restore``: nodes and datastores running, partitions
    healed, links up).  Data written by earlier tests stays.
``trinomite_options``
    The defaults every fixture passes to ``open_cluster``; override it in
    a ``conftest.py`` to change them for a directory (a dict).

Sync tests get clusters running on a background thread with its own Trio
loop (``run_in_thread``) and a blocking handle (``ThreadCluster``).  Trio
tests (pytest-trio) get the function-scoped fixtures as async fixtures in
the test's own loop: the factory is awaited (``cluster = await
trinomite_cluster(layout)``) and the handle is the async ``Cluster``.  A
sync fixture tells which by the test's ``trio`` marker and then hands the
test its async twin's value, which pytest-trio resolves in the test's loop.
Module and session fixtures always run on a background thread (a Trio
loop lives for one test only); from a Trio test, call their blocking
methods through ``trio.to_thread.run_sync``.

Options, in pytest-redis's style (the command line wins over the ini file):
``--trinomite-datastore`` / ``trinomite_datastore`` (embedded or redis),
``--trinomite-redis-exec`` / ``trinomite_redis_exec`` (the redis-server
binary), ``--trinomite-startup-timeout`` / ``trinomite_startup_timeout``
(seconds until a cluster must be up).

Every port is ephemeral and held from the moment it is chosen, so parallel
workers (pytest-xdist) never collide.  Teardown runs after a failing test
and after Ctrl-C (pytest tears fixtures down when interrupted); a cluster
that fails to start has stopped everything it started before its
``ClusterStartError`` (with the nodes' log lines) reaches the test.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .cluster import Cluster, ClusterNode, Layout
    from .thread import ThreadCluster

__all__ = [
    "trinomite_cluster",
    "trinomite_cluster_module",
    "trinomite_cluster_session",
    "trinomite_node",
    "trinomite_node_module",
    "trinomite_node_session",
    "trinomite_options",
    "trinomite_redis",
]

NODE_LAYOUT = {"dc1": {"rack1": 1}}
#: (command-line option, ini key, help, default)
OPTIONS = (
    ("datastore", "embedded", "datastore of every node: embedded or redis"),
    ("redis_exec", "", "redis-server binary for datastore=redis (default: from PATH)"),
    ("startup_timeout", "30", "seconds a cluster may take until every peer link is up"),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trinomite", "trinomite clusters as fixtures")
    for name, default, text in OPTIONS:
        flag = "--trinomite-" + name.replace("_", "-")
        group.addoption(flag, dest=f"trinomite_{name}", default=None, help=text)
        parser.addini(f"trinomite_{name}", text, default=default)


def pytest_configure(config: pytest.Config) -> None:
    _options(config)  # a bad option is a usage error at start, not in every test


def _options(config: pytest.Config) -> dict[str, Any]:
    values: dict[str, str] = {}
    for name, _default, _text in OPTIONS:
        key = f"trinomite_{name}"
        values[name] = config.getoption(key) or str(config.getini(key))
    if values["datastore"] not in ("embedded", "redis"):
        raise pytest.UsageError(
            f"trinomite_datastore must be embedded or redis, not {values['datastore']!r}"
        )
    try:
        timeout = float(values["startup_timeout"])
    except ValueError:
        raise pytest.UsageError("trinomite_startup_timeout must be a number of seconds") from None
    return {
        "datastore": values["datastore"],
        "redis_exec": values["redis_exec"] or None,
        "startup_timeout": timeout,
        "fault_proxies": True,
    }


def _is_trio(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("trio") is not None


@pytest.fixture(scope="session")
def trinomite_options(pytestconfig: pytest.Config) -> dict[str, Any]:
    """Keyword arguments every trinomite fixture gives ``open_cluster`` (override to change)."""
    return _options(pytestconfig)


# -- function scope: sync tests get threads, Trio tests their async twins -----


@pytest.fixture
def trinomite_node(
    request: pytest.FixtureRequest, trinomite_options: dict[str, Any]
) -> Iterator[ClusterNode]:
    """One fresh node for this test (see the module doc)."""
    if _is_trio(request):
        yield request.getfixturevalue("_trinomite_node_trio")
        return
    from .thread import run_in_thread

    with run_in_thread(NODE_LAYOUT, **trinomite_options) as cluster:
        yield cluster.nodes[0]


@pytest.fixture
def trinomite_redis(request: pytest.FixtureRequest, trinomite_node: ClusterNode) -> Iterator[Any]:
    """A redis-py client for ``trinomite_node`` (awaitable commands in a Trio test)."""
    client = trinomite_node.client()
    try:
        if _is_trio(request):
            from .trioredis import TrioRedis

            yield TrioRedis(client)
        else:
            yield client
    finally:
        client.close()


@pytest.fixture
def trinomite_cluster(
    request: pytest.FixtureRequest, trinomite_options: dict[str, Any]
) -> Iterator[Callable[..., ThreadCluster]]:
    """A factory of clusters that stop after this test (see the module doc)."""
    if _is_trio(request):
        yield request.getfixturevalue("_trinomite_cluster_trio")
        return
    from .thread import run_in_thread

    with ExitStack() as running:

        def start(layout: Layout, **options: Any) -> ThreadCluster:
            return running.enter_context(run_in_thread(layout, **{**trinomite_options, **options}))

        yield start


@pytest.fixture
async def _trinomite_node_trio(trinomite_options: dict[str, Any]) -> AsyncIterator[ClusterNode]:
    from .cluster import open_cluster

    async with open_cluster(NODE_LAYOUT, **trinomite_options) as cluster:
        yield cluster.nodes[0]


@pytest.fixture
async def _trinomite_cluster_trio(
    trinomite_options: dict[str, Any],
) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    import trio

    from .cluster import open_cluster

    async def serve(
        layout: Layout, options: dict[str, Any], *, task_status: trio.TaskStatus[Cluster]
    ) -> None:
        async with open_cluster(layout, **options) as cluster:
            task_status.started(cluster)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:

        async def start(layout: Layout, **options: Any) -> Cluster:
            cluster: Cluster = await nursery.start(serve, layout, {**trinomite_options, **options})
            return cluster

        yield start
        nursery.cancel_scope.cancel()


# -- module and session scope: background threads, clusters cached by arguments --


class _SharedClusters:
    """Clusters started once per distinct arguments, restored on every request."""

    def __init__(self, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self.running: dict[str, ThreadCluster] = {}
        self.stack = ExitStack()

    def __call__(self, layout: Layout, **options: Any) -> ThreadCluster:
        from .thread import run_in_thread

        merged = {**self.defaults, **options}
        key = json.dumps([layout, sorted((k, repr(v)) for k, v in merged.items())], default=repr)
        cluster = self.running.get(key)
        if cluster is None:
            cluster = self.stack.enter_context(run_in_thread(layout, **merged))
            self.running[key] = cluster
        else:
            cluster.restore()
        return cluster


def _shared_clusters(scope: Any) -> Any:
    @pytest.fixture(scope=scope)
    def fixture(trinomite_options: dict[str, Any]) -> Iterator[_SharedClusters]:
        clusters = _SharedClusters(trinomite_options)
        with clusters.stack:
            yield clusters

    fixture.__doc__ = f"A factory of clusters shared by the {scope} (see the module doc)."
    return fixture


def _shared_node(scope: Any) -> Any:
    @pytest.fixture(scope=scope)
    def fixture(trinomite_options: dict[str, Any]) -> Iterator[ClusterNode]:
        from .thread import run_in_thread

        with run_in_thread(NODE_LAYOUT, **trinomite_options) as cluster:
            yield cluster.nodes[0]

    fixture.__doc__ = f"One node shared by the {scope}, on a background thread."
    return fixture


trinomite_cluster_module = _shared_clusters("module")
trinomite_cluster_session = _shared_clusters("session")
trinomite_node_module = _shared_node("module")
trinomite_node_session = _shared_node("session")
