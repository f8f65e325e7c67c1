"""A sweep's steps as each process books them: which step a request belongs to, the figures of
each step, and when a step's requests have all ended.

A step's measured window is a span of wall-clock time, [from, until), decided by the sweep's
controller (harness/sweep_run.py) ahead of its start and sent to every worker. A request
belongs to the step whose window holds the time it was due (in an open loop) or sent; requests
in a step's warm-up or after its window belong to none (they stay in the run's totals). A
step's figures are kept per model only (what the SLOs judge), and dropped once it is judged.
Each process counts the requests of each step still in flight; a worker reports its steps'
figures as deltas with those counts, and a master adds them up. A step is settled when every
request that started in its window has ended and been counted: none in flight anywhere, in
reports made after the window closed.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harness.stats import RunStats
from harness.timing import TimingRecord

NS = 1_000_000_000
ALL = "*"  # a step's figures are kept per model: prompt and mode are all of them


@dataclass(frozen=True)
class StepWindow:
    step: int
    from_ns: int  # wall clock, time.time_ns()
    until_ns: int


@dataclass
class _Source:
    """What a master knows of one worker's steps, from its last report."""

    reported_ns: int = 0
    in_flight: dict[int, int] = field(default_factory=dict)
    scheduled: dict[int, int] = field(default_factory=dict)
    dropped: dict[int, int] = field(default_factory=dict)


def _counts(data: dict[str, int]) -> dict[int, int]:
    return {int(step): n for step, n in data.items()}


class StepBook:
    def __init__(self) -> None:
        self.windows: list[StepWindow] = []
        self.stats: dict[int, RunStats] = {}
        self.in_flight: Counter[int] = Counter()
        self.dropped: Counter[int] = Counter()  # arrivals of the step's window that found every slot busy
        self.scheduled: Counter[int] = Counter()  # arrivals due in the step's window
        self._sources: dict[str, _Source] = {}  # a master's workers
        self.judged: set[int] = set()  # steps whose figures are forgotten (the controller keeps its result)
        self.late: Counter[int] = Counter()  # attempts that ended after their step was judged (not in its figures)

    def open(self, step: int, from_wall: float, until_wall: float) -> None:
        """Step `step` measures from `from_wall` to `until_wall` (epoch seconds)."""
        if any(window.step == step for window in self.windows):
            return
        self.windows.append(StepWindow(step, int(from_wall * NS), int(until_wall * NS)))

    def step_at(self, wall_ns: int) -> int | None:
        """The step whose window holds this time, if any (the latest windows first)."""
        for window in reversed(self.windows):
            if window.from_ns <= wall_ns < window.until_ns:
                return window.step
            if window.until_ns <= wall_ns:
                return None
        return None

    # --- a process that sends requests -----------------------------------------------
    def start(self, record: TimingRecord, wall_ns: int, previous: TimingRecord | None = None) -> None:
        """A request about to be sent, due (or sent) at `wall_ns`; a retry (`previous`: its
        request's attempt before) belongs to its request's step. A request is in flight from its
        first attempt to its last (the waits between them included)."""
        if previous is not None:
            record.step = previous.step
            return
        step = record.step = self.step_at(wall_ns)
        if step is not None:
            self.in_flight[step] += 1

    def add(self, record: TimingRecord) -> None:
        """An attempt of a step's request ended: into that step's figures (per model); its last
        attempt ends the request. One that ends after its step was judged is counted as late."""
        step = record.step
        if step is None:
            return
        if not record.retried:
            self.in_flight[step] -= 1
        if step in self.judged:
            self.late[step] += 1
        else:
            self._figures(step).add(record, (record.model, ALL, ALL))  # per model: what the SLOs judge

    def abandon(self, record: TimingRecord) -> None:
        """The run stopped while `record`'s request waited to be tried again: it ends there."""
        if record.step is not None:
            self.in_flight[record.step] -= 1

    def arrival(self, scheduled_ns: int, dropped: bool) -> None:
        """An open loop's arrival (due at `scheduled_ns`, perf_counter): handed to a user or
        dropped, booked by the time it was due, as its request is."""
        step = self.step_at(time.time_ns() - (time.perf_counter_ns() - scheduled_ns))
        if step is not None:
            self.scheduled[step] += 1
            self.dropped[step] += dropped

    def report(self) -> dict[str, Any]:
        """A worker's report: each step's figures since the last report (then dropped here once
        the step can get no more), and its counts now."""
        delta = {str(step): stats.encode_delta() for step, stats in self.stats.items()}
        current = {window.step for window in self.windows[-2:]} | {step for step, n in self.in_flight.items() if n}
        self.stats = {step: stats for step, stats in self.stats.items() if step in current}
        return {
            "at_ns": time.time_ns(),
            "stats": delta,
            "in_flight": {str(step): n for step, n in self.in_flight.items() if n},
            "scheduled": {str(step): n for step, n in self.scheduled.items()},
            "dropped": {str(step): n for step, n in self.dropped.items()},
        }

    # --- a master --------------------------------------------------------------------
    def merge(self, source: str, report: dict[str, Any]) -> None:
        """A worker's report: its steps' figures added, its counts kept as they are now."""
        for step, encoded in report["stats"].items():
            delta = RunStats.decode(encoded)
            if int(step) in self.judged:
                self.late[int(step)] += delta.requests
            else:
                self._figures(int(step)).merge(delta)
        self._sources[source] = _Source(
            report["at_ns"], _counts(report["in_flight"]), _counts(report["scheduled"]), _counts(report["dropped"])
        )

    def settled(self, step: int, sources: list[str]) -> bool:
        """Have all requests of `step` ended and been counted: here, and in a report made after
        its window closed by each of `sources` (the workers still working)?"""
        window = next(window for window in self.windows if window.step == step)
        if time.time_ns() < window.until_ns or self.in_flight[step]:
            return False
        for source in sources:
            state = self._sources.get(source)
            if state is None or state.reported_ns < window.until_ns or state.in_flight.get(step, 0):
                return False
        return True

    def unsettled(self, step: int) -> int:
        """Requests of `step` still in flight, as last known (a lost worker's stay so)."""
        return self.in_flight[step] + sum(state.in_flight.get(step, 0) for state in self._sources.values())

    def arrivals(self, step: int) -> tuple[int, int]:
        """(scheduled, dropped) arrivals of `step`, here and on every worker."""
        sources = self._sources.values()
        scheduled = self.scheduled[step] + sum(state.scheduled.get(step, 0) for state in sources)
        dropped = self.dropped[step] + sum(state.dropped.get(step, 0) for state in sources)
        return scheduled, dropped

    def figures(self, step: int) -> RunStats:
        """A step's figures, one group per model."""
        return self._figures(step)

    def forget(self, step: int) -> None:
        """The step is judged: its figures are dropped (a long sweep's memory stays flat); what
        still comes for it counts in its in-flight figures only."""
        self.judged.add(step)
        self.stats.pop(step, None)

    def _figures(self, step: int) -> RunStats:
        stats = self.stats.get(step)
        if stats is None:
            stats = self.stats[step] = RunStats()
        return stats
