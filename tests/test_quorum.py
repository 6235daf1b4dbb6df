"""The quorum decision on its own: Dynomite's rules, any number of replicas."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinomite.cluster.quorum import EachQuorum, QuorumDecision, quorum_size
from trinomite.peering.collectors import ClusterCounters, PairQuorum, QuorumSink

A = b"$1\r\na\r\n"
B = b"$1\r\nb\r\n"
C = b"$1\r\nc\r\n"
D = b"$1\r\nd\r\n"
DOWN = b"-ERR Peer: Peer Node is not connected\r\n"
STORAGE = b"-ERR Storage: Datastore refused connection\r\n"
NO_QUORUM = b"-ERR Dynomite: Failed to achieve Quorum\r\n"


def feed(decision: QuorumDecision, replies: list[bytes]) -> tuple[bytes | None, int]:
    """The decided reply and how many replies it took (None if undecided)."""
    for count, reply in enumerate(replies, 1):
        result = decision.add(reply)
        if result is not None:
            return result, count
    return None, len(replies)


@pytest.mark.parametrize(("replicas", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_quorum_size(replicas, quorum):
    assert quorum_size(replicas) == quorum


# (replicas, safe, replies in arrival order, expected reply, replies consumed)
CASES = [
    (1, False, [A], A, 1),
    (1, True, [DOWN], DOWN, 1),
    (3, False, [A, A, B], A, 2),  # decided as soon as 2 of 3 agree
    (3, True, [A, B, A], A, 3),
    (3, False, [A, B, C], A, 3),  # DC_QUORUM: first reply on full disagreement
    (3, True, [A, B, C], NO_QUORUM, 3),  # DC_SAFE_QUORUM: error
    (3, False, [DOWN, DOWN], DOWN, 2),  # no quorum possible: the first error
    (3, True, [A, STORAGE, DOWN], STORAGE, 3),
    (3, False, [DOWN, A, A], A, 3),
    (2, False, [A, DOWN], DOWN, 2),  # 2 racks: both needed
    (5, True, [A, B, A, C, A], A, 5),
    (5, True, [A, B, C, A], None, 4),  # A may still reach 3 with the last reply
    (5, True, [A, B, C, D], NO_QUORUM, 4),  # early: 1 + 1 pending < 3
    (5, False, [DOWN, DOWN, A, DOWN], DOWN, 4),
    (4, True, [A, A, B, B], NO_QUORUM, 4),
    (7, True, [A] * 4, A, 4),
]


@pytest.mark.parametrize(("replicas", "safe", "replies", "expected", "used"), CASES)
def test_decisions(replicas, safe, replies, expected, used):
    decision = QuorumDecision(replicas, safe=safe)
    assert feed(decision, replies) == (expected, used)
    assert decision.decided == expected
    if expected is not None:
        assert decision.add(A) is None  # replies after the decision are swallowed


def test_undecided_until_enough_replies():
    decision = QuorumDecision(3, safe=True)
    assert decision.add(A) is None
    assert decision.add(B) is None
    assert decision.decided is None


def test_errors_from_every_replica_agree_is_still_an_error():
    wrongtype = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
    assert feed(QuorumDecision(3, safe=True), [wrongtype] * 3) == (wrongtype, 2)


def mget(*values: bytes | None) -> bytes:
    parts = [b"$-1\r\n" if v is None else b"$%d\r\n%s\r\n" % (len(v), v) for v in values]
    return b"*%d\r\n" % len(values) + b"".join(parts)


def test_multikey_reconciled_element_by_element():
    replies = [mget(b"1", b"x", None), mget(b"1", b"y", None), mget(b"2", b"x", None)]
    for safe in (False, True):
        decision = QuorumDecision(3, safe=safe, multikey=True)
        assert feed(decision, replies) == (mget(b"1", b"x", None), 3)


def test_multikey_without_element_quorum():
    replies = [mget(b"1"), mget(b"2"), mget(b"3")]
    assert feed(QuorumDecision(3, safe=False, multikey=True), replies) == (mget(b"1"), 3)
    assert feed(QuorumDecision(3, safe=True, multikey=True), replies) == (NO_QUORUM, 3)


def test_order_of_arrival_never_changes_a_safe_decision():
    replies = [A, A, B, DOWN, A]
    outcomes = {
        feed(QuorumDecision(5, safe=True), list(p))[0] for p in itertools.permutations(replies)
    }
    assert outcomes == {A}


def test_each_quorum_needs_every_datacenter():
    each = EachQuorum({"dc1": 3, "dc2": 2}, "dc1", multikey=False)
    assert each.add("dc1", A) is None
    assert each.add("dc1", A) is None  # dc1 decided, dc2 still open
    assert each.add("dc2", A) is None
    assert each.add("dc2", A) == A
    failing = EachQuorum({"dc1": 3, "dc2": 2}, "dc1", multikey=False)
    failing.add("dc1", A)
    failing.add("dc1", A)
    failing.add("dc2", A)
    assert failing.add("dc2", DOWN) == DOWN
    assert failing.add("dc1", A) is None


def test_each_quorum_returns_local_datacenter_reply():
    each = EachQuorum({"dc1": 1, "dc2": 1}, "dc2", multikey=False)
    each.add("dc1", A)
    assert each.add("dc2", A) == A


def test_needs_a_replica():
    with pytest.raises(ValueError, match="at least one replica"):
        QuorumDecision(0, safe=False)


REPLIES = st.sampled_from(
    [
        b"+OK\r\n",
        b"$1\r\na\r\n",
        b"$1\r\nb\r\n",
        b"$-1\r\n",
        b":1\r\n",
        b"-ERR x\r\n",
        b"-ERR y\r\n",
    ]
)


@given(REPLIES, REPLIES, st.booleans(), st.booleans())
def test_the_two_replica_fast_path_decides_as_the_general_decision(
    first: bytes, second: bytes, safe: bool, write: bool
) -> None:
    """``PairQuorum`` (two racks) against ``QuorumSink`` over a ``QuorumDecision``."""

    class Sink:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def set(self, reply: bytes) -> None:
            self.got.append(reply)

    fast, general = Sink(), Sink()
    fast_counters, general_counters = ClusterCounters(), ClusterCounters()
    pair = PairQuorum(fast, fast_counters, write, safe)
    full = QuorumSink(QuorumDecision(2, safe=safe), general, general_counters, write)
    for reply in (first, second, b"+late\r\n"):
        pair.set(reply)
        full.set(reply)
        assert fast.got == general.got
    assert len(fast.got) == 1
    assert fast_counters == general_counters
