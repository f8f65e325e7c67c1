"""A sweep as it runs: Locust's load shape that steps the load, and the controller that times the
steps, judges each on the SLOs and picks the next (harness/sweep.py).

Each step: the load changes (MARGIN_S ahead, time for the workers to hear of it), its warm-up
(`load.warmup`) passes, then its measured window (`step_time`). The load stays at the step's
level until every request of the window has ended and been reported (harness/sweep_steps.py),
at most the request time limit plus two report intervals; then the step is judged and the next
one begins. Rate steps change an open loop's target rate (on every worker: the master's new
split carries the rates); user steps are the shape's user counts. When the search is over the
shape ends the test, as Locust's shapes do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from locust import LoadTestShape
from locust import log as locust_log
from locust.runners import WORKER_REPORT_INTERVAL

from harness.cluster_arrivals import MARGIN_S
from harness.failures import RETRY_AFTER_MAX_S
from harness.intervals import quantile_intervals
from harness.results import Interval, StepQuantiles, SweepResult, SweepStep
from harness.scenario import Scenario
from harness.slo import evaluate_groups
from harness.stats import LabelStats
from harness.summary import sweep_conclusion
from harness.sweep import Sweep, SweepSearch
from harness.sweep_steps import StepBook
from harness.timing import OVERLOADED, RATE_LIMITED

logger = logging.getLogger("harness.sweep")

SETTLE_SLACK_S = 2 * WORKER_REPORT_INTERVAL  # the last report of a step's requests comes within it
MIN_WARMUP_S = 1  # from a load change to the step's window: the change reaches every worker


def longest_request_s(scenario: Scenario) -> float:
    """The longest a request may take, its retries and their waits included."""
    longest = 0.0
    for prompt in scenario.prompts:
        timeout_s = prompt.timeout_s or scenario.timeouts.total_s
        retries = scenario.retries_for(prompt)
        more = retries.max if retries is not None else 0
        wait_s = max(retries.max_wait_s, RETRY_AFTER_MAX_S if retries.wait_retry_after else 0.0) if retries is not None else 0.0
        longest = max(longest, (1 + more) * timeout_s + more * wait_s)
    return longest


@dataclass
class _Step:
    index: int
    value: float
    started_at: float
    measured_from: float
    measured_until: float


@dataclass
class SweepHooks:
    """What the controller needs from the run it steps (set by the session at each test start)."""

    book: Callable[[], StepBook | None]  # the run's steps; None before the run exists
    arrivals_start: Callable[[], float | None]  # an open loop's start (epoch s); None before it
    set_rate: Callable[[float, float], None]  # from (epoch s) on, the cluster's target rate
    announce: Callable[[int, float, float], None]  # a step's window, to the workers
    sources: Callable[[], list[str]]  # the workers whose reports a step waits for
    idle: Callable[[float], bool]  # no request in flight anywhere, as known since then (epoch s)


class SweepController:
    def __init__(self, scenario: Scenario, hooks: SweepHooks) -> None:
        assert scenario.sweep is not None
        self.scenario = scenario
        self.sweep: Sweep = scenario.sweep
        self.hooks = hooks
        self.search = SweepSearch(self.sweep)
        self.steps: list[SweepStep] = []
        self.current: _Step | None = None
        self.resting_since: float | None = None  # after a breach: no load until the service is idle
        self.done = False
        self.failure: str | None = None  # the error that stopped the sweep (a bug)
        self._settle_s = longest_request_s(scenario) + SETTLE_SLACK_S
        self._book: StepBook | None = None  # the run's steps, once it exists

    # --- the shape's tick ------------------------------------------------------------------
    def tick(self) -> tuple[int, float] | None:
        """Advance the sweep; the users Locust should run now (None: the sweep is over). An error
        ends the sweep and the test (a run left at its last load would go on until stopped by
        hand) and fails the run as a crash of the harness."""
        if self.done:
            return None
        try:
            return self._advance()
        except Exception as exc:
            logger.exception("the sweep failed: the test stops")
            locust_log.unhandled_greenlet_exception = True
            self.done, self.failure = True, f"{type(exc).__name__}: {exc}"
            return None

    def _advance(self) -> tuple[int, float] | None:
        now = time.time()
        step, book = self.current, self.hooks.book()
        self._book = book or self._book
        if book is not None and step is None and self._may_begin():
            self._begin(book, self.search.next_value(), now)
        elif self.resting_since is not None:
            if book is not None and self._rested(now):
                self._begin(book, self.search.next_value(), now)
        elif book is not None and step is not None and now >= step.measured_until and self._settled(book, step, now):
            judged = self._judged(book, step)
            self.steps.append(judged)
            book.forget(step.index)
            value = self.search.next_value()
            if value is None:
                self.done = True
                logger.info("sweep over: %s", self.conclusion())
                return None
            if judged.passed or self.sweep.kind == "users":
                self._begin(book, value, now)
            else:
                self._rest(now)
        return self._users()

    def _rest(self, now: float) -> None:
        """After a breach in an open loop: no arrivals until every request in flight has ended, so
        that the next (lower) step does not inherit the queue the breach built."""
        self.resting_since = now + MARGIN_S
        self.hooks.set_rate(self.resting_since, 0.0)
        logger.info("sweep: no arrivals until the requests in flight have ended")

    def _rested(self, now: float) -> bool:
        assert self.resting_since is not None
        if now < self.resting_since or not (self.hooks.idle(self.resting_since) or now >= self.resting_since + self._settle_s):
            return False
        self.resting_since = None
        return True

    def phase(self) -> dict[str, Any] | None:
        """The step under way: its index, load and phase (warm-up, measuring, settling, resting)."""
        step, now = self.current, time.time()
        if self.done or step is None:
            return None
        if self.resting_since is not None:
            phase = "resting"  # after a breach: until the requests in flight have ended
        elif now < step.measured_from:
            phase = "warm-up"
        elif now < step.measured_until:
            phase = "measuring"
        else:
            phase = "settling"  # the window is over; its last requests are ending
        return {
            "index": step.index,
            "label": self.sweep.describe(step.value),
            "phase": phase,
            "bisection": self.search.is_bisection(step.value),
        }

    def _may_begin(self) -> bool:
        return self.sweep.kind == "users" or self.hooks.arrivals_start() is not None

    def _users(self) -> tuple[int, float]:
        load = self.scenario.load
        if self.sweep.kind == "rates":
            assert load is not None
            return load.in_flight_limit, float(load.in_flight_limit)
        return self._users_at(self.current.value if self.current is not None else self.sweep.values[0])

    def _users_at(self, value: float) -> tuple[int, float]:
        """A user step's users and spawn rate (the load's, else all of them within a second)."""
        load, users = self.scenario.load, int(value)
        return users, float(load.spawn_rate if load is not None and load.spawn_rate else max(users, 1))

    def _begin(self, book: StepBook, value: float | None, now: float) -> None:
        """The next step: its load from MARGIN_S ahead (after the users' ramp, in a closed loop),
        its window after the warm-up (at least a second: the change reaches every worker)."""
        assert value is not None, "a sweep has a first step"
        load = self.scenario.load
        warmup_s = max(load.warmup_s if load is not None else 0, MIN_WARMUP_S)
        start = now + MARGIN_S + self._ramp_s(value)
        index = len(self.steps)
        step = self.current = _Step(index, value, start, start + warmup_s, start + warmup_s + self.sweep.step_s)
        book.open(index, step.measured_from, step.measured_until)
        self.hooks.announce(index, step.measured_from, step.measured_until)
        if self.sweep.kind == "rates" and index > 0:
            self.hooks.set_rate(start, value)
        kind = "bisection" if self.search.is_bisection(value) else "listed"
        logger.info(
            "sweep step %d (%s): %s, measured from %.0f s to %.0f s",
            index,
            kind,
            self.sweep.describe(value),
            warmup_s,
            warmup_s + self.sweep.step_s,
        )

    def _ramp_s(self, users: float) -> float:
        """A closed loop's time to spawn or stop the users from the step before to `users`."""
        if self.sweep.kind != "users":
            return 0.0
        before = self.current.value if self.current is not None else 0.0
        return abs(users - before) / self._users_at(users)[1]

    def _settled(self, book: StepBook, step: _Step, now: float) -> bool:
        if book.settled(step.index, self.hooks.sources()):
            return True
        if now < step.measured_until + self._settle_s:
            return False
        logger.warning("sweep step %d: %d request(s) still in flight; judged without them", step.index, book.unsettled(step.index))
        return True

    # --- judging a step --------------------------------------------------------------------
    def _judged(self, book: StepBook, step: _Step) -> SweepStep:
        stats = book.figures(step.index)
        total = stats.total()
        totals = total.figures()
        models = {model: group.figures() for model, group in stats.by_model().items()}
        slos = evaluate_groups(self.scenario.slos, totals, models)
        span_s = step.measured_until - step.measured_from
        open_loop = self.sweep.kind == "rates"
        scheduled, dropped = book.arrivals(step.index) if open_loop else (None, None)
        breaches = [f"SLO breached: {r.label} (value {r.value})" for r in slos if not r.passed]
        floor = self.scenario.load.achieved_floor if self.scenario.load is not None else 1.0
        if scheduled and dropped is not None and dropped > (1 - floor) * scheduled:
            breaches.append(f"{dropped} of {scheduled} arrivals dropped (every one of max_in_flight busy): above 1 - min_achieved")
        if not totals.judged:
            breaches.append("no request ended in the window")
        result = SweepStep(
            index=step.index,
            value=step.value,
            label=self.sweep.describe(step.value),
            bisection=self.search.is_bisection(step.value),
            started_at=step.started_at,
            measured_from=step.measured_from,
            measured_until=step.measured_until,
            requests=totals.requests,
            unsettled=book.unsettled(step.index),
            offered_per_s=(scheduled if scheduled is not None else totals.requests) / span_s,
            achieved_per_s=totals.count("ok") / span_s,
            scheduled=scheduled,
            dropped=dropped,
            ttft_ms=_quantiles(total, "ttft"),
            latency_ms=_quantiles(total, "latency"),
            error_share=totals.error_rate,
            rate_limited_share=totals.share(RATE_LIMITED),
            overloaded_share=totals.share(OVERLOADED),
            output_tokens_per_s=totals.output_tokens / span_s,
            slos=slos,
            passed=not breaches,
            breaches=breaches,
        )
        self.search.record(step.value, result.passed)
        verdict = "met the SLOs" if result.passed else "; ".join(breaches)
        logger.info("sweep step %d (%s): %d requests, %s", step.index, result.label, result.requests, verdict)
        return result

    # --- the result --------------------------------------------------------------------------
    def conclusion(self) -> str:
        return sweep_conclusion(self.result())

    def result(self, stopped: bool = False) -> SweepResult:
        """The sweep so far; `stopped`: the run has ended (a search not over was cut short)."""
        sweep, good = self.sweep, self.search.last_good
        requests = sweep.kind == "rates" and sweep.unit == "requests"
        return SweepResult(
            kind=sweep.kind,
            unit=sweep.unit,
            step_time_s=sweep.step_s,
            resolution=sweep.resolution_share,
            state="failed" if self.failure else "done" if self.done else "stopped" if stopped else "running",
            steps=[step.model_copy(update={"late": self._book.late[step.index]}) for step in self.steps] if self._book else [],
            sustainable=good,
            sustainable_label=sweep.describe(good) if good is not None else None,
            first_bad=self.search.first_bad,
            sustainable_rate_rps=good if requests else None,
            sustainable_tokens_per_min=good * 60 if good is not None and sweep.kind == "rates" and not requests else None,
            sustainable_users=int(good) if good is not None and sweep.kind == "users" else None,
        )


def _quantiles(group: LabelStats, name: str) -> StepQuantiles | None:
    """p50, p95 and p99 with intervals, as the SLOs read them: from the scheduled time in an open loop."""
    histogram = getattr(group.scheduled, name) if group.scheduled is not None else getattr(group, name)
    if not histogram.get_total_count():
        return None
    at = quantile_intervals(histogram, (50, 95, 99))
    return StepQuantiles(**{f"p{q}": Interval(low=at[q][0], value=at[q][1], high=at[q][2]) for q in (50, 95, 99)})


class SweepShape(LoadTestShape):
    """The sweep as Locust's load shape: Locust ticks it every second, on a master or alone."""

    def __init__(self, make_controller: Callable[[], SweepController]) -> None:
        super().__init__()
        self.make_controller = make_controller
        self.controller = make_controller()

    def reset_time(self) -> None:
        """A new test starts (Locust calls this as it starts the shape): a new search."""
        super().reset_time()
        self.controller = self.make_controller()

    def tick(self) -> tuple[int, float] | None:
        return self.controller.tick()
