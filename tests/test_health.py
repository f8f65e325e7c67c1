"""The load generator's health monitor: exact aggregates and a bounded timeline on long runs."""

from __future__ import annotations

import itertools

from harness.health import Gauges, HealthMonitor, Timeline
from harness.results import HealthSample


def sample(index: int, saturated: bool = False) -> HealthSample:
    return HealthSample(
        at=float(index),
        cpu_percent=float(index % 100),
        loop_lag_max_ms=1.0,
        loop_lag_p99_ms=0.5,
        users=1,
        in_flight=0,
        points_written=0,
        points_dropped=0,
        buffer_size=0,
        saturated=saturated,
    )


def test_the_timeline_stays_bounded_and_evenly_thinned() -> None:
    timeline = Timeline(max_samples=8)
    for index in range(1000):
        timeline.add(sample(index))
        assert len(timeline.samples) < 8
    times = [s.at for s in timeline.samples]
    steps = {b - a for a, b in itertools.pairwise(times)}
    assert times[0] == 0 and steps == {float(timeline.stride)} and times[-1] > 1000 - 2 * timeline.stride


def test_the_figures_count_every_sample_whatever_the_timeline_keeps() -> None:
    zero = lambda: 0  # noqa: E731
    monitor = HealthMonitor(Gauges(zero, zero, zero, zero, zero), lambda s: None)
    for index in range(3000):
        monitor._keep(sample(index, saturated=index % 10 == 0))
    figures = monitor.summary()
    assert figures["samples"] == 3000 and figures["saturated_samples"] == 300 and monitor.unreliable
    assert figures["cpu_percent_max"] == 99.0 and figures["cpu_percent_mean"] == 49.5
    assert monitor.latest is not None and monitor.latest.at == 2999.0 and len(monitor.timeline.samples) < 720
