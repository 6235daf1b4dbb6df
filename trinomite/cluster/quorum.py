"""Quorum decisions over replica replies: Dynomite's rules without its limits.

Theory of operation
-------------------
A coordinator sends one request to N replicas (one per rack) and feeds each
reply to a ``QuorumDecision`` as it arrives.  ``add`` returns the reply for
the client as soon as the outcome is certain, and None until then::

    add(reply) -> None ... None -> final reply  (later replies are ignored)

The rules are Dynomite's ``rspmgr_check_is_done`` / ``rspmgr_get_response``
(dynomite.md §3.2), generalised from "2 of the first 3" to any N:

* An error reply (``-...``, from the datastore or from the node, such as
  "Peer Node is not connected") is an *error response*; the first one is
  kept.  Anything else is a *good response* with ``checksum = crc32(reply)``.
* quorum Q = N // 2 + 1.  Done with that reply as soon as Q good responses
  share one checksum.
* Done with the first error once ``good + pending < Q`` (no quorum possible).
* When all replies are in (or no checksum can reach Q any more) and good
  responses disagree:
  - multi-key fragments (MGET/DEL/EXISTS/MSET parts) are reconciled element
    by element: each element needs Q matching copies; ``DC_QUORUM`` takes
    the first copy of an element when none match, ``DC_SAFE_QUORUM`` fails;
  - otherwise ``DC_QUORUM`` returns the first good reply to arrive and
    ``DC_SAFE_QUORUM`` returns ``-ERR Dynomite: Failed to achieve Quorum``.

``EachQuorum`` runs one decision per datacenter (DC_EACH_SAFE_QUORUM): the
client gets the local DC's reply when every DC reached a safe quorum, else
the first failing DC's error.

Pure code: bytes in, bytes out.
"""

from __future__ import annotations

import zlib

from ..errors import NodeError, redis_error
from ..protocol.replies import ReplyFramer, ReplyProtocolError, is_error

__all__ = ["EachQuorum", "QuorumDecision", "quorum_size"]

NO_QUORUM = redis_error(NodeError.NO_QUORUM)


def quorum_size(replicas: int) -> int:
    return replicas // 2 + 1


class QuorumDecision:
    """Collects up to ``replicas`` replies and decides the client's reply."""

    __slots__ = (
        "_counts",
        "_first_error",
        "_good",
        "decided",
        "multikey",
        "pending",
        "quorum",
        "safe",
    )

    def __init__(self, replicas: int, *, safe: bool, multikey: bool = False) -> None:
        if replicas < 1:
            raise ValueError("a quorum needs at least one replica")
        self.quorum = quorum_size(replicas)
        self.pending = replicas
        self.safe = safe
        self.multikey = multikey
        self.decided: bytes | None = None
        self._good: list[bytes] = []
        self._counts: dict[int, int] = {}
        self._first_error: bytes | None = None

    def add(self, reply: bytes) -> bytes | None:
        """Record one replica's reply; the client's reply once it is decided."""
        if self.decided is not None:
            return None  # a late reply after the decision is swallowed
        self.pending -= 1
        if is_error(reply):
            if self._first_error is None:
                self._first_error = reply
        else:
            checksum = zlib.crc32(reply)
            count = self._counts.get(checksum, 0) + 1
            self._counts[checksum] = count
            self._good.append(reply)
            if count >= self.quorum:
                return self._decide(reply)
        good = len(self._good)
        if good + self.pending < self.quorum:
            return self._decide(self._first_error or NO_QUORUM)
        best = max(self._counts.values(), default=0)
        if self.pending == 0 or (best + self.pending < self.quorum and not self.multikey):
            return self._decide(self._reconcile())
        return None

    def _decide(self, reply: bytes) -> bytes:
        self.decided = reply
        return reply

    def _reconcile(self) -> bytes:
        if self.multikey:
            merged = reconcile_elements(self._good, self.quorum, self.safe)
            if merged is not None:
                return merged
        return NO_QUORUM if self.safe else self._good[0]


def _elements(reply: bytes) -> tuple[bytes, list[bytes]] | None:
    """Split an array reply into its header and top-level elements."""
    if reply[:1] != b"*":
        return None
    header_end = reply.find(b"\r\n") + 2
    framer = ReplyFramer()
    framer.feed(reply[header_end:])
    try:
        elements = framer.replies()
    except ReplyProtocolError:
        return None
    return reply[:header_end], elements


def reconcile_elements(replies: list[bytes], quorum: int, safe: bool) -> bytes | None:
    """Element-wise vote over array replies of equal length, or None if not applicable."""
    split = [_elements(reply) for reply in replies]
    if any(s is None for s in split):
        return None
    parts = [s for s in split if s is not None]
    header = parts[0][0]
    if any(p[0] != header for p in parts):
        return None  # different lengths: not element-wise comparable
    merged: list[bytes] = []
    for index in range(len(parts[0][1])):
        copies = [p[1][index] for p in parts]
        counts: dict[bytes, int] = {}
        for copy in copies:
            counts[copy] = counts.get(copy, 0) + 1
        winner = next((c for c in copies if counts[c] >= quorum), None)
        if winner is None:
            if safe:
                return NO_QUORUM
            winner = copies[0]
        merged.append(winner)
    return header + b"".join(merged)


class EachQuorum:
    """DC_EACH_SAFE_QUORUM: a safe quorum in every datacenter."""

    __slots__ = ("_decisions", "_local", "_results", "decided")

    def __init__(self, replicas_per_dc: dict[str, int], local_dc: str, multikey: bool) -> None:
        self._decisions = {
            dc: QuorumDecision(count, safe=True, multikey=multikey)
            for dc, count in replicas_per_dc.items()
        }
        self._local = local_dc
        self._results: dict[str, bytes] = {}
        self.decided: bytes | None = None

    def add(self, dc: str, reply: bytes) -> bytes | None:
        if self.decided is not None:
            return None
        result = self._decisions[dc].add(reply)
        if result is None:
            return None
        if is_error(result):
            self.decided = result
            return result
        self._results[dc] = result
        if len(self._results) == len(self._decisions):
            self.decided = self._results[self._local]
            return self.decided
        return None
