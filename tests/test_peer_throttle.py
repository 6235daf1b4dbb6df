"""conn_msg_rate: remote-DC links send at most that many requests per second, in order."""

from __future__ import annotations

import trio

from tests.conftest import in_thread
from trinomite.testing.cluster import open_cluster

RATE = 100
WRITES = 250


async def test_remote_dc_links_are_throttled_but_lose_nothing():
    layout = {"dc1": {"r1": 1}, "dc2": {"r1": 1}}
    async with open_cluster(layout, conn_msg_rate=RATE) as cluster:
        near, far = cluster.node("dc1", "r1"), cluster.node("dc2", "r1")

        def write() -> list[object]:
            pipe = near.client(protocol=2).pipeline(transaction=False)
            for i in range(WRITES):
                pipe.set(f"k{i}", i)
            return pipe.execute()

        def barrier() -> object:
            # A DC_EACH_SAFE_QUORUM write is acked only once dc2 applied it, and it
            # queues on the same remote link behind every earlier (throttled) frame.
            client = near.client(protocol=2, single_connection_client=True)
            client.execute_command("dyno_config:conn_consistency", "DC_EACH_SAFE_QUORUM")
            return client.set("barrier", 1)

        started = trio.current_time()
        assert await in_thread(write) == [True] * WRITES  # DC_ONE: acked locally at once
        with trio.fail_after(20):
            assert await in_thread(barrier)
        elapsed = trio.current_time() - started
        far_client = far.client(protocol=2)
        assert await in_thread(far_client.dbsize) == WRITES + 1
        assert near.node is not None
        link = near.node.peers.pools[f"127.0.0.1:{far.peer_port}"].connections[0]
        assert link.throttled > 0
        # The copies went as bundles of at most RATE requests, one token each.
        assert link.bundles
        assert link.bundled_requests == WRITES
        assert link.bundles_sent == -(-WRITES // RATE)
        # A one-second burst allowance, then RATE per second.
        assert elapsed >= (WRITES - RATE) / RATE * 0.9
        assert await in_thread(far_client.get, f"k{WRITES - 1}") == str(WRITES - 1).encode()
        # Same-DC links are never throttled.
        assert all(
            c.rate == 0
            for pool in far.node.peers.pools.values()
            for c in pool.connections
            if c.same_dc
        )
