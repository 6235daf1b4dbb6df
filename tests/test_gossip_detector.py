"""The phi-accrual failure detector and its conviction bound, in simulated time."""

from __future__ import annotations

import math
import random

import pytest

from trinomite.gossip.detector import (
    DEFAULT_THRESHOLD,
    PHI_FACTOR,
    FailureDetector,
    conviction_bounds,
)

STEP = 0.01  # how finely the tests sample the detector


def feed_jittered(
    detector: FailureDetector, rng: random.Random, count: int, jitter: float
) -> float:
    """Heartbeats every interval +- jitter; asserts no conviction in between; returns the last."""
    now = 0.0
    detector.add("x", now)
    for _ in range(count):
        gap = detector.interval * rng.uniform(1 - jitter, 1 + jitter)
        assert not detector.convicted("x", now + gap - 1e-9)
        now += gap
        detector.heartbeat("x", now)
    return now


def conviction_time(detector: FailureDetector, since: float, limit: float) -> float:
    """The first sampled instant after ``since`` at which ``x`` is convicted."""
    t = since
    while t < since + limit:
        if detector.convicted("x", t):
            return t
        t += STEP
    raise AssertionError(f"not convicted within {limit} s")


def test_bounds_formula_and_values():
    low, high = conviction_bounds(1.0)
    assert low == pytest.approx(8 * math.log(10) / 8)
    assert high == pytest.approx(8 * math.log(10) / 5)
    assert (round(low, 3), round(high, 3)) == (2.303, 3.684)
    low, high = conviction_bounds(30.0)
    assert (round(low, 1), round(high, 1)) == (69.1, 110.5)
    assert conviction_bounds(1.0, threshold=4) == pytest.approx((low / 60, high / 60))


@pytest.mark.parametrize("seed", range(5))
def test_silent_node_convicted_within_5s_at_1000ms(seed):
    detector = FailureDetector(1.0)
    last = feed_jittered(detector, random.Random(seed), 200, jitter=0.3)
    # Not before ~2 intervals of silence...
    for k in range(int(2.0 / STEP) + 1):
        assert not detector.convicted("x", last + k * STEP)
    # ...and at most T_max = 3.7 s (< 5 s) after the last heartbeat.
    convicted_at = conviction_time(detector, last, 10.0)
    assert 2.0 < convicted_at - last <= conviction_bounds(1.0)[1] + STEP
    assert convicted_at - last <= 5.0
    assert detector.phi("x", convicted_at) >= DEFAULT_THRESHOLD


def test_bound_holds_at_the_default_30s_interval():
    detector = FailureDetector(30.0)
    last = feed_jittered(detector, random.Random(7), 50, jitter=0.3)
    assert not detector.convicted("x", last + 60.0)
    assert detector.convicted("x", last + 110.6)
    assert detector.deadline("x") - last == pytest.approx(conviction_bounds(30.0)[1])


def test_fast_heartbeats_hit_the_floor_not_below_two_intervals():
    detector = FailureDetector(1.0)
    now = 0.0
    detector.add("x", now)
    for _ in range(500):  # arrivals every 10 ms: the raw mean is far below I/8
        now += 0.01
        detector.heartbeat("x", now)
    assert detector.mean("x") == pytest.approx(1.0 / 8)
    assert detector.deadline("x") - now == pytest.approx(conviction_bounds(1.0)[0])
    assert not detector.convicted("x", now + 2.0)
    assert detector.convicted("x", now + 2.31)


def test_mean_between_floor_and_cap_is_used_as_measured():
    detector = FailureDetector(1.0)
    detector.add("x", 0.0)
    now = 0.0
    for _ in range(100):  # the window keeps 100 intervals: the prior interval falls out
        now += 0.2
        detector.heartbeat("x", now)
    assert detector.mean("x") == pytest.approx(0.2)
    assert detector.phi("x", now + 1.0) == pytest.approx(1.0 / 0.2 * PHI_FACTOR)
    assert detector.deadline("x") - now == pytest.approx(8 / PHI_FACTOR * 0.2)


def test_phi_reaches_the_threshold_exactly_at_the_deadline():
    detector = FailureDetector(1.0)
    last = feed_jittered(detector, random.Random(3), 30, jitter=0.2)
    deadline = detector.deadline("x")
    assert detector.phi("x", deadline) == pytest.approx(DEFAULT_THRESHOLD)
    assert detector.convicted("x", deadline)
    assert not detector.convicted("x", deadline - 1e-6)
    assert detector.phi("x", last) == 0.0


def test_recovers_and_the_outage_does_not_poison_the_window():
    detector = FailureDetector(1.0)
    last = feed_jittered(detector, random.Random(4), 100, jitter=0.3)
    mean_before = detector.mean("x")
    assert detector.convicted("x", last + 30.0)
    detector.heartbeat("x", last + 30.0)  # back after 30 s
    assert not detector.convicted("x", last + 30.0)
    assert detector.mean("x") == mean_before  # the 30 s gap is an outage, not cadence
    assert detector.convicted("x", last + 30.0 + 5.0)


def test_lower_threshold_convicts_proportionally_sooner():
    fast = FailureDetector(1.0, threshold=4.0)
    fast.add("x", 0.0)
    assert fast.deadline("x") == pytest.approx(conviction_bounds(1.0)[1] / 2)


def test_first_sample_after_add_cannot_collapse_the_mean():
    detector = FailureDetector(1.0)
    detector.add("x", 10.0)
    detector.heartbeat("x", 10.05)  # a second relay of a heartbeat, 50 ms later
    assert detector.mean("x") == pytest.approx(0.2)  # (1.0 + 0.05) / 2 = 0.525, capped at I/5
    assert not detector.convicted("x", 10.05 + 3.6)  # T_max = 3.68 s still applies


def test_reset_forget_and_bookkeeping():
    detector = FailureDetector(1.0, window=5)
    detector.add("x", 0.0)
    for i in range(1, 50):
        detector.heartbeat("x", i * 0.5)
    assert len(detector._peers["x"].intervals) == 5
    detector.add("x", 100.0)  # already watched: no effect
    assert detector.last_arrival("x") == 24.5
    detector.reset("x", 100.0)
    assert detector.last_arrival("x") == 100.0
    detector.heartbeat("x", 99.0)  # from the past: ignored
    assert detector.last_arrival("x") == 100.0
    assert "x" in detector
    assert len(detector) == 1
    detector.forget("x")
    assert "x" not in detector
    with pytest.raises(KeyError):
        detector.phi("x", 0.0)


@pytest.mark.parametrize(
    "kwargs", [{"interval": 0}, {"interval": 1, "threshold": 0}, {"interval": 1, "window": 0}]
)
def test_rejects_nonsense(kwargs):
    with pytest.raises(ValueError, match="must be"):
        FailureDetector(**kwargs)
