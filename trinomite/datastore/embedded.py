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

``CONFIG GET`` is answered from ``EMBEDDED_CONFIG`` and ``INFO`` with a
short server/keyspace section (the engine has neither), so tools that probe
them first keep working.

Blocking commands are refused before they reach the datastore (see the
command table), so running the engine on the Trio thread never blocks it.
"""

from __future__ import annotations

import fnmatch
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


#: What CONFIG GET reports for the embedded store (it has no config file).
#: Tools such as redis-benchmark ask for ``save`` and ``appendonly`` first.
EMBEDDED_CONFIG = {
    b"save": b"",
    b"appendonly": b"no",
    b"databases": b"1",
    b"maxmemory": b"0",
    b"maxmemory-policy": b"noeviction",
    b"port": b"0",
    b"timeout": b"0",
}


def _config_get(pattern: bytes) -> list[bytes]:
    match = fnmatch.fnmatchcase
    text = pattern.decode("latin-1").lower()
    found: list[bytes] = []
    for name, value in EMBEDDED_CONFIG.items():
        if match(name.decode(), text):
            found += [name, value]
    return found


def _info(keys: int) -> bytes:
    """A minimal INFO: the fields monitoring and clients look for first."""
    return (
        "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n"
        "trinomite_datastore:embedded\r\n\r\n"
        f"# Keyspace\r\ndb0:keys={keys},expires=0,avg_ttl=0\r\n"
    ).encode()


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

            def _process_command(self, fields: list[bytes]) -> None:
                name = fields[0].lower() if fields else b""
                if name == b"config" and len(fields) == 3 and fields[1].lower() == b"get":
                    self.put_response(_config_get(fields[2]))
                elif name == b"info" and len(fields) <= 2:
                    self.put_response(_info(len(self._db)))
                else:
                    super()._process_command(fields)

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
