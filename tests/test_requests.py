"""Request parsing: table-driven, whole and byte by byte, plus random bytes.

Both parsers are checked: ``PyRequestParser`` (the exact, bounded state
machine) and ``RequestParser`` (hiredis fast path with that fallback).  Every
case is fed in one piece, one byte at a time, and split at every offset.
"""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinomite.protocol.inline import split_inline
from trinomite.protocol.requests import (
    Limits,
    PayloadParser,
    PyRequestParser,
    RequestParser,
    encode_command,
    encode_command_py,
    parse_one,
)

GET = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
SET = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\n"  # CRLF inside a value

# (name, stream, expected requests, expected error message or None)
CASES: list[tuple[str, bytes, list[list[bytes]], str | None]] = [
    ("get", GET, [[b"GET", b"key"]], None),
    ("binary value", SET, [[b"SET", b"k", b"va\r\nl"]], None),
    ("pipeline", GET * 3 + SET, [[b"GET", b"key"]] * 3 + [[b"SET", b"k", b"va\r\nl"]], None),
    ("empty bulk", b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", [[b"ECHO", b""]], None),
    ("empty multibulk skipped", b"*0\r\n" + GET, [[b"GET", b"key"]], None),
    ("negative multibulk skipped", b"*-1\r\n" + GET, [[b"GET", b"key"]], None),
    ("inline", b"PING\r\n", [[b"PING"]], None),
    ("inline lf only", b"SET a b\n", [[b"SET", b"a", b"b"]], None),
    ("inline quoted", b'SET k "a b\\n"\r\n', [[b"SET", b"k", b"a b\n"]], None),
    ("inline blank line skipped", b"\r\n" + GET, [[b"GET", b"key"]], None),
    ("inline then multibulk", b"PING\r\n" + GET, [[b"PING"], [b"GET", b"key"]], None),
    ("bad multibulk length", b"*x\r\n", [], "invalid multibulk length"),
    ("bad bulk length", b"*1\r\n$abc\r\n", [], "invalid bulk length"),
    ("negative bulk length", b"*1\r\n$-7\r\n", [], "invalid bulk length"),
    ("expected dollar", b"*1\r\n*1\r\n", [], "expected '$', got '*'"),
    (
        "expected dollar after good",
        GET + b"*3\r\nabcde\r\n",
        [[b"GET", b"key"]],
        "expected '$', got 'a'",
    ),
    ("unbalanced quotes", b'SET k "oops\r\n', [], "unbalanced quotes in request"),
    ("integer element", b"*2\r\n$3\r\nGET\r\n:1\r\n", [], "expected '$', got ':'"),
    # Complete, well-framed rounds that hiredis must refuse as Redis does,
    # so the fast path hands them to the Python parser for the exact message.
    (
        "leading zero count",
        GET + b"*02\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        [[b"GET", b"key"]],
        "invalid multibulk length",
    ),
    ("leading zero bulk", b"*2\r\n$3\r\nGET\r\n$01\r\nk\r\n", [], "invalid bulk length"),
    ("plus sign count", b"*+1\r\n$4\r\nPING\r\n", [], "invalid multibulk length"),
    ("plus sign bulk", b"*1\r\n$+4\r\nPING\r\n", [], "invalid bulk length"),
    ("minus zero bulk", b"*1\r\n$-0\r\n", [], "invalid bulk length"),
    ("space in count", b"*1 \r\n$4\r\nPING\r\n", [], "invalid multibulk length"),
]


def feed_in_pieces(
    parser: PyRequestParser | RequestParser, pieces: list[bytes]
) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    for piece in pieces:
        parser.feed(piece)
        parsed = parser.parse()
        if isinstance(parser, PyRequestParser):
            out.extend(request.args for request in parsed)  # type: ignore[union-attr]
        else:
            out.extend(parsed)  # type: ignore[arg-type]
        if parser.error is not None:
            break
    return out


def splits(stream: bytes) -> list[list[bytes]]:
    """The stream whole, one byte at a time, and split in two at every offset."""
    ways = [[stream], [stream[i : i + 1] for i in range(len(stream))]]
    ways += [[stream[:i], stream[i:]] for i in range(1, len(stream))]
    return ways


@pytest.mark.parametrize("parser_class", [PyRequestParser, RequestParser])
@pytest.mark.parametrize(("name", "stream", "expected", "error"), CASES, ids=[c[0] for c in CASES])
def test_table(parser_class, name, stream, expected, error):
    for pieces in splits(stream):
        parser = parser_class()
        assert feed_in_pieces(parser, pieces) == expected, (name, pieces)
        if error is None:
            assert parser.error is None, (name, pieces)
        else:
            assert parser.error is not None, (name, pieces)
            assert parser.error.message == error
            assert parser.error.reply == b"-ERR Protocol error: " + error.encode() + b"\r\n"


def test_fast_path_blob_is_exact_bytes():
    parser = RequestParser()
    stream = GET * 5 + SET
    parser.feed(stream)
    assert len(parser.parse()) == 6
    assert parser.blob == stream


def test_slow_path_blob_reencodes_inline():
    parser = RequestParser()
    parser.feed(b"SET a b\r\n" + GET)
    assert parser.parse() == [[b"SET", b"a", b"b"], [b"GET", b"key"]]
    assert parser.blob == encode_command([b"SET", b"a", b"b"]) + GET


def test_returns_to_fast_path_after_a_split_request():
    parser = RequestParser()
    parser.feed(GET[:7])
    assert parser.parse() == []
    parser.feed(GET[7:])
    assert parser.parse() == [[b"GET", b"key"]]
    parser.feed(GET)
    assert parser.parse() == [[b"GET", b"key"]]
    assert parser._slow is None  # back on hiredis


LIMITS = Limits(max_bulk_len=100, max_multibulk_len=10, max_inline_len=64)


@pytest.mark.parametrize("parser_class", [PyRequestParser, RequestParser])
@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"*11\r\n", "invalid multibulk length"),
        (b"*1\r\n$101\r\n", "invalid bulk length"),
        (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
        (b"*2147483648\r\n", "invalid multibulk length"),
        (b"A" * 65, "too big inline request"),
        (b"*" + b"1" * 70, "too big mbulk count string"),
        (b"*1\r\n$" + b"1" * 70, "too big bulk count string"),
    ],
)
def test_limits_are_checked_before_buffering(parser_class, stream, error):
    parser = parser_class(LIMITS)
    parser.feed(stream)
    assert parser.parse() == []
    assert parser.error is not None
    assert parser.error.message == error


@pytest.mark.parametrize("parser_class", [PyRequestParser, RequestParser])
@pytest.mark.parametrize(
    ("command", "error"),
    [
        ([b"MSET"] + [b"k", b"v"] * 5, "invalid multibulk length"),
        ([b"SET", b"k", b"v" * 101], "invalid bulk length"),
    ],
)
def test_limits_apply_to_complete_requests(parser_class, command, error):
    """A whole request over a limit, in one round, is refused like a partial one."""
    parser = parser_class(LIMITS)
    parser.feed(GET + encode_command(command) + GET)
    parsed = parser.parse()
    assert [getattr(r, "args", r) for r in parsed] == [[b"GET", b"key"]]
    assert parser.error is not None
    assert parser.error.message == error


def test_limits_allow_values_at_the_bound():
    parser = RequestParser(LIMITS)
    parser.feed(encode_command([b"SET", b"k", b"v" * 100]))
    assert parser.parse() == [[b"SET", b"k", b"v" * 100]]


def test_huge_declarations_allocate_nothing():
    tracemalloc.start()
    try:
        for stream in (b"*2147483647\r\n", b"*1\r\n$9999999999\r\n", b"*2000000000\r\n"):
            parser = RequestParser()
            parser.feed(stream)
            parser.parse()
            assert parser.error is not None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_partial_huge_bulk_is_refused_at_its_header():
    parser = RequestParser()  # default limit 512 MB
    parser.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870913\r\n")
    assert parser.parse() == []
    assert parser.error is not None
    assert parser.error.message == "invalid bulk length"


def test_no_input_after_error():
    parser = PyRequestParser()
    parser.feed(b"*x\r\n")
    parser.parse()
    parser.feed(GET)
    assert parser.parse() == []
    assert parser.buffered == 0


def test_long_partial_line_is_not_rescanned():
    # 60 KB of inline command arriving 1 KB at a time stays linear: the
    # remembered search offset means each feed scans only the new kilobyte.
    parser = PyRequestParser()
    for _ in range(60):
        parser.feed(b"a" * 1024)
        assert parser.parse() == []
        assert parser._find_from == parser.buffered
    parser.feed(b"\r\n")
    assert len(parser.parse()[0].args[0]) == 60 * 1024


@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b"set k v", [b"set", b"k", b"v"]),
        (b"  a   b  ", [b"a", b"b"]),
        (b'a "x\\x41y"', [b"a", b"xAy"]),
        (b"a 'it\\'s'", [b"a", b"it's"]),
        (b'a "tab\\there"', [b"a", b"tab\there"]),
        (b'a ""', [b"a", b""]),
        (b'a "x"y', None),
        (b"a 'x", None),
    ],
)
def test_split_inline(line, args):
    assert split_inline(line) == args


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=300))
def test_random_bytes_parse_or_protocol_error(data, chunk):
    """Random input gives requests or a protocol error, never another exception."""
    limits = Limits(max_bulk_len=1000, max_multibulk_len=100, max_inline_len=200)
    for parser in (PyRequestParser(limits), RequestParser(limits)):
        for i in range(0, len(data), chunk):
            parser.feed(data[i : i + chunk])
            parser.parse()
            if parser.error is not None:
                break
        assert parser.buffered <= len(data)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.binary(max_size=20), min_size=1, max_size=5), max_size=20),
    st.integers(min_value=1, max_value=50),
)
def test_encoded_commands_round_trip(commands, chunk):
    stream = b"".join(encode_command(args) for args in commands)
    parser = RequestParser()
    out: list[list[bytes]] = []
    blob = b""
    for i in range(0, len(stream), chunk):
        parser.feed(stream[i : i + chunk])
        out.extend(parser.parse())
        blob += parser.blob
    assert out == commands
    assert blob == stream


@pytest.mark.parametrize(
    ("payload", "args"),
    [
        (GET, [b"GET", b"key"]),
        (SET, [b"SET", b"k", b"va\r\nl"]),
        (GET * 2, None),  # two requests
        (GET[:-3], None),  # a partial one
        (b"PING\r\n", [b"PING"]),  # inline goes through the Python parser
        (b"*01\r\n$4\r\nPING\r\n", None),
        (b"*1\r\n*1\r\n$1\r\nx\r\n", None),  # nested array
        (b"*0\r\n", None),
        (b"", None),
        (b"\xff\xfe", None),
    ],
)
def test_parse_one(payload, args):
    assert parse_one(payload) == args


@given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
def test_the_c_encoder_matches_the_python_one(args: list[bytes]) -> None:
    assert encode_command(args) == encode_command_py(args)


PAYLOADS = st.one_of(
    st.lists(st.binary(max_size=20), min_size=1, max_size=4).map(encode_command),
    st.binary(max_size=40),
    st.sampled_from(
        [b"*2\r\n$3\r\nGET\r\n", b"*1\r\n$4\r\nPING\r\nxx", b"*1\r\n:1\r\n", b"*0\r\n"]
    ),
)


@given(st.lists(PAYLOADS, max_size=12))
def test_a_reused_payload_parser_answers_as_parse_one_for_every_payload(
    payloads: list[bytes],
) -> None:
    parser = PayloadParser()
    for payload in payloads:  # a bad payload never changes how the next one parses
        assert parser.parse(payload) == parse_one(payload)
