"""Certificates for in-process test clusters.

Theory of operation
-------------------
``ClusterCertificates(directory)`` makes a cluster CA and, per node, the
certificate ``trinomite certs node`` would make (loopback SANs, the node's
place as a URI SAN), written as files, since nodes read their material from
files as in production.  Hand it to ``open_cluster`` as ``per_node``::

    certs = ClusterCertificates(tmp_path)
    async with open_cluster(layout, per_node=certs, secure_server_option=ALL):
        ...

``certs.override[(dc, rack, index)] = make`` replaces one node's settings
with ``make(member)`` (a certificate from another CA, an expired one).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..tls import certs
from ..tls.policy import node_uri
from .cluster import ClusterNode

__all__ = ["ClusterCertificates", "write_pair"]


def write_pair(
    directory: str | os.PathLike[str], stem: str, issued: certs.Issued
) -> dict[str, str]:
    """Write ``<stem>.crt`` and ``<stem>.key``; the ``tls_*`` keys naming them."""
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    cert, key = base / f"{stem}.crt", base / f"{stem}.key"
    certs.write_public(cert, issued.cert_pem)
    certs.write_key(key, issued.key_pem)
    return {"tls_cert_file": str(cert), "tls_key_file": str(key)}


class ClusterCertificates:
    """A CA and one certificate per node of a test cluster (``per_node`` hook)."""

    def __init__(self, directory: str | os.PathLike[str], *, days: int = 30) -> None:
        self.directory = Path(directory)
        self.ca = certs.make_ca("trinomite test CA", days=days)
        self.days = days
        self.ca_file = str(self.directory / "ca.crt")
        self.directory.mkdir(parents=True, exist_ok=True)
        certs.write_public(self.ca_file, self.ca.cert_pem)
        #: Per-node replacements: (dc, rack, index) -> member -> its tls_* settings.
        self.override: dict[tuple[str, str, int], Callable[[ClusterNode], Mapping[str, Any]]] = {}

    def issue(
        self, member: ClusterNode, ca: certs.Issued | None = None, **kwargs: Any
    ) -> certs.Issued:
        """The certificate ``trinomite certs node`` would give ``member``."""
        kwargs.setdefault("days", self.days)
        return certs.issue(
            ca or self.ca,
            f"127.0.0.1:{member.peer_port}",
            ["127.0.0.1", "localhost"],
            [node_uri(member.dc, member.rack, "127.0.0.1", member.peer_port)],
            unit=f"{member.dc}/{member.rack}",
            **kwargs,
        )

    def __call__(self, member: ClusterNode) -> Mapping[str, Any]:
        override = self.override.get((member.dc, member.rack, member.index))
        if override is not None:
            return {"tls_ca_file": self.ca_file, **override(member)}
        stem = f"{member.dc}-{member.rack}-{member.index}"
        return {**write_pair(self.directory, stem, self.issue(member)), "tls_ca_file": self.ca_file}
