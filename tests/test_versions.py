"""Versions for read repair (pure): the hybrid logical clock, newest-wins, tombstones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trinomite.cluster.versions import (
    MISSING,
    HybridClock,
    Reading,
    collectable,
    decode_meta,
    encode_meta,
    newest,
    physical_ms,
)


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_clock_follows_the_wall_and_never_goes_back() -> None:
    wall = Wall(1000.0)
    clock = HybridClock(wall)
    first = clock.tick()
    assert physical_ms(first) == 1_000_000
    assert clock.tick() == first + 1  # same millisecond: the logical counter moves
    wall.now = 999.0  # the wall clock steps back one second
    after = clock.tick()
    assert after > first + 1
    assert physical_ms(after) == 1_000_000
    wall.now = 1001.0
    assert physical_ms(clock.tick()) == 1_001_000


def test_observed_versions_are_overtaken() -> None:
    clock = HybridClock(Wall(10.0))
    remote = HybridClock(Wall(20.0)).tick()  # a coordinator whose clock is ahead
    clock.observe(remote)
    assert clock.tick() > remote


@given(st.lists(st.floats(0, 1e9), min_size=1, max_size=50))
def test_ticks_strictly_increase_whatever_the_wall_does(walls: list[float]) -> None:
    wall = Wall(walls[0])
    clock = HybridClock(wall)
    seen = []
    for now in walls:
        wall.now = now
        seen.append(clock.tick())
    assert seen == sorted(set(seen))


def test_the_newest_reading_wins_and_the_rest_are_stale() -> None:
    readings = [Reading(b"a", 5), Reading(b"b", 9), MISSING, Reading(b"b", 9)]
    assert newest(readings) == (1, [0, 2])


def test_a_tombstone_wins_a_tie_and_keeps_a_delete_from_being_undone() -> None:
    deleted = Reading(None, 9, deleted=True)
    assert newest([Reading(b"v", 9), deleted]) == (1, [0])
    # A replica that missed the delete still holds the old value: it is the stale one.
    assert newest([Reading(b"v", 3), deleted, deleted]) == (1, [0])


def test_ties_between_values_are_decided_alike_everywhere() -> None:
    one, two = Reading(b"x", 7), Reading(b"y", 7)
    assert newest([one, two]) == (1, [0])
    assert newest([two, one]) == (0, [1])


def test_agreeing_replicas_are_not_stale() -> None:
    assert newest([Reading(b"v", 4)] * 3) == (0, [])
    assert newest([MISSING, MISSING]) == (0, [])
    with pytest.raises(ValueError, match="no readings"):
        newest([])


def test_tombstones_are_collected_after_the_grace_only() -> None:
    clock = HybridClock(Wall(1000.0))
    tombstone = Reading(None, clock.tick(), deleted=True)
    grace = 10 * 86400.0
    assert not collectable(tombstone, 1000.0 + grace - 1, grace)
    assert collectable(tombstone, 1000.0 + grace + 1, grace)
    assert not collectable(Reading(b"v", tombstone.version), 1e12, grace)


def test_metadata_round_trips_and_unknown_formats_read_as_none() -> None:
    assert decode_meta(encode_meta(123456789, True)) == (123456789, True)
    assert decode_meta(encode_meta(42, False)) == (42, False)
    for junk in (None, b"", b"2:5:0", b"1:x:0", b"1:5"):
        assert decode_meta(junk) == (0, False)
