"""The memcached ASCII commands, as one table (``protocol.memcache`` parses them).

Theory of operation
-------------------
Every command the parser knows is a row of a text table: its kind, whether
it reads or writes, the reply it gets and protocol.txt's syntax, from which
``McCommand`` derives its arity, key positions, numeric field checks, where
its data length sits and whether ``noreply`` is allowed.  Commands memcached
has but trinomite does not proxy are rows of a second table with the reason
the client is told.  The refusal lines are memcached's own texts.

Pure data: no I/O.
"""

from __future__ import annotations

import enum

import attrs

from .commands import Access
from .memcache_replies import ReplyKind

__all__ = ["COMMANDS", "McCommand", "McKind"]

# The reply lines of the parser's refusals (memcached's own texts).
_ERROR = b"ERROR\r\n"
_BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
_BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
_TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
_DELETE_USAGE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
#: Not memcached's (it closes silently): said before closing.
_LINE_TOO_LONG = b"CLIENT_ERROR line too long\r\n"


class McKind(enum.Enum):
    RETRIEVAL = "retrieval"  # get gets gat gats: keys routed, values merged
    STORAGE = "storage"  # set add replace append prepend cas: one key, a data block
    ARITHMETIC = "arithmetic"  # incr decr
    DELETE = "delete"
    TOUCH = "touch"
    LOCAL = "local"  # version verbosity quit: answered by the node itself
    UNSUPPORTED = "unsupported"  # known to memcached, refused with a clear error
    INVALID = "invalid"  # not a memcached command (or an empty line): ERROR


# -- the command table ---------------------------------------------------------

#: Supported commands.  ``syntax`` is protocol.txt's, after the command name:
#: ``<field>`` required, ``<key>+`` one or more keys, ``[word]`` an optional
#: literal, ``[...]`` anything (ignored).  ``access``: r read, w write, - none
#: (gat/gats change TTLs, so they go to every replica like writes).
#: ``errors`` names the message for a bad number: fmt = bad command line
#: format, exptime = invalid exptime argument, delta = invalid numeric delta
#: argument (memcached's texts; a bad key is always "bad command line format").
_TABLE = """
# name     kind        access  reply    errors   syntax
get        retrieval   r       values   fmt      <key>+
gets       retrieval   r       values   fmt      <key>+
gat        retrieval   w       values   exptime  <exptime> <key>+
gats       retrieval   w       values   exptime  <exptime> <key>+
set        storage     w       stored   fmt      <key> <flags> <exptime> <bytes> [noreply]
add        storage     w       stored   fmt      <key> <flags> <exptime> <bytes> [noreply]
replace    storage     w       stored   fmt      <key> <flags> <exptime> <bytes> [noreply]
append     storage     w       stored   fmt      <key> <flags> <exptime> <bytes> [noreply]
prepend    storage     w       stored   fmt      <key> <flags> <exptime> <bytes> [noreply]
cas        storage     w       stored   fmt      <key> <flags> <exptime> <bytes> <cas> [noreply]
incr       arithmetic  w       number   delta    <key> <delta> [noreply]
decr       arithmetic  w       number   delta    <key> <delta> [noreply]
delete     delete      w       deleted  fmt      <key> [0] [noreply]
touch      touch       w       touched  exptime  <key> <exptime> [noreply]
version    local       -       version  fmt      [...]
verbosity  local       -       ok       fmt      <level> [noreply]
quit       local       -       -        fmt      [...]
"""

#: Commands memcached 1.6 knows that trinomite refuses (connection kept).
#: ``noreply``: y if memcached honours a trailing noreply (then the refusal
#: is not sent either); ``data``: token index of a data block length (ms).
_UNSUPPORTED_TABLE = """
# name           noreply  data  reason
flush_all        y        -     admin
cache_memlimit   y        -     admin
slabs            y        -     admin
lru              y        -     admin
watch            y        -     admin
extstore         y        -     admin
refresh_certs    y        -     admin
stats            n        -     admin
lru_crawler      n        -     admin
shutdown         n        -     admin
misbehave        n        -     admin
debugtime        n        -     admin
mg               n        -     meta
ms               n        2     meta
md               n        -     meta
ma               n        -     meta
mn               n        -     meta
me               n        -     meta
bget             n        -     legacy
"""

_REASONS = {
    "admin": "server administration is not proxied; talk to the datastore directly",
    "meta": "meta commands are not supported by trinomite yet; use the classic commands",
    "legacy": "the legacy bget command is not supported; use get",
}

_ERROR_TEXTS = {
    "fmt": _BAD_FORMAT,
    "exptime": b"CLIENT_ERROR invalid exptime argument\r\n",
    "delta": b"CLIENT_ERROR invalid numeric delta argument\r\n",
}

#: Numeric fields: (signed, minimum, maximum).  ``key`` and ``bytes`` are apart.
_NUMBERS: dict[str, tuple[bool, int, int]] = {
    "flags": (False, 0, 2**32 - 1),
    "exptime": (True, -(2**31), 2**31 - 1),
    "cas": (False, 0, 2**64 - 1),
    "delta": (False, 0, 2**64 - 1),
    "level": (False, 0, 2**32 - 1),
}


@attrs.frozen
class McCommand:
    """One row of the command table, with what the parser derives from its syntax."""

    name: bytes
    kind: McKind
    access: Access
    reply: ReplyKind | None
    syntax: str
    #: Token counts, the command name included (``max_tokens`` None: unbounded).
    min_tokens: int
    max_tokens: int | None
    #: (token index, field name) of every field checked, in order.
    fields: tuple[tuple[int, str], ...]
    #: Index of the (first) key token, and whether every token from there is a key.
    key_index: int | None
    many_keys: bool
    #: Index of the data block length token, if the command has a data block.
    data_index: int | None
    noreply: bool
    #: Optional literals other than noreply (delete's legacy ``0``): memcached
    #: then checks the tail strictly, where it otherwise ignores an odd last token.
    strict_tail: tuple[bytes, ...]
    numeric_error: bytes
    #: For UNSUPPORTED commands: the refusal sent instead.
    refusal: bytes | None = None


def _command(name: str, kind: str, access: str, reply: str, errors: str, syntax: str) -> McCommand:
    fields: list[str] = []
    optional: list[bytes] = []
    many = anything = False
    for part in syntax.split():
        if part == "[...]":
            anything = True
        elif part.startswith("["):
            optional.append(part[1:-1].encode())
        elif part.endswith("+"):
            many = True
            fields.append(part[1:-2])
        else:
            fields.append(part[1:-1])
    min_tokens = 1 + len(fields)
    return McCommand(
        name=name.encode(),
        kind=McKind(kind),
        access=Access(access),
        reply=None if reply == "-" else ReplyKind(reply),
        syntax=syntax,
        min_tokens=min_tokens,
        max_tokens=None if many or anything else min_tokens + len(optional),
        fields=tuple((i + 1, f) for i, f in enumerate(fields) if f != "bytes"),
        key_index=1 + fields.index("key") if "key" in fields else None,
        many_keys=many,
        data_index=1 + fields.index("bytes") if "bytes" in fields else None,
        noreply=b"noreply" in optional,
        strict_tail=tuple(optional) if any(o != b"noreply" for o in optional) else (),
        numeric_error=_ERROR_TEXTS[errors],
    )


def _unsupported(name: str, noreply: str, data: str, reason: str) -> McCommand:
    why = _REASONS[reason]
    return McCommand(
        name=name.encode(),
        kind=McKind.UNSUPPORTED,
        access=Access.NONE,
        reply=None,
        syntax="[...]",
        min_tokens=1,
        max_tokens=None,
        fields=(),
        key_index=None,
        many_keys=False,
        data_index=None if data == "-" else int(data),
        noreply=noreply == "y",
        strict_tail=(),
        numeric_error=_BAD_FORMAT,
        refusal=f"CLIENT_ERROR unsupported command '{name}': {why}\r\n".encode(),
    )


def _rows(table: str) -> list[list[str]]:
    return [line.split(None, 5) for line in table.splitlines() if line and line[0] != "#"]


#: Every command the parser knows, by its exact (lower-case) name.
COMMANDS: dict[bytes, McCommand] = {
    spec.name: spec
    for spec in [_command(*row) for row in _rows(_TABLE)]
    + [_unsupported(*row) for row in _rows(_UNSUPPORTED_TABLE)]
}
