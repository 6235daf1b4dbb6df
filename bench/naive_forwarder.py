# Theory of operation: a deliberately naive Trio TCP byte forwarder, used only
# as a yardstick by bench/run.py. For every accepted client it opens one fresh
# connection to the backend and runs two pump tasks (client->backend and
# backend->client) that copy whatever bytes arrive, with no parsing, batching
# or connection sharing. It answers "what does plain Trio socket I/O cost per
# request?", so a real proxy can be compared against it. Not product code.
#
# Usage: python bench/naive_forwarder.py LISTEN_PORT BACKEND_PORT
from __future__ import annotations

import sys
from functools import partial

import trio

HOST = "127.0.0.1"
CHUNK = 65536


async def pump(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    """Copy bytes from src to dst until src reaches EOF, then half-close dst."""
    while data := await src.receive_some(CHUNK):
        await dst.send_all(data)
    await dst.send_eof()


async def handle(backend_port: int, client: trio.SocketStream) -> None:
    try:
        backend = await trio.open_tcp_stream(HOST, backend_port)
    except OSError:
        await client.aclose()
        return
    async with client, backend, trio.open_nursery() as nursery:
        nursery.start_soon(pump, client, backend)
        nursery.start_soon(pump, backend, client)


async def serve_one(backend_port: int, client: trio.SocketStream) -> None:
    # A broken client connection must not take the whole forwarder down.
    try:
        await handle(backend_port, client)
    except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass


async def main(listen_port: int, backend_port: int) -> None:
    await trio.serve_tcp(partial(serve_one, backend_port), listen_port, host=HOST)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: naive_forwarder.py LISTEN_PORT BACKEND_PORT")
    trio.run(main, int(sys.argv[1]), int(sys.argv[2]))
