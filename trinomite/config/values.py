"""Parsers of raw config values: what each key accepts, and its "expected ..." phrase.

Theory of operation
-------------------
A ``Parser`` turns the raw YAML value of one key (a string, or a list of
strings for list-valued keys) into a ``NodeConfig`` field value, or raises
``Invalid`` with the phrase that completes "expected ...".  Numbers follow
Dynomite's "0 means unset" rule unless ``zero_is_default=False``
(``UNSET`` is returned for 0).  ``config.keys`` pairs each key with one of
these; nothing here knows the key table.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping

import attrs

from trinomite.config.model import (
    USER_FORMAT,
    ClientUser,
    Consistency,
    DatastoreSpec,
    HostPort,
    Seed,
    UnixPath,
)
from trinomite.ring.hashing import NAMES

#: Dynomite keeps most numbers in a C ``int``.
INT_MAX = 2**31 - 1
#: Tokens are one 32-bit word (``parse_dyn_token``).
UINT32_MAX = 2**32 - 1


class Unset(enum.Enum):
    """Type of ``UNSET``: a numeric 0, which Dynomite reads as "use the default"."""

    UNSET = "unset"


UNSET = Unset.UNSET


class Invalid(ValueError):
    """A parser rejected a value.

    ``expected`` completes the sentence "expected ..."; ``index`` is the
    offending list item, when the value is a list.
    """

    def __init__(self, expected: str, *, index: int | None = None) -> None:
        super().__init__(f"expected {expected}")
        self.expected = expected
        self.index = index


@attrs.frozen
class Parser:
    """How one key's raw value (a string, or a list of strings) becomes a field value."""

    #: What a valid value looks like; completes "expected ..." in errors and docs.
    expected: str
    #: One non-empty scalar (or one list item) to its value; raises ``Invalid``.
    convert: Callable[[str], object]
    #: The value is a YAML list of scalars, converted item by item into a tuple.
    many: bool = False
    min_items: int = 0
    max_items: int | None = None
    #: Completes "expected ..." when a list has more than ``max_items`` entries.
    too_many: str = ""
    #: Allowed (low, high) for numbers, for docs and tests.
    bounds: tuple[int, int] | None = None

    @property
    def described(self) -> str:
        """``expected``, for the whole value (a list, for list-valued keys)."""
        return f"a list of entries like {self.expected}" if self.many else self.expected

    def parse(self, raw: object) -> object:
        """Convert ``raw``; raise ``Invalid`` when its shape or its text is wrong."""
        if not self.many:
            if not isinstance(raw, str) or not raw:
                raise Invalid(self.expected)
            return self.convert(raw)
        if not isinstance(raw, list):
            raise Invalid(self.described)
        values = []
        for index, item in enumerate(raw):
            if self.max_items is not None and index >= self.max_items:
                raise Invalid(self.too_many, index=index)
            if not isinstance(item, str) or not item:
                raise Invalid(self.expected, index=index)
            try:
                values.append(self.convert(item))
            except Invalid as exc:
                raise Invalid(exc.expected, index=index) from None
        if len(values) < self.min_items:
            raise Invalid(f"at least {self.min_items} entry like {self.expected}")
        return tuple(values)


# ---- value parsers ---------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]+")


def number(
    lo: int,
    hi: int,
    unit: str = "",
    *,
    multiple_of: int = 1,
    zero_is_default: bool = True,
) -> Parser:
    """A decimal integer in ``lo..hi``; 0 gives ``UNSET`` when ``zero_is_default``."""
    noun = f"a whole number of {unit}" if unit else "a whole number"
    span = f"{noun} from {lo} to {hi}"
    if multiple_of > 1:
        span += f" that is a multiple of {multiple_of}"
    if zero_is_default:
        span += " (0 means the default)"

    def convert(text: str) -> int | Unset:
        if not _INTEGER.fullmatch(text):
            raise Invalid(noun)
        value = int(text)
        if value == 0 and zero_is_default:
            return UNSET
        if not lo <= value <= hi or value % multiple_of:
            raise Invalid(span)
        return value

    return Parser(span, convert, bounds=(lo, hi))


def milliseconds() -> Parser:
    return number(1, INT_MAX, "milliseconds")


def _flag(text: str) -> bool:
    if text not in ("true", "false"):
        raise Invalid("true or false (lowercase)")
    return text == "true"


FLAG = Parser("true or false (lowercase)", _flag)


def choice(table: Mapping[str, object], *, any_case: bool = False) -> Parser:
    """One of ``table``'s names, exactly (no prefix matching, unlike Dynomite)."""
    expected = "one of " + ", ".join(table) + (" (any case)" if any_case else "")
    folded = {name.casefold() if any_case else name: value for name, value in table.items()}

    def convert(text: str) -> object:
        try:
            return folded[text.casefold() if any_case else text]
        except KeyError:
            raise Invalid(expected) from None

    return Parser(expected, convert)


def _text(text: str) -> str:
    return text


TEXT = Parser("a non-empty string", _text)
PATH = Parser("a file path", _text)

_NAME = re.compile(r"[^\s:]+")


def _name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise Invalid("a name without spaces or ':'")
    return text


NAME = Parser("a name without spaces or ':'", _name)


def _hash_tag(text: str) -> str:
    if len(text) != 2:
        raise Invalid('exactly two characters, like "{}" (quoted)')
    return text


def _user(text: str) -> ClientUser:
    try:
        return ClientUser.parse(text)
    except ValueError:
        raise Invalid(USER_FORMAT) from None


USERS = Parser(USER_FORMAT, _user, many=True)

HASH_TAG = Parser('exactly two characters, like "{}" (quoted)', _hash_tag)

_TOKENS = f"comma-separated whole numbers from 0 to {UINT32_MAX}"


def _tokens(text: str) -> tuple[int, ...]:
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and part.isascii() for part in parts):
        raise Invalid(_TOKENS)
    tokens = tuple(int(part) for part in parts)
    if max(tokens) > UINT32_MAX:
        raise Invalid(_TOKENS)
    return tokens


TOKENS = Parser(_TOKENS, _tokens)


def _port(text: str, lo: int, expected: str) -> int:
    if not (text.isdigit() and text.isascii()) or not lo <= int(text) <= 65535:
        raise Invalid(expected)
    return int(text)


def _split_host(text: str, expected: str) -> tuple[str, list[str]]:
    """``host:a:b`` or ``[v6]:a:b`` -> (host, [a, b]); IPv6 hosts need brackets."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise Invalid(expected)
        fields = rest[1:].split(":")
    else:
        host, *fields = text.split(":")
    if not host or any(c.isspace() for c in host):
        raise Invalid(expected)
    return host, fields


def _split_name(text: str, expected: str) -> tuple[str, str | None]:
    """``spec [name]`` -> (spec, name)."""
    words = text.split()
    if len(words) > 2:
        raise Invalid(expected)
    return words[0], (words[1] if len(words) == 2 else None)


_HOST_PORT = "host:port with a port from 0 to 65535 (IPv6 as [addr]:port)"


def _host_port(text: str) -> HostPort:
    host, fields = _split_host(text, _HOST_PORT)
    if len(fields) != 1:
        raise Invalid(_HOST_PORT)
    return HostPort(host, _port(fields[0], 0, _HOST_PORT))


HOST_PORT = Parser(_HOST_PORT, _host_port)

_LISTEN = f"{_HOST_PORT}, or a /unix/socket/path"


def _listen(text: str) -> HostPort | UnixPath:
    if text.startswith("/"):
        return UnixPath(text)
    try:
        return _host_port(text)
    except Invalid:
        raise Invalid(_LISTEN) from None


LISTEN = Parser(_LISTEN, _listen)

_SERVER = "host:port:weight [name], /unix/path:weight [name] or embedded:weight [name]"


def _server(text: str) -> DatastoreSpec:
    spec, name = _split_name(text, _SERVER)
    if spec.startswith("/"):
        path, colon, weight = spec.rpartition(":")
        if not colon or path == "/":
            raise Invalid(_SERVER)
        return DatastoreSpec("unix", UnixPath(path), _weight(weight), name)
    host, fields = _split_host(spec, _SERVER)
    if host == "embedded" and len(fields) == 1:
        return DatastoreSpec("embedded", None, _weight(fields[0]), name)
    if len(fields) != 2:
        raise Invalid(_SERVER)
    address = HostPort(host, _port(fields[0], 1, f"{_SERVER} with a port from 1 to 65535"))
    return DatastoreSpec("tcp", address, _weight(fields[1]), name)


def _weight(text: str) -> int:
    if not (text.isdigit() and text.isascii()) or int(text) > INT_MAX:
        raise Invalid(f"{_SERVER} with a whole-number weight (mandatory, ignored)")
    return int(text)


SERVERS = Parser(
    _SERVER,
    _server,
    many=True,
    min_items=1,
    max_items=1,
    too_many="a single entry (one datastore per node, as in Dynomite)",
)

_SEED = "host:port:rack:dc:tokens [name]"


def _seed(text: str) -> Seed:
    spec, name = _split_name(text, _SEED)
    host, fields = _split_host(spec, _SEED)
    if len(fields) != 4:
        raise Invalid(_SEED)
    port_text, rack, dc, tokens = fields
    port = _port(port_text, 1, f"{_SEED} with a port from 1 to 65535")
    if not _NAME.fullmatch(rack) or not _NAME.fullmatch(dc):
        raise Invalid(f"{_SEED} with non-empty rack and dc names")
    try:
        return Seed(host, port, rack, dc, _tokens(tokens), name)
    except Invalid:
        raise Invalid(f"{_SEED} with tokens as {_TOKENS}") from None


SEEDS = Parser(_SEED, _seed, many=True)


#: Deprecated Dynomite keys without a field: the loader drops them unparsed,
#: so any value, scalar or list, is accepted (as by ``conf_set_deprecated``).
ANYTHING = Parser("any value", _text)

#: ``hash`` names, as in Dynomite's ``hash_strings`` (``murmur3`` is a stub there).
HASHES = NAMES
SEED_PROVIDERS = ("simple_provider", "florida_provider", "dns_provider")
CONSISTENCY = choice({c.value: c for c in Consistency}, any_case=True)
CONNECTIONS = number(1, 255, "connections")
