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

import attrs

__all__ = ["Limits", "ProtocolError", "Request", "RequestParser", "encode_command"]

_STAR = 42  # '*'
_DOLLAR = 36  # '$'
_CRLF = b"\r\n"
#: Compact the buffer once this many consumed bytes sit in front of it.
_COMPACT_AT = 64 * 1024
#: Longer digit strings are rejected before int() sees them.
_MAX_DIGITS = 19


@attrs.frozen
class Limits:
    """Per-connection input bounds (defaults as Redis: 512 MB, 1M, 64 KB)."""

    max_bulk_len: int = 512 * 1024 * 1024
    max_multibulk_len: int = 1024 * 1024
    max_inline_len: int = 64 * 1024


@attrs.frozen
class ProtocolError:
    """A framing error.  ``reply`` is the RESP error line for the client."""

    message: str

    @property
    def reply(self) -> bytes:
        return b"-ERR Protocol error: " + self.message.encode() + _CRLF


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
    """Encode arguments as one RESP multibulk request."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class RequestParser:
    """Incremental, bounded parser of one client connection's request stream."""

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

    def feed(self, data: bytes) -> None:
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
                if not digits.isdigit() or len(digits) >= _MAX_DIGITS or int(digits) > max_bulk:
                    self._fail("invalid bulk length")
                    return False
                bulk = int(digits)
                pos = nl + 2
            stop = pos + bulk
            if stop + 2 > end:
                break
            if buf[stop : stop + 2] != _CRLF:
                self._fail("expected CRLF after bulk argument")
                return False
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
        nl = buf.find(b"\n", max(self._pos, self._find_from))
        if nl < 0:
            if end - self._pos > self.limits.max_inline_len:
                self._fail("too big inline request")
            else:
                self._find_from = end
            return None
        self._find_from = 0
        line = bytes(buf[self._pos : nl])
        if len(line) > self.limits.max_inline_len:
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
        start = self._start
        if start == 0:
            return
        if start >= len(self._buf):
            self._buf.clear()
            self._pos = 0
        elif start >= _COMPACT_AT:
            del self._buf[:start]
            self._pos -= start
        else:
            return
        if self._find_from:
            self._find_from = max(0, self._find_from - start)
        self._start = 0


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = frozenset(b"0123456789abcdefABCDEF")
_SPACE = frozenset(b" \n\r\t\v\f\0")


def split_inline(line: bytes) -> list[bytes] | None:
    """Split an inline command line as Redis's ``sdssplitargs`` does.

    Supports ``"double quoted"`` strings with ``\\n``, ``\\xHH`` and friends,
    and ``'single quoted'`` strings with ``\\'``.  Returns None for unbalanced
    quotes (or a closing quote not followed by a space).
    """
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0
        while True:
            if i >= n:
                if quote:
                    return None
                break
            c = line[i]
            if quote == 0x22:  # inside "..."
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and (
                    line[i + 2] in _HEX and line[i + 3] in _HEX
                ):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current += _ESCAPES.get(line[i], bytes((line[i],)))
                elif c == 0x22:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    current.append(c)
            elif quote == 0x27:  # inside '...'
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    current.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        return None
                    i += 1
                    break
                else:
                    current.append(c)
            elif c in _SPACE:
                break
            elif c in (0x22, 0x27):
                quote = c
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))
