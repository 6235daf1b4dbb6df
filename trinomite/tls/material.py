"""Loading a node's TLS material: checked with pyOpenSSL, served by stdlib ``ssl``.

Theory of operation
-------------------
A node secures links in one of two modes, chosen from its config::

    secure_server_option: none              -> no peer TLS at all
    ... and tls_cert_file set               -> CERTIFICATES: per-node certificate,
                                               key and cluster CA (recommended)
    ... and only pem_key_file               -> SHARED_KEY: Dynomite's one RSA key;
                                               every node derives the same
                                               self-signed certificate from it
                                               (certs.shared_key_certificate)

``load_peer_material``/``load_client_material`` read the files, check them
with pyOpenSSL before a single handshake depends on them (the certificate
parses and is within its validity window, the key matches it, it chains to
the CA), and build the ``ssl.SSLContext`` pair the links use: a server side
for accepted connections and a client side for dialled ones, both TLS 1.2 or
newer and both requiring the other end's certificate (mutual TLS).  Any
problem is a ``TlsConfigError`` whose message names the config key, the file
and what is wrong; reload keeps the old material when the new fails.

What chain verification cannot check is checked after the handshake by
``PeerMaterial.check_peer``: in CERTIFICATES mode that the certificate names
the address (or the seed's name) that was dialled, in SHARED_KEY mode that
the other end holds the very same key (a public-key pin).

``ssl.SSLContext.load_cert_chain`` reads files only, so the certificate
derived in SHARED_KEY mode is written to a private temporary directory,
loaded, and removed at once.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL, crypto

from ..config.model import ClientVerify, NodeConfig, SecureServerOption
from .certs import shared_key_certificate

__all__ = [
    "Mode",
    "PeerMaterial",
    "TlsConfigError",
    "load_client_context",
    "load_peer_material",
    "san_names",
    "subject_of",
]

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
SHARED_KEY_HELP = "python -m trinomite certs shared-key FILE"


class TlsConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message says which and why."""


class Mode(enum.Enum):
    CERTIFICATES = "certificates"
    SHARED_KEY = "shared-key"


def san_names(peer_cert: Mapping[str, object]) -> tuple[list[str], list[str]]:
    """``(dns and ip names, uris)`` from ``SSLObject.getpeercert()``'s dict."""
    names: list[str] = []
    uris: list[str] = []
    entries = peer_cert.get("subjectAltName", ())
    assert isinstance(entries, tuple)
    for kind, value in entries:
        if kind in ("DNS", "IP Address"):
            names.append(value.strip())
        elif kind == "URI":
            uris.append(value)
    return names, uris


def subject_of(peer_cert: Mapping[str, object]) -> str:
    """``CN=..., O=...`` from ``SSLObject.getpeercert()``'s dict, for logs and /info."""
    subject = peer_cert.get("subject", ())
    assert isinstance(subject, tuple)
    return ", ".join(f"{key}={value}" for rdn in subject for key, value in rdn)


def _name_matches(pattern: str, wanted: str) -> bool:
    try:
        return ipaddress.ip_address(pattern) == ipaddress.ip_address(wanted)
    except ValueError:
        pass
    pattern, wanted = pattern.lower().rstrip("."), wanted.lower().rstrip(".")
    if pattern.startswith("*."):  # RFC 6125: a wildcard matches one leftmost label
        head, _, rest = wanted.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == wanted


@attrs.frozen(eq=False)
class PeerMaterial:
    """The contexts peer links use, and the checks done after each handshake."""

    mode: Mode
    #: Accepts peer connections.
    server: ssl.SSLContext
    #: Dials peers.
    client: ssl.SSLContext
    #: SHARED_KEY: SHA-256 of the shared key's SubjectPublicKeyInfo.
    pin: bytes | None
    #: What was loaded, for /info and logs.
    describe: str
    not_after: datetime.datetime | None

    def check_peer(
        self, der: bytes | None, decoded: Mapping[str, object], wanted: Iterable[str]
    ) -> str:
        """Why the peer's certificate is refused after a good handshake; "" if it is not.

        ``wanted``: the names the dialled seed goes by (its host, its name);
        empty for an accepted connection, where the CA alone decides.
        """
        if der is None:
            return "the peer sent no certificate"
        if self.mode is Mode.SHARED_KEY:
            return "" if _spki_pin(der) == self.pin else "the peer holds a different shared key"
        wanted = [w for w in wanted if w]
        if not wanted:
            return ""
        names, _ = san_names(decoded)
        if any(_name_matches(name, w) for name in names for w in wanted):
            return ""
        shown = ", ".join(names) or "no DNS or IP names"
        return f"certificate names {shown}, not {' or '.join(wanted)}"


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def _spki_pin(der: bytes) -> bytes:
    public = x509.load_der_x509_certificate(der).public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def _read(key: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise TlsConfigError(f"{key}: {path}: {exc.strerror or exc}") from None


def _certificates(key: str, path: str) -> list[x509.Certificate]:
    data = _read(key, path)
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsConfigError(f"{key}: {path}: no PEM certificate in the file") from None


def _check_window(key: str, path: str, cert: x509.Certificate) -> None:
    now = datetime.datetime.now(datetime.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if end < now:
        raise TlsConfigError(f"{key}: {path}: the certificate expired on {end:%Y-%m-%d %H:%M} UTC")
    if start > now:
        raise TlsConfigError(
            f"{key}: {path}: the certificate is not valid before {start:%Y-%m-%d %H:%M} UTC"
        )


def _check_pair(
    cert_key: str, cert_path: str, cert: x509.Certificate, key_key: str, key_path: str
) -> None:
    data = _read(key_key, key_path)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TlsConfigError(f"{key_key}: {key_path}: not an unencrypted PEM private key") from None
    context = SSL.Context(SSL.TLS_METHOD)
    try:
        context.use_certificate(cert)
        context.use_privatekey(private)  # type: ignore[arg-type]
        context.check_privatekey()
    except (SSL.Error, TypeError):
        raise TlsConfigError(
            f"{key_key}: {key_path}: the key does not match the certificate in "
            f"{cert_key} ({cert_path})"
        ) from None


def _check_chain(
    cert_key: str, cert_path: str, chain: list[x509.Certificate], ca_key: str, ca_path: str
) -> None:
    store = crypto.X509Store()
    for ca in _certificates(ca_key, ca_path):
        store.add_cert(crypto.X509.from_cryptography(ca))
    leaf, *rest = (crypto.X509.from_cryptography(c) for c in chain)
    try:
        crypto.X509StoreContext(store, leaf, rest).verify_certificate()
    except crypto.X509StoreContextError as exc:
        raise TlsConfigError(
            f"{cert_key}: {cert_path}: not issued by the CA in {ca_key} ({ca_path}): {exc}"
        ) from None


def _checked(
    cert_key: str, cert_path: str, key_key: str, key_path: str, ca_key: str, ca_path: str | None
) -> x509.Certificate:
    chain = _certificates(cert_key, cert_path)
    _check_window(cert_key, cert_path, chain[0])
    _check_pair(cert_key, cert_path, chain[0], key_key, key_path)
    if ca_path is not None:
        _check_chain(cert_key, cert_path, chain, ca_key, ca_path)
    return chain[0]


def _context(purpose: ssl.Purpose) -> ssl.SSLContext:
    server = purpose is ssl.Purpose.CLIENT_AUTH
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION  # a read never needs to write (stream)
    context.check_hostname = False  # names are checked by check_peer
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load_chain(context: ssl.SSLContext, cert_key: str, cert_path: str, key_path: str) -> None:
    try:
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"{cert_key}: {cert_path}: {exc}") from None


@contextmanager
def _temporary_file(data: bytes) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="trinomite-tls-") as directory:
        path = os.path.join(directory, "derived.crt")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        yield path


def _certificate_material(config: NodeConfig) -> PeerMaterial:
    cert_path = config.tls_cert_file
    assert cert_path is not None
    key_path = config.tls_key_file or cert_path
    key_key = "tls_key_file" if config.tls_key_file else "tls_cert_file"
    if config.tls_ca_file is None:
        raise TlsConfigError(
            "tls_ca_file: not set; per-node certificates need the cluster CA that peers' "
            "certificates are checked against"
        )
    ca_path = config.tls_ca_file
    cert = _checked("tls_cert_file", cert_path, key_key, key_path, "tls_ca_file", ca_path)
    contexts = []
    for purpose in (ssl.Purpose.CLIENT_AUTH, ssl.Purpose.SERVER_AUTH):
        context = _context(purpose)
        _load_chain(context, "tls_cert_file", cert_path, key_path)
        try:
            context.load_verify_locations(cafile=config.tls_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"tls_ca_file: {config.tls_ca_file}: {exc}") from None
        contexts.append(context)
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    subject = str(names[0].value) if names else "?"
    return PeerMaterial(
        Mode.CERTIFICATES,
        contexts[0],
        contexts[1],
        None,
        f"certificate {subject} ({cert_path})",
        cert.not_valid_after_utc,
    )


def _shared_key_material(config: NodeConfig) -> PeerMaterial:
    path = config.pem_key_file
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise TlsConfigError(
            f"pem_key_file: {path}: {exc.strerror or exc}; secure_server_option: "
            f"{config.secure_server_option.value} needs either per-node certificates "
            f"(tls_cert_file, tls_key_file, tls_ca_file: see 'python -m trinomite certs') "
            f"or the key every node shares (make one with '{SHARED_KEY_HELP}')"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise TlsConfigError(f"pem_key_file: {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TlsConfigError(f"pem_key_file: {path}: not an RSA key (Dynomite's key is RSA)")
    derived = shared_key_certificate(key)
    contexts = []
    with _temporary_file(derived) as cert_path:
        for purpose in (ssl.Purpose.CLIENT_AUTH, ssl.Purpose.SERVER_AUTH):
            context = _context(purpose)
            _load_chain(context, "pem_key_file", cert_path, path)
            context.load_verify_locations(cadata=derived.decode())
            contexts.append(context)
    pin = _spki_pin(_der(derived))
    return PeerMaterial(
        Mode.SHARED_KEY,
        contexts[0],
        contexts[1],
        pin,
        f"shared key {path} (sha256 {pin.hex()[:16]})",
        None,
    )


def peer_tls_wanted(config: NodeConfig) -> bool:
    """Whether this node has peer links that ``secure_server_option`` may secure."""
    has_peers = bool(config.dyn_seeds) or config.dyn_listen is not None
    return config.secure_server_option is not SecureServerOption.NONE and has_peers


def load_peer_material(config: NodeConfig) -> PeerMaterial | None:
    """The peer links' TLS material, or None when no link is secured."""
    if not peer_tls_wanted(config):
        return None
    if config.tls_cert_file is not None:
        return _certificate_material(config)
    return _shared_key_material(config)


_VERIFY = {
    ClientVerify.NONE: ssl.CERT_NONE,
    ClientVerify.OPTIONAL: ssl.CERT_OPTIONAL,
    ClientVerify.REQUIRED: ssl.CERT_REQUIRED,
}


def load_client_context(config: NodeConfig) -> ssl.SSLContext | None:
    """The client listener's server-side context, or None without ``client_tls``."""
    if not config.client_tls:
        return None
    cert_key, cert_path = "client_tls_cert_file", config.client_tls_cert_file
    if cert_path is None:
        cert_key, cert_path = "tls_cert_file", config.tls_cert_file
    if cert_path is None:
        raise TlsConfigError(
            "client_tls: true needs a certificate: set client_tls_cert_file (or tls_cert_file)"
        )
    key_key, key_path = "client_tls_key_file", config.client_tls_key_file
    if key_path is None:
        key_key, key_path = ("tls_key_file", config.tls_key_file)
    if key_path is None:
        key_key, key_path = cert_key, cert_path
    ca_key, ca_path = "client_tls_ca_file", config.client_tls_ca_file
    if ca_path is None:
        ca_key, ca_path = "tls_ca_file", config.tls_ca_file
    verify = config.client_tls_verify
    if verify is not ClientVerify.NONE and ca_path is None:
        raise TlsConfigError(
            f"client_tls_verify: {verify.value} needs client_tls_ca_file (or tls_ca_file), "
            "the CA client certificates are checked against"
        )
    _checked(cert_key, cert_path, key_key, key_path, ca_key, None)
    context = _context(ssl.Purpose.CLIENT_AUTH)
    _load_chain(context, cert_key, cert_path, key_path)
    context.verify_mode = _VERIFY[verify]
    if verify is not ClientVerify.NONE and ca_path is not None:
        try:
            context.load_verify_locations(cafile=ca_path)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(f"{ca_key}: {ca_path}: {exc}") from None
    return context
