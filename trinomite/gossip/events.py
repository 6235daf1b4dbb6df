"""What the gossip state machine hands back: messages to send, membership events, counters.

Theory of operation
-------------------
``GossipState.tick`` and ``receive`` return a ``Step``: the ``Outgoing``
payloads to send (each to one peer, in a peer frame of its kind's type,
data byte ``a``) and the membership ``Event``s to apply, in order, to the
caller's routing view::

    Joined(record)              a new member
    Updated(old, record)        same name, new dc/rack/tokens/TLS name
    Replaced(old_name, record)  record took over old_name's tokens; old_name is gone
    Removed(name)               tombstoned (operator removal, gossiped)
    StateChanged(name, old, new)  e.g. NORMAL -> DOWN (detector), JOINING -> NORMAL

Replaced is reported once per displaced member, and the record is added once.
``Member`` is one entry of the read-only view; ``Counter`` is the closed set of
counters (``GossipState.counters`` keys are their lower-case names).

Pure values: no I/O, no clock, no trio.
"""

from __future__ import annotations

import enum

import attrs

from .wire import FRAME_TYPES, Kind, NodeRecord, State, split_name

__all__ = [
    "Counter",
    "Event",
    "Joined",
    "Member",
    "Outgoing",
    "Removed",
    "Replaced",
    "StateChanged",
    "Step",
    "Updated",
]


@attrs.frozen
class Outgoing:
    """A payload to send in a peer frame of ``frame_type`` (data byte ``a``) to ``to``."""

    to: str  #: the peer's name, ``host:port`` of its peer listener
    kind: Kind
    payload: bytes

    @property
    def frame_type(self) -> int:
        return FRAME_TYPES[self.kind]

    @property
    def address(self) -> tuple[str, int]:
        return split_name(self.to)


@attrs.frozen
class Joined:
    record: NodeRecord


@attrs.frozen
class Updated:
    """Same name, new ring position or TLS name (a restart with a new config)."""

    old: NodeRecord
    record: NodeRecord


@attrs.frozen
class Replaced:
    """``record`` took over tokens of ``old_name``, which is gone."""

    old_name: str
    record: NodeRecord


@attrs.frozen
class Removed:
    name: str


@attrs.frozen
class StateChanged:
    name: str
    old: State
    new: State


Event = Joined | Updated | Replaced | Removed | StateChanged


@attrs.frozen
class Step:
    outgoing: tuple[Outgoing, ...] = ()
    events: tuple[Event, ...] = ()


@attrs.frozen
class Member:
    """One entry of the view: the latest record and our verdict on it."""

    record: NodeRecord
    state: State  #: the record's state, or DOWN if convicted here
    local: bool = False


class Counter(enum.Enum):
    """What ``counters`` reports; the value is the description."""

    MESSAGES_IN = "gossip payloads received"
    MESSAGES_OUT = "gossip payloads sent"
    BYTES_IN = "gossip payload bytes received"
    BYTES_OUT = "gossip payload bytes sent"
    IGNORED = "gossip frame types ignored (Dynomite's 8, 9, 13)"
    DROPPED_MALFORMED = "payloads refused by the decoder"
    DROPPED_FOREIGN_DC = "records of datacenters outside the allow-list"
    DROPPED_FORGED = "records newer than ours for our own name; spoofed senders"
    DROPPED_CONFLICT = "records claiming the local node's tokens"
    DROPPED_SUPERSEDED = "records losing a token claim to a newer generation"
    DROPPED_FULL = "new names refused because the view holds max_members"
    RECORDS_APPLIED = "records that updated the view"
    RECORDS_STALE = "records not newer than the view's"
    EXCHANGES = "exchanges completed (ACK or ACK2 received)"
    CONVICTIONS = "members convicted DOWN by the failure detector"
    RECOVERIES = "DOWN members that were heard from again"
