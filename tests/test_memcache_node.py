"""A lone node with ``data_store: 1`` in front of a real memcached, through real clients.

The node must answer exactly what memcached answers: the differential tests
send one byte stream to the node and the same stream to a fresh memcached
of their own and compare every reply byte (fresh memcacheds hand out the
same cas uniques for the same operations).  Expiry is tested with negative
exptimes (expired at once), never by sleeping.  A bounded ``memcslap`` run
and pymemcache drive the node as users would.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinomite import NodeConfig
from trinomite.config.model import DataStore, DatastoreSpec, HostPort
from trinomite.node.supervisor import Node
from trinomite.testing.cluster import Cluster, ClusterNode, open_cluster
from trinomite.testing.memcached_server import MemcachedServer
from trinomite.testing.redis_server import free_ports
from trinomite.testing.thread import run_in_thread

from .clusterutil import WAIT
from .conftest import ROOT, run_node

ALONE = {"dc1": {"r1": 1}}


def exchange(
    port: int, stream: bytes, *, chunk: int = 0, timeout: float = 10.0, eof: bool = False
) -> bytes:
    """Send ``stream`` (``chunk`` bytes at a time, 0: whole) and read until the peer closes.

    The stream should end with ``quit``, or ``eof`` sends an end of file
    after it, so the far end closes when done.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if chunk:
            for at in range(0, len(stream), chunk):
                sock.sendall(stream[at : at + chunk])
        else:
            sock.sendall(stream)
        if eof:
            sock.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            out += data
        return out


@pytest.fixture
async def alone() -> AsyncIterator[Cluster]:
    async with open_cluster(ALONE, datastore="memcached") as cluster:
        yield cluster


def node_of(cluster: Cluster) -> ClusterNode:
    return cluster.node("dc1", "r1")


EVERY_COMMAND = b"".join(
    [
        b"set a 5 0 3\r\nfoo\r\n",
        b"get a\r\n",
        b"gets a\r\n",
        b"add a 0 0 1\r\nx\r\n",
        b"add b 7 0 2\r\nhi\r\n",
        b"replace c 0 0 1\r\nx\r\n",
        b"replace b 8 0 3\r\nbye\r\n",
        b"append a 0 0 3\r\nbar\r\n",
        b"prepend a 0 0 2\r\n<<\r\n",
        b"append missing 0 0 1\r\nx\r\n",
        b"get a b missing a\r\n",
        b"gets a b\r\n",
        b"cas a 0 0 1 999999\r\nX\r\n",  # a wrong cas unique: EXISTS
        b"cas nothere 0 0 1 1\r\nX\r\n",  # NOT_FOUND
        b"set n 0 0 2\r\n10\r\n",
        b"incr n 5\r\n",
        b"decr n 100\r\n",
        b"incr a 1\r\n",  # not a number: CLIENT_ERROR
        b"incr nothere 1\r\n",
        b"touch a 100\r\n",
        b"touch nothere 100\r\n",
        b"gat 100 a b\r\n",
        b"gats 100 b\r\n",
        b"delete b\r\n",
        b"delete b\r\n",
        b"set e 0 -1 1\r\nx\r\n",  # a negative exptime: expired at once
        b"get e\r\n",
        b"set f 0 0 1\r\nx\r\n",
        b"touch f -1\r\n",
        b"get f\r\n",
        b"set g 0 0 1\r\ny\r\n",
        b"gat -1 g\r\n",
        b"get g\r\n",
        b"set q 0 0 1 noreply\r\nq\r\n",
        b"incr n 1 noreply\r\n",
        b"delete nothere noreply\r\n",
        b"get q n\r\n",
        b"bogus command\r\n",
        b"quit\r\n",
    ]
)


async def test_every_command_answers_exactly_as_memcached(alone, memcached_backend) -> None:
    port = node_of(alone).client_port
    through, direct = await trio.to_thread.run_sync(
        lambda: (exchange(port, EVERY_COMMAND), exchange(memcached_backend.port, EVERY_COMMAND))
    )
    assert through == direct
    assert b"EXISTS\r\n" in direct
    assert b"NOT_STORED\r\n" in direct


async def test_a_cas_conflict_between_two_clients(alone) -> None:
    def run() -> tuple[object, ...]:
        one = node_of(alone).memcache_client()
        two = node_of(alone).memcache_client()
        one.set("c", "v1")
        _, unique = one.gets("c")
        _, same = two.gets("c")
        first = two.cas("c", "by two", same)
        second = one.cas("c", "by one", unique)  # the unique is stale now
        return first, second, one.get("c")

    assert await trio.to_thread.run_sync(run) == (True, False, b"by two")


async def test_byte_by_byte_input_gets_the_same_replies(alone, memcached_backend) -> None:
    stream = EVERY_COMMAND
    port = node_of(alone).client_port
    through = await trio.to_thread.run_sync(lambda: exchange(port, stream, chunk=1))
    direct = await trio.to_thread.run_sync(lambda: exchange(memcached_backend.port, stream))
    assert through == direct


async def test_values_at_and_just_over_the_item_limit(memcached_backend) -> None:
    limit = 4096
    async with open_cluster(ALONE, datastore="memcached", max_item_size=limit) as cluster:
        port = node_of(cluster).client_port
        at = b"set big 0 0 %d\r\n%s\r\n" % (limit, b"x" * limit)
        over = b"set big 0 0 %d\r\n%s\r\n" % (limit + 1, b"y" * (limit + 1))
        stream = at + over + b"get big\r\nquit\r\n"
        reply = await trio.to_thread.run_sync(lambda: exchange(port, stream))
    # Refused by the node before a byte of it is buffered; the block is
    # skipped and the connection stays open.
    assert reply == (
        b"STORED\r\nSERVER_ERROR object too large for cache\r\n"
        b"VALUE big 0 %d\r\n%s\r\nEND\r\n" % (limit, b"x" * limit)
    )


@pytest.mark.parametrize(
    ("request_line", "reply"),
    [
        (b"set k 0 0 abc\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set k 0 0 -5\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set k 0 0 99999999999999999999\r\n", b"CLIENT_ERROR bad command line format\r\n"),
        (b"set k 0 0 2\r\nabcd\r\n", b"CLIENT_ERROR bad data chunk\r\n"),
    ],
)
async def test_an_unreadable_length_closes_after_the_replies_owed(
    alone, request_line: bytes, reply: bytes
) -> None:
    port = node_of(alone).client_port
    stream = b"set ok 0 0 1\r\n1\r\n" + request_line + b"get ok\r\n"
    got = await trio.to_thread.run_sync(lambda: exchange(port, stream))
    assert got == b"STORED\r\n" + reply


@pytest.mark.parametrize(
    "request_line",
    [
        b"get " + b"k" * 251 + b"\r\n",
        b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\n",
        b"delete a\x01b\r\n",
        b"incr k notanumber\r\n",
        b"touch k soon\r\n",
    ],
)
async def test_a_bad_key_or_number_is_refused_and_the_connection_stays(
    alone, memcached_backend, request_line: bytes
) -> None:
    port = node_of(alone).client_port
    stream = request_line + b"set after 0 0 1\r\n1\r\nget after\r\nquit\r\n"
    got = await trio.to_thread.run_sync(lambda: exchange(port, stream))
    assert got.startswith(b"CLIENT_ERROR ")
    assert got.endswith(b"STORED\r\nVALUE after 0 1\r\n1\r\nEND\r\n")


async def test_unsupported_commands_are_refused_clearly(alone) -> None:
    port = node_of(alone).client_port
    stream = (
        b"flush_all\r\nstats\r\nmg a v\r\nflush_all noreply\r\nversion\r\n"
        b"verbosity 1\r\nverbosity 1 noreply\r\nquit\r\n"
    )
    got = await trio.to_thread.run_sync(lambda: exchange(port, stream))
    lines = got.split(b"\r\n")
    assert lines[0].startswith(b"CLIENT_ERROR unsupported command 'flush_all': ")
    assert lines[1].startswith(b"CLIENT_ERROR unsupported command 'stats': ")
    assert lines[2].startswith(b"CLIENT_ERROR unsupported command 'mg': ")
    assert lines[3].startswith(b"VERSION trinomite-")  # flush_all noreply: nothing
    assert lines[4:] == [b"OK", b""]  # verbosity is answered here; noreply: nothing


async def test_the_node_own_keys_are_reserved(alone) -> None:
    port = node_of(alone).client_port
    stream = b"get __trinomite:delimiter\r\nset __trinomite:x 0 0 1\r\nx\r\nget a\r\nquit\r\n"
    got = await trio.to_thread.run_sync(lambda: exchange(port, stream))
    refusal = (
        b"CLIENT_ERROR keys starting with __trinomite: are reserved for the node's own use\r\n"
    )
    assert got == refusal + refusal + b"END\r\n"


async def test_quit_closes_after_the_replies_owed(alone) -> None:
    port = node_of(alone).client_port
    stream = b"set a 0 0 1\r\n1\r\nget a\r\nquit\r\nget a\r\n"
    got = await trio.to_thread.run_sync(lambda: exchange(port, stream))
    assert got == b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(junk=st.binary(min_size=1, max_size=300))
def test_random_bytes_never_hurt_another_client(memcache_node_port: int, junk: bytes) -> None:
    exchange(memcache_node_port, junk, timeout=5.0, eof=True)
    check = b"set sane 0 0 2\r\nok\r\nget sane\r\nquit\r\n"
    assert exchange(memcache_node_port, check) == b"STORED\r\nVALUE sane 0 2\r\nok\r\nEND\r\n"


@pytest.fixture(scope="module")
def memcache_node_port() -> Iterator[int]:
    """One node in front of one memcached, shared by the module's sync tests."""
    with run_in_thread(ALONE, datastore="memcached") as cluster:
        yield cluster.node("dc1", "r1").client_port


def test_a_bounded_memcslap_run(memcache_node_port: int) -> None:
    binary = shutil.which("memcslap") or shutil.which("memaslap")
    if binary is None:  # .ci/run installs libmemcached-tools: a missing one is a failure
        pytest.fail("memcslap is missing (Debian: apt-get install libmemcached-tools)")
    server = f"127.0.0.1:{memcache_node_port}"
    for test in ("set", "get"):
        done = subprocess.run(
            [
                binary,
                f"--servers={server}",
                "--concurrency=4",
                "--execute-number=500",
                f"--test={test}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert f"Time to {test} " in done.stdout, done.stdout


async def test_a_stopped_memcached_gives_server_errors_then_recovers(alone) -> None:
    member = node_of(alone)
    with trio.fail_after(WAIT):
        await alone.stop_datastore(member)
        port = member.client_port
        got = await trio.to_thread.run_sync(lambda: exchange(port, b"get a\r\nquit\r\n"))
        assert got.startswith(b"SERVER_ERROR Storage: ")
        await alone.start_datastore(member)
        while True:  # the pool reconnects by itself, with backoff
            got = await trio.to_thread.run_sync(lambda: exchange(port, b"get a\r\nquit\r\n"))
            if got == b"END\r\n":
                break
            assert got.startswith(b"SERVER_ERROR Storage: ")
            await trio.sleep(0.1)


def _config(**changes: object) -> NodeConfig:
    base = NodeConfig(
        listen=HostPort("127.0.0.1", 0),
        servers=(DatastoreSpec.tcp("127.0.0.1", 1),),
        data_store=DataStore.MEMCACHE,
    )
    return attrs.evolve(base, **changes)


def test_the_embedded_store_is_refused_for_memcached() -> None:
    with pytest.raises(ValueError, match="embedded datastore speaks Redis only"):
        Node(_config(servers=(DatastoreSpec.embedded(),)))


def test_passwords_are_refused_for_memcached() -> None:
    with pytest.raises(ValueError, match="memcached's ASCII protocol has no AUTH"):
        Node(_config(requirepass="secret"))


def test_python_m_trinomite_serves_a_dynomite_memcached_file(
    tmp_path: Path, memcached_backend: MemcachedServer
) -> None:
    """Dynomite's mc_single layout, ports changed, run as a process; pymemcache talks to it."""
    from pymemcache.client.base import Client

    text = (ROOT / "conf" / "mc_single.yml").read_text()
    port, dyn, stats = free_ports(3)
    for old, new in (
        ("127.0.0.1:11211", memcached_backend.address),
        ("127.0.0.1:8102", f"127.0.0.1:{port}"),
        ("127.0.0.1:8101", f"127.0.0.1:{dyn}"),
        ("127.0.0.1:22222", f"127.0.0.1:{stats}"),
    ):
        text = text.replace(old, new)
    conf = tmp_path / "mc_single.yml"
    conf.write_text(text)
    log = tmp_path / "node.log"
    with run_node(conf, log) as process:
        deadline = time.monotonic() + 15
        while b"VERSION" not in _probe(port):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"node did not start (exit {process.poll()}): {log.read_text()}")
            time.sleep(0.05)
        client = Client(("127.0.0.1", port), default_noreply=False, timeout=10)
        assert client.set("cli", b"value") is True
        assert client.get("cli") == b"value"
        assert client.version().startswith(b"trinomite-")
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0


def _probe(port: int) -> bytes:
    try:
        return exchange(port, b"version\r\nquit\r\n", timeout=2.0)
    except OSError:
        return b""


async def test_pymemcache_over_client_tls(
    tmp_path: Path, memcached_backend: MemcachedServer
) -> None:
    """``client_tls`` on a memcached node: pymemcache with an SSL context, values of any size."""
    import ssl

    from trinomite import open_node
    from trinomite.testing.tls import write_pair
    from trinomite.tls import certs

    ca = certs.make_ca()
    certs.write_public(tmp_path / "ca.crt", ca.cert_pem)
    server = write_pair(tmp_path, "node", certs.issue(ca, "node", ["127.0.0.1"]))
    memcached = memcached_backend
    config = _config(
        servers=(DatastoreSpec.tcp(memcached.host, memcached.port),),
        stats_listen=HostPort("127.0.0.1", 0),
        client_tls=True,
        tls_ca_file=str(tmp_path / "ca.crt"),
        **server,
    )
    async with open_node(config) as node:
        port = node.client_address.port  # type: ignore[union-attr]

        def work() -> tuple[object, ...]:
            from pymemcache.client.base import Client

            context = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            client = Client(
                ("127.0.0.1", port), tls_context=context, default_noreply=False, timeout=10
            )
            big = b"v" * 200_000  # many TLS records
            stored = client.set("tls", big)
            many = client.set_many({f"k{i}": str(i) for i in range(100)})
            got = client.get("tls"), client.get_many(["k1", "k99"])
            client.close()
            return stored, many, got

        stored, failed, (value, values) = await trio.to_thread.run_sync(work)
        assert stored is True
        assert failed == []
        assert value == b"v" * 200_000
        assert values == {"k1": b"1", "k99": b"99"}


async def test_a_slow_memcached_times_out_one_request_and_the_next_is_answered(
    nursery: trio.Nursery, memcached_backend: MemcachedServer
) -> None:
    """Through the fault proxy: a reply later than ``timeout`` is a timeout for that
    request alone; the late reply is dropped in its place and the link stays."""
    from trinomite import open_node
    from trinomite.testing.faultproxy import FaultProxy, serve_fault_proxy

    proxy: FaultProxy = await nursery.start(
        serve_fault_proxy, memcached_backend.host, memcached_backend.port
    )
    config = _config(
        servers=(DatastoreSpec.tcp(proxy.host, proxy.port),),
        stats_listen=HostPort("127.0.0.1", 0),
        timeout=300,
    )
    async with open_node(config) as node:
        port = node.client_address.port  # type: ignore[union-attr]

        def call(stream: bytes) -> bytes:
            return exchange(port, stream + b"quit\r\n")

        with trio.fail_after(WAIT):
            assert await trio.to_thread.run_sync(call, b"set k 0 0 1\r\nv\r\n") == b"STORED\r\n"
            connects = sum(c.connects for c in node.pool.connections)
            proxy.latency(0.45)  # over timeout, under twice it
            late = await trio.to_thread.run_sync(call, b"get k\r\n")
            assert late == b"SERVER_ERROR Storage: Connection timed out\r\n"
            proxy.pass_through()
            got = await trio.to_thread.run_sync(call, b"get k\r\n")
            assert got == b"VALUE k 0 1\r\nv\r\nEND\r\n"
        assert sum(c.connects for c in node.pool.connections) == connects
        assert sum(c.timedout_requests for c in node.pool.connections) == 1


async def test_a_node_not_normal_refuses_in_memcached_form(alone) -> None:
    from trinomite.admin.api import NodeState

    member = node_of(alone)
    assert member.node is not None
    member.node.gate.set_state(NodeState.STANDBY)
    port = member.client_port
    got = await trio.to_thread.run_sync(lambda: exchange(port, b"get a\r\nversion\r\nquit\r\n"))
    refused, version_line, rest = got.split(b"\r\n", 2)
    assert refused == b"SERVER_ERROR Dynomite: Dynomite's current state does not allow this request"
    assert version_line.startswith(b"VERSION trinomite-")  # answered by the node itself
    assert rest == b""
    member.node.gate.set_state(NodeState.NORMAL)
    got = await trio.to_thread.run_sync(lambda: exchange(port, b"get a\r\nquit\r\n"))
    assert got == b"END\r\n"
