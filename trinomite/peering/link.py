"""An outgoing peer link: one pipelined, multiplexed connection to another node.

Theory of operation
-------------------
``PeerPools`` (``peering.pools``) keeps a few of these per other node.  Each
is a ``links.Link`` (connect, backoff, writer, watchdog) that frames requests
in Dynomite's dnode format and matches replies by message id::

    submit(kind, payload, sink) -> frame "   $2014$ <id> <kind> ..." -> outbox
    reader: RES frame <id> -> pop FIFO head(s) -> sink.set(payload)

Replies come back in request order (the peer serves a connection in FIFO
order), so matching is Dynomite's ``dnode_rsp_forward``: a reply whose id
is *older* than the head is from the past and dropped; requests *ahead* of
a newer reply never got one and are failed (``mismatches``).

**A timeout fails only that request** (Dynomite closes the whole connection
and fails everything on it).  The watchdog keeps a heap of deadlines,
checked at most every ``DEADLINE_TICK``; an expired request's sink gets
``-ERR Peer: Connection timed out`` while its FIFO entry stays, so the late
reply, when it comes, is matched and dropped.
If the oldest request is still unanswered a whole timeout after its own
deadline, the peer is not answering at all: the connection is replaced.

Connections to remote-DC peers send at most ``conn_msg_rate`` frames per
second (a token bucket in the writer, as Dynomite's per-connection throttle);
excess frames wait in the outbox, in order.

Message ids come from one node-wide counter (as in Dynomite), so ids on one
connection increase but are not consecutive.

**Bundles** (trinomite peers only, see ``protocol.peer``): every new
connection first sends the hello; once the peer's hello reply is read,
``submit_many`` packs consecutive legs of one message type and flags into
bundle frames of up to ``MAX_BUNDLE`` requests: one header, one FIFO entry,
one deadline (the latest of its requests') and one reply for the lot,
which ``_Bundle`` splits back to each request's sink.  A failure of the
bundle (timeout, lost link, a reply that does not split) gives every
request of it the same error.  A Dynomite peer never answers the hello,
so its links keep one frame per request.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable

import trio

from ..errors import FROM_MEMCACHE, NodeError, redis_error
from ..net.links import ConnState, Link, LinkFailed
from ..net.slots import ReplySink
from ..net.sockets import connect_tcp
from ..protocol.peer import (
    FLAG_BUNDLE,
    GOSSIP_TYPES,
    HELLO_REPLY,
    MAX_BUNDLE,
    Frame,
    FrameParser,
    MessageType,
    encode_frame,
    header_template,
)
from ..protocol.replies import ReplyProtocolError
from ..ring.topology import PeerInfo
from ..stats.histogram import Histogram
from ..tls.material import subject_of
from ..tls.peers import TlsState, dial
from ..tls.stream import TlsHandshakeError
from .batches import BatchLeg, split_leg_reply

__all__ = ["NOT_CONNECTED", "PeerConnection", "PeerLeg"]

log = logging.getLogger("trinomite.peers")

RECEIVE_SIZE = 256 * 1024
#: Timeouts fire at most this late (seconds); it bounds the watchdog's wake-ups.
DEADLINE_TICK = 0.01
TIMEOUT_REPLY = redis_error(NodeError.PEER_TIMEOUT)
NOT_CONNECTED = redis_error(NodeError.PEER_HOST_NOT_CONNECTED)
MISMATCH_REPLY = redis_error(NodeError.PEER_CONNECTION_REFUSE)

#: One request for a peer, as ``PeerPools.send_many`` takes it:
#: (message type, payload, sink, deadline, flags).  With a ``BatchLeg`` for
#: sink, the payload is the batch's requests joined: one bundle, or one frame
#: each to a peer that does not take bundles.
PeerLeg = tuple[MessageType, bytes, ReplySink, float, int]


class _Pending:
    __slots__ = ("deadline", "done", "msg_id", "sent", "sink")

    def __init__(self, msg_id: int, sink: ReplySink, deadline: float, sent: float) -> None:
        self.msg_id = msg_id
        self.sink = sink
        self.deadline = deadline
        self.sent = sent
        self.done = False

    def finish(self, reply: bytes) -> None:
        if not self.done:
            self.done = True
            self.sink.set(reply)


def _one_per_request(legs: list[PeerLeg], over: int = 1) -> list[PeerLeg]:
    """``legs`` with each batch leg (``BatchLeg``) of more than ``over`` requests
    as one leg per request."""
    if not any(isinstance(leg[2], BatchLeg) and len(leg[2].raws) > over for leg in legs):
        return legs
    out: list[PeerLeg] = []
    for leg in legs:
        kind, _, sink, deadline, flags = leg
        if isinstance(sink, BatchLeg) and len(sink.raws) > over:
            raws = sink.raws
            out += [(kind, raws[i], sink.part(i), deadline, flags) for i in range(len(raws))]
        else:
            out.append(leg)
    return out


class _Bundle:
    """The sink of a bundle frame: its reply, split back to each leg's sink.

    ``sinks`` are the legs in order; a ``BatchLeg`` stands for its requests
    and gets their replies together (``set_parts``).
    """

    __slots__ = ("sinks", "total")

    def __init__(self, sinks: list[ReplySink], total: int) -> None:
        self.sinks = sinks
        self.total = total

    def set(self, reply: bytes) -> None:
        parts = split_leg_reply(reply, self.total)
        at = 0
        for sink in self.sinks:
            if isinstance(sink, BatchLeg):
                size = len(sink.raws)
                sink.set_parts(parts[at : at + size])
                at += size
            else:
                sink.set(parts[at])
                at += 1


class PeerConnection(Link):
    """One pipelined connection to a peer's ``dyn_listen``."""

    broken_error = NodeError.PEER_CONNECTION_REFUSE
    failure_types = (*Link.failure_types, ReplyProtocolError)
    #: The TLS version of the last secured connection (None: never secured).
    tls_version: str | None = None
    #: The subject of the certificate the peer presented on it.
    tls_peer: str = ""

    def __init__(
        self,
        *,
        peer: PeerInfo,
        index: int,
        same_dc: bool,
        ids: itertools.count[int],
        timeout: float,
        max_backoff: float,
        preconnect: bool,
        rate: int = 0,
        tls: TlsState | None = None,
    ) -> None:
        async def connect() -> trio.abc.Stream:
            stream = await connect_tcp(peer.host, peer.port)
            if tls is None:
                return stream
            material = tls.peer
            if material is None:  # never plaintext on a secured link
                await trio.aclose_forcefully(stream)
                raise LinkFailed(self.broken_error, "no TLS material loaded for a secured link")
            try:
                secured = await dial(stream, material, peer, tls.timeout)
            except TlsHandshakeError as exc:
                self.tls_handshake_failures += 1
                await trio.aclose_forcefully(stream)
                raise LinkFailed(self.broken_error, str(exc)) from None
            self.tls_version = secured.ssl.version()
            self.tls_peer = subject_of(secured.ssl.getpeercert() or {})
            return secured

        super().__init__(
            name=f"peer {peer.name}#{index}",
            connect=connect,
            timeout=timeout,
            max_backoff=max_backoff,
            preconnect=preconnect,
        )
        self.peer = peer
        self.same_dc = same_dc
        #: Most frames per second this connection sends (0: unlimited);
        #: Dynomite's ``conn_msg_rate`` for remote-DC links.
        self.rate = rate
        self.throttled = 0
        self.mismatches = 0
        #: Round-trip time of requests (submit to reply), microseconds.
        self.latency = Histogram()
        self.requests = 0
        self.request_bytes = 0
        self.responses = 0
        self.response_bytes = 0
        self.dropped = 0
        #: Whether this link runs TLS (``secure_server_option``, Dynomite's is_secure).
        self.secure = tls is not None
        #: TLS handshakes that failed, and links the peer refused as mismatched.
        self.tls_handshake_failures = 0
        self._ids = ids
        #: Frame header templates by (message type, flags): see ``header_template``.
        self._templates: dict[tuple[MessageType, int], bytes] = {}
        self._inflight: deque[_Pending] = deque()
        self._deadlines: list[tuple[float, int, _Pending]] = []
        #: The peer answered this connection's hello: legs may go as bundles.
        self.bundles = False
        #: On a throttled link, the requests each outbox entry holds.
        self._sizes: list[int] = []
        #: Gets the gossip frames that arrive on this link (answers to ours).
        self.on_gossip: Callable[[PeerConnection, Frame], None] | None = None
        self.gossip_sent = 0
        #: The peer answers memcached requests (``data_store: 1``): its own
        #: errors arrive as ``SERVER_ERROR`` lines, taken back to the RESP
        #: form they travel in inside a node.
        self.memcache = False
        #: Bundle frames sent, and the requests they carried.
        self.bundles_sent = 0
        self.bundled_requests = 0

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def submit(
        self, kind: MessageType, payload: bytes, sink: ReplySink, deadline: float, flags: int = 0
    ) -> bool:
        """Send one request; False (nothing sent) while the peer is unreachable."""
        msg_id = next(self._ids)
        frame = self._template(kind, flags) % (msg_id, len(payload)) + payload
        if not self._enqueue(frame):
            self.dropped += 1
            return False
        self.requests += 1
        self.request_bytes += len(frame)
        entry = _Pending(msg_id, sink, deadline, trio.current_time())
        self._inflight.append(entry)
        heapq.heappush(self._live_deadlines(), (deadline, msg_id, entry))
        return True

    def _template(self, kind: MessageType, flags: int) -> bytes:
        template = self._templates.get((kind, flags))
        if template is None:
            template = header_template(kind, same_dc=self.same_dc, flags=flags)
            self._templates[(kind, flags)] = template
        return template

    def _live_deadlines(self) -> list[tuple[float, int, _Pending]]:
        """The deadline heap, first rid of answered entries if they outnumber the rest."""
        deadlines = self._deadlines
        if len(deadlines) > 2 * len(self._inflight) + 1024:
            # Answered requests stay in the heap until their deadline; drop them
            # in one O(n) pass so the heap stays proportional to what is in flight.
            deadlines = self._deadlines = [d for d in deadlines if not d[2].done]
            heapq.heapify(deadlines)
        return deadlines

    async def _handshake(self, stream: trio.abc.Stream) -> None:
        """Send the hello: a trinomite peer's reply turns bundles on (see the module doc)."""
        self.bundles = False
        await stream.send_all(
            encode_frame(next(self._ids), MessageType.CRYPTO_HANDSHAKE, b"", same_dc=self.same_dc)
        )

    def submit_many(self, legs: list[PeerLeg]) -> bool:
        """Send several requests as one write; False (nothing sent) while unreachable."""
        if self.bundles and not self.memcache:  # bundles carry RESP requests only
            return self._submit_bundles(legs)
        legs = _one_per_request(legs)
        if self.rate:  # the throttle counts outbox entries as frames: one each
            sent = False
            for kind, payload, sink, deadline, flags in legs:
                if self.submit(kind, payload, sink, deadline, flags):
                    sent = True
                elif sent:
                    sink.set(NOT_CONNECTED)
            return sent
        ids = self._ids
        template = self._template
        parts: list[bytes] = []
        entries: list[_Pending] = []
        now = trio.current_time()
        for kind, payload, sink, deadline, flags in legs:
            msg_id = next(ids)
            parts.append(template(kind, flags) % (msg_id, len(payload)))
            parts.append(payload)
            entries.append(_Pending(msg_id, sink, deadline, now))
        return self._queue(b"".join(parts), entries, len(legs))

    def _queue(self, blob: bytes, entries: list[_Pending], requests: int) -> bool:
        """Send ``blob`` (the frames of ``entries``, ``requests`` requests in all)."""
        if not self._enqueue(blob):
            self.dropped += requests
            return False
        self._track(entries, requests, len(blob))
        return True

    def _track(self, entries: list[_Pending], requests: int, size: int) -> None:
        """Queued frames of ``entries``: count them, await their replies and deadlines."""
        self.requests += requests
        self.request_bytes += size
        self._inflight.extend(entries)
        deadlines = self._live_deadlines()
        push = heapq.heappush
        for entry in entries:
            push(deadlines, (entry.deadline, entry.msg_id, entry))

    def _submit_bundles(self, legs: list[PeerLeg]) -> bool:
        """``submit_many`` to a trinomite peer: runs of like legs as bundle frames.

        Consecutive legs of one message type and flags share a bundle of up to
        ``MAX_BUNDLE`` requests (a batch leg counts as its requests); on a
        throttled link a bundle is at most ``rate`` requests and spends one
        token per request.
        """
        ids = self._ids
        template = self._template
        rate = self.rate
        limit = min(MAX_BUNDLE, rate) if rate else MAX_BUNDLE
        if rate:
            legs = _one_per_request(legs, limit)
        frames: list[bytes] = []
        sizes: list[int] = []
        entries: list[_Pending] = []
        now = trio.current_time()
        count = len(legs)
        start = 0
        while start < count:
            kind, payload, sink, deadline, flags = legs[start]
            total = len(sink.raws) if isinstance(sink, BatchLeg) else 1
            stop = start + 1
            while stop < count and legs[stop][0] is kind and legs[stop][4] == flags:
                other = legs[stop][2]
                size = len(other.raws) if isinstance(other, BatchLeg) else 1
                if total + size > limit:
                    break
                total += size
                deadline = max(deadline, legs[stop][3])
                stop += 1
            if stop - start > 1:
                payload = b"".join([leg[1] for leg in legs[start:stop]])
                sink = _Bundle([leg[2] for leg in legs[start:stop]], total)
            if total > 1:
                flags |= FLAG_BUNDLE
                self.bundles_sent += 1
                self.bundled_requests += total
            msg_id = next(ids)
            frames.append(template(kind, flags) % (msg_id, len(payload)) + payload)
            sizes.append(total)
            entries.append(_Pending(msg_id, sink, deadline, now))
            start = stop
        requests = sum(sizes)
        if not rate:
            return self._queue(b"".join(frames), entries, requests)
        if not self._enqueue(frames[0], sizes[0]):
            self.dropped += requests
            return False
        for frame, size in zip(frames[1:], sizes[1:], strict=True):
            self._enqueue(frame, size)  # no await since the first: the link is still up
        self._track(entries, requests, sum(map(len, frames)))
        return True

    def _enqueue(self, data: bytes, size: int = 1) -> bool:
        """``Link._enqueue``; on a throttled link ``size`` is the requests ``data`` holds."""
        if not super()._enqueue(data):
            return False
        if self.rate:
            self._sizes.append(size)
        return True

    @property
    def throttled_link(self) -> bool:
        return bool(self.rate)

    async def _write_requests(self, stream: trio.abc.Stream) -> None:
        if not self.rate:
            await super()._write_requests(stream)
            return
        # A token bucket refilled continuously at ``rate`` requests per second
        # and holding at most one second's worth, as Dynomite's
        # dnode_req_send_next; a bundle spends one token per request.
        tokens = float(self.rate)
        last = trio.current_time()
        while True:
            if not self._outbox:
                await self._writer.park()
                continue
            now = trio.current_time()
            tokens = min(float(self.rate), tokens + (now - last) * self.rate)
            last = now
            sizes = self._sizes
            count = used = 0
            while count < len(sizes) and used + sizes[count] <= tokens:
                used += sizes[count]
                count += 1
            if not count:
                self.throttled += 1
                await trio.sleep((sizes[0] - tokens) / self.rate)
                continue
            batch, self._outbox = self._outbox[:count], self._outbox[count:]
            self._sizes = sizes[count:]
            tokens -= used
            await stream.send_all(b"".join(batch))

    async def _read_replies(self, stream: trio.abc.Stream) -> None:
        parser = FrameParser()
        inflight = self._inflight
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise LinkFailed(self.broken_error, "peer closed the connection")
            parser.feed(data)
            now = trio.current_time()
            with self.hold:  # replies start clients' next rounds: send them together
                for frame in parser.frames():
                    if frame.type is not MessageType.RES:
                        if frame.type is MessageType.PARSE_ERROR:
                            self._refused(frame.payload)
                        elif frame.type is MessageType.CRYPTO_HANDSHAKE:
                            self.bundles = frame.payload.startswith(HELLO_REPLY)
                        elif frame.type in GOSSIP_TYPES and self.on_gossip is not None:
                            self.on_gossip(self, frame)  # an answer to our gossip
                        continue
                    self.responses += 1
                    self.response_bytes += len(frame.payload)
                    msg_id = frame.msg_id
                    while inflight and inflight[0].msg_id < msg_id:
                        self.mismatches += 1  # never answered: Dynomite's peer_mismatch_requests
                        inflight.popleft().finish(MISMATCH_REPLY)
                    if inflight and inflight[0].msg_id == msg_id:
                        entry = inflight.popleft()
                        self.latency.observe(int((now - entry.sent) * 1e6))
                        payload = frame.payload
                        if self.memcache and payload[:1] == b"S":
                            payload = FROM_MEMCACHE.get(payload, payload)
                        entry.finish(payload)
            if parser.error is not None:
                raise LinkFailed(self.broken_error, parser.error.message)

    def _refused(self, payload: bytes) -> None:
        """The peer refused this link (TLS disagreement): fail with its reason."""
        self.tls_handshake_failures += 1
        reason = payload[:512].decode("utf-8", "replace")
        raise LinkFailed(self.broken_error, f"refused by the peer: {reason}")

    async def _watch_deadlines(self, stream: trio.abc.Stream) -> None:
        deadlines = self._deadlines
        inflight = self._inflight
        while True:
            now = trio.current_time()
            while deadlines and (deadlines[0][2].done or deadlines[0][0] <= now):
                _, _, entry = heapq.heappop(deadlines)
                if not entry.done:
                    self.timeouts += 1
                    entry.finish(TIMEOUT_REPLY)
            if inflight and inflight[0].done and now > inflight[0].deadline + self.timeout:
                raise LinkFailed(NodeError.PEER_TIMEOUT, "peer stopped answering")
            if deadlines:
                # Answered requests stay in the heap until their deadline; waking
                # at most once per tick pops them in batches, not one wake each.
                await trio.sleep_until(max(deadlines[0][0], now + DEADLINE_TICK))
            else:
                await trio.sleep(self.timeout)

    def close_for_good(self) -> None:
        """The peer left the cluster: refuse new requests and fail those in flight.

        The owner cancels the connection's task as well (``PeerPools.sync``).
        """
        self._set_state(ConnState.DOWN)
        self._fail_inflight(NodeError.PEER_HOST_NOT_CONNECTED)

    def send_gossip(self, frame_type: int, payload: bytes) -> bool:
        """Queue a gossip frame (no reply is matched); False while the link is down."""
        frame = encode_frame(next(self._ids), frame_type, payload, same_dc=self.same_dc, data=b"a")
        if not self._enqueue(frame):
            return False
        self.gossip_sent += 1
        return True

    def _fail_inflight(self, error: NodeError) -> None:
        reply = redis_error(error)
        inflight, self._inflight = self._inflight, deque()
        self._deadlines = []
        self._outbox = []
        self._sizes = []
        for entry in inflight:
            entry.finish(reply)
