"""A cluster must answer like one redis-server, under every consistency level.

The same pipelined command stream goes to a standalone redis-server and to a
1 DC x 2 racks x 2 nodes cluster (redis-server datastores, ``hash_tag`` set
to ``{}``), and the replies are compared as raw RESP bytes.  The stream mixes
single-key commands on keys spread over both owners, the multi-key commands
the cluster splits per owner (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH) and
hash-tagged multi-key commands that must stay on one owner (SINTER,
RPOPLPUSH, RENAME, EVAL, ...).  Afterwards every replica of every key must
hold what the standalone server holds.

Left out by design: KEYS/SCAN/DBSIZE (local to one node), commands with
random or clock-dependent replies, and sets of strings (their order
depends on the server's hash seed); sets hold small integers.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import pytest
import redis
import trio

from trinomite.config.model import Consistency
from trinomite.testing import RedisServer
from trinomite.testing.cluster import Cluster, ClusterNode

from .clusterutil import WAIT, direct, redis_cluster, replicas, wait_until
from .conftest import in_thread
from .rawclient import Arg, RawClient, encode_all

#: 2100-01-01T00:00:00Z: EXPIRETIME replies that never change.
FAR_FUTURE = 4102444800
SPREAD = ["s1", "s2", "s3", "s4", "s5", "s6"]  # checked to land on both owners
TAGGED = ["{t}a", "{t}b", "{t}c", "{t}l1", "{t}l2", "{t}x", "{t}y", "{t}m1", "{t}m2"]

TWO_KEYS = "return {redis.call('INCR', KEYS[1]), redis.call('GET', KEYS[2])}"
SCRIPT = "return {KEYS[1], redis.call('GET', KEYS[1])}"
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()

Command = tuple[Arg, ...]
#: HyperLogLogs in the stream and their cardinality.
COUNTED = {b"hll": 3}

COMMANDS: list[Command] = [
    # strings
    ("SET", "s1", "v1"),
    ("SET", "s2", "v2", "NX"),
    ("SET", "s2", "x", "NX"),
    ("GET", "s2"),
    ("SET", "s3", "v3", "GET"),
    ("SET", "s3", "v3b", "GET"),
    ("APPEND", "s1", "+tail"),
    ("GETRANGE", "s1", 0, 3),
    ("SETRANGE", "s1", 1, "Z"),
    ("STRLEN", "s1"),
    ("GETSET", "s1", "g"),
    ("GETDEL", "s3"),
    ("GET", "s3"),
    ("SETNX", "s4", "a"),
    ("SET", "n", "10"),
    ("INCR", "n"),
    ("INCRBY", "n", -5),
    ("DECR", "n"),
    ("DECRBY", "n", 2),
    ("INCRBYFLOAT", "f", "1.5"),
    ("INCRBYFLOAT", "f", "2.0e2"),
    ("INCR", "s1"),
    ("SETEX", "e", 100, "v"),
    ("EXPIREAT", "e", FAR_FUTURE),
    ("EXPIRETIME", "e"),
    ("PERSIST", "e"),
    ("TTL", "e"),
    ("TYPE", "e"),
    ("SETBIT", "bits", 7, 1),
    ("GETBIT", "bits", 7),
    ("BITCOUNT", "bits"),
    # multi-key commands split per owner and merged in key order
    ("MSET", "s1", "m1", "s2", "m2", "s5", "m5", "s6", "m6"),
    ("MGET", "s1", "s2", "s3", "s4", "s5", "s6", "nope"),
    ("EXISTS", "s1", "s1", "s3", "s6", "nope"),
    ("TOUCH", "s1", "s2", "nope"),
    ("DEL", "s5", "s6", "nope", "s5"),
    ("UNLINK", "s4", "s1"),
    ("MGET", "s1", "s4", "s5", "s2"),
    ("EXISTS", *SPREAD),
    ("MSET", "s3", "x3", "s3", "y3"),
    ("MGET", "s3", "s3"),
    # hashes, lists, sets, sorted sets, hyperloglog
    ("HSET", "h", "a", "1", "b", "2"),
    ("HGET", "h", "a"),
    ("HMGET", "h", "a", "z", "b"),
    ("HINCRBY", "h", "a", 5),
    ("HDEL", "h", "b", "z"),
    ("HLEN", "h"),
    ("HGETALL", "h"),
    ("RPUSH", "l", "a", "b", "c"),
    ("LPUSH", "l", "z"),
    ("LPOP", "l"),
    ("RPOP", "l", 2),
    ("LSET", "l", 0, "q"),
    ("LINSERT", "l", "BEFORE", "q", "p"),
    ("LRANGE", "l", 0, -1),
    ("LLEN", "l"),
    ("SADD", "st", 1, 2, 3),
    ("SISMEMBER", "st", 2),
    ("SMISMEMBER", "st", 1, 9),
    ("SREM", "st", 2),
    ("SCARD", "st"),
    ("SMEMBERS", "st"),
    ("ZADD", "z", 1, "a", 2, "b", 3, "c"),
    ("ZINCRBY", "z", "2.5", "a"),
    ("ZSCORE", "z", "a"),
    ("ZRANK", "z", "c"),
    ("ZREM", "z", "b"),
    ("ZRANGE", "z", 0, -1, "WITHSCORES"),
    ("PFADD", "hll", "a", "b", "c"),
    ("PFCOUNT", "hll"),
    # the datastore's errors pass through unchanged
    ("GET", "l"),
    ("LPUSH", "s2", "x"),
    ("INCR", "h"),
    # hash-tagged multi-key commands (one owner)
    ("SADD", "{t}a", 1, 2, 3),
    ("SADD", "{t}b", 2, 3, 4),
    ("SINTER", "{t}a", "{t}b"),
    ("SUNIONSTORE", "{t}c", "{t}a", "{t}b"),
    ("SMEMBERS", "{t}c"),
    ("SMOVE", "{t}a", "{t}b", 1),
    ("RPUSH", "{t}l1", "x", "y", "w"),
    ("RPOPLPUSH", "{t}l1", "{t}l2"),
    ("LMOVE", "{t}l1", "{t}l2", "LEFT", "RIGHT"),
    ("LRANGE", "{t}l2", 0, -1),
    ("SET", "{t}x", "1"),
    ("RENAME", "{t}x", "{t}y"),
    ("GET", "{t}y"),
    ("MSETNX", "{t}m1", "1", "{t}m2", "2"),
    ("MSETNX", "{t}m1", "3", "{t}m3", "4"),
    ("MGET", "{t}m1", "{t}m2", "{t}m3"),
    ("EVAL", TWO_KEYS, 2, "{t}m1", "{t}y"),
    # SCRIPT LOAD goes to every node (on the same peer links, so before the EVALSHA)
    ("SCRIPT", "LOAD", SCRIPT),
    ("EVALSHA", SCRIPT_SHA, 1, "{t}y"),
    ("SCRIPT", "EXISTS", SCRIPT_SHA, "0" * 40),
    # malformed requests: Redis's own errors (the node checks arity, Redis the rest)
    ("MSET", "s1", "1", "s2"),
    ("GET",),
    ("EVAL", "return 1", 3, "{t}a"),
    ("EVAL", "return 1", 0),
    ("SINTERCARD", 5, "{t}a"),
    ("SET", "s1", "1", "EX"),
    ("DEL", "{t}a", "s2", "{t}m2", "h"),
    ("EXISTS", "{t}a", "s2", "{t}m2", "h", "{t}b"),
]


def assert_spread(cluster: Cluster) -> None:
    """The untagged keys use both owners of a rack; the tagged ones share one."""
    for rack in ("r1", "r2"):
        assert {cluster.owner("dc1", rack, k.encode()).index for k in SPREAD} == {0, 1}
        assert len({cluster.owner("dc1", rack, k.encode()).index for k in TAGGED}) == 1


async def run(client: RawClient, protocol: int) -> list[bytes]:
    if protocol == 3:
        assert (await client.call("HELLO", 3)).startswith(b"%")
    return await client.pipeline(encode_all(COMMANDS), len(COMMANDS))


@pytest.fixture(name="standalone")
async def standalone_fixture(redis_backend: RedisServer) -> AsyncIterator[RawClient]:
    async with await RawClient.connect(redis_backend.host, redis_backend.port) as client:
        yield client


def snapshot(server: RedisServer) -> dict[bytes, bytes]:
    """The standalone server's data: ``{key: DUMP payload}`` (blocking)."""
    with redis.Redis(host=server.host, port=server.port, socket_timeout=WAIT) as client:
        return {key: client.dump(key) for key in client.keys("*")}


async def assert_same_data(cluster: Cluster, standalone: RedisServer) -> None:
    """Every replica of every key holds what the standalone server holds; nothing else.

    A HyperLogLog caches its count when read (PFCOUNT), and DC_ONE reads only
    the own rack's replica, so HLLs are compared by their count instead.
    """
    expected = await in_thread(snapshot, standalone)
    assert len(expected) > 10

    async def same(member: ClusterNode, key: bytes) -> bool:
        if key in COUNTED:
            return bool(await direct(member, "PFCOUNT", key) == COUNTED[key])
        return bool(await direct(member, "DUMP", key) == expected[key])

    async def converged() -> bool:
        everywhere: set[bytes] = set()
        for member in cluster.nodes:
            everywhere |= set(await direct(member, "KEYS", "*"))
        if everywhere != set(expected):
            return False
        for key in expected:
            for member in replicas(cluster, key):
                if not await same(member, key):
                    return False
        return True

    await wait_until(converged, "every replica to hold the standalone server's data")


@pytest.mark.parametrize("protocol", [2, 3], ids=["resp2", "resp3"])
@pytest.mark.parametrize("level", list(Consistency), ids=[c.value for c in Consistency])
async def test_cluster_replies_like_one_redis_server(
    standalone: RawClient, redis_backend: RedisServer, level: Consistency, protocol: int
) -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(
            {"dc1": {"r1": 2, "r2": 2}},
            hash_tag="{}",
            read_consistency=level,
            write_consistency=level,
        ) as cluster:
            assert_spread(cluster)
            member = cluster.node("dc1", "r2", 1)
            async with await RawClient.connect("127.0.0.1", member.client_port) as proxied:
                want = await run(standalone, protocol)
                got = await run(proxied, protocol)
            mismatches = [
                f"#{i} {command!r}: redis {w!r} != cluster {g!r}"
                for i, (command, w, g) in enumerate(zip(COMMANDS, want, got, strict=True))
                if w != g
            ]
            assert not mismatches, "\n".join(mismatches)
            await assert_same_data(cluster, redis_backend)
