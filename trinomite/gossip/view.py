"""Snapshots of the gossip view for the routing layer.

Theory of operation
-------------------
``GossipState.members`` is the whole view: every name, with its latest
record and our verdict (NORMAL, JOINING, LEAVING, DOWN, REMOVED).  Routing
wants less: the nodes that own tokens.  ``ring_records`` picks them:

    NORMAL, LEAVING       always (LEAVING nodes keep their tokens until gone)
    DOWN                  by default: a down node still owns its tokens, as in
                          Dynomite, where routing ignores peer state; the
                          request path decides what to do about it (hints)
    JOINING               only with ``include_joining``: a joining node does not
                          serve until it is NORMAL (the ``state`` module's rule)
    REMOVED               never

``peer_infos`` turns those into the ``ring.topology.PeerInfo`` values
``Topology.from_peers(local, others)`` takes.  The import is one way:
gossip imports ring, ring never imports gossip.

Pure code: no I/O, no clock, no trio.
"""

from __future__ import annotations

from collections.abc import Mapping

from trinomite.ring.topology import PeerInfo

from .events import Member
from .wire import NodeRecord, State

__all__ = ["peer_info", "peer_infos", "ring_records"]

_ALWAYS = frozenset({State.NORMAL, State.LEAVING})


def ring_records(
    members: Mapping[str, Member],
    *,
    include_joining: bool = False,
    include_down: bool = True,
) -> list[NodeRecord]:
    """The records of the members that own tokens, sorted by name (the local one included)."""
    wanted = set(_ALWAYS)
    if include_joining:
        wanted.add(State.JOINING)
    if include_down:
        wanted.add(State.DOWN)
    return [
        members[name].record
        for name in sorted(members)
        if members[name].local or members[name].state in wanted
    ]


def peer_info(record: NodeRecord, *, local: bool = False) -> PeerInfo:
    return PeerInfo(
        record.name,
        record.host,
        record.port,
        record.dc,
        record.rack,
        record.tokens,
        local=local,
        alias=record.tls_name,
    )


def peer_infos(
    members: Mapping[str, Member], *, include_joining: bool = False, include_down: bool = True
) -> tuple[PeerInfo, list[PeerInfo]]:
    """(local, others) for ``Topology.from_peers``; ValueError if no member is local."""
    local: PeerInfo | None = None
    others: list[PeerInfo] = []
    for record in ring_records(members, include_joining=include_joining, include_down=include_down):
        if members[record.name].local:
            local = peer_info(record, local=True)
        else:
            others.append(peer_info(record))
    if local is None:
        raise ValueError("the view has no local member")
    return local, others
