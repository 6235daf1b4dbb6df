"""A tiny raw RESP client for tests that must see replies byte for byte.

redis-py decodes replies, so ``+OK`` and ``$2\\r\\nOK`` would look the same to
it.  ``RawClient`` sends bytes exactly as given and returns each reply as
the exact bytes the server sent, framed by the node's own ``ReplyFramer``.
Every read is bounded by the caller's cancel scope (``trio.fail_after``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import TracebackType

import trio

from trinomite import HostPort, Node
from trinomite.protocol.replies import ReplyFramer

__all__ = [
    "Arg",
    "RawClient",
    "bulk",
    "encode",
    "encode_all",
    "node_address",
    "storage_error",
]

Arg = bytes | str | int | float
RECEIVE_SIZE = 64 * 1024


def _arg_bytes(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    return str(arg).encode()


def bulk(value: Arg) -> bytes:
    """The RESP bulk string reply for ``value``."""
    data = _arg_bytes(value)
    return b"$%d\r\n%s\r\n" % (len(data), data)


def encode(*args: Arg) -> bytes:
    """One request as a RESP multibulk (independent of the node's encoder)."""
    return b"*%d\r\n" % len(args) + b"".join([bulk(arg) for arg in args])


def encode_all(commands: Iterable[Sequence[Arg]]) -> bytes:
    return b"".join(encode(*command) for command in commands)


def node_address(node: Node) -> tuple[str, int]:
    address = node.client_address
    assert isinstance(address, HostPort)
    return address.host, address.port


def storage_error(reply: bytes) -> bool:
    """True for the node's ``-ERR Storage: ...`` replies (datastore down or slow)."""
    return reply.startswith(b"-ERR Storage: ")


class RawClient:
    """One TCP connection that sends raw bytes and reads whole replies."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._framer = ReplyFramer()

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream(host, port))

    @classmethod
    async def to_node(cls, node: Node) -> RawClient:
        return await cls.connect(*node_address(node))

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def send_bytewise(self, data: bytes) -> None:
        """Send ``data`` one byte per write (TCP_NODELAY: one segment each)."""
        for i in range(len(data)):
            await self.stream.send_all(data[i : i + 1])

    async def read(self, count: int = 1) -> list[bytes]:
        """The next ``count`` replies, each as the exact bytes received.

        Raises ``EOFError`` if the server closes the connection first.
        """
        out: list[bytes] = []
        while len(out) < count:
            reply = self._framer.take(1)
            if reply is not None:
                out.append(reply)
                continue
            data = await self.stream.receive_some(RECEIVE_SIZE)
            if not data:
                raise EOFError(f"connection closed after {len(out)} of {count} replies")
            self._framer.feed(data)
        return out

    async def call(self, *args: Arg) -> bytes:
        """Send one request and return its reply."""
        await self.send(encode(*args))
        return (await self.read(1))[0]

    async def pipeline(self, data: bytes, count: int) -> list[bytes]:
        """Send ``data`` while reading its ``count`` replies (no buffer deadlock)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.send, data)
            return await self.read(count)

    async def wait_closed(self) -> bytes:
        """Read until the server closes; returns what arrived before EOF."""
        received = bytearray()
        while data := await self.stream.receive_some(RECEIVE_SIZE):
            received += data
        return bytes(received)
