"""Which member holds each token of each rack, as gossip's view has it.

Theory of operation
-------------------
``GossipState`` indexes every live member's tokens by ``(dc, rack, token)``
so that a record claiming tokens someone else holds is seen at once: its
*rivals*.  Of two claims on one token, ``claim`` says which wins (a newer
generation; between Dynomite's generation-0 records, the more recent
timestamp; then the name), which is how a restarted or replacement node
takes a dead one's place (Dynomite's ``dnode_peer_replace``).

Pure code: no I/O, no clock.
"""

from __future__ import annotations

from .wire import NodeRecord

__all__ = ["TokenOwners", "claim"]


def claim(record: NodeRecord) -> tuple[int, int, str]:
    """Who wins two claims on one token: the larger of these."""
    return (record.generation, record.heartbeat if record.generation == 0 else 0, record.name)


class TokenOwners:
    """``(dc, rack, token)`` -> the name of the member holding it."""

    __slots__ = ("_owners",)

    def __init__(self) -> None:
        self._owners: dict[tuple[str, str, int], str] = {}

    def rivals(self, record: NodeRecord) -> list[str]:
        """Other members holding any of ``record``'s tokens in its rack, in token order."""
        found = (self._owners.get((record.dc, record.rack, t)) for t in record.tokens)
        return list(dict.fromkeys(n for n in found if n is not None and n != record.name))

    def add(self, record: NodeRecord) -> None:
        for token in record.tokens:
            self._owners[(record.dc, record.rack, token)] = record.name

    def discard(self, record: NodeRecord) -> None:
        """Forget ``record``'s tokens, where it still holds them."""
        for token in record.tokens:
            key = (record.dc, record.rack, token)
            if self._owners.get(key) == record.name:
                del self._owners[key]
