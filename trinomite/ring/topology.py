"""The cluster as one immutable value: datacenters of racks of token rings.

Theory of operation
-------------------
Every rack holds the whole data set; inside a rack keys are sharded over a
token ring.  A ``Topology`` is built once from the node's config (its own
``dc``/``rack``/``tokens`` plus ``dyn_seeds``: ``config.topology_of``) and never mutated: a future
membership change builds a new one and swaps the reference.

    Topology
      local: PeerInfo                 this node
      peers: (PeerInfo, ...)          every node, this one included
      racks: {dc: {rack: RackRing}}   racks sorted by name, as Dynomite does

Ownership follows Dynomite's ``vnode_dispatch`` exactly (dynomite.md §4.1):
the owner of a key token is the first ring entry whose token is >= the key
token; a key token above the largest token wraps to the smallest.  So a node
owns (previous token, own token].  A node may hold several tokens.

The remote-DC replication rack follows ``preselect_remote_rack_for_replication``:
our rack's index among our DC's sorted racks, modulo the remote DC's rack
count; the DC's other racks follow in order, for failover.

Pure code: no I/O, no clock, no trio.
"""

from __future__ import annotations

import bisect
import functools
import itertools
from collections.abc import Callable, Mapping

import attrs

from .hashing import lookup, tagged

__all__ = ["LOCAL_TOKEN", "PeerInfo", "RackRing", "Topology", "TopologyError"]

#: The "token" of a key whose hashed part is empty: routed to the local node.
LOCAL_TOKEN = -1


class TopologyError(ValueError):
    """The configured cluster cannot be routed (e.g. a rack with no tokens)."""


@attrs.frozen
class PeerInfo:
    """One node of the cluster, as the routing layer sees it."""

    #: Unique name: the node's ``dyn_listen`` address, ``host:port``.
    name: str
    host: str
    port: int
    dc: str
    rack: str
    tokens: tuple[int, ...]
    local: bool = False
    #: The seed's optional ``[name]`` (``host:port:rack:dc:tokens name``): the
    #: name its TLS certificate is checked against instead of ``host``.
    alias: str | None = None


@attrs.frozen(eq=False)
class RackRing:
    """One rack's continuum: sorted tokens and the node owning each."""

    dc: str
    rack: str
    tokens: tuple[int, ...]
    owners: tuple[PeerInfo, ...]

    @classmethod
    def build(cls, dc: str, rack: str, members: list[PeerInfo]) -> RackRing:
        points = sorted((token, peer.name, peer) for peer in members for token in peer.tokens)
        if not points:
            raise TopologyError(f"rack {rack!r} in datacenter {dc!r} has no tokens")
        for (token, a, _), (next_token, b, _) in itertools.pairwise(points):
            if token == next_token:
                raise TopologyError(
                    f"token {token} is claimed twice in rack {rack!r} of {dc!r} ({a}, {b})"
                )
        return cls(dc, rack, tuple(p[0] for p in points), tuple(p[2] for p in points))

    def owner(self, token: int) -> PeerInfo:
        index = bisect.bisect_left(self.tokens, token)
        return self.owners[index if index < len(self.tokens) else 0]

    @property
    def members(self) -> tuple[PeerInfo, ...]:
        return tuple(dict.fromkeys(self.owners))


@attrs.frozen(eq=False)
class Topology:
    local: PeerInfo
    peers: tuple[PeerInfo, ...]
    racks: Mapping[str, Mapping[str, RackRing]]
    hash_name: str = "murmur"
    hash_tag: bytes | None = None
    _hash: Callable[[bytes], int] = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        try:
            function = lookup(self.hash_name)
        except ValueError as exc:
            raise TopologyError(f"hash: {exc}") from None
        object.__setattr__(self, "_hash", function)

    # -- building ------------------------------------------------------------

    @classmethod
    def from_peers(
        cls,
        local: PeerInfo,
        others: list[PeerInfo],
        hash_name: str = "murmur",
        hash_tag: bytes | None = None,
    ) -> Topology:
        peers = (local, *others)
        names = [p.name for p in peers]
        if len(set(names)) != len(names):
            raise TopologyError(f"a node is listed twice: {sorted(names)}")
        grouped: dict[str, dict[str, list[PeerInfo]]] = {}
        for peer in peers:
            grouped.setdefault(peer.dc, {}).setdefault(peer.rack, []).append(peer)
        racks = {
            dc: {rack: RackRing.build(dc, rack, grouped[dc][rack]) for rack in sorted(grouped[dc])}
            for dc in sorted(grouped)
        }
        return cls(local, peers, racks, hash_name, hash_tag)

    def with_local_address(self, host: str, port: int) -> Topology:
        """The same cluster with this node's real peer address (after binding port 0)."""
        local = attrs.evolve(self.local, name=f"{host}:{port}", host=host, port=port)
        others = [p for p in self.peers if not p.local]
        return Topology.from_peers(local, others, self.hash_name, self.hash_tag)

    # -- queries -------------------------------------------------------------

    @property
    def single_node(self) -> bool:
        return len(self.peers) == 1

    @functools.cached_property
    def one_owner_per_rack(self) -> bool:
        """Every rack is one node: every key has the same owners, whatever its token.

        (The commonest Dynomite cluster: each rack a full replica on one node.)
        Routing then needs only whether a key hashes at all (``LOCAL_TOKEN``),
        not its token.
        """
        return all(len(set(ring.owners)) == 1 for ring in self.all_rings)

    def token(self, key: bytes) -> int:
        """The key's ring token (hash of the hash-tagged part of the key).

        An empty part (an empty key, or an empty tag like ``{}x``) is
        ``LOCAL_TOKEN``: Dynomite never hashes those and sends them to the
        local node.
        """
        part = tagged(key, self.hash_tag)
        return self._hash(part) if part else LOCAL_TOKEN

    def owner(self, ring: RackRing, token: int) -> PeerInfo:
        """``ring.owner(token)``, with ``LOCAL_TOKEN`` meaning this node."""
        return ring.owner(token) if token >= 0 else self.local

    def ring(self, dc: str, rack: str) -> RackRing:
        return self.racks[dc][rack]

    @property
    def own_ring(self) -> RackRing:
        return self.racks[self.local.dc][self.local.rack]

    @property
    def local_rings(self) -> tuple[RackRing, ...]:
        """Every rack of our DC, our own rack first, then the others by name."""
        own = self.own_ring
        return (own, *(r for r in self.racks[self.local.dc].values() if r is not own))

    @property
    def all_rings(self) -> tuple[RackRing, ...]:
        """Every rack of every DC."""
        return tuple(ring for racks in self.racks.values() for ring in racks.values())

    def owners(self, token: int) -> tuple[str, ...]:
        """The owner of ``token`` in every rack: keys with equal owners travel together."""
        return tuple(self.owner(ring, token).name for ring in self.all_rings)

    @property
    def remote_dcs(self) -> tuple[str, ...]:
        return tuple(dc for dc in self.racks if dc != self.local.dc)

    def remote_rings(self, dc: str) -> tuple[RackRing, ...]:
        """A remote DC's racks: the preselected replication rack first, then failovers."""
        rings = list(self.racks[dc].values())
        own_index = list(self.racks[self.local.dc]).index(self.local.rack)
        first = own_index % len(rings)
        return tuple(rings[first:] + rings[:first])

    def peer(self, name: str) -> PeerInfo | None:
        for peer in self.peers:
            if peer.name == name:
                return peer
        return None
