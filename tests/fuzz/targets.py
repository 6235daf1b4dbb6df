"""The fuzz targets: pure functions of one input that raise only on a real bug.

Theory of operation
-------------------
Each target feeds one input to a parser that reads untrusted bytes, split
at a point taken from its first byte into two pieces (so the incremental
paths run as well as whole reads), and checks an invariant:

* ``requests`` (clients' RESP and inline requests, with and without the
  pre-auth limits): every parsed request, encoded again and parsed by a
  fresh parser, gives the same arguments;
* ``frames`` (peers' Dynomite frames): every frame encoded again parses to
  the same frame;
* ``replies`` (the datastore's RESP2/RESP3 replies): the replies taken are
  exactly the bytes consumed, in order;
* ``mc_requests`` (memcached clients' ASCII requests): the requests' bytes
  occur in the input in order, and each accepted request's bytes parsed
  alone by a fresh parser give the same request;
* ``mc_replies`` (memcached's replies, each of the kind the input's first
  byte picks): the replies taken are exactly the bytes consumed, in order.

Anything but a parser's own documented error is a failure.  They are run
by atheris (``fuzz_parsers.py``, coverage-guided) and by Hypothesis
(``tests/test_fuzz.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from trinomite.protocol.memcache import MemcacheLimits, MemcacheRequestParser
from trinomite.protocol.memcache_replies import MemcacheReplyError, MemcacheReplyFramer, ReplyKind
from trinomite.protocol.peer import FrameParser
from trinomite.protocol.replies import ReplyFramer, ReplyProtocolError
from trinomite.protocol.requests import Limits, RequestParser, encode_command

#: Small limits, so that the limit paths are reached by small inputs too.
LIMITS = Limits(max_bulk_len=4096, max_multibulk_len=64, max_inline_len=256)


def _halves(data: bytes) -> tuple[bytes, bytes]:
    if not data:
        return b"", b""
    cut = data[0] % (len(data) + 1)
    return data[1 : cut + 1], data[cut + 1 :]


def requests(data: bytes) -> None:
    for limits in (LIMITS, attrs.evolve(LIMITS, unauthenticated=True)):
        parser = RequestParser(limits)
        out: list[list[bytes]] = []
        for piece in _halves(data):
            parser.feed(piece)
            out += parser.parse()
        for args in out:
            again = RequestParser(Limits())
            again.feed(encode_command(args))
            assert again.parse() == [args], args


def frames(data: bytes) -> None:
    parser = FrameParser(max_payload_len=4096)
    found = []
    for piece in _halves(data):
        parser.feed(piece)
        found += parser.frames()
    for frame in found:
        again = FrameParser(max_payload_len=4096)
        again.feed(frame.encode())
        assert again.frames() == [frame], frame


def replies(data: bytes) -> None:
    framer = ReplyFramer(4096)
    taken = b""
    try:
        for piece in _halves(data):
            framer.feed(piece)
            while (reply := framer.take(1)) is not None:
                taken += reply
    except ReplyProtocolError:
        return
    body = data[1:]
    assert body.startswith(taken), (taken, body)


MC_LIMITS = MemcacheLimits(max_line_len=256, max_retrieval_line_len=512, max_item_size=4096)


def mc_requests(data: bytes) -> None:
    parser = MemcacheRequestParser(MC_LIMITS)
    out = []
    for piece in _halves(data):
        parser.feed(piece)
        out += parser.parse()
    body = data[1:]
    at = 0  # requests' bytes come in order (a refused data block is skipped between)
    for request in out:
        found = body.find(request.raw, at)
        assert found >= 0, (request, body)
        at = found + len(request.raw)
        if request.error is None:
            again = MemcacheRequestParser(MC_LIMITS)
            again.feed(request.raw)
            assert again.parse() == [request], request


_KINDS = list(ReplyKind)


def mc_replies(data: bytes) -> None:
    if not data:
        return
    kind = _KINDS[data[0] % len(_KINDS)]
    framer = MemcacheReplyFramer(4096)
    taken = b""
    try:
        for piece in _halves(data[1:]):
            framer.feed(piece)
            while (reply := framer.take(kind)) is not None:
                taken += reply
    except MemcacheReplyError:
        return
    assert data[2:].startswith(taken), (taken, data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "requests": requests,
    "frames": frames,
    "replies": replies,
    "mc_requests": mc_requests,
    "mc_replies": mc_replies,
}
