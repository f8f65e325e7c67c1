"""Arrival schedules against their definitions: the demand and its inverse, constant arrivals
evenly spaced across workers, Poisson arrivals whose sum over workers is Poisson at the total
rate (count within 5 sigma, interarrivals by Kolmogorov-Smirnov), ramps, token demands and a
re-split when a worker leaves."""

from __future__ import annotations

import heapq
import itertools
import math
import random

import pytest

from harness.arrivals import RateProfile, WorkerArrivals


def times(arrivals: WorkerArrivals, until_s: float, demand: float = 1.0) -> list[float]:
    out = []
    while (t := arrivals.next(demand)) < until_s:
        out.append(t)
    return out


def cluster(profile: RateProfile, kind: str, workers: int, until_s: float, seed: int = 1) -> list[float]:
    per_worker = [times(WorkerArrivals(profile, kind, i, workers, random.Random(seed * 100 + i)), until_s) for i in range(workers)]  # type: ignore[arg-type]
    return list(heapq.merge(*per_worker))


def test_the_demand_and_its_inverse_on_ramps_up_and_down() -> None:
    profile = RateProfile(0.0, [(10, 10.0), (5, 10.0), (10, 2.0), (5, 0.0)])  # 0 -> 10/s, hold, 10 -> 2/s, 2 -> 0/s
    assert profile.demand_at(10) == pytest.approx(50) and profile.demand_at(15) == pytest.approx(100)
    assert profile.demand_at(25) == pytest.approx(160) and profile.demand_at(30) == pytest.approx(165)
    for t in (0.0, 0.5, 3.3, 10.0, 12.0, 17.5, 24.9, 27.0, 29.99):
        assert profile.time_of(profile.demand_at(t)) == pytest.approx(t, abs=1e-9)
    assert profile.time_of(165.5) == math.inf  # the rate ended at 0: nothing more arrives
    assert profile.rate_at(5) == pytest.approx(5) and profile.rate_at(20) == pytest.approx(6)


def test_constant_arrivals_are_evenly_spaced_across_the_cluster() -> None:
    profile = RateProfile(30.0)
    merged = cluster(profile, "constant", 3, until_s=20)
    assert len(merged) == 600
    gaps = [b - a for a, b in itertools.pairwise(merged)]
    assert min(gaps) == pytest.approx(1 / 30) and max(gaps) == pytest.approx(1 / 30)
    first = [WorkerArrivals(profile, "constant", i, 3, random.Random(0)).next() for i in range(3)]
    assert first == pytest.approx([0, 1 / 30, 2 / 30])  # each worker offset in phase


def test_poisson_arrivals_of_two_workers_sum_to_poisson_at_the_total_rate() -> None:
    rate, span = 30.0, 20.0
    for seed in range(1, 6):
        merged = cluster(RateProfile(rate), "poisson", 2, until_s=span, seed=seed)
        expected = rate * span
        assert abs(len(merged) - expected) < 5 * math.sqrt(expected)
        gaps = sorted(b - a for a, b in itertools.pairwise(merged))
        n = len(gaps)
        ks = max(max((i + 1) / n - cdf, cdf - i / n) for i, cdf in enumerate(1 - math.exp(-rate * g) for g in gaps))
        assert ks < 1.95 / math.sqrt(n), (seed, ks)  # Kolmogorov-Smirnov at the 0.1 % level


def test_a_ramp_delivers_its_integral() -> None:
    profile = RateProfile(0.0, [(10, 10.0)])  # 0 -> 10/s over 10 s: 50 requests
    arrivals = cluster(profile, "constant", 2, until_s=10)
    assert len(arrivals) == 50
    assert sum(1 for t in arrivals if t < 5) == pytest.approx(12.5, abs=1)  # a quarter of the area in the first half


def test_a_token_rate_paces_by_each_arrival_s_tokens() -> None:
    profile = RateProfile(400_000 / 60)  # input tokens per second
    arrivals = WorkerArrivals(profile, "constant", 0, 1, random.Random(0))
    spaced = [arrivals.next(2000.0) for _ in range(4)]
    assert spaced == pytest.approx([0, 0.3, 0.6, 0.9])  # 2,000 tokens at 6,667 tokens/s
    assert arrivals.next(500.0) == pytest.approx(1.2) and arrivals.next(500.0) == pytest.approx(1.275)


def test_after_a_worker_leaves_the_other_takes_the_whole_rate_from_the_split() -> None:
    profile = RateProfile(10.0)
    before = [times(WorkerArrivals(profile, "constant", i, 2, random.Random(0)), until_s=5) for i in range(2)]
    after = times(WorkerArrivals(profile, "constant", 0, 1, random.Random(0), since_s=5.0), until_s=10)
    assert len(before[0]) + len(before[1]) == 50 and len(after) == 50
    assert after[0] == pytest.approx(5.0) and after[1] - after[0] == pytest.approx(0.1)


def test_a_worker_index_outside_the_cluster_is_refused() -> None:
    with pytest.raises(ValueError, match="worker index 2 of 2"):
        WorkerArrivals(RateProfile(1.0), "poisson", 2, 2, random.Random(0))
