"""Gossip payloads: trinomite's digest exchange, and Dynomite's GOSSIP_SYN records.

Theory of operation
-------------------
A gossip message travels as the payload of a peer frame
(``trinomite.protocol.peer``, data byte ``a``).  The frame type says which
format the payload is in::

    GOSSIP_SYN  (7)    Dynomite's records, parsed only (trinomite never sends them)
    DIGEST_SYN  (10)   trinomite SYN:  digests of everything the sender knows
    DIGEST_ACK  (11)   trinomite ACK:  records newer than the SYN's digests + requests
    DIGEST_ACK2 (12)   trinomite ACK2: the records the ACK requested
    8, 9, 13           accepted and ignored (``decode`` returns None), as Dynomite does

Dynomite consumes and ignores frames 10-12 (``dmsg_process``), so a mixed
cluster is safe: C nodes never try to read trinomite's format.

trinomite's format (``TG1``) is ASCII text, one entry a line, fields split by
one space; every line ends with LF, no CR, no empty line::

    TG1 <kind> <sender>                             header: SYN, ACK or ACK2
    D <name> <gen> <hb> <0|1>                       digest (1: a tombstone)
    N <name> <gen> <hb> <state> <dc> <rack> <tokens> <tls|->   a live record
    T <name> <gen> <hb> <dc> <rack> <tokens> <tls|-> <ttl>     a tombstone
    R <name>                                        "send me your record"

    e.g. b"TG1 ACK 10.0.0.1:8101\\n"
         b"N 10.0.0.2:8101 1718000000123 42 4 dc1 rack2 0,2147483648 -\\n"

``name`` is ``host:port`` of the node's peer listener (split at the last
colon, so IPv6 hosts work unbracketed, as in ``ring.topology``); ``gen`` is
the generation (new on every restart, >= 1), ``hb`` the heartbeat counter,
``state`` a ``State`` value (4 NORMAL, 6 LEAVING, 7 JOINING), ``tokens``
comma-separated uint32s in strictly ascending order, ``tls`` the name the
node's certificate is checked against (``-``: its host), ``ttl`` the
seconds a tombstone still lives.  Which lines a kind may carry:
``ALLOWED_LINES``.

Dynomite's format (``gossip_forward_state``, dynomite.md section 6.2) is
``|``-joined records ``dc$rack$token,ts,state,addr``; an empty payload is
an empty SYN.  A record becomes a ``NodeRecord`` with ``generation`` 0 (a
C node has none; trinomite generations start at 1), ``heartbeat`` = ``ts``
(seconds since the epoch, rewritten by its owner on every round) and
**port = the caller's ``default_port``**: Dynomite's record has no port
(Dynomite itself assumes 8101).  Two C nodes on one host therefore share
one name (the captured loopback run shows it); a mixed cluster needs one C
node per host.  Only the states a C node gossips are accepted: 4 NORMAL, 7
JOINING, 8 DOWN (its failure detector's verdict, which ``state`` does not
trust: liveness is always decided locally).

Hostile input: everything a peer sends is checked before use.  A payload
over ``MAX_PAYLOAD_LEN`` or with more than ``MAX_ENTRIES`` lines (Dynomite:
``MAX_DYNOMITE_RECORDS`` records), anything not decimal ASCII where a
number goes (no signs, spaces, leading zeros, ``_`` or non-ASCII digits),
numbers out of range (tokens are uint32, generations and heartbeats
uint64, ports 1..65535), more than ``MAX_TOKENS`` tokens, unknown states,
bad names and duplicate entries all raise ``GossipDecodeError`` with a
``Reason``: the one exception ``decode`` raises, which the caller counts.

Pure code: no I/O, no clock, no trio.
"""

from __future__ import annotations

import enum
import itertools
import re
from collections.abc import Iterable

import attrs

from trinomite.protocol.peer import MessageType

__all__ = [
    "ALLOWED_LINES",
    "FRAME_TYPES",
    "MAX_DYNOMITE_RECORDS",
    "MAX_ENTRIES",
    "MAX_PAYLOAD_LEN",
    "MAX_TOKENS",
    "Digest",
    "GossipDecodeError",
    "Kind",
    "Message",
    "NodeRecord",
    "PayloadBuilder",
    "Reason",
    "State",
    "decode",
    "decode_dynomite",
    "decode_trinomite",
    "encode",
    "split_name",
]

#: Largest gossip payload accepted or built (a 1024-node view of one-token
#: records is about 80 KiB; the rest is headroom for many tokens a node).
MAX_PAYLOAD_LEN = 1024 * 1024
#: Most lines after the header: digests, or records plus requests, of 1024 members.
MAX_ENTRIES = 2048
#: Most records in one Dynomite payload.
MAX_DYNOMITE_RECORDS = 1024
#: Most tokens one node may hold.
MAX_TOKENS = 256
UINT32_MAX = (1 << 32) - 1
UINT64_MAX = (1 << 64) - 1
MAGIC = b"TG1"


class State(enum.IntEnum):
    """A member's state; the numbers are Dynomite's ``dyn_state_t``."""

    NORMAL = 4  #: a ring member serving requests
    LEAVING = 6  #: announced it is leaving (still owns its tokens)
    JOINING = 7  #: started, not yet safe to serve (``state`` module: the NORMAL rule)
    DOWN = 8  #: convicted by the local failure detector; never sent by trinomite
    REMOVED = 9  #: tombstone: removed by an operator, gossiped until it expires


class Kind(enum.Enum):
    SYN = "SYN"
    ACK = "ACK"
    ACK2 = "ACK2"
    DYNOMITE_SYN = "DYNOMITE_SYN"  #: Dynomite's GOSSIP_SYN: records, no reply expected


#: The frame type each kind travels in.
FRAME_TYPES: dict[Kind, MessageType] = {
    Kind.SYN: MessageType.DIGEST_SYN,
    Kind.ACK: MessageType.DIGEST_ACK,
    Kind.ACK2: MessageType.DIGEST_ACK2,
    Kind.DYNOMITE_SYN: MessageType.GOSSIP_SYN,
}
_KINDS: dict[int, Kind] = {int(t): k for k, t in FRAME_TYPES.items()}
#: Gossip frame types Dynomite defines and ignores: ``decode`` returns None.
IGNORED_TYPES = frozenset(
    {MessageType.GOSSIP_SYN_REPLY, MessageType.GOSSIP_ACK, MessageType.SHUTDOWN}
)
#: Which line tags each trinomite kind may carry.
ALLOWED_LINES: dict[Kind, frozenset[bytes]] = {
    Kind.SYN: frozenset({b"D"}),
    Kind.ACK: frozenset({b"N", b"T", b"R"}),
    Kind.ACK2: frozenset({b"N", b"T"}),
}
#: States a trinomite ``N`` line may carry (DOWN is a local verdict, REMOVED is ``T``).
WIRE_STATES: dict[int, State] = {s: State(s) for s in (4, 6, 7)}
#: States a Dynomite record may carry, and what they mean here.
DYNOMITE_STATES: dict[int, State] = {4: State.NORMAL, 7: State.JOINING, 8: State.DOWN}


class Reason(enum.Enum):
    """Why a payload was refused (one counter each, if the caller likes)."""

    NOT_GOSSIP = "frame type is not a gossip message"
    TOO_LARGE = "payload over MAX_PAYLOAD_LEN"
    TOO_MANY_ENTRIES = "more entries than MAX_ENTRIES (or MAX_DYNOMITE_RECORDS)"
    MALFORMED = "not the expected structure"
    BAD_NUMBER = "not a canonical decimal number"
    OUT_OF_RANGE = "number out of range"
    TOO_MANY_TOKENS = "more than MAX_TOKENS tokens"
    UNKNOWN_STATE = "unknown or disallowed state"
    BAD_NAME = "bad host, port, name or label"
    DUPLICATE = "the same name twice, or tokens not strictly ascending"


class GossipDecodeError(ValueError):
    """A peer sent a gossip payload that cannot be trusted: count and drop it."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.name.lower()}: {detail}")
        self.reason = reason
        self.detail = detail


# ---- values ------------------------------------------------------------------

_LABEL = re.compile(r"[!-~]{1,64}")  # printable ASCII, no space (then minus the separators)
_LABEL_BAD = frozenset(":$,|")  # config forbids ':', Dynomite's format uses '$', ',' and '|'
_HOST = re.compile(r"[0-9A-Za-z._:%-]{1,255}")
#: A DNS-style name with a letter or digit: "-" stands for "none" on the wire.
_TLS = re.compile(r"(?=.*[0-9A-Za-z])[0-9A-Za-z._*-]{1,253}")
_NUMBER = re.compile(rb"0|[1-9][0-9]{0,19}")


def _check_label(value: str, what: str) -> None:
    if not _LABEL.fullmatch(value) or not _LABEL_BAD.isdisjoint(value):
        raise ValueError(f"{what} {value!r}: 1-64 printable ASCII characters, none of ' :$,|'")


def _check_tokens(tokens: tuple[int, ...]) -> None:
    if not 1 <= len(tokens) <= MAX_TOKENS:
        raise ValueError(f"a node holds 1 to {MAX_TOKENS} tokens, not {len(tokens)}")
    if any(not 0 <= t <= UINT32_MAX for t in tokens):
        raise ValueError(f"tokens are uint32: {tokens}")
    if any(a >= b for a, b in itertools.pairwise(tokens)):
        raise ValueError(f"tokens must be strictly ascending: {tokens}")


def split_name(name: str) -> tuple[str, int]:
    """``host:port`` (split at the last colon) -> (host, port); ValueError if invalid."""
    host, colon, port = name.rpartition(":")
    if not colon or not _HOST.fullmatch(host) or not (port.isascii() and port.isdigit()):
        raise ValueError(f"expected host:port, got {name!r}")
    if len(port) > 5 or port != str(int(port)) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port out of 1..65535 in {name!r}")
    return host, int(port)


@attrs.frozen
class NodeRecord:
    """What gossip says about one node: identity, ring position, version.

    Built by the caller for the local node (``NodeRecord.make``) and by the
    decoder for peers; the constructor checks every field (ValueError).
    ``version`` orders two records of one name: a higher generation wins;
    within a generation a tombstone wins; then the higher heartbeat.
    """

    name: str
    host: str
    port: int
    dc: str
    rack: str
    tokens: tuple[int, ...]
    state: State
    generation: int
    heartbeat: int = 0
    tls_name: str | None = None
    #: For a tombstone (REMOVED): seconds it still lives, as relayed.  Not
    #: part of equality.
    ttl: int = attrs.field(default=0, eq=False)

    def __attrs_post_init__(self) -> None:
        if (self.host, self.port) != split_name(self.name):
            raise ValueError(f"name {self.name!r} is not host:port ({self.host!r}, {self.port})")
        _check_label(self.dc, "datacenter")
        _check_label(self.rack, "rack")
        _check_tokens(self.tokens)
        if not (0 <= self.generation <= UINT64_MAX and 0 <= self.heartbeat <= UINT64_MAX):
            raise ValueError("generation and heartbeat are uint64")
        if not 0 <= self.ttl <= UINT32_MAX:
            raise ValueError("ttl is uint32 seconds")
        if self.tls_name is not None and not _TLS.fullmatch(self.tls_name):
            raise ValueError(f"tls name {self.tls_name!r}: a DNS-style name")

    @classmethod
    def make(
        cls,
        host: str,
        port: int,
        dc: str,
        rack: str,
        tokens: Iterable[int],
        *,
        generation: int,
        state: State = State.JOINING,
        heartbeat: int = 0,
        tls_name: str | None = None,
    ) -> NodeRecord:
        """A record named ``host:port``; ``tokens`` are sorted."""
        return cls(
            f"{host}:{port}",
            host,
            port,
            dc,
            rack,
            tuple(sorted(tokens)),
            state,
            generation,
            heartbeat,
            tls_name,
        )

    @property
    def version(self) -> tuple[int, int, int]:
        return (self.generation, self.state is State.REMOVED, self.heartbeat)

    @property
    def position(self) -> tuple[str, str, str, tuple[int, ...]]:
        """What the ring cares about: (name, dc, rack, tokens)."""
        return (self.name, self.dc, self.rack, self.tokens)

    def digest(self) -> Digest:
        return Digest(self.name, self.generation, self.heartbeat, self.state is State.REMOVED)


@attrs.frozen
class Digest:
    """(name, version) without the record: what a SYN carries."""

    name: str
    generation: int
    heartbeat: int
    removed: bool = False

    @property
    def version(self) -> tuple[int, int, int]:
        return (self.generation, self.removed, self.heartbeat)


@attrs.frozen
class Message:
    """One decoded gossip payload."""

    kind: Kind
    #: The claimed sender's name (``""`` for Dynomite, whose payload has none).
    sender: str
    digests: tuple[Digest, ...] = ()
    records: tuple[NodeRecord, ...] = ()
    requests: tuple[str, ...] = ()
    size: int = 0  #: payload bytes, for the byte counters


# ---- encoding ----------------------------------------------------------------


def _tls(record: NodeRecord) -> bytes:
    return record.tls_name.encode() if record.tls_name else b"-"


def _tokens(record: NodeRecord) -> bytes:
    return ",".join(map(str, record.tokens)).encode()


def digest_line(digest: Digest) -> bytes:
    return b"D %s %d %d %d\n" % (
        digest.name.encode(),
        digest.generation,
        digest.heartbeat,
        digest.removed,
    )


def record_line(record: NodeRecord) -> bytes:
    """An ``N`` line, or a ``T`` line for a tombstone.  ValueError for DOWN."""
    common = (record.name.encode(), record.generation, record.heartbeat)
    where = (record.dc.encode(), record.rack.encode(), _tokens(record), _tls(record))
    if record.state is State.REMOVED:
        return b"T %s %d %d %s %s %s %s %d\n" % (*common, *where, record.ttl)
    if record.state not in WIRE_STATES.values():
        raise ValueError(f"state {record.state.name} is never gossiped")
    return b"N %s %d %d %d %s %s %s %s\n" % (*common[:3], record.state, *where)


def request_line(name: str) -> bytes:
    return b"R %s\n" % name.encode()


class PayloadBuilder:
    """Builds one trinomite payload within ``limit`` bytes and ``MAX_ENTRIES`` lines.

    ``add(line)`` returns False (and adds nothing) once the line would not
    fit, so callers can fill a message greedily and leave the rest to a
    later round.
    """

    def __init__(self, kind: Kind, sender: str, limit: int = MAX_PAYLOAD_LEN) -> None:
        if kind is Kind.DYNOMITE_SYN:
            raise ValueError("trinomite never sends Dynomite's format")
        split_name(sender)
        self.kind = kind
        self._parts = [b"%s %s %s\n" % (MAGIC, kind.value.encode(), sender.encode())]
        self._size = len(self._parts[0])
        self._limit = min(limit, MAX_PAYLOAD_LEN)

    def add(self, line: bytes) -> bool:
        if line[:1] not in ALLOWED_LINES[self.kind]:
            raise ValueError(f"{self.kind.value} cannot carry {line[:1]!r} lines")
        if self._size + len(line) > self._limit or len(self._parts) > MAX_ENTRIES:
            return False
        self._parts.append(line)
        self._size += len(line)
        return True

    @property
    def size(self) -> int:
        return self._size

    @property
    def entries(self) -> int:
        return len(self._parts) - 1

    def payload(self) -> bytes:
        return b"".join(self._parts)


def encode(
    kind: Kind,
    sender: str,
    *,
    digests: Iterable[Digest] = (),
    records: Iterable[NodeRecord] = (),
    requests: Iterable[str] = (),
) -> bytes:
    """A whole payload; ValueError if it would exceed the bounds."""
    builder = PayloadBuilder(kind, sender)
    lines = [
        *map(digest_line, digests),
        *map(record_line, records),
        *map(request_line, requests),
    ]
    for line in lines:
        if not builder.add(line):
            raise ValueError(f"gossip payload over {MAX_PAYLOAD_LEN} bytes or {MAX_ENTRIES} lines")
    return builder.payload()


# ---- decoding ----------------------------------------------------------------


def _fail(reason: Reason, detail: str) -> GossipDecodeError:
    return GossipDecodeError(reason, detail)


def _number(field: bytes, what: str, limit: int) -> int:
    if not _NUMBER.fullmatch(field):
        raise _fail(Reason.BAD_NUMBER, f"{what} {field[:24]!r}")
    value = int(field)
    if value > limit:
        raise _fail(Reason.OUT_OF_RANGE, f"{what} {value} > {limit}")
    return value


def _text(field: bytes) -> str:
    # Every valid field is printable ASCII; anything else fails the checks below.
    return field.decode("ascii", "replace")


def _label(field: bytes, what: str) -> str:
    value = _text(field)
    try:
        _check_label(value, what)
    except ValueError as exc:
        raise _fail(Reason.BAD_NAME, str(exc)) from None
    return value


def _address(field: bytes) -> tuple[str, str, int]:
    name = _text(field)
    try:
        host, port = split_name(name)
    except ValueError as exc:
        raise _fail(Reason.BAD_NAME, str(exc)) from None
    return name, host, port


def _token_list(field: bytes) -> tuple[int, ...]:
    parts = field.split(b",")
    if len(parts) > MAX_TOKENS:
        raise _fail(Reason.TOO_MANY_TOKENS, f"{len(parts)} tokens")
    tokens = tuple(_number(part, "token", UINT32_MAX) for part in parts)
    if any(a >= b for a, b in itertools.pairwise(tokens)):
        raise _fail(Reason.DUPLICATE, "tokens not strictly ascending")
    return tokens


def _state(field: bytes, table: dict[int, State]) -> State:
    value = _number(field, "state", 255)
    if value not in table:
        raise _fail(Reason.UNKNOWN_STATE, f"state {value}")
    return table[value]


def _tls_field(field: bytes) -> str | None:
    if field == b"-":
        return None
    value = _text(field)
    if not _TLS.fullmatch(value):
        raise _fail(Reason.BAD_NAME, f"tls name {field[:32]!r}")
    return value


def _record(fields: list[bytes], removed: bool) -> NodeRecord:
    name, host, port = _address(fields[1])
    generation = _number(fields[2], "generation", UINT64_MAX)
    heartbeat = _number(fields[3], "heartbeat", UINT64_MAX)
    if removed:
        state, rest, ttl = State.REMOVED, fields[4:8], _number(fields[8], "ttl", UINT32_MAX)
    else:
        state, rest, ttl = _state(fields[4], WIRE_STATES), fields[5:9], 0
    dc = _label(rest[0], "datacenter")
    rack = _label(rest[1], "rack")
    tokens = _token_list(rest[2])
    tls = _tls_field(rest[3])
    return NodeRecord(name, host, port, dc, rack, tokens, state, generation, heartbeat, tls, ttl)


_FIELD_COUNTS = {b"D": 5, b"N": 9, b"T": 9, b"R": 2}


def decode_trinomite(kind: Kind, payload: bytes) -> Message:
    """Parse a ``TG1`` payload sent in the frame type of ``kind``."""
    if len(payload) > MAX_PAYLOAD_LEN:
        raise _fail(Reason.TOO_LARGE, f"{len(payload)} bytes")
    if not payload.endswith(b"\n"):
        raise _fail(Reason.MALFORMED, "payload does not end with LF")
    lines = payload[:-1].split(b"\n")
    if len(lines) - 1 > MAX_ENTRIES:
        raise _fail(Reason.TOO_MANY_ENTRIES, f"{len(lines) - 1} lines")
    head = lines[0].split(b" ")
    if len(head) != 3 or head[0] != MAGIC:
        raise _fail(Reason.MALFORMED, f"bad header {lines[0][:40]!r}")
    if head[1] != kind.value.encode():
        raise _fail(Reason.MALFORMED, f"header says {head[1][:8]!r} in a {kind.value} frame")
    sender = _address(head[2])[0]
    allowed = ALLOWED_LINES[kind]
    digests: list[Digest] = []
    records: list[NodeRecord] = []
    requests: list[str] = []
    seen: set[tuple[bytes, str]] = set()
    for line in lines[1:]:
        fields = line.split(b" ")
        tag = fields[0]
        if tag not in allowed or len(fields) != _FIELD_COUNTS[tag]:
            raise _fail(Reason.MALFORMED, f"unexpected line {line[:40]!r} in {kind.value}")
        name = _address(fields[1])[0]
        key = (b"R" if tag == b"R" else b"DNT", name)
        if key in seen:
            raise _fail(Reason.DUPLICATE, f"{name} listed twice")
        seen.add(key)
        if tag == b"D":
            generation = _number(fields[2], "generation", UINT64_MAX)
            heartbeat = _number(fields[3], "heartbeat", UINT64_MAX)
            if fields[4] not in (b"0", b"1"):
                raise _fail(Reason.MALFORMED, f"digest flag {fields[4][:8]!r}")
            digests.append(Digest(name, generation, heartbeat, fields[4] == b"1"))
        elif tag == b"R":
            requests.append(name)
        else:
            records.append(_record(fields, removed=tag == b"T"))
    return Message(kind, sender, tuple(digests), tuple(records), tuple(requests), len(payload))


def decode_dynomite(payload: bytes, *, default_port: int) -> Message:
    """Parse Dynomite's ``dc$rack$token,ts,state,addr|...`` (port: ``default_port``)."""
    if len(payload) > MAX_PAYLOAD_LEN:
        raise _fail(Reason.TOO_LARGE, f"{len(payload)} bytes")
    if not payload:
        return Message(Kind.DYNOMITE_SYN, "", size=0)
    items = payload.split(b"|")
    if len(items) > MAX_DYNOMITE_RECORDS:
        raise _fail(Reason.TOO_MANY_ENTRIES, f"{len(items)} records")
    records: list[NodeRecord] = []
    for item in items:
        fields = item.split(b",")
        where = fields[0].split(b"$")
        if len(fields) != 4 or len(where) != 3:
            raise _fail(Reason.MALFORMED, f"not dc$rack$token,ts,state,addr: {item[:40]!r}")
        dc = _label(where[0], "datacenter")
        rack = _label(where[1], "rack")
        token = _number(where[2], "token", UINT32_MAX)
        ts = _number(fields[1], "timestamp", UINT64_MAX)
        state = _state(fields[2], DYNOMITE_STATES)
        host = _text(fields[3])
        if not _HOST.fullmatch(host):
            raise _fail(Reason.BAD_NAME, f"address {fields[3][:40]!r}")
        name = f"{host}:{default_port}"
        records.append(NodeRecord(name, host, default_port, dc, rack, (token,), state, 0, ts))
    return Message(Kind.DYNOMITE_SYN, "", records=tuple(records), size=len(payload))


def decode(frame_type: int, payload: bytes, *, default_port: int) -> Message | None:
    """Decode a gossip frame's payload; None for the types Dynomite ignores too.

    Error handling: raises ``GossipDecodeError`` (and nothing else) for any
    payload that is not valid, and for non-gossip frame types.
    ``default_port`` (the peer port Dynomite records are assumed to listen
    on) is the caller's, checked by ``split_name``-style rules.
    """
    if not 1 <= default_port <= 65535:
        raise ValueError(f"default_port {default_port} is not a port")
    if frame_type in IGNORED_TYPES:
        return None
    kind = _KINDS.get(frame_type)
    if kind is None:
        raise _fail(Reason.NOT_GOSSIP, f"frame type {frame_type}")
    if kind is Kind.DYNOMITE_SYN:
        return decode_dynomite(payload, default_port=default_port)
    return decode_trinomite(kind, payload)
