"""Differential tests: a node must answer exactly as the redis-server behind it.

The same command stream goes to a redis-server directly and to a node in
front of a second, identical (empty) redis-server.  Replies are compared
as **raw RESP bytes** (``+OK`` is not ``$2\\r\\nOK``), one reply at a time,
so a reply the node re-encodes, reorders, splits or drops is caught.  The
stream is delivered in several shapes: one command at a time, pipelines of
1 to 1000 requests, one byte per write, randomly chunked, and over RESP3.

Commands whose reply depends on the clock or on hash-table order are left
out, or made deterministic (EXAT/EXPIRETIME instead of TTL, sets of
integers, which Redis keeps sorted).  The few TTL/PTTL calls are compared
within a tolerance.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import pytest
import trio

from trinomite import Node
from trinomite.testing import RedisServer, redis_server

from .rawclient import Arg, RawClient, bulk, encode, encode_all

#: 2100-01-01T00:00:00Z: far enough that EXPIRETIME replies never change.
FAR_FUTURE = 4102444800
#: TTL/PTTL replies may differ by the time between the two runs.
TIME_DEPENDENT = {b"ttl": 2, b"pttl": 2000}
SCRIPT = "return {KEYS[1], ARGV[1], 3, redis.call('GET', KEYS[1])}"
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()
BINARY = b"\x00\r\n\xff$-1\r\n*2\r\n"
TEST_TIMEOUT = 20

Command = tuple[Arg, ...]
Pair = tuple[RawClient, RawClient]


def strings() -> list[Command]:
    return [
        ("SET", "s", "v1"),
        ("SET", "s", "v2", "NX"),
        ("SET", "s", "v3", "XX"),
        ("SET", "s", "v4", "GET"),
        ("SET", "missing", "x", "XX"),
        ("SET", "s", "v5", "NX", "XX"),
        ("gEt", "s"),
        ("SET", "t", "a", "EX", 1000),
        ("TTL", "t"),
        ("SET", "t", "b", "KEEPTTL"),
        ("PTTL", "t"),
        ("SET", "t", "c", "PX", 500000),
        ("SET", "t", "d", "EXAT", FAR_FUTURE),
        ("EXPIRETIME", "t"),
        ("SET", "t", "e", "PXAT", FAR_FUTURE * 1000 + 1),
        ("PEXPIRETIME", "t"),
        ("SET", "t", "f", "EX", "notanumber"),
        ("GETEX", "s", "EXAT", FAR_FUTURE),
        ("EXPIRETIME", "s"),
        ("GETEX", "s", "PERSIST"),
        ("TTL", "s"),
        ("GETEX", "nokey"),
        ("GETDEL", "s"),
        ("GETDEL", "s"),
        ("SET", "bin", BINARY),
        ("GET", "bin"),
        ("STRLEN", "bin"),
        ("SET", "n", 10),
        ("INCR", "n"),
        ("INCRBY", "n", -25),
        ("DECR", "n"),
        ("DECRBY", "n", 7),
        ("INCRBY", "n", "1.5"),
        ("INCR", "bin"),
        ("INCRBYFLOAT", "f", "1.5"),
        ("INCRBYFLOAT", "f", "2.0e2"),
        ("INCRBYFLOAT", "f", "-0.1"),
        ("INCRBYFLOAT", "f", "abc"),
        ("APPEND", "a", "hello"),
        ("APPEND", "a", " world"),
        ("SETRANGE", "a", 6, "WORLD"),
        ("SETRANGE", "pad", 5, "x"),
        ("GET", "pad"),
        ("GETRANGE", "a", 0, 4),
        ("GETRANGE", "a", -5, -1),
        ("SUBSTR", "a", 2, 3),
        ("GETSET", "a", "new"),
        ("SETNX", "a", "no"),
        ("SETEX", "sx", 1000, "v"),
        ("PSETEX", "px", 1000000, "v"),
        ("MSET", "m1", "1", "m2", "2", "m3", ""),
        ("MGET", "m1", "m2", "m3", "nokey", "h"),
        ("MSETNX", "m1", "x", "m9", "y"),
        ("LCS", "m1", "m2"),
    ]


def bits() -> list[Command]:
    return [
        ("SETBIT", "bits", 7, 1),
        ("SETBIT", "bits", 100, 1),
        ("SETBIT", "bits", 7, 0),
        ("GETBIT", "bits", 100),
        ("GETBIT", "bits", 100000),
        ("SETBIT", "bits", -1, 1),
        ("BITCOUNT", "bits"),
        ("BITCOUNT", "bits", 0, 5),
        ("BITCOUNT", "bits", 0, 100, "BIT"),
        ("BITPOS", "bits", 1),
        ("BITPOS", "bits", 0, 2),
        ("BITFIELD", "bf", "SET", "u8", 0, 255, "GET", "u8", 0, "INCRBY", "u4", 4, 3),
        ("BITFIELD", "bf", "OVERFLOW", "SAT", "INCRBY", "u4", 4, 100, "GET", "i8", 0),
        ("BITFIELD", "bf", "OVERFLOW", "FAIL", "INCRBY", "u2", 0, 5),
        ("BITFIELD_RO", "bf", "GET", "u16", 0),
        ("BITOP", "AND", "bitand", "bits", "bf"),
        ("GET", "bitand"),
    ]


def keys(dump_payload: bytes) -> list[Command]:
    return [
        ("EXISTS", "a", "bits", "nokey", "a"),
        ("TYPE", "a"),
        ("TYPE", "nokey"),
        ("EXPIRE", "a", 1000),
        ("TTL", "a"),
        ("PTTL", "a"),
        ("PERSIST", "a"),
        ("PERSIST", "a"),
        ("TTL", "a"),
        ("TTL", "nokey"),
        ("EXPIRE", "a", 1000, "NX"),
        ("EXPIRE", "a", "soon"),
        ("EXPIREAT", "a", FAR_FUTURE),
        ("EXPIRETIME", "a"),
        ("PEXPIREAT", "a", FAR_FUTURE * 1000),
        ("PEXPIRETIME", "a"),
        ("PEXPIRE", "nokey", 100),
        ("DUMP", "a"),
        ("DUMP", "nokey"),
        ("RESTORE", "restored", 0, dump_payload),
        ("RESTORE", "restored", 0, dump_payload),
        ("RESTORE", "restored", 0, dump_payload, "REPLACE"),
        ("RESTORE", "badpayload", 0, "garbage"),
        ("GET", "restored"),
        ("RENAME", "restored", "renamed"),
        ("RENAMENX", "renamed", "a"),
        ("RENAME", "nokey", "x"),
        ("COPY", "renamed", "copied"),
        ("TOUCH", "a", "renamed", "nokey"),
        ("DEL", "copied", "nokey", "renamed"),
        ("UNLINK", "m1", "m2"),
        ("DBSIZE",),
        ("KEYS", "pad"),
        ("KEYS", "nomatch*"),
    ]


def hashes() -> list[Command]:
    return [
        ("HSET", "h", "f1", "v1", "f2", "v2", "f3", "3"),
        ("HSET", "h", "f1", "v1b"),
        ("HGET", "h", "f1"),
        ("HGET", "h", "nofield"),
        ("HMGET", "h", "f1", "nofield", "f3"),
        ("HGETALL", "h"),
        ("HKEYS", "h"),
        ("HVALS", "h"),
        ("HINCRBY", "h", "f3", 4),
        ("HINCRBY", "h", "f1", 1),
        ("HINCRBYFLOAT", "h", "f3", "0.25"),
        ("HSTRLEN", "h", "f2"),
        ("HEXISTS", "h", "f2"),
        ("HSETNX", "h", "f2", "no"),
        ("HMSET", "h", "f4", "4"),
        ("HDEL", "h", "f2", "nofield"),
        ("HLEN", "h"),
        ("HGETALL", "nokey"),
        ("TYPE", "h"),
    ]


def lists() -> list[Command]:
    return [
        ("RPUSH", "l", "a", "b", "c", "b"),
        ("LPUSH", "l", "z"),
        ("LRANGE", "l", 0, -1),
        ("LINDEX", "l", 2),
        ("LINDEX", "l", "two"),
        ("LINSERT", "l", "BEFORE", "c", "bb"),
        ("LSET", "l", 0, "zz"),
        ("LSET", "l", 99, "x"),
        ("LPOS", "l", "b"),
        ("LPOS", "l", "b", "RANK", 2),
        ("LREM", "l", 1, "b"),
        ("LPOP", "l", 2),
        ("RPOP", "l"),
        ("LLEN", "l"),
        ("LPUSHX", "nokey", "x"),
        ("RPUSHX", "l", "tail"),
        ("LMOVE", "l", "l2", "LEFT", "RIGHT"),
        ("RPOPLPUSH", "l", "l2"),
        ("LTRIM", "l", 0, 0),
        ("LRANGE", "l", 0, -1),
        ("LRANGE", "l2", 0, -1),
        ("LPOP", "nokey"),
        ("TYPE", "l2"),
    ]


def sets() -> list[Command]:
    # Integer-only sets are intsets: Redis returns them sorted, deterministically.
    return [
        ("SADD", "si", 3, 1, 2, 10),
        ("SADD", "si2", 2, 3, 4),
        ("SADD", "si", 1),
        ("SMEMBERS", "si"),
        ("SCARD", "si"),
        ("SISMEMBER", "si", 10),
        ("SMISMEMBER", "si", 1, 5, 3),
        ("SINTER", "si", "si2"),
        ("SUNION", "si", "si2"),
        ("SDIFF", "si", "si2"),
        ("SINTERCARD", 2, "si", "si2"),
        ("SINTERSTORE", "sdst", "si", "si2"),
        ("SUNIONSTORE", "sdst2", "si", "si2"),
        ("SDIFFSTORE", "sdst3", "si", "si2"),
        ("SMEMBERS", "sdst2"),
        ("SREM", "si", 10, 11),
        ("SMOVE", "si", "si2", 1),
        ("SMEMBERS", "si2"),
        ("SADD", "ss", "x", "y"),
        ("SISMEMBER", "ss", "y"),
        ("SCARD", "ss"),
        ("SMEMBERS", "nokey"),
        ("TYPE", "si"),
    ]


def sorted_sets() -> list[Command]:
    return [
        ("ZADD", "z", 1, "a", 2, "b", 3, "c", "2.5", "d"),
        ("ZADD", "z", "INCR", "1.5", "a"),
        ("ZADD", "z", "XX", "CH", 10, "c", 1, "nomember"),
        ("ZADD", "z", "NX", "GT", 1, "a"),
        ("ZRANGE", "z", 0, -1, "WITHSCORES"),
        ("ZRANGE", "z", "(2", "+inf", "BYSCORE", "LIMIT", 0, 2),
        ("ZRANGEBYSCORE", "z", "-inf", "(10", "WITHSCORES"),
        ("ZREVRANGE", "z", 0, 1),
        ("ZREVRANGEBYSCORE", "z", "+inf", 2),
        ("ZRANK", "z", "c"),
        ("ZREVRANK", "z", "c"),
        ("ZSCORE", "z", "d"),
        ("ZSCORE", "z", "nomember"),
        ("ZMSCORE", "z", "a", "nomember"),
        ("ZINCRBY", "z", "0.1", "b"),
        ("ZCOUNT", "z", 2, "+inf"),
        ("ZCARD", "z"),
        ("ZADD", "zl", 0, "a", 0, "b", 0, "c", 0, "d"),
        ("ZLEXCOUNT", "zl", "[b", "+"),
        ("ZRANGEBYLEX", "zl", "-", "(c"),
        ("ZREVRANGEBYLEX", "zl", "+", "[b"),
        ("ZREMRANGEBYLEX", "zl", "[a", "[a"),
        ("ZUNIONSTORE", "zu", 2, "z", "zl", "WEIGHTS", 1, 2),
        ("ZINTERSTORE", "zi", 2, "z", "zl"),
        ("ZDIFFSTORE", "zd", 2, "z", "zl"),
        ("ZUNION", 2, "z", "zl", "WITHSCORES"),
        ("ZINTER", 2, "z", "zl", "AGGREGATE", "MAX"),
        ("ZDIFF", 2, "z", "zl"),
        ("ZRANGESTORE", "zr", "z", 0, 1),
        ("ZPOPMIN", "z"),
        ("ZPOPMAX", "z", 2),
        ("ZREM", "z", "b", "nomember"),
        ("ZREMRANGEBYSCORE", "zu", "-inf", 1),
        ("ZREMRANGEBYRANK", "zu", 0, 0),
        ("ZRANGE", "zu", 0, -1, "WITHSCORES"),
        ("ZADD", "z", "notascore", "x"),
        ("TYPE", "z"),
    ]


def hyperloglog_and_geo() -> list[Command]:
    return [
        ("PFADD", "hll", "a", "b", "c", "d"),
        ("PFADD", "hll", "a"),
        ("PFCOUNT", "hll"),
        ("PFADD", "hll2", "c", "d", "e"),
        ("PFCOUNT", "hll", "hll2"),
        ("PFMERGE", "hll3", "hll", "hll2"),
        ("PFCOUNT", "hll3"),
        ("GET", "hll3"),
        ("PFADD", "a", "x"),
        ("GEOADD", "geo", "13.361389", "38.115556", "Palermo", "15.087269", "37.502669", "Catania"),
        ("GEODIST", "geo", "Palermo", "Catania"),
        ("GEODIST", "geo", "Palermo", "Catania", "km"),
        ("GEOHASH", "geo", "Palermo", "Nowhere"),
        ("GEOPOS", "geo", "Catania", "Nowhere"),
        ("GEOSEARCH", "geo", "FROMLONLAT", 15, 37, "BYRADIUS", 200, "km", "ASC", "WITHDIST"),
        ("GEORADIUS_RO", "geo", 15, 37, 200, "km", "WITHCOORD", "ASC"),
        ("GEOSEARCHSTORE", "geo2", "geo", "FROMMEMBER", "Palermo", "BYBOX", 400, 400, "km"),
        ("GEOADD", "geo", 500, 500, "bad"),
    ]


def scripting() -> list[Command]:
    return [
        ("EVALSHA", SCRIPT_SHA, 1, "a", "arg"),
        ("SCRIPT", "EXISTS", SCRIPT_SHA, "0" * 40),
        ("EVAL", SCRIPT, 1, "a", "arg"),
        ("SCRIPT", "EXISTS", SCRIPT_SHA),
        ("SCRIPT", "LOAD", "return redis.status_reply('FINE')"),
        ("EVALSHA", hashlib.sha1(b"return redis.status_reply('FINE')").hexdigest(), 0),
        ("EVAL", "return {1, 2.9, {3, 'x'}, false}", 0),
        ("EVAL", "return redis.error_reply('MYERR boom')", 0),
        ("EVAL", "return redis.call('nosuchcommand')", 0),
        ("EVAL", "return 1", "notanumber"),
        ("EVAL_RO", "return redis.call('GET', KEYS[1])", 1, "a"),
    ]


def errors_and_node_commands() -> list[Command]:
    return [
        ("LPUSH", "a", "x"),
        ("HGET", "l2", "f"),
        ("GET",),
        ("SET", "onlykey"),
        ("HSET", "h", "f"),
        ("SCRIPT",),
        ("NOSUCHCMD", "x", "y"),
        ("nosuchcmd",),
        ("EXPIRE", "a", "1.5"),
        ("SETRANGE", "a", -1, "x"),
        ("PING",),
        ("PING", "hello"),
        ("ECHO", BINARY),
        ("SELECT", 0),
    ]


def command_sequence(dump_payload: bytes) -> list[Command]:
    """Every command of the differential run, in order (keys shared across groups)."""
    return [
        *strings(),
        *bits(),
        *keys(dump_payload),
        *hashes(),
        *lists(),
        *sets(),
        *sorted_sets(),
        *hyperloglog_and_geo(),
        *scripting(),
        *errors_and_node_commands(),
    ]


def assert_same_replies(
    commands: Sequence[Command], direct: list[bytes], proxied: list[bytes]
) -> None:
    assert len(direct) == len(proxied) == len(commands)
    mismatches = []
    for i, (command, want, got) in enumerate(zip(commands, direct, proxied, strict=True)):
        name = str(command[0]).lower().encode()
        if name in TIME_DEPENDENT and want[:1] == got[:1] == b":":
            same = abs(int(want[1:]) - int(got[1:])) <= TIME_DEPENDENT[name]
        else:
            same = want == got
        if not same:
            mismatches.append(f"#{i} {command!r}: redis {want!r} != node {got!r}")
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.fixture(name="direct_backend")
def direct_backend_fixture() -> Iterator[RedisServer]:
    """A second redis-server, talked to without a node."""
    with redis_server() as server:
        yield server


@pytest.fixture
async def pair(direct_backend: RedisServer, redis_node: Node) -> AsyncIterator[Pair]:
    """(client of the bare redis-server, client of the node), both on empty datastores."""
    async with (
        await RawClient.connect(direct_backend.host, direct_backend.port) as direct,
        await RawClient.to_node(redis_node) as proxied,
    ):
        yield direct, proxied


async def dump_payload(client: RawClient) -> bytes:
    """A DUMP payload made by this Redis version (the scratch key is removed)."""
    scratch = [("SET", "__dump__", "restored value"), ("DUMP", "__dump__"), ("DEL", "__dump__")]
    header, _, rest = (await client.pipeline(encode_all(scratch), 3))[1].partition(b"\r\n")
    return rest[: int(header[1:])]


async def full_sequence(pair: Pair) -> list[Command]:
    return command_sequence(await dump_payload(pair[0]))


Runner = Callable[[RawClient, Sequence[Command]], Awaitable[list[bytes]]]


async def compare(pair: Pair, commands: Sequence[Command], run: Runner) -> None:
    """Run ``commands`` on both sides with ``run`` and compare every reply."""
    direct, proxied = pair
    assert_same_replies(commands, await run(direct, commands), await run(proxied, commands))


async def one_at_a_time(client: RawClient, commands: Sequence[Command]) -> list[bytes]:
    return [await client.call(*command) for command in commands]


def pipelined(size: int) -> Runner:
    """Send ``size`` requests at once, then read their replies (while sending)."""

    async def run(client: RawClient, commands: Sequence[Command]) -> list[bytes]:
        replies: list[bytes] = []
        for start in range(0, len(commands), size):
            chunk = commands[start : start + size]
            replies += await client.pipeline(encode_all(chunk), len(chunk))
        return replies

    return run


def in_pieces(split: Callable[[bytes], list[bytes]]) -> Runner:
    """Send the whole request stream in the pieces ``split`` cuts it into."""

    async def run(client: RawClient, commands: Sequence[Command]) -> list[bytes]:
        async def send() -> None:
            for piece in split(encode_all(commands)):
                await client.send(piece)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send)
            return await client.read(len(commands))

    return run


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


async def test_one_command_at_a_time(pair: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        await compare(pair, await full_sequence(pair), one_at_a_time)


@pytest.mark.parametrize("size", [1, 10, 100, 1000])
async def test_pipelines(pair: Pair, size: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        base = await full_sequence(pair)
        # Repeat the sequence (on the state the previous round left) past 2 pipelines.
        await compare(pair, base * (2 * 1000 // len(base) + 1), pipelined(size))


async def test_byte_by_byte_delivery(pair: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        await compare(pair, await full_sequence(pair), in_pieces(bytewise))


async def test_resp3_then_back_to_resp2(pair: Pair) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        commands = await full_sequence(pair)
        for client in pair:
            hello = await client.call("HELLO", 3)
            assert hello.startswith(b"%")  # a RESP3 map: the connection now speaks RESP3
        await compare(pair, commands, pipelined(50))
        for client in pair:
            assert (await client.call("HELLO", 2)).startswith(b"*")
        after: list[Command] = [("HGETALL", "h"), ("ZSCORE", "zu", "c"), ("ZSCORE", "zu", "x")]
        await compare(pair, after, pipelined(3))


async def test_large_values(pair: Pair) -> None:
    """Replies far larger than one receive buffer are forwarded intact."""
    with trio.fail_after(TEST_TIMEOUT):
        big = random.Random(1).randbytes(3 * 1024 * 1024 + 7)
        commands: list[Command] = [
            ("SET", "big", big),
            ("GET", "big"),
            ("APPEND", "big", big[:1000]),
            ("GETRANGE", "big", 1, -2),
            ("RPUSH", "biglist", *[big[i : i + 1000] for i in range(0, 500_000, 1000)]),
            ("LRANGE", "biglist", 0, -1),
            ("MGET", "big", "nokey", "big"),
        ]
        await compare(pair, commands, pipelined(len(commands)))


def random_commands(rng: random.Random, count: int) -> list[Command]:
    """Random deterministic commands over a few keys of clashing types."""
    keys = [f"k{i}" for i in range(6)]
    makers: list[Callable[[str], Command]] = [
        lambda k: ("SET", k, rng.randrange(100)),
        lambda k: ("GET", k),
        lambda k: ("INCRBY", k, rng.randrange(-5, 5)),
        lambda k: ("APPEND", k, "x" * rng.randrange(3)),
        lambda k: ("RPUSH", k, rng.randrange(10)),
        lambda k: ("LRANGE", k, 0, rng.randrange(-1, 3)),
        lambda k: ("HSET", k, f"f{rng.randrange(3)}", rng.randrange(9)),
        lambda k: ("HGETALL", k),
        lambda k: ("ZADD", k, rng.randrange(5), f"m{rng.randrange(4)}"),
        lambda k: ("ZRANGE", k, 0, -1, "WITHSCORES"),
        lambda k: ("SADD", k, rng.randrange(20)),
        lambda k: ("SMEMBERS", k),
        lambda k: ("DEL", k),
        lambda k: ("EXISTS", k, rng.choice(keys)),
        lambda k: ("TYPE", k),
        lambda k: ("MGET", k, rng.choice(keys)),
        lambda k: ("GET",),
        lambda k: ("PING",),
    ]
    return [rng.choice(makers)(rng.choice(keys)) for _ in range(count)]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_commands_random_chunking(pair: Pair, seed: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        rng = random.Random(seed)

        def random_pieces(data: bytes) -> list[bytes]:
            cuts = sorted(rng.sample(range(1, len(data)), len(data) // 32))
            return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]

        await compare(pair, random_commands(rng, 600), in_pieces(random_pieces))


END = encode("ECHO", "end of stream")


async def replies_to_stream(client: RawClient, data: bytes, closes: bool) -> bytes:
    """Everything the server answers to ``data``: up to EOF if it ``closes``,
    else up to the reply to an ECHO sent after ``data``."""
    if closes:
        await client.send(data)
        return await client.wait_closed()
    await client.send(data + END)
    received = bytearray()
    while not received.endswith(bulk("end of stream")):
        chunk = await client.stream.receive_some(65536)
        assert chunk, f"closed unexpectedly after {bytes(received)!r}"
        received += chunk
    return bytes(received)


@pytest.mark.parametrize(
    ("stream", "closes"),
    [
        (b'SET inl "a b"\r\nGET inl\r\nPING\r\nECHO hi\r\nNOSUCH 1 2\r\nGET\r\nGET inl\n', False),
        (b"*0\r\n*-1\r\n\r\nPING\r\n*1\r\n$0\r\n\r\n", False),
        (b"*1\r\n$4\r\nPINGxx*2\r\n$4\r\nECHO\r\n$1\r\nx\r\r\n", False),
        (b"PING\r\nQUIT\r\nPING\r\n", True),
        (b"*abc\r\n", True),
        (b"*1\r\n$abc\r\n", True),
        (b"PING\r\n*1\r\nfoo\r\n", True),
        (b"*2\r\n$4\r\nECHO\r\n$-1\r\n", True),
        (b'SET a "b\r\n', True),
        (b"*1\r\n$536870913\r\n", True),
        (b"x" * (64 * 1024 + 1), True),
        (b"*+1\r\n$4\r\nPING\r\n", True),
        (b"*1 \r\n$4\r\nPING\r\n", True),
        (b"*01\r\n$04\r\nPING\r\n", True),  # leading zeros are refused, as Redis
    ],
)
async def test_inline_quit_and_protocol_errors(pair: Pair, stream: bytes, closes: bool) -> None:
    """Same replies, and the connection closed (or kept) alike, for odd request streams."""
    with trio.fail_after(1):  # every case is answered (or closed) at once
        direct, proxied = pair
        want = await replies_to_stream(direct, stream, closes)
        assert want, "redis sent nothing: not a useful case"
        assert await replies_to_stream(proxied, stream, closes) == want


@pytest.mark.parametrize(
    "command",
    [
        ("AUTH", "x"),
        ("AUTH", "default", "anything"),
        ("AUTH", "nobody", "x"),
        ("CLIENT", "SETNAME", "a b"),
        ("CLIENT", "SETNAME"),
        ("HELLO", 4),
        ("HELLO", "two"),
        ("HELLO", 2, "BOGUS"),
        ("COMMAND", "GETKEYS", "nosuch", "k"),
        ("COMMAND", "GETKEYS", "eval", "x", 2, "a", "b", "c"),
        ("COMMAND", "nosub"),
        ("PING", "a", "b"),
        ("ECHO",),
        ("SELECT", "x"),
        ("NOSUCH", "a\r\nb"),
        ("NOSUCH", "x" * 200, "y"),
        ("x" * 200,),
        ("NOSUCH", b"\xff\xfe"),
        ("NOSUCH", "\u00e9" * 100),
        ("NOSUCH", b"a\x00b", "c"),
        ("AUTH", "a", "b", "c"),
        ("COMMAND", "GETKEYS", "ping"),
        ("COMMAND", "COUNT", "x"),
    ],
    ids=lambda command: "-".join(str(a)[:16] for a in command),
)
async def test_node_made_replies_match_redis(pair: Pair, command: Command) -> None:
    """Errors and connection commands the node answers itself, byte for byte."""
    with trio.fail_after(TEST_TIMEOUT):
        await compare(pair, [command], one_at_a_time)
