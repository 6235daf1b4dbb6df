"""Hint replay throughput: a replica misses N writes, rejoins, and its hints are replayed.

Theory of operation
-------------------
An in-process two-rack cluster (one node per rack, real redis-servers).
The second node is stopped, ``--writes`` SETs of ``--size``-byte values go
through the first (DC_ONE: acknowledged by its rack, hinted for the other),
the second node is started again, and the time from its links being up to
its last hint being replayed is measured, with the replay throttle lifted.
Prints hints, bytes per hint and hints per second.
"""

from __future__ import annotations

import argparse
import time

import trio

from trinomite.testing import open_cluster


async def main(writes: int, size: int) -> None:
    layout = {"dc1": {"r1": 1, "r2": 1}}
    async with open_cluster(
        layout, datastore="redis", hint_replay_rate=10**9, server_retry_timeout=200
    ) as cluster:
        first, second = cluster.nodes
        await cluster.stop_node(second)

        def write() -> None:
            pipe = first.client().pipeline(transaction=False)
            for i in range(writes):
                pipe.set(f"k{i}", b"v" * size)
            pipe.execute()

        await trio.to_thread.run_sync(write)
        assert first.node is not None
        assert first.node.hints is not None
        hints = first.node.hints
        name = f"127.0.0.1:{second.peer_port}"
        pending, stored_bytes = hints.peers[name].pending, hints.bytes
        await cluster.start_node(second)
        with trio.fail_after(60):
            await cluster.wait_connected()
        start = time.perf_counter()
        with trio.fail_after(300):
            # Polled: the replay has no completion event to wait on.
            while hints.peers[name].pending:  # noqa: ASYNC110
                await trio.sleep(0.005)
        elapsed = time.perf_counter() - start
        replayed = hints.peers[name].replayed
        print(
            f"{pending} hints, {stored_bytes / pending:.0f} bytes each; replayed {replayed} "
            f"in {elapsed:.2f} s = {replayed / elapsed:,.0f} hints/s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    trio.run(main, args.writes, args.size)
