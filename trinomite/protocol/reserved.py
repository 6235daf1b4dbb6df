"""The reserved key namespace: where trinomite keeps its own data, out of clients' reach.

Theory of operation
-------------------
Keys starting with ``RESERVED_PREFIX`` (``__trinomite:``) belong to the
node: versions and tombstones for read repair live there.  Clients can
neither name them nor see them:

* ``refusal(spec, args)``: a request whose key arguments include a reserved
  key gets ``-ERR`` (the command table says which arguments are keys, so a
  *value* that happens to contain the prefix is fine);
* ``hide(name, reply)`` filters the replies that list keys: ``KEYS`` (an
  array of keys), ``SCAN`` (a cursor and an array of keys) and
  ``RANDOMKEY`` (a reserved key reads as nil, so RANDOMKEY may answer nil
  while other keys exist, when it happens to draw a reserved one).  ``DBSIZE`` still counts
  them: it is one number, and the datastore alone knows it.

The dispatcher checks a request only when the prefix occurs in the round's
bytes at all (one C-level search), so requests that cannot name a reserved
key pay nothing more.

Pure code: no I/O.
"""

from __future__ import annotations

from . import replies as r
from .commands import LISTING_COMMANDS, CommandSpec, extract_keys
from .replies import ReplyFramer, ReplyProtocolError

__all__ = ["LISTING_COMMANDS", "RESERVED_PREFIX", "hide", "refusal"]

RESERVED_PREFIX = b"__trinomite:"
_REFUSED = r.error(
    "ERR keys starting with '__trinomite:' are reserved for trinomite's own metadata"
)


def refusal(spec: CommandSpec, args: list[bytes]) -> bytes | None:
    """The error for a request naming a reserved key, or None."""
    keys = extract_keys(spec, args)
    if keys and any(key.startswith(RESERVED_PREFIX) for key in keys):
        return _REFUSED
    return None


def _elements(body: bytes) -> list[bytes] | None:
    framer = ReplyFramer()
    framer.feed(body)
    try:
        return framer.replies()
    except ReplyProtocolError:
        return None


def _visible(elements: list[bytes]) -> list[bytes]:
    """Bulk-string elements whose key is not reserved."""
    kept = []
    for element in elements:
        _, _, rest = element.partition(b"\r\n")
        if not rest.startswith(RESERVED_PREFIX):
            kept.append(element)
    return kept


def _array(reply: bytes) -> list[bytes] | None:
    if reply[:1] not in (b"*", b"~"):
        return None
    return _elements(reply[reply.find(b"\r\n") + 2 :])


def hide(name: str, reply: bytes) -> bytes:
    """``reply`` to ``name`` (one of ``LISTING_COMMANDS``) without reserved keys."""
    if RESERVED_PREFIX not in reply:
        return reply
    if name == "randomkey":
        return b"$-1\r\n" if reply.startswith(b"$") else reply
    if name == "keys":
        elements = _array(reply)
        return reply if elements is None else r.array(_visible(elements))
    parts = _array(reply)  # SCAN: [cursor, [keys]]
    if parts is None or len(parts) != 2:
        return reply
    keys = _array(parts[1])
    if keys is None:
        return reply
    return r.array([parts[0], r.array(_visible(keys))])
