"""Stateful differential testing: random command sequences, trinomite versus redis-server.

A Hypothesis ``RuleBasedStateMachine`` sends each step to a reference
``redis-server`` directly and to a trinomite topology (one node, or two
racks of two nodes at DC_QUORUM, through a random node each step), and the
two replies must be equal: the same value, or the same error text.  Each
example starts from empty datastores.  The topologies run on background
threads (``trinomite.testing.run_in_thread``) with real redis-servers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from trinomite import Consistency
from trinomite.testing import RedisServer, ThreadCluster, run_in_thread

KEYS = st.sampled_from([f"k{i}" for i in range(4)])
VALUES = st.sampled_from(["", "0", "7", "-3", "abc", "x" * 40, "12345678901234567890"])
FIELDS = st.sampled_from(["f1", "f2"])
QUORUM = {
    "read_consistency": Consistency.DC_QUORUM,
    "write_consistency": Consistency.DC_QUORUM,
}
LAYOUTS = {
    "one-node": ({"dc1": {"r1": 1}}, {}),
    "two-racks": ({"dc1": {"r1": 2, "r2": 2}}, QUORUM),
}


def outcome(client: redis.Redis, args: tuple[Any, ...]) -> Any:
    try:
        reply = client.execute_command(*args)
    except redis.ResponseError as exc:
        return ("error", str(exc))
    if isinstance(reply, list):
        return [tuple(r) if isinstance(r, list) else r for r in reply]
    return reply


class Differential(RuleBasedStateMachine):
    cluster: ThreadCluster
    reference: redis.Redis
    clients: list[redis.Redis]

    @initialize()
    def empty(self) -> None:
        self.reference.flushall()
        for member in self.cluster.nodes:
            with member.datastore() as direct:
                direct.flushall()

    def same(self, node: int, *args: Any) -> None:
        want = outcome(self.reference, args)
        got = outcome(self.clients[node % len(self.clients)], args)
        assert got == want, f"{args}: redis {want!r} != trinomite {got!r}"

    nodes = st.integers(0, 3)

    @rule(node=nodes, key=KEYS, value=VALUES)
    def set(self, node: int, key: str, value: str) -> None:
        self.same(node, "SET", key, value)

    @rule(node=nodes, key=KEYS)
    def get(self, node: int, key: str) -> None:
        self.same(node, "GET", key)

    @rule(node=nodes, key=KEYS, value=VALUES)
    def append(self, node: int, key: str, value: str) -> None:
        self.same(node, "APPEND", key, value)

    @rule(node=nodes, key=KEYS)
    def incr(self, node: int, key: str) -> None:
        self.same(node, "INCR", key)

    @rule(node=nodes, key=KEYS)
    def strlen_type_exists(self, node: int, key: str) -> None:
        self.same(node, "STRLEN", key)
        self.same(node, "TYPE", key)
        self.same(node, "EXISTS", key)

    @rule(node=nodes, key=KEYS, other=KEYS)
    def delete(self, node: int, key: str, other: str) -> None:
        self.same(node, "DEL", key, other)

    @rule(node=nodes, key=KEYS, other=KEYS, value=VALUES)
    def mset_mget(self, node: int, key: str, other: str, value: str) -> None:
        self.same(node, "MSET", key, value, other, value + "!")
        self.same(node, "MGET", key, other, "missing")

    @rule(node=nodes, key=KEYS, value=VALUES)
    def lists(self, node: int, key: str, value: str) -> None:
        self.same(node, "LPUSH", key, value)
        self.same(node, "LRANGE", key, 0, -1)

    @rule(node=nodes, key=KEYS)
    def rpop(self, node: int, key: str) -> None:
        self.same(node, "RPOP", key)

    @rule(node=nodes, key=KEYS, field=FIELDS, value=VALUES)
    def hashes(self, node: int, key: str, field: str, value: str) -> None:
        self.same(node, "HSET", key, field, value)
        self.same(node, "HGET", key, field)
        self.same(node, "HLEN", key)

    @rule(node=nodes, key=KEYS, value=VALUES)
    def sets(self, node: int, key: str, value: str) -> None:
        self.same(node, "SADD", key, value)
        self.same(node, "SISMEMBER", key, value)
        self.same(node, "SCARD", key)

    @rule(node=nodes, key=KEYS, value=VALUES)
    def setnx_getdel(self, node: int, key: str, value: str) -> None:
        self.same(node, "SETNX", key, value)
        self.same(node, "GETDEL", key)


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def topology(request: pytest.FixtureRequest) -> Iterator[tuple[ThreadCluster, redis.Redis]]:
    layout, options = LAYOUTS[request.param]
    reference = RedisServer()
    reference.start()
    try:
        with run_in_thread(layout, datastore="redis", **options) as cluster:
            yield cluster, redis.Redis(host=reference.host, port=reference.port)
    finally:
        reference.close()


def test_random_command_sequences_match_redis(topology: tuple[ThreadCluster, redis.Redis]) -> None:
    cluster, reference = topology
    Differential.cluster = cluster
    Differential.reference = reference
    Differential.clients = [member.client(socket_timeout=10) for member in cluster.nodes]
    run_state_machine_as_test(
        Differential,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
