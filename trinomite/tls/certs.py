"""Making certificates: a cluster CA, node and client certificates, and Dynomite's shared key.

Theory of operation
-------------------
A cluster secured with per-node certificates has one CA; every node holds a
certificate issued by it, naming the node's addresses as SANs (what peers
check against the seed they dialled) and its place in the cluster as a URI
SAN (``policy.node_uri``: what a receiver reads to know who is calling)::

    make_ca()                          -> ca.crt, ca.key
    issue(ca, names..., uris...)       -> <node>.crt, <node>.key  (server+client auth)
    issue(ca, name, server=False)      -> a client certificate (client TLS)

Keys are ECDSA P-256: small, and a handshake costs a fraction of RSA's.

Dynomite's scheme has one RSA key shared by every node (``pem_key_file``).
``shared_key_certificate`` derives a self-signed certificate from that key
deterministically (fixed subject, serial from the key, fixed validity, and
RSA PKCS#1 v1.5 signatures, which are deterministic), so every node holding
the key derives the same certificate and trusts exactly it.

Certificates are built with ``cryptography``'s X.509 builder, which
pyOpenSSL itself points to for this since it removed ``X509Extension``
(SANs cannot be written with pyOpenSSL's own API any more); pyOpenSSL checks
what was loaded (``material``).  Nothing here does network I/O; ``write_key``
creates key files with mode 0600 before writing a byte.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
from collections.abc import Iterable

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Issued",
    "generate_shared_key",
    "issue",
    "make_ca",
    "shared_key_certificate",
    "write_key",
    "write_public",
]

_SIGNED_BY = hashes.SHA256()
#: RFC 5280 §4.1.2.5: "no well-defined expiration date".
_FOREVER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
#: Backdating tolerates clocks a little behind the issuer's.
_SKEW = datetime.timedelta(minutes=5)
SHARED_KEY_SUBJECT = "trinomite shared-key peer"

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@attrs.frozen
class Issued:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def key(self) -> Key:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError(f"expected an EC or RSA key, got {type(key).__name__}")
        return key


def _pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, unit: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trinomite")]
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]))
    return x509.Name(attributes)


def _window(
    days: int, not_before: datetime.datetime | None, not_after: datetime.datetime | None
) -> tuple[datetime.datetime, datetime.datetime]:
    start = not_before or datetime.datetime.now(datetime.UTC) - _SKEW
    return start, not_after or start + datetime.timedelta(days=days)


def make_ca(
    common_name: str = "trinomite cluster CA",
    *,
    days: int = 3650,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """A new self-signed CA that may sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(days, not_before, not_after)
    name = _name(common_name)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, _SIGNED_BY)
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem(key))


def _general_names(names: Iterable[str], uris: Iterable[str]) -> list[x509.GeneralName]:
    general: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    general.extend(x509.UniformResourceIdentifier(uri) for uri in dict.fromkeys(uris))
    return general


def issue(
    ca: Issued,
    common_name: str,
    names: Iterable[str] = (),
    uris: Iterable[str] = (),
    *,
    unit: str | None = None,
    days: int = 365,
    server: bool = True,
    client: bool = True,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> Issued:
    """An end-entity certificate signed by ``ca``.

    ``names`` become IP or DNS SANs (whichever each is), ``uris`` URI SANs.
    A node certificate is used in both roles (it accepts and dials peers),
    so it allows server and client authentication.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, ca_key = ca.certificate, ca.key
    start, end = _window(days, not_before, not_after)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, unit))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    general = _general_names(names, uris)
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    certificate = builder.sign(ca_key, _SIGNED_BY)
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem(key))


def generate_shared_key(bits: int = 2048) -> bytes:
    """A new RSA key in the PEM form Dynomite's ``pem_key_file`` holds."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def shared_key_certificate(key: rsa.RSAPrivateKey) -> bytes:
    """The self-signed certificate every holder of ``key`` derives identically (PEM)."""
    public = key.public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    fingerprint = hashlib.sha256(spki).hexdigest()
    name = _name(SHARED_KEY_SUBJECT, unit=f"key {fingerprint[:16]}")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(int(fingerprint[:30], 16) | 1)
        .not_valid_before(_EPOCH)
        .not_valid_after(_FOREVER)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, _SIGNED_BY)
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_key(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a private key file readable by its owner only (0600), replacing any."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o600)  # an existing file keeps its mode otherwise
        file.write(data)


def write_public(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a certificate (public) file, mode 0644."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(descriptor, "wb") as file:
        os.fchmod(file.fileno(), 0o644)  # whatever the umask or an existing file's mode
        file.write(data)
