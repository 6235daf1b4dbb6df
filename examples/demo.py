"""Demo: a trinomite node on the embedded datastore, used through redis-py.

Theory of operation
-------------------
Starts one node in this process (``trinomite.open_node``) in front of the
embedded Redis-compatible store, so nothing else needs to be installed or
running.  A real client (redis-py, in a worker thread so the node's Trio
loop keeps serving) then sets and reads keys through the node, runs a
pipeline, shows an error reply, and prints what it saw.  With ``--serve``
the node keeps running afterwards so you can try ``redis-cli -p PORT``.

    python examples/demo.py [--port 0] [--serve]
"""

from __future__ import annotations

import argparse
import sys

import redis
import trio

import trinomite
from trinomite import DatastoreSpec, HostPort, NodeConfig


def use_node(host: str, port: int) -> None:
    """What an application does: talk to the node like any Redis server."""
    client = redis.Redis(host=host, port=port, decode_responses=True)
    print(f"PING                 -> {client.ping()}")
    print(f"SET greeting hello   -> {client.set('greeting', 'hello')}")
    print(f"GET greeting         -> {client.get('greeting')!r}")
    print(f"INCR visits (x3)     -> {[client.incr('visits') for _ in range(3)]}")
    client.hset("user:1", mapping={"name": "Ada", "lang": "Python"})
    print(f"HGETALL user:1       -> {client.hgetall('user:1')}")
    pipe = client.pipeline(transaction=False)
    for i in range(5):
        pipe.set(f"item:{i}", i * i)
    pipe.mget([f"item:{i}" for i in range(5)])
    print(f"pipeline of 6        -> {pipe.execute()[-1]}")
    try:
        client.execute_command("NOSUCHCOMMAND", "x")
    except redis.ResponseError as exc:
        print(f"unknown command      -> error {exc!s:.40}... (connection stays open)")
    print(f"DBSIZE               -> {client.dbsize()}")
    client.close()


async def main(port: int, serve: bool) -> None:
    config = NodeConfig(
        listen=HostPort("127.0.0.1", port),
        servers=(DatastoreSpec.embedded(),),
    )
    async with trinomite.open_node(config) as node:
        address = node.client_address
        assert isinstance(address, HostPort)
        print(f"trinomite {trinomite.__version__} node listening on {address} (embedded store)")
        await trio.to_thread.run_sync(use_node, address.host, address.port)
        if serve:
            print(f"serving; try: redis-cli -p {address.port}   (Ctrl-C to stop)")
            await trio.sleep_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0, help="client port (0: any free port)")
    parser.add_argument("--serve", action="store_true", help="keep serving after the demo")
    options = parser.parse_args()
    try:
        trio.run(main, options.port, options.serve)
    except KeyboardInterrupt:
        sys.exit(0)
