"""Hinted handoff's Trio shell: keep missed writes, and replay them in order, throttled.

Theory of operation
-------------------
Keeping: the coordinator wraps the sink of every write it sends to a peer
in ``HintOnMiss``.  A reply that says the replica did not get the write
(not connected, timed out, refused, or its datastore failed: ``MISSED``)
stores the request as a hint for that peer before it is passed on; any
other reply, an error of the datastore's (WRONGTYPE) included, means the
replica applied (or refused) it as every replica would.

Replaying: ``serve_replay`` is one task.  Whenever a peer with hints is up,
it takes a batch of hints from that peer's cursor and sends them, in log
order, on one connection (a fixed client id pins them to the peer's home
connection, which answers in order), at most ``REPLAY_WINDOW`` in flight,
then waits for every reply of the batch:

* ok, or a datastore error (the replica refused the write, as it would
  have the first time: counted as *rejected*, logged once, not retried);
* a ``MISSED`` reply: the peer went away again; the batch stops at the
  last hint before the first miss and the rest is retried later;
* hints older than the window are skipped (counted as dropped);
* a hint for a key that a newer whole-value write (SET, SETEX, PSETEX,
  GETSET, single-key DEL/UNLINK) reached live after it is skipped (counted
  as *superseded*): replaying it would put the older value back.  A quorum
  write's counted leg is sent live even while its peer has hints, so that
  happens; the coordinator records such live overwrites when it sends them.

Then the cursor moves past the done hints (``HintStore.advance``) and the
task sleeps long enough to keep to ``rate`` hints per second, so a replay
never starves client traffic.  Live writes are not held back behind a
peer's hints (under steady load a peer would never catch up): they may
overtake older hints, which is why overtaken whole-value overwrites are
skipped (below) and versioned writes (``cluster.repair``) win by version.
``serve_sync`` fsyncs the logs every ``interval`` in a worker thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

import trio

from ..errors import NodeError, redis_error
from ..net.slots import ReplySink
from ..protocol.peer import MessageType
from ..protocol.replies import is_error
from .log import Hint, overwritten_key
from .store import HintStore

__all__ = [
    "LOCAL_HINTS",
    "MISSED",
    "HintOnMiss",
    "LocalOrPeers",
    "Sender",
    "serve_replay",
    "serve_sync",
]

log = logging.getLogger("trinomite.hints")

#: Replies meaning the replica did not get the write.
MISSED = frozenset(
    redis_error(error)
    for error in (
        NodeError.PEER_HOST_NOT_CONNECTED,
        NodeError.PEER_HOST_DOWN,
        NodeError.PEER_CONNECTION_REFUSE,
        NodeError.PEER_TIMEOUT,
        NodeError.STORAGE_CONNECTION_REFUSE,
        NodeError.STORAGE_TIMEOUT,
        NodeError.STORAGE_NOT_ANSWERING,
        NodeError.STORAGE_RECONNECTING,
        NodeError.STORAGE_PROTOCOL,
    )
)
#: The hint log of writes this node's own datastore missed (a quorum's local
#: leg while it was down), replayed into it when it is back.
LOCAL_HINTS = "local"
#: Client id of replayed hints (pins them to one connection: in order).
HINT_CLIENT_ID = 0
#: Hints in flight at once during a replay, and per batch.
REPLAY_WINDOW = 64
#: How long a replayed hint may take (seconds).
REPLAY_TIMEOUT = 10.0
#: Pause between attempts while a peer's replay keeps failing.
RETRY_PAUSE = 1.0


class Sender(Protocol):
    """What replay needs of the peer links (``peering.pools.PeerPools``)."""

    def send(
        self,
        name: str,
        client_id: int,
        kind: MessageType,
        payload: bytes,
        sink: ReplySink,
        deadline: float,
        flags: int = 0,
    ) -> None: ...

    def is_up(self, name: str) -> bool: ...

    async def wait_changed(self) -> None: ...


class LocalDatastore(Protocol):
    """What replay needs of this node's datastore pool (``datastore.pool``)."""

    def send(
        self,
        client_id: int,
        protocol: int,
        raw: bytes,
        count: int,
        sink: ReplySink,
        deadline: float,
    ) -> None: ...

    @property
    def up(self) -> bool: ...


class LocalOrPeers:
    """A ``Sender`` that replays ``LOCAL_HINTS`` into the local datastore, the rest to peers."""

    def __init__(self, peers: Sender, local: LocalDatastore) -> None:
        self.peers = peers
        self.local = local

    def send(
        self,
        name: str,
        client_id: int,
        kind: MessageType,
        payload: bytes,
        sink: ReplySink,
        deadline: float,
        flags: int = 0,
    ) -> None:
        if name == LOCAL_HINTS:
            self.local.send(client_id, 2, payload, 1, sink, deadline)
        else:
            self.peers.send(name, client_id, kind, payload, sink, deadline, flags)

    def is_up(self, name: str) -> bool:
        return self.local.up if name == LOCAL_HINTS else self.peers.is_up(name)

    async def wait_changed(self) -> None:
        await self.peers.wait_changed()


class HintOnMiss:
    """A write leg's sink: a reply saying the replica missed it stores a hint first."""

    __slots__ = ("flags", "kind", "peer", "raw", "sink", "store")

    def __init__(
        self, store: HintStore, peer: str, kind: int, flags: int, raw: bytes, sink: ReplySink
    ) -> None:
        self.store = store
        self.peer = peer
        self.kind = kind
        self.flags = flags
        self.raw = raw
        self.sink = sink

    def set(self, reply: bytes) -> None:
        note_write_reply(self.store, self.peer, self.kind, self.flags, self.raw, reply)
        self.sink.set(reply)


def note_write_reply(
    store: HintStore, peer: str, kind: int, flags: int, raw: bytes, reply: bytes
) -> None:
    """A write leg's reply from ``peer``: a miss becomes a hint; an applied write
    that overtook ``peer``'s hints marks its key so older hints are skipped."""
    if reply[:1] == b"-" and reply in MISSED:  # most replies are not errors
        store.add(peer, kind, flags, raw)
    elif store.has_pending(peer) and _applied(reply):
        key = overwritten_key(raw)
        if key is not None:  # a live overwrite overtook this peer's hints
            store.note_overwrite(peer, key)


def _applied(reply: bytes) -> bool:
    """Whether a write's reply says it took effect (an error or a nil says it did not)."""
    return (
        reply[:1] in (b"+", b":")
        or (reply[:1] == b"$" and not reply.startswith(b"$-1"))
        or reply.startswith(_MEMCACHE_APPLIED)
    )


#: memcached's replies to a write that took effect.
_MEMCACHE_APPLIED = (b"STORED", b"DELETED", b"TOUCHED")


class _Batch:
    """Replies of one replay batch, by position; ``done`` once all are in."""

    def __init__(self, count: int) -> None:
        self.replies: list[bytes | None] = [None] * count
        self.missing = count
        self.done = trio.Event()

    def sink(self, index: int) -> ReplySink:
        return _Slot(self, index)


class _Slot:
    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch = batch
        self.index = index

    def set(self, reply: bytes) -> None:
        batch = self.batch
        if batch.replies[self.index] is None:
            batch.replies[self.index] = reply
            batch.missing -= 1
            if not batch.missing:
                batch.done.set()


async def replay_batch(store: HintStore, peers: Sender, name: str) -> int:
    """Replay one batch of ``name``'s hints; the number done (0: nothing, or it failed)."""
    found = store.next_hints(name, REPLAY_WINDOW)
    if not found:
        return 0
    live: list[tuple[int, Hint, int]] = []
    superseded: set[int] = set()
    for index, (hint, end) in enumerate(found):
        if store.superseded(name, hint, end):
            superseded.add(index)
        elif not store.expired(hint):
            live.append((index, hint, end))
    batch = _Batch(len(live))
    deadline = trio.current_time() + REPLAY_TIMEOUT
    for position, (_, hint, _) in enumerate(live):
        sink = batch.sink(position)
        kind = MessageType(hint.kind)
        peers.send(name, HINT_CLIENT_ID, kind, hint.payload, sink, deadline, hint.flags)
    if live:
        with trio.move_on_after(REPLAY_TIMEOUT + 1):
            await batch.done.wait()
    return _settle(store, name, found, live, batch.replies, superseded)


def _settle(
    store: HintStore,
    name: str,
    found: list[tuple[Hint, int]],
    live: list[tuple[int, Hint, int]],
    replies: Iterable[bytes | None],
    superseded: set[int],
) -> int:
    """Advance past the hints done, up to the first one the replica missed."""
    reply_of = {index: reply for (index, _, _), reply in zip(live, replies, strict=True)}
    replayed = expired = rejected = skipped = 0
    offset = None
    for index, (_, end) in enumerate(found):
        if index in superseded:
            skipped += 1
        elif index not in reply_of:
            expired += 1
        else:
            reply = reply_of[index]
            if reply is None or reply in MISSED:
                break  # the peer went away (or is too slow): the rest waits
            if is_error(reply):
                rejected += 1
                if store.peers[name].rejected + rejected == 1:
                    log.warning("hint for %s refused by the replica: %s", name, reply.strip())
            else:
                replayed += 1
        offset = end
    done = replayed + expired + rejected + skipped
    if offset is not None:
        store.advance(
            name,
            offset,
            replayed=replayed,
            expired=expired,
            rejected=rejected,
            superseded=skipped,
        )
    return done


async def serve_replay(
    store: HintStore,
    peers: Sender,
    rate: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Replay every reachable peer's hints, forever (see the module doc)."""
    task_status.started()
    strangers: set[str] = set()
    while True:
        progressed = False
        for name in list(store.peers):
            if not store.has_pending(name) or name in strangers:
                continue
            try:
                up = peers.is_up(name)
            except KeyError:  # hints left in hints_dir for a peer no longer configured
                strangers.add(name)
                log.warning(
                    "%d hints for %s, which is not a peer any more: kept, not replayed",
                    store.peers[name].pending,
                    name,
                )
                continue
            if not up:
                continue
            done = await replay_batch(store, peers, name)
            if done:
                progressed = True
                await trio.sleep(done / rate)
        if not progressed:
            with trio.move_on_after(RETRY_PAUSE):
                await peers.wait_changed()


async def serve_sync(
    store: HintStore,
    interval: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """fsync the hint logs every ``interval`` seconds, off the event loop."""
    task_status.started()
    if store.directory is None:
        return
    try:
        while True:
            await trio.sleep(interval)
            await trio.to_thread.run_sync(store.sync)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.sync)
