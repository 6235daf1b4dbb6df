"""Reloading certificates on a live cluster: new links use them, live links stay up.

The admin path ``/tls/reload`` (what SIGHUP also does) is called over HTTP
on a real running node; files are replaced on disk as an operator (or a
certificate manager) would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from trinomite.config.model import SecureServerOption
from trinomite.testing.cluster import ClusterNode, open_cluster
from trinomite.testing.tls import ClusterCertificates, write_pair
from trinomite.tls import certs

from .adminfake import http_get
from .clusterutil import WAIT, call, peer_name

TWO_RACKS = {"dc1": {"r1": 1, "r2": 1}}


def node_of(member: ClusterNode):
    assert member.node is not None
    return member.node


async def reload(member: ClusterNode):
    address = node_of(member).admin_address
    assert address is not None
    return await http_get((address.host, address.port), "/tls/reload")


def link(member: ClusterNode, other: ClusterNode):
    return node_of(member).peers.pools[peer_name(other)].connections[0]


async def reconnect(member: ClusterNode, other: ClusterNode) -> None:
    """Drop ``member``'s link to ``other`` and wait until it is back up."""
    connection = link(member, other)
    before = connection.connects
    connection.reset()
    with trio.fail_after(WAIT):
        while connection.connects == before or not node_of(member).peers.is_up(peer_name(other)):
            await node_of(member).peers.wait_changed()


@asynccontextmanager
async def tls_pair(
    authority: ClusterCertificates,
) -> AsyncIterator[tuple[ClusterNode, ClusterNode]]:
    """Two racks of one node, every link TLS with ``authority``'s certificates."""
    async with open_cluster(
        TWO_RACKS, per_node=authority, secure_server_option=SecureServerOption.ALL
    ) as cluster:
        yield cluster.node("dc1", "r1"), cluster.node("dc1", "r2")


async def test_reload_swaps_certificates_without_dropping_links(tmp_path):
    authority = ClusterCertificates(tmp_path)
    with trio.fail_after(2 * WAIT):
        async with tls_pair(authority) as (a, b):
            assert "commonName=127.0.0.1:" in link(b, a).tls_peer
            connects = (link(a, b).connects, link(b, a).connects)
            # A renewed certificate for a, with a new name to tell it apart.
            renewed = certs.issue(authority.ca, "renewed-a", ["127.0.0.1"])
            write_pair(tmp_path, f"{a.dc}-{a.rack}-{a.index}", renewed)
            reply = await reload(a)
            assert (reply.status, reply.text) == (200, "OK\r\n")
            assert node_of(a).tls.reloads == 1
            # Live links were not touched...
            assert (link(a, b).connects, link(b, a).connects) == connects
            assert await call(a.client(), "SET", b"k", b"v") is True
            # ...and the next connection b makes to a meets the renewed certificate.
            await reconnect(b, a)
            assert link(b, a).tls_peer.endswith("commonName=renewed-a")
            assert node_of(a).admin.info()["tls"]["reloads"] == 1


async def test_failed_reload_keeps_the_loaded_material_and_says_why(tmp_path, caplog):
    authority = ClusterCertificates(tmp_path)
    with trio.fail_after(2 * WAIT):
        async with tls_pair(authority) as (a, b):
            loaded = node_of(a).tls.peer
            stem = f"{a.dc}-{a.rack}-{a.index}"
            # A key that does not belong to the certificate.
            stray = certs.issue(authority.ca, "stray", ["127.0.0.1"])
            (tmp_path / f"{stem}.key").write_bytes(stray.key_pem)
            reply = await reload(a)
            assert reply.status == 500
            assert "TLS reload failed, the loaded certificates stay in use" in reply.text
            assert f"{stem}.key: the key does not match the certificate" in reply.text
            assert node_of(a).tls.peer is loaded
            info = node_of(a).admin.info()["tls"]
            assert info["reload_failures"] == 1
            assert "does not match" in info["last_reload_error"]
            # The old material still makes new links, both ways.
            await reconnect(b, a)
            await reconnect(a, b)
            assert await call(b.client(), "SET", b"k", b"v") is True
    assert "TLS reload failed, keeping the loaded certificates" in caplog.text


def _served_subject(port: int, ca_file: str) -> str:
    """The CN of the certificate a TLS client meets on ``port`` now."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw) as tls,
    ):
        subject = dict(rdn[0] for rdn in tls.getpeercert()["subject"])
        tls.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert tls.recv(64) == b"+PONG\r\n"
        return str(subject["commonName"])


def test_sighup_reloads_a_running_processes_certificates(tmp_path):
    """``python -m trinomite`` as a process: SIGHUP, and new clients meet the new certificate."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from trinomite.testing.redis_server import free_ports

    root = Path(__file__).resolve().parent.parent
    ca = certs.make_ca()
    certs.write_public(tmp_path / "ca.crt", ca.cert_pem)
    files = write_pair(tmp_path, "node", certs.issue(ca, "first", ["127.0.0.1"]))
    client, stats = free_ports(2)
    conf = tmp_path / "node.yml"
    conf.write_text(
        "dyn_o_mite:\n"
        f"  listen: 127.0.0.1:{client}\n"
        f"  stats_listen: 127.0.0.1:{stats}\n"
        "  servers:\n  - embedded:1\n"
        "  client_tls: true\n"
        f"  tls_cert_file: {files['tls_cert_file']}\n"
        f"  tls_key_file: {files['tls_key_file']}\n"
    )
    log = tmp_path / "node.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "trinomite", "-v", "6", "-o", str(log), str(conf)],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
    )
    ca_file = str(tmp_path / "ca.crt")
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert _served_subject(client, ca_file) == "first"
                break
            except OSError:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the node never answered over TLS"
                time.sleep(0.05)
        write_pair(tmp_path, "node", certs.issue(ca, "second", ["127.0.0.1"]))
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while "TLS material reloaded" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert _served_subject(client, ca_file) == "second"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
