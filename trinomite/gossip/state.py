"""Gossip membership as a pure state machine: messages and ticks in, messages and events out.

Theory of operation
-------------------
Every node keeps one ``NodeRecord`` per known node (itself included),
versioned by ``(generation, tombstone, heartbeat)`` (``NodeRecord.version``).
A stale record never overwrites a fresher one.  Each round (``tick``, every
``gos_interval``) the node bumps its own heartbeat and starts a
Cassandra-style three-way exchange with each of its round's targets::

    A --SYN(digests: name, version of all A knows)--------------> B
    A <--ACK(B's records newer than or missing from A; requests)-- B
    A --ACK2(A's records B requested)----------------------------> B

so both sides end up with the newer of every record.  Whom a round talks
to (a few random live peers, suspects, now and then a DOWN member or a
seed) is ``rounds.round_targets``.

The cost is bounded: a SYN is one 40-60 byte digest per member, an ACK or
ACK2 carries only the differences, and every payload is capped
(``MAX_PAYLOAD_LEN``; what does not fit goes in a later round).  The
view is at most ``max_members`` names (default 1024), tombstones included.

Liveness is local: the failure detector (``detector``) convicts a member
whose heartbeat has not advanced for 2.3-3.7 intervals; it is then DOWN in
our view (never on the wire) until a newer heartbeat arrives, which makes it
NORMAL (or whatever its record says) again.  ``next_deadline()`` is the
earlier of the next round and the next conviction; call ``tick`` then.
The bound runs from the last heartbeat that *reached this node*; relayed
copies of a stopped node's last heartbeat add a round or two end to end
(docs/gossip.md has the measured times).  ``set_reachable(name, False)``,
the transport's word that no link to a member can be had, halves it.

The local NORMAL rule.  The node starts JOINING.  It becomes NORMAL when
(a) no other node is configured as a seed (a one-node cluster, or the seed
that starts a cluster), at the first tick; or (b) it has completed at
least one exchange (received the ACK to its SYN, or the ACK2 to its ACK,
or a non-empty GOSSIP_SYN from a Dynomite node, which never answers) with
any peer, **and** since the last change to its ring view (a member
joined, was replaced, removed or moved) at least one more exchange has
completed and one whole interval has passed.  So it has the cluster's
state from someone who had it, and that state has stopped moving.
(Dynomite becomes NORMAL on receipt of any gossip message.)  ``mark_normal``
is the operator's override; ``leave`` announces LEAVING.

Events (``Step.events``) tell the caller how to rebuild its ``Topology``:
``Joined``, ``Updated`` (same name, new dc/rack/tokens/TLS name after a
restart), ``Replaced(old_name, record)`` (a different name claims tokens of
a (dc, rack) with a higher claim: a newer generation; Dynomite's
``dnode_peer_replace``), ``Removed`` and ``StateChanged``.

Tombstones.  ``remove(name)`` (a DOWN node only: like Cassandra's
``removenode``, a live node would keep gossiping itself back) replaces the
record with a REMOVED one of the same generation.  Within a generation a
tombstone outranks any heartbeat, so stale gossip from a node that was
partitioned during the removal cannot bring the name back; a *newer*
generation (the node really restarted) can.  Tombstones are gossiped with
their remaining lifetime, rounded down and never in their last second, and
expire after ``tombstone_ttl`` (default one day) at about the same time
everywhere; after that a stale record could bring the name back.

What a member can and cannot forge (docs/gossip.md has the whole list).
Relayed records cannot be authenticated (TLS authenticates the link), so a
member can invent records for other nodes.  Nobody can change what this
node believes about itself: a newer record for our own name is dropped
(``forged``) and we move our own version above it.  Nobody can pin a name
with an impossible version: a generation past ``latest_generation`` (the
shell passes the wall clock plus 10 minutes) is dropped as ``forged``.
Records claiming our tokens in our rack (``conflict``), of datacenters
outside the allow-list (``foreign_dc``), messages whose claimed sender is
not the link's peer (``forged``) and malformed payloads (``malformed``) are
dropped and counted; nothing a peer sends can raise out of ``receive``.

Pure code: no I/O, no clock (``now`` is passed in), no trio.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator

import attrs

from .detector import DEFAULT_THRESHOLD, FailureDetector
from .events import (
    Counter,
    Event,
    Joined,
    Member,
    Outgoing,
    Removed,
    Replaced,
    StateChanged,
    Step,
    Updated,
)
from .owners import TokenOwners, claim
from .rounds import round_targets
from .wire import (
    UINT32_MAX,
    UINT64_MAX,
    Digest,
    GossipDecodeError,
    Kind,
    Message,
    NodeRecord,
    PayloadBuilder,
    State,
    decode,
    digest_line,
    record_line,
    request_line,
    split_name,
)

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_TOMBSTONE_TTL",
    "GossipState",
]

DEFAULT_TOMBSTONE_TTL = 86400.0
DEFAULT_MAX_MEMBERS = 1024


@attrs.define
class _Entry:
    record: NodeRecord
    down: bool = False
    expires: float = math.inf  #: tombstones only


class GossipState:
    """The membership view of one node.  See the module docstring.

    Args:
        local: this node's record (its ``state`` and ``heartbeat`` are reset
            to JOINING and 0); ``generation`` must change on every restart
            and be >= 1 (start time in ms, or a random 63-bit number).
        seeds: names (``host:port``) to contact; our own name is ignored.
        gos_interval_ms: the round interval (config ``gos_interval``).
        rng: the only source of randomness (peer choice).
        now: the current time in seconds, on the clock later ``now``s use.
        dcs: datacenter allow-list; records of other DCs are dropped.
        default_peer_port: port assumed for Dynomite records (default: ours).
    """

    def __init__(
        self,
        local: NodeRecord,
        *,
        seeds: Iterable[str],
        gos_interval_ms: int,
        rng: random.Random,
        now: float,
        dcs: Iterable[str] | None = None,
        default_peer_port: int | None = None,
        max_members: int = DEFAULT_MAX_MEMBERS,
        tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL,
        phi_threshold: float = DEFAULT_THRESHOLD,
        fanout: int | None = None,
        latest_generation: Callable[[], int] | None = None,
    ) -> None:
        if local.generation < 1 or local.state is State.REMOVED:
            raise ValueError("the local record needs a generation >= 1 and a live state")
        if gos_interval_ms < 1 or max_members < 1 or not 0 < tombstone_ttl <= UINT32_MAX:
            raise ValueError("gos_interval_ms, max_members and tombstone_ttl must be positive")
        self.interval = gos_interval_ms / 1000.0
        self._local = attrs.evolve(local, state=State.JOINING, heartbeat=0, ttl=0)
        seed_names = tuple(seeds)
        for seed in seed_names:
            split_name(seed)  # ValueError for a malformed seed name
        self._seeds = tuple(dict.fromkeys(s for s in seed_names if s != local.name))
        self._rng = rng
        self._dcs = frozenset(dcs) if dcs is not None else None
        if self._dcs is not None and local.dc not in self._dcs:
            raise ValueError(f"the local datacenter {local.dc!r} is not in the allow-list")
        self.default_peer_port = default_peer_port or local.port
        self.max_members = max_members
        self.fanout = fanout
        self.tombstone_ttl = tombstone_ttl
        self.detector = FailureDetector(self.interval, phi_threshold)
        #: Members the transport cannot reach at all (``set_reachable``).
        self._unreachable: set[str] = set()
        #: The highest plausible generation now (start times in ms: the wall
        #: clock plus the skew allowed); None accepts any.  See ``_merge``.
        self.latest_generation = latest_generation
        self._entries: dict[str, _Entry] = {}
        self._owners = TokenOwners()
        self._owners.add(self._local)
        #: Displaced names and datacenter-filtered names: generation up to
        #: which their records are neither requested nor accepted, and until when.
        self._ignored: dict[str, tuple[int, float]] = {}
        self._next_round = now
        self._exchanged = False
        self._since_change = 0
        self._last_change = now
        self._counts = dict.fromkeys(Counter, 0)
        self.last_problem: str | None = None

    # -- read-only view ------------------------------------------------------------

    @property
    def local(self) -> NodeRecord:
        return self._local

    @property
    def members(self) -> dict[str, Member]:
        """name -> Member for every known name, ourselves and tombstones included."""
        view = {self._local.name: Member(self._local, self._local.state, local=True)}
        for name, entry in self._entries.items():
            view[name] = Member(entry.record, self._view_state(entry))
        return view

    @property
    def counters(self) -> dict[str, int]:
        return {counter.name.lower(): value for counter, value in self._counts.items()}

    def next_deadline(self) -> float:
        """When ``tick`` must next be called: the next round or the next conviction."""
        deadline = self._next_round
        for name, entry in self._entries.items():
            if not entry.down and entry.record.state is not State.REMOVED:
                deadline = min(deadline, self._conviction(name))
        return deadline

    def _conviction(self, name: str) -> float:
        """When ``name`` is convicted: the detector's deadline, or halfway to it
        for a member the transport cannot reach (``set_reachable``)."""
        deadline = self.detector.deadline(name)
        if name in self._unreachable:
            last = self.detector.last_arrival(name)
            return last + (deadline - last) / 2
        return deadline

    # -- inputs ---------------------------------------------------------------------

    def receive(
        self, frame_type: int, payload: bytes, now: float, *, sender: str | None = None
    ) -> Step:
        """Decode a gossip frame's payload and handle it; never raises for bad input.

        ``sender``: the link's peer name when the caller knows it (an
        outbound link); a message claiming another sender is dropped.
        """
        try:
            message = decode(frame_type, payload, default_port=self.default_peer_port)
        except GossipDecodeError as exc:
            self._count(Counter.MESSAGES_IN)
            self._count(Counter.BYTES_IN, len(payload))
            self._count(Counter.DROPPED_MALFORMED)
            self.last_problem = str(exc)
            return Step()
        if message is None:
            self._count(Counter.IGNORED)
            return Step()
        return self.on_message(sender, message, now)

    def on_message(self, sender: str | None, message: Message, now: float) -> Step:
        """Handle a decoded message (``receive`` decodes and calls this)."""
        self._count(Counter.MESSAGES_IN)
        self._count(Counter.BYTES_IN, message.size)
        claimed = message.sender or sender or ""
        spoofed = sender is not None and message.sender not in ("", sender)
        if spoofed or claimed == self._local.name:
            self._count(Counter.DROPPED_FORGED)
            self.last_problem = f"message claiming to come from {claimed} (link: {sender})"
            return Step()
        events: list[Event] = []
        out: list[Outgoing] = []
        kind = message.kind
        if kind is Kind.SYN:
            out.append(self._ack(claimed, message.digests, now))
        elif kind is Kind.ACK:
            self._exchange_done()
            self._merge_all(message.records, now, events)
            out.append(self._ack2(claimed, message.requests, now))
        elif kind is Kind.ACK2:
            self._exchange_done()
            self._merge_all(message.records, now, events)
        else:  # Dynomite's SYN: its whole view, or its own JOINING announcement
            if message.records:
                self._exchange_done()
            self._merge_all(message.records, now, events)
        return self._step(out, events)

    def tick(self, now: float) -> Step:
        """Run what is due at ``now``: convictions, expiries, the NORMAL rule, a round."""
        events: list[Event] = []
        out: list[Outgoing] = []
        for name, entry in self._entries.items():
            if entry.down or entry.record.state is State.REMOVED:
                continue
            if now >= self._conviction(name):
                old = self._view_state(entry)
                entry.down = True
                self._count(Counter.CONVICTIONS)
                events.append(StateChanged(name, old, State.DOWN))
        self._expire(now)
        self._check_normal(now, events)
        if now >= self._next_round:
            self._round(now, out)
            late = now - self._next_round >= self.interval
            self._next_round = now + self.interval if late else self._next_round + self.interval
        return self._step(out, events)

    # -- operator actions -------------------------------------------------------

    def set_reachable(self, name: str, reachable: bool) -> None:
        """The transport's word on ``name``: ``False`` once no link to it can be
        had (refused, reset).  Silence is then convicted after half the usual
        time: two independent signals agree.  A member that is merely cut off
        from this node keeps being heard by relay and is not convicted."""
        if reachable:
            self._unreachable.discard(name)
        else:
            self._unreachable.add(name)

    def add_seeds(self, names: Iterable[str]) -> None:
        """More names to contact (a seed provider's list); malformed ones are skipped."""
        fresh = []
        for name in names:
            try:
                split_name(name)
            except ValueError:
                continue
            if name != self._local.name:
                fresh.append(name)
        self._seeds = tuple(dict.fromkeys((*self._seeds, *fresh)))

    def remove(self, name: str, now: float) -> Step:
        """Tombstone a DOWN member; ValueError for ourselves, unknown or live names."""
        entry = self._entries.get(name)
        if name == self._local.name or entry is None or entry.record.state is State.REMOVED:
            raise ValueError(f"{name} is not a member that can be removed")
        if not entry.down:
            raise ValueError(f"{name} is not DOWN: stop it first (it would gossip itself back)")
        tomb = attrs.evolve(entry.record, state=State.REMOVED, ttl=int(self.tombstone_ttl))
        events: list[Event] = []
        self._merge(tomb, now, events)
        return self._step([], events)

    def leave(self, now: float) -> Step:
        """Announce that this node is leaving (LEAVING; it keeps its tokens)."""
        return self._set_local_state(State.LEAVING)

    def mark_normal(self, now: float) -> Step:
        """Operator override of the NORMAL rule (like Dynomite's REST ``/state/normal``)."""
        return self._set_local_state(State.NORMAL)

    # -- the exchange ------------------------------------------------------------

    def _versions(self) -> Iterator[NodeRecord]:
        yield self._local
        for entry in self._entries.values():
            yield entry.record

    def _syn(self, to: str) -> Outgoing:
        builder = PayloadBuilder(Kind.SYN, self._local.name)
        for record in self._versions():
            if not builder.add(digest_line(record.digest())):
                break
        return Outgoing(to, Kind.SYN, builder.payload())

    def _ack(self, to: str, digests: tuple[Digest, ...], now: float) -> Outgoing:
        builder = PayloadBuilder(Kind.ACK, self._local.name)
        requests: list[str] = []
        listed: set[str] = set()
        send: list[NodeRecord] = []
        for digest in digests:
            listed.add(digest.name)
            ours = self._record(digest.name)
            if ours is None:
                if not self._is_ignored(digest.name, digest.generation):
                    requests.append(digest.name)
            elif ours.version > digest.version:
                send.append(ours)
            elif ours.version < digest.version:
                requests.append(digest.name)
        send.extend(r for r in self._versions() if r.name not in listed)
        send.sort(key=lambda r: r.name != self._local.name)  # our own record first
        lines = [self._line(r, now) for r in send] + [request_line(n) for n in requests]
        for line in lines:
            if line is not None and not builder.add(line):
                break
        return Outgoing(to, Kind.ACK, builder.payload())

    def _ack2(self, to: str, requests: tuple[str, ...], now: float) -> Outgoing:
        builder = PayloadBuilder(Kind.ACK2, self._local.name)
        for name in requests:
            record = self._record(name)
            line = None if record is None else self._line(record, now)
            if line is not None and not builder.add(line):
                break
        return Outgoing(to, Kind.ACK2, builder.payload())

    def _line(self, record: NodeRecord, now: float) -> bytes | None:
        """The line to send for ``record``; None for a tombstone with under 1 s to live."""
        if record.state is State.REMOVED:
            # Rounded down, so a tombstone's lifetime shrinks at every hop, and
            # never relayed once it is 0: two nodes cannot keep handing an
            # expiring tombstone back and forth.
            left = math.floor(self._entries[record.name].expires - now)
            if left < 1:
                return None
            record = attrs.evolve(record, ttl=min(UINT32_MAX, left))
        elif record.state is State.DOWN:  # a Dynomite verdict: relay it as a plain member
            record = attrs.evolve(record, state=State.NORMAL)
        return record_line(record)

    def _round(self, now: float, out: list[Outgoing]) -> None:
        self._bump()
        live: list[str] = []
        down: list[str] = []
        for name, entry in self._entries.items():
            if entry.record.state is not State.REMOVED:
                (down if entry.down else live).append(name)
        targets = round_targets(live, down, self._seeds, self.detector, self._rng, self.fanout, now)
        for to in targets:
            out.append(self._syn(to))

    # -- merging -------------------------------------------------------------------

    def _merge_all(self, records: tuple[NodeRecord, ...], now: float, events: list[Event]) -> None:
        for record in records:
            self._merge(record, now, events)

    def _merge(self, record: NodeRecord, now: float, events: list[Event]) -> None:
        name = record.name
        latest = self.latest_generation
        if latest is not None and record.generation > latest():
            # A start time in the future: forged (or a badly wrong clock).  It
            # would pin ``name`` to a version its real owner cannot pass.
            self._count(Counter.DROPPED_FORGED)
            self.last_problem = f"record for {name} with generation {record.generation} ahead"
            return
        if name == self._local.name:
            self._own(record)
            return
        if self._dcs is not None and record.dc not in self._dcs:
            self._count(Counter.DROPPED_FOREIGN_DC)
            self._ignore(name, record.generation, now)
            return
        entry = self._entries.get(name)
        if entry is not None and record.version <= entry.record.version:
            self._count(Counter.RECORDS_STALE)
            return
        if entry is None and self._is_ignored(name, record.generation):
            self._count(Counter.DROPPED_SUPERSEDED)
            return
        if record.state is State.REMOVED:
            self._tombstone(entry, record, now, events)
            return
        rivals = self._owners.rivals(record)
        if self._local.name in rivals:
            self._count(Counter.DROPPED_CONFLICT)
            self.last_problem = f"{name} claims tokens of this node"
            return
        if any(claim(self._entries[r].record) > claim(record) for r in rivals):
            self._count(Counter.DROPPED_SUPERSEDED)
            return
        if entry is None and len(self._entries) + 1 >= self.max_members + len(rivals):
            self._count(Counter.DROPPED_FULL)
            return
        self._count(Counter.RECORDS_APPLIED)
        for rival in rivals:
            gone = self._entries.pop(rival).record
            self._owners.discard(gone)
            self.detector.forget(rival)
            self._ignore(rival, gone.generation, now)
            events.append(Replaced(rival, record))
            self._view_changed(now)
        if entry is None or entry.record.state is State.REMOVED:
            self._entries[name] = _Entry(record)
            self._owners.add(record)
            self.detector.reset(name, now)
            if not rivals:
                events.append(Joined(record))
            self._view_changed(now)
            return
        old, old_state = entry.record, self._view_state(entry)
        if record.generation != old.generation:
            self.detector.reset(name, now)
        else:
            self.detector.heartbeat(name, now)
        if entry.down:
            self._count(Counter.RECOVERIES)
        entry.record, entry.down = record, False
        if (old.position, old.tls_name) != (record.position, record.tls_name):
            self._owners.discard(old)
            self._owners.add(record)
            events.append(Updated(old, record))
            self._view_changed(now)
        if self._view_state(entry) is not old_state:
            events.append(StateChanged(name, old_state, self._view_state(entry)))

    def _tombstone(
        self, entry: _Entry | None, record: NodeRecord, now: float, events: list[Event]
    ) -> None:
        expires = now + min(float(record.ttl), self.tombstone_ttl)
        if entry is None:
            if record.ttl == 0:  # expired: nothing to remove, nothing to keep
                self._count(Counter.RECORDS_STALE)
                return
            if len(self._entries) + 1 >= self.max_members:
                self._count(Counter.DROPPED_FULL)
                return
            self._count(Counter.RECORDS_APPLIED)
            self._entries[record.name] = _Entry(record, expires=expires)
            return
        self._count(Counter.RECORDS_APPLIED)
        was_member = entry.record.state is not State.REMOVED
        if was_member:
            self._owners.discard(entry.record)
            self.detector.forget(record.name)
        entry.record, entry.down, entry.expires = record, False, expires
        if record.ttl == 0:
            del self._entries[record.name]
        if was_member:
            events.append(Removed(record.name))
            self._view_changed(now)

    def _own(self, record: NodeRecord) -> None:
        """A record for our own name: stale echoes are fine, newer ones are forged."""
        local = self._local
        if record.version <= local.version:
            return
        self._count(Counter.DROPPED_FORGED)
        self.last_problem = f"record for our own name with version {record.version}"
        top = UINT64_MAX
        same = record.generation == local.generation and record.state is not State.REMOVED
        if same and record.heartbeat < top:
            self._local = attrs.evolve(local, heartbeat=record.heartbeat + 1)
            return
        generation = min(max(record.generation, local.generation) + 1, top)
        self._local = attrs.evolve(local, generation=generation, heartbeat=0)

    # -- bookkeeping -------------------------------------------------------------

    def _record(self, name: str) -> NodeRecord | None:
        if name == self._local.name:
            return self._local
        entry = self._entries.get(name)
        return entry.record if entry is not None else None

    def _view_state(self, entry: _Entry) -> State:
        state = entry.record.state
        if state is State.REMOVED:
            return state
        if entry.down:
            return State.DOWN
        return State.NORMAL if state is State.DOWN else state

    def _ignore(self, name: str, generation: int, now: float) -> None:
        self._ignored.pop(name, None)
        if len(self._ignored) >= self.max_members:
            del self._ignored[next(iter(self._ignored))]
        self._ignored[name] = (generation, now + self.tombstone_ttl)

    def _is_ignored(self, name: str, generation: int) -> bool:
        held = self._ignored.get(name)
        return held is not None and generation <= held[0]

    def _expire(self, now: float) -> None:
        for name in [n for n, e in self._entries.items() if e.expires <= now]:
            del self._entries[name]
        for name in [n for n, (_, until) in self._ignored.items() if until <= now]:
            del self._ignored[name]

    def _bump(self) -> None:
        local = self._local
        if local.heartbeat < UINT64_MAX:
            self._local = attrs.evolve(local, heartbeat=local.heartbeat + 1)
        else:
            self._local = attrs.evolve(local, generation=local.generation + 1, heartbeat=0)

    def _set_local_state(self, state: State) -> Step:
        old = self._local.state
        if old is state:
            return Step()
        self._local = attrs.evolve(self._local, state=state)
        self._bump()
        return Step(events=(StateChanged(self._local.name, old, state),))

    def _check_normal(self, now: float, events: list[Event]) -> None:
        if self._local.state is not State.JOINING:
            return
        settled = self._since_change >= 1 and now - self._last_change >= self.interval
        if not self._seeds or (self._exchanged and settled):
            events.extend(self._set_local_state(State.NORMAL).events)

    def _exchange_done(self) -> None:
        self._count(Counter.EXCHANGES)
        self._exchanged = True
        self._since_change += 1

    def _view_changed(self, now: float) -> None:
        self._since_change = 0
        self._last_change = now

    def _count(self, counter: Counter, amount: int = 1) -> None:
        self._counts[counter] += amount

    def _step(self, out: list[Outgoing], events: list[Event]) -> Step:
        for message in out:
            self._count(Counter.MESSAGES_OUT)
            self._count(Counter.BYTES_OUT, len(message.payload))
        return Step(tuple(out), tuple(events))
