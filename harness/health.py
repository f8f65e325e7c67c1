"""The load generator's own health: CPU use and event-loop lag, sampled while it runs.

Timings taken while the client's CPU is saturated are wrong: a response byte waits for the
busy process before it is timestamped. A ticker greenlet measures how late the event loop
wakes it (loop lag); the process's CPU time gives its CPU use. Every interval a sample is
kept, written as a `harness_health` point, and compared with the thresholds: a saturated
process is reported once per episode in the console and marks the run as unreliable.

A run may last hours: the figures are running aggregates, and the timeline the summary keeps
is bounded (`TIMELINE_MAX` samples; when full, every other one is dropped and from then on
one sample in twice as many is kept).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
import psutil

from harness.results import HealthSample

logger = logging.getLogger("harness.health")

TICK_S = 0.02
INTERVAL_S = 2.0
DEFAULT_MAX_CPU_PERCENT = 90.0
DEFAULT_MAX_LOOP_LAG_MS = 20.0
# one saturated sample can be a hiccup of the host (CPU steal on a shared VM); the run is
# unreliable when saturation recurs: in at least 2 samples and 10 % of them
UNRELIABLE_MIN_SAMPLES = 2
UNRELIABLE_MIN_SHARE = 0.10
TIMELINE_MAX = 720  # one sample every 2 s for 24 minutes, then thinner


class Timeline:
    """A bounded, evenly thinned list of samples."""

    def __init__(self, max_samples: int = TIMELINE_MAX) -> None:
        self.max_samples = max_samples
        self.samples: list[HealthSample] = []
        self.stride = 1  # one sample kept out of `stride`
        self._seen = 0

    def add(self, sample: HealthSample) -> None:
        self._seen += 1
        if (self._seen - 1) % self.stride:
            return
        self.samples.append(sample)
        if len(self.samples) >= self.max_samples:
            self.samples = self.samples[::2]
            self.stride *= 2


@dataclass(frozen=True)
class Thresholds:
    max_cpu_percent: float = DEFAULT_MAX_CPU_PERCENT
    max_loop_lag_ms: float = DEFAULT_MAX_LOOP_LAG_MS


@dataclass
class Gauges:
    """What the monitor reads from the rest of the process at each sample."""

    users: Callable[[], int]
    in_flight: Callable[[], int]
    points_written: Callable[[], int]
    points_dropped: Callable[[], int]
    buffer_size: Callable[[], int]


class HealthMonitor:
    def __init__(
        self,
        gauges: Gauges,
        on_sample: Callable[[HealthSample], None],
        thresholds: Thresholds = Thresholds(),
        interval_s: float = INTERVAL_S,
    ) -> None:
        self.gauges = gauges
        self.on_sample = on_sample
        self.thresholds = thresholds
        self.interval_s = interval_s
        self.timeline = Timeline()
        self.latest: HealthSample | None = None
        self.samples = 0
        self.saturated_samples = 0
        self._cpu_sum = 0.0
        self._cpu_max = self._lag_max = self._lag_p99_max = 0.0
        self._lags_ms: list[float] = []
        self._process = psutil.Process()
        self._greenlets: list[gevent.Greenlet] = []
        self._saturated_episode = False

    @property
    def unreliable(self) -> bool:
        saturated = self.saturated_samples
        return saturated >= UNRELIABLE_MIN_SAMPLES and saturated >= UNRELIABLE_MIN_SHARE * self.samples

    def start(self) -> None:
        self._cpu_mark = (self._cpu_seconds(), time.monotonic())
        self._greenlets = [gevent.spawn(self._tick), gevent.spawn(self._sample_loop)]

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        self._greenlets = []
        if time.monotonic() - self._cpu_mark[1] >= self.interval_s / 4:
            self.sample()  # the last partial interval counts too, unless too short to mean much

    def _cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        return times.user + times.system

    def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            gevent.sleep(TICK_S)
            self._lags_ms.append(max(0.0, (time.perf_counter() - before - TICK_S) * 1000))

    def _sample_loop(self) -> None:
        while True:
            gevent.sleep(self.interval_s)
            self.sample()

    def sample(self) -> HealthSample:
        cpu_now, wall_now = self._cpu_seconds(), time.monotonic()
        cpu_before, wall_before = self._cpu_mark
        self._cpu_mark = (cpu_now, wall_now)
        cpu_percent = 100.0 * (cpu_now - cpu_before) / max(wall_now - wall_before, 1e-6)
        lags, self._lags_ms = sorted(self._lags_ms), []
        lag_max = lags[-1] if lags else 0.0
        lag_p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else 0.0
        saturated = cpu_percent >= self.thresholds.max_cpu_percent or lag_p99 >= self.thresholds.max_loop_lag_ms
        g = self.gauges
        sample = HealthSample(
            at=time.time(),
            cpu_percent=round(cpu_percent, 1),
            loop_lag_max_ms=round(lag_max, 2),
            loop_lag_p99_ms=round(lag_p99, 2),
            users=g.users(),
            in_flight=g.in_flight(),
            points_written=g.points_written(),
            points_dropped=g.points_dropped(),
            buffer_size=g.buffer_size(),
            saturated=saturated,
        )
        self._keep(sample)
        self._report(sample)
        self.on_sample(sample)
        return sample

    def _keep(self, sample: HealthSample) -> None:
        self.latest = sample
        self.timeline.add(sample)
        self.samples += 1
        self.saturated_samples += sample.saturated
        self._cpu_sum += sample.cpu_percent
        self._cpu_max = max(self._cpu_max, sample.cpu_percent)
        self._lag_max = max(self._lag_max, sample.loop_lag_max_ms)
        self._lag_p99_max = max(self._lag_p99_max, sample.loop_lag_p99_ms)

    def _report(self, sample: HealthSample) -> None:
        if sample.saturated and not self._saturated_episode:
            logger.warning(
                "load generator saturated (CPU %.0f%%, event-loop lag p99 %.1f ms; limits %.0f%%, %.0f ms): "
                "timings taken now are late; add workers or lower the users per process",
                sample.cpu_percent,
                sample.loop_lag_p99_ms,
                self.thresholds.max_cpu_percent,
                self.thresholds.max_loop_lag_ms,
            )
        elif not sample.saturated and self._saturated_episode:
            logger.warning("load generator no longer saturated (CPU %.0f%%)", sample.cpu_percent)
        self._saturated_episode = sample.saturated

    def summary(self) -> dict[str, float | int | bool]:
        return {
            "samples": self.samples,
            "saturated_samples": self.saturated_samples,
            "unreliable": self.unreliable,
            "cpu_percent_max": self._cpu_max,
            "cpu_percent_mean": round(self._cpu_sum / self.samples, 1) if self.samples else 0.0,
            "loop_lag_max_ms": self._lag_max,
            "loop_lag_p99_max_ms": self._lag_p99_max,
            "max_cpu_percent_limit": self.thresholds.max_cpu_percent,
            "max_loop_lag_ms_limit": self.thresholds.max_loop_lag_ms,
        }
