"""The gossip membership state machine, alone and in simulated clusters.

Simulated clusters (``trinomite.gossip.sim.Network``) deliver the real
payloads with random delay (so messages reorder), loss and duplication, all
from a fixed ``random.Random`` seed.  Time is simulated; ``gos_interval`` is
1000 ms, so one round is one simulated second.

Documented bounds checked here (rounds = simulated seconds at 1000 ms), with
10% loss, 10% duplication and 1-300 ms delays, all nodes started within the
first second knowing only one seed:

    nodes   converged (every live view holds every node NORMAL) within
      3     12 rounds        (measured: 5-7)
     12     16 rounds        (measured: 7-9)
     48     20 rounds        (measured: 10-11)

A node whose links are cut is DOWN at every other node within T_max = 3.7 s
of the last heartbeat that reached that node, and within T_max + 3 s of the
cut (the extra is its last heartbeat spreading by relay).
"""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trinomite.gossip import wire
from trinomite.gossip.detector import conviction_bounds
from trinomite.gossip.events import (
    Joined,
    Removed,
    Replaced,
    StateChanged,
    Updated,
)
from trinomite.gossip.rounds import auto_fanout
from trinomite.gossip.sim import Network
from trinomite.gossip.state import GossipState
from trinomite.gossip.view import peer_infos, ring_records
from trinomite.gossip.wire import Kind, NodeRecord, State, decode, encode
from trinomite.protocol.peer import MessageType
from trinomite.ring.topology import Topology

T_MAX = conviction_bounds(1.0)[1]
BASE_GENERATION = 1_700_000_000_000
ROUNDS = {3: 12, 12: 16, 48: 20}


def record(i: int, *, generation: int | None = None, tokens=None, dc="dc1") -> NodeRecord:
    return NodeRecord.make(
        f"10.0.{i // 250}.{i % 250}",
        8101,
        dc,
        f"rack{i % 3}",
        tokens or [i * 1000 + 1],
        generation=generation or BASE_GENERATION + i,
    )


SEED = record(0).name


def cluster(n: int, seed: int, *, loss=0.1, duplicate=0.1, delay=(0.001, 0.3), **kwargs) -> Network:
    net = Network(random.Random(seed), loss=loss, duplicate=duplicate, delay=delay)
    for i in range(n):
        net.start(record(i), [SEED], at=net.rng.uniform(0, 1), **kwargs)
    return net


def converge(net: Network, limit: float = 40.0) -> float:
    t = net.run_until(net.converged, net.now + limit)
    assert t is not None, "did not converge"
    return t


def lone(i: int = 0, *, seeds=(), now: float = 0.0, **kwargs) -> GossipState:
    return GossipState(
        record(i), seeds=seeds, gos_interval_ms=1000, rng=random.Random(i), now=now, **kwargs
    )


def deliver(out, to: GossipState, now: float):
    return to.receive(out.frame_type, out.payload, now)


def ack2_from(sender: int, *records: NodeRecord) -> bytes:
    return encode(Kind.ACK2, record(sender).name, records=records)


def events_of(net: Network, name: str, kind: type) -> list:
    return [e for _, e in net.nodes[name].events if isinstance(e, kind)]


def convictions(net: Network) -> int:
    return sum(node.state.counters["convictions"] for node in net.nodes.values())


# -- convergence ------------------------------------------------------------------


@pytest.mark.parametrize("n", sorted(ROUNDS))
@pytest.mark.parametrize("seed", [1, 2])
def test_converges_from_one_seed(n, seed):
    net = cluster(n, seed)
    t = net.run_until(net.converged, ROUNDS[n])
    assert t is not None, f"{n} nodes not converged within {ROUNDS[n]} rounds"
    for node in net.nodes.values():
        assert len(node.state.members) == n
        assert node.state.counters["dropped_malformed"] == 0
    net.run(t + 30)  # and it stays so, without a single false conviction
    assert net.converged()
    assert convictions(net) == 0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 8),
    seed=st.integers(0, 2**32),
    loss=st.floats(0.0, 0.49),
    duplicate=st.floats(0.0, 0.5),
    max_delay=st.floats(0.001, 1.0),
    lossy_for=st.floats(0.0, 30.0),
)
def test_views_converge_once_loss_stops(n, seed, loss, duplicate, max_delay, lossy_for):
    net = cluster(n, seed, loss=loss, duplicate=duplicate, delay=(0.0, max_delay))
    net.run(lossy_for)
    net.loss = 0.0  # duplication and reordering go on
    assert net.run_until(net.converged, lossy_for + 40.0) is not None


# -- failure detection ----------------------------------------------------------


def test_cut_node_goes_down_within_the_bound_and_recovers():
    net = cluster(12, seed=5)
    converge(net)
    victim = record(7).name
    net.isolate(victim)
    cut = net.now
    net.run(cut + 10)
    for name, node in net.nodes.items():
        if name == victim:
            continue
        downs = [
            t
            for t, e in node.events
            if t >= cut and isinstance(e, StateChanged) and e.name == victim
        ]
        assert len(downs) == 1, name  # one conviction, no flapping
        last_heard = node.state.detector.last_arrival(victim)
        assert downs[0] - last_heard <= T_MAX + 1e-9
        assert downs[0] - cut <= T_MAX + 3.0
        assert node.state.members[victim].state is State.DOWN
    net.isolate(victim, False)  # healed: same process, same generation
    converge(net, 10)
    for name, node in net.nodes.items():
        if name != victim:
            assert StateChanged(victim, State.DOWN, State.NORMAL) in events_of(
                net, name, StateChanged
            )
            assert node.state.counters["recoveries"] == 1
    assert convictions(net) == 22  # 11 nodes convicted it, it convicted all 11


def test_restart_with_a_new_generation_is_normal_again_everywhere():
    net = cluster(12, seed=6)
    converge(net)
    old = record(3)
    net.stop(old.name)
    stopped = net.now
    net.run(net.now + 8)
    others = [name for name in net.nodes if name != old.name]
    assert all(net.nodes[o].state.members[old.name].state is State.DOWN for o in others)
    new = attrs.evolve(old, generation=old.generation + 60_000)
    net.start(new, [SEED])
    converge(net, 15)
    for other in others:
        member = net.nodes[other].state.members[old.name]
        assert (member.state, member.record.generation) == (State.NORMAL, new.generation)
        changes = [
            (e.old, e.new)
            for t, e in net.nodes[other].events
            if t >= stopped and isinstance(e, StateChanged) and e.name == old.name
        ]
        assert changes[0] == (State.NORMAL, State.DOWN)
        assert changes[1] == (State.DOWN, State.JOINING)  # the new process starts JOINING
        assert changes[-1][1] is State.NORMAL


def test_next_deadline_is_the_conviction_and_tick_then_moves_on():
    a, b = lone(0), lone(1, seeds=[record(0).name])
    deliver(b.tick(0.0).outgoing[0], a, 0.0)  # a hears of b via the SYN only: no record yet
    step = a.receive(12, ack2_from(1, attrs.evolve(b.local, heartbeat=1)), 0.0)
    assert step.events == (Joined(attrs.evolve(b.local, heartbeat=1)),)
    a.tick(0.0)
    deadline = a.detector.deadline(b.local.name)
    assert deadline == pytest.approx(T_MAX)
    now = 0.0
    while (now := a.next_deadline()) < deadline:
        assert a.members[b.local.name].state is State.JOINING
        a.tick(now)
    step = a.tick(now)
    assert StateChanged(b.local.name, State.JOINING, State.DOWN) in step.events
    assert a.next_deadline() > now  # the next round, not the same instant again


# -- replacement, removal, updates -----------------------------------------------


def test_replacement_takes_over_the_tokens_everywhere():
    net = cluster(12, seed=7)
    converge(net)
    old = record(4)
    net.stop(old.name)
    new = NodeRecord.make(
        "10.9.9.9", 8101, old.dc, old.rack, old.tokens, generation=old.generation + 10
    )
    net.start(new, [SEED])

    def done():
        return net.converged() and all(old.name not in n.state.members for n in net.live())

    assert net.run_until(done, net.now + 20) is not None
    for name in net.nodes:
        if name in (old.name, new.name):
            continue
        replaced = events_of(net, name, Replaced)
        assert [(e.old_name, e.record.name) for e in replaced] == [(old.name, new.name)], name
    net.run(net.now + 30)  # stale gossip of the old name never brings it back
    assert done()
    assert net.nodes[new.name].state.counters["dropped_conflict"] >= 1  # it saw the old claim


def test_removal_propagates_and_a_partitioned_node_does_not_resurrect_it():
    net = cluster(12, seed=8, tombstone_ttl=120.0)
    converge(net)
    victim, partitioned, admin = record(5).name, record(9).name, record(0).name
    net.stop(victim)
    net.run(net.now + 8)
    assert all(
        net.nodes[n].state.members[victim].state is State.DOWN for n in net.nodes if n != victim
    )
    net.isolate(partitioned)
    removed_at = net.now
    step = net.nodes[admin].state.remove(victim, net.now)
    assert step.events == (Removed(victim),)
    net.apply(admin, step)

    def everywhere_removed(names):
        return all(net.nodes[n].state.members[victim].state is State.REMOVED for n in names)

    reachable = [n for n in net.nodes if n not in (victim, partitioned)]
    everyone = [*reachable, partitioned]
    assert net.run_until(lambda: everywhere_removed(reachable), net.now + 10) is not None
    assert net.nodes[partitioned].state.members[victim].state is State.DOWN  # still the old view
    net.isolate(partitioned, False)
    assert net.run_until(lambda: everywhere_removed(everyone), net.now + 10)
    net.run(removed_at + 100)  # well within the tombstone's 120 s
    assert everywhere_removed(everyone)
    for name in everyone:
        since = [e for t, e in net.nodes[name].events if t >= removed_at]
        about = [e for e in since if getattr(e, "name", None) == victim]
        assert about[-1] == Removed(victim), (name, about)
        assert [e for e in since if isinstance(e, Joined) and e.record.name == victim] == []
    net.run(removed_at + 125)  # expired everywhere at about the same time
    assert all(victim not in net.nodes[n].state.members for n in everyone)
    net.run(removed_at + 140)
    assert all(victim not in net.nodes[n].state.members for n in everyone)


def test_a_removed_node_that_restarts_rejoins():
    net = cluster(3, seed=9)
    converge(net)
    victim = record(2)
    net.stop(victim.name)
    net.run(net.now + 8)
    net.apply(SEED, net.nodes[SEED].state.remove(victim.name, net.now))
    net.run(net.now + 5)
    net.start(attrs.evolve(victim, generation=victim.generation + 1), [SEED])
    converge(net, 15)
    rejoined = [
        e.record.generation for e in events_of(net, SEED, Joined) if e.record.name == victim.name
    ]
    assert rejoined == [victim.generation, victim.generation + 1]
    assert net.nodes[SEED].state.members[victim.name].record.generation == victim.generation + 1


def test_expiring_tombstones_are_neither_kept_nor_relayed():
    a = lone(0)
    tomb = attrs.evolve(record(1), state=State.REMOVED, ttl=0)
    assert a.receive(12, ack2_from(2, tomb), 0.0).events == ()
    assert record(1).name not in a.members  # unknown and expired: nothing stored
    a.receive(12, ack2_from(2, record(1)), 0.0)
    assert a.receive(12, ack2_from(2, tomb), 0.0).events == (Removed(record(1).name),)
    assert record(1).name not in a.members  # removed, and the tombstone is already over
    other = attrs.evolve(tomb, name=record(3).name, host=record(3).host, ttl=2)
    a.receive(12, ack2_from(2, other), 0.0)
    assert a.members[record(3).name].state is State.REMOVED
    digests = [record(3).digest()]  # a peer that still has the live record
    (ack,) = a.receive(10, encode(Kind.SYN, record(4).name, digests=digests), 1.5).outgoing
    sent = decode(ack.frame_type, ack.payload, default_port=1)
    assert sent is not None
    assert [r.name for r in sent.records] == [a.local.name]  # 0.5 s left: not relayed
    a.tick(2.0)
    assert record(3).name not in a.members


def test_remove_refuses_ourselves_unknown_and_live_members():
    a = lone(0)
    a.receive(12, ack2_from(1, record(1)), 0.0)
    for name, why in [
        (a.local.name, "not a member"),
        ("10.9.9.9:1", "not a member"),
        (record(1).name, "not DOWN"),
    ]:
        with pytest.raises(ValueError, match=why):
            a.remove(name, 0.0)


def test_restart_with_new_tokens_is_an_update():
    a = lone(0)
    a.receive(12, ack2_from(1, record(1)), 0.0)
    moved = record(1, generation=BASE_GENERATION + 99, tokens=[77, 78])
    step = a.receive(12, ack2_from(1, moved), 1.0)
    assert step.events == (Updated(record(1), moved),)
    assert a.members[moved.name].record.tokens == (77, 78)


def test_leaving_is_gossiped_and_keeps_the_tokens():
    net = cluster(3, seed=10, loss=0.0, duplicate=0.0)
    converge(net)
    leaver = record(1).name
    net.apply(leaver, net.nodes[leaver].state.leave(net.now))
    net.run(net.now + 5)
    for node in net.nodes.values():
        assert node.state.members[leaver].state is State.LEAVING
        assert leaver in [r.name for r in ring_records(node.state.members)]


# -- the exchange and the NORMAL rule -------------------------------------------------


def test_three_way_exchange():
    a, b = lone(0), lone(1, seeds=[record(0).name])
    (syn,) = b.tick(0.0).outgoing
    assert (syn.to, syn.kind, syn.frame_type) == (a.local.name, Kind.SYN, MessageType.DIGEST_SYN)
    assert syn.address == ("10.0.0.0", 8101)
    step = deliver(syn, a, 0.01)
    (ack,) = step.outgoing
    message = decode(ack.frame_type, ack.payload, default_port=1)
    assert message is not None
    assert [r.name for r in message.records] == [a.local.name]
    assert message.requests == (b.local.name,)  # a never heard of b: it asks
    step = deliver(ack, b, 0.02)
    assert step.events == (Joined(a.local),)
    (ack2,) = step.outgoing
    step = deliver(ack2, a, 0.03)
    assert step.events == (Joined(b.local),)
    assert set(a.members) == set(b.members) == {a.local.name, b.local.name}
    counters = a.counters
    assert counters["messages_in"] == 2
    assert (counters["messages_out"], counters["exchanges"]) == (1, 1)
    assert counters["bytes_out"] == len(ack.payload)
    assert counters["bytes_in"] == len(syn.payload) + len(ack2.payload)


def test_a_stale_record_never_overwrites_a_fresh_one():
    a = lone(0)
    fresh = attrs.evolve(record(1), heartbeat=5)
    a.receive(12, ack2_from(2, fresh), 0.0)
    a.receive(12, ack2_from(2, attrs.evolve(fresh, heartbeat=3, state=State.NORMAL)), 1.0)
    a.receive(12, ack2_from(2, attrs.evolve(fresh, generation=fresh.generation - 1)), 1.0)
    assert a.members[fresh.name].record == fresh
    assert a.counters["records_stale"] == 2


def test_only_node_is_normal_at_its_first_tick():
    a = lone(0, seeds=[record(0).name])  # listing itself as its only seed
    assert a.local.state is State.JOINING
    step = a.tick(0.0)
    assert StateChanged(a.local.name, State.JOINING, State.NORMAL) in step.events
    assert a.local.state is State.NORMAL
    assert step.outgoing == ()  # nobody to talk to


def test_stays_joining_without_an_exchange_until_overridden():
    b = lone(1, seeds=[record(0).name])
    now = 0.0
    for _ in range(60):
        b.tick(now)
        now = b.next_deadline()
    assert b.local.state is State.JOINING
    assert b.counters["messages_out"] == 60  # a SYN to the seed every round
    step = b.mark_normal(now)
    assert step.events == (StateChanged(b.local.name, State.JOINING, State.NORMAL),)


def exchange(initiator: GossipState, responder: GossipState, now: float) -> None:
    """One complete SYN -> ACK -> ACK2 from ``initiator`` to ``responder``."""
    syn = initiator._syn(responder.local.name)
    (ack,) = deliver(syn, responder, now).outgoing
    (ack2,) = deliver(ack, initiator, now).outgoing
    deliver(ack2, responder, now)


def test_normal_needs_an_exchange_and_a_settled_round():
    a, b = lone(0), lone(1, seeds=[record(0).name])
    a.tick(0.0)
    exchange(b, a, 0.1)  # b learns a: its view changed in that exchange
    b.tick(0.2)
    assert b.local.state is State.JOINING
    exchange(b, a, 0.5)  # nothing new, but less than an interval since the change
    b.tick(0.6)
    assert b.local.state is State.JOINING
    b.tick(1.2)
    assert b.local.state is State.NORMAL


def test_normal_waits_while_the_view_keeps_changing():
    a, b = lone(0), lone(1, seeds=[record(0).name])
    exchange(b, a, 0.0)
    for k in range(2, 8):  # a new member shows up in every exchange
        a.receive(12, ack2_from(2, record(k)), k - 0.5)
        exchange(b, a, float(k))
        b.tick(k + 0.1)
        assert b.local.state is State.JOINING
    exchange(b, a, 8.0)
    b.tick(9.2)
    assert b.local.state is State.NORMAL


def test_fanout_grows_with_the_view():
    sizes = (1, 3, 4, 5, 16, 17, 48, 64, 65, 1024)
    assert [auto_fanout(n) for n in sizes] == [1, 1, 1, 2, 2, 3, 3, 3, 4, 5]


def test_a_round_probes_suspects_directly():
    a = lone(0)
    for k in range(1, 9):
        a.receive(12, ack2_from(k, record(k)), 0.0)
    a.receive(12, ack2_from(1, attrs.evolve(record(1), heartbeat=1)), 2.6)  # only 1 is fresh
    targets = {out.to for out in a.tick(2.7).outgoing}
    fanout = auto_fanout(9)
    assert len(targets) == fanout + 2  # two suspects, besides the random peers


# -- hostile gossip ---------------------------------------------------------------


def test_malformed_payloads_are_counted_not_raised():
    a = lone(0)
    for frame_type, payload in [(10, b"\xff" * 10), (7, b"dc$r$x"), (3, b"")]:
        assert a.receive(frame_type, payload, 0.0).outgoing == ()
    counted = a.counters
    assert counted["dropped_malformed"] == 3
    assert (counted["messages_in"], counted["bytes_in"]) == (3, 16)
    assert a.last_problem is not None
    assert a.receive(MessageType.GOSSIP_SYN_REPLY, b"", 0.0) == a.receive(9, b"", 0.0)
    assert a.counters["ignored"] == 2


def test_forged_newer_generation_for_our_own_name_is_rejected_and_overtaken():
    net = cluster(3, seed=11, loss=0.0, duplicate=0.0)
    converge(net)
    victim = net.nodes[record(1).name].state
    real = victim.local
    forged = attrs.evolve(real, generation=real.generation + 100, tokens=(999,))
    # A relay (node 2) is fooled: it cannot tell a forged record from a real one.
    relay = net.nodes[record(2).name].state
    step = relay.receive(12, ack2_from(0, forged), net.now)
    assert [type(e) for e in step.events] == [Updated]
    assert step.events[0].record == forged
    # The owner is not: it drops the record and moves its own version above it.
    victim.receive(12, ack2_from(2, forged), net.now)
    assert victim.counters["dropped_forged"] == 1
    assert victim.local.generation > forged.generation
    assert victim.local.tokens == real.tokens
    converge(net, 10)
    for node in net.nodes.values():
        assert node.state.members[real.name].record.tokens == real.tokens
        assert node.state.members[real.name].record.generation == victim.local.generation


@pytest.mark.parametrize(
    "forge",
    [
        lambda r: attrs.evolve(r, heartbeat=r.heartbeat + 1000),
        lambda r: attrs.evolve(r, state=State.REMOVED, ttl=60),
        lambda r: attrs.evolve(r, heartbeat=2**64 - 1),
    ],
    ids=["heartbeat", "tombstone", "max-heartbeat"],
)
def test_other_forgeries_of_our_own_record(forge):
    a = lone(0)
    forged = forge(a.local)
    a.receive(12, ack2_from(1, forged), 0.0)
    assert a.counters["dropped_forged"] == 1
    assert a.local.version > forged.version
    assert a.local.state is State.JOINING


def test_spoofed_senders_are_dropped():
    a = lone(0)
    syn = encode(Kind.SYN, record(1).name, digests=[record(1).digest()])
    assert a.receive(10, syn, 0.0, sender=record(2).name).outgoing == ()
    ours = encode(Kind.SYN, a.local.name, digests=[])
    assert a.receive(10, ours, 0.0).outgoing == ()
    assert a.counters["dropped_forged"] == 2
    assert len(a.receive(10, syn, 0.0, sender=record(1).name).outgoing) == 1


def test_foreign_dc_records_are_dropped_and_not_requested_again():
    a = lone(0, dcs=["dc1"])
    foreign = record(1, dc="dc9")
    a.receive(12, ack2_from(1, foreign), 0.0)
    a.receive(7, b"dc8$r$5,1,4,10.5.0.1", 0.0)
    assert a.counters["dropped_foreign_dc"] == 2
    assert set(a.members) == {a.local.name}
    (ack,) = a.receive(10, encode(Kind.SYN, foreign.name, digests=[foreign.digest()]), 1.0).outgoing
    message = decode(ack.frame_type, ack.payload, default_port=1)
    assert message is not None
    assert message.requests == ()
    assert [r.name for r in message.records] == [a.local.name]
    with pytest.raises(ValueError, match="allow-list"):
        lone(0, dcs=["dc2"])


def test_nobody_may_claim_our_tokens():
    a = lone(0)
    claim = NodeRecord.make("10.9.9.9", 8101, "dc1", "rack0", a.local.tokens, generation=2**62)
    step = a.receive(12, ack2_from(1, claim), 0.0)
    assert step.events == ()
    assert a.counters["dropped_conflict"] == 1
    elsewhere = attrs.evolve(claim, rack="rack1")  # the same tokens in another rack are fine
    assert a.receive(12, ack2_from(1, elsewhere), 0.0).events == (Joined(elsewhere),)


def test_an_older_claim_loses_to_a_newer_one():
    a = lone(0)
    newer = NodeRecord.make("10.9.9.9", 8101, "dc1", "rack1", [5], generation=20)
    older = NodeRecord.make("10.9.9.8", 8101, "dc1", "rack1", [5, 6], generation=10)
    a.receive(12, ack2_from(1, newer), 0.0)
    assert a.receive(12, ack2_from(1, older), 0.0).events == ()
    assert a.counters["dropped_superseded"] == 1
    assert older.name not in a.members


def test_the_view_is_bounded():
    a = lone(0, max_members=4)
    a.receive(12, ack2_from(1, *(record(k) for k in range(1, 11))), 0.0)
    assert len(a.members) == 4
    assert a.counters["dropped_full"] == 7


def test_a_big_view_travels_in_bounded_payloads_over_several_rounds():
    big, new = lone(0), lone(700, seeds=[record(0).name])
    # 256 ten-digit tokens a node: 2.8 KB a record, 1.7 MB for the whole view.
    many = [
        record(k, tokens=range(4_000_000_000 + k * 256, 4_000_000_000 + (k + 1) * 256))
        for k in range(1, 600)
    ]
    for start in range(0, len(many), 200):
        big.receive(12, ack2_from(1, *many[start : start + 200]), 0.0)
    assert len(big.members) == 600
    sizes = []
    for round_ in range(6):
        now = 1.0 + round_
        syn = new._syn(big.local.name)
        (ack,) = deliver(syn, big, now).outgoing
        sizes.append(len(ack.payload))
        (ack2,) = deliver(ack, new, now).outgoing
        deliver(ack2, big, now)
        if len(new.members) == 601:
            break
    assert len(new.members) == 601
    assert len(sizes) >= 2  # it did not fit in one message...
    assert max(sizes) <= wire.MAX_PAYLOAD_LEN  # ...and no message passed the bound


# -- Dynomite peers and the routing view ---------------------------------------------


def test_dynomite_gossip_joins_the_view():
    a = lone(0, default_peer_port=8101)
    capture = b"dc1$rack1$0,1795317716,4,127.0.0.1|dc1$rack2$0,1795317713,7,127.0.0.1"
    step = a.receive(MessageType.GOSSIP_SYN, capture, 0.0)
    assert step.outgoing == ()  # Dynomite expects no reply
    # One host, no port in the record: both C nodes collapse into one name.
    assert [type(e) for e in step.events] == [Joined]
    assert a.counters["records_stale"] == 1
    down = b"dc1$rack1$5,1795317800,8,10.7.0.1"  # its detector's verdict is not ours
    a.receive(MessageType.GOSSIP_SYN, down, 0.0)
    assert a.members["10.7.0.1:8101"].state is State.NORMAL
    line = a._line(a.members["10.7.0.1:8101"].record, 0.0)
    assert line is not None
    assert line == b"N 10.7.0.1:8101 0 1795317800 4 dc1 rack1 5 -\n"  # relayed as NORMAL


def test_routing_snapshot_builds_a_topology():
    net = cluster(6, seed=12, loss=0.0, duplicate=0.0)
    converge(net)
    viewer = net.nodes[SEED].state
    net.apply(record(5).name, net.nodes[record(5).name].state.leave(net.now))
    net.stop(record(4).name)
    net.run(net.now + 8)
    members = viewer.members
    assert members[record(4).name].state is State.DOWN
    assert [r.name for r in ring_records(members)] == sorted(members)
    assert record(4).name not in [r.name for r in ring_records(members, include_down=False)]
    local, others = peer_infos(members)
    assert local.local
    assert local.name == SEED
    topology = Topology.from_peers(local, others)
    assert len(topology.peers) == 6
    assert {ring.rack for ring in topology.all_rings} == {"rack0", "rack1", "rack2"}


def test_joining_members_are_left_out_of_the_ring_by_default():
    a = lone(0)
    a.receive(12, ack2_from(1, record(1)), 0.0)  # record(1) is JOINING
    assert [r.name for r in ring_records(a.members)] == [a.local.name]
    assert len(ring_records(a.members, include_joining=True)) == 2


def test_a_generation_from_the_future_is_dropped_as_forged():
    """Generations are start times: one past latest_generation pins a name; dropped."""
    from trinomite.gossip.events import Counter
    from trinomite.gossip.wire import Kind, Message, NodeRecord, State

    local = NodeRecord.make("127.0.0.1", 9001, "dc1", "r1", (1,), generation=1000)
    state = GossipState(
        local,
        seeds=["127.0.0.1:9002"],
        gos_interval_ms=1000,
        rng=random.Random(1),
        now=0.0,
        latest_generation=lambda: 5000,
    )
    honest = NodeRecord.make(
        "127.0.0.1", 9002, "dc1", "r2", (1,), generation=4000, state=State.NORMAL
    )
    forged = NodeRecord.make(
        "127.0.0.1", 9002, "dc1", "r2", (1,), generation=2**63, state=State.NORMAL
    )
    state.on_message("127.0.0.1:9002", Message(Kind.ACK2, "127.0.0.1:9002", records=(honest,)), 1.0)
    assert state.members["127.0.0.1:9002"].record.generation == 4000
    state.on_message("127.0.0.1:9003", Message(Kind.ACK2, "127.0.0.1:9003", records=(forged,)), 2.0)
    assert state.members["127.0.0.1:9002"].record.generation == 4000  # not pinned
    assert state.counters[Counter.DROPPED_FORGED.name.lower()] == 1
    # Nor for our own name: it never reaches the counter-bump either.
    own = NodeRecord.make("127.0.0.1", 9001, "dc1", "r1", (1,), generation=2**63)
    state.on_message("127.0.0.1:9003", Message(Kind.ACK2, "127.0.0.1:9003", records=(own,)), 3.0)
    assert state.local.generation == 1000
    assert state.counters[Counter.DROPPED_FORGED.name.lower()] == 2


def test_an_unreachable_silent_member_is_convicted_in_half_the_time():
    from trinomite.gossip.detector import conviction_bounds
    from trinomite.gossip.wire import Kind, Message, NodeRecord, State

    local = NodeRecord.make("127.0.0.1", 9001, "dc1", "r1", (1,), generation=1000)
    peer = NodeRecord.make("127.0.0.1", 9002, "dc1", "r2", (1,), generation=7, state=State.NORMAL)
    high = conviction_bounds(1.0)[1]

    def fresh() -> GossipState:
        state = GossipState(
            local, seeds=[peer.name], gos_interval_ms=1000, rng=random.Random(3), now=0.0
        )
        state.on_message(peer.name, Message(Kind.ACK2, peer.name, records=(peer,)), 0.0)
        return state

    reachable, unreachable = fresh(), fresh()
    unreachable.set_reachable(peer.name, False)
    assert unreachable.next_deadline() <= high / 2 + 1e-9
    unreachable.tick(high / 2 + 0.01)
    assert unreachable.members[peer.name].state is State.DOWN
    reachable.tick(high / 2 + 0.01)
    assert reachable.members[peer.name].state is State.NORMAL  # links up: the full bound
    reachable.tick(high + 0.01)
    assert reachable.members[peer.name].state is State.DOWN
