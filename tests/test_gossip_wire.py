"""Gossip payloads: Dynomite's captured GOSSIP_SYN frames, trinomite's TG1 format, hostile input."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinomite.gossip import wire
from trinomite.gossip.wire import (
    MAX_DYNOMITE_RECORDS,
    MAX_ENTRIES,
    MAX_PAYLOAD_LEN,
    MAX_TOKENS,
    Digest,
    GossipDecodeError,
    Kind,
    NodeRecord,
    PayloadBuilder,
    Reason,
    State,
    decode,
    encode,
)
from trinomite.protocol.peer import FrameParser, MessageType, encode_frame

VECTORS = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"
CAPTURE = json.loads((VECTORS / "dynomite_peer_frames.json").read_text())


def gossip_frames():
    """Every GOSSIP_SYN frame of the capture, parsed by the real frame parser."""
    found = []
    for record in CAPTURE["scenarios"]["gossip"]["frames"]:
        parser = FrameParser()
        parser.feed(record["bytes"].encode("latin-1"))
        found += [(record["link"], f) for f in parser.frames() if f.type is MessageType.GOSSIP_SYN]
    return found


def rec(host="10.0.0.1", port=8101, **kwargs):
    kwargs.setdefault("generation", 1718000000123)
    kwargs.setdefault("tokens", (0,))
    kwargs.setdefault("dc", "dc1")
    kwargs.setdefault("rack", "rack1")
    return NodeRecord.make(
        host, port, kwargs.pop("dc"), kwargs.pop("rack"), kwargs.pop("tokens"), **kwargs
    )


def syn(*lines: bytes, sender=b"10.0.0.9:8101") -> bytes:
    return b"TG1 SYN " + sender + b"\n" + b"".join(lines)


def ack(*lines: bytes) -> bytes:
    return b"TG1 ACK 10.0.0.9:8101\n" + b"".join(lines)


N_LINE = b"N 10.0.0.2:8101 7 3 4 dc1 rack1 1,2 -\n"
T_LINE = b"T 10.0.0.2:8101 7 3 dc1 rack1 1,2 - 60\n"


# -- Dynomite's format, from the capture ----------------------------------------


def test_capture_holds_the_three_gossip_frames():
    frames = gossip_frames()
    assert [(link, len(f.payload)) for link, f in frames] == [
        ("A->B link", 69),
        ("B->A link", 34),
        ("B->A link", 0),
    ]
    assert all(f.data == b"a" for _, f in frames)


def test_dynomite_full_state_decodes_exactly():
    payload = gossip_frames()[0][1].payload
    message = decode(MessageType.GOSSIP_SYN, payload, default_port=8101)
    assert message is not None
    assert message.kind is Kind.DYNOMITE_SYN
    assert message.sender == ""
    assert message.size == 69
    assert message.records == (
        NodeRecord(
            "127.0.0.1:8101", "127.0.0.1", 8101, "dc1", "rack1", (0,), State.NORMAL, 0, 1795317716
        ),
        NodeRecord(
            "127.0.0.1:8101", "127.0.0.1", 8101, "dc1", "rack2", (0,), State.JOINING, 0, 1795317713
        ),
    )
    # Nothing was lost: the records print back to the very bytes.
    again = "|".join(
        f"{r.dc}${r.rack}${r.tokens[0]},{r.heartbeat},{r.state.value},{r.host}"
        for r in message.records
    )
    assert again.encode() == payload


def test_dynomite_joining_announcement_and_empty_syn():
    (_, announce), (_, empty) = gossip_frames()[1:]
    message = decode(MessageType.GOSSIP_SYN, announce.payload, default_port=8103)
    assert message is not None
    (only,) = message.records
    assert only == NodeRecord(
        "127.0.0.1:8103", "127.0.0.1", 8103, "dc1", "rack2", (0,), State.JOINING, 0, 1795317713
    )
    blank = decode(MessageType.GOSSIP_SYN, empty.payload, default_port=8101)
    assert blank is not None
    assert (blank.kind, blank.records, blank.size) == (Kind.DYNOMITE_SYN, (), 0)


def test_dynomite_port_comes_from_the_caller():
    payload = b"dc1$r$5,1,4,10.1.1.1|dc2$r$6,2,8,host-b.example"
    message = decode(7, payload, default_port=9000)
    assert message is not None
    assert [(r.name, r.port, r.dc, r.tokens, r.state) for r in message.records] == [
        ("10.1.1.1:9000", 9000, "dc1", (5,), State.NORMAL),
        ("host-b.example:9000", 9000, "dc2", (6,), State.DOWN),
    ]


# -- trinomite's format ---------------------------------------------------------


def test_round_trip_every_kind():
    a = rec(tokens=(0, 2147483648, 4294967295), tls_name="node-a.dc1.example", heartbeat=42)
    b = rec("fe80::1%eth0", 8102, state=State.NORMAL, rack="r2")
    c = rec("10.0.0.3", 8101, state=State.LEAVING, heartbeat=9)
    tomb = NodeRecord.make("10.0.0.4", 8101, "dc1", "rack1", [7], generation=5, heartbeat=3)
    tomb = attrs.evolve(tomb, state=State.REMOVED, ttl=3600)
    digests = (a.digest(), b.digest(), tomb.digest())
    payload = encode(Kind.SYN, a.name, digests=digests)
    message = decode(MessageType.DIGEST_SYN, payload, default_port=1)
    assert message is not None
    assert (message.kind, message.sender, message.digests) == (Kind.SYN, a.name, digests)
    assert message.digests[2].removed

    payload = encode(Kind.ACK, b.name, records=(a, b, c, tomb), requests=("10.0.0.7:8101",))
    message = decode(MessageType.DIGEST_ACK, payload, default_port=1)
    assert message is not None
    assert message.records == (a, b, c, tomb)
    assert message.records[3].ttl == 3600
    assert message.requests == ("10.0.0.7:8101",)
    assert message.size == len(payload)

    payload = encode(Kind.ACK2, c.name, records=(c,))
    message = decode(MessageType.DIGEST_ACK2, payload, default_port=1)
    assert message is not None
    assert (message.kind, message.records) == (Kind.ACK2, (c,))


def test_documented_example_line():
    record = rec("10.0.0.2", tokens=(0, 2147483648), rack="rack2", heartbeat=42, state=State.NORMAL)
    assert (
        wire.record_line(record) == b"N 10.0.0.2:8101 1718000000123 42 4 dc1 rack2 0,2147483648 -\n"
    )


def test_travels_in_a_peer_frame():
    payload = encode(Kind.SYN, "10.0.0.1:8101", digests=[Digest("10.0.0.1:8101", 3, 4)])
    frame = encode_frame(12, MessageType.DIGEST_SYN, payload, same_dc=True, data=b"a")
    parser = FrameParser()
    parser.feed(frame)
    (got,) = parser.frames()
    message = decode(got.type, got.payload, default_port=8101)
    assert message is not None
    assert message.digests == (Digest("10.0.0.1:8101", 3, 4),)


@pytest.mark.parametrize("frame_type", [MessageType.GOSSIP_SYN_REPLY, MessageType.GOSSIP_ACK, 13])
def test_types_dynomite_ignores_decode_to_none(frame_type):
    assert decode(frame_type, b"whatever", default_port=8101) is None


def test_encoder_refuses_what_it_must_not_send():
    with pytest.raises(ValueError, match="never gossiped"):
        wire.record_line(rec(state=State.DOWN))
    with pytest.raises(ValueError, match="cannot carry"):
        PayloadBuilder(Kind.SYN, "10.0.0.1:8101").add(N_LINE)
    with pytest.raises(ValueError, match="Dynomite"):
        PayloadBuilder(Kind.DYNOMITE_SYN, "10.0.0.1:8101")


def test_builder_stops_at_its_limit():
    builder = PayloadBuilder(Kind.ACK, "10.0.0.1:8101", limit=70)
    assert builder.add(N_LINE)
    assert not builder.add(N_LINE.replace(b"0.2", b"0.3"))  # would pass 70 bytes
    assert builder.entries == 1
    assert builder.size == len(builder.payload()) <= 70
    too_many = [Digest(f"10.1.{i // 250}.{i % 250}:1", 1, 1) for i in range(MAX_ENTRIES + 1)]
    with pytest.raises(ValueError, match="over"):
        encode(Kind.SYN, "10.0.0.1:8101", digests=too_many)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dc": "d$c"}, "datacenter"),
        ({"rack": ""}, "rack"),
        ({"rack": "r" * 65}, "rack"),
        ({"tokens": ()}, "tokens"),
        ({"tokens": (1 << 32,)}, "uint32"),
        ({"tokens": tuple(range(MAX_TOKENS + 1))}, "tokens"),
        ({"generation": 1 << 64}, "uint64"),
        ({"tls_name": "bad name"}, "tls"),
        ({"tls_name": "-"}, "tls"),  # the wire's "no TLS name"
        ({"port": 0}, "port"),
        ({"host": "bad host"}, "host:port"),
    ],
)
def test_record_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rec(**kwargs)


def test_record_name_must_be_its_address():
    with pytest.raises(ValueError, match="not host:port"):
        NodeRecord("10.0.0.1:1", "10.0.0.2", 1, "dc", "r", (1,), State.NORMAL, 1)


# -- hostile input -------------------------------------------------------------

HOSTILE_TRINOMITE = [
    # (frame type, payload, reason)
    (10, syn(b"D 10.0.0.1:1 1 1 0\n" * (MAX_PAYLOAD_LEN // 19)), Reason.TOO_LARGE),
    (
        10,
        syn(*(b"D 10.2.%d.%d:1 1 1 0\n" % divmod(i, 250) for i in range(MAX_ENTRIES + 1))),
        Reason.TOO_MANY_ENTRIES,
    ),
    (10, syn(b"D 10.0.0.1:1 1 1 0"), Reason.MALFORMED),  # no final LF
    (10, syn(b"D 10.0.0.1:1 1 1 0\r\n"), Reason.MALFORMED),  # CR kept in the last field
    (10, syn(b"\n"), Reason.MALFORMED),  # empty line
    (10, b"TG2 SYN 10.0.0.9:8101\n", Reason.MALFORMED),
    (10, b"TG1 ACK 10.0.0.9:8101\n", Reason.MALFORMED),  # header kind != frame type
    (10, b"TG1 SYN\n", Reason.MALFORMED),
    (10, b"", Reason.MALFORMED),
    (10, syn(N_LINE), Reason.MALFORMED),  # records are not allowed in a SYN
    (12, b"TG1 ACK2 10.0.0.9:8101\nR 10.0.0.1:1\n", Reason.MALFORMED),  # nor requests in ACK2
    (10, syn(b"D 10.0.0.1:1 1 1\n"), Reason.MALFORMED),
    (10, syn(b"D 10.0.0.1:1 1 1 0 extra\n"), Reason.MALFORMED),
    (10, syn(b"D 10.0.0.1:1  1 1 0\n"), Reason.MALFORMED),
    (10, syn(b"D 10.0.0.1:1 1 1 2\n"), Reason.MALFORMED),
    (10, syn(b"X 10.0.0.1:1\n"), Reason.MALFORMED),
    (10, syn(b"D 10.0.0.1:1 +1 1 0\n"), Reason.BAD_NUMBER),
    (10, syn(b"D 10.0.0.1:1 -1 1 0\n"), Reason.BAD_NUMBER),
    (10, syn(b"D 10.0.0.1:1 01 1 0\n"), Reason.BAD_NUMBER),
    (10, syn(b"D 10.0.0.1:1 1_0 1 0\n"), Reason.BAD_NUMBER),
    (10, syn(b"D 10.0.0.1:1 0x10 1 0\n"), Reason.BAD_NUMBER),
    (10, syn("D 10.0.0.1:1 \u0661 1 0\n".encode()), Reason.BAD_NUMBER),  # Arabic-Indic one
    (10, syn(b"D 10.0.0.1:1 1 1.5 0\n"), Reason.BAD_NUMBER),
    (10, syn(b"D 10.0.0.1:1 1 " + b"9" * 21 + b" 0\n"), Reason.BAD_NUMBER),
    (10, syn(b"D 10.0.0.1:1 18446744073709551616 1 0\n"), Reason.OUT_OF_RANGE),
    (10, syn(b"D 10.0.0.1:0 1 1 0\n"), Reason.BAD_NAME),
    (10, syn(b"D 10.0.0.1:65536 1 1 0\n"), Reason.BAD_NAME),
    (10, syn(b"D 10.0.0.1:080 1 1 0\n"), Reason.BAD_NAME),
    (10, syn(b"D 10.0.0.1 1 1 0\n"), Reason.BAD_NAME),
    (10, syn("D h\u00e9te:1 1 1 0\n".encode()), Reason.BAD_NAME),
    (10, syn(b"D 10.0.0.1:1 1 1 0\n", sender=b"nobody"), Reason.BAD_NAME),
    (10, syn(b"D 10.0.0.1:1 1 1 0\nD 10.0.0.1:1 2 2 0\n"), Reason.DUPLICATE),
    (11, ack(N_LINE.replace(b"1,2", b"2,1")), Reason.DUPLICATE),
    (11, ack(N_LINE.replace(b"1,2", b"2,2")), Reason.DUPLICATE),
    (11, ack(N_LINE.replace(b"1,2", b"4294967296")), Reason.OUT_OF_RANGE),
    (11, ack(N_LINE.replace(b"1,2", b"1,,2")), Reason.BAD_NUMBER),
    (11, ack(N_LINE.replace(b"1,2", b"")), Reason.BAD_NUMBER),
    (
        11,
        ack(N_LINE.replace(b"1,2", b",".join(b"%d" % i for i in range(MAX_TOKENS + 1)))),
        Reason.TOO_MANY_TOKENS,
    ),
    (11, ack(N_LINE.replace(b" 4 ", b" 5 ")), Reason.UNKNOWN_STATE),
    (11, ack(N_LINE.replace(b" 4 ", b" 8 ")), Reason.UNKNOWN_STATE),  # DOWN is never on the wire
    (11, ack(N_LINE.replace(b" 4 ", b" 9 ")), Reason.UNKNOWN_STATE),  # REMOVED is a T line
    (11, ack(N_LINE.replace(b" 4 ", b" 256 ")), Reason.OUT_OF_RANGE),
    (11, ack(N_LINE.replace(b"dc1", b"d$1")), Reason.BAD_NAME),
    (11, ack(N_LINE.replace(b"dc1", b"d:1")), Reason.BAD_NAME),
    (11, ack(N_LINE.replace(b"rack1", b"r" * 65)), Reason.BAD_NAME),
    (11, ack(N_LINE.replace(b" -\n", b" bad/name\n")), Reason.BAD_NAME),
    (11, ack(T_LINE.replace(b" 60\n", b" 4294967296\n")), Reason.OUT_OF_RANGE),
    (11, ack(T_LINE.replace(b" 60\n", b"\n")), Reason.MALFORMED),
    (11, ack(N_LINE, N_LINE), Reason.DUPLICATE),
    (11, ack(N_LINE, T_LINE), Reason.DUPLICATE),
]

HOSTILE_DYNOMITE = [
    (b"x" * (MAX_PAYLOAD_LEN + 1), Reason.TOO_LARGE),
    (b"|".join([b"d$r$1,1,4,10.0.0.1"] * (MAX_DYNOMITE_RECORDS + 1)), Reason.TOO_MANY_ENTRIES),
    (b"dc1$rack1$0,1795317716,4", Reason.MALFORMED),
    (b"dc1$rack1,1795317716,4,127.0.0.1", Reason.MALFORMED),
    (b"dc1$rack1$0$9,1795317716,4,127.0.0.1", Reason.MALFORMED),
    (b"dc1$rack1$0,1795317716,4,127.0.0.1|", Reason.MALFORMED),
    (b"dc1$rack1$0,1795317716,4,127.0.0.1,x", Reason.MALFORMED),
    (b"dc1$rack1$4294967296,1,4,127.0.0.1", Reason.OUT_OF_RANGE),
    (b"dc1$rack1$-1,1,4,127.0.0.1", Reason.BAD_NUMBER),
    (b"dc1$rack1$ 1,1,4,127.0.0.1", Reason.BAD_NUMBER),
    (b"dc1$rack1$1,1e9,4,127.0.0.1", Reason.BAD_NUMBER),
    (b"dc1$rack1$1,18446744073709551616,4,127.0.0.1", Reason.OUT_OF_RANGE),
    (b"dc1$rack1$1,1,12,127.0.0.1", Reason.UNKNOWN_STATE),
    (b"dc1$rack1$1,1,0,127.0.0.1", Reason.UNKNOWN_STATE),
    (b"dc1$rack1$1,1,5,127.0.0.1", Reason.UNKNOWN_STATE),
    (b"$rack1$1,1,4,127.0.0.1", Reason.BAD_NAME),
    (b"dc 1$rack1$1,1,4,127.0.0.1", Reason.BAD_NAME),
    (b"dc1$rack1$1,1,4,", Reason.BAD_NAME),
    (b"dc1$rack1$1,1,4,127.0.0.1\r\n", Reason.BAD_NAME),
    (b"dc1$rack1$1,1,4,h\xc3\xa9te", Reason.BAD_NAME),
]


@pytest.mark.parametrize(("frame_type", "payload", "reason"), HOSTILE_TRINOMITE)
def test_hostile_trinomite_payloads(frame_type, payload, reason):
    with pytest.raises(GossipDecodeError) as info:
        decode(frame_type, payload, default_port=8101)
    assert info.value.reason is reason, info.value


@pytest.mark.parametrize(("payload", "reason"), HOSTILE_DYNOMITE)
def test_hostile_dynomite_payloads(payload, reason):
    with pytest.raises(GossipDecodeError) as info:
        decode(MessageType.GOSSIP_SYN, payload, default_port=8101)
    assert info.value.reason is reason, info.value


@pytest.mark.parametrize("frame_type", [0, 3, 5, 6, 14, 999])
def test_non_gossip_frame_types(frame_type):
    with pytest.raises(GossipDecodeError) as info:
        decode(frame_type, b"", default_port=8101)
    assert info.value.reason is Reason.NOT_GOSSIP


def test_the_error_is_a_value_error_with_a_readable_message():
    with pytest.raises(ValueError, match="unknown_state: state 5"):
        decode(7, b"dc1$rack1$1,1,5,127.0.0.1", default_port=8101)


def test_largest_valid_payloads_still_decode():
    digests = [Digest(f"10.2.{i // 250}.{i % 250}:1", 1, 1) for i in range(MAX_ENTRIES)]
    message = decode(10, encode(Kind.SYN, "10.0.0.1:8101", digests=digests), default_port=1)
    assert message is not None
    assert len(message.digests) == MAX_ENTRIES
    many = b"|".join(
        b"d$r$%d,1,4,10.0.%d.%d" % (i, i // 250, i % 250) for i in range(MAX_DYNOMITE_RECORDS)
    )
    message = decode(7, many, default_port=1)
    assert message is not None
    assert len(message.records) == MAX_DYNOMITE_RECORDS


# -- properties ------------------------------------------------------------------

GOSSIP_TYPES = st.sampled_from([7, 8, 10, 11, 12])


def decode_or_typed_error(frame_type: int, payload: bytes) -> None:
    """Decoding either succeeds or raises GossipDecodeError; anything else fails the test."""
    try:
        message = decode(frame_type, payload, default_port=8101)
    except GossipDecodeError:
        return
    assert message is None or message.size == len(payload)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(GOSSIP_TYPES, st.binary(max_size=300))
def test_random_bytes_raise_only_the_typed_error(frame_type, payload):
    decode_or_typed_error(frame_type, payload)


VALID = [
    (10, syn(b"D 10.0.0.1:8101 3 4 0\n", b"D 10.0.0.2:8101 3 4 1\n")),
    (11, ack(N_LINE, T_LINE.replace(b"0.2", b"0.3"), b"R 10.0.0.5:1\n")),
    (12, b"TG1 ACK2 10.0.0.9:8101\n" + N_LINE),
    (7, gossip_frames()[0][1].payload),
]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3), st.binary(max_size=4)), max_size=6),
)
def test_mutated_valid_payloads_raise_only_the_typed_error(case, edits):
    frame_type, payload = case
    data = bytearray(payload)
    for at, how, chunk in edits:
        at = at % (len(data) + 1)
        if how == 0:
            data[at:at] = chunk  # insert
        elif how == 1:
            del data[at : at + len(chunk) + 1]  # delete
        else:
            data[at : at + len(chunk)] = chunk  # overwrite
    decode_or_typed_error(frame_type, bytes(data))


LABELS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=64)
RECORDS = st.builds(
    NodeRecord.make,
    host=st.from_regex(r"[0-9a-z.:-]{1,40}", fullmatch=True),
    port=st.integers(1, 65535),
    dc=LABELS,
    rack=LABELS,
    tokens=st.sets(st.integers(0, 2**32 - 1), min_size=1, max_size=20),
    generation=st.integers(0, 2**64 - 1),
    state=st.sampled_from([State.NORMAL, State.JOINING, State.LEAVING]),
    heartbeat=st.integers(0, 2**64 - 1),
    tls_name=st.none() | st.from_regex(r"[0-9a-z][0-9a-z.*-]{0,59}", fullmatch=True),
)


@settings(max_examples=200)
@given(st.lists(RECORDS, max_size=8, unique_by=lambda r: r.name))
def test_records_round_trip(records):
    payload = encode(Kind.ACK, "10.0.0.1:8101", records=records)
    message = decode(MessageType.DIGEST_ACK, payload, default_port=1)
    assert message is not None
    assert list(message.records) == records
    payload = encode(Kind.SYN, "10.0.0.1:8101", digests=[r.digest() for r in records])
    message = decode(MessageType.DIGEST_SYN, payload, default_port=1)
    assert message is not None
    assert [d.version for d in message.digests] == [r.version for r in records]
