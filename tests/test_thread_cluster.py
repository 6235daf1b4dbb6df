"""run_in_thread: a cluster for synchronous code, driven from a plain (non-Trio) test."""

from __future__ import annotations

import threading

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from trinomite.testing.thread import run_in_thread


def cluster_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "trinomite-cluster"]


@pytest.mark.parametrize("datastore", ["embedded", "redis"])
def test_a_sync_test_drives_a_whole_cluster(datastore):
    with run_in_thread({"dc1": {"r1": 1, "r2": 1}}, datastore=datastore) as cluster:
        first, second = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
        client = cluster.client(first)
        assert client.set("k", "v")
        assert client.get("k") == b"v"
        assert cluster.admin_url(first).startswith("http://127.0.0.1:")
        # DC_ONE replicates to the other rack; replicas() reads each datastore directly.
        for _ in range(200):
            if cluster.replicas("k") == {"dc1/r1": b"v", "dc1/r2": b"v"}:
                break
            threading.Event().wait(0.02)
        assert cluster.replicas("k") == {"dc1/r1": b"v", "dc1/r2": b"v"}
        cluster.stop_node(second)
        assert second.node is None
        cluster.start_node(second)
        cluster.wait_connected()
        # A redis-server outlives its node; an embedded store starts empty with it.
        expected = b"v" if datastore == "redis" else None
        assert cluster.client(second).get("k") == expected
        client.close()
    assert cluster_threads() == []
    port = first.client_port
    with pytest.raises(redis.ConnectionError):
        redis.Redis(port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)).ping()


def test_an_exception_in_the_block_still_stops_everything():
    seen = []

    def failing_test() -> None:
        with run_in_thread({"dc1": {"r1": 1}}) as cluster:
            seen.append(cluster.node("dc1", "r1"))
            raise ZeroDivisionError("the test failed")

    with pytest.raises(ZeroDivisionError):
        failing_test()
    assert seen[0].node is None
    assert cluster_threads() == []


def test_a_cluster_that_cannot_start_raises_in_the_caller():
    with (
        pytest.raises(ValueError, match="datastore must be"),
        run_in_thread({"dc1": {"r1": 1}}, datastore="nonsense"),
    ):
        pytest.fail("started")
    assert cluster_threads() == []


def test_links_that_never_come_up_are_a_start_up_error_with_the_nodes_log():
    """startup_timeout bounds the wait for the links; the error names them and shows the log."""
    from trinomite.config.model import Seed
    from trinomite.testing import ClusterStartError, free_port

    dead = free_port()  # nothing listens there

    def misseeded(member):
        if member.rack != "r2":
            return {}
        return {"dyn_seeds": (Seed("127.0.0.1", dead, "r1", "dc1", (0,)),)}

    with (
        pytest.raises(ClusterStartError, match=r"links still down after 0\.5s") as caught,
        run_in_thread({"dc1": {"r1": 1, "r2": 1}}, per_node=misseeded, startup_timeout=0.5),
    ):
        pytest.fail("started")
    message = str(caught.value)
    assert "--- trinomite log, last" in message
    assert f"127.0.0.1:{dead}" in message
    assert "connect failed" in message
    assert cluster_threads() == []
