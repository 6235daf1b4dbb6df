"""Clusters over TLS: which links are wrapped, and everything still works across them.

Every test runs a real in-process cluster with per-node certificates from a
test CA (``ClusterCertificates``: what ``trinomite certs`` makes) or with a
Dynomite-style shared key, and, where data is checked, one real
redis-server per node.  A link's ``tls_version`` is set only by a completed
mutual-TLS handshake; the receiving node refuses plaintext on any link its
rules secure, so a link that is up and secured carries TLS end to end.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis
import trio

from trinomite.config.model import Consistency, SecureServerOption
from trinomite.testing.cluster import Cluster, open_cluster
from trinomite.testing.tls import ClusterCertificates
from trinomite.tls import certs
from trinomite.tls.policy import is_secure

from .clusterutil import (
    WAIT,
    call,
    keys_owned_by,
    peer_name,
    redis_cluster,
    replicas,
    stop,
    stored,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
TWO_DCS = {"dc1": {"r1": 1, "r2": 1}, "dc2": {"r1": 1}}


def links(cluster: Cluster) -> list[tuple[str, str, bool, str | None]]:
    """(node, peer, secured, TLS version) for every outgoing peer connection."""
    out = []
    for member in cluster.nodes:
        assert member.node is not None
        for name, pool in member.node.peers.pools.items():
            for connection in pool.connections:
                out.append((member.name, name, connection.secure, connection.tls_version))
    return out


def expected(cluster: Cluster, option: SecureServerOption) -> dict[tuple[str, str], bool]:
    """Dynomite's is_secure for every ordered pair of nodes."""
    return {
        (a.name, peer_name(b)): is_secure(option, a.dc, a.rack, b.dc, b.rack)
        for a in cluster.nodes
        for b in cluster.nodes
        if a is not b
    }


@pytest.mark.parametrize("option", list(SecureServerOption), ids=lambda o: o.value)
async def test_secure_server_option_wraps_exactly_dynomites_links(tmp_path, option):
    with trio.fail_after(WAIT):
        async with open_cluster(
            TWO_DCS, per_node=ClusterCertificates(tmp_path), secure_server_option=option
        ) as cluster:
            want = expected(cluster, option)
            got = links(cluster)
            assert len(got) == len(want) == 6
            for node, peer, secured, version in got:
                assert secured is want[(node, peer)], (node, peer)
                # Secured links completed a TLS 1.2+ handshake; the others never did.
                assert version in (("TLSv1.2", "TLSv1.3") if secured else (None,))
            if option is SecureServerOption.DATACENTER:
                # The case: inter-DC over TLS, intra-DC plaintext.
                dc2 = peer_name(cluster.node("dc2", "r1"))
                secured = {(n, p) for n, p, s, _ in got if s}
                assert len(secured) == 4
                assert all(p == dc2 or n.startswith("dc2/") for n, p in secured)


#: Two DCs of two racks, dc1/r1 with two nodes (for scatter-gather and read failover).
FIVE = {"dc1": {"r1": 2, "r2": 1}, "dc2": {"r1": 1, "r2": 1}}


def tls_cluster(tmp_path, option: SecureServerOption):
    """``FIVE`` on real redis-servers, with per-node certificates, under ``option``."""
    return redis_cluster(FIVE, per_node=ClusterCertificates(tmp_path), secure_server_option=option)


async def test_two_dc_datacenter_cluster_replicates_and_reaches_quorum_over_tls(tmp_path):
    with trio.fail_after(3 * WAIT):
        async with tls_cluster(tmp_path, SecureServerOption.DATACENTER) as cluster:
            coordinator = cluster.node("dc1", "r1", 0)
            client = coordinator.client()
            # Replication: a DC_ONE write lands in every rack of both DCs.
            assert await call(client, "SET", b"tls:k", b"v1") is True
            for member in replicas(cluster, b"tls:k"):

                async def arrived(member=member) -> bool:
                    return await stored(member, b"tls:k") == b"v1"

                await wait_until(arrived, f"the write to reach {member.name}")
            # Scatter-gather: MGET over keys owned by both dc1/r1 nodes.
            other = cluster.node("dc1", "r1", 1)
            keys = keys_owned_by(cluster, coordinator, 2) + keys_owned_by(cluster, other, 2)
            for key in keys:
                assert await call(client, "SET", key, key) is True
            assert await call(client, "MGET", *keys) == keys
            # Quorum across TLS links, from a dc2 node (its DC peers: one plaintext
            # rack link; the cross-DC forward from dc1 arrived over TLS).
            for level in ("DC_QUORUM", "DC_SAFE_QUORUM", "DC_EACH_SAFE_QUORUM"):
                quorum = cluster.node("dc2", "r1")
                assert quorum.node is not None
                quorum.node.read_consistency = quorum.node.write_consistency = Consistency(level)
                fresh = quorum.client()
                assert await call(fresh, "SET", b"tls:q", level) is True
                assert await call(fresh, "GET", b"tls:q") == level.encode()
                fresh.close()


async def test_read_failover_and_remote_failover_run_over_tls(tmp_path):
    with trio.fail_after(3 * WAIT):
        async with tls_cluster(tmp_path, SecureServerOption.ALL) as cluster:
            assert all(secured and version for *_, secured, version in links(cluster))
            coordinator, owner = cluster.rack("dc1", "r1")
            other_rack = cluster.node("dc1", "r2")
            (key,) = keys_owned_by(cluster, owner, 1)
            client = coordinator.client()
            assert await call(client, "SET", key, b"v") is True

            async def replicated() -> bool:
                return await stored(other_rack, key) == b"v"

            await wait_until(replicated, "the write to reach dc1/r2")
            # The key's owner in r1 is gone: the DC_ONE read fails over to r2, over TLS.
            await stop(cluster, owner)
            assert await call(client, "GET", key) == b"v"
            assert coordinator.node is not None
            assert coordinator.node.cluster_counters.read_failover_requests == 1
            # A remote DC's preselected rack is gone: the write fails over to the other.
            preselected, fallback = cluster.node("dc2", "r1"), cluster.node("dc2", "r2")
            await stop(cluster, preselected)
            assert await call(other_rack.client(), "SET", b"g", b"w") is True

            async def arrived() -> bool:
                return await stored(fallback, b"g") == b"w"

            await wait_until(arrived, "the write to reach dc2 through its other rack")


async def test_dynomite_shared_key_config_runs_tls_pinned_to_the_key(tmp_path, caplog):
    key = tmp_path / "dynomite.pem"
    certs.write_key(key, certs.generate_shared_key())
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(
            TWO_DCS, secure_server_option=SecureServerOption.DATACENTER, pem_key_file=str(key)
        ) as cluster:
            for node, peer, secured, version in links(cluster):
                assert (version is not None) is secured, (node, peer)
            assert await call(cluster.node("dc1", "r1").client(), "SET", b"s", b"k") is True
            remote = cluster.node("dc2", "r1")

            async def arrived() -> bool:
                return await stored(remote, b"s") == b"k"

            await wait_until(arrived, "the write to cross the shared-key TLS link")
            assert remote.node is not None
            tls = remote.node.admin.info()["tls"]
            assert tls["peer_mode"] == "shared-key"
    assert "per-node certificates are stronger" in caplog.text
    assert "Dynomite nodes cannot join secured links" in caplog.text


async def test_info_and_metrics_report_secured_links(tmp_path):
    with trio.fail_after(WAIT):
        async with open_cluster(
            TWO_DCS,
            per_node=ClusterCertificates(tmp_path),
            secure_server_option=SecureServerOption.DATACENTER,
        ) as cluster:
            member = cluster.node("dc1", "r1")
            assert member.node is not None
            info = member.node.admin.info()["tls"]
            assert info["peer_mode"] == "certificates"
            assert info["secure_server_option"] == "datacenter"
            remote = peer_name(cluster.node("dc2", "r1"))
            local = peer_name(cluster.node("dc1", "r2"))
            assert info["peers"][remote]["secured"] is True
            assert info["peers"][remote]["version"].startswith("TLSv1.")
            assert info["peers"][local] == {
                "secured": False,
                "version": "",
                "handshake_failures": 0,
                "certificate": "",
            }
            assert "commonName=127.0.0.1:" in info["peers"][remote]["certificate"]
            text = member.node.admin.metrics_text()
            assert "trinomite_tls_handshake_failures_total" in text
            assert "trinomite_peer_link_tls_handshake_failures{" in text


async def test_dynomites_two_dc_files_run_encrypted_as_they_are(tmp_path, monkeypatch):
    """conf/redis_dc{1,2}.yml keep Dynomite's secure_server_option and pem_key_file.

    Only addresses change (ephemeral ports, this test's redis-servers); the
    key is found where the files say, relative to the working directory.
    """
    import attrs

    from trinomite import ListenSockets, load_config
    from trinomite.config.model import DatastoreSpec, HostPort
    from trinomite.testing import RedisServer

    from .clusterutil import in_thread

    configs = [load_config(ROOT / "conf" / f"redis_dc{n}.yml") for n in (1, 2)]
    assert all(c.secure_server_option is SecureServerOption.DATACENTER for c in configs)
    assert {c.pem_key_file for c in configs} == {"conf/dynomite.pem"}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf").mkdir()
    certs.write_key(tmp_path / "conf" / "dynomite.pem", certs.generate_shared_key())
    sockets = [ListenSockets(_bound(), _bound()) for _ in configs]
    ports = [(s.client.getsockname()[1], s.peer.getsockname()[1]) for s in sockets]  # type: ignore[union-attr]
    servers = [RedisServer(), RedisServer()]
    try:
        for server in servers:
            server.start()
        nodes = []
        async with trio.open_nursery() as nursery:
            for i, config in enumerate(configs):
                (seed,) = config.dyn_seeds
                config = attrs.evolve(
                    config,
                    listen=HostPort("127.0.0.1", ports[i][0]),
                    dyn_listen=HostPort("127.0.0.1", ports[i][1]),
                    stats_listen=HostPort("127.0.0.1", 0),
                    servers=(DatastoreSpec.tcp(servers[i].host, servers[i].port),),
                    dyn_seeds=(attrs.evolve(seed, port=ports[1 - i][1]),),
                )
                nodes.append(await nursery.start(_run, config, sockets[i]))

            async def linked() -> bool:
                return all(
                    n.peers.is_up(f"127.0.0.1:{ports[1 - i][1]}") for i, n in enumerate(nodes)
                )

            await wait_until(linked, "both nodes to link over TLS")
            for node in nodes:
                (pool,) = node.peers.pools.values()
                assert pool.connections[0].tls_version is not None
                assert node.admin.info()["tls"]["peer_mode"] == "shared-key"
            client = redis.Redis(port=ports[0][0])
            assert await in_thread(client.set, "across", "dcs")
            direct = redis.Redis(host=servers[1].host, port=servers[1].port)

            async def arrived() -> bool:
                return await in_thread(direct.get, "across") == b"dcs"

            await wait_until(arrived, "the write to reach dc2 over the encrypted link")
            nursery.cancel_scope.cancel()
    finally:
        for server in servers:
            server.close()


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


async def _run(config, sockets, *, task_status=trio.TASK_STATUS_IGNORED):
    from trinomite import serve_node

    await serve_node(config, sockets=sockets, task_status=task_status)
