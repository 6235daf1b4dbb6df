"""Seed lists from seed providers, and Florida's HTTP answer: parsing only.

Theory of operation
-------------------
A seed provider (``gossip.providers``) fetches a *seed string* and this
module turns it into a ``SeedList``.  The string is Dynomite's
(``parse_seeds`` / ``gossip_update_seeds`` in ``src/dyn_gossip.c``)::

    host:port:rack:dc:tokens [name] | host:port:rack:dc:tokens [name] | ...

* Records are separated by ``|`` (Dynomite) or by line breaks (Florida's
  ``seeds.list`` before ``florida.js`` joins it with ``|``); both are
  accepted, whitespace around a record is dropped and empty records are
  skipped.  ``tokens`` is a comma-separated list, as in ``dyn_seeds``.
* One record is parsed by the very function that parses a ``dyn_seeds``
  entry (``config.values.SEEDS``), so a provider accepts exactly what the
  config file accepts, including trinomite's optional `` name`` suffix (the
  peer's TLS name) and ``[v6]:port:...`` hosts.  Hostnames stay as written
  and are resolved when the node connects, as for ``dyn_seeds``.
* Malformed input never raises.  Each bad record becomes a line in
  ``SeedList.problems`` and is skipped; the good ones are kept.  Limits:
  ``MAX_SEED_TEXT`` characters (a longer string is refused whole, never
  truncated into half a record), ``MAX_RECORDS`` records (the rest are
  reported once) and ``MAX_PROBLEMS`` problem lines.
* Two records for one ``host:port`` conflict; the smallest in canonical
  order is kept whatever the input order, so the result does not flap when
  a provider (DNS TXT answers, say) returns records in a different order.

``SeedList.digest`` is the SHA-256 of the sorted canonical records.  Dynomite
reports a change only when a hash of the raw string changes; hashing the
canonical form instead means reordering, spacing or ``|`` versus newline
never count as a change, while any real difference does.

``parse_florida_response`` reads a whole HTTP answer from Florida::

    <status line>\\r\\n<headers>\\r\\n\\r\\n<body = seed string>

The status line must pass one of Dynomite's two checks (``STATUS_CHECKS``):
``dev`` looks for ``200 OK\\r\\n``, ``v0.8`` for ``HTTP/1.1 200``.  Dynomite
searches the whole first read for them; here they must match the status
line itself, so ``HTTP/1.1 500 ...`` with a ``200 OK`` in a header fails.
This is hand-written rather than h11 because ``dev`` accepts status lines
h11 refuses (a bare ``200 OK``).  A ``Content-Length`` is honoured (a
shorter body is an error), chunked bodies are refused, and so is an answer
over ``MAX_FLORIDA_RESPONSE`` bytes.  Failures are returned as
``BadResponse`` values, never raised.

Pure code: no I/O, no clock, no trio.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable

import attrs

from trinomite.config.model import HostPort, Seed
from trinomite.config.values import SEEDS

__all__ = [
    "FLORIDA_PATH",
    "FLORIDA_REQUEST",
    "MAX_FLORIDA_RESPONSE",
    "MAX_PROBLEMS",
    "MAX_RECORDS",
    "MAX_SEED_TEXT",
    "SEEDS_CHECK_INTERVAL",
    "STATUS_CHECKS",
    "BadResponse",
    "SeedList",
    "build_florida_request",
    "canonical",
    "florida_response_complete",
    "parse_florida_response",
    "parse_seeds",
]

#: Longest seed string accepted, in characters (bytes for a ``bytes`` string).
MAX_SEED_TEXT = 64 * 1024
#: Most records taken from one seed string; the rest are reported and skipped.
MAX_RECORDS = 1024
#: Most problem lines kept for one seed string; one more line counts the rest.
MAX_PROBLEMS = 16
#: Largest Florida answer read, status line and headers included.
MAX_FLORIDA_RESPONSE = 1024 * 1024
#: Dynomite polls a seed provider at most this often (seconds; ``SEEDS_CHECK_INTERVAL``).
SEEDS_CHECK_INTERVAL = 30.0

#: Dynomite's Florida path and request (``FLORIDA_REQUEST`` in ``dyn_florida.c``).
FLORIDA_PATH = "/REST/v1/admin/get_seeds"
FLORIDA_REQUEST = (
    "GET /REST/v1/admin/get_seeds HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: HTMLGET 1.0\r\n\r\n"
)

_SEPARATORS = re.compile(r"[|\r\n]+")
#: How much of an offending record a problem line quotes.
_QUOTE = 60


def canonical(seed: Seed) -> str:
    """The one spelling of ``seed``: ``host:port:rack:dc:t1,t2[ name]``."""
    text = f"{seed.address}:{seed.rack}:{seed.dc}:{','.join(map(str, seed.tokens))}"
    return f"{text} {seed.name}" if seed.name else text


def _sorted(seeds: Iterable[Seed]) -> tuple[Seed, ...]:
    return tuple(sorted(seeds, key=canonical))


@attrs.frozen
class SeedList:
    """The peers a provider returned, in canonical order, with what was wrong.

    Two lists are equal when their seeds are; ``problems`` are not compared
    and do not enter ``digest``.
    """

    seeds: tuple[Seed, ...] = attrs.field(converter=_sorted)
    #: One line per rejected record or exceeded limit, for the log.
    problems: tuple[str, ...] = attrs.field(default=(), eq=False)
    #: SHA-256 (hex) of the sorted canonical records: equal lists, equal digests.
    digest: str = attrs.field(init=False)

    @digest.default
    def _digest(self) -> str:
        text = "\n".join(canonical(seed) for seed in self.seeds)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def records(self) -> tuple[str, ...]:
        """The canonical records, sorted (what ``digest`` hashes)."""
        return tuple(canonical(seed) for seed in self.seeds)

    def __len__(self) -> int:
        return len(self.seeds)


def _quote(record: str) -> str:
    return repr(record if len(record) <= _QUOTE else record[:_QUOTE] + "...")


def _parse_record(record: str) -> Seed | str:
    """One record to a ``Seed``, or the reason it is not one."""
    if "\ufffd" in record:
        return "is not valid UTF-8"
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in record):
        return "contains control characters"
    try:
        seed = SEEDS.convert(record)
    except ValueError as exc:
        return str(exc)
    assert isinstance(seed, Seed)
    return seed


class _Problems:
    """Problem lines, at most ``MAX_PROBLEMS`` of them plus a count of the rest."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.dropped = 0

    def add(self, line: str) -> None:
        if len(self.lines) < MAX_PROBLEMS:
            self.lines.append(line)
        else:
            self.dropped += 1

    def result(self) -> tuple[str, ...]:
        more = [f"... and {self.dropped} more problems"] if self.dropped else []
        return (*self.lines, *more)


def parse_seeds(text: str | bytes) -> SeedList:
    """Parse a seed string; bad records are reported in ``problems``, never raised.

    ``bytes`` are decoded as UTF-8; a record with an undecodable byte is
    rejected on its own.
    """
    if len(text) > MAX_SEED_TEXT:
        unit = "bytes" if isinstance(text, bytes) else "characters"
        return SeedList((), (f"seed string of {len(text)} {unit} is over {MAX_SEED_TEXT}",))
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    problems = _Problems()
    by_address: dict[HostPort, Seed] = {}
    records = [r for r in (part.strip() for part in _SEPARATORS.split(text)) if r]
    if len(records) > MAX_RECORDS:
        problems.add(f"{len(records) - MAX_RECORDS} records past the first {MAX_RECORDS} skipped")
    for number, record in enumerate(records[:MAX_RECORDS], start=1):
        parsed = _parse_record(record)
        if isinstance(parsed, str):
            problems.add(f"record {number} {_quote(record)} skipped: {parsed}")
            continue
        seen = by_address.get(parsed.address)
        if seen is None:
            by_address[parsed.address] = parsed
        elif seen == parsed:
            problems.add(f"record {number} {_quote(record)} skipped: a duplicate")
        else:
            kept, other = sorted((seen, parsed), key=canonical)
            by_address[parsed.address] = kept
            problems.add(
                f"records for {parsed.address} conflict: kept {canonical(kept)!r}, "
                f"skipped {canonical(other)!r}"
            )
    return SeedList(by_address.values(), problems.result())


# ---- Florida -----------------------------------------------------------------


@attrs.frozen
class BadResponse:
    """Why a Florida answer gives no seed string."""

    reason: str


def _dev_status(line: bytes) -> bool:
    """Dynomite dev: ``200 OK\\r\\n`` (here: the status line ends with the words ``200 OK``)."""
    return line == b"200 OK" or line.endswith(b" 200 OK")


def _v08_status(line: bytes) -> bool:
    """Dynomite v0.8: ``HTTP/1.1 200`` (here: the line starts with it, as a whole word)."""
    return line == b"HTTP/1.1 200" or line.startswith(b"HTTP/1.1 200 ")


#: The status-line checks of the Dynomite versions; a line passing any one is a success.
STATUS_CHECKS: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("dev", _dev_status),
    ("v0.8", _v08_status),
)


@attrs.frozen
class _Split:
    """An answer cut at its status line and its blank line."""

    status: bytes
    headers: dict[bytes, bytes]
    body: bytes


def _split(raw: bytes) -> _Split | None:
    """Status line, headers (lowercased names, first wins) and body; None if incomplete."""
    status, crlf, rest = raw.partition(b"\r\n")
    if not crlf:
        return None
    if rest.startswith(b"\r\n"):
        block, body = b"", rest[2:]
    else:
        block, end, body = rest.partition(b"\r\n\r\n")
        if not end:
            return None
    headers: dict[bytes, bytes] = {}
    for line in block.split(b"\r\n") if block else ():
        name, colon, value = line.partition(b":")
        if colon:
            headers.setdefault(name.strip().lower(), value.strip())
    return _Split(status, headers, body)


def _length(headers: dict[bytes, bytes]) -> int | BadResponse | None:
    """The Content-Length, None without one, or why it is unusable."""
    text = headers.get(b"content-length")
    if text is None:
        return None
    if not (text.isdigit() and text.isascii()):
        return BadResponse(f"Content-Length {_quote(text.decode('latin-1'))} is not a number")
    return int(text)


def parse_florida_response(raw: bytes) -> bytes | BadResponse:
    """The body of a whole Florida answer (read until EOF), or why there is none."""
    if len(raw) > MAX_FLORIDA_RESPONSE:
        return BadResponse(f"answer is over {MAX_FLORIDA_RESPONSE} bytes")
    if not raw:
        return BadResponse("connection closed without an answer")
    status = raw.partition(b"\r\n")[0]
    if status == raw:
        return BadResponse(f"no status line ending in CRLF: {_quote(raw.decode('latin-1'))}")
    if not any(check(status) for _, check in STATUS_CHECKS):
        return BadResponse(f"status {_quote(status.decode('latin-1'))} is not 200 OK")
    split = _split(raw)
    if split is None:
        return BadResponse("answer ends inside its headers (no blank line)")
    if split.headers.get(b"transfer-encoding", b"identity").lower() != b"identity":
        return BadResponse("chunked or encoded bodies are not supported")
    length = _length(split.headers)
    if isinstance(length, BadResponse):
        return length
    if length is None:
        return split.body
    if len(split.body) < length:
        return BadResponse(f"body is {len(split.body)} bytes, short of Content-Length {length}")
    return split.body[:length]


def florida_response_complete(raw: bytes) -> bool:
    """Whether ``raw`` holds a whole answer before EOF: headers, and as much
    body as their ``Content-Length`` announces.

    Florida closes the connection after answering an HTTP/1.0 request and
    EOF ends the read; this lets the reader stop early when a server that
    keeps the connection open has said how long its body is.
    """
    split = _split(raw)
    if split is None:
        return False
    length = _length(split.headers)
    return isinstance(length, int) and len(split.body) >= length


def build_florida_request(text: str, host: str) -> bytes:
    """The bytes to send for ``DYNOMITE_FLORIDA_REQUEST`` = ``text``.

    A ``text`` starting with ``/`` is a path (``florida.js`` reads the same
    variable as its path), sent as Dynomite's GET with ``Host: host``; for
    ``FLORIDA_PATH`` and host ``127.0.0.1`` that is ``FLORIDA_REQUEST``
    exactly.  Anything else is a whole request, sent as written except that
    bare line feeds become CRLF and a missing final blank line is added (an
    environment variable rarely carries CRs).  Raises ``ValueError`` for
    text that is not ASCII or has no request line.
    """
    if not text.isascii():
        raise ValueError("the Florida request must be ASCII")
    if text.startswith("/"):
        if any(c.isspace() for c in text):
            raise ValueError(f"the Florida path {_quote(text)} contains spaces")
        shown = f"[{host}]" if ":" in host else host
        text = f"GET {text} HTTP/1.0\r\nHost: {shown}\r\nUser-Agent: HTMLGET 1.0\r\n\r\n"
    if "\r\n" not in text:
        text = text.replace("\n", "\r\n")
    if not text.strip():
        raise ValueError("the Florida request is empty")
    text = text.rstrip("\r\n") + "\r\n\r\n"
    return text.encode("ascii")
