"""Which peer links are secured, and who is at the other end of one: pure rules.

Theory of operation
-------------------
``secure_server_option`` keeps Dynomite's meaning (dynomite.md §5.4,
``is_secure``): it decides, per pair of nodes, whether their link is
encrypted::

    none        never
    datacenter  iff the datacenters differ
    rack        iff the racks differ or the datacenters differ
    all         always

trinomite secures a link with mutual TLS instead of Dynomite's AES/RSA
scheme, and checks that both ends agree.  Agreement can only be checked when
the receiving end knows who is calling:

* over TLS, the caller's certificate says so.  Certificates made by
  ``trinomite certs`` carry the node's place in the cluster as a URI SAN,
  ``trinomite://<dc>/<rack>/<host>:<port>`` (``node_uri``/``parse_node_uri``);
  other certificates are matched by address against the known peers, and
  when that is ambiguous (several nodes on one host) the caller is unknown;
* a plaintext frame only says whether the caller is in the same datacenter
  (the header's ``same_dc``), so a plaintext caller in another DC is known
  to need TLS under ``datacenter`` and ``rack``, and every one under ``all``.

``Expectation`` is what a receiver concludes; the peer server refuses a link
that must be TLS but is not, or is TLS but must not be.  Nothing here does
I/O.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from ..config.model import SecureServerOption
from ..ring.topology import PeerInfo

__all__ = [
    "URI_SCHEME",
    "Expectation",
    "identify",
    "is_secure",
    "node_uri",
    "parse_node_uri",
    "plaintext_expectation",
]

URI_SCHEME = "trinomite"


def is_secure(
    option: SecureServerOption, local_dc: str, local_rack: str, peer_dc: str, peer_rack: str
) -> bool:
    """Dynomite's ``is_secure``: whether the link between two nodes is encrypted."""
    if option is SecureServerOption.ALL:
        return True
    if option is SecureServerOption.DATACENTER:
        return peer_dc != local_dc
    if option is SecureServerOption.RACK:
        return peer_dc != local_dc or peer_rack != local_rack
    return False


def node_uri(dc: str, rack: str, host: str, port: int) -> str:
    """The URI SAN naming a node's place in the cluster."""
    address = f"[{host}]" if ":" in host else host
    return f"{URI_SCHEME}://{quote(dc, safe='')}/{quote(rack, safe='')}/{address}:{port}"


def parse_node_uri(uri: str) -> tuple[str, str, str, int] | None:
    """``(dc, rack, host, port)`` from ``node_uri``'s form; None for any other URI."""
    try:
        parts = urlsplit(uri)
        if parts.scheme != URI_SCHEME:
            return None
        dc = unquote(parts.netloc)
        rack, address = parts.path.lstrip("/").split("/", 1)
        host, _, port = address.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not (dc and rack and host) or not port.isdigit():
            return None
        return dc, unquote(rack), host, int(port)
    except ValueError:
        return None


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def identify(
    peers: Iterable[PeerInfo], uris: Iterable[str], names: Iterable[str]
) -> PeerInfo | None:
    """The one known peer a certificate names, or None when it names none or several.

    ``uris`` are the certificate's URI SANs; ``names`` its DNS and IP SANs.
    A ``node_uri`` picks the peer with that address; otherwise the
    certificate's names are matched against each peer's host and alias.
    """
    peers = list(peers)
    for uri in uris:
        place = parse_node_uri(uri)
        if place is None:
            continue
        dc, rack, host, port = place
        for peer in peers:
            if peer.port == port and _same_host(peer.host, host):
                return peer
        # A node this one does not know (yet): its place is still certain.
        return PeerInfo(f"{host}:{port}", host, port, dc, rack, ())
    names = list(names)
    matches = [
        peer
        for peer in peers
        if any(_same_host(name, peer.host) or name == peer.alias for name in names)
    ]
    return matches[0] if len(matches) == 1 else None


class Expectation(enum.Enum):
    """What a receiver concludes about one inbound link."""

    #: The link must be TLS and is not (or must not be and is).
    MISMATCH = "mismatch"
    #: The rules hold, or the caller cannot be told apart well enough to say.
    FINE = "fine"


def plaintext_expectation(option: SecureServerOption, same_dc: bool) -> Expectation:
    """A plaintext frame arrived; ``same_dc`` is what its header says of the caller."""
    if option is SecureServerOption.ALL:
        return Expectation.MISMATCH
    if option is not SecureServerOption.NONE and not same_dc:
        return Expectation.MISMATCH
    return Expectation.FINE
