"""TLS rules and material: is_secure, node URIs, who a certificate names, and file checks.

The rules are pure functions, tested as tables.  Material is real files
made by ``trinomite.tls.certs`` (or trustme, for certificates trinomite did
not make), loaded by the code a node runs at start; every refusal must name
the config key, the file and the problem.
"""

from __future__ import annotations

import datetime
import ssl

import attrs
import pytest
import trustme

from trinomite import DatastoreSpec, HostPort, NodeConfig
from trinomite.config.model import ClientVerify, SecureServerOption, Seed
from trinomite.ring.topology import PeerInfo
from trinomite.testing.tls import write_pair
from trinomite.tls import certs
from trinomite.tls.material import (
    Mode,
    TlsConfigError,
    load_client_context,
    load_peer_material,
)
from trinomite.tls.peers import TlsState
from trinomite.tls.policy import identify, is_secure, node_uri, parse_node_uri

NONE, RACK, DC, ALL = (
    SecureServerOption.NONE,
    SecureServerOption.RACK,
    SecureServerOption.DATACENTER,
    SecureServerOption.ALL,
)


# ---- the rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "same_rack", "same_dc_other_rack", "other_dc"),
    [
        (NONE, False, False, False),
        (RACK, False, True, True),
        (DC, False, False, True),
        (ALL, True, True, True),
    ],
)
def test_is_secure_is_dynomites_table(option, same_rack, same_dc_other_rack, other_dc):
    assert is_secure(option, "dc1", "r1", "dc1", "r1") is same_rack
    assert is_secure(option, "dc1", "r1", "dc1", "r2") is same_dc_other_rack
    assert is_secure(option, "dc1", "r1", "dc2", "r1") is other_dc
    assert is_secure(option, "dc1", "r1", "dc2", "r2") is other_dc


@pytest.mark.parametrize(
    ("dc", "rack", "host", "port"),
    [("dc1", "r1", "10.0.0.1", 8101), ("us east", "r/1", "::1", 1), ("d", "r", "node.a", 65535)],
)
def test_node_uri_round_trips(dc, rack, host, port):
    uri = node_uri(dc, rack, host, port)
    assert uri.startswith("trinomite://")
    assert parse_node_uri(uri) == (dc, rack, host, port)


@pytest.mark.parametrize(
    "uri", ["https://dc/r/h:1", "trinomite://dc/r/h", "trinomite:///r/h:1", "trinomite://dc"]
)
def test_other_uris_name_no_node(uri):
    assert parse_node_uri(uri) is None


def test_identify_by_uri_then_by_unique_address_or_name():
    a = PeerInfo("10.0.0.1:8101", "10.0.0.1", 8101, "dc1", "r1", (0,), alias="a.example")
    b = PeerInfo("10.0.0.2:8101", "10.0.0.2", 8101, "dc2", "r1", (0,))
    c = PeerInfo("10.0.0.2:8102", "10.0.0.2", 8102, "dc2", "r2", (0,))
    peers = [a, b, c]
    assert identify(peers, [node_uri("dc2", "r2", "10.0.0.2", 8102)], []) is c
    # A node nobody listed yet is still placed by its URI.
    unknown = identify(peers, [node_uri("dc3", "r9", "10.0.0.9", 1)], [])
    assert unknown is not None
    assert (unknown.dc, unknown.rack) == ("dc3", "r9")
    assert identify(peers, [], ["10.0.0.1"]) is a
    assert identify(peers, [], ["a.example"]) is a
    assert identify(peers, [], ["10.0.0.2"]) is None  # two nodes on that host
    assert identify(peers, [], ["10.0.0.7"]) is None


# ---- material ---------------------------------------------------------------


def config(tmp_path, **overrides) -> NodeConfig:
    overrides.setdefault("secure_server_option", ALL)
    overrides.setdefault("pem_key_file", str(tmp_path / "absent.pem"))
    return NodeConfig(
        listen=HostPort("127.0.0.1", 0),
        servers=(DatastoreSpec.embedded(),),
        tokens=(0,),
        dyn_seeds=(Seed("127.0.0.1", 1, "r2", "dc2", (0,)),),
        **overrides,
    )


@pytest.fixture
def pki(tmp_path):
    ca = certs.make_ca()
    certs.write_public(tmp_path / "ca.crt", ca.cert_pem)
    node = certs.issue(ca, "node", ["127.0.0.1", "node.example"])
    files = write_pair(tmp_path, "node", node)
    return ca, {**files, "tls_ca_file": str(tmp_path / "ca.crt")}


def refused(cfg: NodeConfig, *fragments: str) -> None:
    with pytest.raises(TlsConfigError) as info:
        load_peer_material(cfg)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_per_node_material_loads_tls_1_2_and_up_mutual(tmp_path, pki):
    material = load_peer_material(config(tmp_path, **pki[1]))
    assert material is not None
    assert material.mode is Mode.CERTIFICATES
    for context in (material.server, material.client):
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        assert context.verify_mode is ssl.CERT_REQUIRED
    assert material.not_after is not None
    assert "node" in material.describe


def test_no_material_without_secured_links(tmp_path):
    assert load_peer_material(config(tmp_path, secure_server_option=NONE)) is None


def test_missing_ca_is_named(tmp_path, pki):
    files = {k: v for k, v in pki[1].items() if k != "tls_ca_file"}
    refused(config(tmp_path, **files), "tls_ca_file: not set")


def test_missing_certificate_file_is_named(tmp_path, pki):
    cfg = config(tmp_path, **{**pki[1], "tls_cert_file": str(tmp_path / "nope.crt")})
    refused(cfg, "tls_cert_file: ", "nope.crt: No such file")


def test_a_file_that_is_not_a_certificate_is_named(tmp_path, pki):
    (tmp_path / "junk.crt").write_text("hello\n")
    cfg = config(tmp_path, **{**pki[1], "tls_cert_file": str(tmp_path / "junk.crt")})
    refused(cfg, "tls_cert_file: ", "junk.crt: no PEM certificate")


def test_a_key_of_another_certificate_is_named(tmp_path, pki):
    other = write_pair(tmp_path, "other", certs.issue(pki[0], "other", ["127.0.0.1"]))
    cfg = config(tmp_path, **{**pki[1], "tls_key_file": other["tls_key_file"]})
    refused(cfg, "tls_key_file: ", "other.key: the key does not match the certificate")


def test_a_certificate_from_another_ca_is_named(tmp_path, pki):
    foreign = trustme.CA().issue_cert("127.0.0.1")
    foreign.cert_chain_pems[0].write_to_path(str(tmp_path / "foreign.crt"))
    foreign.private_key_pem.write_to_path(str(tmp_path / "foreign.key"))
    cfg = config(
        tmp_path,
        **{
            **pki[1],
            "tls_cert_file": str(tmp_path / "foreign.crt"),
            "tls_key_file": str(tmp_path / "foreign.key"),
        },
    )
    refused(cfg, "tls_cert_file: ", "foreign.crt: not issued by the CA in tls_ca_file")


def test_a_certificate_not_yet_valid_is_named(tmp_path, pki):
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2)
    later = write_pair(tmp_path, "later", certs.issue(pki[0], "n", not_before=soon))
    cfg = config(tmp_path, **{**pki[1], **later})
    refused(cfg, "later.crt: the certificate is not valid before")


def test_shared_key_mode_derives_one_certificate_from_the_key(tmp_path):
    key = tmp_path / "dynomite.pem"
    certs.write_key(key, certs.generate_shared_key())
    first = load_peer_material(config(tmp_path, pem_key_file=str(key)))
    second = load_peer_material(config(tmp_path, pem_key_file=str(key)))
    assert first is not None
    assert second is not None
    assert first.mode is Mode.SHARED_KEY
    assert first.pin == second.pin
    assert first.pin is not None


def test_shared_key_must_be_rsa_and_unencrypted(tmp_path, pki):
    refused(config(tmp_path, pem_key_file=pki[1]["tls_key_file"]), "not an RSA key")
    (tmp_path / "bad.pem").write_text("-----BEGIN RSA PRIVATE KEY-----\nxx\n")
    refused(config(tmp_path, pem_key_file=str(tmp_path / "bad.pem")), "not an unencrypted PEM")


def test_client_tls_needs_a_certificate_and_a_ca_to_verify(tmp_path, pki):
    with pytest.raises(TlsConfigError, match="client_tls: true needs a certificate"):
        load_client_context(config(tmp_path, secure_server_option=NONE, client_tls=True))
    files = {k: v for k, v in pki[1].items() if k != "tls_ca_file"}
    cfg = config(
        tmp_path,
        secure_server_option=NONE,
        client_tls=True,
        client_tls_verify=ClientVerify.REQUIRED,
        **files,
    )
    with pytest.raises(TlsConfigError, match="client_tls_verify: required needs"):
        load_client_context(cfg)
    context = load_client_context(attrs.evolve(cfg, tls_ca_file=pki[1]["tls_ca_file"]))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED


def test_check_peer_accepts_the_seed_host_or_its_name_only(tmp_path, pki):
    material = load_peer_material(config(tmp_path, **pki[1]))
    assert material is not None
    issued = certs.issue(pki[0], "peer", ["10.1.2.3", "*.nodes.example"])
    der = issued.certificate.public_bytes(certs.serialization.Encoding.DER)
    decoded = {"subjectAltName": (("IP Address", "10.1.2.3"), ("DNS", "*.nodes.example"))}
    assert material.check_peer(der, decoded, ["10.1.2.3"]) == ""
    assert material.check_peer(der, decoded, ["10.9.9.9", "b.nodes.example"]) == ""
    assert "not 10.9.9.9" in material.check_peer(der, decoded, ["10.9.9.9"])
    assert material.check_peer(der, decoded, ["a.b.nodes.example"])  # one label only
    assert material.check_peer(None, {}, ["10.1.2.3"]) == "the peer sent no certificate"


def test_reload_swaps_only_material_that_loads(tmp_path, pki, caplog):
    cfg = config(tmp_path, **pki[1])
    state = TlsState(cfg)
    before = state.peer
    assert state.reload() == ""
    assert state.peer is not before
    assert state.reloads == 1
    kept = state.peer
    (tmp_path / "node.crt").write_text("corrupted\n")
    problem = state.reload()
    assert "tls_cert_file: " in problem
    assert "node.crt: no PEM certificate" in problem
    assert state.peer is kept
    assert state.reload_failures == 1
    assert state.describe()["last_reload_error"] == problem
    assert "TLS reload failed, keeping the loaded certificates" in caplog.text
