"""Tests of ``python -m trinomite certs``: the files it writes, and that nodes accept them.

Every command runs in-process through ``cli.main`` (one ``--help`` runs in a
subprocess).  Certificates are read back with ``cryptography``; the last
tests write real node configs, add the lines the command printed, and run
two nodes over TLS, bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import client_for, in_thread
from trinomite import cli
from trinomite.config import load_config
from trinomite.node.supervisor import ListenSockets, open_node
from trinomite.tls.material import Mode, load_client_context, load_peer_material
from trinomite.tls.policy import node_uri

#: How long two nodes may take to link up and replicate one SET.
CLUSTER_TIMEOUT = 20.0


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["certs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str], set[str]]:
    """(DNS names, IP addresses, URIs) of a certificate."""
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        set(alt.get_values_for_type(x509.DNSName)),
        {str(ip) for ip in alt.get_values_for_type(x509.IPAddress)},
        set(alt.get_values_for_type(x509.UniformResourceIdentifier)),
    )


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str:
    value = cert.subject.get_attributes_for_oid(oid)[0].value
    assert isinstance(value, str)
    return value


def lifetime(cert: x509.Certificate) -> datetime.timedelta:
    return cert.not_valid_after_utc - cert.not_valid_before_utc


def node_yaml(
    path: Path,
    *,
    peer: str = "127.0.0.1:8101",
    listen: str = "127.0.0.1:0",
    dc: str = "dc1",
    rack: str = "rack1",
    seeds: tuple[str, ...] = (),
    extra: str = "",
) -> Path:
    """A node config file (embedded datastore) as an operator writes one."""
    text = f"dyn_o_mite:\n  datacenter: {dc}\n  rack: {rack}\n"
    if peer:
        text += f"  dyn_listen: {peer}\n"
    if seeds:
        text += "  dyn_seeds:\n" + "".join(f"  - {seed}\n" for seed in seeds)
    text += f"  listen: {listen}\n  servers:\n  - embedded:1\n  tokens: '0'\n"
    text += "  stats_listen: 127.0.0.1:0\n" + extra
    path.write_text(text)
    return path


def printed_blocks(out: str) -> dict[str, list[str]]:
    """``# <config>`` -> the setting lines printed under it (comments left out)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if line.startswith("# ") and not line.startswith("# wrote"):
            current = blocks.setdefault(line[2:], [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line)
    return blocks


def bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def peer_sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two bound peer sockets: their ports are known before the configs are written."""
    a, b = bind_loopback(), bind_loopback()
    try:
        yield a, b
    finally:
        a.close()
        b.close()


# ---- certs ca ----------------------------------------------------------------


def test_ca_writes_a_ca_certificate_and_a_private_key(tmp_path, capsys):
    code, out, _ = run(capsys, "ca", str(tmp_path / "certs"))
    assert code == 0
    crt, key = tmp_path / "certs" / "ca.crt", tmp_path / "certs" / "ca.key"
    assert mode(crt) == 0o644
    assert mode(key) == 0o600
    ca = certificate(crt)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert attribute(ca, NameOID.COMMON_NAME) == "trinomite cluster CA"
    assert lifetime(ca) == datetime.timedelta(days=3650)
    private = load_pem_private_key(key.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key() == ca.public_key()
    assert f"wrote {crt}" in out
    assert f"wrote {key}" in out


def test_ca_name_and_days(tmp_path, capsys):
    code, _, _ = run(capsys, "ca", str(tmp_path), "--name", "prod CA", "--days", "30")
    assert code == 0
    ca = certificate(tmp_path / "ca.crt")
    assert attribute(ca, NameOID.COMMON_NAME) == "prod CA"
    assert lifetime(ca) == datetime.timedelta(days=30)


def test_ca_refuses_to_replace_a_ca_unless_forced(tmp_path, capsys):
    assert run(capsys, "ca", str(tmp_path))[0] == 0
    key = (tmp_path / "ca.key").read_bytes()
    code, out, err = run(capsys, "ca", str(tmp_path))
    assert code == 1
    assert out == ""
    assert "ca.key" in err
    assert "already exist" in err
    assert "--force" in err
    assert (tmp_path / "ca.key").read_bytes() == key
    assert run(capsys, "ca", str(tmp_path), "--force")[0] == 0
    assert (tmp_path / "ca.key").read_bytes() != key
    assert mode(tmp_path / "ca.key") == 0o600


# ---- certs node --------------------------------------------------------------


def test_node_certificates_name_the_node_and_its_place(tmp_path, capsys):
    certs = tmp_path / "certs"
    config = node_yaml(tmp_path / "dc1.yml", peer="127.0.0.1:8101", listen="127.0.0.1:8102")
    assert run(capsys, "ca", str(certs))[0] == 0
    code, out, _ = run(capsys, "node", str(certs), str(config), "--name", "node1.example")
    assert code == 0
    crt, key = certs / "dc1.crt", certs / "dc1.key"
    assert mode(crt) == 0o644
    assert mode(key) == 0o600
    cert = certificate(crt)
    assert attribute(cert, NameOID.COMMON_NAME) == "127.0.0.1:8101"
    assert attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == "dc1/rack1"
    assert sans(cert) == (
        {"node1.example", "localhost"},
        {"127.0.0.1"},
        {node_uri("dc1", "rack1", "127.0.0.1", 8101)},
    )
    assert usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert lifetime(cert) == datetime.timedelta(days=365)
    cert.verify_directly_issued_by(certificate(certs / "ca.crt"))
    private = load_pem_private_key(key.read_bytes(), password=None)
    assert private.public_key() == cert.public_key()
    assert printed_blocks(out) == {
        str(config): [
            f"  tls_cert_file: {crt}",
            f"  tls_key_file: {key}",
            f"  tls_ca_file: {certs / 'ca.crt'}",
        ]
    }
    assert "secure_server_option" in out  # the config leaves it at none


def test_node_names_both_listeners_and_no_localhost_off_loopback(tmp_path, capsys):
    config = node_yaml(
        tmp_path / "n1.yml", peer="10.1.2.3:8101", listen="node1.internal:8102", rack="us-east-1c"
    )
    assert run(capsys, "ca", str(tmp_path))[0] == 0
    assert run(capsys, "node", str(tmp_path), str(config))[0] == 0
    cert = certificate(tmp_path / "n1.crt")
    assert sans(cert) == (
        {"node1.internal"},
        {"10.1.2.3"},
        {node_uri("dc1", "us-east-1c", "10.1.2.3", 8101)},
    )
    assert attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME) == "dc1/us-east-1c"


def test_a_unix_listen_is_not_a_name(tmp_path, capsys):
    config = node_yaml(tmp_path / "u.yml", peer="10.1.2.3:8101", listen="/tmp/trinomite.sock")
    assert run(capsys, "ca", str(tmp_path))[0] == 0
    assert run(capsys, "node", str(tmp_path), str(config), "--name", "10.9.9.9")[0] == 0
    assert sans(certificate(tmp_path / "u.crt"))[:2] == (set(), {"10.1.2.3", "10.9.9.9"})


def test_node_days_set_the_validity(tmp_path, capsys):
    config = node_yaml(tmp_path / "n.yml")
    assert run(capsys, "ca", str(tmp_path))[0] == 0
    assert run(capsys, "node", str(tmp_path), str(config))[0] == 0
    default = certificate(tmp_path / "n.crt")
    assert run(capsys, "node", str(tmp_path), str(config), "--days", "10")[0] == 0
    short = certificate(tmp_path / "n.crt")
    assert lifetime(default) == datetime.timedelta(days=365)
    assert lifetime(short) == datetime.timedelta(days=10)
    assert short.not_valid_after_utc < default.not_valid_after_utc


def test_several_configs_one_certificate_each(tmp_path, capsys):
    configs = [
        node_yaml(tmp_path / "a.yml", peer="127.0.0.1:8101", rack="r1"),
        node_yaml(tmp_path / "b.yml", peer="127.0.0.1:8111", rack="r2"),
    ]
    ca_dir, out_dir = tmp_path / "ca", tmp_path / "nodes"
    assert run(capsys, "ca", str(ca_dir))[0] == 0
    code, out, _ = run(capsys, "node", str(out_dir), *map(str, configs), "--ca-dir", str(ca_dir))
    assert code == 0
    blocks = printed_blocks(out)
    assert list(blocks) == [str(c) for c in configs]
    for config, port, rack in ((configs[0], 8101, "r1"), (configs[1], 8111, "r2")):
        cert = certificate(out_dir / f"{config.stem}.crt")
        assert attribute(cert, NameOID.COMMON_NAME) == f"127.0.0.1:{port}"
        assert sans(cert)[2] == {node_uri("dc1", rack, "127.0.0.1", port)}
        assert blocks[str(config)][2] == f"  tls_ca_file: {ca_dir / 'ca.crt'}"
    assert not (out_dir / "ca.crt").exists()


def test_node_without_a_ca_says_how_to_make_one(tmp_path, capsys):
    config = node_yaml(tmp_path / "n.yml")
    code, out, err = run(capsys, "node", str(tmp_path / "certs"), str(config))
    assert code == 1
    assert out == ""
    assert "no CA in" in err
    assert "certs ca" in err
    assert not (tmp_path / "certs").exists()


def test_node_config_without_dyn_listen_is_named(tmp_path, capsys):
    good = node_yaml(tmp_path / "good.yml")
    bad = node_yaml(tmp_path / "bad.yml", peer="")
    assert run(capsys, "ca", str(tmp_path))[0] == 0
    code, out, err = run(capsys, "node", str(tmp_path), str(good), str(bad))
    assert code == 1
    assert out == ""
    assert str(bad) in err
    assert "dyn_listen" in err
    assert not (tmp_path / "good.crt").exists()  # nothing is written unless all are fine


def test_node_invalid_config_is_reported(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("dyn_o_mite:\n  listen: 127.0.0.1:1\n  servers:\n  - embedded:1\n  timeout: x\n")
    assert run(capsys, "ca", str(tmp_path))[0] == 0
    code, _, err = run(capsys, "node", str(tmp_path), str(bad))
    assert code == 1
    assert "timeout" in err
    code, _, err = run(capsys, "node", str(tmp_path), str(tmp_path / "missing.yml"))
    assert code == 1
    assert "missing.yml" in err


def test_node_refuses_to_overwrite_the_ca_or_itself(tmp_path, capsys):
    assert run(capsys, "ca", str(tmp_path))[0] == 0
    ca = (tmp_path / "ca.crt").read_bytes()
    code, _, err = run(capsys, "node", str(tmp_path), str(node_yaml(tmp_path / "ca.yml")))
    assert code == 1
    assert "the CA" in err
    assert (tmp_path / "ca.crt").read_bytes() == ca
    (tmp_path / "x").mkdir()
    twins = [node_yaml(tmp_path / "n.yml"), node_yaml(tmp_path / "x" / "n.yml")]
    code, _, err = run(capsys, "node", str(tmp_path), *map(str, twins))
    assert code == 1
    assert "n.crt" in err


def test_a_broken_ca_is_refused(tmp_path, capsys):
    config = node_yaml(tmp_path / "n.yml")
    assert run(capsys, "ca", str(tmp_path / "one"))[0] == 0
    assert run(capsys, "ca", str(tmp_path / "two"))[0] == 0
    (tmp_path / "one" / "ca.key").write_bytes((tmp_path / "two" / "ca.key").read_bytes())
    code, _, err = run(
        capsys, "node", str(tmp_path), str(config), "--ca-dir", str(tmp_path / "one")
    )
    assert code == 1
    assert "not the key of the certificate" in err
    (tmp_path / "one" / "ca.crt").write_text("junk")
    code, _, err = run(
        capsys, "node", str(tmp_path), str(config), "--ca-dir", str(tmp_path / "one")
    )
    assert code == 1
    assert "not a PEM certificate" in err


# ---- certs client ------------------------------------------------------------


async def test_a_client_certificate_is_accepted_by_a_node_requiring_one(tmp_path, capsys):
    certs = tmp_path / "certs"
    config_path = node_yaml(tmp_path / "n.yml")
    assert run(capsys, "ca", str(certs))[0] == 0
    _, node_out, _ = run(capsys, "node", str(certs), str(config_path))
    code, out, _ = run(capsys, "client", str(certs), "app1", "--days", "20")
    assert code == 0
    crt, key = certs / "app1.crt", certs / "app1.key"
    assert mode(crt) == 0o644
    assert mode(key) == 0o600
    cert = certificate(crt)
    assert attribute(cert, NameOID.COMMON_NAME) == "app1"
    assert usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert lifetime(cert) == datetime.timedelta(days=20)
    client_lines = [line for line in out.splitlines() if line.startswith("  client_tls")]
    assert client_lines == [
        "  client_tls: true",
        "  client_tls_verify: required",
        f"  client_tls_ca_file: {certs / 'ca.crt'}",
    ]
    lines = printed_blocks(node_out)[str(config_path)] + client_lines
    with config_path.open("a") as file:
        file.write("".join(f"{line}\n" for line in lines))
    server_context = load_client_context(load_config(config_path))
    assert server_context is not None

    client_context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    client_context.load_cert_chain(str(crt), str(key))
    server_end, client_end = trio.testing.memory_stream_pair()
    server = trio.SSLStream(server_end, server_context, server_side=True)
    client = trio.SSLStream(client_end, client_context, server_hostname="127.0.0.1")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)
    peer = server.getpeercert()
    assert peer is not None
    assert dict(item[0] for item in peer["subject"])["commonName"] == "app1"


def test_client_name_must_be_a_file_name(tmp_path, capsys):
    code, _, err = run(capsys, "client", str(tmp_path), "../evil")
    assert code == 2
    assert "cannot be a file name" in err


# ---- certs shared-key --------------------------------------------------------


def test_shared_key_is_an_rsa_key_readable_by_its_owner_only(tmp_path, capsys):
    path = tmp_path / "conf" / "dynomite.pem"
    code, out, _ = run(capsys, "shared-key", str(path))
    assert code == 0
    assert mode(path) == 0o600
    key = load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert "every node must hold this same file" in out
    assert f"  pem_key_file: {path}" in out.splitlines()
    assert "per-node certificates are recommended" in out


def test_shared_key_bits_and_refusing_to_overwrite(tmp_path, capsys):
    path = tmp_path / "dynomite.pem"
    assert run(capsys, "shared-key", str(path), "--bits", "3072")[0] == 0
    first = path.read_bytes()
    key = load_pem_private_key(first, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 3072
    code, out, err = run(capsys, "shared-key", str(path))
    assert code == 1
    assert out == ""
    assert "already exists" in err
    assert "--force" in err
    assert path.read_bytes() == first
    path.chmod(0o644)
    assert run(capsys, "shared-key", str(path), "--force")[0] == 0
    assert path.read_bytes() != first
    assert mode(path) == 0o600


# ---- usage and help ----------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required"),
        (["nope"], "invalid choice"),
        (["ca"], "required: DIR"),
        (["ca", "d", "--days", "0"], "--days"),
        (["node", "d"], "CONFIG"),
        (["node", "d", "c.yml", "--days", "x"], "--days"),
        (["shared-key", "f", "--bits", "1024"], "--bits"),
        (["client", "d", "n", "--bogus"], "unrecognized"),
    ],
)
def test_bad_usage_exits_2_with_a_message(argv, message, capsys):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "usage:" in err


@pytest.mark.parametrize("sub", [[], ["ca"], ["node"], ["client"], ["shared-key"]])
def test_help_for_each_subcommand(sub, capsys):
    code, out, err = run(capsys, *sub, "--help")
    assert code == 0
    assert err == ""
    assert out.startswith(f"usage: python -m trinomite certs {' '.join(sub)}".rstrip())


def test_help_from_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "trinomite", "certs", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    for sub in ("ca", "node", "client", "shared-key"):
        assert sub in done.stdout


# ---- what nodes make of it ----------------------------------------------------


def two_node_configs(
    tmp_path: Path, sockets: tuple[socket.socket, socket.socket], extra: str = ""
) -> list[Path]:
    """Configs of two nodes (dc1, racks r1 and r2) that are each other's seed."""
    ports = [sock.getsockname()[1] for sock in sockets]
    extra = f"  write_consistency: DC_QUORUM\n{extra}"
    return [
        node_yaml(
            tmp_path / f"node{i + 1}.yml",
            peer=f"127.0.0.1:{ports[i]}",
            rack=f"r{i + 1}",
            seeds=(f"127.0.0.1:{ports[1 - i]}:r{2 - i}:dc1:0",),
            extra=extra,
        )
        for i in range(2)
    ]


async def replicate_one_set(
    configs: list[Path], sockets: tuple[socket.socket, socket.socket]
) -> None:
    """Run both nodes; SET through the first, GET through the second (bounded)."""
    one, two = (load_config(path) for path in configs)
    names = [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]
    async with (
        open_node(one, sockets=ListenSockets(peer=sockets[0])) as first,
        open_node(two, sockets=ListenSockets(peer=sockets[1])) as second,
    ):
        with trio.fail_after(CLUSTER_TIMEOUT):
            for node, other in ((first, names[1]), (second, names[0])):
                while not node.peers.is_up(other):
                    await node.peers.wait_changed()
            # DC_QUORUM over two racks: the SET returns once both nodes hold it.
            assert await in_thread(client_for(first).set, "greeting", "over tls")
            assert await in_thread(client_for(second).get, "greeting") == b"over tls"
        for node, other in ((first, names[1]), (second, names[0])):
            versions = {c.tls_version for c in node.peers.pools[other].connections}
            assert versions <= {"TLSv1.2", "TLSv1.3"}
            assert None not in versions


async def test_node_certificates_secure_a_two_node_cluster(tmp_path, capsys, peer_sockets):
    certs = tmp_path / "certs"
    configs = two_node_configs(tmp_path, peer_sockets, "  secure_server_option: all\n")
    assert run(capsys, "ca", str(certs))[0] == 0
    code, out, _ = run(capsys, "node", str(certs), *map(str, configs))
    assert code == 0
    blocks = printed_blocks(out)
    for path in configs:
        with path.open("a") as file:
            file.write("".join(f"{line}\n" for line in blocks[str(path)]))
        material = load_peer_material(load_config(path))
        assert material is not None
        assert material.mode is Mode.CERTIFICATES
    await replicate_one_set(configs, peer_sockets)


async def test_a_shared_key_secures_a_two_node_cluster(tmp_path, capsys, peer_sockets):
    key = tmp_path / "dynomite.pem"
    assert run(capsys, "shared-key", str(key))[0] == 0
    extra = f"  secure_server_option: all\n  pem_key_file: {key}\n"
    configs = two_node_configs(tmp_path, peer_sockets, extra)
    for path in configs:
        material = load_peer_material(load_config(path))
        assert material is not None
        assert material.mode is Mode.SHARED_KEY
    await replicate_one_set(configs, peer_sockets)
