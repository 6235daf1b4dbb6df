"""What the admin server may ask of and do to a node: one narrow interface.

Theory of operation
-------------------
The admin/stats server (HTTP paths, Prometheus text, WebSocket feed) and the
status CLI never reach into a node's internals.  Everything they read or
change goes through ``AdminApi``, which ``trinomite.node.admin.NodeAdmin``
implements for a running node.  Reads return plain data (dicts, strings,
enums) ready to serialise; writes validate their input and raise
``ValueError`` with a message fit for an HTTP 400 body.

Events (state changes, peers up/down, consistency changes, datastore
reconnects) are dicts with at least ``{"event": <name>, "ts": <unix time>}``;
``subscribe()`` returns a bounded receive channel per subscriber (a slow
subscriber loses events, it never slows the node down; ``dropped`` in the
next snapshot says how many).

Node states are Dynomite's ``dyn_state_t`` values (dynomite.md §6.1).
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

import trio

from ..config.model import Consistency

__all__ = ["AdminApi", "NodeState", "PeerAction"]


class NodeState(enum.IntEnum):
    """Dynomite's node states, with its numeric values."""

    INIT = 0
    STANDBY = 1
    WRITES_ONLY = 2
    RESUMING = 3
    NORMAL = 4
    JOINING = 7
    DOWN = 8
    RESET = 11
    UNKNOWN = 12


class PeerAction(enum.Enum):
    UP = "up"
    DOWN = "down"
    RESET = "reset"
    #: trinomite: forget a DOWN member for good (gossip tombstones it cluster-wide).
    REMOVE = "remove"


class AdminApi(Protocol):
    # -- reads ---------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Dynomite's /info JSON (a superset of its field names and nesting)."""

    def metrics_text(self) -> str:
        """Prometheus text exposition format (version 0.0.4)."""

    def snapshot(self) -> dict[str, Any]:
        """The WebSocket feed's periodic JSON snapshot."""

    def cluster_describe(self) -> dict[str, Any]:
        """Dynomite's /cluster_describe: {"dcs": [{"name", "racks": [{"name", "servers"}]}]}."""

    def consistency(self) -> tuple[Consistency, Consistency]:
        """(read, write) levels new client connections get."""

    def state(self) -> NodeState: ...

    def timeout_factor(self) -> int: ...

    def read_repairs(self) -> bool: ...

    def log_level(self) -> int:
        """Dynomite verbosity, 0..11."""

    # -- writes --------------------------------------------------------------
    def set_consistency(self, which: str, level: Consistency) -> None:
        """``which`` is "read" or "write"; applies to connections opened afterwards."""

    def set_state(self, state: NodeState) -> None:
        """STANDBY, WRITES_ONLY, RESUMING or NORMAL (ValueError for others)."""

    def set_log_level(self, level: int) -> None:
        """0..11 (ValueError outside)."""

    def reset_histograms(self) -> None: ...

    def set_timeout_factor(self, factor: int) -> None:
        """Clamped to 1..10 as in Dynomite."""

    def peer_control(self, action: PeerAction, name: str) -> int:
        """Apply to the peer named ``name`` (``host:port`` or host) or ``all``; how many matched."""

    def set_read_repairs(self, enabled: bool) -> None: ...

    def reload_tls(self) -> str:
        """Load the TLS certificates and keys again; the error ("" if none).

        On an error the node keeps the material it had; live links are never dropped.
        """

    # -- events --------------------------------------------------------------
    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        """A new bounded event stream; close it to unsubscribe."""
