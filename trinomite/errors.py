"""Error replies the node generates, as one table.

Theory of operation
-------------------
Dynomite formats its own errors as ``-ERR <source> <message>`` for Redis and
``SERVER_ERROR <source> <message>`` for memcached (dynomite.md §3.3).
Clients and operators match on these strings, so the Dynomite ones are kept
verbatim.  Trinomite adds a few (a datastore request timing out is reported
per request instead of as a dropped connection, the node refusing work while
it drains, etc.); those use the same shape and are marked below.
"""

from __future__ import annotations

import enum

__all__ = ["FROM_MEMCACHE", "NodeError", "memcache_error", "redis_error"]


class NodeError(enum.Enum):
    """(source, message) for every error the node itself produces."""

    # -- Dynomite's own (dyn_error_t) --
    INVALID_STATE = ("Dynomite:", "Dynomite's current state does not allow this request")
    INVALID_ADMIN_REQ = ("Dynomite:", "Invalid request in Dynomite's admin mode")
    NO_QUORUM = ("Dynomite:", "Failed to achieve Quorum")
    SCRIPT_SPANS_NODES = ("Dynomite:", "Keys in the script cannot span multiple nodes")
    PAYLOAD_TOO_LARGE = ("Dynomite:", "MSET/MGET/SCAN payload too large")
    PEER_CONNECTION_REFUSE = ("Peer:", "Peer Node refused connection")
    PEER_HOST_DOWN = ("Peer:", "Peer Node is down")
    PEER_HOST_NOT_CONNECTED = ("Peer:", "Peer Node is not connected")
    STORAGE_CONNECTION_REFUSE = ("Storage:", "Datastore refused connection")
    # -- trinomite additions, same shape --
    #: strerror(ETIMEDOUT) with the storage source, as Dynomite's error path
    #: would print it; trinomite sends it per request rather than dropping.
    STORAGE_TIMEOUT = ("Storage:", "Connection timed out")
    PEER_TIMEOUT = ("Peer:", "Connection timed out")
    KEYS_SPAN_NODES = ("Dynomite:", "Keys in the request cannot span multiple nodes")
    SHUTTING_DOWN = ("Dynomite:", "Node is shutting down")
    STORAGE_PROTOCOL = ("Storage:", "Datastore sent an invalid reply")
    #: A bundle's reply (see protocol.peer) did not hold one reply per request.
    PEER_PROTOCOL = ("Peer:", "Peer Node sent an invalid reply")
    #: While the datastore link is down and reconnecting (with backoff), say
    #: why: Dynomite's "refused" only when the datastore refused the connect.
    STORAGE_NOT_ANSWERING = ("Storage:", "Datastore not answering, reconnecting")
    STORAGE_RECONNECTING = ("Storage:", "Datastore connection lost, reconnecting")

    @property
    def text(self) -> str:
        source, message = self.value
        return f"{source} {message}"


_REDIS_REPLIES = {e: b"-ERR " + e.text.encode() + b"\r\n" for e in NodeError}


def redis_error(error: NodeError) -> bytes:
    """The RESP error line for ``error`` (precomputed)."""
    return _REDIS_REPLIES[error]


_MEMCACHE_REPLIES = {e: b"SERVER_ERROR " + e.text.encode() + b"\r\n" for e in NodeError}

#: A memcached node's own errors as peers send them, back to the RESP form
#: they travel in inside a node (see ``datastore.memcache``).
FROM_MEMCACHE = {_MEMCACHE_REPLIES[e]: _REDIS_REPLIES[e] for e in NodeError}


def memcache_error(error: NodeError) -> bytes:
    """The memcached ``SERVER_ERROR <source> <message>`` line for ``error``."""
    return _MEMCACHE_REPLIES[error]
