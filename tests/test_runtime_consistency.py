"""/set_consistency applies to new connections only (as Dynomite); existing ones keep theirs."""

from __future__ import annotations

import urllib.request

import pytest
import redis
import trio

from tests.conftest import in_thread
from trinomite.testing.cluster import open_cluster

NO_QUORUM = "Dynomite: Failed to achieve Quorum"


def admin_get(address: object, path: str) -> str:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as response:
        return response.read().decode()


async def test_existing_connections_keep_their_level_new_ones_get_the_new_one():
    layout = {"dc1": {"r1": 1, "r2": 1, "r3": 1}}
    async with open_cluster(layout, datastore="redis") as cluster:
        entry = cluster.node("dc1", "r1")
        assert entry.node is not None
        # A single-connection client connects in its constructor: build it in a thread.
        old = await in_thread(entry.client, protocol=2, single_connection_client=True)
        assert await in_thread(old.set, "k", "v")
        # Make the replicas disagree behind the cluster's back.
        for rack, value in (("r2", "x"), ("r3", "y")):
            await in_thread(cluster.node("dc1", rack).datastore().set, "k", value)
        assert await in_thread(old.get, "k") == b"v"  # DC_ONE: own rack

        address = entry.node.admin_address
        assert await in_thread(admin_get, address, "/set_consistency/read/dc_safe_quorum") == (
            "OK\r\n"
        )
        assert await in_thread(admin_get, address, "/get_consistency") == (
            "Read Consistency: DC_SAFE_QUORUM\r\nWrite Consistency: DC_ONE\r\n"
        )
        with trio.fail_after(10):
            assert await in_thread(old.get, "k") == b"v"  # unchanged for this connection
            new = await in_thread(entry.client, protocol=2, single_connection_client=True)
            with pytest.raises(redis.ResponseError, match=NO_QUORUM):
                await in_thread(new.get, "k")
        assert entry.node.cluster_counters.client_non_quorum_r_responses == 1
