"""Faults inside a running cluster: nodes, datastores and peers that go away or stall.

Every request still gets a reply (its value or one of Dynomite's error
strings, dynomite.md §3.3 and §4.5), a fault stays confined to the
requests that need the faulty part, and the cluster recovers by itself.
"""

from __future__ import annotations

import trio

from trinomite.peering.pools import PeerConnection
from trinomite.testing.cluster import ClusterNode

from .clusterutil import (
    NOT_CONNECTED,
    WAIT,
    attempt,
    call,
    counters,
    direct,
    error,
    keys_owned_by,
    peer_name,
    rack_pair,
    redis_cluster,
    stop,
    stored,
    wait_until,
)

TWO_BY_TWO = {"dc1": {"r1": 2, "r2": 2}}
REFUSED = "Storage: Datastore refused connection"
#: A killed datastore: its connection was lost, then reconnects are refused.
DOWN = {"Storage: Datastore connection lost, reconnecting", REFUSED}
TIMED_OUT = {"Storage: Connection timed out", "Peer: Connection timed out"}
#: A datastore that answers nothing is replaced; while it reconnects, requests say so.
UNAVAILABLE = {*TIMED_OUT, REFUSED, "Storage: Datastore not answering, reconnecting"}


def link(coordinator: ClusterNode, peer: ClusterNode) -> PeerConnection:
    """The coordinator's (single) peer connection to ``peer``."""
    assert coordinator.node is not None
    return coordinator.node.peers[peer_name(peer)].connections[0]


async def test_read_with_every_replica_unreachable_gets_peer_not_connected() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(TWO_BY_TWO) as cluster:
            coordinator, owner, key, local_key = rack_pair(cluster)
            client = coordinator.client()
            assert await call(client, "SET", local_key, b"here") is True
            await stop(cluster, owner, cluster.owner("dc1", "r2", key))
            assert await error(client, "GET", key) == NOT_CONNECTED
            assert counters(coordinator).read_failover_requests == 0
            assert await call(client, "GET", local_key) == b"here"


async def test_in_flight_request_to_a_peer_that_goes_away_gets_refused_connection() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(TWO_BY_TWO) as cluster:
            coordinator, owner, key, _ = rack_pair(cluster)
            await direct(owner, "CLIENT", "PAUSE", 5000, "ALL")  # holds the request at the peer
            connection = link(coordinator, owner)
            async with trio.open_nursery() as nursery:
                replies: list[str] = []

                async def read() -> None:
                    replies.append(await error(coordinator.client(), "GET", key))

                nursery.start_soon(read)

                async def in_flight() -> bool:
                    return connection.inflight == 1

                await wait_until(in_flight, "the GET to reach the peer link")
                await cluster.stop_node(owner)
            assert replies == ["Peer: Peer Node refused connection"]


async def test_killed_peer_datastore_error_travels_back_through_the_peer_link() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(TWO_BY_TWO) as cluster:
            coordinator, owner, key, local_key = rack_pair(cluster)
            client = coordinator.client()
            assert await call(client, "SET", key, b"v") is True
            await cluster.stop_datastore(owner)
            assert await error(client, "GET", key) in DOWN
            assert await error(client, "SET", key, b"w") in DOWN
            assert await call(client, "SET", local_key, b"fine") is True
            await cluster.start_datastore(owner)  # empty: persistence is off

            async def recovered() -> bool:
                reply = await attempt(client, "SET", key, b"back")
                assert reply is True or str(reply) in DOWN
                return reply is True

            await wait_until(recovered, "the peer's datastore connection to come back")
            assert await call(client, "GET", key) == b"back"


async def test_a_peer_timeout_fails_only_the_slow_request() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster({"dc1": {"r1": 3}}, timeout=300) as cluster:
            a, b, c = cluster.rack("dc1", "r1")
            keys = {m.name: keys_owned_by(cluster, m, 1)[0] for m in (a, b, c)}
            clients = [a.client() for _ in range(3)]
            for member in (a, b, c):
                assert await call(clients[0], "SET", keys[member.name], member.name) is True
            # b's redis-server holds every write until UNPAUSE (reads still pass).  Unlike
            # DEBUG SLEEP sent from a thread, the pause is in force once the command returns.
            await direct(b, "CLIENT", "PAUSE", 30_000, "WRITE")
            assert await error(clients[0], "SET", keys[b.name], b"slow") in TIMED_OUT
            # Other owners, local and remote, answer meanwhile, on other client connections...
            assert await call(clients[1], "GET", keys[a.name]) == a.name.encode()
            assert await call(clients[2], "GET", keys[c.name]) == c.name.encode()
            assert await call(clients[2], "SET", keys[c.name], b"new") is True
            # ...and on the slow request's own connection.
            assert await call(clients[0], "GET", keys[c.name]) == b"new"

            async def b_reads() -> bool:
                # Once b's node has replaced the datastore connection that timed out.
                reply = await attempt(clients[1], "GET", keys[b.name])
                done: bool = reply == b.name.encode()
                assert done or str(reply) in UNAVAILABLE
                return done

            # Reads through the same peer link to b work while b's writes still stall.
            await wait_until(b_reads, "b's node to reconnect to its redis-server")
            assert await error(clients[1], "SET", keys[b.name], b"stalls") in UNAVAILABLE
            await direct(b, "CLIENT", "UNPAUSE")

            async def b_writes() -> bool:
                reply = await attempt(clients[0], "SET", keys[b.name], b"after")
                assert reply is True or str(reply) in UNAVAILABLE
                return reply is True

            await wait_until(b_writes, "b to take writes again")
            # No late reply was handed to a later request, and the peer link was never replaced.
            assert await call(clients[0], "GET", keys[b.name]) == b"after"
            assert await call(clients[0], "GET", keys[c.name]) == b"new"
            assert link(a, b).connects == 1


async def test_dc_one_writes_survive_a_stopped_node_which_then_rejoins() -> None:
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(TWO_BY_TWO) as cluster:
            coordinator, stopped = cluster.rack("dc1", "r1")
            other_rack = cluster.node("dc1", "r2", 0)
            own_keys = keys_owned_by(cluster, coordinator, 3)
            its_keys = keys_owned_by(cluster, stopped, 3)
            await stop(cluster, stopped)
            client, remote_client = coordinator.client(), other_rack.client()
            for key in own_keys:
                assert await call(client, "SET", key, b"v") is True
            # From r2, its keys go to r2's (running) owner; each r1 leg misses
            # (counted) and becomes a hint.
            for key in its_keys:
                assert await call(remote_client, "SET", key, b"v") is True
            assert counters(other_rack).peer_forward_error == len(its_keys)
            assert other_rack.node is not None
            hints = other_rack.node.hints
            assert hints is not None
            assert hints.peers[f"127.0.0.1:{stopped.peer_port}"].pending == len(its_keys)
            # In r1 they are the stopped node's: DC_ONE surfaces the own-rack error.
            assert await error(client, "SET", its_keys[0], b"v") == NOT_CONNECTED

            await cluster.start_node(stopped)
            with trio.fail_after(WAIT):
                await cluster.wait_connected()

            async def handed_off() -> bool:
                return all([await stored(stopped, key) == b"v" for key in its_keys])

            await wait_until(handed_off, "the hints to reach the rejoined node")
            for key in its_keys:
                assert await call(client, "SET", key, b"again") is True
                assert await call(client, "GET", key) == b"again"
                assert await stored(stopped, key) == b"again"


async def test_remote_dc_write_fails_over_to_another_rack_of_that_dc() -> None:
    layout = {"dc1": {"r1": 1, "r2": 1}, "dc2": {"r1": 1, "r2": 1}}
    with trio.fail_after(2 * WAIT):
        async with redis_cluster(layout) as cluster:
            first, second = cluster.node("dc1", "r1"), cluster.node("dc1", "r2")
            preselected, fallback = cluster.node("dc2", "r1"), cluster.node("dc2", "r2")
            await stop(cluster, preselected)
            assert await call(first.client(), "SET", b"k", b"v") is True
            assert counters(first).remote_peer_failover_requests == 1

            async def arrived() -> bool:
                return await stored(fallback, b"k") == b"v"

            await wait_until(arrived, "the write to reach dc2 through its other rack")
            # dc1/r2 replicates to dc2/r2 in the first place: no failover there.
            assert await call(second.client(), "SET", b"k2", b"v2") is True
            assert counters(second).remote_peer_failover_requests == 0
            # With no dc2 node left the write still succeeds locally, but is dropped for dc2.
            await stop(cluster, fallback)
            assert await call(first.client(), "SET", b"k3", b"v3") is True
            assert counters(first).remote_peer_dropped_requests == 1
            assert await stored(first, b"k3") == b"v3"
