"""The cluster a config describes: this node plus its ``dyn_seeds``, as a ``Topology``.

The ring package knows nothing of configs; this is the one place that turns
a ``NodeConfig`` into the routing layer's immutable value.
"""

from __future__ import annotations

from ..ring.topology import PeerInfo, Topology
from .model import NodeConfig

__all__ = ["topology_of"]


def topology_of(config: NodeConfig) -> Topology:
    """This node and its seeds; before ``dyn_listen`` is bound its port may be 0."""
    listen = config.dyn_listen
    host, port = (listen.host, listen.port) if listen else ("0.0.0.0", 0)
    local = PeerInfo(
        f"{host}:{port}", host, port, config.datacenter, config.rack, config.tokens, True
    )
    others = [
        PeerInfo(f"{s.host}:{s.port}", s.host, s.port, s.dc, s.rack, s.tokens, alias=s.name)
        for s in config.dyn_seeds
    ]
    tag = config.hash_tag.encode() if config.hash_tag else None
    return Topology.from_peers(local, others, config.hash, tag)
