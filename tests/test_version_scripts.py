"""The versioning scripts (``cluster.scripts``) run on a real redis-server, one replica.

Each request is built by ``cluster.repair`` exactly as the coordinator sends
it, then executed directly on the redis-server, so these tests pin down what
one replica does with writes and repairs that arrive late, twice, or out of
order, without a cluster around it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from trinomite.cluster.repair import READS, ReadKind, versioned_kind, versioned_write
from trinomite.cluster.scripts import COLLECT_SCRIPT, elements_key, meta_key, stamp
from trinomite.cluster.versions import LOGICAL_BITS, MISSING, Reading
from trinomite.protocol.replies import ReplyFramer
from trinomite.protocol.requests import parse_one
from trinomite.testing.redis_server import RedisServer


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    backend = RedisServer()
    backend.start()
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def db(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(host=server.host, port=server.port, socket_timeout=10)
    client.flushall()
    yield client
    client.close()


def run(db: redis.Redis, raw: bytes) -> Any:
    args = parse_one(raw)
    assert args is not None
    return db.execute_command(*args)


def write(db: redis.Redis, version: int, *args: str | bytes) -> Any:
    words = [a.encode() if isinstance(a, str) else a for a in args]
    assert versioned_kind(words[0].decode().lower(), words) == "write"
    return run(db, versioned_write(words, version))


def raw_reply(db: redis.Redis, kind: ReadKind, *args: str) -> bytes:
    """The RESP bytes a replica returns for ``kind``'s request, read off a plain socket."""
    kwargs = db.connection_pool.connection_kwargs
    framer = ReplyFramer()
    with socket.create_connection((kwargs["host"], kwargs["port"]), timeout=10) as sock:
        sock.sendall(kind.request([a.encode() for a in args]))
        while True:
            chunk = sock.recv(65536)
            assert chunk, "the redis-server closed the connection"
            framer.feed(chunk)
            replies = framer.replies()
            if replies:
                return replies[0]


def reading(db: redis.Redis, name: str, *args: str) -> Reading:
    kind = READS[name]
    found = kind.parse(raw_reply(db, kind, name.upper(), *args))
    assert found is not None
    return found


def test_an_older_field_write_loses_to_a_newer_one_in_any_order(db: redis.Redis) -> None:
    assert write(db, 20, "HSET", "h", "f", "new") == 1
    assert write(db, 10, "HSET", "h", "f", "old", "g", "g1") == 1  # only g is new
    assert db.hgetall("h") == {b"f": b"new", b"g": b"g1"}
    assert reading(db, "hget", "h", "f") == Reading(b"new", 20)
    assert reading(db, "hget", "h", "g") == Reading(b"g1", 10)
    assert write(db, 30, "HMSET", "h", "f", "newer") == b"OK"
    assert db.hget("h", "f") == b"newer"


def test_a_removed_field_is_not_brought_back_by_a_late_write(db: redis.Redis) -> None:
    write(db, 10, "HSET", "h", "f", "v")
    assert write(db, 30, "HDEL", "h", "f") == 1
    assert write(db, 20, "HSET", "h", "f", "late") == 0  # older than the removal
    assert db.hget("h", "f") is None
    assert reading(db, "hget", "h", "f") == Reading(None, 30, True)
    assert db.hget(elements_key(b"h"), "f") == b"1:" + stamp(30) + b":1"


def test_members_and_scores_are_versioned_per_element(db: redis.Redis) -> None:
    assert write(db, 10, "SADD", "s", "a", "b") == 2
    assert write(db, 20, "SREM", "s", "a") == 1
    assert write(db, 15, "SADD", "s", "a", "c") == 1  # a was removed later: only c
    assert db.smembers("s") == {b"b", b"c"}
    assert reading(db, "sismember", "s", "a") == Reading(None, 20, True)
    assert reading(db, "sismember", "s", "b") == Reading(b"1", 10)
    assert write(db, 10, "ZADD", "z", "1", "m", "2", "n") == 2
    assert write(db, 5, "ZADD", "z", "9", "m") == 0  # older
    assert db.zscore("z", "m") == 1.0
    assert write(db, 20, "ZREM", "z", "n") == 1
    assert reading(db, "zscore", "z", "m") == Reading(b"1", 10)
    assert reading(db, "zscore", "z", "n") == Reading(None, 20, True)


def test_a_conditional_zadd_stamps_only_what_it_changed(db: redis.Redis) -> None:
    write(db, 10, "ZADD", "z", "5", "m")
    assert write(db, 20, "ZADD", "z", "GT", "CH", "3", "m", "1", "n") == 1  # n added; m kept
    assert reading(db, "zscore", "z", "m") == Reading(b"5", 10)  # unchanged: still 10
    assert reading(db, "zscore", "z", "n") == Reading(b"1", 20)
    assert write(db, 30, "ZADD", "z", "XX", "7", "m") == 0  # XX: updated, not added
    assert reading(db, "zscore", "z", "m") == Reading(b"7", 30)


def test_a_whole_key_delete_keeps_the_elements_written_after_it(db: redis.Redis) -> None:
    write(db, 10, "HSET", "h", "old", "1")
    write(db, 30, "HSET", "h", "new", "2")
    db.hset("h", "unversioned", "3")
    assert write(db, 20, "DEL", "h") == 1  # stamped between the two
    assert db.hgetall("h") == {b"new": b"2"}
    assert reading(db, "hget", "h", "old") == Reading(None, 20, True)
    assert db.hkeys(elements_key(b"h")) == [b"new"]  # the tombstone at 20 covers "old"
    assert write(db, 15, "HSET", "h", "old", "late") == 0  # older than the delete
    assert write(db, 40, "DEL", "h") == 1
    assert db.exists("h") == 0


def test_a_string_write_replaces_the_collection_and_its_element_versions(db: redis.Redis) -> None:
    write(db, 10, "SADD", "k", "a")
    assert write(db, 20, "SET", "k", "v") == b"OK"
    assert db.get("k") == b"v"
    assert db.exists(elements_key(b"k")) == 0
    assert write(db, 15, "SADD", "k", "b") == 0  # older than the SET: skipped, no WRONGTYPE
    assert reading(db, "get", "k") == Reading(b"v", 20)


def test_set_nx_and_xx_stamp_only_when_they_apply(db: redis.Redis) -> None:
    assert write(db, 10, "SET", "k", "v", "XX") is None  # no key: not applied
    assert db.exists(meta_key(b"k")) == 0
    assert write(db, 20, "SET", "k", "v", "NX") == b"OK"
    assert write(db, 30, "SET", "k", "w", "NX") is None
    assert reading(db, "get", "k") == Reading(b"v", 20)
    assert write(db, 5, "SET", "k", "old", "GET") == b"v"  # skipped: still answers GET


def test_readings_of_nothing_and_of_an_expired_value(db: redis.Redis) -> None:
    assert reading(db, "get", "none") == MISSING
    assert reading(db, "hget", "none", "f") == MISSING
    write(db, 10, "SET", "k", "v")
    db.delete("k")  # gone without a tombstone (as an expiry or eviction would)
    assert reading(db, "get", "k") == Reading(None, 10, True)


def test_requests_a_script_could_apply_only_in_part_are_not_versioned() -> None:
    def kind(*args: bytes) -> str | None:
        return versioned_kind(args[0].decode().lower(), list(args))

    assert kind(b"HSET", b"h", b"f") is None
    assert kind(b"HSET", b"h", b"f", b"v", b"g") is None
    assert kind(b"ZADD", b"z", b"x", b"m") is None  # not a score
    assert kind(b"ZADD", b"z", b"nan", b"m") is None
    assert kind(b"ZADD", b"z", b"NX", b"GT", b"1", b"m") is None
    assert kind(b"ZADD", b"z", b"INCR", b"1", b"m") is None
    assert kind(b"ZADD", b"z", b"+inf", b"m", b"-1.5", b"n") == "write"
    assert kind(b"DEL", b"a", b"b") is None
    assert kind(b"HGET", b"h", b"f") == "read"
    assert kind(b"INCR", b"k") is None


def test_the_collector_removes_only_tombstones_older_than_the_cutoff(db: redis.Redis) -> None:
    write(db, 10 << LOGICAL_BITS, "SET", "old", "v")
    write(db, 20 << LOGICAL_BITS, "DEL", "old")
    write(db, 30 << LOGICAL_BITS, "SET", "live", "v")
    write(db, 20 << LOGICAL_BITS, "SADD", "s", "a", "b")
    write(db, 21 << LOGICAL_BITS, "SREM", "s", "a")
    write(db, 90 << LOGICAL_BITS, "DEL", "recent")
    removed = 0
    cursor = b"0"
    while True:
        cursor, count = db.eval(COLLECT_SCRIPT, 0, cursor, 100, stamp(50 << LOGICAL_BITS))
        removed += count
        if cursor == b"0":
            break
    assert removed == 2  # old's tombstone and a's
    assert db.exists(meta_key(b"old")) == 0
    assert db.hkeys(elements_key(b"s")) == [b"b"]
    assert db.exists(meta_key(b"live"), meta_key(b"recent")) == 2
