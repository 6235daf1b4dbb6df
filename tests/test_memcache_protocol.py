"""memcached ASCII protocol: the request parser, the reply framer, the encoders.

Parser cases are a table, each fed whole, one byte at a time, and split in
two at every offset (h11's discipline); Hypothesis checks that random bytes
never raise and never grow the buffer past the limits.  The reply framer is
checked against a real ``memcached`` (started on an ephemeral loopback port,
``-U 0``, spoken to over a plain socket): for every command its replies must
be split exactly, and the parser's refusals must be memcached's own lines
wherever trinomite claims parity.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinomite.protocol.memcache import (
    COMMANDS,
    McKind,
    McRequest,
    MemcacheLimits,
    MemcacheRequestParser,
    encode_request,
)
from trinomite.protocol.memcache_replies import (
    MemcacheReplyError,
    MemcacheReplyFramer,
    ReplyKind,
    client_error,
    is_error,
    merge_gets,
    server_error,
    split_values,
    version,
)
from trinomite.testing import free_port

BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
OK = b"OK\r\n"
LINE_TOO_LONG = b"CLIENT_ERROR line too long\r\n"
ERROR = b"ERROR\r\n"
BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
USAGE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
FLUSH_REFUSED = (
    b"CLIENT_ERROR unsupported command 'flush_all': "
    b"server administration is not proxied; talk to the datastore directly\r\n"
)
META_REFUSED = (
    b"CLIENT_ERROR unsupported command 'ms': "
    b"meta commands are not supported by trinomite yet; use the classic commands\r\n"
)
K250 = b"k" * 250
K251 = b"k" * 251

#: (command, keys, noreply, data, error reply) of one parsed request.
Summary = tuple[bytes, tuple[bytes, ...], bool, bytes | None, bytes | None]


def summary(request: McRequest) -> Summary:
    error = None if request.error is None else request.error.reply
    return (request.command, request.keys, request.noreply, request.data, error)


def ok(command: bytes, *keys: bytes, noreply: bool = False, data: bytes | None = None) -> Summary:
    return (command, keys, noreply, data, None)


def refused(command: bytes, reply: bytes, noreply: bool = False) -> Summary:
    return (command, (), noreply, None, reply)


# (name, stream, expected requests, framing error reply or None)
CASES: list[tuple[str, bytes, list[Summary], bytes | None]] = [
    ("get", b"get a\r\n", [ok(b"get", b"a")], None),
    ("get many keys", b"get a b c\r\n", [ok(b"get", b"a", b"b", b"c")], None),
    ("gets", b"gets a b\r\n", [ok(b"gets", b"a", b"b")], None),
    ("gat", b"gat 10 a b\r\n", [ok(b"gat", b"a", b"b")], None),
    ("gats", b"gats -1 a\r\n", [ok(b"gats", b"a")], None),
    ("get lf only", b"get a\n", [ok(b"get", b"a")], None),
    ("get extra spaces", b"  get   a  b \r\n", [ok(b"get", b"a", b"b")], None),
    ("get noreply is a key", b"get noreply\r\n", [ok(b"get", b"noreply")], None),
    ("get 250-byte key", b"get " + K250 + b"\r\n", [ok(b"get", K250)], None),
    ("get utf-8 key", "get clé\r\n".encode(), [ok(b"get", "clé".encode())], None),
    ("set", b"set k 5 0 3\r\nbar\r\n", [ok(b"set", b"k", data=b"bar")], None),
    ("set binary data", b"set k 0 0 4\r\n\r\n\r\n\r\n", [ok(b"set", b"k", data=b"\r\n\r\n")], None),
    ("set empty", b"set k 0 0 0\r\n\r\n", [ok(b"set", b"k", data=b"")], None),
    (
        "set noreply",
        b"set k 0 0 1 noreply\r\nx\r\n",
        [ok(b"set", b"k", noreply=True, data=b"x")],
        None,
    ),
    (
        "set odd last token ignored",
        b"set k 0 0 1 junk\r\nx\r\n",
        [ok(b"set", b"k", data=b"x")],
        None,
    ),
    ("set signs", b"set k +1 -1 +1\r\nx\r\n", [ok(b"set", b"k", data=b"x")], None),
    ("set 250-byte key", b"set " + K250 + b" 0 0 1\r\nx\r\n", [ok(b"set", K250, data=b"x")], None),
    ("add", b"add k 0 0 1\r\nx\r\n", [ok(b"add", b"k", data=b"x")], None),
    ("replace", b"replace k 0 0 1\r\nx\r\n", [ok(b"replace", b"k", data=b"x")], None),
    ("append", b"append k 0 0 1\r\nx\r\n", [ok(b"append", b"k", data=b"x")], None),
    ("prepend", b"prepend k 0 0 1\r\nx\r\n", [ok(b"prepend", b"k", data=b"x")], None),
    ("cas", b"cas k 0 0 1 99\r\nx\r\n", [ok(b"cas", b"k", data=b"x")], None),
    (
        "cas noreply",
        b"cas k 0 0 1 9 noreply\r\nx\r\n",
        [ok(b"cas", b"k", noreply=True, data=b"x")],
        None,
    ),
    ("incr", b"incr n 5\r\n", [ok(b"incr", b"n")], None),
    (
        "decr noreply",
        b"decr n 18446744073709551615 noreply\r\n",
        [ok(b"decr", b"n", noreply=True)],
        None,
    ),
    ("delete", b"delete k\r\n", [ok(b"delete", b"k")], None),
    ("delete legacy 0", b"delete k 0\r\n", [ok(b"delete", b"k")], None),
    ("delete noreply", b"delete k noreply\r\n", [ok(b"delete", b"k", noreply=True)], None),
    ("delete 0 noreply", b"delete k 0 noreply\r\n", [ok(b"delete", b"k", noreply=True)], None),
    ("touch", b"touch k 10\r\n", [ok(b"touch", b"k")], None),
    ("touch noreply", b"touch k 10 noreply\r\n", [ok(b"touch", b"k", noreply=True)], None),
    ("version", b"version\r\n", [ok(b"version")], None),
    ("version args ignored", b"version x y\r\n", [ok(b"version")], None),
    ("verbosity", b"verbosity 1\r\n", [ok(b"verbosity")], None),
    ("verbosity noreply", b"verbosity 1 noreply\r\n", [ok(b"verbosity", noreply=True)], None),
    ("quit", b"quit\r\n", [ok(b"quit")], None),
    ("quit ignores the rest", b"quit\r\nget a\r\n", [ok(b"quit")], None),
    # -- refused, connection kept: memcached's replies -----------------------
    ("unknown command", b"foo bar\r\n", [refused(b"foo", ERROR)], None),
    ("upper case", b"GET a\r\n", [refused(b"GET", ERROR)], None),
    ("empty line", b"\r\n", [refused(b"", ERROR)], None),
    ("spaces only", b"   \n", [refused(b"", ERROR)], None),
    ("tab is not a separator", b"get\ta\r\n", [refused(b"get\ta", ERROR)], None),
    ("get no key", b"get\r\n", [refused(b"get", ERROR)], None),
    ("gat no key", b"gat 10\r\n", [refused(b"gat", ERROR)], None),
    ("get 251-byte key", b"get a " + K251 + b"\r\n", [refused(b"get", BAD_FORMAT)], None),
    ("get control char", b"get a\x01b\r\n", [refused(b"get", BAD_FORMAT)], None),
    ("get nul", b"get a\x00\r\n", [refused(b"get", BAD_FORMAT)], None),
    ("get del char", b"get a\x7f\r\n", [refused(b"get", BAD_FORMAT)], None),
    ("gat bad exptime", b"gat x a\r\n", [refused(b"gat", BAD_EXPTIME)], None),
    ("incr arity", b"incr a\r\n", [refused(b"incr", ERROR)], None),
    ("incr too many", b"incr a 1 noreply x\r\n", [refused(b"incr", ERROR)], None),
    ("incr bad delta", b"incr a x\r\n", [refused(b"incr", BAD_DELTA)], None),
    ("incr negative", b"incr a -1\r\n", [refused(b"incr", BAD_DELTA)], None),
    ("incr 2**64", b"incr a 18446744073709551616\r\n", [refused(b"incr", BAD_DELTA)], None),
    (
        "incr bad delta noreply",
        b"incr a x noreply\r\n",
        [refused(b"incr", BAD_DELTA, noreply=True)],
        None,
    ),
    ("incr 251-byte key", b"incr " + K251 + b" 1\r\n", [refused(b"incr", BAD_FORMAT)], None),
    ("delete bad time", b"delete k 1\r\n", [refused(b"delete", USAGE)], None),
    ("delete two junk", b"delete k x y\r\n", [refused(b"delete", USAGE)], None),
    ("delete wrong order", b"delete k noreply 0\r\n", [refused(b"delete", USAGE)], None),
    ("delete too many", b"delete k 0 noreply x\r\n", [refused(b"delete", ERROR)], None),
    ("delete no key", b"delete\r\n", [refused(b"delete", ERROR)], None),
    ("touch bad exptime", b"touch k x\r\n", [refused(b"touch", BAD_EXPTIME)], None),
    ("touch exptime overflow", b"touch k 2147483648\r\n", [refused(b"touch", BAD_EXPTIME)], None),
    ("verbosity arity", b"verbosity\r\n", [refused(b"verbosity", ERROR)], None),
    ("verbosity bad level", b"verbosity x\r\n", [refused(b"verbosity", BAD_FORMAT)], None),
    (
        "verbosity noreply only",
        b"verbosity noreply\r\n",
        [refused(b"verbosity", BAD_FORMAT, noreply=True)],
        None,
    ),
    ("flush_all", b"flush_all\r\n", [refused(b"flush_all", FLUSH_REFUSED)], None),
    (
        "flush_all noreply",
        b"flush_all 0 noreply\r\n",
        [refused(b"flush_all", FLUSH_REFUSED, noreply=True)],
        None,
    ),
    ("stats", b"stats items\r\n", [refused(b"stats", COMMANDS[b"stats"].refusal or b"")], None),
    (
        "meta set skips its data",
        b"ms k 2 T0\r\nhi\r\nget a\r\n",
        [refused(b"ms", META_REFUSED), ok(b"get", b"a")],
        None,
    ),
    (
        "meta set without length",
        b"ms k\r\nget a\r\n",
        [refused(b"ms", META_REFUSED), ok(b"get", b"a")],
        None,
    ),
    ("meta no-op", b"mn\r\n", [refused(b"mn", COMMANDS[b"mn"].refusal or b"")], None),
    # A refused storage command with a readable <bytes> skips its data block.
    (
        "set bad flags",
        b"set k x 0 1\r\nx\r\nget a\r\n",
        [refused(b"set", BAD_FORMAT), ok(b"get", b"a")],
        None,
    ),
    (
        "set flags over 32 bits",
        b"set k 4294967296 0 1\r\nx\r\n",
        [refused(b"set", BAD_FORMAT)],
        None,
    ),
    ("set bad exptime", b"set k 0 x 1\r\nx\r\n", [refused(b"set", BAD_FORMAT)], None),
    (
        "set 251-byte key",
        b"set " + K251 + b" 0 0 1\r\nx\r\nget a\r\n",
        [refused(b"set", BAD_FORMAT), ok(b"get", b"a")],
        None,
    ),
    ("set control char key", b"set a\tb 0 0 1\r\nx\r\n", [refused(b"set", BAD_FORMAT)], None),
    (
        "set bad noreply",
        b"set k x 0 1 noreply\r\nx\r\n",
        [refused(b"set", BAD_FORMAT, noreply=True)],
        None,
    ),
    ("cas bad unique", b"cas k 0 0 1 x\r\nx\r\n", [refused(b"cas", BAD_FORMAT)], None),
    ("cas negative unique", b"cas k 0 0 1 -1\r\nx\r\n", [refused(b"cas", BAD_FORMAT)], None),
    # -- framing errors: replies owed, then the error, then close -------------
    ("set arity", b"get a\r\nset k 0 0\r\nx\r\n", [ok(b"get", b"a")], BAD_FORMAT),
    ("set too many tokens", b"set k 0 0 1 noreply x\r\nx\r\n", [], BAD_FORMAT),
    ("cas arity", b"cas k 0 0 1\r\nx\r\n", [], BAD_FORMAT),
    ("negative bytes", b"set k 0 0 -1\r\nx\r\n", [], BAD_FORMAT),
    ("bytes not a number", b"set k 0 0 x\r\nx\r\n", [], BAD_FORMAT),
    ("bytes over INT_MAX-2", b"set k 0 0 2147483646\r\n", [], BAD_FORMAT),
    ("meta set bad length", b"ms k x\r\nhi\r\n", [], BAD_FORMAT),
    (
        "data block too long",
        b"get a\r\nset k 0 0 1\r\nxyz\r\nget b\r\n",
        [ok(b"get", b"a")],
        BAD_CHUNK,
    ),
    ("data block lf only", b"set k 0 0 1\r\nx\nget b\r\n", [], BAD_CHUNK),
    ("data block no crlf", b"set k 0 0 2\r\nxyzz", [], BAD_CHUNK),
    ("line too long", b"x" * 2049 + b"\r\n", [], LINE_TOO_LONG),
    ("storage line too long", b"set " + b"k" * 2045 + b" 0 0 1\r\nx\r\n", [], LINE_TOO_LONG),
]

# Pipelines: the good cases back to back (quit excluded: it ends the stream).
PIPELINE = [case for case in CASES if case[3] is None and not case[1].startswith(b"quit")]
CASES.append(
    (
        "pipeline",
        b"".join(case[1] for case in PIPELINE),
        [request for case in PIPELINE for request in case[2]],
        None,
    )
)


def feed_in_pieces(parser: MemcacheRequestParser, pieces: list[bytes]) -> list[Summary]:
    out: list[Summary] = []
    for piece in pieces:
        parser.feed(piece)
        out.extend(summary(r) for r in parser.parse())
    return out


def splits(stream: bytes) -> Iterator[list[bytes]]:
    """The stream whole, one byte at a time, and split in two at every offset."""
    yield [stream]
    yield [stream[i : i + 1] for i in range(len(stream))]
    if len(stream) < 600:
        for i in range(1, len(stream)):
            yield [stream[:i], stream[i:]]


@pytest.mark.parametrize(("name", "stream", "expected", "error"), CASES, ids=[c[0] for c in CASES])
def test_table(name, stream, expected, error):
    for pieces in splits(stream):
        parser = MemcacheRequestParser()
        assert feed_in_pieces(parser, pieces) == expected, (name, pieces)
        if error is None:
            assert parser.error is None, (name, pieces)
        else:
            assert parser.error is not None, (name, pieces)
            assert parser.error.reply == error
            assert parser.error.close
            assert parser.closed


def test_raw_is_the_exact_bytes():
    good = [case[1] for case in PIPELINE if all(r[4] is None for r in case[2])]
    parser = MemcacheRequestParser()
    parser.feed(b"".join(good))
    assert b"".join(r.raw for r in parser.parse()) == b"".join(good)
    assert parser.at_boundary


def test_request_fields():
    parser = MemcacheRequestParser()
    parser.feed(b"cas k 1 2 3 4 noreply\r\nabc\r\ngat 5 a b\r\nfoo\r\n")
    cas, gat, foo = parser.parse()
    assert cas.kind is McKind.STORAGE
    assert cas.args == (b"k", b"1", b"2", b"3", b"4", b"noreply")
    assert cas.reply_kind is ReplyKind.STORED
    assert cas.spec is COMMANDS[b"cas"]
    assert gat.kind is McKind.RETRIEVAL
    assert gat.reply_kind is ReplyKind.VALUES
    assert foo.kind is McKind.INVALID
    assert foo.spec is None
    assert foo.reply_kind is None
    assert foo.error is not None
    assert not foo.error.close
    assert foo.error.message == "ERROR"


def test_command_table_is_closed_and_consistent():
    for name, spec in COMMANDS.items():
        assert name == spec.name == name.lower()
        if spec.kind is McKind.UNSUPPORTED:
            assert spec.refusal is not None
            assert spec.refusal.endswith(b"\r\n")
        else:
            assert spec.refusal is None
        if spec.kind is McKind.STORAGE:
            assert spec.data_index == 4
            assert spec.noreply
            assert spec.key_index == 1
    assert {spec.kind for spec in COMMANDS.values()} == set(McKind) - {McKind.INVALID}
    assert COMMANDS[b"get"].max_tokens is None
    assert COMMANDS[b"set"].max_tokens == 6
    assert COMMANDS[b"cas"].min_tokens == 6
    assert COMMANDS[b"gat"].min_tokens == 3
    assert not COMMANDS[b"get"].noreply
    assert COMMANDS[b"touch"].noreply


# -- noreply and re-encoding -------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "without"),
    [
        (b"set k 1 2 3 noreply\r\nabc\r\n", b"set k 1 2 3\r\nabc\r\n"),
        (b"cas k 1 2 1 77 noreply\r\n\n\r\n", b"cas k 1 2 1 77\r\n\n\r\n"),
        (b"append  k 0 0 1 noreply\nx\r\n", b"append k 0 0 1\r\nx\r\n"),
        (b"incr k 1 noreply\r\n", b"incr k 1\r\n"),
        (b"decr k 1 noreply\r\n", b"decr k 1\r\n"),
        (b"delete k noreply\r\n", b"delete k\r\n"),
        (b"delete k 0 noreply\r\n", b"delete k 0\r\n"),
        (b"touch k 9 noreply\r\n", b"touch k 9\r\n"),
        (b"verbosity 1 noreply\r\n", b"verbosity 1\r\n"),
    ],
)
def test_without_noreply(stream, without):
    parser = MemcacheRequestParser()
    parser.feed(stream)
    (request,) = parser.parse()
    assert request.noreply
    assert request.raw == stream
    assert request.without_noreply() == without
    again = MemcacheRequestParser()
    again.feed(without)
    (plain,) = again.parse()
    assert not plain.noreply
    assert plain.keys == request.keys
    assert plain.data == request.data
    assert plain.without_noreply() == plain.raw


def test_for_keys_fragments_retrievals():
    parser = MemcacheRequestParser()
    parser.feed(b"get a b c\r\ngets a b\r\ngat 30 a b\r\ngats -1 a b\nset k 0 0 1\r\nx\r\n")
    get, gets, gat, gats, set_ = parser.parse()
    assert get.for_keys([b"c", b"a"]) == b"get c a\r\n"
    assert gets.for_keys((b"b",)) == b"gets b\r\n"
    assert gat.for_keys([b"b"]) == b"gat 30 b\r\n"
    assert gats.for_keys([b"a", b"b"]) == b"gats -1 a b\r\n"
    with pytest.raises(ValueError, match="at least one key"):
        get.for_keys([])
    with pytest.raises(ValueError, match="not a retrieval"):
        set_.for_keys([b"k"])


def test_encode_request():
    assert encode_request([b"get", b"a", b"b"]) == b"get a b\r\n"
    assert encode_request([b"set", b"k", b"0", b"0", b"2"], b"hi") == b"set k 0 0 2\r\nhi\r\n"


# -- limits ------------------------------------------------------------------------


def test_value_at_the_item_limit_and_one_over():
    limits = MemcacheLimits(max_item_size=1000)
    parser = MemcacheRequestParser(limits)
    parser.feed(b"set k 0 0 1000\r\n" + b"v" * 1000 + b"\r\n")
    (request,) = parser.parse()
    assert request.data == b"v" * 1000
    parser.feed(b"set k 0 0 1001\r\n")
    (request,) = parser.parse()  # refused before any of its data arrived
    assert request.error is not None
    assert request.error.reply == TOO_LARGE
    assert not request.error.close
    assert parser.buffered == 0
    for _ in range(10):
        parser.feed(b"v" * 100)
        assert parser.parse() == []
        assert parser.buffered == 0
    parser.feed(b"v\r\nget k\r\n")
    assert [summary(r) for r in parser.parse()] == [ok(b"get", b"k")]


def test_default_item_limit_is_one_mebibyte():
    parser = MemcacheRequestParser()
    parser.feed(b"set k 0 0 1048576\r\n" + b"v" * 1048576 + b"\r\nset k 0 0 1048577\r\n")
    at_limit, over = parser.parse()
    assert at_limit.data == b"v" * 1048576
    assert over.error is not None
    assert over.error.reply == TOO_LARGE


def test_huge_declared_sizes_buffer_nothing():
    tracemalloc.start()
    try:
        parser = MemcacheRequestParser()
        parser.feed(b"set k 0 0 2000000000 noreply\r\n")
        (request,) = parser.parse()
        assert request.noreply
        assert request.error is not None
        chunk = b"\0" * 65536
        for _ in range(160):  # 10 MiB of a block nobody buffers
            parser.feed(chunk)
            assert parser.parse() == []
            assert parser.buffered == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_swallow_resumes_mid_chunk():
    parser = MemcacheRequestParser(MemcacheLimits(max_item_size=4))
    parser.feed(b"set k 0 0 5\r\nabc")
    assert [summary(r) for r in parser.parse()] == [refused(b"set", TOO_LARGE)]
    parser.feed(b"de\r\nget a\r\n")
    assert [summary(r) for r in parser.parse()] == [ok(b"get", b"a")]
    assert parser.at_boundary


@pytest.mark.parametrize("max_requests", [1, 2])
def test_swallow_with_max_requests_keeps_order(max_requests):
    parser = MemcacheRequestParser(MemcacheLimits(max_item_size=4))
    parser.feed(b"get a\r\nset k 0 0 5\r\n")
    got = parser.parse(max_requests)
    parser.feed(b"abcde\r\nget b\r\n")
    got += parser.parse()
    assert [r.command for r in got] == [b"get", b"set", b"get"]
    assert got[2].keys == (b"b",)


def test_max_requests():
    parser = MemcacheRequestParser()
    parser.feed(b"get a\r\nset k 0 0 1\r\nx\r\nget b\r\n")
    assert [r.command for r in parser.parse(2)] == [b"get", b"set"]
    assert [r.command for r in parser.parse(2)] == [b"get"]


def test_line_limit_is_checked_before_the_newline():
    parser = MemcacheRequestParser()
    parser.feed(b"x" * 2048)
    assert parser.parse() == []
    assert parser.error is None
    parser.feed(b"\r")  # may still be the line ending
    assert parser.parse() == []
    assert parser.error is None
    parser.feed(b"x")
    assert parser.parse() == []
    assert parser.error is not None
    assert parser.error.reply == LINE_TOO_LONG


def test_line_at_the_limit_is_accepted():
    parser = MemcacheRequestParser()
    line = b"get " + b"k" * 2044
    assert len(line) == 2048
    parser.feed(line + b"\r\n")
    (request,) = parser.parse()
    assert request.error is not None
    assert request.error.reply == BAD_FORMAT


def test_retrieval_lines_have_their_own_limit():
    limits = MemcacheLimits(max_line_len=128, max_retrieval_line_len=1000)
    keys = b" ".join(b"key%03d" % i for i in range(100))  # 699 bytes
    for prefix in (b"get ", b"gets ", b"gat 0 ", b"gats 0 ", b" " * 100 + b"get "):
        stream = prefix + keys + b"\r\n"
        for pieces in ([stream], [stream[i : i + 7] for i in range(0, len(stream), 7)]):
            parser = MemcacheRequestParser(limits)
            got = feed_in_pieces(parser, pieces)
            assert parser.error is None
            assert len(got) == 1
            assert len(got[0][1]) == 100
    for stream in (b"get " + b"k " * 500, b" " * 101 + b"get " + keys, b"set " + keys):
        parser = MemcacheRequestParser(limits)
        parser.feed(stream)
        assert parser.parse() == []
        assert parser.error is not None
        assert parser.error.reply == LINE_TOO_LONG


def test_long_partial_line_is_not_rescanned():
    parser = MemcacheRequestParser()
    parser.feed(b"get")
    for _ in range(60):
        parser.feed(b" k" * 512)
        assert parser.parse() == []
        assert parser._find_from == parser.buffered
    parser.feed(b"\r\n")
    (request,) = parser.parse()
    assert len(request.keys) == 60 * 512


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_line_len"):
        MemcacheLimits(max_line_len=64)
    with pytest.raises(ValueError, match="max_retrieval_line_len"):
        MemcacheLimits(max_line_len=4096, max_retrieval_line_len=2048)
    with pytest.raises(ValueError, match="max_item_size"):
        MemcacheLimits(max_item_size=2**31)


def test_no_input_after_error_or_quit():
    for first in (b"set k 0 0 -1\r\n", b"quit\r\n"):
        parser = MemcacheRequestParser()
        parser.feed(first)
        parser.parse()
        assert parser.closed
        parser.feed(b"get a\r\n")
        assert parser.parse() == []
        assert parser.buffered == 0


SMALL = MemcacheLimits(max_line_len=128, max_retrieval_line_len=256, max_item_size=64)
#: A partial line (256 + CR) or a storage line with its data block (128 + 2 + 64 + 2).
SMALL_BOUND = 257


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_raise_and_stay_bounded(data, chunk):
    parser = MemcacheRequestParser(SMALL)
    for i in range(0, len(data), chunk):
        parser.feed(data[i : i + chunk])
        for request in parser.parse():
            assert isinstance(request.raw, bytes)
        assert parser.buffered <= max(SMALL_BOUND, 128 + 2 + 64 + 2)


_KEY = st.binary(min_size=1, max_size=12).map(lambda b: bytes(x % 94 + 33 for x in b))
_REQUEST = st.one_of(
    st.lists(_KEY, min_size=1, max_size=4).map(lambda ks: encode_request([b"get", *ks])),
    st.tuples(_KEY, st.binary(max_size=64)).map(
        lambda kv: encode_request([b"set", kv[0], b"0", b"0", b"%d" % len(kv[1])], kv[1])
    ),
    _KEY.map(lambda k: encode_request([b"delete", k, b"noreply"])),
    _KEY.map(lambda k: encode_request([b"incr", k, b"1"])),
    st.just(b"version\r\n"),
    st.just(b"bogus\r\n"),
    st.just(b"set k 0 0 65\r\n" + b"z" * 65 + b"\r\n"),  # over SMALL's item limit
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_REQUEST, max_size=12), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_any_split_parses_like_the_whole(requests, cuts):
    stream = b"".join(requests)
    whole = MemcacheRequestParser(SMALL)
    whole.feed(stream)
    expected = [summary(r) for r in whole.parse()]
    assert len(expected) == len(requests)
    assert whole.at_boundary
    pieces, pos, i = [], 0, 0
    while pos < len(stream):
        pieces.append(stream[pos : pos + cuts[i % len(cuts)]])
        pos += cuts[i % len(cuts)]
        i += 1
    assert feed_in_pieces(MemcacheRequestParser(SMALL), pieces) == expected


# -- the reply framer ---------------------------------------------------------------

V = ReplyKind.VALUES
# (kind, stream of exactly one reply)
REPLIES: list[tuple[ReplyKind, bytes]] = [
    (V, b"END\r\n"),
    (V, b"VALUE k 0 3\r\nbar\r\nEND\r\n"),
    (V, b"VALUE k 7 3 12345\r\nbar\r\nEND\r\n"),
    (V, b"VALUE a 0 12\r\nEND\r\nVALUE x\r\nVALUE b 0 0\r\n\r\nEND\r\n"),
    (V, b"VALUE k 0 1\r\nx\r\nSERVER_ERROR out of memory writing get response\r\n"),
    (V, b"CLIENT_ERROR bad command line format\r\n"),
    (V, b"ERROR\r\n"),
    (ReplyKind.STORED, b"STORED\r\n"),
    (ReplyKind.STORED, b"NOT_STORED\r\n"),
    (ReplyKind.STORED, b"EXISTS\r\n"),
    (ReplyKind.STORED, b"NOT_FOUND\r\n"),
    (ReplyKind.STORED, b"SERVER_ERROR object too large for cache\r\n"),
    (ReplyKind.NUMBER, b"42\r\n"),
    (ReplyKind.NUMBER, b"99 \r\n"),
    (ReplyKind.NUMBER, b"NOT_FOUND\r\n"),
    (ReplyKind.NUMBER, b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"),
    (ReplyKind.DELETED, b"DELETED\r\n"),
    (ReplyKind.DELETED, b"NOT_FOUND\r\n"),
    (ReplyKind.TOUCHED, b"TOUCHED\r\n"),
    (ReplyKind.TOUCHED, b"NOT_FOUND\r\n"),
    (ReplyKind.VERSION, b"VERSION 1.6.18\r\n"),
    (ReplyKind.OK, b"OK\r\n"),
    (ReplyKind.OK, b"ERROR cannot pipeline other commands before watch\r\n"),
]


@pytest.mark.parametrize(("kind", "reply"), REPLIES)
def test_framer_table(kind, reply):
    for pieces in splits(reply + b"STORED\r\n"):
        framer = MemcacheReplyFramer()
        got: list[bytes] = []
        kinds = [kind, ReplyKind.STORED]
        for piece in pieces:
            framer.feed(piece)
            while got != [reply, b"STORED\r\n"] and (one := framer.take(kinds[len(got)])):
                got.append(one)
        assert got == [reply, b"STORED\r\n"], pieces
        assert framer.buffered == 0


def test_framer_run_of_replies():
    stream = b"".join(reply for _, reply in REPLIES)
    kinds = [kind for kind, _ in REPLIES]
    framer = MemcacheReplyFramer()
    for i in range(len(stream)):
        framer.feed(stream[i : i + 1])
        run = framer.take_run(kinds)
        assert (run is None) == (i < len(stream) - 1)
    assert run == stream


@pytest.mark.parametrize(
    ("kind", "stream", "message"),
    [
        (V, b"VALUE k 0 3\r\nbarX\r\nEND\r\n", "not followed by CRLF"),
        (V, b"VALUE k 0\r\n", "bad VALUE line"),
        (V, b"VALUE k 0 -1\r\n", "bad VALUE line"),
        (V, b"VALUE k x 3\r\n", "bad VALUE line"),
        (V, b"VALUE k 0 1048577\r\n", "over the limit"),
        (V, b"STORED\r\n", "unexpected line"),
        (ReplyKind.STORED, b"DELETED\r\n", "unexpected line"),
        (ReplyKind.DELETED, b"STORED\r\n", "unexpected line"),
        (ReplyKind.NUMBER, b"-1\r\n", "unexpected line"),
        (ReplyKind.VERSION, b"VALUE k 0 1\r\n", "unexpected line"),
        (ReplyKind.OK, b"END\r\n", "unexpected line"),
        (ReplyKind.OK, b"x" * 9000, "too long"),
        (ReplyKind.OK, b"x" * 9000 + b"\r\n", "too long"),
    ],
)
def test_framer_protocol_errors(kind, stream, message):
    framer = MemcacheReplyFramer()
    framer.feed(stream)
    with pytest.raises(MemcacheReplyError, match=message):
        framer.take(kind)


def test_framer_value_over_limit_is_refused_before_its_data():
    framer = MemcacheReplyFramer(max_value_len=10)
    framer.feed(b"VALUE k 0 10\r\n0123456789\r\n")
    assert framer.take(V) is None  # at the limit: waits for END
    framer.feed(b"VALUE k 0 11\r\n")
    with pytest.raises(MemcacheReplyError, match="over the limit"):
        framer.take(V)


def test_framer_skips_values_without_scanning_them():
    framer = MemcacheReplyFramer(max_value_len=1 << 22)
    framer.feed(b"VALUE k 0 4000000\r\n")
    assert framer.take(V) is None
    for _ in range(40):
        framer.feed(b"END\r\n" * 20000)  # looks like END, but is data
        assert framer.take(V) is None
    framer.feed(b"\r\nEND\r\n")
    assert len(framer.take(V) or b"") == 19 + 4000000 + 2 + 5


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(ReplyKind)))
def test_framer_random_bytes(data, kind):
    framer = MemcacheReplyFramer(max_value_len=100, max_line_len=100)
    try:
        for i in range(len(data)):
            framer.feed(data[i : i + 1])
            framer.take(kind)
    except MemcacheReplyError:
        pass
    assert framer.buffered <= len(data)


# -- coalescing multi-gets ------------------------------------------------------------

A = b"VALUE a 0 1\r\n1\r\n"
B = b"VALUE b 5 2 77\r\n\r\n\r\n"
C = b"VALUE c 0 5\r\nEND\r\n\r\n"


def test_split_values():
    assert split_values(A + B + C + b"END\r\n") == [(b"a", A), (b"b", B), (b"c", C)]
    assert split_values(b"END\r\n") == []
    for bad in (
        b"",
        A,
        A + b"END\r\nEND\r\n",
        b"SERVER_ERROR x\r\n",
        b"VALUE a 0 9\r\n1\r\nEND\r\n",
    ):
        assert split_values(bad) is None


def test_merge_gets():
    one, two = A + C + b"END\r\n", B + b"END\r\n"
    assert merge_gets(one, two) == A + C + B + b"END\r\n"
    assert merge_gets(one, two, keys=[b"a", b"b", b"c"]) == A + B + C + b"END\r\n"
    assert merge_gets(one, two, keys=[b"z", b"c", b"a"]) == C + A + b"END\r\n"
    assert merge_gets(one, keys=[b"a", b"a"]) == A + A + b"END\r\n"  # deduplicated fragment
    assert merge_gets(A + A + b"END\r\n", keys=[b"a", b"a"]) == A + A + b"END\r\n"
    assert merge_gets() == b"END\r\n"
    with pytest.raises(ValueError, match="not a retrieval reply"):
        merge_gets(one, b"SERVER_ERROR Peer: Peer Node is down\r\n")


def test_encoders():
    assert server_error("Peer: Peer Node is not connected") == (
        b"SERVER_ERROR Peer: Peer Node is not connected\r\n"
    )
    assert server_error(b"Dynomite: bad\r\nline") == b"SERVER_ERROR Dynomite: bad  line\r\n"
    assert client_error("no such thing") == b"CLIENT_ERROR no such thing\r\n"
    assert version("trinomite 0.1") == b"VERSION trinomite 0.1\r\n"
    assert is_error(b"ERROR\r\n")
    assert is_error(b"SERVER_ERROR x\r\n")
    assert is_error(b"CLIENT_ERROR x\r\n")
    assert not is_error(b"END\r\n")


# -- differential: a real memcached ----------------------------------------------------


class Memcached:
    """One memcached process on an ephemeral loopback port, spoken to over raw sockets."""

    def __init__(self) -> None:
        binary = shutil.which("memcached")
        assert binary is not None
        for _attempt in range(3):
            self.port = free_port()
            args = [binary, "-U", "0", "-l", "127.0.0.1", "-p", str(self.port), "-t", "1"]
            if os.geteuid() == 0:
                args += ["-u", "root"]  # memcached refuses to run as root otherwise
            self.process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.02)
            self.stop()
        raise RuntimeError("memcached did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def exchange(self, stream: bytes) -> tuple[list[McRequest], list[bytes], bytes]:
        """Send ``stream`` then ``version``; frame the replies the parser says are due.

        Returns the parsed requests, one reply per request expecting one, and
        every byte memcached sent (the framed replies must be exactly those).
        """
        parser = MemcacheRequestParser()
        parser.feed(stream + b"version\r\n")
        requests = parser.parse()
        assert parser.error is None
        assert requests[-1].command == b"version"
        kinds = [r.reply_kind or ReplyKind.OK for r in requests if not r.noreply]
        framer = MemcacheReplyFramer(max_value_len=4 << 20)
        received = bytearray()
        replies: list[bytes] = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(stream + b"version\r\n")
            while len(replies) < len(kinds):
                chunk = sock.recv(1 << 16)
                assert chunk, f"memcached closed after {replies!r}"
                received += chunk
                framer.feed(chunk)
                while len(replies) < len(kinds) and (reply := framer.take(kinds[len(replies)])):
                    replies.append(reply)
        assert replies[-1].startswith(b"VERSION ")
        assert framer.buffered == 0
        # The same bytes split one at a time frame identically.
        again = MemcacheReplyFramer(max_value_len=4 << 20)
        split: list[bytes] = []
        for i in range(len(received)):
            again.feed(received[i : i + 1])
            while len(split) < len(kinds) and (reply := again.take(kinds[len(split)])):
                split.append(reply)
        assert split == replies
        return requests, replies[:-1], bytes(received)


@pytest.fixture(scope="module")
def memcached() -> Iterator[Memcached]:
    if shutil.which("memcached") is None:  # .ci/run installs it: a missing one is a failure
        pytest.fail("the differential tests need the memcached binary (Debian: memcached)")
    server = Memcached()
    try:
        yield server
    finally:
        server.stop()


BIG = bytes(range(256)) * 2048 + b"\r\nEND\r\nVALUE x 0 1\r\n"  # 512 KiB + tricks


def test_differential_every_command(memcached):
    stream = (
        b"set d:a 1 0 1\r\nx\r\n"
        b"set d:big 2 0 %d\r\n%s\r\n" % (len(BIG), BIG) + b"set d:empty 0 0 0\r\n\r\n"
        b"get d:a\r\n"
        b"get d:a d:missing d:big d:empty d:a\r\n"
        b"gets d:missing\r\n"
        b"add d:a 0 0 1\r\ny\r\n"
        b"add d:new 0 0 1\r\ny\r\n"
        b"replace d:none 0 0 1\r\ny\r\n"
        b"replace d:new 0 0 1\r\nz\r\n"
        b"append d:new 0 0 2\r\n+a\r\n"
        b"prepend d:new 0 0 2\r\nb+\r\n"
        b"append d:none 0 0 1\r\nq\r\n"
        b"get d:new\r\n"
        b"cas d:none 0 0 1 1\r\nc\r\n"
        b"set d:n 0 0 2\r\n10\r\n"
        b"incr d:n 5\r\n"
        b"decr d:n 100\r\n"
        b"incr d:a 1\r\n"
        b"incr d:none 1\r\n"
        b"touch d:n 100\r\n"
        b"touch d:none 100\r\n"
        b"gat 100 d:n d:none\r\n"
        b"gats 100 d:n\r\n"
        b"delete d:n\r\n"
        b"delete d:n 0\r\n"
        b"set d:q 0 0 1 noreply\r\nq\r\n"
        b"delete d:q noreply\r\n"
        b"get d:q\r\n"
        b"verbosity 0\r\n"
        b"verbosity 0 noreply\r\n"
        b"version\r\n"
        b"set d:huge 0 0 2000000\r\n%s\r\n" % (b"h" * 2000000) + b"get d:huge\r\n"
    )
    requests, replies, _ = memcached.exchange(stream)
    expected = [
        b"STORED\r\n",
        b"STORED\r\n",
        b"STORED\r\n",
        b"VALUE d:a 1 1\r\nx\r\nEND\r\n",
        b"VALUE d:a 1 1\r\nx\r\nVALUE d:big 2 %d\r\n%s\r\n" % (len(BIG), BIG)
        + b"VALUE d:empty 0 0\r\n\r\nVALUE d:a 1 1\r\nx\r\nEND\r\n",
        b"END\r\n",
        b"NOT_STORED\r\n",
        b"STORED\r\n",
        b"NOT_STORED\r\n",
        b"STORED\r\n",
        b"STORED\r\n",
        b"STORED\r\n",
        b"NOT_STORED\r\n",
        b"VALUE d:new 0 5\r\nb+z+a\r\nEND\r\n",
        b"NOT_FOUND\r\n",
        b"STORED\r\n",
        b"15\r\n",
        b"0\r\n",
        b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
        b"NOT_FOUND\r\n",
        b"TOUCHED\r\n",
        b"NOT_FOUND\r\n",
        b"VALUE d:n 0 2\r\n0 \r\nEND\r\n",
    ]
    assert replies[: len(expected)] == expected
    gats, deleted, not_found, get_q, ok_, version_, too_large, get_huge = replies[len(expected) :]
    assert gats.startswith(b"VALUE d:n 0 2 ")
    assert gats.endswith(b"\r\n0 \r\nEND\r\n")
    assert [deleted, not_found, get_q, ok_] == [b"DELETED\r\n", b"NOT_FOUND\r\n", b"END\r\n", OK]
    assert version_.startswith(b"VERSION 1.")
    # Over memcached's item size too: both refuse it the same way, and skip it.
    assert too_large == TOO_LARGE
    assert get_huge == b"END\r\n"
    assert [r.error.reply for r in requests if r.error] == [TOO_LARGE]


def test_differential_cas_conflict(memcached):
    _, (stored, gets), _ = memcached.exchange(b"set c:k 3 0 2\r\nv1\r\ngets c:k\r\n")
    assert stored == b"STORED\r\n"
    ((key, block),) = split_values(gets) or [(b"", b"")]
    assert key == b"c:k"
    unique = block.split(b"\r\n", 1)[0].split(b" ")[4]
    wrong = b"%d" % (int(unique) + 1000)
    _, replies, _ = memcached.exchange(
        b"cas c:k 0 0 2 " + wrong + b"\r\nv2\r\n"
        b"cas c:k 0 0 2 " + unique + b"\r\nv3\r\n"
        b"cas c:k 0 0 2 " + unique + b"\r\nv4\r\n"
        b"get c:k\r\n"
    )
    assert replies == [
        b"EXISTS\r\n",
        b"STORED\r\n",
        b"EXISTS\r\n",
        b"VALUE c:k 0 2\r\nv3\r\nEND\r\n",
    ]


def test_differential_multiget_fragments_merge_like_memcached(memcached):
    memcached.exchange(b"set m:1 1 0 1\r\na\r\nset m:2 2 0 2\r\nbb\r\nset m:3 3 0 0\r\n\r\n")
    keys = [b"m:3", b"m:missing", b"m:1", b"m:2", b"m:1"]
    parser = MemcacheRequestParser()
    parser.feed(encode_request([b"gets", *keys]))
    (request,) = parser.parse()
    fragments = [request.for_keys([b"m:1", b"m:missing"]), request.for_keys([b"m:2", b"m:3"])]
    _, whole, _ = memcached.exchange(request.raw)
    _, parts, _ = memcached.exchange(b"".join(fragments))
    assert merge_gets(*parts, keys=keys) == whole[0]
    assert [key for key, _ in split_values(whole[0]) or []] == [b"m:3", b"m:1", b"m:2", b"m:1"]


#: Refusals where the parser claims memcached's exact reply (and framing).
PARITY = [
    b"bogus\r\n",
    b"\r\n",
    b"GET x\r\n",
    b"get\r\n",
    b"get p:a " + K251 + b"\r\n",
    b"gat x p:a\r\n",
    b"incr p:a\r\n",
    b"incr p:a x\r\n",
    b"incr p:a -1\r\n",
    b"incr p:a x noreply\r\n",
    b"incr " + K251 + b" 1\r\n",
    b"decr p:a 1 2 3\r\n",
    b"delete p:a 1\r\n",
    b"delete p:a x y\r\n",
    b"delete p:a 0 noreply x\r\n",
    b"delete p:a 1 noreply\r\n",
    b"delete " + K251 + b"\r\n",
    b"touch p:a x\r\n",
    b"touch p:a\r\n",
    b"touch " + K251 + b" 1\r\n",
    b"verbosity\r\n",
    b"verbosity x\r\n",
    b"verbosity noreply\r\n",
    b"verbosity -1\r\n",
    b"flush_all 0 noreply\r\n",  # refused by trinomite, but silently: no reply either
    b"set p:a 0 0 2000000\r\n" + b"x" * 2000000 + b"\r\n",
    b"set p:a 0 0 2000000 noreply\r\n" + b"x" * 2000000 + b"\r\n",
]


@pytest.mark.parametrize("stream", PARITY, ids=lambda s: repr(s[:40]))
def test_differential_refusals_match_memcached(memcached, stream):
    requests, replies, _ = memcached.exchange(stream)
    ours = [r.error.reply for r in requests[:-1] if r.error is not None and not r.noreply]
    assert replies == ours


# -- a peer frame's payload: exactly one request -------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"get a b\r\nget c\r\n",  # two requests
        b"set a 0 0 5\r\nab",  # incomplete
        b"set a 0 0 1\r\nxyz\r\n",  # a framing error
        b"bogus\r\n",  # refused
        b"get\r\n",  # no key
        b"version\r\n",  # keyless
        b"quit\r\n",
        b"set a 0 0 2000000\r\n",  # its data block never came
    ],
)
def test_payload_check_refuses_anything_but_one_keyed_request(payload: bytes) -> None:
    from trinomite.protocol.memcache import parse_payload

    assert parse_payload(payload) is None
    # The checker is left usable whatever came before.
    request = parse_payload(b"set k 1 0 2\r\nhi\r\n")
    assert request is not None
    assert (request.command, request.keys, request.data) == (b"set", (b"k",), b"hi")


def test_payload_check_takes_values_over_a_client_item_limit() -> None:
    from trinomite.protocol.memcache import parse_payload

    big = b"x" * (2 * 1024 * 1024)
    request = parse_payload(b"set big 0 0 %d\r\n%s\r\n" % (len(big), big))
    assert request is not None
    assert request.data == big


def test_split_run_frames_a_delimited_run_by_kinds() -> None:
    from trinomite.protocol.memcache_replies import split_run

    kinds = [ReplyKind.STORED, ReplyKind.VALUES, ReplyKind.VALUES, ReplyKind.NUMBER]
    parts = [
        b"STORED\r\n",
        b"VALUE a 0 4\r\nEND\r\r\nVALUE b 1 0\r\n\r\nEND\r\n",  # data that looks like END
        b"SERVER_ERROR out of memory\r\n",  # an error ends a retrieval
        b"12 \r\n",
    ]
    assert split_run(b"".join(parts), kinds) == parts
    assert split_run(b"".join(parts), kinds[:3]) is None  # a reply left over
    assert split_run(b"".join(parts[:3]), kinds) is None  # one missing
    assert split_run(b"VALUE a 0 9\r\nshort\r\nEND\r\n", [ReplyKind.VALUES]) is None


class _Sink:
    def __init__(self) -> None:
        self.replies: list[bytes] = []

    def set(self, reply: bytes) -> None:
        self.replies.append(reply)


def test_a_shared_run_hands_each_request_its_reply_or_an_error() -> None:
    from trinomite.datastore.memcache import RunSplit
    from trinomite.errors import NodeError, redis_error

    kinds = [ReplyKind.STORED, ReplyKind.VALUES]
    sinks = [_Sink(), _Sink()]
    RunSplit(list(sinks), kinds).set(b"STORED\r\nVALUE k 0 1\r\nx\r\nEND\r\n")
    assert [s.replies for s in sinks] == [[b"STORED\r\n"], [b"VALUE k 0 1\r\nx\r\nEND\r\n"]]
    timeout = redis_error(NodeError.STORAGE_TIMEOUT)
    sinks = [_Sink(), _Sink()]
    RunSplit(list(sinks), kinds).set(timeout * 2)  # the node's own error, once per request
    assert [s.replies for s in sinks] == [[timeout], [timeout]]
    sinks = [_Sink(), _Sink()]
    RunSplit(list(sinks), kinds).set(b"STORED\r\n")  # out of step: nobody gets another's
    unsplit = redis_error(NodeError.STORAGE_PROTOCOL)
    assert [s.replies for s in sinks] == [[unsplit], [unsplit]]
