"""Client TLS: redis-cli --tls and redis-py ssl=True against a node, real redis-server behind.

The node's certificate comes from ``trinomite certs``' library; clients
check it against the CA like any TLS client would.  Client certificates
are checked when ``client_tls_verify`` asks for them.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess

import pytest
import redis
import trio
from redis.backoff import NoBackoff
from redis.retry import Retry

from trinomite import Node, open_node
from trinomite.config.model import ClientVerify
from trinomite.testing.tls import write_pair
from trinomite.tls import certs

from .conftest import in_thread, node_config

NO_RETRY = Retry(NoBackoff(), 0)
pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")


@pytest.fixture
def pki(tmp_path):
    ca = certs.make_ca()
    certs.write_public(tmp_path / "ca.crt", ca.cert_pem)
    server = write_pair(tmp_path, "node", certs.issue(ca, "node", ["127.0.0.1", "localhost"]))
    client = write_pair(tmp_path, "app", certs.issue(ca, "app", server=False))
    return {
        "ca": str(tmp_path / "ca.crt"),
        "server": server,
        "cert": client["tls_cert_file"],
        "key": client["tls_key_file"],
    }


def tls_node(redis_backend, pki, verify=ClientVerify.NONE, **overrides):
    from trinomite import DatastoreSpec

    return open_node(
        node_config(
            DatastoreSpec.tcp(redis_backend.host, redis_backend.port),
            client_tls=True,
            client_tls_verify=verify,
            tls_ca_file=pki["ca"],
            **pki["server"],
            **overrides,
        )
    )


def port_of(node: Node) -> int:
    return node.client_address.port  # type: ignore[union-attr]


def redis_cli(node: Node, pki, *args: str, cert: bool = False) -> subprocess.CompletedProcess[str]:
    argv = ["redis-cli", "--tls", "--cacert", pki["ca"], "-p", str(port_of(node))]
    if cert:
        argv += ["--cert", pki["cert"], "--key", pki["key"]]
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=30)


async def test_redis_cli_tls_and_redis_py_ssl_work(redis_backend, pki):
    async with tls_node(redis_backend, pki) as node:
        done = await in_thread(redis_cli, node, pki, "SET", "greeting", "hello")
        assert done.stdout.strip() == "OK", done.stderr
        client = redis.Redis(port=port_of(node), ssl=True, ssl_ca_certs=pki["ca"])
        assert await in_thread(client.get, "greeting") == b"hello"
        # Pipelines and values larger than a TLS record go through whole.
        pipe = client.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"k{i}", str(i) * 100)
        assert all(await in_thread(pipe.execute))
        big = b"x" * (2 * 1024 * 1024 + 17)
        assert await in_thread(client.set, "big", big)
        assert await in_thread(client.get, "big") == big
        assert await in_thread(client.get, "k499") == b"499" * 100
        client.close()
        # The data really went to the redis-server behind the node.
        direct = redis.Redis(host=redis_backend.host, port=redis_backend.port)
        assert await in_thread(direct.get, "greeting") == b"hello"


async def test_required_client_certificate(redis_backend, pki, caplog):
    async with tls_node(redis_backend, pki, ClientVerify.REQUIRED) as node:
        done = await in_thread(redis_cli, node, pki, "PING", cert=True)
        assert done.stdout.strip() == "PONG", done.stderr
        with_cert = redis.Redis(
            port=port_of(node),
            ssl=True,
            ssl_ca_certs=pki["ca"],
            ssl_certfile=pki["cert"],
            ssl_keyfile=pki["key"],
        )
        assert await in_thread(with_cert.ping)
        without = redis.Redis(port=port_of(node), ssl=True, ssl_ca_certs=pki["ca"], retry=NO_RETRY)
        with pytest.raises(redis.ConnectionError):
            await in_thread(without.ping)
        assert node.tls.client_handshake_failures >= 1
        info = node.admin.info()
        assert info["dyn_o_mite"]["client_tls_handshake_failures"] >= 1
    assert "TLS handshake failed" in caplog.text


async def test_plaintext_client_is_told_in_the_log(redis_backend, pki, caplog):
    async with tls_node(redis_backend, pki) as node:
        stream = await trio.open_tcp_stream("127.0.0.1", port_of(node))
        await stream.send_all(b"*1\r\n$4\r\nPING\r\n")
        with trio.fail_after(5):  # the node answers with a TLS alert at most, then closes
            while await stream.receive_some(64):
                pass
        await stream.aclose()
        assert node.tls.client_handshake_failures == 1
    assert "a plaintext client on the TLS listener?" in caplog.text


async def test_optional_client_certificate_accepts_both(redis_backend, pki):
    async with tls_node(redis_backend, pki, ClientVerify.OPTIONAL) as node:
        done = await in_thread(redis_cli, node, pki, "PING")
        assert done.stdout.strip() == "PONG", done.stderr
        done = await in_thread(redis_cli, node, pki, "PING", cert=True)
        assert done.stdout.strip() == "PONG", done.stderr


async def test_plaintext_client_on_a_tls_listener_is_dropped_and_counted(redis_backend, pki):
    async with tls_node(redis_backend, pki, tls_handshake_timeout=500) as node:
        plain = redis.Redis(port=port_of(node), socket_timeout=10, retry=NO_RETRY)
        with pytest.raises(redis.ConnectionError):
            await in_thread(plain.ping)
        failures = node.tls.client_handshake_failures
        assert failures == 1
        # A client that connects and says nothing is cut at the handshake timeout.
        silent = await trio.open_tcp_stream("127.0.0.1", port_of(node))
        with trio.fail_after(5):
            assert await silent.receive_some(1) == b""
        assert node.tls.client_handshake_failures == failures + 1
        assert node.counters.client_connections == 0


async def test_client_tls_below_1_2_is_refused(redis_backend, pki):
    import warnings

    async with tls_node(redis_backend, pki) as node:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.load_verify_locations(pki["ca"])
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", port_of(node), ssl_context=context
        )
        with pytest.raises(trio.BrokenResourceError):
            await stream.do_handshake()
        assert node.tls.client_handshake_failures == 1


async def test_plaintext_listener_is_unchanged_beside_peer_tls(redis_backend, pki):
    from trinomite import DatastoreSpec

    config = node_config(DatastoreSpec.tcp(redis_backend.host, redis_backend.port))
    async with open_node(config) as node:
        assert node.tls.client is None
        client = redis.Redis(port=port_of(node))
        assert await in_thread(client.ping)
