"""The peer listener: requests from other nodes, answered in order.

Theory of operation
-------------------
Other nodes connect to ``dyn_listen`` and send Dynomite dnode frames.  One
peer connection carries the replicated requests of *every* client of the
node at the other end, so it is pipelined: a reader task keeps reading
while earlier rounds are still being answered, and a writer task sends the
answered rounds' RES frames, in order::

    reader: receive_some -> FrameParser -> a round per read; for each frame:
        REQ          -> this node's datastore, through the node-state gate
        REQ_FORWARD  -> this node's datastore, and re-sent to the owner in
                        every other rack of this DC (Coordinator.handle_forward)
        CRYPTO_HANDSHAKE with an empty payload (a trinomite node's hello)
                     -> answered with HELLO_REPLY: bundles are welcome
        GOSSIP_* and DIGEST_* -> the node's membership (``gossip.ticker``), whose
                     answers (an ACK to a SYN) go back on this connection;
                     without gossip accepted and ignored, as Dynomite
        other CRYPTO_HANDSHAKEs, ... -> accepted, no reply (as Dynomite)
    writer: every complete round at the head of the queue -> one send_all

A bundle (``FLAG_BUNDLE``, from trinomite nodes) is 1 to ``MAX_BUNDLE``
requests in one frame: all are parsed first, then with the node NORMAL its
REQ payload joins the datastore run whole, as a single frame's would; else
each request goes its own way (state gate, or REQ_FORWARD's re-send) and
their replies are joined back in order into the one RES frame.  A bundle
that does not parse is answered with one error, which the sender gives to
every request of it.

At most ``MAX_ROUNDS_IN_FLIGHT`` rounds per connection are unanswered; the
reader waits for the writer beyond that, which is the link's backpressure.

Each reply frame echoes the request's message id and ``same_dc``.  A
request frame's payload must be exactly one well-formed Redis request (on a
memcached node, ``data_store: 1``: one memcached request with a key, never
a bundle, and the node's own errors go back as ``SERVER_ERROR`` lines): the
payload is parsed before it goes anywhere near the shared datastore
connections, so a confused or hostile peer can only hurt its own link.  A
fatal framing error (payload over the limit, encrypted frames, which
trinomite does not speak: it uses TLS) closes that connection only.
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable

import attrs
import trio

from ..admin.api import NodeState
from ..datastore.gate import StateGate
from ..datastore.pool import DatastorePool, RunItem
from ..net.links import WriteHold
from ..net.slots import Gather, Parker, Slot, SlotGroup
from ..net.sockets import LeanSocketStream, accept_forever
from ..protocol import replies as r
from ..protocol.commands import Access, lookup
from ..protocol.memcache import parse_payload
from ..protocol.memcache_replies import to_memcache
from ..protocol.peer import (
    FLAG_BUNDLE,
    FLAG_RESP3,
    GOSSIP_TYPES,
    HELLO_REPLY,
    MAX_BUNDLE,
    Frame,
    FrameParser,
    MessageType,
    header_template,
)
from ..protocol.requests import PayloadParser, encode_command
from ..tls.peers import TlsState
from .coordinator import Coordinator

__all__ = ["PeerServerCounters", "serve_peers"]

log = logging.getLogger("trinomite.peer_server")

RECEIVE_SIZE = 256 * 1024
#: Rounds (reads of request frames) a peer connection may have unanswered.
MAX_ROUNDS_IN_FLIGHT = 64
#: Bytes outside frames tolerated since the last good frame (resync, as
#: Dynomite); past it the caller is not a Dynomite peer and is disconnected.
MAX_GARBAGE = 64 * 1024
_REQUESTS = (MessageType.REQ, MessageType.REQ_FORWARD)
_NOT_ONE_REQUEST = r.error("ERR Protocol error: peer frame payload is not one request")
_NOT_ONE_MEMCACHE = r.error(
    "ERR Protocol error: peer frame payload is not one memcached request with a key"
)
_NOT_A_BUNDLE = r.error(
    f"ERR Protocol error: peer bundle payload is not 1 to {MAX_BUNDLE} whole requests"
)
#: Reply frame headers by (type, ``same_dc``) (see ``header_template``).
_HEADERS = {
    (kind, dc): header_template(kind, same_dc=dc)
    for kind in (MessageType.RES, MessageType.CRYPTO_HANDSHAKE)
    for dc in (False, True)
}


@attrs.define
class PeerServerCounters:
    """Dynomite's ``dnode_client_*`` stats (inbound peer connections)."""

    dnode_client_connections: int = 0
    dnode_client_eof: int = 0
    dnode_client_err: int = 0


class _Round(SlotGroup):
    """The request frames of one read, and their replies once all are in."""

    __slots__ = ("answers", "handler")

    def __init__(self, handler: PeerConnectionHandler) -> None:
        super().__init__()
        self.handler = handler
        self.answers: list[tuple[int, bytes | None, Slot]] = []

    def slot(self, msg_id: int, same_dc: bool, kind: MessageType = MessageType.RES) -> Slot:
        slot = self.new_slot()
        self.answers.append((msg_id, _HEADERS[kind, same_dc], slot))
        return slot

    def frame(self, frame: bytes) -> None:
        """A whole frame to send in this round's place (a gossip answer)."""
        slot = self.new_slot()
        self.answers.append((0, None, slot))
        slot.set(frame)

    def completed(self) -> None:
        self.handler.round_done()

    def reply_frames(self) -> bytes:
        parts = []
        memcache = self.handler.memcache
        for msg_id, header, slot in self.answers:
            reply = slot.reply or b""
            if memcache and reply[:1] == b"-":
                reply = to_memcache(reply)  # the node's own errors, as Dynomite sends them
            if header is not None:
                parts.append(header % (msg_id, len(reply)))
            parts.append(reply)
        return b"".join(parts)


class _Run:
    """Consecutive REQ frames bound for the datastore together (see ``_start_round``)."""

    __slots__ = ("items", "protocol")

    def __init__(self) -> None:
        self.protocol = 2
        self.items: list[RunItem] = []

    def add(
        self,
        payload: bytes,
        count: int,
        slot: Slot,
        protocol: int,
        pool: DatastorePool,
        deadline: float,
    ) -> None:
        """One frame's requests; a change of RESP version sends the run so far first."""
        if self.items and self.protocol != protocol:
            self.flush(pool, deadline)
        self.protocol = protocol
        self.items.append((payload, count, slot))

    def flush(self, pool: DatastorePool, deadline: float) -> None:
        if self.items:
            pool.send_run(0, self.protocol, self.items, deadline)
            self.items = []


class PeerConnectionHandler:
    def __init__(
        self,
        stream: LeanSocketStream,
        local: StateGate,
        coordinator: Coordinator,
        counters: PeerServerCounters,
        timeout: float,
        hold: WriteHold | None = None,
        tls: TlsState | None = None,
    ) -> None:
        self.accepted = stream
        #: The stream requests are read from: ``accepted``, or TLS over it.
        self.stream: trio.abc.Stream = stream
        #: Admits the connection (TLS or plaintext, by secure_server_option).
        self.tls = tls
        #: A plaintext caller's first frame is still to be checked against the rules.
        self._unchecked = False
        #: Held while a read's frames are started (see ``links.WriteHold``).
        self.hold = hold or WriteHold()
        self.local = local
        self.coordinator = coordinator
        self.counters = counters
        self.timeout = timeout
        self.name = stream.peer_name()
        #: Rounds read and not yet written back, oldest first.
        self._rounds: deque[_Round] = deque()
        self._writer = Parker()  # the writer waits for the head round
        self._space = Parker()  # the reader waits for rounds to be written
        self._payloads = PayloadParser()
        self._run = _Run()
        #: Payloads are memcached requests (``data_store: 1``), not Redis ones.
        self.memcache = False
        #: Takes the gossip frames that arrive (``gossip.ticker``): the frames to
        #: answer with on this connection.  None: gossip is accepted and ignored.
        self.gossip: Callable[[Frame], list[bytes]] | None = None

    async def run(self) -> None:
        counters = self.counters
        counters.dnode_client_connections += 1
        try:
            if await self._admit():
                await self._serve()
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            counters.dnode_client_eof += 1  # the caller went away (reset or closed)
        except* Exception:
            counters.dnode_client_err += 1
            log.exception("peer %s: handler failed", self.name)
        finally:
            counters.dnode_client_connections -= 1
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)

    async def _admit(self) -> bool:
        """TLS or plaintext, as this node's rules want; False if refused (and closed)."""
        if self.tls is None:
            return True
        topology = self.coordinator.topology
        stream = await self.tls.admit(self.accepted, topology.local, topology.peers)
        if stream is None:
            return False
        self.stream = stream
        self._unchecked = stream is self.accepted
        return True

    async def _refuse_plaintext(self, frames: list[Frame]) -> bool:
        """Check a plaintext caller's first frame; True if the link was refused."""
        self._unchecked = False
        assert self.tls is not None
        topology = self.coordinator.topology
        same_dc = frames[0].same_dc
        reason = self.tls.plaintext_refusal(self.name, same_dc, topology.local, topology.peers)
        if not reason:
            return False
        await self.tls.refuse(self.stream, self.name, reason, same_dc)
        return True

    async def _serve(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_replies)
            await self._read_requests()
            # EOF or a framing error: answer what was read, then close.
            while self._rounds:
                await self._space.park()
            nursery.cancel_scope.cancel()

    async def _read_requests(self) -> None:
        parser = FrameParser()
        skipped_at_frame = 0  # garbage is skipped to resync, but only so much of it
        stream = self.stream
        rounds = self._rounds
        while True:
            while len(rounds) >= MAX_ROUNDS_IN_FLIGHT:
                await self._space.park()
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                self.counters.dnode_client_eof += 1
                return
            parser.feed(data)
            frames = parser.frames()
            if frames:
                skipped_at_frame = parser.skipped
            if frames and self._unchecked and await self._refuse_plaintext(frames):
                return
            if frames:
                with self.hold:
                    self._start_round(frames)
            if parser.error is not None:
                self.counters.dnode_client_err += 1
                log.warning("peer %s: %s; closing", self.name, parser.error.message)
                return
            if parser.skipped - skipped_at_frame > MAX_GARBAGE:
                self.counters.dnode_client_err += 1
                log.warning(
                    "peer %s: over %d bytes that are not Dynomite frames; closing",
                    self.name,
                    MAX_GARBAGE,
                )
                return

    def _start_round(self, frames: list[Frame]) -> None:
        """Start a read's request frames; their replies fill the round in frame order.

        With the node NORMAL, consecutive REQ frames (of one RESP version) go
        to the datastore as one run: one send, one delimiter, the payloads
        joined as they came, and the replies split back per frame
        (``DatastorePool.send_run``).  Otherwise each goes through the state gate on its own.
        """
        answers = _Round(self)
        now = trio.current_time()
        deadline = now + self.timeout
        gate = self.local
        batched = gate.state is NodeState.NORMAL
        parse = self._payloads.parse
        run = self._run
        for frame in frames:
            kind = frame.type
            if kind not in _REQUESTS:
                if kind is MessageType.CRYPTO_HANDSHAKE and not frame.payload:
                    # A trinomite node's hello: say this end takes bundles.
                    answers.slot(frame.msg_id, frame.same_dc, kind).set(HELLO_REPLY)
                elif kind in GOSSIP_TYPES and self.gossip is not None:
                    for answer in self.gossip(frame):
                        answers.frame(answer)
                continue
            slot = answers.slot(frame.msg_id, frame.same_dc)
            payload = frame.payload
            protocol = 3 if frame.flags & FLAG_RESP3 else 2
            if self.memcache:
                self._memcache(frame, slot, batched, now)
                continue
            if frame.flags & FLAG_BUNDLE:
                self._bundle(frame, slot, protocol, batched, now)
                continue
            args = parse(payload)
            if args is None:
                slot.set(_NOT_ONE_REQUEST)
            elif kind is MessageType.REQ:
                if batched:
                    run.add(payload, 1, slot, protocol, gate.pool, deadline)
                    continue
                spec = lookup(args[0])
                write = spec is None or spec.is_write(args)
                gate.send(0, protocol, payload, slot, deadline, write)
            else:
                run.flush(gate.pool, deadline)  # keeps the datastore order of the frames
                self.coordinator.handle_forward(args, payload, protocol, slot, now)
        run.flush(gate.pool, deadline)
        if answers.answers:
            self._rounds.append(answers)
            answers.seal()

    def _memcache(self, frame: Frame, slot: Slot, batched: bool, now: float) -> None:
        """A memcached request frame: one request, checked, then as a Redis one goes."""
        request = None if frame.flags & FLAG_BUNDLE else parse_payload(frame.payload)
        gate = self.local
        deadline = now + self.timeout
        if request is None:
            slot.set(_NOT_ONE_MEMCACHE)
        elif frame.type is MessageType.REQ:
            owed = 0 if request.noreply else 1
            if batched:
                self._run.add(frame.payload, owed, slot, 2, gate.pool, deadline)
                return
            assert request.spec is not None
            write = request.spec.access is Access.WRITE
            gate.send(0, 2, frame.payload, slot, deadline, write)
        else:
            self._run.flush(gate.pool, deadline)  # keeps the datastore order of the frames
            self.coordinator.forward(request.keys[0], frame.payload, 2, slot, now)

    def _bundle(self, frame: Frame, slot: Slot, protocol: int, batched: bool, now: float) -> None:
        """Start a bundle frame's requests; ``slot`` gets their replies, joined in order."""
        requests = self._payloads.parse_many(frame.payload, MAX_BUNDLE)
        run = self._run
        gate = self.local
        deadline = now + self.timeout
        if requests is None:
            slot.set(_NOT_A_BUNDLE)
            return
        if frame.type is MessageType.REQ and batched:
            run.add(frame.payload, len(requests), slot, protocol, gate.pool, deadline)
            return
        run.flush(gate.pool, deadline)  # keeps the datastore order of the frames
        joined = Gather(slot)
        for args in requests:
            raw = encode_command(args)
            if frame.type is MessageType.REQ:
                spec = lookup(args[0])
                write = spec is None or spec.is_write(args)
                gate.send(0, protocol, raw, joined.slot(), deadline, write)
            else:
                self.coordinator.handle_forward(args, raw, protocol, joined.slot(), now)
        joined.seal()

    def round_done(self) -> None:
        self._writer.unpark()

    async def _write_replies(self) -> None:
        rounds = self._rounds
        while True:
            if not rounds or not rounds[0].complete:
                await self._writer.park()
                continue
            ready = []
            while rounds and rounds[0].complete:
                ready.append(rounds.popleft().reply_frames())
            self._space.unpark()
            await self.stream.send_all(b"".join(ready))


async def serve_peers(
    listeners: list[socket.socket],
    make_handler: Callable[[LeanSocketStream], PeerConnectionHandler],
    handler_nursery: trio.Nursery,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept peer connections on every listener until cancelled."""

    def handle(stream: LeanSocketStream) -> None:
        handler_nursery.start_soon(make_handler(stream).run)

    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(accept_forever, listener, handle)
        task_status.started()
