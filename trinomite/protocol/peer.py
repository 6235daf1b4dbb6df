"""Sans-IO framing of Dynomite's inter-node ("dnode") messages.

Theory of operation
-------------------
A peer message is an ASCII header and a payload (a RESP request or reply, or
a gossip record).  Nothing follows the payload: the next magic may come
straight after it::

    "   $2014$ " msg_id SP type SP flags SP version SP same_dc SP
    "*" data_len SP data SP "*" payload_len CRLF payload
    e.g. "   $2014$ 3 3 0 1 1 *1 d *31\\r\\n*3\\r\\n$3\\r\\nSET..."

``data`` is one placeholder byte, ``d`` (requests, replies) or ``a``
(gossip).  Flags: bit 0 encrypted, bit 1 compressed (both Dynomite's, both
refused), bit 2 ``FLAG_RESP3``, a trinomite extension (see below).
``FrameParser`` has three states over one bytearray:

    SEEK    find b"$2014$ " (fast path: the magic sits at the cursor)
    HEADER  find CRLF, resuming where the last search stopped, then match
            the fields with a regex and check their ranges and the limits
    BODY    wait for payload_len bytes, then slice them out

* Never rescans; memory is bounded: while seeking only the last 9 bytes
  are kept (a partial magic and its spaces), a header is at most
  ``MAX_HEADER_LEN`` + ``data_len`` bytes, a payload ``max_payload_len``.
* Resync, as Dynomite's ``dyn_parse_core``: bytes before a magic are
  skipped (counted in ``skipped``; up to 3 spaces before ``$2014$`` belong
  to the magic).  A malformed header (a field not decimal ASCII or out of
  range, no CRLF in time) adds one to ``resyncs``, sets ``last_problem``,
  and the search for a magic resumes just after the bad one.
* Unknown types (14+): the rest of the header is valid, so payload_len is
  trusted and the frame is skipped whole (``unknown_types``).  Resyncing
  would search the payload, where user data may hold a magic.
* Fatal errors are data, not exceptions: ``error`` is set and later input
  ignored, the link must be closed.  Causes: payload_len over the limit
  (seen as soon as the header is complete, before buffering the payload)
  and the encrypted or compressed flag.  Dynomite's encryption puts an
  RSA-encrypted AES key in ``data``; trinomite uses TLS instead.

Deliberate differences: Dynomite frames REQ/RES payloads with the Redis
parser and uses payload_len only for gossip and encrypted frames; here it
frames everything (it is exact in every captured frame).  Dynomite reads
flags and same_dc as one digit; here flags may be 0..255, same_dc 0 or 1.

Bundles, a trinomite extension between trinomite nodes only: a REQ or
REQ_FORWARD frame with ``FLAG_BUNDLE`` carries up to ``MAX_BUNDLE`` whole
requests back to back, and its RES carries their replies in the same order
(one header, one message id, one reply match for the lot).  A node sends
bundles on a connection only after the other end has answered its
``HELLO``: an empty CRYPTO_HANDSHAKE frame, which Dynomite accepts and
ignores (dynomite.md 5.2) and a trinomite peer answers with a
CRYPTO_HANDSHAKE frame whose payload is ``HELLO_REPLY``.  A link to a
Dynomite node therefore never carries anything but Dynomite's own frames.

Speed: 0.3-0.39 M frames/s for ``frames()`` over 1000 buffered ``SET foo
bar`` frames (``ReplyFramer.replies()``: 0.22-0.24 M/s on the same payloads),
1 M/s for ``encode_frame``; ``python -m timeit``, best of 5, on a loaded
2-core VM.  One regex match per usual header beat find + split + isdigit;
the ``attrs.frozen`` constructor is about a quarter of the cost.
"""

from __future__ import annotations

import enum
import re
from typing import Literal

import attrs

from .buffer import compact

__all__ = [
    "FLAG_BUNDLE",
    "FLAG_COMPRESSED",
    "FLAG_ENCRYPTED",
    "FLAG_RESP3",
    "GOSSIP_TYPES",
    "HELLO_REPLY",
    "MAX_BUNDLE",
    "MAX_DATA_LEN",
    "MAX_HEADER_LEN",
    "MAX_PAYLOAD_LEN",
    "Frame",
    "FrameError",
    "FrameParser",
    "MessageType",
    "encode_frame",
    "encode_header",
    "header_template",
]


class MessageType(enum.IntEnum):
    """``dmsg_type_t``: the ``type`` field of a frame."""

    UNKNOWN = 0
    DEBUG = 1
    PARSE_ERROR = 2
    REQ = 3  #: request to a same-DC peer, applied locally
    REQ_FORWARD = 4  #: request to a remote-DC peer, re-fanned to its local racks
    RES = 5  #: response; ``msg_id`` echoes the request's
    CRYPTO_HANDSHAKE = 6
    GOSSIP_SYN = 7
    GOSSIP_SYN_REPLY = 8
    GOSSIP_ACK = 9
    DIGEST_SYN = 10
    DIGEST_ACK = 11
    DIGEST_ACK2 = 12
    SHUTDOWN = 13


#: The frame types that carry gossip: Dynomite's GOSSIP_SYN .. SHUTDOWN
#: (7 to 13); trinomite's own exchange uses DIGEST_SYN/ACK/ACK2 (10 to 12).
GOSSIP_TYPES = frozenset(MessageType(t) for t in range(7, 14))

#: Flag bit 0: Dynomite's RSA/AES encryption.  Never sent; refused on receipt.
FLAG_ENCRYPTED = 1
#: Flag bit 1: compression, defined by Dynomite but never implemented.  Refused.
FLAG_COMPRESSED = 2
#: Flag bit 2, a trinomite extension: the forwarded request comes from a
#: RESP3 client, so the receiving node answers in RESP3.  Dynomite never sets
#: it, and ignores it on receipt (it only tests ``flags == 1``).
FLAG_RESP3 = 4
#: Flag bit 3, a trinomite extension: the frame is a bundle (see the module
#: doc).  Sent only to a peer that answered the hello, so Dynomite, which
#: reads flags as one digit, never sees 12 (a bundle of RESP3 requests).
FLAG_BUNDLE = 8
#: Most requests in one bundle (sender and receiver).
MAX_BUNDLE = 1024
#: The payload of a trinomite node's answer to the hello; what follows the
#: prefix names the extensions it speaks.
HELLO_REPLY = b"trinomite bundles"

#: Default payload bound: Redis's 512 MiB bulk limit plus room for the
#: command and the other arguments.
MAX_PAYLOAD_LEN = 512 * 1024 * 1024 + 64 * 1024
#: Longest ``data`` accepted (an RSA-encrypted key is 128 to 512 bytes).
MAX_DATA_LEN = 1024
#: Longest header after the magic, not counting ``data``, without a CRLF.
MAX_HEADER_LEN = 128

_MAGIC = b"   $2014$ "
_CORE = b"$2014$ "  # what Dynomite really looks for; spaces before it are skipped
_CRLF = b"\r\n"
_HEADER = b"   $2014$ %d %d %d %d %d *%d %s *%d\r\n"  # same_dc: a bool formats as 0 or 1
_KEEP = len(_MAGIC) - 1  # bytes kept while seeking: a partial magic and its spaces
_MAX_ID = (1 << 64) - 1
_FIELDS = re.compile(rb"(\d{1,20}) (\d{1,3}) (\d{1,3}) (\d{1,3}) ([01]) \*(\d{1,4}) ")
_TAIL = re.compile(rb" \*(\d{1,20})")
#: The usual header in one piece: version 1, one-digit flags, one byte of data.
_FAST = re.compile(
    rb"   \$2014\$ (\d{1,20}) (\d{1,2}) (\d) 1 ([01]) \*1 (.) \*(\d{1,19})\r\n", re.DOTALL
)
_TYPES = tuple(MessageType)

#: What made the parser give up: see ``FrameError``.
ErrorKind = Literal["encrypted", "compressed", "payload_too_large"]
_WHY = {
    "encrypted": "this is Dynomite's AES/RSA peer encryption, which is not TLS: Dynomite C "
    "nodes and trinomite nodes cannot share secured links; mixed clusters need "
    "secure_server_option: none on both sides (docs/tls.md)",
    "compressed": "compressed frames are not supported (Dynomite never implemented them)",
}


def _copy(buf: bytearray, start: int, stop: int) -> bytes:
    """``bytes(buf[start:stop])`` without the intermediate bytearray."""
    with memoryview(buf) as view:
        return bytes(view[start:stop])


@attrs.define
class Frame:
    """One decoded peer message."""

    msg_id: int
    type: MessageType
    payload: bytes
    same_dc: bool
    flags: int = 0
    version: int = 1
    data: bytes = b"d"

    @property
    def resp3(self) -> bool:
        return bool(self.flags & FLAG_RESP3)

    def encode(self) -> bytes:
        header = (self.msg_id, self.type, self.flags, self.version, self.same_dc, self.data)
        return _encode(*header, len(self.payload)) + self.payload


@attrs.frozen
class FrameError:
    """A fatal framing error: log ``message`` and close the peer link."""

    kind: ErrorKind
    message: str
    msg_id: int


def encode_frame(
    msg_id: int,
    type: int,
    payload: bytes,
    *,
    same_dc: bool,
    flags: int = 0,
    version: int = 1,
    data: bytes = b"d",
) -> bytes:
    """A whole frame, byte for byte as Dynomite writes it.

    ``data`` must be 1 to ``MAX_DATA_LEN`` bytes (Dynomite mishandles an
    empty one).  ``type`` is any int up to 999, so tests can build unknown
    types; other fields out of range raise ``ValueError``.
    """
    return _encode(msg_id, type, flags, version, same_dc, data, len(payload)) + payload


def header_template(type: int, *, same_dc: bool, flags: int = 0) -> bytes:
    """A frame header with the message id and payload length left as ``%d``.

    ``header_template(...) % (msg_id, len(payload)) + payload`` equals
    ``encode_frame(msg_id, type, payload, same_dc=same_dc, flags=flags)``;
    hot paths build the template once and skip the per-frame checks (message
    ids come from a counter and payload lengths from ``len``).
    """
    _encode(0, type, flags, 1, same_dc, b"d", 0)  # checks the fixed fields
    return b"   $2014$ %%d %d %d 1 %d *1 d *%%d\r\n" % (type, flags, same_dc)


def encode_header(
    msg_id: int,
    type: int,
    payload_len: int,
    *,
    same_dc: bool,
    flags: int = 0,
    version: int = 1,
    data: bytes = b"d",
) -> bytes:
    """The header alone, for callers that write a large payload separately."""
    return _encode(msg_id, type, flags, version, same_dc, data, payload_len)


def _encode(
    msg_id: int, type: int, flags: int, version: int, same_dc: bool, data: bytes, plen: int
) -> bytes:
    if not (
        0 <= msg_id <= _MAX_ID
        and 0 <= type <= 999
        and 0 <= flags <= 255
        and 0 <= version <= 255
        and 0 < len(data) <= MAX_DATA_LEN
        and plen >= 0
    ):
        raise ValueError(
            f"frame field out of range: msg_id={msg_id} type={type} flags={flags} "
            f"version={version} data of {len(data)} bytes, payload_len={plen}"
        )
    return _HEADER % (msg_id, type, flags, version, same_dc, len(data), data, plen)


class FrameParser:
    """Splits a peer link's byte stream into ``Frame`` objects.

    ``feed(data)`` then ``frames()`` (all complete frames) or
    ``next_frame()`` (one, or None until more data arrives).  Check
    ``error`` afterwards; ``resyncs``, ``skipped``, ``unknown_types`` and
    ``last_problem`` report what was discarded, for logging.
    """

    def __init__(self, max_payload_len: int = MAX_PAYLOAD_LEN) -> None:
        self.max_payload_len = max_payload_len
        self.error: FrameError | None = None
        self.resyncs = 0  #: malformed headers skipped
        self.skipped = 0  #: bytes discarded outside frames (garbage, bad headers)
        self.unknown_types = 0  #: well-formed frames of an unknown type, skipped
        self.last_problem: str | None = None
        self._buf = bytearray()
        self._start = 0  # first byte not consumed: frame start, or where seeking resumes
        self._hdr = -1  # offset just after the current frame's magic; -1 while seeking
        self._find_from = 0  # where the CRLF search resumes
        self._resyncing = False  # seeking after a malformed header
        # Parsed header waiting for its payload: (fields..., payload start, payload end).
        self._head: tuple[int, int, int, int, bool, bytes, int, int] | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned or discarded."""
        return len(self._buf) - self._start

    def feed(self, data: bytes | bytearray) -> None:
        if self.error is None:
            self._buf += data

    def frames(self) -> list[Frame]:
        """Every complete frame buffered so far, in order."""
        out: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more data is fed (or on error)."""
        buf = self._buf
        start = self._start
        if self._hdr < 0 and (m := _FAST.match(buf, start)) is not None:
            # The usual frame, its header complete: one regex match.  Anything
            # unusual about it is left to the general path below.
            msg_id = int(m[1])
            kind = int(m[2])
            flags = int(m[3])
            body = m.end()
            stop = body + int(m[6])
            if (
                kind < len(_TYPES)
                and not flags & (FLAG_ENCRYPTED | FLAG_COMPRESSED)
                and msg_id <= _MAX_ID
                and stop - body <= self.max_payload_len
            ):
                if stop <= len(buf):
                    self._start = self._find_from = stop
                    payload = (
                        bytes(buf[body:stop]) if stop - body < 65536 else _copy(buf, body, stop)
                    )
                    return Frame(msg_id, _TYPES[kind], payload, m[4] == b"1", flags, 1, m[5])
                self._hdr = start + len(_MAGIC)
                self._head = (msg_id, kind, flags, 1, m[4] == b"1", m[5], body, stop)
        return self._next_slow(buf)

    def _next_slow(self, buf: bytearray) -> Frame | None:
        end = len(buf)
        while self.error is None:
            head = self._head
            if head is None:
                hdr = self._hdr
                if hdr < 0:
                    if buf.startswith(_MAGIC, self._start):
                        hdr = self._hdr = self._start + len(_MAGIC)
                    elif (hdr := self._seek(buf, end)) < 0:
                        break
                find_from = self._find_from
                nl = buf.find(_CRLF, find_from if find_from > hdr else hdr)
                if nl < 0:
                    if not self._too_long(buf, hdr, end):
                        self._find_from = max(find_from, end - 1)
                        break
                    continue
                head = self._header(buf, hdr, nl)
                if head is None:
                    continue  # resynced, failed, or the CRLF was inside ``data``
            stop = head[7]
            if stop > end:
                self._head = head
                break
            self._head = None
            self._hdr = -1
            self._find_from = self._start = stop
            msg_id, kind, flags, version, same_dc, data, body, _ = head
            if kind >= len(_TYPES):
                self.unknown_types += 1
                self.last_problem = f"skipped frame {msg_id} of unknown type {kind}"
                continue
            payload = bytes(buf[body:stop]) if stop - body < 65536 else _copy(buf, body, stop)
            return Frame(msg_id, _TYPES[kind], payload, same_dc, flags, version, data)
        self._compact()
        return None

    # -- states --------------------------------------------------------------

    def _seek(self, buf: bytearray, end: int) -> int:
        """Find the next magic; return the offset after it, or -1."""
        start = self._start
        at = buf.find(_CORE, start)
        if at < 0:
            keep = max(start, end - _KEEP)
            if keep > start:
                self.skipped += keep - start
                if not self._resyncing:  # keep the reason of the resync for the log
                    self.last_problem = f"skipped {keep - start} bytes looking for a frame magic"
                self._start = keep
            return -1
        lead = at - start
        spaces = 0
        while spaces < 3 and spaces < lead and buf[at - 1 - spaces] == 0x20:
            spaces += 1
        if lead > spaces:
            self.skipped += lead - spaces
            if not self._resyncing:
                self.last_problem = f"skipped {lead - spaces} bytes before a frame magic"
        self._resyncing = False
        self._start = at - spaces
        self._find_from = 0
        self._hdr = at + len(_CORE)
        return self._hdr

    def _too_long(self, buf: bytearray, hdr: int, end: int) -> bool:
        """Resync if no CRLF can still end the header; True if it did."""
        if end - hdr <= MAX_HEADER_LEN:
            return False
        m = _FIELDS.match(buf, hdr, end)
        if m is not None and end - hdr <= MAX_HEADER_LEN + min(int(m[6]), MAX_DATA_LEN):
            return False
        self._resync(hdr, f"no CRLF within {end - hdr} bytes of a frame magic")
        return True

    def _header(
        self, buf: bytearray, hdr: int, nl: int
    ) -> tuple[int, int, int, int, bool, bytes, int, int] | None:
        m = _FIELDS.match(buf, hdr, nl)
        if m is None:
            self._resync(hdr, f"malformed frame header {bytes(buf[hdr:nl][:64])!r}")
            return None
        msg_id = int(m[1])
        kind = int(m[2])
        flags = int(m[3])
        version = int(m[4])
        dlen = int(m[6])
        if msg_id > _MAX_ID or flags > 255 or version > 255 or dlen > MAX_DATA_LEN:
            self._resync(hdr, f"frame header field out of range {bytes(m[0])!r}")
            return None
        if flags & (FLAG_ENCRYPTED | FLAG_COMPRESSED):
            what: ErrorKind = "encrypted" if flags & FLAG_ENCRYPTED else "compressed"
            self._fail(what, msg_id, f"peer frame {msg_id} is {what} (flags {flags}): {_WHY[what]}")
            return None
        d0 = m.end()
        d1 = d0 + dlen
        if nl < d1:  # the CRLF found is inside ``data``: search again after it
            self._find_from = d1
            return None
        t = _TAIL.fullmatch(buf, d1, nl)
        if t is None:
            self._resync(hdr, f"malformed frame header {bytes(buf[hdr:nl][:64])!r}")
            return None
        plen = int(t[1])
        if plen > self.max_payload_len:
            limit = self.max_payload_len
            self._fail("payload_too_large", msg_id, f"peer frame {msg_id}: {plen} bytes > {limit}")
            return None
        data = bytes(buf[d0:d1])
        return (msg_id, kind, flags, version, m[5] == b"1", data, nl + 2, nl + 2 + plen)

    def _resync(self, hdr: int, problem: str) -> None:
        """Give up on the header after ``hdr``; seek from just after its magic."""
        restart = hdr - len(_CORE) + 1
        self.resyncs += 1
        self.skipped += restart - self._start
        self.last_problem = problem
        self._resyncing = True
        self._start = restart
        self._hdr = -1
        self._find_from = 0

    def _fail(self, kind: ErrorKind, msg_id: int, message: str) -> None:
        self.error = FrameError(kind, message, msg_id)
        self._buf.clear()
        self._start = self._find_from = 0
        self._hdr = -1
        self._head = None

    def _compact(self) -> None:
        shift = compact(self._buf, self._start)
        if not shift:
            return
        self._start -= shift
        self._find_from = max(0, self._find_from - shift)
        if self._hdr >= 0:
            self._hdr -= shift
        head = self._head
        if head is not None:
            self._head = (*head[:6], head[6] - shift, head[7] - shift)
