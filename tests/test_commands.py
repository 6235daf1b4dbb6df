"""The command table: integrity, Dynomite coverage, key extraction."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from trinomite.protocol.commands import (
    COMMANDS,
    Access,
    Route,
    extract_keys,
    lookup,
    unknown_command_error,
    unsupported_reason,
)

# Every command dynomite.md §8.1 lists as supported, plus the ones the issue adds.
DYNOMITE_COMMANDS = """
ping info keys scan config slaveof hgetall hkeys hvals hscan sscan zscan
script mget del exists mset eval evalsha rpoplpush smove sdiff sdiffstore sinter
sinterstore sunion sunionstore zinterstore zunionstore sort get set setnx setex psetex
getset append incr incrby incrbyfloat decr decrby strlen getrange setrange getbit setbit
bitcount expire expireat pexpire pexpireat persist ttl pttl type dump restore hget hset
hsetnx hmget hmset hdel hexists hlen hincrby hincrbyfloat lpush rpush lpushx rpushx
lpop rpop llen lindex linsert lrange lrem lset ltrim sadd srem scard sismember smembers
spop srandmember zadd zrem zcard zcount zincrby zlexcount zrange zrangebylex
zrangebyscore zrank zremrangebylex zremrangebyrank zremrangebyscore zrevrange
zrevrangebylex zrevrangebyscore zrevrank zscore pfadd pfcount geoadd georadius
georadiusbymember geodist geohash geopos json.set json.get json.del json.type json.mget
json.arrappend json.arrinsert json.arrlen json.objkeys json.objlen quit
unlink touch hstrlen getex getdel msetnx dbsize echo command client hello select
""".split()


def test_covers_dynomite_and_issue_commands():
    missing = [name for name in DYNOMITE_COMMANDS if name not in COMMANDS]
    assert missing == []


def test_routing_classes_match_dynomite():
    for name in ("keys", "scan", "info", "dbsize", "config"):
        assert COMMANDS[name].route is Route.LOCAL
    for name in ("hgetall", "hkeys", "hvals", "hscan", "sscan", "zscan"):
        assert COMMANDS[name].route is Route.RACK
    assert COMMANDS["script"].route is Route.ALL
    assert COMMANDS["mget"].route is Route.SCATTER_ARRAY
    assert COMMANDS["mset"].route is Route.SCATTER_OK
    for name in ("del", "unlink", "exists", "touch"):
        assert COMMANDS[name].route is Route.SCATTER_SUM
    assert COMMANDS["msetnx"].route is Route.SAME
    assert COMMANDS["eval"].route is Route.SAME


def test_read_write_flags_fix_dynomite_quirks():
    assert COMMANDS["ttl"].access is Access.READ
    assert COMMANDS["pfcount"].access is Access.READ
    for name in ("sunionstore", "zinterstore", "zunionstore"):
        assert COMMANDS[name].access is Access.WRITE


def test_lookup_any_case():
    assert lookup(b"GET") is COMMANDS["get"]
    assert lookup(b"gEt") is COMMANDS["get"]
    assert lookup(b"nope") is None


def test_no_command_is_both_supported_and_unsupported():
    for name in COMMANDS:
        assert unsupported_reason(name.encode()) is None
    assert "transactions" in (unsupported_reason(b"MULTI") or "")


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        ([b"GET", b"k"], [b"k"]),
        ([b"MSET", b"a", b"1", b"b", b"2"], [b"a", b"b"]),
        ([b"MSET", b"a", b"1", b"b"], None),
        ([b"DEL", b"a", b"b", b"c"], [b"a", b"b", b"c"]),
        ([b"EVAL", b"return 1", b"2", b"x", b"y", b"arg"], [b"x", b"y"]),
        ([b"EVAL", b"return 1", b"3", b"x"], None),
        ([b"EVAL", b"return 1", b"n", b"x"], None),
        ([b"ZUNIONSTORE", b"dst", b"2", b"a", b"b", b"WEIGHTS", b"1", b"2"], [b"dst", b"a", b"b"]),
        ([b"SORT", b"k", b"LIMIT", b"0", b"1", b"STORE", b"dst"], [b"k", b"dst"]),
        ([b"SORT", b"k"], [b"k"]),
        ([b"JSON.MGET", b"a", b"b", b"$.x"], [b"a", b"b"]),
        ([b"BITOP", b"AND", b"dst", b"a", b"b"], [b"dst", b"a", b"b"]),
        ([b"KEYS", b"*"], []),
    ],
)
def test_extract_keys(args, keys):
    spec = lookup(args[0])
    assert spec is not None
    assert spec.arity_ok(len(args))
    assert extract_keys(spec, args) == keys


def test_store_option_makes_a_write():
    spec = COMMANDS["georadius"]
    assert not spec.is_write([b"GEORADIUS", b"k", b"0", b"0", b"1", b"km"])
    assert spec.is_write([b"GEORADIUS", b"k", b"0", b"0", b"1", b"km", b"STORE", b"d"])


def test_unknown_command_error_matches_redis():
    assert unknown_command_error([b"foo", b"a", b"b"]) == (
        b"ERR unknown command 'foo', with args beginning with: 'a' 'b' "
    )
    long_args = [b"foo", b"x" * 200, b"y"]
    assert unknown_command_error(long_args) == (
        b"ERR unknown command 'foo', with args beginning with: '" + b"x" * 128 + b"' "
    )
    assert unknown_command_error([b"f\x00oo", b"a\r\nb"]) == (
        b"ERR unknown command 'f', with args beginning with: 'a  b' "
    )


SANS_IO_DIRS = ["protocol"]


@pytest.mark.parametrize("package", SANS_IO_DIRS)
def test_sans_io_modules_do_not_import_trio(package):
    root = Path(__file__).parent.parent / "trinomite" / package
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "trio" or n.startswith("trio.") for n in names), path
    assert "trinomite.protocol.requests" in sys.modules


def test_docs_list_every_command():
    text = (Path(__file__).parent.parent / "docs" / "redis-commands.md").read_text()
    missing = [name for name in COMMANDS if f"`{name.upper()}`" not in text]
    assert missing == []
