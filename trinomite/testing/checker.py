"""A fault-injecting checker: unique writes under a nemesis, then every replica is audited.

Theory of operation
-------------------
``check(cluster, writes=..., faults=...)`` runs against an ``open_cluster``
topology (``datastore="redis"``, ``fault_proxies=True``) at the level it was
opened with (``write_consistency``):

* *writers* (tasks, each with its own redis-py clients in worker threads)
  send ``SET chk:<writer>:<n> <n>`` and ``SADD chk:set:<writer> <n>``
  through random running nodes, at least ``writes`` each and on until the
  nemesis is done, and now and then ``DEL`` one of their own acked keys
  (and, on a cluster with ``read_repairs_enabled``, ``SREM`` one of their
  acked members).  Keys and members are never reused, so a missing one is
  a real loss and a deleted one present again a real resurrection, not
  last-write-wins (reliability §A6).  Each operation is recorded as
  *acked* (+OK / an integer), *failed* (a definite error reply) or
  *indeterminate* (a timeout or a lost connection: it may or may not have
  been applied).  A key or member whose DEL or SREM was not acked is left
  out of the audit: either outcome is allowed for it;
* the *nemesis* fires ``faults`` faults, one at a time, each undone before
  the next, taking the kinds in turn with a random victim: stop and restart
  a node, kill and restart a redis-server, partition one rack from the rest
  of the cluster, or (with several DCs) cut one DC off, and heal it;
* then everything is restored, the checker waits for every node's hints to
  drain, and reads every key straight from each rack's owner's datastore in
  every DC.

``Report`` counts acked, failed and indeterminate operations; *lost*:
acked writes missing from a replica (an acked SET whose value is absent or
different, an acked member absent from its set); and *resurrected*: a key
or member whose DEL or SREM was acked, present on some replica.  Both are
listed per replica.  SREM is issued only with versions (read repair):
without them a SADD's hint replayed after a live SREM re-adds the member,
which is last-arrival-wins as docs/hints.md says; a whole-key DEL is
protected either way (an overtaken write's hint is skipped).

Bounded: ``writes`` per writer, ``faults`` faults of ``outage`` seconds, and
every wait has a deadline.  The redis-servers should keep their data across
a kill (``redis_options={"appendonly": "yes", "appendfsync": "always"}``)
and nodes their hints across a restart (``hints_dir`` per node), or the
checker reports the losses that those configurations cause, correctly.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import redis
import trio

from ..config.model import Consistency
from .cluster import Cluster, ClusterNode

__all__ = ["FAULTS", "Report", "check"]

FAULTS = ("stop_node", "kill_datastore", "partition_rack", "cut_dc")
#: Longest wait for hints to drain after the faults (seconds).
SETTLE_TIMEOUT = 60.0


@attrs.define
class Report:
    level: Consistency
    acked: int = 0
    failed: int = 0
    indeterminate: int = 0
    #: (replica "dc/rack/index", what) for every acked write a replica lacks.
    lost: list[tuple[str, str]] = attrs.field(factory=list)
    #: (replica, what) for every acked DEL or SREM whose key or member a replica holds.
    resurrected: list[tuple[str, str]] = attrs.field(factory=list)
    #: Acked deletes (DEL and SREM) among ``acked``.
    deletes: int = 0
    faults: list[str] = attrs.field(factory=list)

    def summary(self) -> str:
        return (
            f"{self.level.value}: acked {self.acked} ({self.deletes} deletes), "
            f"failed {self.failed}, indeterminate {self.indeterminate}, "
            f"lost {len(self.lost)}, resurrected {len(self.resurrected)} "
            f"(faults: {', '.join(self.faults) or 'none'})"
        )


@attrs.define
class _History:
    sets: dict[bytes, bytes] = attrs.field(factory=dict)  # acked SETs
    members: dict[bytes, set[bytes]] = attrs.field(factory=dict)  # acked SADDs
    deleted: set[bytes] = attrs.field(factory=set)  # acked DELs
    removed: dict[bytes, set[bytes]] = attrs.field(factory=dict)  # acked SREMs


def _outcome(client: redis.Redis, *args: Any) -> str:
    try:
        reply = client.execute_command(*args)  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        return "indeterminate" if "timed out" in str(exc) else "failed"
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return "indeterminate"
    return "acked" if reply in (True, b"OK", 1, 0) else "failed"


#: A writer stops after this many times ``writes`` even if the nemesis is not done.
MAX_WRITES_FACTOR = 50


async def _writer(
    cluster: Cluster,
    index: int,
    writes: int,
    report: Report,
    history: _History,
    seed: int,
    calm: trio.Event,
) -> None:
    rng = random.Random(seed)
    clients: dict[int, redis.Redis] = {}
    config = cluster.nodes[0].config
    versioned = config is not None and config.read_repairs_enabled
    own_sets: list[bytes] = []  # this writer's acked, not yet deleted keys
    own_members: list[bytes] = []
    for n in range(writes * MAX_WRITES_FACTOR):
        if n >= writes and calm.is_set():
            break
        running = [m for m in cluster.nodes if m.node is not None]
        if not running:
            await trio.sleep(0.05)
            continue
        member = rng.choice(running)
        client = clients.get(member.client_port)
        if client is None:
            client = clients[member.client_port] = member.client(socket_timeout=5, retry=None)
        key, value = f"chk:{index}:{n}".encode(), str(n).encode()
        roll = rng.random()
        if roll < 0.1 and own_sets:
            key = own_sets.pop(rng.randrange(len(own_sets)))
            del history.sets[key]  # whatever happens, it is no longer audited as written
            result = await trio.to_thread.run_sync(_outcome, client, "DEL", key)
            if result == "acked":
                history.deleted.add(key)
                report.deletes += 1
        elif roll < 0.15 and versioned and own_members:
            key = f"chk:set:{index}".encode()
            value = own_members.pop(rng.randrange(len(own_members)))
            history.members[key].discard(value)
            result = await trio.to_thread.run_sync(_outcome, client, "SREM", key, value)
            if result == "acked":
                history.removed.setdefault(key, set()).add(value)
                report.deletes += 1
        elif roll < 0.7:
            result = await trio.to_thread.run_sync(_outcome, client, "SET", key, value)
            if result == "acked":
                history.sets[key] = value
                own_sets.append(key)
        else:
            key = f"chk:set:{index}".encode()
            result = await trio.to_thread.run_sync(_outcome, client, "SADD", key, value)
            if result == "acked":
                history.members.setdefault(key, set()).add(value)
                own_members.append(value)
        setattr(report, result, getattr(report, result) + 1)


async def _nemesis(
    cluster: Cluster,
    faults: int,
    outage: float,
    rng: random.Random,
    report: Report,
    calm: trio.Event,
) -> None:
    try:
        await _faults(cluster, faults, outage, rng, report)
    finally:
        calm.set()


async def _faults(
    cluster: Cluster, faults: int, outage: float, rng: random.Random, report: Report
) -> None:
    racks = list(dict.fromkeys((m.dc, m.rack) for m in cluster.nodes))
    dcs = list(dict.fromkeys(m.dc for m in cluster.nodes))
    kinds = FAULTS if len(dcs) > 1 else FAULTS[:-1]
    for number in range(faults):
        await trio.sleep(outage)
        fault = kinds[number % len(kinds)]  # each kind in turn; the victim at random
        if fault == "stop_node":
            member = rng.choice(cluster.nodes)
            report.faults.append(f"stop {member.name}")
            await cluster.stop_node(member)
            await trio.sleep(outage)
            await cluster.start_node(member)
        elif fault == "kill_datastore":
            member = rng.choice(cluster.nodes)
            report.faults.append(f"kill redis of {member.name}")
            await cluster.stop_datastore(member)
            await trio.sleep(outage)
            await cluster.start_datastore(member)
        else:
            if fault == "cut_dc":
                dc = rng.choice(dcs)
                inside = cluster.dc(dc)
                report.faults.append(f"cut {dc}")
            else:
                dc, rack = rng.choice(racks)
                inside = cluster.rack(dc, rack)
                report.faults.append(f"partition {dc}/{rack}")
            cluster.partition(inside, [m for m in cluster.nodes if m not in inside])
            await trio.sleep(outage)
            cluster.heal()


async def _settle(cluster: Cluster) -> None:
    await cluster.restore()
    with trio.fail_after(SETTLE_TIMEOUT):
        # Polled: replay runs in every node, with no event to wait on here.
        while any(  # noqa: ASYNC110
            m.node is not None and m.node.hints is not None and m.node.hints.pending
            for m in cluster.nodes
        ):
            await trio.sleep(0.05)


def _replicas(cluster: Cluster, key: bytes) -> list[ClusterNode]:
    racks = dict.fromkeys((m.dc, m.rack) for m in cluster.nodes)
    return [cluster.owner(dc, rack, key) for dc, rack in racks]


async def _audit(cluster: Cluster, history: _History, report: Report) -> None:
    def read(member: ClusterNode, command: str, key: bytes) -> Any:
        with member.datastore(socket_timeout=10) as client:
            return client.execute_command(command, key)

    for key, value in history.sets.items():
        for member in _replicas(cluster, key):
            if await trio.to_thread.run_sync(read, member, "GET", key) != value:
                report.lost.append((member.name, f"SET {key.decode()}"))
    for key in sorted(history.deleted):
        for member in _replicas(cluster, key):
            if await trio.to_thread.run_sync(read, member, "EXISTS", key):
                report.resurrected.append((member.name, f"DEL {key.decode()}"))
    for key in history.members.keys() | history.removed.keys():
        members = history.members.get(key, set())
        removed = history.removed.get(key, set())
        for member in _replicas(cluster, key):
            present = set(await trio.to_thread.run_sync(read, member, "SMEMBERS", key))
            for missing in sorted(members - present):
                report.lost.append((member.name, f"SADD {key.decode()} {missing.decode()}"))
            for back in sorted(removed & present):
                report.resurrected.append((member.name, f"SREM {key.decode()} {back.decode()}"))


async def check(
    cluster: Cluster,
    *,
    writers: int = 4,
    writes: int = 100,
    faults: int = 3,
    outage: float = 0.5,
    seed: int = 0,
) -> Report:
    """Write under a nemesis, heal, and audit every replica (see the module doc)."""
    config = cluster.nodes[0].config
    assert config is not None
    report = Report(config.write_consistency)
    history = _History()
    rng = random.Random(seed)
    calm = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_nemesis, cluster, faults, outage, rng, report, calm)
        for index in range(writers):
            nursery.start_soon(_writer, cluster, index, writes, report, history, seed + index, calm)
    await _settle(cluster)
    await _audit(cluster, history, report)
    return report
