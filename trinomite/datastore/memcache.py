"""The datastore pool in front of memcached: the same multiplexed links, other framing.

Theory of operation
-------------------
A memcached node (``data_store: 1``) keeps the Redis pool's design
(``datastore.pool``): a few long-lived connections shared by every client,
an outbox sent once per burst, a FIFO of runs in flight, the watchdog that
times requests out one by one, reconnects with backoff.  Only the framing
of replies differs.

memcached's replies are not self-describing (a ``NOT_FOUND`` means one
thing after ``incr`` and another after ``delete``; a retrieval runs until
``END``; ``noreply`` requests get nothing, but some errors are sent anyway).
So every run is followed on the wire by a meta-get of a reserved key with
an opaque token of 120 fresh random bits (memcached takes at most 32
bytes of opaque)::

    mg __trinomite:delimiter O<30 hex digits>\\r\\n  ->  EN O<token>\\r\\n

and the run's replies are everything before that line
(``MemcacheReplyFramer.take_until``), one search per read, whatever the
run's requests were: memcached's own bytes, forwarded unchanged, with its
own behaviour for ``noreply`` included.  The token is unknown until the run
is sent, so no value a client stored can contain it.  The reply is ``HD``
instead of ``EN`` if someone stored the reserved key (clients of the node
cannot: keys under ``__trinomite:`` are refused); only the token is
searched for.  Meta commands need memcached 1.6 or newer: the connect
handshake sends one delimiter and checks its echo, so an older memcached
fails the connection with a message that says so.

A run's ``count`` is the number of replies it owes (its requests without
``noreply``): a run that fails gets that many error lines.  Errors the node
makes travel inside the node in the RESP form (``-ERR <source> <message>``)
and become memcached's ``SERVER_ERROR <source> <message>`` where they leave
it (``protocol.memcache_replies.to_memcache``).

Shared runs (``send_run``: a client round's local legs in a cluster, the
request frames of one peer read) of single requests are one run with one
delimiter; ``RunSplit`` frames its reply per request by the kind of reply
each expects (``split_run``: a line, or VALUE blocks to ``END``).  A run
with a ``noreply`` request (a Dynomite peer may send one) is sent as one
run per requester instead, since memcached may answer such a request with
an error after all.
"""

from __future__ import annotations

import secrets

import trio

from ..config.model import NodeConfig
from ..errors import NodeError, redis_error
from ..net.links import LinkFailed
from ..net.slots import ReplySink
from ..protocol.memcache_commands import COMMANDS
from ..protocol.memcache_replies import MemcacheReplyFramer, ReplyKind, split_run
from .pool import (
    RECEIVE_SIZE,
    DatastoreConnection,
    DatastorePool,
    RunFramer,
    RunItem,
    _connector,
)

__all__ = ["DELIMITER_KEY", "MAX_RUN_REPLY", "MemcacheConnection", "MemcachePool", "RunSplit"]

#: The key the run delimiter asks for (under the reserved prefix).
DELIMITER_KEY = b"__trinomite:delimiter"
_DELIMITER_HEAD = b"mg " + DELIMITER_KEY + b" O"
#: Most bytes a run's replies may take before the connection is out of step.
MAX_RUN_REPLY = 1 << 30


#: The reply each command expects, by the bytes a request starts with.
_KINDS = {name + b" ": spec.reply for name, spec in COMMANDS.items() if spec.reply is not None}
_UNSPLIT = redis_error(NodeError.STORAGE_PROTOCOL)


def _kind_of(raw: bytes) -> ReplyKind | None:
    return _KINDS.get(raw[: raw.find(b" ") + 1])


class RunSplit:
    """Hands each single request of a shared run its own reply (see the module doc)."""

    __slots__ = ("kinds", "sinks")

    def __init__(self, sinks: list[ReplySink], kinds: list[ReplyKind]) -> None:
        self.sinks = sinks
        self.kinds = kinds

    def set(self, reply: bytes) -> None:
        sinks = self.sinks
        parts: list[bytes] | None
        if reply[:1] == b"-":  # the node's own error, one line per request
            lines = reply.split(b"\r\n")[:-1]
            parts = [line + b"\r\n" for line in lines] if len(lines) == len(sinks) else None
        else:
            parts = split_run(reply, self.kinds)
        if parts is None:
            for sink in sinks:
                sink.set(_UNSPLIT)
            return
        for sink, part in zip(sinks, parts, strict=True):
            sink.set(part)


class MemcacheConnection(DatastoreConnection):
    """One pipelined connection to memcached: replies matched per delimited run."""

    max_buffered = MAX_RUN_REPLY

    def _new_delimiter(self) -> tuple[bytes, bytes]:
        """A fresh meta-get with an opaque token, and the marker its reply line holds."""
        at = self._entropy_at
        if at + 15 > len(self._entropy):
            self._entropy, at = secrets.token_bytes(4095), 0
        self._entropy_at = at + 15
        token = self._entropy[at : at + 15].hex().encode()
        return _DELIMITER_HEAD + token + b"\r\n", b" O" + token + b"\r\n"

    async def _handshake(self, stream: trio.abc.Stream) -> None:
        request, marker = self._new_delimiter()
        await stream.send_all(request)
        framer = MemcacheReplyFramer()
        while (before := framer.take_until(marker)) is None:
            data = await stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise LinkFailed(self.broken_error, "closed during the handshake")
            framer.feed(data)
            if framer.buffered > 4096:
                break
        if before != b"":
            raise LinkFailed(
                self.broken_error,
                "handshake refused: the datastore does not answer meta commands "
                "(trinomite needs memcached 1.6 or newer)",
            )

    def _framer(self) -> RunFramer:
        return _Runs()


class _Runs:
    """memcached's reply framer as the pool's reader drives it: every run is delimited."""

    __slots__ = ("framer",)

    def __init__(self) -> None:
        self.framer = MemcacheReplyFramer()

    @property
    def buffered(self) -> int:
        return self.framer.buffered

    def feed(self, data: bytes | bytearray) -> None:
        self.framer.feed(data)

    def take(self, count: int) -> bytes | None:
        raise AssertionError("memcached runs are always delimited")

    def take_until(self, delimiter: bytes) -> bytes | None:
        return self.framer.take_until(delimiter)


class MemcachePool(DatastorePool):
    """``datastore_connections`` connections to one memcached (``data_store: 1``)."""

    def __init__(self, config: NodeConfig) -> None:
        spec = config.datastore
        if spec.kind == "embedded":
            raise ValueError("the embedded datastore speaks Redis only: data_store 1 needs one")
        self.spec = spec
        self.store = None
        connect = _connector(spec, None)
        self.groups = {
            2: [
                MemcacheConnection(
                    name=f"{spec.stats_name}#mc.{i}",
                    connect=connect,
                    protocol=2,
                    timeout=config.timeout / 1000,
                    max_backoff=config.server_retry_timeout / 1000,
                    max_bulk_len=config.max_bulk_len,
                    preconnect=config.preconnect,
                )
                for i in range(config.datastore_connections)
            ]
        }

    def send_run(
        self, client_id: int, protocol: int, items: list[RunItem], deadline: float
    ) -> None:
        """Several requesters' requests as one write (see the module doc)."""
        if len(items) > 1 and all(count == 1 for _, count, _ in items):
            kinds = [kind for raw, _, _ in items if (kind := _kind_of(raw)) is not None]
            if len(kinds) == len(items):
                raw = b"".join([item[0] for item in items])
                split = RunSplit([item[2] for item in items], kinds)
                self.send(client_id, protocol, raw, len(items), split, deadline)
                return
        for raw, count, sink in items:
            self.send(client_id, protocol, raw, count, sink, deadline)
