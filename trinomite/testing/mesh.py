"""A fault proxy on every directed peer link of a test cluster: partitions on demand.

Theory of operation
-------------------
With ``open_cluster(..., fault_proxies=True)`` every ordered pair of nodes
(a, b) gets its own ``FaultProxy`` in front of b's peer port, and a's seed
for b names that proxy instead of b::

    a --dials--> proxy(a->b) --> b.peer_port
    b --dials--> proxy(b->a) --> a.peer_port

Dynomite nodes send requests only on the links they dial (a peer answers
on the connection it was asked on), so cutting proxy(a->b) and
proxy(b->a) separates a and b completely, in both directions, while
clients and every other link carry on.

``partition(side_a, side_b, how)`` does that for every pair across the two
sides: ``how="reject"`` (default) is a firewall's REJECT: live connections
are reset and new connects refused, so requests across fail at once with
"not connected"; ``how="drop"`` is a blackhole: connections stay open and
nothing arrives, so requests across time out.  ``heal()`` puts every proxy
back to pass-through; the nodes reconnect by themselves (with backoff).

The proxies run in the cluster's nursery and live as long as the cluster;
they add one loopback hop to each peer request.
"""

from __future__ import annotations

from collections.abc import Iterable

import trio

from .faultproxy import FaultProxy, serve_fault_proxy
from .members import HOST, ClusterNode

__all__ = ["PARTITION_MODES", "PeerMesh", "Side"]

#: ``partition(how=...)`` values.
PARTITION_MODES = ("reject", "drop")
Side = ClusterNode | Iterable[ClusterNode]


def _members(side: Side) -> list[ClusterNode]:
    return [side] if isinstance(side, ClusterNode) else list(side)


class PeerMesh:
    """The proxies of one cluster, by (dialling node, dialled node)."""

    def __init__(self) -> None:
        self.proxies: dict[tuple[ClusterNode, ClusterNode], FaultProxy] = {}

    async def open(self, nursery: trio.Nursery, members: list[ClusterNode]) -> None:
        """Start a proxy for every ordered pair of ``members`` in ``nursery``."""
        for a in members:
            for b in members:
                if a is not b:
                    proxy: FaultProxy = await nursery.start(serve_fault_proxy, HOST, b.peer_port)
                    self.proxies[(a, b)] = proxy

    def port(self, observer: ClusterNode, other: ClusterNode) -> int:
        """The port ``observer`` dials to reach ``other``."""
        return int(self.proxies[(observer, other)].port)

    def partition(self, side_a: Side, side_b: Side, how: str = "reject") -> None:
        """Cut every link between a node of ``side_a`` and one of ``side_b``, both ways."""
        if how not in PARTITION_MODES:
            raise ValueError(f"how must be one of {', '.join(PARTITION_MODES)}, not {how!r}")
        a_nodes, b_nodes = _members(side_a), _members(side_b)
        if set(a_nodes) & set(b_nodes):
            raise ValueError("a node cannot be on both sides of a partition")
        for a in a_nodes:
            for b in b_nodes:
                for pair in ((a, b), (b, a)):
                    proxy = self.proxies[pair]
                    if how == "reject":
                        proxy.reject()
                    else:
                        proxy.drop()

    def heal(self) -> None:
        """End every partition: all links pass traffic again."""
        for proxy in self.proxies.values():
            proxy.pass_through()

    def cut(self, observer: ClusterNode, other: ClusterNode) -> bool:
        """Whether ``observer``'s link to ``other`` is partitioned."""
        return self.proxies[(observer, other)].mode.value in PARTITION_MODES
