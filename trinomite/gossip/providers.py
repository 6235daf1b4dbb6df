"""Seed providers: where a node's peer list comes from, and the task that polls it.

Theory of operation
-------------------
``dyn_seed_provider`` names one of three providers (``ProviderKind``); each
has one method, ``await provider.fetch() -> SeedList``, which either returns
the peers it found or raises ``ProviderError`` with a message for the log.
All parsing is in ``gossip.seeds``; this module only does the I/O::

    simple_provider   dyn_seeds, as configured
    florida_provider  HTTP/1.0 GET to DYNOMITE_FLORIDA_IP:DYNOMITE_FLORIDA_PORT,
                      read to EOF -> parse_florida_response -> parse_seeds
    dns_provider      DYNOMITE_DNS_NAME, DYNOMITE_DNS_TYPE (TXT or A)
                      TXT: each record's text, records joined by '|' -> parse_seeds
                      A:   looked up, but yields no seeds (see below)

``poll_seeds`` runs a provider every ``interval`` seconds (Dynomite's
``SEEDS_CHECK_INTERVAL``, 30 s) and calls ``on_change(seed_list)`` only when
the list's digest differs from the last one delivered.  A failed poll is
logged, at WARNING the first time a given error is seen and at DEBUG while
it repeats (as ``net.links`` does for connects), and is retried at the next
interval; the last good list stays in force.  Only ``Cancelled`` leaves the
loop.

Differences from Dynomite, each deliberate:

* Every fetch is bounded: ``timeout`` seconds (a cancel scope) and
  ``MAX_FLORIDA_RESPONSE`` bytes.  Dynomite blocks its gossip thread on
  ``connect``/``recv`` with no timeout.
* An answer that yields no valid seed is a failure, not an empty peer list:
  an empty or garbled answer from a broken Florida or DNS server must not
  look like "the cluster has no peers".  Dynomite's dev branch also refuses
  an empty Florida body ("No seeds were found in Florida response").
* DNS TXT: Dynomite keeps only the first character-string of the *last* TXT
  record (``mbuf_rewind`` in its loop over answers, 255 bytes at most).
  Here a record's strings are concatenated (RFC 7208's rule for long TXT
  data) and several records are joined with ``|``, so a seed list may be
  spread over records; the digest ignores their order.
* DNS A: Dynomite's A mode copies each A record's rdata as if it were a TXT
  string (a length byte, then text), so a 4-byte IPv4 address never gives
  a parsable seed string (code reading, ``dns_get_seeds``).  An A record
  cannot carry port, rack, dc and tokens, so no seed list can come from
  one.  Trinomite keeps the mode for compatibility: it does the real A
  lookup (``getaddrinfo``, which also reads ``/etc/hosts``) and fails with a
  message naming the addresses found and pointing to TXT records, which
  ``poll_seeds`` logs once.  The node keeps its ``dyn_seeds``.
* ``DYNOMITE_DNS_TYPE`` other than A or TXT (any case) and an invalid
  ``DYNOMITE_FLORIDA_PORT`` are refused by ``provider_from_config``; Dynomite
  falls back to TXT and to ``atoi``'s value.  ``DYNOMITE_FLORIDA_IP`` may be
  a hostname (Dynomite: IPv4 literal only).
* ``DYNOMITE_FLORIDA_REQUEST`` may be a path, as ``florida.js`` reads it
  (``seeds.build_florida_request``).

Defaults of the environment variables (``ENVIRONMENT``) are Dynomite's
compile-time macros in ``src/seedsprovider/dyn_florida.c`` (``FLORIDA_IP``,
``FLORIDA_PORT``, ``FLORIDA_REQUEST``) and ``dyn_dns.c`` (``DNS_TXT_NAME``);
the reference notes do not list them.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import NoReturn, Protocol

import attrs
import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.rdtypes.ANY.TXT
import dns.resolver
import trio

from trinomite.config.model import NodeConfig, Seed

from .seeds import (
    FLORIDA_PATH,
    MAX_FLORIDA_RESPONSE,
    SEEDS_CHECK_INTERVAL,
    BadResponse,
    SeedList,
    build_florida_request,
    florida_response_complete,
    parse_florida_response,
    parse_seeds,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "ENVIRONMENT",
    "DnsProvider",
    "FloridaProvider",
    "ProviderError",
    "ProviderKind",
    "RecordType",
    "Resolver",
    "SeedProvider",
    "SimpleProvider",
    "SystemResolver",
    "poll_seeds",
    "provider_from_config",
]

log = logging.getLogger("trinomite.seeds")

#: Longest one fetch may take, connect or lookup included (seconds).
DEFAULT_TIMEOUT = 5.0
_READ_SIZE = 64 * 1024


class ProviderError(Exception):
    """A seed provider could not produce a seed list; the message says why."""


class ProviderKind(enum.Enum):
    """``dyn_seed_provider`` values (``config.values.SEED_PROVIDERS``)."""

    SIMPLE = "simple_provider"
    FLORIDA = "florida_provider"
    DNS = "dns_provider"


class RecordType(enum.Enum):
    """``DYNOMITE_DNS_TYPE``: which DNS records are asked for."""

    TXT = "TXT"
    A = "A"


#: Every environment variable read, with Dynomite's default for it.
ENVIRONMENT: Mapping[str, str] = {
    "DYNOMITE_FLORIDA_IP": "127.0.0.1",
    "DYNOMITE_FLORIDA_PORT": "8080",
    "DYNOMITE_FLORIDA_REQUEST": FLORIDA_PATH,
    "DYNOMITE_DNS_NAME": "_dynomite.ec2-internal",
    "DYNOMITE_DNS_TYPE": RecordType.TXT.value,
}


class SeedProvider(Protocol):
    """Anything that can fetch a seed list (``str(provider)`` names it in logs)."""

    async def fetch(self) -> SeedList:
        """The current seed list; raises ``ProviderError`` when there is none."""
        ...


def _require_seeds(found: SeedList, source: str) -> SeedList:
    """``found``, unless it holds no seed at all (then a failure, with the reasons)."""
    if found.seeds:
        return found
    why = "; ".join(found.problems) if found.problems else "the answer is empty"
    raise ProviderError(f"{source}: no valid seed: {why}")


# ---- simple ------------------------------------------------------------------


def _seed_tuple(seeds: Iterable[Seed]) -> tuple[Seed, ...]:
    return tuple(seeds)


@attrs.frozen
class SimpleProvider:
    """``simple_provider``: the configured ``dyn_seeds``, unchanged (possibly none)."""

    seeds: tuple[Seed, ...] = attrs.field(converter=_seed_tuple)

    def __str__(self) -> str:
        return ProviderKind.SIMPLE.value

    async def fetch(self) -> SeedList:
        await trio.lowlevel.checkpoint()
        return SeedList(self.seeds)


# ---- florida -----------------------------------------------------------------


def _port(text: str) -> int:
    if not (text.isdigit() and text.isascii()) or not 1 <= int(text) <= 65535:
        raise ProviderError(f"DYNOMITE_FLORIDA_PORT={text!r} is not a port from 1 to 65535")
    return int(text)


@attrs.frozen
class FloridaProvider:
    """``florida_provider``: an HTTP/1.0 GET to a Florida server, read until EOF.

    ``request_text`` is ``DYNOMITE_FLORIDA_REQUEST``: a path, or a whole
    request (``seeds.build_florida_request``).  The defaults are Dynomite's:
    ``127.0.0.1:8080``, ``GET /REST/v1/admin/get_seeds``.  Raises
    ``ProviderError`` when ``request_text`` cannot be sent.
    """

    host: str = ENVIRONMENT["DYNOMITE_FLORIDA_IP"]
    port: int = int(ENVIRONMENT["DYNOMITE_FLORIDA_PORT"])
    request_text: str = FLORIDA_PATH
    timeout: float = DEFAULT_TIMEOUT
    #: The bytes sent, built from ``request_text`` and ``host``.
    request: bytes = attrs.field(init=False)

    @request.default
    def _request(self) -> bytes:
        try:
            return build_florida_request(self.request_text, self.host)
        except ValueError as exc:
            raise ProviderError(f"DYNOMITE_FLORIDA_REQUEST: {exc}") from None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{ProviderKind.FLORIDA.value} {host}:{self.port}"

    async def fetch(self) -> SeedList:
        """Ask Florida once.

        Error handling: a refused or broken connection, a timeout, an answer
        that is not 200 OK or is too large, and a body without one valid
        seed each raise ``ProviderError``.

        Resource handling: the connection is closed before returning, also
        when cancelled.
        """
        try:
            with trio.fail_after(self.timeout):
                raw = await self._exchange()
        except trio.TooSlowError:
            raise ProviderError(f"{self}: no complete answer within {self.timeout} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise ProviderError(f"{self}: {str(exc) or type(exc).__name__}") from exc
        answer = parse_florida_response(raw)
        if isinstance(answer, BadResponse):
            raise ProviderError(f"{self}: {answer.reason}")
        return _require_seeds(parse_seeds(answer), str(self))

    async def _exchange(self) -> bytes:
        """Send the request; read to EOF, to the end of a Content-Length body, or past the bound."""
        received = bytearray()
        async with await trio.open_tcp_stream(self.host, self.port) as stream:
            await stream.send_all(self.request)
            while len(received) <= MAX_FLORIDA_RESPONSE:
                wanted = min(_READ_SIZE, MAX_FLORIDA_RESPONSE + 1 - len(received))
                data = await stream.receive_some(wanted)
                if not data:
                    break
                received += data
                if florida_response_complete(bytes(received)):
                    break
        return bytes(received)


# ---- DNS ---------------------------------------------------------------------

#: ``await resolver(name, rtype)``: the records' texts (TXT) or addresses (A).
#: Raises ``ProviderError`` when the name cannot be looked up.
Resolver = Callable[[str, RecordType], Awaitable[Sequence[str]]]


@attrs.frozen
class SystemResolver:
    """The real lookups: TXT through dnspython, A through ``getaddrinfo``.

    TXT queries go to ``nameservers`` on ``port``, or, when ``nameservers``
    is empty, to those of ``/etc/resolv.conf`` (read at each lookup, so a
    changed file is seen).  A lookups use the system resolver (nsswitch,
    ``/etc/hosts``) and IPv4 only, as Dynomite's ``T_A``.
    """

    nameservers: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    port: int = 53

    async def __call__(self, name: str, rtype: RecordType) -> Sequence[str]:
        if rtype is RecordType.A:
            return await self._addresses(name)
        return await self._texts(name)

    async def _addresses(self, name: str) -> list[str]:
        try:
            found = await trio.socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            raise ProviderError(f"A lookup of {name!r} failed: {exc}") from exc
        return list(dict.fromkeys(str(entry[4][0]) for entry in found))

    async def _texts(self, name: str) -> list[str]:
        try:
            resolver = dns.asyncresolver.Resolver(configure=not self.nameservers)
            if self.nameservers:
                resolver.nameservers = list(self.nameservers)
                resolver.port = self.port
            answer = await resolver.resolve(
                name, "TXT", backend=dns.asyncbackend.get_backend("trio")
            )
        except dns.exception.DNSException as exc:
            raise ProviderError(f"TXT lookup of {name!r} failed: {exc}") from exc
        texts = []
        for rdata in answer:
            assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
            texts.append(b"".join(rdata.strings).decode("utf-8", errors="replace"))
        return texts


@attrs.frozen
class DnsProvider:
    """``dns_provider``: the seed string from DNS records of ``name``.

    ``rtype`` TXT: every TXT record is (part of) a seed string.  ``rtype``
    A: the lookup is real, but A records cannot carry seeds, so every fetch
    fails with a message saying so (see the module doc).  ``resolver`` does
    the lookup; tests pass their own.
    """

    name: str = ENVIRONMENT["DYNOMITE_DNS_NAME"]
    rtype: RecordType = RecordType.TXT
    resolver: Resolver = attrs.field(factory=SystemResolver)
    timeout: float = DEFAULT_TIMEOUT

    def __str__(self) -> str:
        return f"{ProviderKind.DNS.value} {self.rtype.value} {self.name}"

    async def fetch(self) -> SeedList:
        """Look ``name`` up once; ``ProviderError`` on failure, timeout or no valid seed."""
        try:
            with trio.fail_after(self.timeout):
                found = await self.resolver(self.name, self.rtype)
        except trio.TooSlowError:
            raise ProviderError(f"{self}: no answer within {self.timeout} s") from None
        except ProviderError as exc:
            raise ProviderError(f"{self}: {exc}") from exc
        if self.rtype is RecordType.A:
            shown = ", ".join(found[:8]) + (", ..." if len(found) > 8 else "")
            raise ProviderError(
                f"{self}: found {shown or 'no address'}, but A records hold only addresses, "
                "not host:port:rack:dc:tokens seeds; publish the seeds as TXT records "
                "(DYNOMITE_DNS_TYPE=TXT)"
            )
        return _require_seeds(parse_seeds("|".join(found)), str(self))


# ---- from the config ---------------------------------------------------------


def _setting(environ: Mapping[str, str], name: str) -> str:
    """An environment variable, or its Dynomite default when unset or empty."""
    return environ.get(name) or ENVIRONMENT[name]


def _simple(config: NodeConfig, environ: Mapping[str, str]) -> SeedProvider:
    return SimpleProvider(config.dyn_seeds)


def _florida(config: NodeConfig, environ: Mapping[str, str]) -> SeedProvider:
    return FloridaProvider(
        host=_setting(environ, "DYNOMITE_FLORIDA_IP"),
        port=_port(_setting(environ, "DYNOMITE_FLORIDA_PORT")),
        request_text=_setting(environ, "DYNOMITE_FLORIDA_REQUEST"),
    )


def _dns(config: NodeConfig, environ: Mapping[str, str]) -> SeedProvider:
    kind = _setting(environ, "DYNOMITE_DNS_TYPE")
    try:
        rtype = RecordType(kind.upper())
    except ValueError:
        raise ProviderError(f"DYNOMITE_DNS_TYPE={kind!r} is not A or TXT") from None
    return DnsProvider(_setting(environ, "DYNOMITE_DNS_NAME"), rtype)


_BUILDERS: Mapping[ProviderKind, Callable[[NodeConfig, Mapping[str, str]], SeedProvider]] = {
    ProviderKind.SIMPLE: _simple,
    ProviderKind.FLORIDA: _florida,
    ProviderKind.DNS: _dns,
}


def provider_from_config(
    config: NodeConfig, environ: Mapping[str, str] = os.environ
) -> SeedProvider:
    """The provider ``config.dyn_seed_provider`` names, set up from ``environ``.

    Raises ``ProviderError`` for an unknown provider name or an invalid
    environment variable (the config loader already refuses unknown names).
    """
    try:
        kind = ProviderKind(config.dyn_seed_provider)
    except ValueError:
        raise ProviderError(
            f"dyn_seed_provider {config.dyn_seed_provider!r} is not one of "
            + ", ".join(k.value for k in ProviderKind)
        ) from None
    return _BUILDERS[kind](config, environ)


# ---- polling -----------------------------------------------------------------


async def poll_seeds(
    provider: SeedProvider,
    on_change: Callable[[SeedList], None],
    *,
    interval: float = SEEDS_CHECK_INTERVAL,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Fetch from ``provider`` every ``interval`` seconds; report each new list.

    ``on_change(seed_list)`` is called, synchronously, with the first list
    fetched and then whenever the digest differs from the last list it
    accepted.  ``task_status.started()`` is called after the first attempt,
    successful or not, so a starter knows the first list has been
    delivered if there was one.  Polls start ``interval`` apart (start to
    start), each bounded by the provider's own timeout.

    Error handling: a failed fetch (``ProviderError``, or any other
    ``Exception`` as a bug, with its traceback) is logged, WARNING the first
    time and DEBUG while the same error repeats, and retried at the next
    interval.  An exception from ``on_change`` is logged the same way and
    the list is offered again at the next poll.  ``problems`` of a list are
    logged when they differ from the last ones logged.  Only cancellation
    ends the loop.
    """
    if not interval > 0:
        raise ValueError(f"interval must be positive, not {interval!r}")
    delivered: str | None = None
    last_error = ""
    last_problems: tuple[str, ...] = ()
    started = False

    def failed(reason: str, *, trace: bool) -> None:
        nonlocal last_error
        again = reason == last_error
        last_error = reason
        level = logging.DEBUG if again else logging.WARNING
        log.log(level, "seed poll failed: %s", reason, exc_info=trace and not again)

    while True:
        next_poll = trio.current_time() + interval
        try:
            found = await provider.fetch()
        except ProviderError as exc:
            failed(str(exc), trace=False)
        except Exception as exc:
            failed(f"{provider}: {type(exc).__name__}: {exc}", trace=True)
        else:
            if found.problems != last_problems:
                last_problems = found.problems
                for problem in found.problems:
                    log.warning("%s: %s", provider, problem)
            if found.digest != delivered:
                try:
                    on_change(found)
                except Exception as exc:
                    failed(f"on_change: {type(exc).__name__}: {exc}", trace=True)
                else:
                    delivered = found.digest
                    log.info("%s: %d seeds (digest %s)", provider, len(found), found.digest[:12])
            if last_error and found.digest == delivered:
                log.info("%s: seed poll ok again", provider)
                last_error = ""
        if not started:
            started = True
            task_status.started()
        await trio.sleep_until(next_poll)
