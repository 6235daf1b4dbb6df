"""Sans-IO framing of memcached ASCII replies, and encoders for node-made replies.

Theory of operation
-------------------
Like ``replies.ReplyFramer`` for RESP, the hot path never decodes a value:
``MemcacheReplyFramer`` only finds where each reply ends and hands back that
slice of bytes, to be forwarded byte for byte::

    feed(chunk) -> take(ReplyKind.VALUES) -> b"VALUE k 0 3\\r\\nbar\\r\\nEND\\r\\n"  (or None)

memcached replies are not self-describing: ``VALUE ...`` blocks run until an
``END`` line, and ``NOT_FOUND`` means different things after different
commands.  So the caller says which kind of reply it expects next (the
request's ``McRequest.reply_kind``), one per request that expects a reply
(none for ``noreply`` requests):

    kind      what memcached sends
    values    (VALUE <key> <flags> <bytes> [<cas>]\\r\\n<data>\\r\\n)* END\\r\\n
    stored    STORED | NOT_STORED | EXISTS | NOT_FOUND
    number    <digits>[spaces] | NOT_FOUND          (incr / decr)
    deleted   DELETED | NOT_FOUND
    touched   TOUCHED | NOT_FOUND
    version   VERSION <text>
    ok        OK

Every kind also accepts an error line (``ERROR [text]``, ``CLIENT_ERROR
<text>``, ``SERVER_ERROR <text>``), which ends the reply, a retrieval too.
Any other line is a ``MemcacheReplyError``: the datastore connection is out
of step with its requests and must be closed.

A data block is skipped by its length, never scanned, and a ``VALUE`` whose
length is over ``max_value_len`` is an error as soon as its header line is
complete, before any of its data is buffered.  A call that returns None
remembers how far it got (inside a multi-value reply too), so a reply that
arrives in pieces is scanned once.

``take_until`` finds the end of a delimited run (``datastore.memcache``)
with one search, and ``split_run`` cuts a shared run's reply per request
by kind.  ``split_values`` and ``merge_gets`` coalesce the fragments of a
multi-get sent to several owners into one reply with one ``END``, in the
client's key order; ``to_memcache`` rewrites the node's own RESP-form
errors as ``SERVER_ERROR`` lines where they leave the node.  The encoders
build the replies the node answers itself, with Dynomite's error shape
``SERVER_ERROR <source> <message>`` (dynomite.md §3.3).
"""

from __future__ import annotations

import enum
import re
from collections import deque
from collections.abc import Iterable, Sequence

from .buffer import compact

__all__ = [
    "END",
    "ERROR",
    "OK",
    "MemcacheReplyError",
    "MemcacheReplyFramer",
    "ReplyKind",
    "client_error",
    "is_error",
    "merge_gets",
    "server_error",
    "split_run",
    "split_values",
    "to_memcache",
    "version",
]

_CRLF = b"\r\n"
END = b"END\r\n"
ERROR = b"ERROR\r\n"
OK = b"OK\r\n"
#: Longest reply line accepted (a VALUE header is at most ~300 bytes).
MAX_REPLY_LINE = 8192
#: Prefixes of the three error lines of the protocol.  memcached also sends
#: ``ERROR <text>`` and ``ERROR: <text>`` for some administrative commands.
_ERROR_PREFIXES = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")
#: memcached may pad an incr/decr result with spaces (protocol.txt).
_NUMBER = re.compile(rb"[0-9]+ *")
_DIGITS = re.compile(rb"[0-9]{1,20}")


class ReplyKind(enum.Enum):
    """The shape of the reply a request expects (see the module docstring)."""

    VALUES = "values"
    STORED = "stored"
    NUMBER = "number"
    DELETED = "deleted"
    TOUCHED = "touched"
    VERSION = "version"
    OK = "ok"


#: The exact lines each single-line kind accepts (besides errors; ``number``
#: also accepts digits and ``version`` any ``VERSION <text>``).
_LINES: dict[ReplyKind, frozenset[bytes]] = {
    ReplyKind.STORED: frozenset({b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"}),
    ReplyKind.NUMBER: frozenset({b"NOT_FOUND"}),
    ReplyKind.DELETED: frozenset({b"DELETED", b"NOT_FOUND"}),
    ReplyKind.TOUCHED: frozenset({b"TOUCHED", b"NOT_FOUND"}),
    ReplyKind.VERSION: frozenset(),
    ReplyKind.OK: frozenset({b"OK"}),
}


class MemcacheReplyError(Exception):
    """The datastore sent bytes that are not the reply expected."""


def _value_length(line: bytes) -> int:
    """The data length of a ``VALUE <key> <flags> <bytes> [<cas>]`` line, or -1."""
    parts = line.split(b" ")
    if len(parts) not in (4, 5) or not parts[1]:
        return -1
    if not all(_DIGITS.fullmatch(part) for part in parts[2:]):
        return -1
    return int(parts[3])


def _is_error_line(line: bytes) -> bool:
    return line.startswith(_ERROR_PREFIXES)


class MemcacheReplyFramer:
    """Splits a memcached byte stream into complete replies of expected kinds."""

    def __init__(
        self, max_value_len: int = 1024 * 1024, max_line_len: int = MAX_REPLY_LINE
    ) -> None:
        self.max_value_len = max_value_len
        self.max_line_len = max_line_len
        self._buf = bytearray()
        self._start = 0  # start of the run being framed
        self._pos = 0  # end of what is framed so far
        self._find_from = 0  # where the CRLF search for the line at _pos resumes
        self._value_end = -1  # end of the VALUE data block (and CRLF) waited for
        self._done = 0  # replies completed in the current run

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned."""
        return len(self._buf) - self._start

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def take(self, kind: ReplyKind) -> bytes | None:
        """The bytes of the next reply, expected to be of ``kind``; None until complete.

        A call that returns None remembers how far it got; call again with
        the same ``kind`` after feeding more data.

        Raises:
            MemcacheReplyError: the bytes are not a reply of that kind.
        """
        return self.take_run((kind,))

    def take_until(self, marker: bytes) -> bytes | None:
        """Everything before the line that holds ``marker``; None until it arrived.

        The datastore pool follows every run with a meta command whose reply
        line carries a fresh random token (``datastore.memcache``): the run's
        replies are then all bytes before that line, found with one search,
        whatever their number and kinds.  The marker's line is consumed.
        Not to be mixed with ``take`` on one stream.
        """
        buf = self._buf
        found = buf.find(marker, max(self._start, self._find_from))
        if found < 0:
            self._find_from = max(self._start, len(buf) - len(marker) + 1)
            return None
        end = buf.find(_CRLF, found + len(marker) - 2)
        if end < 0:
            return None
        begin = buf.rfind(_CRLF, self._start, found) + 2
        if begin < 2:
            begin = self._start
        run = bytes(buf[self._start : begin])
        self._start = end + 2
        self._find_from = 0
        shift = compact(buf, self._start)
        self._start -= shift
        self._pos = self._start
        return run

    def take_run(self, kinds: Sequence[ReplyKind]) -> bytes | None:
        """The bytes of the next ``len(kinds)`` replies, as one slice; None until all arrived.

        For a pool matching replies to a run of consecutive requests.  Call
        again with the same ``kinds`` after feeding more data.
        """
        while self._done < len(kinds):
            if not self._scan(kinds[self._done]):
                return None
            self._done += 1
        run = bytes(self._buf[self._start : self._pos])
        self._done = 0
        self._start = self._pos
        shift = compact(self._buf, self._start)
        self._start -= shift
        self._pos -= shift
        self._find_from = max(0, self._find_from - shift)
        return run

    def _scan(self, kind: ReplyKind) -> bool:
        """Advance ``_pos`` over one complete reply of ``kind``; False if incomplete."""
        buf = self._buf
        while True:
            if self._value_end >= 0:
                stop = self._value_end
                if len(buf) < stop:
                    return False
                if buf[stop - 2 : stop] != _CRLF:
                    raise MemcacheReplyError("VALUE data block not followed by CRLF")
                self._pos = stop
                self._value_end = -1
            pos = self._pos
            nl = buf.find(_CRLF, max(pos, self._find_from))
            if nl < 0:
                if len(buf) - pos > self.max_line_len:
                    raise MemcacheReplyError("reply line too long")
                self._find_from = max(pos, len(buf) - 1)
                return False
            self._find_from = 0
            if nl - pos > self.max_line_len:
                raise MemcacheReplyError("reply line too long")
            line = bytes(buf[pos:nl])
            if kind is ReplyKind.VALUES:
                if line.startswith(b"VALUE "):
                    size = _value_length(line)
                    if size < 0:
                        raise MemcacheReplyError(f"bad VALUE line {line[:80]!r}")
                    if size > self.max_value_len:
                        raise MemcacheReplyError(f"VALUE of {size} bytes is over the limit")
                    self._value_end = nl + 2 + size + 2
                    continue
                if line == b"END" or _is_error_line(line):
                    self._pos = nl + 2
                    return True
            elif (
                line in _LINES[kind]
                or _is_error_line(line)
                or (kind is ReplyKind.NUMBER and _NUMBER.fullmatch(line) is not None)
                or (kind is ReplyKind.VERSION and line.startswith(b"VERSION "))
            ):
                self._pos = nl + 2
                return True
            raise MemcacheReplyError(f"unexpected line {line[:80]!r} in a {kind.value} reply")


def is_error(reply: bytes) -> bool:
    """True for ``ERROR``, ``CLIENT_ERROR ...`` and ``SERVER_ERROR ...`` replies."""
    return reply.startswith(_ERROR_PREFIXES)


def split_values(reply: bytes) -> list[tuple[bytes, bytes]] | None:
    """A complete retrieval reply as ``(key, VALUE block)`` pairs, in order; else None.

    Each block is the whole ``VALUE ...\\r\\n<data>\\r\\n``, ready to be
    concatenated into another reply.  None for anything but well-formed
    VALUE blocks followed by exactly one final ``END`` (an error reply, for
    instance: check ``is_error`` first).
    """
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    end = len(reply)
    while True:
        nl = reply.find(_CRLF, pos)
        if nl < 0:
            return None
        line = reply[pos:nl]
        if line == b"END":
            return out if nl + 2 == end else None
        if not line.startswith(b"VALUE "):
            return None
        size = _value_length(line)
        stop = nl + 2 + size + 2
        if size < 0 or stop > end or reply[stop - 2 : stop] != _CRLF:
            return None
        out.append((line.split(b" ", 2)[1], reply[pos:stop]))
        pos = stop


def split_run(reply: bytes, kinds: Sequence[ReplyKind]) -> list[bytes] | None:
    """A delimited run's replies (``datastore.memcache``), one per request of ``kinds``.

    Framing only, for replies already known to be the run's whole reply: a
    retrieval runs to its ``END`` (or an error line), skipping VALUE data
    by length; every other kind is one line.  None if the bytes do not
    split into exactly ``len(kinds)`` replies.
    """
    out: list[bytes] = []
    at = 0
    end = len(reply)
    find = reply.find
    for kind in kinds:
        start = at
        if kind is ReplyKind.VALUES:
            while True:
                nl = find(_CRLF, at)
                if nl < 0:
                    return None
                if not reply.startswith(b"VALUE ", at):
                    at = nl + 2
                    break
                size = _value_length(reply[at:nl])
                at = nl + 2 + size + 2
                if size < 0 or at > end or reply[at - 2 : at] != _CRLF:
                    return None
        else:
            nl = find(_CRLF, at)
            if nl < 0:
                return None
            at = nl + 2
        out.append(reply[start:at])
    return out if at == end else None


def merge_gets(*parts: bytes, keys: Iterable[bytes] | None = None) -> bytes:
    """One retrieval reply, with one ``END``, from the replies of several fragments.

    Without ``keys`` the VALUE blocks are kept in the order of ``parts``.
    With ``keys`` (the client's keys, in its order) they are put in that
    order, as memcached would answer the unfragmented request; a key the
    client repeated gets its block again even if a fragment asked for it
    once.  Keys with no block (misses) are simply absent.

    Raises:
        ValueError: a part is not a well-formed retrieval reply (an error
            reply must be handled before merging).
    """
    split: list[list[tuple[bytes, bytes]]] = []
    for part in parts:
        values = split_values(part)
        if values is None:
            raise ValueError(f"not a retrieval reply: {part[:80]!r}")
        split.append(values)
    if keys is None:
        return b"".join(block for values in split for _, block in values) + END
    pending: dict[bytes, deque[bytes]] = {}
    for values in split:
        for key, block in values:
            pending.setdefault(key, deque()).append(block)
    last: dict[bytes, bytes] = {}
    out: list[bytes] = []
    for key in keys:
        queue = pending.get(key)
        if queue:
            last[key] = queue.popleft()
            out.append(last[key])
        elif key in last:
            out.append(last[key])
    out.append(END)
    return b"".join(out)


# -- encoders for replies the node makes itself ------------------------------


def _line(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return data.replace(b"\r", b" ").replace(b"\n", b" ")


def server_error(source_message: str | bytes) -> bytes:
    """``SERVER_ERROR <source> <message>``, Dynomite's form for its own errors.

    ``source_message`` includes the source, e.g. ``NodeError.PEER_HOST_NOT_CONNECTED.text``
    gives ``SERVER_ERROR Peer: Peer Node is not connected``.
    """
    return b"SERVER_ERROR " + _line(source_message) + _CRLF


def client_error(reason: str | bytes) -> bytes:
    """``CLIENT_ERROR <reason>``: the request was refused; the connection stays usable."""
    return b"CLIENT_ERROR " + _line(reason) + _CRLF


def version(text: str | bytes) -> bytes:
    """The ``VERSION <text>`` reply to ``version``."""
    return b"VERSION " + _line(text) + _CRLF


def to_memcache(reply: bytes) -> bytes:
    """``reply`` as a memcached client must see it: node-made RESP errors rewritten.

    Inside a node, errors it makes itself (a peer down, a timeout) are RESP
    lines, one per reply owed; memcached clients get each as
    ``SERVER_ERROR <source> <message>`` (Dynomite's form).  memcached's own
    replies never start with ``-`` and pass unchanged.
    """
    if reply[:1] != b"-":
        return reply
    out = []
    for line in reply.split(_CRLF):
        if line:
            text = line[5:] if line.startswith(b"-ERR ") else line[1:]
            out.append(b"SERVER_ERROR " + text + _CRLF)
    return b"".join(out)
