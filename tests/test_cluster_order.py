"""Pipelined replies come back in request order, whatever owners the requests went to.

A seeded random script of single-key and multi-key commands over keys on
every owner of a rack is sent as one redis-py pipeline (``transaction=False``,
so hundreds of requests are in flight at once), and every reply is checked
against what a single Redis would answer, computed by a small model of the
data in the test.  Multi-key commands (MGET, MSET, DEL, UNLINK, EXISTS,
TOUCH) are split per owner and merged, so a reply merged from the wrong
fragments or delivered out of turn shows up as a mismatch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio

from trinomite.config.model import Consistency
from trinomite.testing.cluster import Cluster, ClusterNode

from .clusterutil import WAIT, call, counters, direct, redis_cluster, replicas, wait_until
from .conftest import in_thread

LAYOUT = {"dc1": {"r1": 3, "r2": 3}}
LEVELS = [Consistency.DC_ONE, Consistency.DC_QUORUM]

Step = tuple[tuple[Any, ...], Any]  # (command, expected redis-py reply)


class Model:
    """One client's keys, and the replies a single Redis gives (as redis-py decodes them)."""

    def __init__(self, prefix: str, rng: random.Random) -> None:
        self.rng = rng
        self.string_keys = [f"{prefix}:s{i}" for i in range(12)]
        self.list_keys = [f"{prefix}:l{i}" for i in range(3)]
        self.hash_keys = [f"{prefix}:h{i}" for i in range(3)]
        self.counter_keys = [f"{prefix}:c{i}" for i in range(3)]
        self.strings: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.counters: dict[str, int] = {}
        self.serial = 0
        self.operations: list[Callable[[], Step]] = [
            self.set, self.get, self.mset, self.mget, self.delete, self.exists,
            self.append, self.incrby, self.rpush, self.lrange, self.hset, self.hget,
            self.ping,
        ]  # fmt: skip

    def value(self) -> str:
        self.serial += 1
        return f"v{self.serial}"

    def some(self, count: int) -> list[str]:
        """String keys, repeats allowed (they must be handled per occurrence)."""
        return [self.rng.choice(self.string_keys) for _ in range(count)]

    def step(self) -> Step:
        return self.rng.choice(self.operations)()

    def script(self, count: int) -> list[Step]:
        return [self.step() for _ in range(count)]

    def set(self) -> Step:
        key, value = self.rng.choice(self.string_keys), self.value()
        self.strings[key] = value
        return ("SET", key, value), True

    def get(self) -> Step:
        key = self.rng.choice(self.string_keys)
        return ("GET", key), self.strings.get(key)

    def mset(self) -> Step:
        pairs = [(key, self.value()) for key in self.some(self.rng.randint(1, 5))]
        self.strings.update(pairs)
        return ("MSET", *[x for pair in pairs for x in pair]), True

    def mget(self) -> Step:
        keys = self.some(self.rng.randint(1, 7))
        return ("MGET", *keys), [self.strings.get(k) for k in keys]

    def delete(self) -> Step:
        keys = self.some(self.rng.randint(1, 4))
        gone = 0
        for key in keys:
            gone += self.strings.pop(key, None) is not None
        return (self.rng.choice(["DEL", "UNLINK"]), *keys), gone

    def exists(self) -> Step:
        keys = self.some(self.rng.randint(1, 6))
        return (self.rng.choice(["EXISTS", "TOUCH"]), *keys), sum(k in self.strings for k in keys)

    def append(self) -> Step:
        key, tail = self.rng.choice(self.string_keys), self.value()
        self.strings[key] = self.strings.get(key, "") + tail
        return ("APPEND", key, tail), len(self.strings[key])

    def incrby(self) -> Step:
        key, by = self.rng.choice(self.counter_keys), self.rng.randint(-5, 9)
        self.counters[key] = self.counters.get(key, 0) + by
        return ("INCRBY", key, by), self.counters[key]

    def rpush(self) -> Step:
        key = self.rng.choice(self.list_keys)
        items = [self.value() for _ in range(self.rng.randint(1, 3))]
        self.lists.setdefault(key, []).extend(items)
        return ("RPUSH", key, *items), len(self.lists[key])

    def lrange(self) -> Step:
        key = self.rng.choice(self.list_keys)
        return ("LRANGE", key, 0, -1), list(self.lists.get(key, []))

    def hset(self) -> Step:
        key, field = self.rng.choice(self.hash_keys), f"f{self.rng.randrange(4)}"
        fields = self.hashes.setdefault(key, {})
        new = field not in fields
        fields[field] = self.value()
        return ("HSET", key, field, fields[field]), int(new)

    def hget(self) -> Step:
        key, field = self.rng.choice(self.hash_keys), f"f{self.rng.randrange(4)}"
        return ("HGET", key, field), self.hashes.get(key, {}).get(field)

    def ping(self) -> Step:
        return ("PING",), True


def pipelined(member: ClusterNode, steps: list[Step]) -> list[Any]:
    """Send ``steps`` as one non-transactional pipeline (blocking: run in a thread)."""
    with member.client(decode_responses=True, socket_timeout=WAIT) as client:
        pipe = client.pipeline(transaction=False)
        for command, _ in steps:
            pipe.execute_command(*command)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies


def assert_replies(steps: list[Step], replies: list[Any]) -> None:
    assert len(replies) == len(steps)
    for i, ((command, want), got) in enumerate(zip(steps, replies, strict=True)):
        assert got == want, f"reply #{i} to {command!r}: {got!r}, expected {want!r}"


def assert_keys_on_every_owner(cluster: Cluster, model: Model) -> None:
    for rack in LAYOUT["dc1"]:
        owners = {cluster.owner("dc1", rack, k.encode()).index for k in model.string_keys}
        assert owners == {0, 1, 2}


def levels(level: Consistency) -> dict[str, Consistency]:
    return {"read_consistency": level, "write_consistency": level}


@pytest.mark.parametrize("level", LEVELS, ids=[c.value for c in LEVELS])
async def test_mixed_pipeline_replies_in_order(level: Consistency) -> None:
    model = Model("order", random.Random(7))
    steps = model.script(1000)
    assert {command[0] for command, _ in steps} >= {"MGET", "MSET", "DEL", "UNLINK", "TOUCH"}
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(LAYOUT, **levels(level)) as cluster:
            assert_keys_on_every_owner(cluster, model)
            coordinator = cluster.node("dc1", "r1", 0)
            assert_replies(steps, await in_thread(pipelined, coordinator, steps))
            assert counters(coordinator).fragments > 0


@pytest.mark.parametrize("level", LEVELS, ids=[c.value for c in LEVELS])
async def test_concurrent_pipelines_on_different_nodes(level: Consistency) -> None:
    """Four clients, each on its own node, each with its own keys, plus one shared counter."""
    rounds, size, shared = 3, 300, "order:shared"
    with trio.fail_after(3 * WAIT):
        async with redis_cluster(LAYOUT, **levels(level)) as cluster:
            places = [("r1", 0), ("r1", 2), ("r2", 1), ("r2", 2)]
            members = [cluster.node("dc1", rack, i) for rack, i in places]

            async def client(member: ClusterNode, seed: int) -> None:
                model = Model(f"client{seed}", random.Random(seed))
                assert_keys_on_every_owner(cluster, model)
                for _ in range(rounds):
                    steps = model.script(size)
                    steps += [(("INCRBY", shared, 1), None)]
                    replies = await in_thread(pipelined, member, steps)
                    assert isinstance(replies.pop(), int)
                    assert_replies(steps[:-1], replies)

            async with trio.open_nursery() as nursery:
                for seed, member in enumerate(members):
                    nursery.start_soon(client, member, seed)

            total = str(rounds * len(members)).encode()
            copies = replicas(cluster, shared.encode())

            async def counted() -> bool:
                return [await direct(m, "GET", shared) for m in copies] == [total] * len(copies)

            await wait_until(counted, "every replica of the shared counter to count every INCRBY")
            assert await call(members[0].client(), "GET", shared) == total
