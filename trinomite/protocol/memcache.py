"""Sans-IO parser for memcached ASCII requests (the commands: ``memcache_commands``).

Theory of operation
-------------------
The I/O shell feeds whatever bytes a socket produced with ``feed(data)``
and calls ``parse(max_requests)``, which returns the complete requests found
so far, in order, as ``McRequest`` objects.  Nothing here awaits or touches a
socket.  The parser is a state machine over one bytearray::

    LINE --(storage line, data fits)--> DATA --(<bytes> + CRLF arrived)--> LINE
      \\--(request refused, data follows)--> SWALLOW --(discarded)--> LINE

* Requests may be split anywhere (one byte at a time included) and any
  number may arrive in one chunk (pipelining).  A line ends with LF, CRLF
  included, as memcached reads it; ``raw`` keeps the line ending as sent.
  The LF search resumes where it stopped, and a data block is waited for by
  its length, never scanned.
* Bounds (``MemcacheLimits``), checked before more is buffered: a command
  line is at most ``max_line_len`` bytes (2048, memcached's own limit for a
  line still missing its newline), except a ``get``/``gets``/``gat``/``gats``
  line, at most ``max_retrieval_line_len`` (64 KiB; memcached has no bound
  there); a key is at most 250 bytes with no control characters; a storage
  command's ``<bytes>`` is checked against ``max_item_size`` (1 MiB, as
  memcached's ``-I``) as soon as its line is complete.  An oversized block is
  refused at once and its bytes are then discarded as they arrive, never
  buffered (memcached's "swallow").
* Errors are data.  A request that is refused but keeps the framing intact
  (an unknown command, a wrong argument count or number, a bad key, a value
  too large, an unsupported command) comes back in order as an ``McRequest``
  whose ``error`` is the exact reply line (memcached's own texts; an
  unsupported command gets ``CLIENT_ERROR unsupported command '<name>': ...``)
  and the connection stays open, as with memcached.  A framing error (a line
  too long, an unreadable ``<bytes>``, a data block not ended by CRLF) sets
  the parser's ``error``: the requests before it are returned, the caller
  answers them, sends ``error.reply`` and closes.  After ``quit`` too, the
  parser refuses further input.
* ``noreply`` is honoured as memcached does: a request carrying it expects
  no reply at all, not even an error (``McRequest.noreply``); a wrong
  argument count is answered regardless, since memcached checks it first.

Each ``McRequest`` carries ``raw``, the exact bytes (line and data block) to
forward unchanged, and re-encoders for the coordinator: ``for_keys`` (one
fragment of a multi-get per owner) and ``without_noreply`` (so a quorum
write still gets replies from the replicas).

Deliberate differences from memcached 1.6: where memcached reads a refused
storage command's data block as the next command, trinomite skips the block
when ``<bytes>`` is readable and closes the connection when it is not (a
data block is never run as a command); keys with control characters (a NUL
truncates memcached's line) and numbers out of their C type's range (flags
and levels over 32 bits, exptimes beyond int32: memcached truncates them)
are refused; ``gat`` with no key is ``ERROR`` (memcached answers ``END``); a
line too long gets a ``CLIENT_ERROR`` before the close (memcached just
closes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import attrs

from .buffer import compact
from .memcache_commands import (
    _BAD_CHUNK,
    _BAD_FORMAT,
    _DELETE_USAGE,
    _ERROR,
    _LINE_TOO_LONG,
    _NUMBERS,
    _TOO_LARGE,
    COMMANDS,
    McCommand,
    McKind,
)
from .memcache_replies import ReplyKind

__all__ = [
    "COMMANDS",
    "KEY_MAX_LENGTH",
    "McCommand",
    "McError",
    "McKind",
    "McRequest",
    "MemcacheLimits",
    "MemcacheRequestParser",
    "encode_request",
    "parse_payload",
]

_CR = 13
_CRLF = b"\r\n"
#: memcached's KEY_MAX_LENGTH.
KEY_MAX_LENGTH = 250
#: Largest ``<bytes>`` memcached reads (``vlen > INT_MAX - 2`` is refused).
MAX_DATA_LEN = 2**31 - 3
#: memcached only lets a line without its newline grow past 2048 bytes if it
#: starts, after at most 100 spaces, with one of these.
_RETRIEVAL_PREFIXES = (b"get ", b"gets ", b"gat ", b"gats ")
_MAX_LEADING_SPACES = 100
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_UNSIGNED = re.compile(rb"\+?[0-9]{1,20}")
_SIGNED = re.compile(rb"[+-]?[0-9]{1,20}")


@attrs.frozen
class McError:
    """A refusal: ``reply`` is the exact line to send; ``close`` if the connection must close."""

    reply: bytes
    close: bool = False

    @property
    def message(self) -> str:
        return self.reply.rstrip(b"\r\n").decode("latin-1")


@attrs.frozen
class MemcacheLimits:
    """Per-connection input bounds (module docstring)."""

    max_line_len: int = 2048
    max_retrieval_line_len: int = 64 * 1024
    max_item_size: int = 1024 * 1024

    def __attrs_post_init__(self) -> None:
        # The retrieval exemption must be decidable from the first
        # max_line_len + 1 bytes of a line, however it is split.
        if self.max_line_len < 128:
            raise ValueError("max_line_len must be at least 128")
        if self.max_retrieval_line_len < self.max_line_len:
            raise ValueError("max_retrieval_line_len must be at least max_line_len")
        if not 0 <= self.max_item_size <= MAX_DATA_LEN:
            raise ValueError(f"max_item_size must be between 0 and {MAX_DATA_LEN}")


# -- requests -------------------------------------------------------------------


def encode_request(tokens: Sequence[bytes], data: bytes | None = None) -> bytes:
    """A request line of ``tokens``, followed by ``data`` as a data block if given."""
    line = b" ".join(tokens) + _CRLF
    return line if data is None else line + data + _CRLF


class McRequest:
    """One parsed client request.

    ``command`` is the command name as sent, ``args`` the tokens after it,
    ``keys`` the keys (empty for refused requests), ``raw`` the whole request
    as received (line, and data block with its CRLF).  ``error`` is set on a
    refused request: send ``error.reply`` unless ``noreply``.
    """

    __slots__ = ("_data_at", "args", "command", "error", "keys", "kind", "noreply", "raw", "spec")

    def __init__(
        self,
        command: bytes,
        spec: McCommand | None,
        args: tuple[bytes, ...],
        keys: tuple[bytes, ...],
        raw: bytes,
        noreply: bool = False,
        error: McError | None = None,
        data_at: int = -1,
    ) -> None:
        self.command = command
        self.spec = spec
        self.kind = McKind.INVALID if spec is None else spec.kind
        self.args = args
        self.keys = keys
        self.raw = raw
        self.noreply = noreply
        self.error = error
        self._data_at = data_at

    @property
    def data(self) -> bytes | None:
        """The data block of a storage request, without its CRLF."""
        return None if self._data_at < 0 else self.raw[self._data_at : -2]

    @property
    def reply_kind(self) -> ReplyKind | None:
        """What the datastore answers to ``raw`` (for ``MemcacheReplyFramer.take``)."""
        return None if self.spec is None else self.spec.reply

    def for_keys(self, keys: Iterable[bytes]) -> bytes:
        """This retrieval re-encoded for ``keys`` only (one fragment of a multi-get).

        Raises:
            ValueError: not a valid retrieval request, or no keys.
        """
        spec = self.spec
        if spec is None or spec.kind is not McKind.RETRIEVAL or self.error is not None:
            raise ValueError(f"not a retrieval request: {self!r}")
        subset = list(keys)
        if not subset:
            raise ValueError("a retrieval needs at least one key")
        assert spec.key_index is not None
        return encode_request([self.command, *self.args[: spec.key_index - 1], *subset])

    def without_noreply(self) -> bytes:
        """``raw`` without its ``noreply`` token (``raw`` itself if it has none).

        Lets the coordinator wait for the replicas' replies to a write the
        client asked not to be answered.
        """
        if not self.noreply or self.error is not None:
            return self.raw
        line = b" ".join([self.command, *self.args[:-1]]) + _CRLF
        return line if self._data_at < 0 else line + self.raw[self._data_at :]

    def __repr__(self) -> str:
        extra = f", error={self.error.message!r}" if self.error is not None else ""
        return f"McRequest({self.command!r}, {self.args!r}, noreply={self.noreply}{extra})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, McRequest):
            return NotImplemented
        return (
            self.command == other.command
            and self.args == other.args
            and self.keys == other.keys
            and self.raw == other.raw
            and self.noreply == other.noreply
            and self.error == other.error
            and self._data_at == other._data_at
        )

    __hash__ = None  # type: ignore[assignment]


def _number(token: bytes, field: str) -> bool:
    signed, low, high = _NUMBERS[field]
    if token.isdigit() and len(token) <= 20:  # plain digits, the usual case: >= every low
        return int(token) <= high
    if (_SIGNED if signed else _UNSIGNED).fullmatch(token) is None:
        return False
    return low <= int(token) <= high


def _data_length(token: bytes) -> int:
    """A ``<bytes>`` token's value, or -1 if memcached would not read it."""
    if token.isdigit() and len(token) <= 20:
        size = int(token)
        return size if size <= MAX_DATA_LEN else -1
    if _SIGNED.fullmatch(token) is None:
        return -1
    size = int(token)
    return size if 0 <= size <= MAX_DATA_LEN else -1


def _bad_key(key: bytes, control: bool) -> bool:
    return len(key) > KEY_MAX_LENGTH or (control and _CONTROL.search(key) is not None)


def _refusal(spec: McCommand, tokens: list[bytes], control: bool) -> bytes | None:
    """Why a request with the right token count is refused, or None."""
    if spec.strict_tail:
        # The tokens after the fields must be some of the optional literals,
        # in order: delete <key> [0] [noreply].
        wanted = list(spec.strict_tail)
        for token in tokens[spec.min_tokens :]:
            while wanted and wanted[0] != token:
                wanted.pop(0)
            if not wanted:
                return _DELETE_USAGE
            wanted.pop(0)
    for index, field in spec.fields:
        token = tokens[index]
        if field == "key":
            if spec.many_keys:
                if any(_bad_key(key, control) for key in tokens[index:]):
                    return _BAD_FORMAT
            elif _bad_key(token, control):
                return _BAD_FORMAT
        elif not _number(token, field):
            return spec.numeric_error
    return None


class MemcacheRequestParser:
    """Incremental, bounded parser of memcached ASCII requests (module docstring)."""

    def __init__(self, limits: MemcacheLimits | None = None) -> None:
        self.limits = limits or MemcacheLimits()
        #: A framing error: send ``error.reply`` after the replies owed, then close.
        self.error: McError | None = None
        self._buf = bytearray()
        self._start = 0  # start of the unparsed bytes (the current request)
        self._find_from = 0  # where the LF search for the current line resumes
        self._need = 0  # DATA: length of line + data block + CRLF, from _start
        self._pending: McRequest | None = None  # DATA: the request, raw still empty
        self._swallow = 0  # SWALLOW: bytes still to discard
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after ``quit`` or a framing error: no further input is parsed."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as requests (discarded ones excluded)."""
        return len(self._buf) - self._start

    @property
    def at_boundary(self) -> bool:
        """True when no partial request is buffered or being discarded."""
        return self._start >= len(self._buf) and not self._need and not self._swallow

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed or not data:
            return
        if self._swallow and self._start >= len(self._buf):
            # Discarding a refused data block: drop it here, never buffer it.
            dropped = min(self._swallow, len(data))
            self._swallow -= dropped
            data = memoryview(data)[dropped:]
        self._buf += data

    def parse(self, max_requests: int = 1 << 30) -> list[McRequest]:
        """Return up to ``max_requests`` complete requests, in order."""
        out: list[McRequest] = []
        buf = self._buf
        while len(out) < max_requests and not self._closed:
            if self._swallow:
                dropped = min(self._swallow, len(buf) - self._start)
                self._start += dropped
                self._swallow -= dropped
                if self._swallow:
                    break
            if self._need:
                request = self._data_block(buf)
                if request is None:
                    break
            elif self._start < len(buf):
                request = self._line(buf)
                if request is None:
                    if self._need and not self._closed:
                        continue  # a storage line: its data block may be here already
                    break
            else:
                break
            out.append(request)
            if request.command == b"quit" and request.error is None:
                self._close()
        self._compact()
        return out

    # -- lines -----------------------------------------------------------------

    def _line_limit(self, buf: bytearray, start: int) -> int:
        head = bytes(buf[start : start + _MAX_LEADING_SPACES + 8])
        stripped = head.lstrip(b" ")
        if len(head) - len(stripped) <= _MAX_LEADING_SPACES and stripped.startswith(
            _RETRIEVAL_PREFIXES
        ):
            return self.limits.max_retrieval_line_len
        return self.limits.max_line_len

    def _line(self, buf: bytearray) -> McRequest | None:
        start = self._start
        lf = buf.find(b"\n", max(start, self._find_from))
        max_line = self.limits.max_line_len
        if lf < 0:
            end = len(buf)
            # A final CR may be the start of the line ending: not counted yet.
            size = end - start - (buf[end - 1] == _CR)
            if size > max_line and size > self._line_limit(buf, start):
                self._fail(_LINE_TOO_LONG)
            else:
                self._find_from = end
            return None
        self._find_from = 0
        stop = lf - 1 if lf > start and buf[lf - 1] == _CR else lf
        if stop - start > max_line and stop - start > self._line_limit(buf, start):
            self._fail(_LINE_TOO_LONG)
            return None
        raw = bytes(buf[start : lf + 1])
        return self._command(raw, raw[: stop - start])

    def _command(self, raw: bytes, line: bytes) -> McRequest | None:
        tokens = line.split(b" ")
        if b"" in tokens:
            tokens = [token for token in tokens if token]
        if not tokens:
            return self._done(McRequest(b"", None, (), (), raw, error=McError(_ERROR)))
        name = tokens[0]
        args = tuple(tokens[1:])
        spec = COMMANDS.get(name)
        if spec is None:
            return self._done(McRequest(name, None, args, (), raw, error=McError(_ERROR)))
        noreply = spec.noreply and len(tokens) > 1 and tokens[-1] == b"noreply"
        size = -1
        if spec.refusal is not None:  # UNSUPPORTED: skip the data block of ms
            if spec.data_index is not None and spec.data_index < len(tokens):
                size = _data_length(tokens[spec.data_index])
                if size < 0:
                    self._fail(_BAD_FORMAT)
                    return None
            refused = McRequest(name, spec, args, (), raw, noreply, McError(spec.refusal))
            return self._refuse(refused, size)
        count = len(tokens)
        if count < spec.min_tokens or (spec.max_tokens is not None and count > spec.max_tokens):
            if spec.data_index is not None:  # where would its data block end?
                self._fail(_BAD_FORMAT)
                return None
            return self._done(McRequest(name, spec, args, (), raw, error=McError(_ERROR)))
        if spec.data_index is not None:
            size = _data_length(tokens[spec.data_index])
            if size < 0:
                self._fail(_BAD_FORMAT)
                return None
        refusal = _refusal(spec, tokens, _CONTROL.search(line) is not None)
        if refusal is None and size > self.limits.max_item_size:
            refusal = _TOO_LARGE
        if refusal is not None:
            refused = McRequest(name, spec, args, (), raw, noreply, McError(refusal))
            return self._refuse(refused, size)
        index = spec.key_index
        keys = () if index is None else args[index - 1 :] if spec.many_keys else (args[index - 1],)
        if size < 0:
            return self._done(McRequest(name, spec, args, keys, raw, noreply))
        self._pending = McRequest(name, spec, args, keys, b"", noreply, None, len(raw))
        self._need = len(raw) + size + 2
        return None

    def _done(self, request: McRequest) -> McRequest:
        """``request`` is the whole of the current line: consume it."""
        self._start += len(request.raw)
        return request

    def _refuse(self, request: McRequest, size: int) -> McRequest:
        """Consume a refused request's line; discard its data block of ``size`` (if >= 0)."""
        if size >= 0:
            self._swallow = size + 2
        return self._done(request)

    # -- data blocks -------------------------------------------------------------

    def _data_block(self, buf: bytearray) -> McRequest | None:
        start = self._start
        stop = start + self._need
        if len(buf) < stop:
            return None
        if buf[stop - 2 : stop] != _CRLF:
            self._fail(_BAD_CHUNK)
            return None
        pending = self._pending
        assert pending is not None
        pending.raw = bytes(buf[start:stop])
        self._start = stop
        self._need = 0
        self._pending = None
        return pending

    # -- housekeeping ------------------------------------------------------------

    def _fail(self, reply: bytes) -> None:
        self.error = McError(reply, close=True)
        self._close()

    def _close(self) -> None:
        self._closed = True
        self._buf.clear()
        self._start = self._find_from = self._need = self._swallow = 0
        self._pending = None

    def _compact(self) -> None:
        shift = compact(self._buf, self._start)
        if shift:
            self._start -= shift
            self._find_from = max(0, self._find_from - shift)


#: A peer's payload is checked against memcached's largest item, whatever this
#: node's clients may send (the coordinator already checked its own).
_PAYLOAD_LIMITS = MemcacheLimits(max_item_size=MAX_DATA_LEN)


_payloads = [MemcacheRequestParser(_PAYLOAD_LIMITS)]


def parse_payload(payload: bytes) -> McRequest | None:
    """``payload`` as exactly one well-formed request, or None (a peer frame's check).

    One parser is reused while it is left clean (at a request boundary,
    not closed); any other outcome replaces it.
    """
    parser = _payloads[0]
    parser.feed(payload)
    requests = parser.parse(2)
    if len(requests) != 1 or parser.closed or not parser.at_boundary:
        _payloads[0] = MemcacheRequestParser(_PAYLOAD_LIMITS)
        return None
    request = requests[0]
    return request if request.error is None and request.keys else None
