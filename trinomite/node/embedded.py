"""The embedded default datastore: fakeredis's engine behind a Trio stream.

Theory of operation
-------------------
A config whose ``servers`` entry is ``embedded:1`` runs an in-process,
Redis-compatible store instead of connecting to a redis-server.  The engine
is fakeredis's ``FakeServer`` (one per node, so all of the node's datastore
connections share one keyspace).  Each datastore "connection" is an
``EmbeddedRedisStream``: a ``trio.abc.Stream`` whose ``send_all`` runs the
RESP commands synchronously through a fakeredis socket object and whose
``receive_some`` returns the encoded replies.  The datastore pool therefore
uses the same framing, FIFO matching and timeout code for the embedded store
as for a real server; nothing above this module knows the difference.

Replies are encoded here, not by fakeredis's TCP server, because that one
turns every top-level bulk string into a simple string; this encoder keeps
``+OK`` and ``$2\\r\\nOK`` apart exactly as Redis does.

Blocking commands are refused before they reach the datastore (see the
command table), so running the engine on the Trio thread never blocks it.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = ["EmbeddedRedisStream", "EmbeddedStore"]


def _encode(value: Any, protocol: int, simple_string: type, nested: bool = False) -> bytes:
    if isinstance(value, simple_string):
        data: bytes = value.value  # type: ignore[attr-defined]
        return b"+" + data + b"\r\n"
    if value is None:
        return b"_\r\n" if protocol == 3 else b"$-1\r\n"
    if isinstance(value, Exception):
        text = str(value.args[0]) if value.args else str(value)
        if not text.split(" ", 1)[0].isupper():
            text = "ERR " + text
        return ("-" + text.replace("\r", " ").replace("\n", " ") + "\r\n").encode()
    if isinstance(value, bool):
        if protocol == 3:
            return b"#t\r\n" if value else b"#f\r\n"
        return b":1\r\n" if value else b":0\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, float):
        number = repr(value).encode()
        if protocol == 3:
            return b",%s\r\n" % number
        return b"$%d\r\n%s\r\n" % (len(number), number)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, dict):
        head = b"%%%d\r\n" % len(value) if protocol == 3 else b"*%d\r\n" % (2 * len(value))
        return head + b"".join(
            _encode(k, protocol, simple_string, True) + _encode(v, protocol, simple_string, True)
            for k, v in value.items()
        )
    if isinstance(value, (set, frozenset)):
        head = b"~%d\r\n" % len(value) if protocol == 3 else b"*%d\r\n" % len(value)
        return head + b"".join(_encode(v, protocol, simple_string, True) for v in value)
    if isinstance(value, (list, tuple)):
        return b"*%d\r\n" % len(value) + b"".join(
            _encode(v, protocol, simple_string, True) for v in value
        )
    raise TypeError(f"cannot encode a {type(value).__name__} reply")


class EmbeddedStore:
    """One in-process keyspace shared by all of a node's datastore connections."""

    def __init__(self) -> None:
        from fakeredis import FakeServer

        self.server = FakeServer(version=(7, 0))

    def connect(self) -> EmbeddedRedisStream:
        return EmbeddedRedisStream(self)


class EmbeddedRedisStream(trio.abc.Stream):
    """A datastore connection to the embedded store."""

    def __init__(self, store: EmbeddedStore) -> None:
        import redis
        from fakeredis._helpers import SimpleString
        from fakeredis._socket import FakeSocket

        outbox = self._outbox = bytearray()
        self._readable = trio.Event()
        self._closed = False

        class _Socket(FakeSocket):
            def _decode_result(self, result: Any) -> Any:
                # Keep SimpleString so the encoder can tell +OK from $2 OK.
                if isinstance(result, list):
                    return [self._decode_result(r) for r in result]
                if isinstance(result, SimpleString):
                    return result
                return super()._decode_result(result)

            def put_response(self, msg: Any) -> None:
                protocol = self._client_info.protocol_version
                outbox.extend(_encode(msg, protocol, SimpleString))

        self._socket = _Socket(store.server, 0, client_class=redis.Redis)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("embedded connection closed")
        await trio.lowlevel.checkpoint()
        self._socket.sendall(bytes(data))
        if self._outbox:
            self._readable.set()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        while not self._outbox:
            if self._closed:
                raise trio.ClosedResourceError("embedded connection closed")
            self._readable = trio.Event()
            await self._readable.wait()
        size = len(self._outbox) if max_bytes is None else max_bytes
        data = bytes(self._outbox[:size])
        del self._outbox[:size]
        return data

    async def aclose(self) -> None:
        self._closed = True
        self._readable.set()
        self._socket.close()
        await trio.lowlevel.checkpoint()
