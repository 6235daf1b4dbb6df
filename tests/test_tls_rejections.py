"""Peer links that must not come up: refused fast, logged with the peer, and counted.

Each case is its own test, with real in-process nodes (or a real node and a
hand-made TLS peer built on the stdlib ``ssl`` module), on loopback.  A
refused link is retried with backoff, so the tests wait, bounded, for the
counters to move (``wait_until``) and then check the link is still down,
the log names the peer and the reason, and /info and /metrics count it.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trustme

from trinomite.config.model import SecureServerOption
from trinomite.net.sockets import LeanSocketStream
from trinomite.protocol.peer import FrameParser, MessageType, encode_frame
from trinomite.testing.cluster import Cluster, ClusterNode, open_cluster
from trinomite.testing.tls import ClusterCertificates, write_pair
from trinomite.tls import certs
from trinomite.tls.stream import TlsHandshakeError, TlsStream

from .clusterutil import WAIT, in_thread, peer_name, wait_until

PAIR = {"dc1": {"r1": 1}, "dc2": {"r1": 1}}
DATACENTER = SecureServerOption.DATACENTER


def node_of(member: ClusterNode):
    assert member.node is not None, member.name
    return member.node


def link_failures(member: ClusterNode, other: ClusterNode) -> int:
    pool = node_of(member).peers.pools[peer_name(other)]
    return sum(c.tls_handshake_failures for c in pool.connections)


def inbound_failures(member: ClusterNode) -> int:
    return sum(node_of(member).tls.inbound_failures.values())


async def wait_for(check: Callable[[], bool], what: str) -> None:
    async def holds() -> bool:
        return check()

    await wait_until(holds, what)


def assert_counted(member: ClusterNode, other: ClusterNode, *, down: bool = True) -> None:
    """The refused link to ``other`` shows in /info and /metrics (and is down)."""
    node = node_of(member)
    if down:
        assert not node.peers.is_up(peer_name(other))
    info = node.admin.info()
    assert info["tls"]["peers"][peer_name(other)]["handshake_failures"] >= 1
    assert info["dyn_o_mite"]["tls_handshake_failures"] >= 1
    metrics = node.admin.metrics_text()
    line = next(
        row
        for row in metrics.splitlines()
        if row.startswith("trinomite_peer_link_tls_handshake_failures{")
        and f'peer="{peer_name(other)}"' in row
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1


@asynccontextmanager
async def lone_tls_node(authority: ClusterCertificates) -> AsyncIterator[ClusterNode]:
    """One node, ``secure_server_option: all``, for hand-made callers to meet."""
    async with open_cluster(
        {"dc1": {"r1": 1}},
        per_node=authority,
        secure_server_option=SecureServerOption.ALL,
        wait_connected=False,
    ) as cluster:
        yield cluster.node("dc1", "r1")


def plaintext_dc2(tmp_path) -> ClusterCertificates:
    """Certificates for every node, and dc2/r1 set to secure no link at all."""
    authority = ClusterCertificates(tmp_path)
    authority.override[("dc2", "r1", 0)] = lambda member: {
        "secure_server_option": SecureServerOption.NONE
    }
    return authority


async def both_refused(cluster: Cluster) -> tuple[ClusterNode, ClusterNode]:
    a, b = cluster.node("dc1", "r1"), cluster.node("dc2", "r1")
    await wait_for(
        lambda: link_failures(a, b) >= 1 and link_failures(b, a) >= 1,
        "both dialers to count a failed handshake",
    )
    await wait_for(
        lambda: inbound_failures(a) >= 1 and inbound_failures(b) >= 1,
        "both receivers to count a refused caller",
    )
    assert_counted(a, b)
    assert_counted(b, a)
    return a, b


async def test_certificate_from_another_ca_is_refused_both_ways(tmp_path, caplog):
    authority = ClusterCertificates(tmp_path)
    # dc2 holds a certificate from a CA of its own (made by trustme, not trinomite).
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other-ca.crt"))
    issued = other.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "foreign.crt"))
    issued.private_key_pem.write_to_path(str(tmp_path / "foreign.key"))

    def foreign(member: ClusterNode) -> dict[str, str]:
        return {
            "tls_cert_file": str(tmp_path / "foreign.crt"),
            "tls_key_file": str(tmp_path / "foreign.key"),
            "tls_ca_file": str(tmp_path / "other-ca.crt"),
        }

    authority.override[("dc2", "r1", 0)] = foreign
    with trio.fail_after(WAIT):
        async with open_cluster(
            PAIR, per_node=authority, secure_server_option=DATACENTER, wait_connected=False
        ) as cluster:
            _a, b = await both_refused(cluster)
    assert f"peer {peer_name(b)}#0: connect failed: TLS handshake failed" in caplog.text
    assert "certificate verify failed" in caplog.text
    assert "refused: TLS handshake failed" in caplog.text  # the receiving side, with address


async def test_peer_certificate_that_names_another_host_is_refused(tmp_path, caplog):
    authority = ClusterCertificates(tmp_path)

    def elsewhere(member: ClusterNode) -> dict[str, str]:
        issued = certs.issue(authority.ca, "elsewhere", ["127.0.0.2", "other.example"])
        return write_pair(tmp_path, "elsewhere", issued)

    authority.override[("dc2", "r1", 0)] = elsewhere
    with trio.fail_after(WAIT):
        async with open_cluster(
            PAIR, per_node=authority, secure_server_option=DATACENTER, wait_connected=False
        ) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc2", "r1")
            await wait_for(lambda: link_failures(a, b) >= 1, "dc1 to refuse dc2's certificate")
            assert_counted(a, b)
            # The other direction is fine: a receiver checks the CA, not the address.
            await wait_for(lambda: node_of(b).peers.is_up(peer_name(a)), "dc2 -> dc1 up")
    assert "certificate names 127.0.0.2, other.example, not 127.0.0.1" in caplog.text


async def test_plaintext_node_meeting_a_tls_node_fails_fast_both_ways(tmp_path, caplog):
    authority = plaintext_dc2(tmp_path)
    with trio.fail_after(WAIT):
        async with open_cluster(
            PAIR,
            per_node=authority,
            secure_server_option=SecureServerOption.ALL,
            tls_handshake_timeout=300,
            wait_connected=False,
        ) as cluster:
            await both_refused(cluster)
            # A caller that says nothing at all is refused when the handshake times out.
            host, port = peer_name(cluster.node("dc1", "r1")).rsplit(":", 1)
            silent = await trio.open_tcp_stream(host, int(port))
            said = b""
            while chunk := await silent.receive_some(4096):  # closed after the 0.3 s timeout
                said += chunk
            await silent.aclose()
            assert b"sent no TLS handshake within 0.3s" in said  # the refusal frame's reason
    # dc2's plaintext link to dc1 opened with its hello frame; dc1 told it why
    # it refuses plaintext before closing.
    assert "refused by the peer: " in caplog.text
    assert "sent plaintext, but secure_server_option: all here requires TLS" in caplog.text
    assert "sent no TLS handshake within 0.3s, but secure_server_option: all" in caplog.text
    # dc1 started TLS towards dc2, which does not secure any link.
    assert "started TLS, but this node does not secure any peer link" in caplog.text
    assert "is secure_server_option the same on both nodes?" in caplog.text


async def test_plaintext_request_across_datacenters_is_refused_with_the_reason(tmp_path, caplog):
    authority = plaintext_dc2(tmp_path)
    with trio.fail_after(WAIT):
        async with open_cluster(
            PAIR, per_node=authority, secure_server_option=DATACENTER, wait_connected=False
        ) as cluster:
            a, b = cluster.node("dc1", "r1"), cluster.node("dc2", "r1")
            # All nodes share 127.0.0.1, so dc1 cannot tell a silent plaintext caller
            # from a same-DC one; its first frame (the link's hello) says it comes
            # from another DC, so the link is refused as soon as it opens.
            client = b.client()
            await in_thread(client.set, "k", "v")  # acked in dc2 (DC_ONE); dc1 refuses
            await wait_for(lambda: link_failures(b, a) >= 1, "dc2 to hear the refusal")
            await wait_for(lambda: inbound_failures(a) >= 1, "dc1 to count it")
            assert_counted(b, a, down=False)  # it reconnects, to be refused again
            # The link logs the loss once it has unwound, after counting it.
            reason = "refused by the peer: a peer in another datacenter sent plaintext"
            await wait_for(lambda: reason in caplog.text, "dc2 to log the reason")


async def test_plaintext_frame_on_a_tls_link_gets_a_refusal_frame(tmp_path):
    with trio.fail_after(WAIT):
        async with lone_tls_node(ClusterCertificates(tmp_path)) as member:
            stream = await trio.open_tcp_stream("127.0.0.1", member.peer_port)
            ping = b"*1\r\n$4\r\nPING\r\n"
            await stream.send_all(encode_frame(7, MessageType.REQ, ping, same_dc=True))
            parser = FrameParser()
            received = b""
            while chunk := await stream.receive_some(4096):
                received += chunk
            parser.feed(received)
            (frame,) = parser.frames()
            assert frame.type is MessageType.PARSE_ERROR
            assert b"sent plaintext, but secure_server_option: all here requires TLS" in (
                frame.payload
            )
            assert inbound_failures(member) == 1
            assert node_of(member).admin.info()["tls"]["inbound_handshake_failures"] == {
                "127.0.0.1": 1
            }


def _client_context(issued: certs.Issued, directory, **versions: ssl.TLSVersion):
    paths = write_pair(directory, "caller", issued)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(paths["tls_cert_file"], paths["tls_key_file"])
    for name, version in versions.items():
        setattr(context, name, version)
    return context


async def _handshake(port: int, context: ssl.SSLContext) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    sock = stream.socket.dup()
    await stream.aclose()
    tls = TlsStream(
        LeanSocketStream(socket.socket(fileno=sock.detach())), context, server_side=False
    )
    try:
        await tls.handshake(confirm=True)
    except TlsHandshakeError as exc:
        return str(exc)
    finally:
        await tls.aclose()
    return ""


async def test_tls_below_1_2_is_refused(tmp_path, caplog):
    authority = ClusterCertificates(tmp_path)
    with trio.fail_after(WAIT):
        async with lone_tls_node(authority) as member:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                context = _client_context(
                    authority.issue(member),
                    tmp_path,
                    minimum_version=ssl.TLSVersion.TLSv1,
                    maximum_version=ssl.TLSVersion.TLSv1_1,
                )
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
            assert await _handshake(member.peer_port, context)
            await wait_for(lambda: inbound_failures(member) == 1, "the node to count it")
    assert "refused: TLS handshake failed" in caplog.text
    assert "unsupported protocol" in caplog.text or "no protocols available" in caplog.text


async def test_expired_peer_certificate_is_refused(tmp_path, caplog):
    authority = ClusterCertificates(tmp_path)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    with trio.fail_after(WAIT):
        async with lone_tls_node(authority) as member:
            expired = authority.issue(
                member, not_before=past, not_after=past + datetime.timedelta(days=1)
            )
            context = _client_context(expired, tmp_path)
            reason = await _handshake(member.peer_port, context)
            assert "alert certificate expired" in reason  # the node's verdict, sent back
            await wait_for(lambda: inbound_failures(member) == 1, "the node to count it")
    assert "certificate has expired" in caplog.text


def test_a_node_refuses_to_start_with_its_own_expired_certificate(tmp_path):
    from trinomite import DatastoreSpec, HostPort, Node, NodeConfig
    from trinomite.config.model import Seed

    ca = certs.make_ca()
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    issued = certs.issue(ca, "n", ["127.0.0.1"], not_before=past, not_after=past)
    certs.write_public(tmp_path / "ca.crt", ca.cert_pem)
    config = NodeConfig(
        listen=HostPort("127.0.0.1", 0),
        servers=(DatastoreSpec.embedded(),),
        tokens=(0,),
        dyn_seeds=(Seed("127.0.0.1", 1, "r2", "dc2", (0,)),),
        secure_server_option=SecureServerOption.ALL,
        tls_ca_file=str(tmp_path / "ca.crt"),
        **write_pair(tmp_path, "n", issued),
    )
    with pytest.raises(ValueError, match=r"tls_cert_file: .*n\.crt: the certificate expired on"):
        Node(config)


async def test_shared_key_nodes_with_different_keys_refuse_each_other(tmp_path, caplog):
    keys = {}
    for dc in ("dc1", "dc2"):
        keys[dc] = tmp_path / f"{dc}.pem"
        certs.write_key(keys[dc], certs.generate_shared_key())
    with trio.fail_after(WAIT):
        async with open_cluster(
            PAIR,
            per_node=lambda member: {"pem_key_file": str(keys[member.dc])},
            secure_server_option=DATACENTER,
            wait_connected=False,
        ) as cluster:
            await both_refused(cluster)
    assert "certificate verify failed" in caplog.text
