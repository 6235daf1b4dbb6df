"""Sans-IO framing of datastore replies, and encoders for node-made replies.

Theory of operation
-------------------
A proxy must forward replies *byte for byte*: ``+OK`` and ``$2\\r\\nOK``
decode to the same value in most clients but are different replies.  So
the hot path never decodes a reply; ``ReplyFramer`` only finds where each
top-level reply ends and hands back that slice of bytes::

    feed(chunk) -> take(3) -> b"+OK\\r\\n$3\\r\\nbar\\r\\n:1\\r\\n"   (or None: wait)

``take(n)`` returns the next n replies as one slice, because the pool
matches replies to *runs* of consecutive requests from one client batch;
``replies()`` splits them one by one for callers that need that.
``take_until(delimiter)`` skips framing altogether: when the sender ends
each run with a reply of known, unguessable bytes, one search finds the
run's end, however many and however large its replies are.

It understands RESP2 and RESP3 (maps, sets, pushes, attributes, doubles,
booleans, big numbers, verbatim and blob errors).  An aggregate that is
split across chunks keeps an explicit stack of "elements still to come", so
a reply of a million elements arriving in pieces is scanned once, not once
per piece.  Nesting deeper than ``MAX_DEPTH`` or a bulk above the configured
limit is a ``ReplyProtocolError``: the datastore connection is then broken
and must be closed.

The encoders build replies the node answers itself (PING, errors, HELLO,
COMMAND, ...) for a client speaking RESP2 or RESP3.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from .buffer import compact

__all__ = [
    "MAX_DEPTH",
    "REPLY_TYPES",
    "ReplyFramer",
    "ReplyProtocolError",
    "array",
    "bulk",
    "error",
    "integer",
    "is_error",
    "map_reply",
    "null",
    "simple",
    "split_replies",
]

MAX_DEPTH = 1024
_CRLF = b"\r\n"
#: Longest length header (type byte and up to 20 digits) accepted.
_MAX_HEADER = 24
#: Longest single-line reply (status, error, big number) accepted.
_MAX_LINE = 1024 * 1024

# First bytes of the reply types, grouped by how their length is found.
_LINE_TYPES = frozenset(b"+-:_,#(")  # one header line only
_BLOB_TYPES = frozenset(b"!=")  # length-prefixed bodies; '$' is handled first, apart
_AGGREGATE_TYPES = frozenset(b"*~>")  # header line with an element count
_PAIR_TYPES = frozenset(b"%|")  # header line with a pair count
#: Every byte a RESP2/RESP3 reply may start with.
REPLY_TYPES = _LINE_TYPES | _BLOB_TYPES | _AGGREGATE_TYPES | _PAIR_TYPES | frozenset(b"$")


class ReplyProtocolError(Exception):
    """The datastore sent bytes that are not RESP."""


class ReplyFramer:
    """Splits a datastore's byte stream into runs of complete top-level replies."""

    def __init__(self, max_bulk_len: int = 512 * 1024 * 1024) -> None:
        self.max_bulk_len = max_bulk_len
        self._buf = bytearray()
        self._start = 0  # start of the run being framed
        self._pos = 0  # where scanning resumes
        self._done = 0  # replies completed in the current run
        self._stack: list[int] = []  # elements still expected, per open aggregate

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned."""
        return len(self._buf) - self._start

    def feed(self, data: bytes | bytearray) -> None:
        self._buf += data

    def take(self, count: int) -> bytes | None:
        """The bytes of the next ``count`` replies, or None until all have arrived.

        A call that returns None remembers how far it got; call again with
        the same ``count`` after feeding more data.
        """
        buf = self._buf
        end = len(buf)
        pos = self._pos
        done = self._done
        stack = self._stack
        max_bulk = self.max_bulk_len
        try:
            while done < count and pos < end:
                if not stack:
                    # Fast loop over top-level simple replies, the usual case.
                    while done < count and pos < end:
                        kind = buf[pos]
                        nl = buf.find(_CRLF, pos)
                        if nl < 0 or nl - pos > _MAX_HEADER:
                            break
                        if kind == 0x24:
                            size = int(buf[pos + 1 : nl])
                            if size < 0:
                                pos = nl + 2
                            elif size > max_bulk or nl + size + 4 > end:
                                break
                            else:
                                pos = nl + size + 4
                        elif kind == 0x2B or kind == 0x3A:  # '+', ':'
                            pos = nl + 2
                        else:
                            break
                        done += 1
                    if done >= count or pos >= end:
                        break
                kind = buf[pos]
                nl = buf.find(_CRLF, pos)
                if nl < 0:
                    if end - pos > _MAX_LINE:
                        raise ReplyProtocolError("reply line too long")
                    break
                if kind in _LINE_TYPES:
                    pos = nl + 2
                elif nl - pos > _MAX_HEADER:
                    raise ReplyProtocolError("reply length header too long")
                elif kind == 0x24:  # '$', the most common reply element
                    size = int(buf[pos + 1 : nl])
                    if size < 0:
                        pos = nl + 2
                    elif size > max_bulk:
                        raise ReplyProtocolError(f"bulk reply of {size} bytes is over the limit")
                    elif nl + size + 4 > end:
                        break
                    else:
                        pos = nl + size + 4
                elif kind in _AGGREGATE_TYPES or kind in _PAIR_TYPES:
                    if kind == 0x3E and not stack:
                        raise ReplyProtocolError("unexpected out-of-band push reply")
                    size = int(buf[pos + 1 : nl])
                    if kind in _PAIR_TYPES:
                        size = 2 * size + (kind == 0x7C)  # '|' attribute: the reply follows
                    pos = nl + 2
                    if size > 0:
                        if len(stack) >= MAX_DEPTH:
                            raise ReplyProtocolError("reply nesting too deep")
                        stack.append(size)
                        continue
                elif kind in _BLOB_TYPES:  # '!' blob error, '=' verbatim string
                    size = int(buf[pos + 1 : nl])
                    if size > max_bulk or size < 0:
                        raise ReplyProtocolError(f"bad blob length {size}")
                    if nl + size + 4 > end:
                        break
                    pos = nl + size + 4
                else:
                    raise ReplyProtocolError(f"unexpected reply type byte {kind!r}")
                # One element is complete; close every aggregate it completes.
                while stack:
                    stack[-1] -= 1
                    if stack[-1]:
                        break
                    stack.pop()
                if not stack:
                    done += 1
        except ValueError:
            raise ReplyProtocolError(f"bad length in reply header at offset {pos}") from None
        self._pos = pos
        if done < count:
            self._done = done
            return None
        run = bytes(buf[self._start : pos])
        self._done = 0
        self._start = pos
        self._compact()
        return run

    def take_until(self, delimiter: bytes) -> bytes | None:
        """The bytes before the next ``delimiter``, which is consumed; None until it arrives.

        For a run of replies followed by a reply the caller can recognise
        (see ``DatastoreConnection``): one C-level search instead of framing
        every reply.  Call it only between runs, never in the middle of a
        ``take`` that returned None.
        """
        buf = self._buf
        at = buf.find(delimiter, self._pos)
        if at < 0:
            # Resume where a delimiter split across reads could start.
            self._pos = max(self._start, len(buf) - len(delimiter) + 1)
            return None
        run = bytes(buf[self._start : at])
        if run and run[0] not in REPLY_TYPES:
            # Not framed reply by reply, so only the head is checked: enough to
            # catch something that is not a RESP server at all.
            raise ReplyProtocolError(f"unexpected reply type byte {run[0]!r}")
        self._start = self._pos = at + len(delimiter)
        self._compact()
        return run

    def replies(self) -> list[bytes]:
        """Every complete reply buffered so far, one ``bytes`` each."""
        out: list[bytes] = []
        while (reply := self.take(1)) is not None:
            out.append(reply)
        return out

    def _compact(self) -> None:
        shift = compact(self._buf, self._start)
        self._start -= shift
        self._pos -= shift


def split_replies(data: bytes, count: int) -> list[bytes] | None:
    """``data`` (exactly ``count`` complete replies) as one ``bytes`` per reply; else None.

    Top-level simple replies (``+``, ``-``, ``:``, ``$``), the usual run, are
    found straight in ``data``; from the first other reply on, the rest goes
    through ``ReplyFramer``.
    """
    ends = reply_ends(data, count)
    if ends is None:
        return None
    out = []
    start = 0
    for stop in ends:
        out.append(data[start:stop])
        start = stop
    return out


def split_counts(data: bytes, counts: list[int]) -> list[bytes] | None:
    """``data`` cut after each ``counts[i]`` replies: the replies of each requester
    of a shared run, joined, without a ``bytes`` per reply; None unless exact."""
    ends = reply_ends(data, sum(counts))
    if ends is None:
        return None
    out = []
    start = at = 0
    for count in counts:
        at += count
        stop = ends[at - 1] if count else start
        out.append(data[start:stop])
        start = stop
    return out


def reply_ends(data: bytes, count: int) -> list[int] | None:
    """Where each of the ``count`` replies in ``data`` ends; None unless exactly that many."""
    ends: list[int] = []
    pos = 0
    end = len(data)
    find = data.find
    try:
        while pos < end and len(ends) < count:
            kind = data[pos]
            nl = find(_CRLF, pos)
            if nl < 0:
                return None
            if kind == 0x24:  # '$'
                size = int(data[pos + 1 : nl])
                stop = nl + 2 if size < 0 else nl + size + 4
                if stop > end or (size >= 0 and data[stop - 2 : stop] != _CRLF):
                    return None
            elif kind == 0x2B or kind == 0x3A or kind == 0x2D:  # '+', ':', '-'
                stop = nl + 2
            else:
                break
            ends.append(stop)
            pos = stop
    except ValueError:
        return None
    if pos < end and len(ends) < count:
        rest = _split_framed(data[pos:], count - len(ends))
        if rest is None:
            return None
        for reply in rest:
            pos += len(reply)
            ends.append(pos)
    elif pos < end:
        return None  # more than count replies
    return ends if len(ends) == count else None


def _split_framed(data: bytes, count: int) -> list[bytes] | None:
    framer = ReplyFramer()
    framer.feed(data)
    out: list[bytes] = []
    try:
        for _ in range(count):
            reply = framer.take(1)
            if reply is None:
                return None
            out.append(reply)
    except ReplyProtocolError:
        return None
    return out if not framer.buffered else None


#: memcached's error lines (no RESP reply starts with E, C or S).
_MEMCACHE_ERRORS = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")


def is_error(reply: bytes) -> bool:
    """True for ``-ERR ...``, RESP3 blob errors and memcached's three error lines.

    The cluster machinery is shared by both datastores (``datastore.memcache``):
    a replica's reply counts as an error in either protocol.
    """
    first = reply[:1]
    return first in (b"-", b"!") or (
        first in (b"E", b"C", b"S") and reply.startswith(_MEMCACHE_ERRORS)
    )


# -- encoders for replies the node makes itself ------------------------------


def simple(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return b"+" + data + _CRLF


def error(text: str | bytes) -> bytes:
    """``text`` includes its code, e.g. ``"ERR unknown command"``."""
    data = text.encode() if isinstance(text, str) else text
    return b"-" + data.replace(b"\r", b" ").replace(b"\n", b" ") + _CRLF


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(data: bytes | str | None, protocol: int = 2) -> bytes:
    if data is None:
        return null(protocol)
    raw = data.encode() if isinstance(data, str) else data
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


def null(protocol: int = 2) -> bytes:
    return b"_\r\n" if protocol == 3 else b"$-1\r\n"


def array(items: Iterable[bytes]) -> bytes:
    """``items`` are already-encoded replies."""
    parts = list(items)
    return b"*%d\r\n" % len(parts) + b"".join(parts)


def map_reply(pairs: Mapping[bytes, bytes], protocol: int = 2) -> bytes:
    """Keys and values are already-encoded replies; RESP2 flattens the map."""
    body = b"".join(k + v for k, v in pairs.items())
    if protocol == 3:
        return b"%%%d\r\n" % len(pairs) + body
    return b"*%d\r\n" % (2 * len(pairs)) + body
