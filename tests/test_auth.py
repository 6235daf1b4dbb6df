"""Client AUTH (requirepass and named users) and the datastore's own credentials.

Against nodes in front of real redis-servers, through redis-py, redis-cli,
redis-benchmark and a raw socket (for the exact pre-auth protocol errors).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from trinomite import DatastoreSpec, Node, open_node
from trinomite.config.model import ClientUser
from trinomite.testing import RedisServer

from .clusterutil import wait_until
from .conftest import client_for, in_thread, node_config
from .rawclient import RawClient

#: Failing logins fail at once: redis-py retries AuthenticationError (a ConnectionError).
ONCE = {"retry": Retry(NoBackoff(), 0)}
PASSWORD = "client-secret"
USERS = (ClientUser("writer", "w-pass"), ClientUser("reader", "r-pass", readonly=True))
NOAUTH = b"-NOAUTH Authentication required.\r\n"
WRONGPASS = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
tools = pytest.mark.skipif(
    shutil.which("redis-cli") is None or shutil.which("redis-benchmark") is None,
    reason="needs redis-tools",
)


@asynccontextmanager
async def auth_node(backend: RedisServer, **overrides: Any) -> AsyncIterator[Node]:
    overrides.setdefault("requirepass", PASSWORD)
    overrides.setdefault("users", USERS)
    config = node_config(DatastoreSpec.tcp(backend.host, backend.port), **overrides)
    async with open_node(config) as node:
        yield node


async def raw_client(node: Node) -> RawClient:
    return await RawClient.to_node(node)


async def test_clients_must_authenticate(redis_backend: RedisServer) -> None:
    async with auth_node(redis_backend) as node:
        raw = await raw_client(node)
        assert await raw.call("GET", "k") == NOAUTH
        assert await raw.call("PING") == NOAUTH
        # Redis's order: an unknown command or a bad arity is said before NOAUTH.
        assert (await raw.call("NOSUCH")).startswith(b"-ERR unknown command 'NOSUCH'")
        assert await raw.call("GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
        assert await raw.call("AUTH", "wrong") == WRONGPASS
        assert await raw.call("AUTH", "writer", "r-pass") == WRONGPASS
        assert (await raw.call("HELLO", "3")).startswith(b"-NOAUTH HELLO must be called")
        assert await raw.call("AUTH", PASSWORD) == b"+OK\r\n"
        assert await raw.call("SET", "k", "v") == b"+OK\r\n"
        assert await raw.call("AUTH", "wrong") == WRONGPASS  # still authenticated
        assert await raw.call("GET", "k") == b"$1\r\nv\r\n"
        await raw.aclose()
        # Refused attempts are counted (the wrong password, the wrong pair, and this one).
        assert node.admin.values()["client_auth_failures"] == 3


@pytest.mark.parametrize("protocol", [2, 3])
async def test_redis_py_password_and_username(redis_backend: RedisServer, protocol: int) -> None:
    async with auth_node(redis_backend) as node:
        assert await in_thread(client_for(node, password=PASSWORD, protocol=protocol).set, "a", 1)
        writer = client_for(node, username="writer", password="w-pass", protocol=protocol)
        assert await in_thread(writer.set, "b", 2)
        with pytest.raises(redis.AuthenticationError):
            await in_thread(client_for(node, password="nope", protocol=protocol, **ONCE).ping)
        with pytest.raises(redis.AuthenticationError):
            await in_thread(client_for(node, protocol=protocol, **ONCE).get, "a")


async def test_a_read_only_user_reads_and_cannot_write(redis_backend: RedisServer) -> None:
    async with auth_node(redis_backend) as node:
        assert await in_thread(client_for(node, password=PASSWORD).set, "k", "v")
        reader = client_for(node, username="reader", password="r-pass")
        assert await in_thread(reader.get, "k") == b"v"
        assert await in_thread(reader.mget, "k", "k") == [b"v", b"v"]
        for command in (("SET", "k", "x"), ("DEL", "k"), ("EVAL", "return 1", "0")):
            with pytest.raises(redis.exceptions.NoPermissionError, match="User reader has no"):
                await in_thread(reader.execute_command, *command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            await in_thread(reader.execute_command, "SORT", "k", "STORE", "dst")
        assert await in_thread(reader.get, "k") == b"v"


async def test_pre_auth_limits_close_the_connection(redis_backend: RedisServer) -> None:
    async with auth_node(redis_backend) as node:
        raw = await raw_client(node)
        await raw.send(b"*11\r\n" + b"$1\r\na\r\n" * 11)
        assert await raw.wait_closed() == (
            b"-ERR Protocol error: unauthenticated multibulk length\r\n"
        )
        raw = await raw_client(node)
        await raw.send(b"*2\r\n$4\r\nAUTH\r\n$16385\r\n")
        assert await raw.wait_closed() == (b"-ERR Protocol error: unauthenticated bulk length\r\n")
        # Just below the limits: an answer, and the connection stays.
        raw = await raw_client(node)
        assert await raw.call("AUTH", "x" * 16384) == WRONGPASS
        assert await raw.call("AUTH", *["x"] * 9) == b"-ERR syntax error\r\n"
        await raw.aclose()


async def test_auth_in_a_pipeline_lifts_the_limits_for_what_follows(
    redis_backend: RedisServer,
) -> None:
    big = b"v" * 100_000
    async with auth_node(redis_backend) as node:
        raw = await raw_client(node)
        auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(PASSWORD), PASSWORD.encode())
        setter = b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n%s\r\n" % (len(big), big)
        await raw.send(auth + setter + b"*2\r\n$6\r\nSTRLEN\r\n$3\r\nbig\r\n")
        assert await raw.read(3) == [b"+OK\r\n", b"+OK\r\n", b":100000\r\n"]
        await raw.aclose()


@tools
async def test_redis_cli_and_redis_benchmark_with_a_password(redis_backend: RedisServer) -> None:
    async with auth_node(redis_backend) as node:
        port = str(node.client_address.port)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(args, capture_output=True, text=True, timeout=60)

        done = await in_thread(
            run, "redis-cli", "-p", port, "-a", PASSWORD, "--no-auth-warning", "set", "c", "1"
        )
        assert done.stdout.strip() == "OK"
        done = await in_thread(
            run,
            "redis-cli",
            "-p",
            port,
            "--user",
            "reader",
            "--pass",
            "r-pass",
            "--no-auth-warning",
            "get",
            "c",
        )
        assert done.stdout.strip() == "1"
        done = await in_thread(
            run, "redis-benchmark", "-p", port, "-a", PASSWORD, "-t", "set,get", "-n", "2000", "-q"
        )
        assert done.returncode == 0, done.stderr
        assert "SET:" in done.stdout
        assert "GET:" in done.stdout
        refused = await in_thread(run, "redis-benchmark", "-p", port, "-t", "get", "-n", "10", "-q")
        assert "NOAUTH Authentication required." in refused.stderr


async def test_the_datastore_password_is_the_nodes_own() -> None:
    backend = RedisServer(options={"requirepass": "store-secret"})
    await in_thread(backend.start)
    try:
        async with auth_node(backend, datastore_password="store-secret") as node:
            client = client_for(node, password=PASSWORD)
            assert await in_thread(client.set, "k", "v")
            assert await in_thread(client.get, "k") == b"v"
            # The datastore's password opens nothing for a client.
            with pytest.raises(redis.AuthenticationError):
                await in_thread(client_for(node, password="store-secret", **ONCE).ping)
        direct = redis.Redis(host=backend.host, port=backend.port, password="store-secret")
        assert await in_thread(direct.get, "k") == b"v"
        await in_thread(
            direct.execute_command, "ACL", "SETUSER", "trin", "on", ">trin-pass", "~*", "+@all"
        )
        async with auth_node(
            backend,
            datastore_username="trin",
            datastore_password="trin-pass",
            requirepass=None,
            users=(),
        ) as node:
            assert await in_thread(client_for(node).get, "k") == b"v"
    finally:
        backend.close()


async def test_a_wrong_datastore_password_is_a_clear_error(caplog) -> None:
    backend = RedisServer(options={"requirepass": "store-secret"})
    await in_thread(backend.start)
    try:
        async with auth_node(
            backend, datastore_password="wrong", requirepass=None, users=()
        ) as node:
            with pytest.raises(redis.ResponseError, match="Storage"):
                await in_thread(client_for(node, **ONCE).get, "k")

            async def logged() -> bool:
                return "handshake refused: -WRONGPASS" in caplog.text

            await wait_until(logged, "the refused handshake to be logged")
        assert "wrong" not in caplog.text.replace("WRONGPASS", "")
    finally:
        backend.close()
