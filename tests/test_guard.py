"""Server-state commands: refused by default, redacted, or allowed by the operator.

Against a node in front of a real redis-server, through redis-py and
redis-cli; the redis-server is then asked directly that nothing changed.
The pure parts (``protocol.guard``) are checked on their own first.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis

from trinomite import DatastoreSpec, open_node
from trinomite.protocol.guard import CommandGuard, redact_info
from trinomite.testing import RedisServer

from .conftest import client_for, in_thread, node_config

INFO = (
    b"# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\nrun_id:abc\r\ntcp_port:6379\r\n"
    b"executable:/usr/bin/redis-server\r\nconfig_file:/etc/redis.conf\r\n\r\n"
    b"# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
    b"slave0:ip=10.0.0.2,port=6380,state=online\r\nmaster_replid:ff\r\n"
)
KEPT = (
    b"# Server\r\nredis_version:7.0.15\r\n\r\n"
    b"# Replication\r\nrole:master\r\nconnected_slaves:1\r\n"
)


def test_redact_info_in_resp2_and_resp3() -> None:
    assert redact_info(b"$%d\r\n%s\r\n" % (len(INFO), INFO)) == b"$%d\r\n%s\r\n" % (len(KEPT), KEPT)
    verbatim = b"txt:" + INFO
    assert redact_info(b"=%d\r\n%s\r\n" % (len(verbatim), verbatim)) == (
        b"=%d\r\ntxt:%s\r\n" % (len(KEPT) + 4, KEPT)
    )
    assert redact_info(b"-ERR no\r\n") == b"-ERR no\r\n"


def test_the_guard_refuses_by_default_and_allows_what_is_named() -> None:
    guard = CommandGuard()
    refused = guard.refusal("replicaof", [b"replicaof", b"127.0.0.1", b"1"])
    assert refused is not None
    assert refused.startswith(b"-NOPERM trinomite does not forward 'replicaof': it would make")
    assert refused.endswith(b"allowed_commands: [replicaof]\r\n")
    assert guard.refusal("config", [b"config", b"GET", b"save"]) is None
    assert guard.refusal("config", [b"config", b"get", b"save", b"appendonly"]) is None
    for pattern in (b"*", b"requirepass", b"dir", b"sav*"):
        assert guard.refusal("config", [b"config", b"get", pattern]) is not None
    assert guard.refusal("script", [b"script", b"kill"]) is not None
    assert guard.refusal("script", [b"script", b"load", b"return 1"]) is None
    assert guard.redact
    opened = CommandGuard(["replicaof", "config get", "info"])
    assert opened.refusal("replicaof", [b"replicaof", b"no", b"one"]) is None
    assert opened.refusal("config", [b"config", b"get", b"*"]) is None
    assert opened.refusal("config", [b"config", b"set", b"maxmemory", b"1"]) is not None
    assert not opened.redact
    with pytest.raises(ValueError, match="not guarded commands: flushall"):
        CommandGuard(["flushall"])


async def test_no_client_can_detach_or_reconfigure_the_datastore(
    redis_backend: RedisServer,
) -> None:
    config = node_config(DatastoreSpec.tcp(redis_backend.host, redis_backend.port))
    async with open_node(config) as node:
        client = client_for(node)
        for command in (
            ("REPLICAOF", "127.0.0.1", "1"),
            ("SLAVEOF", "127.0.0.1", "1"),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("CONFIG", "GET", "*"),
            ("CONFIG", "GET", "requirepass"),
            ("CONFIG", "REWRITE"),
            ("CONFIG", "RESETSTAT"),
            ("SCRIPT", "KILL"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError, match="does not forward"):
                await in_thread(client.execute_command, *command)
        assert await in_thread(client.set, "still", "writable")
        assert await in_thread(client.config_get, "save") == {"save": ""}
        direct = redis.Redis(host=redis_backend.host, port=redis_backend.port)
        role = await in_thread(direct.info, "replication")
        assert role["role"] == "master"
        assert (await in_thread(direct.config_get, "maxmemory"))["maxmemory"] == "0"

        # INFO through the node keeps the stats and hides the server's own identity.
        for protocol in (2, 3):
            info = await in_thread(client_for(node, protocol=protocol).info)
            assert info["redis_version"]
            assert "process_id" not in info
            assert "tcp_port" not in info
            assert "executable" not in info
            assert "config_file" not in info
        assert (await in_thread(direct.info))["process_id"]


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="needs redis-cli")
async def test_redis_cli_sees_the_refusal(redis_node) -> None:
    port = redis_node.client_address.port
    done = await in_thread(
        subprocess.run,
        ["redis-cli", "-p", str(port), "replicaof", "127.0.0.1", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.startswith("NOPERM trinomite does not forward 'replicaof'")


async def test_an_operator_may_allow_named_commands(redis_backend: RedisServer) -> None:
    config = node_config(
        DatastoreSpec.tcp(redis_backend.host, redis_backend.port),
        allowed_commands=("replicaof", "config get", "info"),
    )
    async with open_node(config) as node:
        client = client_for(node)
        assert await in_thread(client.execute_command, "REPLICAOF", "NO", "ONE") == b"OK"
        assert "dir" in await in_thread(client.config_get, "*")
        assert (await in_thread(client.info))["process_id"]
        with pytest.raises(redis.exceptions.NoPermissionError):
            await in_thread(client.config_set, "maxmemory", "1")
