"""``python -m trinomite certs``: make a cluster CA, node and client certificates, a shared key.

Theory of operation
-------------------
Four subcommands, each a thin shell around ``certs`` (which makes the
material; nothing here does cryptography itself)::

    certs ca DIR                   make_ca()          -> DIR/ca.crt, DIR/ca.key
    certs node DIR CONFIG...       load_config(CONFIG), issue(CA, ...)
                                                      -> DIR/<stem>.crt, DIR/<stem>.key
                                   and print the tls_* lines each CONFIG needs
    certs client DIR NAME          issue(CA, NAME, server=False, client=True)
                                                      -> DIR/NAME.crt, DIR/NAME.key
    certs shared-key FILE          generate_shared_key()  -> FILE (Dynomite's pem_key_file)

A node certificate says what ``material`` and ``policy`` check on the other
end of a peer link: its SANs name the node's ``dyn_listen`` host (what a peer
that dialled the seed checks), its ``listen`` host when that is TCP (the
certificate also serves the client listener by default), every ``--name``
(a seed's ``[name]``) and ``localhost`` beside a loopback address; its URI
SAN is ``policy.node_uri`` of the node's place, which tells a receiver who
is calling; CN ``host:port`` and OU ``dc/rack`` are for people reading it.

Every input is checked before any file is written: all configs load and
have ``dyn_listen``, no two give the same file name, the CA loads, its key
matches it and it is a CA.  Files that cannot be made again (``ca.key``,
``ca.crt`` and a shared key) are never replaced without ``--force``; node
and client certificates are replaced (re-running the command renews them).
Keys are written 0600 (``certs.write_key``), certificates 0644.

Exit codes: 0 done (and ``--help``), 1 a problem with the files (the message
says which and what to do), 2 bad usage.  ``main`` never calls ``sys.exit``:
argparse's own ``--help`` and ``error`` exits are replaced by exceptions.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..config.load import ConfigError, load_config
from ..config.model import HostPort, NodeConfig, SecureServerOption
from . import certs
from .policy import node_uri

__all__ = ["main"]

PROG = "python -m trinomite certs"
CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_DAYS = 3650
NODE_DAYS = 365
SHARED_KEY_BITS = 2048
#: Below 2048 bits OpenSSL's default security level refuses the key in a handshake.
MIN_BITS = 2048
MAX_BITS = 16384
#: Plain YAML scalars this safe need no quotes.
_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./~+ -]*")


class CommandError(Exception):
    """A problem with the files (exit 1); the message says what and what to do."""


class _UsageError(Exception):
    def __init__(self, message: str, parser: argparse.ArgumentParser) -> None:
        super().__init__(message)
        self.parser = parser


class _HelpRequested(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message, self)


class _Help(argparse.Action):
    """``-h``/``--help``: show this (sub)command's help, without argparse's exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        raise _HelpRequested(parser)


def _number(low: int, high: int, what: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected {what} from {low} to {high}, got {text!r}")
        return int(text)

    return convert


_days = _number(1, 100 * 366, "a number of days")
_bits = _number(MIN_BITS, MAX_BITS, "a key size in bits")


def _file_stem(text: str) -> str:
    if not text or text in (".", "..") or "/" in text or os.sep in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be a file name")
    return text


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        add_help=False,
        description="Make the files that secure a trinomite cluster: a cluster CA, "
        "per-node certificates (recommended), client certificates, or Dynomite's shared key.",
        epilog=f"Start with '{PROG} ca certs', then '{PROG} node certs conf/NODE.yml ...'.",
    )
    parser.add_argument("-h", "--help", action=_Help, help="show this help")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{ca,node,client,shared-key}"
    )

    def command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, add_help=False, help=summary, description=description)
        sub.add_argument("-h", "--help", action=_Help, help="show this help")
        return sub

    ca = command(
        "ca",
        "make the cluster CA",
        f"Make the cluster CA: DIR/{CA_CERT} (every node's tls_ca_file) and DIR/{CA_KEY} "
        "(keep it secret: it signs node and client certificates).",
    )
    ca.add_argument("dir", metavar="DIR", help="where to write ca.crt and ca.key")
    ca.add_argument("--days", type=_days, default=CA_DAYS, metavar="N", help="validity (3650)")
    ca.add_argument("--name", default="trinomite cluster CA", metavar="CN", help="the CA's CN")
    ca.add_argument("--force", action="store_true", help="replace an existing CA")

    node = command(
        "node",
        "issue node certificates from node configs",
        "Issue one certificate per node config (Dynomite YAML), named after its dyn_listen, "
        "listen and place (datacenter/rack), signed by the CA in --ca-dir; write "
        "DIR/<config stem>.crt and .key (replacing old ones) and print the lines to add to "
        "each config.",
    )
    node.add_argument("dir", metavar="DIR", help="where to write the certificates and keys")
    node.add_argument("configs", nargs="+", metavar="CONFIG", help="a node's config file")
    node.add_argument("--days", type=_days, default=NODE_DAYS, metavar="N", help="validity (365)")
    node.add_argument(
        "--name",
        dest="names",
        action="append",
        default=[],
        metavar="NAME",
        help="another DNS name or IP address for every certificate (a seed's name peers "
        "dial); repeatable",
    )
    node.add_argument("--ca-dir", metavar="CADIR", help="where ca.crt and ca.key are (DIR)")

    client = command(
        "client",
        "issue a client certificate",
        "Issue a certificate for a client of the client listener (client authentication "
        "only), for client_tls with client_tls_verify; write DIR/NAME.crt and DIR/NAME.key.",
    )
    client.add_argument("dir", metavar="DIR", help="where to write the certificate and key")
    client.add_argument("name", type=_file_stem, metavar="NAME", help="the client's name (CN)")
    client.add_argument("--days", type=_days, default=NODE_DAYS, metavar="N", help="validity")
    client.add_argument("--ca-dir", metavar="CADIR", help="where ca.crt and ca.key are (DIR)")

    shared = command(
        "shared-key",
        "make Dynomite's shared RSA key (pem_key_file)",
        "Make the RSA key every node holds as pem_key_file (Dynomite's scheme); peer links "
        "then run TLS pinned to it.  Per-node certificates are recommended instead.",
    )
    shared.add_argument("file", metavar="FILE", help="where to write the key (mode 0600)")
    shared.add_argument(
        "--bits", type=_bits, default=SHARED_KEY_BITS, metavar="N", help="key size (2048)"
    )
    shared.add_argument("--force", action="store_true", help="replace an existing file")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``certs`` with ``argv`` (the words after ``certs``); the exit code."""
    parser = _build_parser()
    try:
        args = parser.parse_args(list(argv))
    except _HelpRequested as help_:
        print(help_.parser.format_help(), end="")
        return 0
    except _UsageError as exc:
        print(f"{exc.parser.prog}: {exc}", file=sys.stderr)
        print(exc.parser.format_usage(), end="", file=sys.stderr)
        return 2
    run = _COMMANDS[args.command]
    try:
        run(args)
    except CommandError as exc:
        print(f"{PROG} {args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


# ---- the subcommands ---------------------------------------------------------


def _ca(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    existing = [str(p) for p in (key_path, cert_path) if p.exists()]
    if existing and not args.force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise CommandError(
            f"{' and '.join(existing)} already {verb}; a new CA makes every certificate "
            "the old one issued untrusted: use another DIR, or --force"
        )
    ca = certs.make_ca(args.name, days=args.days)
    _make_directory(directory)
    _write_key(key_path, ca.key_pem)
    _write_certificate(cert_path, ca.cert_pem)
    until = ca.certificate.not_valid_after_utc
    print(f"wrote {cert_path}: the cluster CA, {args.name!r}, valid until {until:%Y-%m-%d}")
    print("  every node's tls_ca_file (and client_tls_ca_file for client certificates)")
    print(f"wrote {key_path}: the CA's private key (mode 0600); keep it secret")
    print(f"next: {PROG} node {_shell(args.dir)} CONFIG [CONFIG ...]")


@attrs.frozen
class _NodePlan:
    """One node certificate to issue: where from, what it names, where it goes."""

    source: str
    config: NodeConfig
    common_name: str
    names: tuple[str, ...]
    uri: str
    unit: str
    cert_path: str
    key_path: str


def _node(args: argparse.Namespace) -> None:
    ca_dir = args.ca_dir or args.dir
    extra = [_host_name(name) for name in args.names]
    plans = [_plan(source, args.dir, extra) for source in args.configs]
    _check_paths([(plan.cert_path, plan.key_path, plan.source) for plan in plans], ca_dir)
    ca = _load_ca(ca_dir)
    for plan in plans:
        issued = certs.issue(
            ca, plan.common_name, plan.names, [plan.uri], unit=plan.unit, days=args.days
        )
        _warn_outlives(issued, ca, plan.cert_path)
        _make_directory(Path(args.dir))
        _write_key(plan.key_path, issued.key_pem)
        _write_certificate(plan.cert_path, issued.cert_pem)
    ca_file = os.path.join(ca_dir, CA_CERT)
    print(f"# wrote {len(plans)} node certificate(s) to {args.dir}; add to each node's config:")
    for plan in plans:
        print()
        print(f"# {plan.source}")
        if plan.config.secure_server_option is SecureServerOption.NONE:
            print("  # and set secure_server_option (datacenter, rack or all): it is none here")
        print(f"  tls_cert_file: {_yaml(plan.cert_path)}")
        print(f"  tls_key_file: {_yaml(plan.key_path)}")
        print(f"  tls_ca_file: {_yaml(ca_file)}")


def _plan(source: str, directory: str, extra: list[str]) -> _NodePlan:
    try:
        config = load_config(source)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    peer = config.dyn_listen
    if peer is None:
        raise CommandError(
            f"{source}: no dyn_listen: a node certificate names the node's peer address, "
            "so the node needs dyn_listen: host:port"
        )
    hosts = [peer.host]
    if isinstance(config.listen, HostPort):
        hosts.append(config.listen.host)
    wildcard = [host for host in hosts if _is_unspecified(host)]
    hosts = [host for host in hosts if host and host not in wildcard]
    if wildcard and not extra:
        print(
            f"{PROG} node: warning: {source}: {' and '.join(dict.fromkeys(wildcard))} "
            "listens on every address and names none; give the names peers dial "
            "(its seed entries) with --name",
            file=sys.stderr,
        )
    names = [*hosts, *extra]
    if any(_is_loopback(name) for name in names):
        names.append("localhost")
    stem = Path(source).stem
    return _NodePlan(
        source=source,
        config=config,
        common_name=str(peer),
        names=tuple(dict.fromkeys(names)),
        uri=node_uri(config.datacenter, config.rack, peer.host, peer.port),
        unit=f"{config.datacenter}/{config.rack}",
        cert_path=os.path.join(directory, f"{stem}.crt"),
        key_path=os.path.join(directory, f"{stem}.key"),
    )


def _client(args: argparse.Namespace) -> None:
    ca_dir = args.ca_dir or args.dir
    cert_path = os.path.join(args.dir, f"{args.name}.crt")
    key_path = os.path.join(args.dir, f"{args.name}.key")
    _check_paths([(cert_path, key_path, args.name)], ca_dir)
    ca = _load_ca(ca_dir)
    issued = certs.issue(ca, args.name, unit="client", days=args.days, server=False, client=True)
    _warn_outlives(issued, ca, cert_path)
    _make_directory(Path(args.dir))
    _write_key(key_path, issued.key_pem)
    _write_certificate(cert_path, issued.cert_pem)
    until = issued.certificate.not_valid_after_utc
    ca_file = os.path.join(ca_dir, CA_CERT)
    print(f"wrote {cert_path} and {key_path}: client {args.name!r}, valid until {until:%Y-%m-%d}")
    print(f"the client presents them and trusts {ca_file}; on the nodes:")
    print("  client_tls: true")
    print("  client_tls_verify: required")
    print(f"  client_tls_ca_file: {_yaml(ca_file)}")


def _shared_key(args: argparse.Namespace) -> None:
    path = Path(args.file)
    if path.exists() and not args.force:
        raise CommandError(
            f"{path} already exists; every node holds the same key, so replacing it means "
            "replacing it on every node at once: use another FILE, or --force"
        )
    key = certs.generate_shared_key(args.bits)
    _make_directory(path.parent)
    _write_key(path, key)
    print(f"wrote {path}: a {args.bits}-bit RSA key (mode 0600), Dynomite's shared pem_key_file")
    print("every node must hold this same file, and set:")
    print(f"  pem_key_file: {_yaml(str(path))}")
    print("  secure_server_option: all    # or datacenter, or rack")
    print(
        "note: per-node certificates are recommended instead (one leaked key does not expose "
        f"the whole cluster, and nodes can be told apart): {PROG} ca --help"
    )


_COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "ca": _ca,
    "node": _node,
    "client": _client,
    "shared-key": _shared_key,
}


# ---- helpers -----------------------------------------------------------------


def _load_ca(directory: str) -> certs.Issued:
    """The CA in ``directory``, checked: it parses, its key matches it, it may sign."""
    cert_path = os.path.join(directory, CA_CERT)
    key_path = os.path.join(directory, CA_KEY)
    missing = [p for p in (cert_path, key_path) if not os.path.exists(p)]
    if missing:
        raise CommandError(
            f"no CA in {directory} ({' and '.join(missing)} missing): make one with "
            f"'{PROG} ca {_shell(directory)}', or give its directory with --ca-dir"
        )
    ca = certs.Issued(_read(cert_path), _read(key_path))
    try:
        certificate = ca.certificate
    except ValueError:
        raise CommandError(f"{cert_path}: not a PEM certificate") from None
    try:
        key = ca.key
    except (ValueError, TypeError):
        raise CommandError(f"{key_path}: not an unencrypted EC or RSA PEM private key") from None
    if not _same_public_key(key, certificate):
        raise CommandError(f"{key_path}: not the key of the certificate in {cert_path}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        is_ca = constraints.value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise CommandError(f"{cert_path}: not a CA certificate (made by '{PROG} ca'?)")
    if certificate.not_valid_after_utc < datetime.datetime.now(datetime.UTC):
        until = certificate.not_valid_after_utc
        raise CommandError(f"{cert_path}: the CA expired on {until:%Y-%m-%d}; make a new one")
    return ca


def _same_public_key(key: certs.Key, certificate: x509.Certificate) -> bool:
    public = certificate.public_key()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return isinstance(public, ec.EllipticCurvePublicKey) and (
            public.public_numbers() == key.public_key().public_numbers()
        )
    if isinstance(key, rsa.RSAPrivateKey):
        return isinstance(public, rsa.RSAPublicKey) and (
            public.public_numbers() == key.public_key().public_numbers()
        )
    return False  # pragma: no cover  (Issued.key returns EC or RSA only)


def _check_paths(outputs: list[tuple[str, str, str]], ca_dir: str) -> None:
    """Refuse outputs that overwrite each other or the CA (a config named ca.yml)."""
    taken = {
        os.path.abspath(os.path.join(ca_dir, CA_CERT)): "the CA",
        os.path.abspath(os.path.join(ca_dir, CA_KEY)): "the CA",
    }
    for cert_path, key_path, source in outputs:
        for path in (cert_path, key_path):
            other = taken.get(os.path.abspath(path))
            if other is not None:
                raise CommandError(
                    f"{source} would write {path}, as {other} does: rename it, or use another DIR"
                )
            taken[os.path.abspath(path)] = source


def _warn_outlives(issued: certs.Issued, ca: certs.Issued, path: str) -> None:
    ca_end = ca.certificate.not_valid_after_utc
    if issued.certificate.not_valid_after_utc > ca_end:
        print(
            f"{PROG}: warning: {path} is valid after the CA expires ({ca_end:%Y-%m-%d}); "
            "it is refused from then on",
            file=sys.stderr,
        )


def _host_name(text: str) -> str:
    """A ``--name``: an IP address, or a DNS name (ASCII, no spaces)."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if not text or not text.isascii() or any(c.isspace() or c in "/:@" for c in text):
        raise CommandError(f"--name {text!r}: expected a DNS name or an IP address")
    return text


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(
            f"cannot make the directory {directory}: {exc.strerror or exc}"
        ) from None


def _write_key(path: str | Path, data: bytes) -> None:
    try:
        certs.write_key(path, data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_certificate(path: str | Path, data: bytes) -> None:
    try:
        certs.write_public(path, data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror or exc}") from None


def _yaml(text: str) -> str:
    """``text`` as a YAML scalar: plain when safe, else single-quoted."""
    if _PLAIN.fullmatch(text) and not text.endswith(" "):
        return text
    return "'" + text.replace("'", "''") + "'"


def _shell(text: str) -> str:
    return shlex.quote(text)
