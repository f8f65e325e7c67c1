"""When requests arrive in an open loop: the cluster's target rate over time, and each worker's
share of the arrivals.

The rate r(t) is piecewise linear: the load's `rate`, then its `stages`, each ramping linearly
from the value before it. Arrivals are placed by time rescaling: with D(t), the demand the rate
asks for up to t (the integral of r), an arrival at cumulative demand x happens at D⁻¹(x).
- constant arrivals: x = 0, 1, 2, ... (evenly spaced at a steady rate);
- Poisson arrivals: x grows by exponential steps of mean 1 (a Poisson process of rate r(t)).
A worker i of n takes D/n: its own Poisson process at r(t)/n, and the n of them sum to one at
r(t); constant arrivals at x = i/n, i/n + 1, ... in its own demand, so that the cluster's are
evenly spaced, each worker offset in phase. With a token rate each arrival's demand is its
tokens instead of 1. When workers join or leave, each starts a new schedule at the moment of
the new split (the demand up to then is spent): Poisson processes have no memory, and constant
arrivals continue at the next slot of the new arrangement.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from harness.load import Load

Arrival = Literal["poisson", "constant"]


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float  # math.inf for the last segment of a steady rate
    from_per_s: float
    to_per_s: float
    demand_before: float  # D(start_s)

    def rate_at(self, t: float) -> float:
        if self.end_s == math.inf:
            return self.from_per_s
        return self.from_per_s + (self.to_per_s - self.from_per_s) * (t - self.start_s) / (self.end_s - self.start_s)

    def demand_at(self, t: float) -> float:
        """D(t) for t inside this segment: the trapezoid under the ramp."""
        return self.demand_before + (t - self.start_s) * (self.from_per_s + self.rate_at(t)) / 2

    @property
    def demand_after(self) -> float:
        """D(end_s): math.inf after a steady rate above 0, which never ends."""
        if self.end_s == math.inf:
            return math.inf if self.from_per_s > 0 else self.demand_before
        return self.demand_at(self.end_s)

    def time_of(self, demand: float) -> float:
        """The t in this segment at which D(t) = demand (which lies inside it)."""
        dx = demand - self.demand_before
        if dx <= 0:
            return self.start_s
        r0 = self.from_per_s
        slope = 0.0 if self.end_s == math.inf else (self.to_per_s - r0) / (self.end_s - self.start_s)
        if slope == 0.0:
            return self.start_s + dx / r0
        # r0*tau + slope/2*tau^2 = dx, in the form that stays exact when slope is small
        return self.start_s + 2 * dx / (r0 + math.sqrt(max(0.0, r0 * r0 + 2 * slope * dx)))


class RateProfile:
    """The cluster's target rate over the run: steady, or ramping through stages (held after
    the last one)."""

    def __init__(self, start_per_s: float, stages: Sequence[tuple[float, float]] = ()) -> None:
        """`stages`: (duration in s, rate at its end), each ramping from the rate before it."""
        self.segments: list[Segment] = []
        t, rate, demand = 0.0, start_per_s, 0.0
        for duration_s, to_per_s in stages:
            segment = Segment(t, t + duration_s, rate, to_per_s, demand)
            self.segments.append(segment)
            t, rate, demand = segment.end_s, to_per_s, segment.demand_at(segment.end_s)
        self.segments.append(Segment(t, math.inf, rate, rate, demand))

    @classmethod
    def of(cls, load: Load, changes: Sequence[Sequence[float]] = ()) -> RateProfile:
        """The load's rate over time, with a sweep's `changes` ((from s, per s) each, in order)."""
        start = load.rate.per_s if load.rate is not None else 0.0
        profile = cls(start, [(stage.duration_s, stage.rate.per_s if stage.rate else 0.0) for stage in load.stages or ()])
        for at_s, per_s in changes:
            profile = profile.then(at_s, per_s)
        return profile

    def then(self, at_s: float, per_s: float) -> RateProfile:
        """This profile up to `at_s`, then a steady `per_s` (a sweep's next step). Only after
        the last stage: the profile's last segment is steady."""
        last = self.segments[-1]
        if at_s < last.start_s:
            raise ValueError(f"a rate change at {at_s} s, before the last one ({last.start_s} s)")
        changed = RateProfile(0.0)
        changed.segments = self.segments[:-1]
        if at_s > last.start_s:
            changed.segments.append(Segment(last.start_s, at_s, last.from_per_s, last.from_per_s, last.demand_before))
        changed.segments.append(Segment(at_s, math.inf, per_s, per_s, self.demand_at(at_s)))
        return changed

    def rate_at(self, t: float) -> float:
        return self._segment_at(t).rate_at(t)

    def demand_at(self, t: float) -> float:
        """D(t): the units (requests or tokens) the rate asks for from 0 to t."""
        return self._segment_at(t).demand_at(t)

    def time_of(self, demand: float) -> float:
        """D⁻¹: the earliest time the rate has asked for `demand` units (math.inf: never)."""
        for segment in self.segments:
            if segment.demand_after >= demand and (segment.from_per_s > 0 or segment.to_per_s > 0):
                return segment.time_of(demand)
        return math.inf

    def _segment_at(self, t: float) -> Segment:
        for segment in self.segments:
            if t < segment.end_s:
                return segment
        return self.segments[-1]


def span_between(start: float, now: float, until_s: float, unit: float = 1.0) -> float:
    """The seconds from `start` to `now` (times in `unit`s of a second), at most `until_s`."""
    return max(min((now - start) / unit, until_s), 0.0)


class WorkerArrivals:
    """One worker's arrival times (seconds since the run's common start), as worker `index` of
    `count`, from `since_s` on."""

    def __init__(self, profile: RateProfile, arrival: Arrival, index: int, count: int, rng: random.Random, since_s: float = 0.0) -> None:
        if not 0 <= index < count:
            raise ValueError(f"worker index {index} of {count}")
        self.profile, self.arrival, self.index, self.count, self.rng = profile, arrival, index, count, rng
        self._position = profile.demand_at(since_s) / count  # in this worker's demand: D/count
        self._first = True

    def next(self, demand: float = 1.0) -> float:
        """The time of the next arrival, which asks for `demand` units (1 request, or its tokens)."""
        if self.arrival == "poisson":
            self._position += demand * self.rng.expovariate(1.0)
            at = self._position
        else:
            if self._first:  # the next slot of this worker's phase: i/n, i/n + 1, ... in units of `demand`
                phase = self.index / self.count
                self._position = demand * (phase + math.ceil(self._position / demand - phase - 1e-12))
                self._first = False
            at = self._position
            self._position += demand
        return self.profile.time_of(at * self.count)
