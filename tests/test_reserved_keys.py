"""The reserved key namespace (``__trinomite:``): clients can neither name nor list it.

A node in front of a real redis-server that holds reserved keys (written
straight into it, as trinomite's own metadata will be), used through
redis-py; and in a two-rack cluster, through any node.
"""

from __future__ import annotations

import pytest
import redis
import trio

from trinomite import DatastoreSpec, open_node
from trinomite.protocol.reserved import hide
from trinomite.testing import RedisServer
from trinomite.testing.cluster import open_cluster

from .conftest import client_for, in_thread, node_config

RESERVED = "__trinomite:v:k"
REFUSED = "keys starting with '__trinomite:' are reserved"


def test_hide_filters_keys_scan_and_randomkey_replies() -> None:
    keys = b"*3\r\n$1\r\na\r\n$15\r\n__trinomite:v:a\r\n$1\r\nb\r\n"
    assert hide("keys", keys) == b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    scan = b"*2\r\n$2\r\n17\r\n" + keys
    assert hide("scan", scan) == b"*2\r\n$2\r\n17\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    assert hide("randomkey", b"$15\r\n__trinomite:v:a\r\n") == b"$-1\r\n"
    assert hide("randomkey", b"$1\r\na\r\n") == b"$1\r\na\r\n"
    assert hide("keys", b"*0\r\n") == b"*0\r\n"


async def test_clients_cannot_name_or_see_reserved_keys(redis_backend: RedisServer) -> None:
    direct = redis.Redis(host=redis_backend.host, port=redis_backend.port)
    await in_thread(direct.set, RESERVED, "1:42:0")
    config = node_config(DatastoreSpec.tcp(redis_backend.host, redis_backend.port))
    async with open_node(config) as node:
        client = client_for(node)
        assert await in_thread(client.set, "k", "__trinomite: in a value is fine")
        for command in (
            ("GET", RESERVED),
            ("SET", RESERVED, "x"),
            ("DEL", "k", RESERVED),
            ("MGET", "k", RESERVED),
            ("EVAL", "return 1", "1", RESERVED),
        ):
            with pytest.raises(redis.ResponseError, match=REFUSED):
                await in_thread(client.execute_command, *command)
        assert await in_thread(client.keys, "*") == [b"k"]
        cursor, listed = await in_thread(client.scan, 0, None, 1000)
        assert (cursor, listed) == (0, [b"k"])
        for _ in range(20):
            assert await in_thread(client.randomkey) in (b"k", None)
        pipe = client.pipeline(transaction=False)  # one round: the fast path's check
        pipe.get("k").get(RESERVED).get("k")
        replies = await in_thread(pipe.execute, raise_on_error=False)
        assert replies[0] == replies[2] == b"__trinomite: in a value is fine"
        assert REFUSED in str(replies[1])
    assert await in_thread(direct.get, RESERVED) == b"1:42:0"  # untouched


async def test_the_namespace_is_reserved_through_every_node_of_a_cluster() -> None:
    with trio.fail_after(30):
        async with open_cluster({"dc1": {"r1": 1, "r2": 1}}) as cluster:
            for member in cluster.nodes:
                with pytest.raises(redis.ResponseError, match=REFUSED):
                    await in_thread(member.client().set, RESERVED, "x")
