"""Topology and routing plans as pure functions: ownership, fan-out, failover."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trinomite.cluster.routing import Mode, PlanCache, plan
from trinomite.config import parse_config
from trinomite.config.model import Consistency
from trinomite.config.topology import topology_of
from trinomite.protocol.peer import MessageType
from trinomite.ring.topology import LOCAL_TOKEN, PeerInfo, RackRing, Topology, TopologyError

VECTORS = Path(__file__).resolve().parent.parent.parent / "shared" / "vectors"
CONF = Path(__file__).resolve().parent.parent / "conf"


def peer(dc: str, rack: str, port: int, *tokens: int, local: bool = False) -> PeerInfo:
    return PeerInfo(f"127.0.0.1:{port}", "127.0.0.1", port, dc, rack, tokens, local)


def two_dc_topology(local_rack: str = "r1") -> Topology:
    """dc1: racks r1, r2, r3 (2 nodes each); dc2: racks r1, r2 (1 node each)."""
    nodes = []
    port = 9000
    for rack in ("r1", "r2", "r3"):
        for token in (0, 2147483648):
            port += 1
            nodes.append(peer("dc1", rack, port, token, local=(rack, token) == (local_rack, 0)))
    for rack in ("r1", "r2"):
        port += 1
        nodes.append(peer("dc2", rack, port, 0))
    local = next(n for n in nodes if n.local)
    return Topology.from_peers(local, [n for n in nodes if not n.local])


def always_up(_: str) -> bool:
    return True


def test_ownership_is_dynomite_vnode_dispatch():
    ring = RackRing.build("dc", "r", [peer("dc", "r", 1, 100), peer("dc", "r", 2, 200)])
    assert ring.owner(0).port == 1  # <= smallest token -> smallest
    assert ring.owner(100).port == 1  # (prev, own]
    assert ring.owner(101).port == 2
    assert ring.owner(200).port == 2
    assert ring.owner(201).port == 1  # above the largest wraps around


def test_multiple_tokens_per_node():
    ring = RackRing.build("dc", "r", [peer("dc", "r", 1, 100, 300), peer("dc", "r", 2, 200)])
    assert [ring.owner(t).port for t in (50, 150, 250, 350)] == [1, 2, 1, 1]
    assert {p.port for p in ring.members} == {1, 2}


def test_duplicate_tokens_and_empty_racks_are_refused():
    with pytest.raises(TopologyError, match="claimed twice"):
        RackRing.build("dc", "r", [peer("dc", "r", 1, 5), peer("dc", "r", 2, 5)])
    with pytest.raises(TopologyError, match="no tokens"):
        RackRing.build("dc", "r", [peer("dc", "r", 1)])


def test_quickstart_routing_example_from_dynomite():
    example = json.loads((VECTORS / "dynomite_hashes.json").read_text())["routing_example"]
    config = parse_config((CONF / "redis_rack1_node1.yml").read_text(), "quickstart")
    topology = topology_of(config)
    assert sorted(set(topology.own_ring.tokens)) == example["rack_tokens"]
    for key, token in example["owner_token_by_key"].items():
        owner = topology.own_ring.owner(topology.token(key.encode()))
        assert owner.tokens == (token,), key


def test_hash_tag_and_empty_keys():
    local = peer("dc", "r", 1, 0, local=True)
    topology = Topology.from_peers(local, [peer("dc", "r", 2, 2147483648)], hash_tag=b"{}")
    assert topology.token(b"{user}:a") == topology.token(b"{user}:b") == topology.token(b"user")
    assert topology.token(b"") == LOCAL_TOKEN
    assert topology.token(b"{}x") == LOCAL_TOKEN
    assert topology.owner(topology.own_ring, LOCAL_TOKEN) is local


def test_murmur3_is_refused_clearly():
    with pytest.raises(TopologyError, match="murmur3"):
        Topology.from_peers(peer("dc", "r", 1, 0, local=True), [], hash_name="murmur3")


def test_remote_rack_preselection_follows_our_rack_index():
    # Our rack index in dc1 modulo dc2's rack count picks dc2's replication rack.
    assert [r.rack for r in two_dc_topology("r1").remote_rings("dc2")] == ["r1", "r2"]
    assert [r.rack for r in two_dc_topology("r2").remote_rings("dc2")] == ["r2", "r1"]
    assert [r.rack for r in two_dc_topology("r3").remote_rings("dc2")] == ["r1", "r2"]


def targets(chosen):
    return [(t.peer.dc, t.peer.rack, t.kind, t.counted) for t in chosen.targets]


REQ, FWD = MessageType.REQ, MessageType.REQ_FORWARD


def test_dc_one_read_goes_to_own_rack_only():
    chosen = plan(two_dc_topology(), 7, write=False, level=Consistency.DC_ONE, is_up=always_up)
    assert chosen.mode is Mode.ONE
    assert targets(chosen) == [("dc1", "r1", REQ, True)]


def test_dc_one_write_replicates_everywhere_counting_own_rack():
    chosen = plan(two_dc_topology(), 7, write=True, level=Consistency.DC_ONE, is_up=always_up)
    assert targets(chosen) == [
        ("dc1", "r1", REQ, True),
        ("dc1", "r2", REQ, False),
        ("dc1", "r3", REQ, False),
        ("dc2", "r1", FWD, False),
    ]


@pytest.mark.parametrize("write", [False, True])
def test_quorum_levels_count_every_local_rack(write):
    for level, mode in (
        (Consistency.DC_QUORUM, Mode.QUORUM),
        (Consistency.DC_SAFE_QUORUM, Mode.SAFE),
    ):
        chosen = plan(two_dc_topology(), 7, write=write, level=level, is_up=always_up)
        assert chosen.mode is mode
        assert chosen.counted == 3
        remote = [t for t in targets(chosen) if t[0] == "dc2"]
        assert remote == ([("dc2", "r1", FWD, False)] if write else [])


@pytest.mark.parametrize("write", [False, True])
def test_each_safe_quorum_counts_every_rack_of_every_dc(write):
    chosen = plan(
        two_dc_topology(), 7, write=write, level=Consistency.DC_EACH_SAFE_QUORUM, is_up=always_up
    )
    assert chosen.mode is Mode.EACH
    assert chosen.counted_per_dc() == {"dc1": 3, "dc2": 2}
    assert all(kind is REQ for _, _, kind, _ in targets(chosen))


def test_dc_one_read_fails_over_to_another_local_rack():
    topology = two_dc_topology()
    token = 5  # owned by each rack's token-2147483648 node: in r1 a peer, not us
    own_owner = topology.own_ring.owner(token)
    assert not own_owner.local

    def down(name: str) -> bool:
        return name != own_owner.name

    chosen = plan(topology, token, write=False, level=Consistency.DC_ONE, is_up=down)
    assert chosen.failover
    assert targets(chosen) == [("dc1", "r2", REQ, True)]


def test_remote_dc_forward_fails_over_and_reports_drops():
    topology = two_dc_topology()
    preselected = topology.remote_rings("dc2")[0].owner(7)
    chosen = plan(
        topology, 7, write=True, level=Consistency.DC_ONE, is_up=lambda n: n != preselected.name
    )
    assert chosen.remote_failovers == 1
    assert ("dc2", "r2", FWD, False) in targets(chosen)
    nothing = plan(
        topology,
        7,
        write=True,
        level=Consistency.DC_ONE,
        is_up=lambda n: not n.endswith(("9007", "9008")),
    )
    assert nothing.dropped_dcs == ("dc2",)


def uneven_topology() -> Topology:
    """Racks of different sizes and tokens, so segments come from several rings."""
    nodes = [
        peer("dc1", "r1", 9101, 1000, local=True),
        peer("dc1", "r1", 9102, 3_000_000_000),
        peer("dc1", "r2", 9201, 2_000_000_000),
        peer("dc1", "r3", 9301, 500),
        peer("dc1", "r3", 9302, 1_000_000),
        peer("dc1", "r3", 9303, 4_000_000_000),
        peer("dc2", "r1", 9401, 7),
        peer("dc2", "r1", 9402, 2_500_000_000),
    ]
    return Topology.from_peers(nodes[0], nodes[1:])


@pytest.mark.parametrize("level", list(Consistency))
@pytest.mark.parametrize("write", [False, True])
def test_plan_cache_matches_plan_for_every_token_neighbourhood(level, write):
    topology = uneven_topology()
    cache = PlanCache(topology)
    down = {"127.0.0.1:9102", "127.0.0.1:9401"}

    def is_up(name: str) -> bool:
        return name not in down

    bounds = sorted({t for ring in topology.all_rings for t in ring.tokens})
    tokens = [0, 2**32 - 1] + [b + d for b in bounds for d in (-1, 0, 1)]
    for token in tokens:
        cached = cache.plan(token, write=write, level=level, is_up=is_up)
        assert cached == plan(topology, token, write=write, level=level, is_up=is_up), token


def test_plan_cache_is_recomputed_after_clear():
    topology = uneven_topology()
    cache = PlanCache(topology)
    read = {"write": False, "level": Consistency.DC_ONE}
    first = cache.plan(2_000_000_000, **read, is_up=always_up)
    assert cache.plan(2_000_000_000, **read, is_up=lambda name: False) is first  # memoized
    cache.clear()
    again = cache.plan(2_000_000_000, **read, is_up=lambda name: name != "127.0.0.1:9102")
    assert again != first
    assert again.failover
