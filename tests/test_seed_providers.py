"""Seed providers: the seed-string and Florida parsers, each provider, and the poll loop.

Parsers are tested synchronously from tables.  Florida is served by a small
HTTP server inside the test (a trio listener on 127.0.0.1, port 0); DNS TXT
goes through a replaceable resolver and, once, through dnspython against a
UDP DNS server inside the test; the A path is the real ``getaddrinfo`` of
``localhost``.  Time-based tests run under ``autojump_clock``.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import pathlib
import socket
from collections.abc import Awaitable, Callable

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trinomite.config.model import DatastoreSpec, HostPort, NodeConfig, Seed
from trinomite.config.values import SEED_PROVIDERS, SEEDS
from trinomite.gossip import providers, seeds
from trinomite.gossip.providers import (
    DnsProvider,
    FloridaProvider,
    ProviderError,
    ProviderKind,
    RecordType,
    SimpleProvider,
    SystemResolver,
    poll_seeds,
    provider_from_config,
)
from trinomite.gossip.seeds import (
    FLORIDA_PATH,
    FLORIDA_REQUEST,
    MAX_FLORIDA_RESPONSE,
    MAX_PROBLEMS,
    MAX_RECORDS,
    MAX_SEED_TEXT,
    BadResponse,
    SeedList,
    build_florida_request,
    florida_response_complete,
    parse_florida_response,
    parse_seeds,
)

A = "10.0.0.1:8101:rack1:dc1:100"
B = "10.0.0.2:8101:rack2:dc1:200,300"
C = "node-c.example:8102:rack1:dc2:4294967295 peer-c"


# ---- parse_seeds ---------------------------------------------------------------


def test_seeds_module_is_pure():
    tree = ast.parse(pathlib.Path(seeds.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m == "trio" or m.startswith("trio.")}


def test_one_record_parses_like_a_dyn_seeds_entry():
    found = parse_seeds(C)
    assert found.seeds == SEEDS.parse([C])
    assert found.seeds == (Seed("node-c.example", 8102, "rack1", "dc2", (4294967295,), "peer-c"),)
    assert found.problems == ()


@pytest.mark.parametrize(
    "text",
    [
        f"{A}|{B}|{C}",
        f"{A}\n{B}\n{C}\n",
        f"{A}\r\n{B}\r\n{C}",
        f"  {A} |\n\n {B}||\t{C}\t|",
        f"|{C}\n{A}|{B}|",
    ],
)
def test_both_separators_whitespace_and_empty_records(text):
    found = parse_seeds(text)
    assert found.records == tuple(sorted([A, B, C]))
    assert found.problems == ()


def test_ipv6_hosts_and_several_tokens():
    found = parse_seeds("[::1]:8101:r:d:1,2,3|[fe80::2]:8101:r:d:4")
    assert [(s.host, s.tokens) for s in found.seeds] == [("::1", (1, 2, 3)), ("fe80::2", (4,))]
    assert found.records[0] == "[::1]:8101:r:d:1,2,3"


@pytest.mark.parametrize(
    ("record", "why"),
    [
        ("10.0.0.9:8101:rack:dc", "host:port:rack:dc:tokens"),
        ("10.0.0.9:8101:rack:dc:1:extra", "host:port:rack:dc:tokens"),
        ("10.0.0.9:0:rack:dc:1", "port from 1 to 65535"),
        ("10.0.0.9:70000:rack:dc:1", "port from 1 to 65535"),
        ("10.0.0.9:8101:rack:dc:4294967296", "tokens"),
        ("10.0.0.9:8101:rack:dc:x", "tokens"),
        ("10.0.0.9:8101:rack:dc:", "tokens"),
        ("10.0.0.9:8101::dc:1", "rack and dc"),
        ("10.0.0.9:8101:rack:dc:1 name extra", "host:port:rack:dc:tokens"),
        (":8101:rack:dc:1", "host:port:rack:dc:tokens"),
        ("[::1:8101:rack:dc:1", "host:port:rack:dc:tokens"),
        ("10.0.0.9:8101:ra\x00ck:dc:1", "control characters"),
    ],
)
def test_a_bad_record_is_reported_and_skipped(record, why):
    found = parse_seeds(f"{A}|{record}|{B}")
    assert found.records == (A, B)
    (problem,) = found.problems
    assert problem.startswith("record 2 ")
    assert why in problem


def test_undecodable_bytes_spoil_only_their_record():
    found = parse_seeds(A.encode() + b"|10.0.0.9:8101:r\xff:dc:1\n" + B.encode())
    assert found.records == (A, B)
    assert "not valid UTF-8" in found.problems[0]


def test_a_string_over_the_limit_is_refused_whole():
    text = "|".join([A] * (MAX_SEED_TEXT // len(A) + 1))
    found = parse_seeds(text)
    assert found.seeds == ()
    assert f"over {MAX_SEED_TEXT}" in found.problems[0]
    assert parse_seeds(text.encode()).problems[0].endswith(f"bytes is over {MAX_SEED_TEXT}")


def test_records_past_the_limit_are_counted_once():
    text = "|".join(f"10.{i // 256}.{i % 256}.1:8101:r:d:{i}" for i in range(MAX_RECORDS + 5))
    found = parse_seeds(text)
    assert len(found) == MAX_RECORDS
    assert found.problems == (f"5 records past the first {MAX_RECORDS} skipped",)


def test_problem_lines_are_bounded():
    found = parse_seeds("|".join(f"bad{i}" for i in range(MAX_PROBLEMS + 7)))
    assert len(found.problems) == MAX_PROBLEMS + 1
    assert found.problems[-1] == "... and 7 more problems"


def test_long_records_are_quoted_short():
    found = parse_seeds("x" * 5000)
    assert len(found.problems[0]) < 300


def test_digest_ignores_order_spacing_and_separators():
    one = parse_seeds(f"{A}|{B}|{C}")
    two = parse_seeds(f"\n {C}\n{A}\n\n{B} ")
    assert one == two
    assert one.digest == two.digest
    assert one.digest == SeedList(reversed(one.seeds)).digest
    assert parse_seeds(f"{A}|{B}").digest != one.digest
    assert parse_seeds(f"{A}|{B}|{C.replace('8102', '8103')}").digest != one.digest


def test_problems_do_not_change_equality_or_digest():
    clean = parse_seeds(f"{A}|{B}")
    dirty = parse_seeds(f"{A}|junk|{B}")
    assert dirty.problems
    assert (clean == dirty, clean.digest) == (True, dirty.digest)


def test_canonical_records_parse_back_to_the_same_list():
    found = parse_seeds(f"{A}|{B}|{C}|[::1]:8101:r:d:7")
    assert parse_seeds("|".join(found.records)) == found


def test_duplicates_and_conflicts_resolve_the_same_in_any_order():
    other = "10.0.0.1:8101:rack9:dc1:100"
    forward = parse_seeds(f"{A}|{other}|{A}")
    backward = parse_seeds(f"{A}|{A}|{other}")
    assert forward.records == backward.records == (A,)
    assert forward.digest == parse_seeds(f"{other}|{A}").digest
    assert any("duplicate" in p for p in backward.problems)
    assert any("conflict" in p and "10.0.0.1:8101" in p for p in forward.problems)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_no_input_raises(text):
    found = parse_seeds(text)
    assert all(isinstance(s, Seed) for s in found.seeds)
    assert len(found.problems) <= MAX_PROBLEMS + 1


@given(st.lists(st.sampled_from([A, B, C, "junk", ""]), max_size=8), st.randoms())
def test_digest_is_stable_under_any_reordering(records, rnd):
    shuffled = list(records)
    rnd.shuffle(shuffled)
    assert parse_seeds("|".join(records)).digest == parse_seeds("\n".join(shuffled)).digest


# ---- Florida answers -----------------------------------------------------------

BODY = f"{A}|{B}".encode()


@pytest.mark.parametrize(
    "status",
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.0 200 OK",  # dev check only
        b"200 OK",  # dev check only
        b"HTTP/1.1 200",  # v0.8 check only
        b"HTTP/1.1 200 Fine",  # v0.8 check only
    ],
)
def test_status_lines_either_dynomite_version_accepts(status):
    raw = status + b"\r\nContent-Type: application/json\r\n\r\n" + BODY
    assert parse_florida_response(raw) == BODY


@pytest.mark.parametrize(
    "status",
    [b"HTTP/1.1 404 Not Found", b"HTTP/1.0 500 Error", b"HTTP/1.1 2000 OK", b"HTTP/1.0 200 Fine"],
)
def test_other_status_lines_are_refused(status):
    answer = parse_florida_response(status + b"\r\nX-Note: 200 OK\r\n\r\n" + BODY)
    assert isinstance(answer, BadResponse)
    assert status.decode() in answer.reason


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "without an answer"),
        (b"HTTP/1.1 200 OK", "no status line"),
        (b"HTTP/1.1 200 OK\r\nServer: x\r\n", "inside its headers"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde", "chunked"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nshort", "short of Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nx", "not a number"),
        (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * MAX_FLORIDA_RESPONSE, "over"),
    ],
)
def test_bad_answers(raw, why):
    answer = parse_florida_response(raw)
    assert isinstance(answer, BadResponse)
    assert why in answer.reason


def test_bodies_with_and_without_headers_and_lengths():
    assert parse_florida_response(b"200 OK\r\n\r\n" + BODY) == BODY
    assert parse_florida_response(b"HTTP/1.1 200 OK\r\n\r\n") == b""
    assert parse_florida_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef") == b"abc"


def test_a_complete_answer_is_seen_before_eof_only_with_a_length():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    assert not florida_response_complete(head + b"abc")
    assert florida_response_complete(head + b"abcd")
    assert not florida_response_complete(b"HTTP/1.1 200 OK\r\n\r\nabcd")
    assert not florida_response_complete(b"HTTP/1.1 200 OK\r\nContent-Le")


def test_florida_requests():
    assert build_florida_request(FLORIDA_PATH, "127.0.0.1") == FLORIDA_REQUEST.encode()
    assert build_florida_request(FLORIDA_REQUEST, "10.1.1.1") == FLORIDA_REQUEST.encode()
    assert build_florida_request("/s", "::1").startswith(b"GET /s HTTP/1.0\r\nHost: [::1]\r\n")
    lf_only = "GET / HTTP/1.0\nHost: 127.0.0.1\n"
    assert build_florida_request(lf_only, "x") == b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    assert build_florida_request("GET / HTTP/1.0", "x") == b"GET / HTTP/1.0\r\n\r\n"
    for bad in ("GET /\u00e9 HTTP/1.0", "/a path", " \n "):
        with pytest.raises(ValueError, match="Florida"):
            build_florida_request(bad, "x")


# ---- the Florida provider, against a server in the test -------------------------

Handler = Callable[[trio.SocketStream], Awaitable[None]]


async def serve(nursery: trio.Nursery, handler: Handler) -> tuple[int, list[bytes]]:
    """Serve ``handler`` on 127.0.0.1; the port, and the requests received."""
    requests: list[bytes] = []

    async def run(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            with trio.move_on_after(5):
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    request += chunk
            requests.append(request)
            # The client stops reading an oversized answer.
            with contextlib.suppress(trio.BrokenResourceError):
                await handler(stream)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, run, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1], requests


def answering(raw: bytes) -> Handler:
    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(raw)

    return handler


async def test_florida_http_1_1_answer(nursery):
    body = b"10.0.0.1:8101:rack1:dc1:100\n10.0.0.2:8101:rack2:dc1:200,300\n"
    port, requests = await serve(nursery, answering(b"HTTP/1.1 200 OK\r\n\r\n" + body))
    found = await FloridaProvider("127.0.0.1", port).fetch()
    assert found.records == (A, B)
    assert requests == [FLORIDA_REQUEST.encode()]


@pytest.mark.parametrize("status", [b"200 OK", b"HTTP/1.0 200 OK"])
async def test_florida_dev_style_status_line(nursery, status):
    port, _ = await serve(nursery, answering(status + b"\r\nServer: florida\r\n\r\n" + BODY))
    assert (await FloridaProvider("127.0.0.1", port).fetch()).records == (A, B)


async def test_florida_404(nursery):
    port, _ = await serve(nursery, answering(b"HTTP/1.1 404 Not Found\r\n\r\nno such path"))
    with pytest.raises(ProviderError, match=r"florida_provider 127\.0\.0\.1:\d+: .*404"):
        await FloridaProvider("127.0.0.1", port).fetch()


async def test_florida_that_never_answers_times_out(nursery, autojump_clock):
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    port, _ = await serve(nursery, silent)
    begun = trio.current_time()
    with pytest.raises(ProviderError, match=r"no complete answer within 2\.5 s"):
        await FloridaProvider("127.0.0.1", port, timeout=2.5).fetch()
    assert trio.current_time() - begun == pytest.approx(2.5)


async def test_florida_oversized_answer(nursery):
    big = b"HTTP/1.1 200 OK\r\n\r\n" + (A.encode() + b"|") * (MAX_FLORIDA_RESPONSE // 20)
    port, _ = await serve(nursery, answering(big))
    with pytest.raises(ProviderError, match=f"over {MAX_FLORIDA_RESPONSE} bytes"):
        await FloridaProvider("127.0.0.1", port).fetch()


async def test_florida_empty_or_garbled_body_is_a_failure(nursery):
    port, _ = await serve(nursery, answering(b"HTTP/1.1 200 OK\r\n\r\n"))
    with pytest.raises(ProviderError, match="no valid seed: the answer is empty"):
        await FloridaProvider("127.0.0.1", port).fetch()
    port, _ = await serve(nursery, answering(b"HTTP/1.1 200 OK\r\n\r\n<html>oops</html>"))
    with pytest.raises(ProviderError, match="no valid seed: record 1 '<html>"):
        await FloridaProvider("127.0.0.1", port).fetch()


async def test_florida_with_a_length_need_not_close(nursery, autojump_clock):
    async def keep_open(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
        await trio.sleep_forever()

    port, _ = await serve(nursery, keep_open)
    begun = trio.current_time()
    assert (await FloridaProvider("127.0.0.1", port, timeout=10).fetch()).records == (A, B)
    assert trio.current_time() - begun < 10


async def test_florida_refused():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    await listeners[0].aclose()
    with pytest.raises(ProviderError, match="florida_provider"):
        await FloridaProvider("127.0.0.1", port).fetch()


async def test_florida_request_from_the_environment(nursery):
    port, requests = await serve(nursery, answering(b"HTTP/1.1 200 OK\r\n\r\n" + BODY))
    config = NodeConfig(
        listen=HostPort("127.0.0.1", 0),
        servers=(DatastoreSpec.embedded(),),
        dyn_seed_provider="florida_provider",
    )
    environ = {
        "DYNOMITE_FLORIDA_IP": "127.0.0.1",
        "DYNOMITE_FLORIDA_PORT": str(port),
        "DYNOMITE_FLORIDA_REQUEST": "/seeds",
    }
    provider = provider_from_config(config, environ)
    assert (await provider.fetch()).records == (A, B)
    assert requests[0].startswith(b"GET /seeds HTTP/1.0\r\nHost: 127.0.0.1\r\n")


# ---- DNS ---------------------------------------------------------------------


def txt_resolver(records: dict[str, list[str]]) -> providers.Resolver:
    async def resolve(name: str, rtype: RecordType) -> list[str]:
        await trio.lowlevel.checkpoint()
        if name not in records:
            raise ProviderError(f"TXT lookup of {name!r} failed: NXDOMAIN")
        return records[name]

    return resolve


async def test_dns_txt_records_are_joined_in_any_order():
    one = DnsProvider("seeds.test", RecordType.TXT, txt_resolver({"seeds.test": [f"{A}|{B}", C]}))
    two = DnsProvider("seeds.test", RecordType.TXT, txt_resolver({"seeds.test": [C, f"{B}|{A}"]}))
    found = await one.fetch()
    assert found.records == tuple(sorted([A, B, C]))
    assert found.digest == (await two.fetch()).digest


async def test_dns_failures():
    resolver = txt_resolver({"junk.test": ["v=spf1 -all"]})
    with pytest.raises(ProviderError, match=r"dns_provider TXT gone\.test: .*NXDOMAIN"):
        await DnsProvider("gone.test", RecordType.TXT, resolver).fetch()
    with pytest.raises(ProviderError, match="no valid seed: record 1 'v=spf1 -all'"):
        await DnsProvider("junk.test", RecordType.TXT, resolver).fetch()


async def test_dns_lookup_that_hangs_times_out(autojump_clock):
    async def hang(name: str, rtype: RecordType) -> list[str]:
        await trio.sleep_forever()

    with pytest.raises(ProviderError, match="no answer within 3 s"):
        await DnsProvider("slow.test", RecordType.TXT, hang, timeout=3).fetch()


async def test_real_a_lookup_of_localhost():
    assert "127.0.0.1" in await SystemResolver()("localhost", RecordType.A)
    with pytest.raises(ProviderError, match=r"found 127\.0\.0\.1.*TXT"):
        await DnsProvider("localhost", RecordType.A).fetch()


class FailingHostnames(trio.abc.HostnameResolver):
    """Makes every ``getaddrinfo`` of the run fail, as for a name that does not exist."""

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):
        await trio.lowlevel.checkpoint()
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def getnameinfo(self, sockaddr, flags):
        raise NotImplementedError


async def test_a_lookup_failure_is_a_provider_error():
    previous = trio.socket.set_custom_hostname_resolver(FailingHostnames())
    try:
        with pytest.raises(ProviderError, match=r"A lookup of 'gone\.test' failed: .*not known"):
            await SystemResolver()("gone.test", RecordType.A)
        with pytest.raises(ProviderError, match=r"dns_provider A gone\.test: A lookup"):
            await DnsProvider("gone.test", RecordType.A).fetch()
    finally:
        trio.socket.set_custom_hostname_resolver(previous)


async def serve_dns(nursery: trio.Nursery, zone: dict[str, list[list[bytes]]]) -> int:
    """A UDP DNS server on 127.0.0.1 answering TXT queries from ``zone``; its port."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def run() -> None:
        with sock:
            while True:
                data, peer = await sock.recvfrom(4096)
                query = dns.message.from_wire(data)
                reply = dns.message.make_response(query)
                question = query.question[0]
                records = zone.get(question.name.to_text())
                if records is None:
                    reply.set_rcode(dns.rcode.NXDOMAIN)
                else:
                    texts = [" ".join(f'"{s.decode()}"' for s in strings) for strings in records]
                    reply.answer.append(
                        dns.rrset.from_text_list(question.name, 60, "IN", "TXT", texts)
                    )
                await sock.sendto(reply.to_wire(), peer)

    nursery.start_soon(run)
    return sock.getsockname()[1]


async def test_real_txt_lookup_through_dnspython(nursery):
    # One record split in two character-strings, as long TXT data is published.
    port = await serve_dns(nursery, {"seeds.test.": [[A.encode() + b"|", B.encode()], [b"x"]]})
    resolver = SystemResolver(("127.0.0.1",), port)
    with trio.fail_after(10):
        assert sorted(await resolver("seeds.test.", RecordType.TXT)) == [f"{A}|{B}", "x"]
        found = await DnsProvider("seeds.test.", RecordType.TXT, resolver).fetch()
        assert found.records == (A, B)
        assert len(found.problems) == 1
        with pytest.raises(ProviderError, match=r"TXT lookup of 'gone\.test\.' failed"):
            await resolver("gone.test.", RecordType.TXT)


# ---- simple, and building from the config --------------------------------------


def config_for(provider: str, *dyn_seeds: Seed) -> NodeConfig:
    return NodeConfig(
        listen=HostPort("127.0.0.1", 0),
        servers=(DatastoreSpec.embedded(),),
        dyn_seeds=dyn_seeds,
        dyn_seed_provider=provider,
    )


def test_provider_kinds_are_the_config_values():
    assert {k.value for k in ProviderKind} == set(SEED_PROVIDERS)


async def test_simple_provider_returns_dyn_seeds():
    listed = SEEDS.parse([A, B])
    provider = provider_from_config(config_for("simple_provider", *listed), {})
    assert isinstance(provider, SimpleProvider)
    assert (await provider.fetch()).seeds == listed
    assert (await SimpleProvider(()).fetch()).seeds == ()


def test_providers_from_the_environment():
    florida = provider_from_config(config_for("florida_provider"), {"DYNOMITE_FLORIDA_PORT": ""})
    assert florida == FloridaProvider()
    assert str(florida) == "florida_provider 127.0.0.1:8080"
    assert florida.request == FLORIDA_REQUEST.encode()
    dns_default = provider_from_config(config_for("dns_provider"), {})
    assert isinstance(dns_default, DnsProvider)
    assert (dns_default.name, dns_default.rtype) == ("_dynomite.ec2-internal", RecordType.TXT)
    a_mode = provider_from_config(
        config_for("dns_provider"), {"DYNOMITE_DNS_NAME": "seeds.test", "DYNOMITE_DNS_TYPE": "a"}
    )
    assert str(a_mode) == "dns_provider A seeds.test"


@pytest.mark.parametrize(
    ("provider", "environ", "why"),
    [
        ("florida_provider", {"DYNOMITE_FLORIDA_PORT": "80x"}, "DYNOMITE_FLORIDA_PORT='80x'"),
        ("florida_provider", {"DYNOMITE_FLORIDA_PORT": "0"}, "from 1 to 65535"),
        ("florida_provider", {"DYNOMITE_FLORIDA_REQUEST": "GET /\u00e9"}, "ASCII"),
        ("dns_provider", {"DYNOMITE_DNS_TYPE": "AAAA"}, "not A or TXT"),
        ("gossip_provider", {}, "is not one of simple_provider"),
    ],
)
def test_bad_settings_are_refused(provider, environ, why):
    with pytest.raises(ProviderError, match=why):
        provider_from_config(config_for(provider), environ)


# ---- poll_seeds --------------------------------------------------------------


class Scripted:
    """A provider answering from a script; an exception in the script is raised."""

    def __init__(self, *script: SeedList | Exception) -> None:
        self.script = list(script)
        self.calls: list[float] = []

    def __str__(self) -> str:
        return "scripted"

    async def fetch(self) -> SeedList:
        self.calls.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        outcome = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


ONE = parse_seeds(f"{A}|{B}")
ONE_AGAIN = parse_seeds(f"{B}\n{A}")
TWO = parse_seeds(f"{A}|{C}")
DOWN = ProviderError("scripted: florida is down")


async def test_on_change_only_when_the_digest_changes(nursery, autojump_clock, caplog):
    caplog.set_level(logging.DEBUG, "trinomite.seeds")
    provider = Scripted(ONE, ONE_AGAIN, DOWN, DOWN, TWO, TWO, ONE)
    changes: list[SeedList] = []
    start = trio.current_time()
    await nursery.start(poll_seeds, provider, changes.append)
    assert changes == [ONE]
    await trio.sleep(30 * 6 + 1)
    assert changes == [ONE, TWO, ONE]
    assert [t - start for t in provider.calls] == [30.0 * i for i in range(7)]
    failures = [r for r in caplog.records if "seed poll failed" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.WARNING, logging.DEBUG]
    assert any("ok again" in r.getMessage() for r in caplog.records)


async def test_a_failing_first_poll_still_starts(nursery, autojump_clock):
    provider = Scripted(DOWN, ONE)
    changes: list[SeedList] = []
    await nursery.start(poll_seeds, provider, changes.append)
    assert changes == []
    await trio.sleep(31)
    assert changes == [ONE]


async def test_bugs_are_logged_with_a_traceback_and_survived(nursery, autojump_clock, caplog):
    provider = Scripted(RuntimeError("boom"), RuntimeError("boom"), ONE)
    changes: list[SeedList] = []
    await nursery.start(functools.partial(poll_seeds, interval=5), provider, changes.append)
    await trio.sleep(11)
    assert changes == [ONE]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "RuntimeError: boom" in warned[0].getMessage()
    assert warned[0].exc_info is not None


async def test_a_failing_on_change_gets_the_list_again(nursery, autojump_clock):
    offered: list[SeedList] = []

    def on_change(found: SeedList) -> None:
        offered.append(found)
        if len(offered) == 1:
            raise RuntimeError("not ready")

    await nursery.start(poll_seeds, Scripted(ONE), on_change)
    await trio.sleep(61)
    assert offered == [ONE, ONE]


async def test_problems_are_logged_when_they_change(nursery, autojump_clock, caplog):
    dirty = parse_seeds(f"{A}|junk")
    await nursery.start(poll_seeds, Scripted(dirty, dirty, ONE), lambda found: None)
    await trio.sleep(61)
    assert len([r for r in caplog.records if "'junk' skipped" in r.getMessage()]) == 1


async def test_cancellation_ends_the_loop(autojump_clock):
    with trio.move_on_after(100) as scope:
        await poll_seeds(Scripted(ONE), lambda found: None)
    assert scope.cancelled_caught


async def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval must be positive"):
        await poll_seeds(Scripted(ONE), lambda found: None, interval=0)


async def test_polling_a_real_florida(nursery, autojump_clock):
    answers = [b"HTTP/1.1 200 OK\r\n\r\n" + BODY, b"HTTP/1.1 200 OK\r\n\r\n" + f"{A}|{C}".encode()]

    async def handler(stream: trio.SocketStream) -> None:
        await stream.send_all(answers[0] if len(answers) == 1 else answers.pop(0))

    port, requests = await serve(nursery, handler)
    changes: list[SeedList] = []
    await nursery.start(poll_seeds, FloridaProvider("127.0.0.1", port), changes.append)
    await trio.sleep(65)
    assert changes == [ONE, TWO]
    assert len(requests) == 3
