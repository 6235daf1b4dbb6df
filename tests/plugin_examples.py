"""Example test files for the pytest plugin's own tests (tests/test_pytest_plugin.py).

Each string is written into a ``pytester`` directory and run by a real
pytest subprocess, with the plugin loaded from its entry point.  ``LEAK_CHECK``
is that run's conftest: it records nothing but facts (the listening sockets
and child processes of the run's process, the threads still alive) when
the run ends, after every fixture was torn down, for the outer test to
assert on.
"""

from __future__ import annotations

LEAK_CHECK = '''
import json, os, threading

import pytest


def _listening_inodes():
    """Inodes of TCP sockets in LISTEN state on this machine (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows)
                for row in rows:
                    fields = row.split()
                    if fields[3] == "0A":
                        inodes.add(fields[9])
        except OSError:
            pass
    return inodes


def _own_listeners():
    listening = _listening_inodes()
    mine = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in listening:
            mine.append(target)
    return mine


def _children():
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(name)
    return found


def pytest_unconfigure(config):
    report = {
        "pid": os.getpid(),
        "listeners": _own_listeners(),
        "children": _children(),
        "threads": [t.name for t in threading.enumerate() if t.name.startswith("trinomite")],
    }
    with open(os.path.join(str(config.rootpath), f"leaks-{os.getpid()}.json"), "w") as out:
        json.dump(report, out)
'''

#: Every fixture, from plain synchronous tests.
SYNC_TESTS = """
import json, time, urllib.request

import pytest
import redis
from trinomite import Consistency


def wait_for(check, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_node_and_client(trinomite_node, trinomite_redis):
    assert trinomite_redis.set("greeting", "hello")
    assert trinomite_redis.get("greeting") == b"hello"
    assert trinomite_node.address == f"127.0.0.1:{trinomite_node.client_port}"
    with urllib.request.urlopen(trinomite_node.admin_url + "/ping", timeout=10) as reply:
        assert reply.status == 200


def test_node_is_fresh_per_test(trinomite_redis):
    assert trinomite_redis.get("greeting") is None


def test_cluster_faults(trinomite_cluster):
    cluster = trinomite_cluster(
        {"dc1": {"r1": 1, "r2": 1, "r3": 1}},
        datastore="redis",
        read_consistency=Consistency.DC_QUORUM,
        write_consistency=Consistency.DC_QUORUM,
    )
    a, b, c = (cluster.node("dc1", rack) for rack in ("r1", "r2", "r3"))
    client = a.client()
    assert client.set("k", "v1")
    wait_for(lambda: set(cluster.replicas("k").values()) == {b"v1"})

    cluster.stop_node(c)
    assert client.get("k") == b"v1"            # two racks of three: still a quorum
    cluster.start_node(c)
    cluster.wait_connected()

    cluster.stop_datastore(b)
    assert client.set("k", "v2")               # a and c make the quorum
    cluster.start_datastore(b)

    cluster.partition(a, [b, c])               # a alone: no quorum either way
    with pytest.raises(redis.ResponseError, match="Peer Node|Quorum"):
        client.get("k")
    with pytest.raises(redis.ResponseError, match="Peer Node|Quorum"):
        client.set("k", "v3")
    cluster.heal()
    cluster.wait_connected()
    assert client.set("k", "v4")
    wait_for(lambda: cluster.replicas("k")["dc1/r3"] == b"v4")
    with urllib.request.urlopen(cluster.admin_url(b) + "/info", timeout=10) as reply:
        assert json.load(reply)["rack"] == "r2"


def test_module_cluster_is_shared_and_restored(trinomite_cluster_module):
    cluster = trinomite_cluster_module({"dc1": {"r1": 1, "r2": 1}})
    cluster.node("dc1", "r1").client().set("shared", "yes")
    cluster.stop_node(cluster.node("dc1", "r2"))


def test_module_cluster_again(trinomite_cluster_module):
    cluster = trinomite_cluster_module({"dc1": {"r1": 1, "r2": 1}})
    assert all(member.running for member in cluster.nodes)   # restored
    assert cluster.node("dc1", "r1").client().get("shared") == b"yes"


def test_session_fixtures(trinomite_cluster_session, trinomite_node_session, trinomite_node_module):
    cluster = trinomite_cluster_session({"dc1": {"r1": 1}, "dc2": {"r1": 1}})
    assert cluster is trinomite_cluster_session({"dc1": {"r1": 1}, "dc2": {"r1": 1}})
    assert trinomite_node_session.client().ping()
    assert trinomite_node_module.client().ping()
"""

#: The function-scoped fixtures from pytest-trio tests (run with trio_mode).
TRIO_TESTS = """
import trio
from trinomite import Consistency


async def test_node_and_client(trinomite_node, trinomite_redis):
    assert await trinomite_redis.set("greeting", "hello")
    assert await trinomite_redis.get("greeting") == b"hello"
    assert trinomite_node.running


async def test_cluster_faults(trinomite_cluster):
    cluster = await trinomite_cluster(
        {"dc1": {"r1": 1, "r2": 1, "r3": 1}},
        datastore="redis",
        read_consistency=Consistency.DC_QUORUM,
        write_consistency=Consistency.DC_QUORUM,
    )
    a, b, c = (cluster.node("dc1", rack) for rack in ("r1", "r2", "r3"))
    client = a.client()
    assert await trio.to_thread.run_sync(client.set, "k", "v1")
    await cluster.stop_node(c)
    assert await trio.to_thread.run_sync(client.get, "k") == b"v1"
    await cluster.start_node(c)
    await cluster.stop_datastore(b)
    await cluster.start_datastore(b)
    cluster.partition(c, [a, b])
    assert (await cluster.replicas("k"))["dc1/r1"] == b"v1"
    cluster.heal()
    with trio.fail_after(20):
        await cluster.wait_connected()


def test_sync_tests_still_get_threads(trinomite_cluster):
    cluster = trinomite_cluster({"dc1": {"r1": 1}})
    assert type(cluster).__name__ == "ThreadCluster"
"""

#: Failures the plugin must clean up after: a failing test, a start-up error.
FAILING_TESTS = """
import socket

import pytest
from trinomite import HostPort


@pytest.fixture
def busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        yield busy.getsockname()[1]


def test_fails_on_purpose(trinomite_cluster):
    trinomite_cluster({"dc1": {"r1": 1, "r2": 1}}, datastore="redis")
    assert False, "failing on purpose"


def test_start_up_error(trinomite_cluster, busy_port):
    def second_node_cannot_listen(member):
        if member.rack == "r2":
            return {"stats_listen": HostPort("127.0.0.1", busy_port)}
        return {}

    trinomite_cluster(
        {"dc1": {"r1": 1, "r2": 1}}, datastore="redis", per_node=second_node_cannot_listen
    )
"""

#: A test that waits, for the outer test to interrupt it with SIGINT.
INTERRUPTED_TEST = """
import os, time


def test_waits_for_ctrl_c(trinomite_cluster):
    trinomite_cluster({"dc1": {"r1": 1, "r2": 1}}, datastore="redis")
    with open(os.environ["TRINOMITE_MARKER"], "w") as marker:
        marker.write("up")
    time.sleep(60)  # bounded: the outer test interrupts long before
"""

#: The command-line and ini options reach the fixtures.
OPTION_TESTS = """
import shutil


def test_datastore_option(trinomite_node, trinomite_options):
    assert trinomite_options["datastore"] == "redis"
    assert trinomite_node.redis is not None
    assert trinomite_node.redis.binary == shutil.which("redis-server")
    assert trinomite_options["startup_timeout"] == 12.5
"""
