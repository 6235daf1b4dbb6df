"""The cluster a config describes: this node plus its ``dyn_seeds``, as a ``Topology``.

The ring package knows nothing of configs; this is the one place that turns
a ``NodeConfig`` into the routing layer's immutable value.
"""

from __future__ import annotations

from ..ring.topology import PeerInfo, Topology
from .model import NodeConfig, Seed

__all__ = ["seed_peer", "topology_of"]


def seed_peer(seed: Seed) -> PeerInfo:
    """A ``dyn_seeds`` entry (or a seed provider's) as the node it names."""
    name = f"{seed.host}:{seed.port}"
    return PeerInfo(name, seed.host, seed.port, seed.dc, seed.rack, seed.tokens, alias=seed.name)


def topology_of(config: NodeConfig) -> Topology:
    """This node and its seeds; before ``dyn_listen`` is bound its port may be 0."""
    listen = config.dyn_listen
    host, port = (listen.host, listen.port) if listen else ("0.0.0.0", 0)
    local = PeerInfo(
        f"{host}:{port}", host, port, config.datacenter, config.rack, config.tokens, True
    )
    others = [seed_peer(s) for s in config.dyn_seeds]
    tag = config.hash_tag.encode() if config.hash_tag else None
    return Topology.from_peers(local, others, config.hash, tag)
