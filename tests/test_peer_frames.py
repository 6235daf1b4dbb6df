"""Peer (dnode) framing against bytes captured between two real Dynomite nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trinomite.protocol.peer import (
    FLAG_COMPRESSED,
    FLAG_ENCRYPTED,
    FLAG_RESP3,
    MAX_HEADER_LEN,
    Frame,
    FrameParser,
    MessageType,
    encode_frame,
    encode_header,
    header_template,
)

VECTORS = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"
CAPTURE = json.loads((VECTORS / "dynomite_peer_frames.json").read_text())
# (scenario, index, bytes): one capture chunk each; a chunk may hold two frames.
CHUNKS = [
    (name, i, record["bytes"].encode("latin-1"))
    for name, scenario in CAPTURE["scenarios"].items()
    for i, record in enumerate(scenario["frames"])
]
CHUNK_IDS = [f"{name}-{i}" for name, i, _ in CHUNKS]
SET_FOO = b"*3\r\n$3\r\nSET\r\n$3\r\nfoo\r\n$3\r\nbar\r\n"
GOOD = encode_frame(9, MessageType.REQ, SET_FOO, same_dc=True)


def parse_all(data: bytes, step: int | None = None, **kwargs) -> tuple[list[Frame], FrameParser]:
    parser = FrameParser(**kwargs)
    frames: list[Frame] = []
    step = step or max(1, len(data))
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
        frames += parser.frames()
    return frames, parser


def clean(parser: FrameParser) -> bool:
    return (
        parser.error is None
        and parser.resyncs == 0
        and parser.skipped == 0
        and parser.unknown_types == 0
        and parser.buffered == 0
    )


# -- the capture ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "index", "chunk"), CHUNKS, ids=CHUNK_IDS)
def test_capture_whole_and_byte_by_byte(name, index, chunk):
    whole, parser = parse_all(chunk)
    assert whole
    assert clean(parser)
    assert b"".join(f.encode() for f in whole) == chunk
    one_by_one, parser = parse_all(chunk, step=1)
    assert one_by_one == whole
    assert clean(parser)


@pytest.mark.parametrize(("name", "index", "chunk"), CHUNKS, ids=CHUNK_IDS)
def test_capture_every_split(name, index, chunk):
    whole, _ = parse_all(chunk)
    for cut in range(1, len(chunk)):
        parser = FrameParser()
        parser.feed(chunk[:cut])
        got = parser.frames()
        parser.feed(chunk[cut:])
        got += parser.frames()
        assert got == whole, cut
        assert clean(parser)


@pytest.mark.parametrize(("name", "index", "chunk"), CHUNKS, ids=CHUNK_IDS)
def test_capture_reencodes_exactly(name, index, chunk):
    frames, _ = parse_all(chunk)
    rebuilt = b"".join(
        encode_frame(
            f.msg_id,
            f.type,
            f.payload,
            same_dc=f.same_dc,
            flags=f.flags,
            version=f.version,
            data=f.data,
        )
        for f in frames
    )
    assert rebuilt == chunk


def test_capture_as_one_stream_per_link():
    # All chunks of one link and direction, back to back, as a socket delivers them.
    for name, scenario in CAPTURE["scenarios"].items():
        streams: dict[tuple[str, str], bytes] = {}
        for record in scenario["frames"]:
            key = (record["link"], record["dir"])
            streams[key] = streams.get(key, b"") + record["bytes"].encode("latin-1")
        for key, stream in streams.items():
            for step in (1, 7, 64, len(stream)):
                frames, parser = parse_all(stream, step=step)
                assert clean(parser), (name, key, step)
                assert b"".join(f.encode() for f in frames) == stream


def frames_of(scenario: str) -> list[Frame]:
    return [f for name, _, chunk in CHUNKS if name == scenario for f in parse_all(chunk)[0]]


def test_same_dc_set_request_and_reply():
    request, reply = frames_of("same_dc_quorum")[:2]
    assert request == Frame(3, MessageType.REQ, SET_FOO, same_dc=True)
    assert (request.flags, request.version, request.data, request.resp3) == (0, 1, b"d", False)
    assert reply == Frame(3, MessageType.RES, b"+OK\r\n", same_dc=True)


def test_replies_echo_request_ids():
    frames = frames_of("same_dc_quorum")
    requests, replies = frames[0::2], frames[1::2]
    assert all(f.type is MessageType.REQ for f in requests)
    assert all(f.type is MessageType.RES for f in replies)
    assert [f.msg_id for f in replies] == [f.msg_id for f in requests]
    # A node-wide counter, so not consecutive on one link.
    assert [f.msg_id for f in requests] == [3, 8, 15, 22, 29, 34, 39, 44]
    assert replies[-1].payload == b"-ERR value is not an integer or out of range\r\n"
    # Fragmented multi-key commands are re-encoded in lower case.
    assert requests[2].payload.startswith(b"*5\r\n$4\r\nmset\r\n")


def test_cross_dc_writes_are_forwarded_with_same_dc_0():
    frames = frames_of("cross_dc_one")
    assert [f.type for f in frames[0::2]] == [MessageType.REQ_FORWARD] * 6
    assert all(not f.same_dc for f in frames)
    assert frames[0] == Frame(3, MessageType.REQ_FORWARD, SET_FOO, same_dc=False)
    assert frames[1] == Frame(3, MessageType.RES, b"+OK\r\n", same_dc=False)


def test_gossip_frames():
    chunk = CHUNKS[[c[0] for c in CHUNKS].index("gossip")][2]
    syn, request = parse_all(chunk)[0]  # two frames in one capture chunk, no separator
    assert syn.type is MessageType.GOSSIP_SYN
    assert (syn.msg_id, syn.data, syn.same_dc) == (0, b"a", True)
    assert syn.payload == b"dc1$rack1$0,1795317716,4,127.0.0.1|dc1$rack2$0,1795317713,7,127.0.0.1"
    assert request == Frame(5, MessageType.REQ, SET_FOO, same_dc=True)
    empty = frames_of("gossip")[-1]
    assert empty == Frame(1, MessageType.GOSSIP_SYN, b"", same_dc=True, data=b"a")


def test_next_frame_one_at_a_time_and_large_payload_in_pieces():
    big = Frame(77, MessageType.RES, b"$200000\r\n" + b"v" * 200_000 + b"\r\n", same_dc=True)
    stream = GOOD + big.encode() + GOOD
    parser = FrameParser()
    got = []
    for i in range(0, len(stream), 1000):
        parser.feed(stream[i : i + 1000])
        while (frame := parser.next_frame()) is not None:
            got.append(frame)
        assert parser.buffered <= 1000 + len(big.payload) + 64
    assert [f.msg_id for f in got] == [9, 77, 9]
    assert got[1] == big
    assert clean(parser)


@pytest.mark.parametrize("cut", [10, len(GOOD) - 5])  # inside the header, inside the payload
def test_compaction_keeps_a_partial_frame(cut):
    many = GOOD * (70_000 // len(GOOD))  # past the compaction threshold
    frames, parser = parse_all(many + GOOD[:cut])
    assert len(frames) == len(many) // len(GOOD)
    assert parser.buffered == cut
    parser.feed(GOOD[cut:])
    assert parser.frames() == [frames[0]]
    assert clean(parser)


# -- encoder -------------------------------------------------------------------


def test_encode_header_plus_payload_is_the_frame():
    header = encode_header(7, MessageType.REQ, len(SET_FOO), same_dc=False, flags=FLAG_RESP3)
    assert header == b"   $2014$ 7 3 4 1 0 *1 d *31\r\n"
    assert header + SET_FOO == encode_frame(
        7, MessageType.REQ, SET_FOO, same_dc=False, flags=FLAG_RESP3
    )
    (frame,), _ = parse_all(header + SET_FOO)
    assert frame.resp3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"msg_id": -1},
        {"msg_id": 1 << 64},
        {"type": 1000},
        {"flags": 256},
        {"version": -1},
        {"data": b""},
        {"data": b"x" * 1025},
    ],
)
def test_encode_rejects_out_of_range(kwargs):
    args = {"msg_id": 1, "type": MessageType.REQ, "payload": b"", "same_dc": True} | kwargs
    with pytest.raises(ValueError, match="out of range"):
        encode_frame(**args)


def test_encode_header_rejects_negative_payload_len():
    with pytest.raises(ValueError, match="payload_len=-1"):
        encode_header(1, MessageType.REQ, -1, same_dc=True)


def test_extreme_field_values_round_trip():
    frame = Frame((1 << 64) - 1, MessageType.SHUTDOWN, b"\r\n" * 3, True, 252, 255, b"x\r\n y")
    frames, parser = parse_all(frame.encode(), step=1)
    assert frames == [frame]
    assert clean(parser)


# -- resynchronisation ---------------------------------------------------------


@pytest.mark.parametrize("step", [1, 5, 1000])
def test_garbage_before_a_magic_is_skipped_and_counted(step):
    frames, parser = parse_all(b"hello\r\n$2014 x" + GOOD + b"\x00\xff" + GOOD, step=step)
    assert [f.msg_id for f in frames] == [9, 9]
    assert parser.skipped == len(b"hello\r\n$2014 x") + 2
    assert parser.resyncs == 0
    assert "skipped" in (parser.last_problem or "")


def test_magic_without_its_leading_spaces_is_accepted():
    # Dynomite skips spaces before "$2014$"; none or more than three are fine.
    frames, parser = parse_all(GOOD[3:] + b"     " + GOOD[3:])
    assert [f.msg_id for f in frames] == [9, 9]
    assert parser.skipped == 2  # the two spaces beyond the magic's three


@pytest.mark.parametrize(
    "bad",
    [
        b"   $2014$ x 3 0 1 1 *1 d *5\r\n+OK\r\n",  # msg_id not a number
        b"   $2014$ 1 3 0 1 2 *1 d *5\r\n+OK\r\n",  # same_dc neither 0 nor 1
        b"   $2014$ 1 3 0 1 1 *1 dd *5\r\n+OK\r\n",  # data longer than data_len
        b"   $2014$ 1 3 0 1 1 *1 d *\r\n",  # empty payload_len
        b"   $2014$ 1 3 0 1 1 *1 d *-5\r\n",  # negative payload_len
        b"   $2014$ 1 3 0 1 1 *1 d *\xd9\xa3\r\n",  # non-ASCII digit
        b"   $2014$ 1 3 0 256 1 *1 d *0\r\n",  # version over 255
        b"   $2014$ 1 3 0 1 1 *2000 d *0\r\n",  # data_len over the limit
        b"   $2014$ 99999999999999999999 3 0 1 1 *1 d *0\r\n",  # msg_id over 2**64-1
        b"   $2014$ 1 3 0 1 1 *1 d *0\n",  # LF without CR
    ],
)
def test_malformed_header_resyncs_to_the_next_frame(bad):
    for step in (1, 3, len(bad) + len(GOOD)):
        frames, parser = parse_all(bad + GOOD, step=step)
        assert frames == [Frame(9, MessageType.REQ, SET_FOO, same_dc=True)]
        assert parser.resyncs == 1
        assert parser.error is None
        assert parser.skipped == len(bad)
        assert parser.buffered == 0
        assert parser.last_problem


def test_header_too_long_resyncs():
    bad = b"   $2014$ " + b"1" * (MAX_HEADER_LEN + 50)
    frames, parser = parse_all(bad + GOOD, step=16)
    assert [f.msg_id for f in frames] == [9]
    assert parser.resyncs == 1
    assert "no CRLF" in (parser.last_problem or "")
    # Without a following frame, memory stays bounded while garbage keeps coming.
    parser = FrameParser()
    parser.feed(b"   $2014$ 1 3 0 1 1 ")
    for _ in range(1000):
        parser.feed(b"0" * 100)
        assert parser.frames() == []
        assert parser.buffered <= MAX_HEADER_LEN + 100 + 20
    assert parser.resyncs >= 1


def test_a_magic_inside_a_payload_is_data():
    payload = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$29\r\n" + GOOD[:29] + b"\r\n"
    frame = Frame(1, MessageType.REQ, payload, same_dc=True)
    frames, parser = parse_all(frame.encode() + GOOD, step=1)
    assert frames == [frame, Frame(9, MessageType.REQ, SET_FOO, same_dc=True)]
    assert clean(parser)


def test_unknown_type_is_skipped_whole():
    # The payload holds a frame: trusting payload_len keeps it from being parsed.
    unknown = encode_frame(4, 42, GOOD, same_dc=True)
    frames, parser = parse_all(unknown + GOOD, step=1)
    assert [f.msg_id for f in frames] == [9]
    assert parser.unknown_types == 1
    assert parser.resyncs == 0
    assert "unknown type 42" in (parser.last_problem or "")


# -- fatal errors ----------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 1000])
def test_payload_over_the_limit_fails_before_it_is_buffered(step):
    header = encode_header(5, MessageType.REQ, 1001, same_dc=True)
    frames, parser = parse_all(GOOD + header + b"x" * 50, step=step, max_payload_len=1000)
    assert [f.msg_id for f in frames] == [9]
    assert parser.error is not None
    assert parser.error.kind == "payload_too_large"
    assert parser.error.msg_id == 5
    assert "1001 bytes > 1000" in parser.error.message
    assert parser.buffered == 0
    parser.feed(GOOD)  # ignored from now on: the link must be closed
    assert parser.frames() == []
    assert parser.buffered == 0


def test_exactly_at_the_limit_is_fine():
    frame = Frame(5, MessageType.REQ, b"x" * 1000, same_dc=True)
    frames, parser = parse_all(frame.encode(), step=100, max_payload_len=1000)
    assert frames == [frame]
    assert clean(parser)


def test_encrypted_frame_is_an_error_not_data():
    # What a Dynomite node with secure_server_option set sends first: an
    # RSA-encrypted AES key (which may contain CR LF) in ``data``.
    key = bytes(range(256))
    encrypted = encode_frame(12, MessageType.REQ, b"\x8f" * 32, same_dc=True, flags=1, data=key)
    for step in (1, len(encrypted)):
        frames, parser = parse_all(GOOD + encrypted, step=step)
        assert [f.msg_id for f in frames] == [9]
        assert parser.error is not None
        assert parser.error.kind == "encrypted"
        assert parser.error.msg_id == 12
        assert "secure_server_option" in parser.error.message


@pytest.mark.parametrize("flags", [FLAG_COMPRESSED, FLAG_COMPRESSED | FLAG_RESP3, 3])
def test_compressed_or_encrypted_flag_bits(flags):
    frames, parser = parse_all(
        encode_frame(1, MessageType.RES, b":1\r\n", same_dc=True, flags=flags)
    )
    assert frames == []
    assert parser.error is not None
    assert parser.error.kind == ("encrypted" if flags & FLAG_ENCRYPTED else "compressed")


# -- properties --------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_raise_and_memory_is_bounded(data, step):
    parser = FrameParser(max_payload_len=64)
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
        for frame in parser.frames():
            assert len(frame.payload) <= 64
        assert parser.buffered <= MAX_HEADER_LEN + 1024 + 64 + 64 + step
    assert parser.skipped <= len(data)


_FRAMES = st.builds(
    Frame,
    msg_id=st.integers(min_value=0, max_value=(1 << 64) - 1),
    type=st.sampled_from(MessageType),
    payload=st.binary(max_size=40),
    same_dc=st.booleans(),
    flags=st.sampled_from([0, FLAG_RESP3, 8, 128]),
    version=st.integers(min_value=0, max_value=255),
    data=st.binary(min_size=1, max_size=4),
)
# Garbage without '$' cannot contain a magic; without ' ' it cannot be mistaken
# for the spaces in front of one, so every garbage byte is counted.
_GARBAGE = st.binary(max_size=12).map(lambda b: b.replace(b"$", b"").replace(b" ", b""))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_GARBAGE, _FRAMES), max_size=12), st.integers(min_value=1, max_value=50))
def test_frames_between_garbage_are_all_recovered(pieces, step):
    stream = b"".join(garbage + frame.encode() for garbage, frame in pieces)
    frames, parser = parse_all(stream, step=step)
    assert frames == [frame for _, frame in pieces]
    assert parser.skipped == sum(len(garbage) for garbage, _ in pieces)
    assert parser.error is None
    assert parser.resyncs == 0
    assert parser.buffered == 0


_PIECES = [
    GOOD,
    encode_frame(0, MessageType.GOSSIP_SYN, b"dc1$rack1$0,1,4,127.0.0.1", same_dc=True, data=b"a"),
    encode_frame(77, 42, b"   $2014$ 1 3 0 1 1 *1 d *0\r\n", same_dc=False),  # unknown type
    encode_frame(5, MessageType.RES, b"+OK\r\n", same_dc=False, flags=FLAG_RESP3, data=b"\r\n"),
    b"   $2014$ 1 3 1 1 1 *3 \r\n\x00 *4\r\nabcd",  # encrypted
]


@st.composite
def _damaged_streams(draw):
    parts = draw(st.lists(st.sampled_from(_PIECES) | st.binary(max_size=20), max_size=8))
    stream = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 4))):
        if stream:
            at = draw(st.integers(0, len(stream) - 1))
            stream[at] = draw(st.sampled_from(b" $0123456789*\r\nxd"))
    return bytes(stream)


def _outcome(stream, cuts):
    parser = FrameParser(max_payload_len=64)
    frames = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        parser.feed(stream[a:b])
        frames += parser.frames()
    error = parser.error.kind if parser.error else None
    return frames, parser.resyncs, parser.skipped, parser.unknown_types, error


@settings(max_examples=300, deadline=None)
@given(_damaged_streams(), st.lists(st.integers(0, 300), max_size=20))
def test_damaged_streams_parse_the_same_however_split(stream, cuts):
    whole = _outcome(stream, [])
    assert _outcome(stream, sorted({min(c, len(stream)) for c in cuts})) == whole
    assert _outcome(stream, list(range(1, len(stream)))) == whole


@pytest.mark.parametrize("kind", list(MessageType))
@pytest.mark.parametrize("flags", [0, FLAG_RESP3])
@pytest.mark.parametrize("same_dc", [False, True])
def test_header_templates_build_the_same_frames(kind, flags, same_dc):
    template = header_template(kind, same_dc=same_dc, flags=flags)
    for msg_id, payload in [(0, b""), (1, b"+OK\r\n"), ((1 << 64) - 1, b"x" * 70000)]:
        expected = encode_frame(msg_id, kind, payload, same_dc=same_dc, flags=flags)
        assert template % (msg_id, len(payload)) + payload == expected


def test_header_templates_check_their_fixed_fields():
    with pytest.raises(ValueError, match="out of range"):
        header_template(1000, same_dc=True)
    with pytest.raises(ValueError, match="out of range"):
        header_template(MessageType.REQ, same_dc=True, flags=256)
