"""Reply framing: RESP2 and RESP3 replies are returned byte for byte, in runs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinomite.datastore.pool import RunSplit
from trinomite.protocol import replies as r
from trinomite.protocol.replies import MAX_DEPTH, ReplyFramer, ReplyProtocolError, split_replies

REPLIES = [
    b"+OK\r\n",
    b"-ERR unknown command\r\n",
    b":42\r\n",
    b"$3\r\nbar\r\n",
    b"$-1\r\n",
    b"$0\r\n\r\n",
    b"$4\r\na\r\nb\r\n",  # CRLF inside a bulk
    b"*-1\r\n",
    b"*0\r\n",
    b"*3\r\n$1\r\na\r\n:1\r\n*2\r\n+x\r\n$-1\r\n",
    b"_\r\n",  # RESP3 null
    b",3.14\r\n",
    b"#t\r\n",
    b"(3492890328409238509324850943850943825024385\r\n",
    b"=15\r\ntxt:Some string\r\n",
    b"!21\r\nSYNTAX invalid syntax\r\n",
    b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
    b"~3\r\n+a\r\n+b\r\n+c\r\n",
    b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n$3\r\nval\r\n",  # attribute + reply
    b"*2\r\n%1\r\n+k\r\n~1\r\n:1\r\n*0\r\n",
]
STREAM = b"".join(REPLIES)


def test_replies_one_by_one():
    framer = ReplyFramer()
    framer.feed(STREAM)
    assert framer.replies() == REPLIES
    assert framer.buffered == 0


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_any_split(split):
    framer = ReplyFramer()
    framer.feed(STREAM[:split])
    got = framer.replies()
    framer.feed(STREAM[split:])
    got += framer.replies()
    assert got == REPLIES


def test_byte_by_byte_runs():
    framer = ReplyFramer()
    runs = []
    pending = [3, 5, len(REPLIES) - 8]
    for byte in STREAM:
        framer.feed(bytes((byte,)))
        while pending and (run := framer.take(pending[0])) is not None:
            runs.append(run)
            pending.pop(0)
    assert runs == [
        b"".join(REPLIES[:3]),
        b"".join(REPLIES[3:8]),
        b"".join(REPLIES[8:]),
    ]


DELIMITER = b"$32\r\n" + b"0123456789abcdef" * 2 + b"\r\n"


@pytest.mark.parametrize("chunk", [1, 2, 7, 31, len(STREAM) + 3 * len(DELIMITER)])
def test_take_until_delimited_runs_in_any_chunking(chunk):
    """Runs ended by a delimiter reply; the delimiter may be split anywhere."""
    runs = [REPLIES[:4], REPLIES[4:5], [], REPLIES[5:]]
    wire = b"".join(b"".join(run) + DELIMITER for run in runs)
    framer = ReplyFramer()
    got = []
    for i in range(0, len(wire), chunk):
        framer.feed(wire[i : i + chunk])
        while len(got) < len(runs) and (run := framer.take_until(DELIMITER)) is not None:
            got.append(run)
    assert got == [b"".join(run) for run in runs]
    assert framer.buffered == 0


def test_take_until_and_take_interleave():
    framer = ReplyFramer()
    framer.feed(b"+a\r\n" + DELIMITER + b":1\r\n:2\r\n" + b"$1\r\nx\r\n" + DELIMITER)
    assert framer.take_until(DELIMITER) == b"+a\r\n"
    assert framer.take(2) == b":1\r\n:2\r\n"
    assert framer.take_until(DELIMITER) == b"$1\r\nx\r\n"
    assert framer.take_until(DELIMITER) is None


def test_take_until_does_not_rescan():
    framer = ReplyFramer()
    framer.feed(b"$100000\r\n")
    for _ in range(100):
        framer.feed(b"x" * 1000)
        assert framer.take_until(DELIMITER) is None
        # The search resumes near the end: at most a delimiter's length back.
        assert framer._pos >= framer.buffered - len(DELIMITER)


def test_large_array_in_pieces_is_scanned_once():
    elements = 50_000
    stream = b"*%d\r\n" % elements + b"$5\r\nvalue\r\n" * elements
    framer = ReplyFramer()
    result = None
    for i in range(0, len(stream), 4096):
        framer.feed(stream[i : i + 4096])
        result = framer.take(1)
        if result is None:
            # The scan position only moves forward: nothing already scanned is
            # scanned again when the next piece arrives.
            assert framer._pos >= min(i, len(stream) - 4096) - 16
    assert result == stream


@pytest.mark.parametrize(
    "bad",
    [
        b"?what\r\n",
        b"$abc\r\n",
        b"*" + b"1" * 30 + b"\r\n",
        b">1\r\n+pushed\r\n",
        b"*1\r\n" * (MAX_DEPTH + 1),
    ],
)
def test_protocol_errors(bad):
    framer = ReplyFramer()
    framer.feed(bad)
    with pytest.raises(ReplyProtocolError):
        framer.take(1)


def test_bulk_over_limit():
    framer = ReplyFramer(max_bulk_len=10)
    framer.feed(b"$11\r\n")
    with pytest.raises(ReplyProtocolError):
        framer.take(1)


def test_encoders():
    assert r.simple("OK") == b"+OK\r\n"
    assert r.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert r.integer(-3) == b":-3\r\n"
    assert r.bulk(b"ab") == b"$2\r\nab\r\n"
    assert r.bulk(None) == b"$-1\r\n"
    assert r.bulk(None, protocol=3) == b"_\r\n"
    assert r.array([r.integer(1), r.bulk("x")]) == b"*2\r\n:1\r\n$1\r\nx\r\n"
    pairs = {r.bulk("a"): r.integer(1)}
    assert r.map_reply(pairs, 2) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert r.map_reply(pairs, 3) == b"%1\r\n$1\r\na\r\n:1\r\n"
    assert r.is_error(b"-ERR x\r\n")
    assert r.is_error(b"!3\r\nERR\r\n")
    assert not r.is_error(b"+OK\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=64))
def test_random_bytes_frame_or_error(data, chunk):
    """Random bytes give replies or ReplyProtocolError, never anything else."""
    framer = ReplyFramer(max_bulk_len=1000)
    try:
        for i in range(0, len(data), chunk):
            framer.feed(data[i : i + chunk])
            framer.replies()
    except ReplyProtocolError:
        return
    assert framer.buffered <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(REPLIES), max_size=30), st.integers(min_value=1, max_value=40))
def test_random_reply_sequences(sequence, chunk):
    stream = b"".join(sequence)
    framer = ReplyFramer()
    got: list[bytes] = []
    for i in range(0, len(stream), chunk):
        framer.feed(stream[i : i + chunk])
        got += framer.replies()
    assert got == sequence


def test_split_replies_gives_each_reply_or_nothing() -> None:
    run = b"+OK\r\n:3\r\n$-1\r\n*2\r\n$1\r\na\r\n:1\r\n-ERR x\r\n"
    parts = [b"+OK\r\n", b":3\r\n", b"$-1\r\n", b"*2\r\n$1\r\na\r\n:1\r\n", b"-ERR x\r\n"]
    assert split_replies(run, 5) == parts
    assert split_replies(run, 4) is None  # one reply too many
    assert split_replies(run, 6) is None  # one too few
    assert split_replies(b"$5\r\nab", 1) is None

    class Sink:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def set(self, reply: bytes) -> None:
            self.got.append(reply)

    a, b, c = Sink(), Sink(), Sink()
    RunSplit([(b"", 1, a), (b"", 3, b), (b"", 1, c)], 5).set(run)
    assert (a.got, b.got, c.got) == ([parts[0]], [b"".join(parts[1:4])], [parts[4]])
    a, b = Sink(), Sink()
    RunSplit([(b"", 1, a), (b"", 1, b)], 2).set(b"+OK\r\n")  # misframed: errors, no shift
    assert a.got[0].startswith(b"-ERR")
    assert b.got[0].startswith(b"-ERR")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(REPLIES), max_size=12), st.integers(-1, 2), st.data())
def test_split_replies_slices_like_the_framer(parts, miscount, data) -> None:
    """The sliced fast path agrees with framing reply by reply, also when cut short."""
    run = b"".join(parts)
    count = max(0, len(parts) + miscount)
    framed = r._split_framed  # the framer alone, reply by reply
    assert split_replies(run, count) == framed(run, count)
    cut = data.draw(st.integers(0, len(run)))
    assert split_replies(run[:cut], len(parts)) == framed(run[:cut], len(parts))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(0, 4))
def test_split_replies_of_random_bytes_agrees_or_refuses(data, count) -> None:
    got = split_replies(data, count)
    if got is not None:
        assert b"".join(got) == data
        assert len(got) == count


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(REPLIES), max_size=12), st.data())
def test_split_counts_cuts_where_the_requesters_replies_end(parts, data) -> None:
    run = b"".join(parts)
    counts = []
    left = len(parts)
    while left:
        take = data.draw(st.integers(0, left))
        counts.append(take)
        left -= take
    counts.append(0)
    got = r.split_counts(run, counts)
    expected, at = [], 0
    for count in counts:
        expected.append(b"".join(parts[at : at + count]))
        at += count
    assert got == expected
    if parts:
        assert r.split_counts(run[:-1], counts) is None  # short by a byte
        assert r.split_counts(run + parts[0], counts) is None  # one reply too many
