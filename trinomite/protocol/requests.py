"""Sans-IO parser for Redis client requests (RESP multibulk and inline).

Theory of operation
-------------------
The I/O shell feeds whatever bytes a socket produced with ``feed(data)``
and then calls ``parse(max_requests)``, which returns the complete requests
found so far, in order, as ``Request`` objects.  Nothing here awaits or
touches a socket; the parser is a plain state machine over one bytearray::

    feed() --> [ consumed | partial request being parsed | unparsed ]
                 ^ _base    ^ _start                       ^ _pos

* Requests may be split anywhere (one byte at a time included) and any
  number of them may arrive in one chunk (pipelining).
* The parser never rescans: a partial multibulk keeps the arguments parsed
  so far and the offset to resume from; a partial header line remembers how
  far CRLF was already searched for.
* Limits are checked before anything is buffered for them: a bulk length
  larger than ``max_bulk_len`` or a multibulk count above
  ``max_multibulk_len`` is an error as soon as its header line is complete;
  an inline line, or a ``*``/``$`` header line, longer than
  ``max_inline_len`` is an error without waiting for its end.
* Protocol errors are data, not exceptions: ``parse`` returns the good
  requests that preceded the bad bytes and sets ``error`` to a
  ``ProtocolError`` whose ``reply`` is the exact ``-ERR Protocol error: ...``
  line Redis would send.  After an error the connection must be closed; the
  parser refuses further input.

Each ``Request`` carries its arguments and ``raw``, the RESP multibulk bytes
to forward unchanged (inline requests are re-encoded as multibulk, so a
datastore or peer always sees one wire format).
"""

from __future__ import annotations

import re

import attrs
import hiredis

from .buffer import compact
from .inline import split_inline

__all__ = [
    "PREAUTH_MAX_ARGS",
    "PREAUTH_MAX_BULK",
    "Limits",
    "PayloadParser",
    "ProtocolError",
    "PyRequestParser",
    "Request",
    "RequestParser",
    "encode_command",
    "encode_command_py",
    "parse_one",
]

_STAR = 42  # '*'
_DOLLAR = 36  # '$'
_CR = 13  # '\r'
_CRLF = b"\r\n"
#: Longer digit strings are rejected before int() sees them.
_MAX_DIGITS = 19


#: Redis's limits on what a client that has not authenticated may send (networking.c).
PREAUTH_MAX_ARGS = 10
PREAUTH_MAX_BULK = 16 * 1024


@attrs.frozen
class Limits:
    """Per-connection input bounds (defaults as Redis: 512 MB, 1M, 64 KB).

    ``unauthenticated`` adds Redis's pre-auth bounds (``PREAUTH_MAX_ARGS``
    arguments, ``PREAUTH_MAX_BULK`` bytes per bulk), with Redis's errors.
    """

    max_bulk_len: int = 512 * 1024 * 1024
    max_multibulk_len: int = 1024 * 1024
    max_inline_len: int = 64 * 1024
    unauthenticated: bool = False


@attrs.frozen
class ProtocolError:
    """A framing error.  ``reply`` is the RESP error line for the client."""

    message: str

    @property
    def reply(self) -> bytes:
        return b"-ERR Protocol error: " + self.message.encode() + _CRLF


def _bad_number(digits: bytearray) -> bool:
    """A leading zero (``01``, ``-01``): Redis's string2ll refuses these."""
    body = digits[1:] if digits[:1] == b"-" else digits
    return len(body) > 1 and body[:1] == b"0"


class Request:
    """One parsed client request.

    ``args[0]`` is the command name as sent (any case); ``raw`` is the
    request's RESP multibulk encoding.
    """

    __slots__ = ("args", "raw")

    def __init__(self, args: list[bytes], raw: bytes) -> None:
        self.args = args
        self.raw = raw

    def __repr__(self) -> str:
        return f"Request({self.args!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.args == other.args and self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]


def encode_command(args: list[bytes]) -> bytes:
    """Encode arguments as one RESP multibulk request (hiredis's encoder, in C)."""
    return hiredis.pack_command(tuple(args))  # type: ignore[arg-type,no-any-return]


def encode_command_py(args: list[bytes]) -> bytes:
    """``encode_command`` in Python: the reference its tests compare hiredis against."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class PyRequestParser:
    """Pure-Python incremental, bounded parser (exact errors, any split)."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.error: ProtocolError | None = None
        self._buf = bytearray()
        # Offset where the request currently being parsed starts.
        self._start = 0
        # Offset where parsing resumes (inside the current request).
        self._pos = 0
        # Offset from which to resume a CRLF search for an incomplete line.
        self._find_from = 0
        # Multibulk state: arguments collected and how many are still needed.
        self._args: list[bytes] = []
        self._need = 0
        # Length of the bulk whose body we wait for, or -1 for a '$' header.
        self._bulk = -1

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as requests."""
        return len(self._buf) - self._start

    @property
    def at_boundary(self) -> bool:
        """True when no partial request is buffered."""
        return self._start >= len(self._buf) and self._need == 0

    def feed(self, data: bytes | bytearray) -> None:
        if self.error is None:
            self._buf += data

    def parse(self, max_requests: int = 1 << 30) -> list[Request]:
        """Return up to ``max_requests`` complete requests, in order."""
        out: list[Request] = []
        if self.error is not None:
            return out
        buf = self._buf
        end = len(buf)
        while self._pos < end and len(out) < max_requests:
            if self._need == 0:
                if buf[self._pos] == _STAR:
                    if not self._multibulk_header(buf, end):
                        break
                    if self._need == 0:  # "*0" or "*-1": an empty request, skipped
                        self._start = self._pos
                        continue
                else:
                    request = self._inline(buf, end)
                    if request is None:
                        break
                    if request.args:
                        out.append(request)
                    continue
            if not self._bulk_args(buf, end):
                break
            out.append(Request(self._args, bytes(buf[self._start : self._pos])))
            self._args = []
            self._start = self._pos
        self._compact()
        return out

    # -- multibulk ---------------------------------------------------------

    def _line_end(self, buf: bytearray, end: int, what: str) -> int:
        """Offset of the CRLF ending the line at ``_pos``, or -1 if incomplete."""
        nl = buf.find(_CRLF, max(self._pos, self._find_from))
        if nl >= 0:
            self._find_from = 0
            return nl
        if end - self._pos > self.limits.max_inline_len:
            self._fail(f"too big {what} count string")
        else:
            self._find_from = end - 1
        return -1

    def _multibulk_header(self, buf: bytearray, end: int) -> bool:
        nl = self._line_end(buf, end, "mbulk")
        if nl < 0:
            return False
        digits = buf[self._pos + 1 : nl]
        if _bad_number(digits):
            self._fail("invalid multibulk length")
            return False
        if digits.isdigit() and len(digits) < _MAX_DIGITS:
            count = int(digits)
        elif digits[:1] == b"-" and digits[1:].isdigit() and len(digits) < _MAX_DIGITS:
            count = 0
        else:
            self._fail("invalid multibulk length")
            return False
        if count > self.limits.max_multibulk_len:
            self._fail("invalid multibulk length")
            return False
        if count > PREAUTH_MAX_ARGS and self.limits.unauthenticated:
            self._fail("unauthenticated multibulk length")
            return False
        self._pos = nl + 2
        self._need = count
        self._bulk = -1
        return True

    def _bulk_args(self, buf: bytearray, end: int) -> bool:
        """Collect the remaining bulk arguments; False if more data is needed."""
        pos = self._pos
        args = self._args
        bulk = self._bulk
        need = self._need
        max_bulk = self.limits.max_bulk_len
        while need:
            if bulk < 0:
                if pos >= end:
                    break
                if buf[pos] != _DOLLAR:
                    got = chr(buf[pos])
                    self._fail(f"expected '$', got '{got}'")
                    return False
                self._pos = pos
                nl = self._line_end(buf, end, "bulk")
                if nl < 0:
                    break
                digits = buf[pos + 1 : nl]
                if (
                    not digits.isdigit()
                    or len(digits) >= _MAX_DIGITS
                    or _bad_number(digits)
                    or int(digits) > max_bulk
                ):
                    self._fail("invalid bulk length")
                    return False
                bulk = int(digits)
                if bulk > PREAUTH_MAX_BULK and self.limits.unauthenticated:
                    self._fail("unauthenticated bulk length")
                    return False
                pos = nl + 2
            stop = pos + bulk
            if stop + 2 > end:
                break
            # Like Redis and hiredis, the two bytes after a bulk are skipped,
            # not checked, so every parser in the path agrees on framing.
            args.append(bytes(buf[pos:stop]))
            pos = stop + 2
            bulk = -1
            need -= 1
        self._pos = pos
        self._bulk = bulk
        self._need = need
        return need == 0 and self.error is None

    # -- inline ------------------------------------------------------------

    def _inline(self, buf: bytearray, end: int) -> Request | None:
        # The limit counts the line without its line ending (CRLF or LF).
        nl = buf.find(b"\n", max(self._pos, self._find_from))
        limit = self.limits.max_inline_len
        if nl < 0:
            if end - self._pos - (buf[end - 1] == _CR) > limit:
                self._fail("too big inline request")
            else:
                self._find_from = end
            return None
        self._find_from = 0
        line = bytes(buf[self._pos : nl])
        if len(line) - line.endswith(b"\r") > limit:
            self._fail("too big inline request")
            return None
        self._pos = self._start = nl + 1
        args = split_inline(line.rstrip(b"\r"))
        if args is None:
            self._fail("unbalanced quotes in request")
            return None
        return Request(args, encode_command(args) if args else b"")

    # -- housekeeping ------------------------------------------------------

    def _fail(self, message: str) -> None:
        self.error = ProtocolError(message)
        self._buf.clear()
        self._start = self._pos = self._find_from = 0

    def _compact(self) -> None:
        shift = compact(self._buf, self._start)
        if shift:
            self._start -= shift
            self._pos -= shift
            self._find_from = max(0, self._find_from - shift)


#: A multibulk count of 7+ digits goes to the Python parser: hiredis would
#: preallocate a list for it before any element arrives.  Other malformed
#: headers (leading zeros, signs, spaces) need no pre-scan: hiredis refuses
#: them as Redis does, and the round then falls back to the Python parser,
#: which produces Redis's exact message (``test_requests`` pins this).
_HUGE_COUNT = re.compile(rb"\*\+?\d{7}")


class RequestParser:
    """The parser a client connection uses: hiredis speed, Python exactness.

    Each round (one ``feed`` followed by ``parse``) starts at a request
    boundary.  When the round's bytes are complete, well-formed multibulk
    requests (the common case), hiredis parses them in C and ``blob`` is
    exactly those bytes, ready to forward unchanged.  Anything else (a
    request split across rounds, inline commands, protocol errors, huge
    counts) is parsed from the start of the round by ``PyRequestParser``,
    which enforces every limit and produces Redis's exact error messages;
    the connection returns to the fast path at the next boundary.

    ``parse`` returns argument lists; ``blob`` is the RESP multibulk
    encoding of all of them, in order.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.blob = b""
        self._slow: PyRequestParser | None = None
        self._chunks: list[bytes] = []
        self._reader = hiredis.Reader()

    @property
    def error(self) -> ProtocolError | None:
        return self._slow.error if self._slow is not None else None

    @property
    def buffered(self) -> int:
        if self._slow is not None:
            return self._slow.buffered
        return sum(len(c) for c in self._chunks)

    def feed(self, data: bytes | bytearray) -> None:
        if not data:
            return  # nothing to parse (the fast path looks at the first byte)
        if self._slow is not None:
            self._slow.feed(data)
        else:
            self._chunks.append(bytes(data))

    def set_limits(self, limits: Limits) -> None:
        """New bounds for everything not parsed yet (after a client authenticates)."""
        self.limits = limits
        if self._slow is not None:
            self._slow.limits = limits

    def next_request(self) -> list[bytes] | None:
        """At most one request, by the exact parser (for a client that must be
        answered request by request: before it authenticates)."""
        if self._slow is None:
            if not self._chunks:
                return None
            self._to_slow(b"".join(self._chunks))
        slow = self._slow
        assert slow is not None
        found = slow.parse(1)
        if slow.error is None and slow.at_boundary:
            self._slow = None
        return found[0].args if found else None

    def parse(self) -> list[list[bytes]]:
        if self._slow is None:
            fast = self._parse_fast()
            if fast is not None:
                return fast
        return self._parse_slow()

    def _parse_fast(self) -> list[list[bytes]] | None:
        chunks = self._chunks
        if not chunks:
            self.blob = b""
            return []
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if data[0] != _STAR or _HUGE_COUNT.search(data) is not None:
            self._to_slow(data)
            return None
        limits = self.limits
        max_count = limits.max_multibulk_len
        # Only a round longer than the bulk limit can hold a bulk over it.
        max_bulk = limits.max_bulk_len if len(data) > limits.max_bulk_len else 0
        # After a clean round the reader sits at a request boundary (the
        # sentinel proved it), so it is reused; any fallback discards it.
        reader = self._reader
        reader.feed(data)
        out: list[list[bytes]] = []
        try:
            while True:
                args = reader.gets()
                if args is False:
                    break
                b"".join(args)  # TypeError unless a flat list of bulk strings
                if len(args) > max_count or (max_bulk and max(map(len, args)) > max_bulk):
                    self._to_slow(data)  # over a configured limit: exact error there
                    return None
                if args:
                    out.append(args)
            # hiredis does not say whether it stopped at a boundary or inside
            # a request.  A simple-string sentinel tells: only at a boundary
            # does it come back as a top-level bytes value of its own.
            reader.feed(b"+\r\n")
            if reader.gets() != b"":
                self._to_slow(data)
                return None
        except (hiredis.ProtocolError, TypeError):
            self._to_slow(data)
            return None
        chunks.clear()
        self.blob = data
        return out

    def _to_slow(self, data: bytes) -> None:
        self._reader = hiredis.Reader()
        self._chunks = []
        slow = self._slow = PyRequestParser(self.limits)
        slow.feed(data)

    def _parse_slow(self) -> list[list[bytes]]:
        slow = self._slow
        assert slow is not None
        requests = slow.parse()
        self.blob = b"".join([r.raw for r in requests])
        if slow.error is None and slow.at_boundary:
            self._slow = None
        return [r.args for r in requests]


def parse_one(payload: bytes, limits: Limits | None = None) -> list[bytes] | None:
    """The arguments of ``payload`` if it is exactly one well-formed request, else None.

    Used for request payloads that arrive framed (from peers), where the
    frame already delimits one request: hiredis parses the common case, the
    bounded Python parser anything unusual.
    """
    if payload[:1] == b"*" and _HUGE_COUNT.search(payload) is None:
        reader = hiredis.Reader()
        reader.feed(payload)
        try:
            args = reader.gets()
            if not isinstance(args, list) or not args:
                return None
            b"".join(args)  # TypeError unless a flat list of bulk strings
            reader.feed(b"+\r\n")
            return args if reader.gets() == b"" else None
        except (hiredis.ProtocolError, TypeError):
            return None
    parser = PyRequestParser(limits)
    parser.feed(payload)
    requests = parser.parse()
    if len(requests) != 1 or parser.error is not None or not parser.at_boundary:
        return None
    return requests[0].args


class PayloadParser:
    """``parse_one`` for a stream of framed payloads, with one hiredis reader reused.

    A peer connection's frames each carry one request; creating a reader
    per payload cost about as much as parsing it.  The reader is kept while
    payloads are clean (each exactly one complete request, nothing left
    over) and replaced after one that is not, so a bad payload never
    affects the next.  Anything but a plain multibulk goes to ``parse_one``.
    """

    __slots__ = ("_reader", "limits")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits
        self._reader = hiredis.Reader()

    def parse(self, payload: bytes) -> list[bytes] | None:
        """The arguments of ``payload`` if it is exactly one well-formed request, else None."""
        if payload[:1] != b"*" or _HUGE_COUNT.search(payload) is not None:
            return parse_one(payload, self.limits)
        reader = self._reader
        reader.feed(payload)
        try:
            args = reader.gets()
        except hiredis.ProtocolError:
            args = False
        if args is False or reader.has_data():
            self._reader = hiredis.Reader()  # partial state or leftovers: start clean
            return None
        if not isinstance(args, list) or not args:
            return None
        try:
            b"".join(args)  # TypeError unless a flat list of bulk strings
        except TypeError:
            return None
        return args

    def parse_many(self, payload: bytes, most: int) -> list[list[bytes]] | None:
        """The requests of a bundle: 1 to ``most`` well-formed multibulks, nothing else.

        None for anything else (a partial or malformed request, leftovers, a
        non-multibulk, more than ``most``); the reader then starts clean.
        """
        if payload[:1] != b"*" or _HUGE_COUNT.search(payload) is not None:
            return None
        reader = self._reader
        reader.feed(payload)
        requests: list[list[bytes]] = []
        # has_data() before each gets(): a gets() that returns False has
        # swallowed a partial request into the reader's state.
        try:
            while reader.has_data() and len(requests) <= most:
                args = reader.gets()
                if not isinstance(args, list) or not args:
                    raise TypeError  # partial (False), or not a multibulk
                b"".join(args)  # TypeError unless a flat list of bulk strings
                requests.append(args)
        except (hiredis.ProtocolError, TypeError):
            requests = []
        if not requests or len(requests) > most or reader.has_data():
            self._reader = hiredis.Reader()
            return None
        return requests
