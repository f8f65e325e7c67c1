"""The capacity sweep without processes: the scenario's `sweep` section and its checks, the search
(listed steps, then bisection to the resolution), `--sweep`'s steps and the options a sweep
refuses, the step changes of an open loop's target rate, the step book (windows, in-flight
counts, a master merging its workers' reports) and the controller driven on a fake clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness import slo, sweep_run, sweep_steps
from harness.arrivals import RateProfile, WorkerArrivals
from harness.cluster_arrivals import MARGIN_S
from harness.load_options import load_problem, with_overrides
from harness.options import SCENARIO_SWEEP
from harness.results import RegressionResult, Summary, load_summary
from harness.scenario import Scenario, ScenarioError, scenario_from_dict
from harness.sweep import Sweep, SweepSearch, parse_share
from harness.sweep_run import SweepController, SweepHooks
from harness.sweep_steps import NS, StepBook
from harness.timing import OK, OVERLOADED, RATE_LIMITED, TimingRecord

BASE: dict[str, Any] = {
    "name": "t",
    "models": ["m"],
    "prompts": [{"name": "p", "max_tokens": 5, "input_tokens": 10}],
    "slos": {"error_rate": 0.01},
}
OPEN = {"arrival": "constant", "max_in_flight": 7}
RATES = {"rates": ["2/s", "4/s", "8/s", "16/s"], "step_time": "10s"}
USERS = {"users": [5, 10, 20], "step_time": "10s"}


def scenario(sweep: dict[str, Any] | None = None, load: dict[str, Any] | None = None, **fields: Any) -> Scenario:
    data = {**BASE, **fields}
    if sweep is not None:
        data["sweep"] = sweep
    if load is not None:
        data["load"] = load
    return scenario_from_dict(data, source="x.yaml")


def problem(sweep: dict[str, Any] | None = None, load: dict[str, Any] | None = None) -> str:
    with pytest.raises(ScenarioError) as caught:
        scenario(sweep, load)
    return str(caught.value)


def swept(sweep: dict[str, Any]) -> Sweep:
    return Sweep.model_validate({"step_time": "10s", **sweep})


def search_until_over(search: SweepSearch, passes: Callable[[float], bool], most: int = 50) -> list[float]:
    """The values the search offers, each judged by `passes`, until it is over."""
    offered: list[float] = []
    while (value := search.next_value()) is not None:
        assert len(offered) < most, f"the search does not end: {offered}"
        offered.append(value)
        search.record(value, passes(value))
    return offered


def record(outcome: str = OK) -> TimingRecord:
    return TimingRecord(model="m", prompt="p", mode="stream", outcome=outcome, latency_ms=120.0, ttft_ms=40.0, first_content="text")


def at(seconds: float) -> int:
    """A wall-clock time in ns, as StepBook takes it."""
    return int(seconds * NS)


class Clock:
    """The `time` of the modules under test: wall-clock time that moves only when told."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now

    def time_ns(self) -> int:
        return at(self.now)

    def perf_counter_ns(self) -> int:
        """The monotonic clock, here the same as the wall clock."""
        return self.time_ns()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(1_000.0)
    monkeypatch.setattr(sweep_steps, "time", fake)
    monkeypatch.setattr(sweep_run, "time", fake)
    return fake


# --------------------------------------------------------------------------- the sweep section


def test_a_rate_sweep_reads_its_steps_unit_step_time_and_defaults() -> None:
    sweep = swept({"rates": ["2/s", "240/min", "8 requests/s"], "step_time": "1m"})
    assert (sweep.kind, sweep.unit, sweep.values, sweep.step_s) == ("rates", "requests", [2.0, 4.0, 8.0], 60)
    assert sweep.stop_after_breach and sweep.resolution_share == pytest.approx(0.05)
    assert sweep.describe(6.25) == "6.25/s"


def test_a_token_rate_sweep_and_a_user_sweep_describe_their_values() -> None:
    tokens = swept({"rates": ["60000 input_tokens/min", "120000 input_tokens/min"]})
    assert tokens.unit == "input_tokens" and tokens.values == [1000.0, 2000.0] and tokens.describe(1500.0) == "90000 input_tokens/min"
    users = swept({"users": [5, 10]})
    assert (users.kind, users.unit, users.values, users.describe(7.0)) == ("users", "users", [5.0, 10.0], "7 users")


@pytest.mark.parametrize(("given", "share"), [("5%", 0.05), (" 12.5 % ", 0.125), (".5%", 0.005), (0.05, 0.05), (0.2, 0.2)])
def test_a_resolution_is_a_percentage_or_a_share(given: str | float, share: float) -> None:
    assert parse_share(given) == pytest.approx(share)
    assert swept({"users": [1], "resolution": given}).resolution_share == pytest.approx(share)


@pytest.mark.parametrize(("step_time", "seconds"), [("30s", 30), ("2m", 120), ("1h30m", 5400), (45, 45), ("45", 45)])
def test_a_step_time_is_a_time_span(step_time: str | int, seconds: int) -> None:
    assert swept({"users": [1], "step_time": step_time}).step_s == seconds


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"rates": ["2/s"], "users": [1], "step_time": "10s"}, "sweep: give the steps as `rates` (open loop) or as `users`"),
        ({"step_time": "10s"}, "sweep: give the steps as `rates` (open loop) or as `users`"),
        ({"rates": ["4/s", "2/s"], "step_time": "10s"}, "sweep: the steps must rise (got 4/s, 2/s)"),
        ({"rates": ["2/s", "2/s"], "step_time": "10s"}, "sweep: the steps must rise (got 2/s, 2/s)"),
        ({"rates": ["2/s", "100 input_tokens/s"], "step_time": "10s"}, "sweep: one unit for every rate of `rates`"),
        ({"rates": ["2 per s"], "step_time": "10s"}, "sweep.rates[0]: must be a rate"),
        ({"rates": [], "step_time": "10s"}, "sweep.rates: must not be empty"),
    ],
)
def test_bad_rate_steps_are_named(sweep: dict[str, Any], message: str) -> None:
    text = problem(sweep, {**OPEN, "rate": "2/s"})
    assert text.startswith(f"x.yaml: {message}"), text


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"users": [10, 5], "step_time": "10s"}, "sweep: the steps must rise (got 10 users, 5 users)"),
        ({"users": [0, 2], "step_time": "10s"}, "sweep.users: every step needs at least 1 user"),
        ({"users": [2.5, 3], "step_time": "10s"}, "sweep.users[0]: must be an integer (got 2.5)"),
        ({"users": [], "step_time": "10s"}, "sweep.users: must not be empty"),
        ({"users": [2]}, "sweep.step_time: missing required field"),
        ({"users": [2], "step_time": "abc"}, "sweep.step_time: must be a time span like 30s"),
        ({"users": [2], "step_time": "0s"}, "sweep.step_time: must be at least 1 second"),
        ({"users": [2], "step_time": "10s", "resolution": "0%"}, "sweep.resolution: must lie between 0% and 100% (got '0%')"),
        ({"users": [2], "step_time": "10s", "resolution": "100%"}, "sweep.resolution: must lie between 0% and 100% (got '100%')"),
        ({"users": [2], "step_time": "10s", "resolution": 1.5}, "sweep.resolution: must lie between 0% and 100% (got 1.5)"),
        ({"users": [2], "step_time": "10s", "resolution": "abc"}, "sweep.resolution: must be a percentage like 5% (got 'abc')"),
        ({"users": [2], "step_time": "10s", "resolution": "5"}, "sweep.resolution: must be a percentage like 5%"),
        ({"users": [2], "step_time": "10s", "stop_after_breach": "yes"}, "sweep.stop_after_breach: must be true or false"),
        ({"users": [2], "step_time": "10s", "step": 1}, "sweep.step: unknown field"),
    ],
)
def test_bad_user_steps_and_settings_are_named(sweep: dict[str, Any], message: str) -> None:
    text = problem(sweep)
    assert text.startswith(f"x.yaml: {message}"), text


@pytest.mark.parametrize(
    ("sweep", "load", "message"),
    [
        (RATES, None, "sweep.rates: rate steps need an open loop: `arrival: poisson` or `arrival: constant` in `load`"),
        (RATES, {"users": 3}, "sweep.rates: rate steps need an open loop"),
        (USERS, {**OPEN, "rate": "2/s"}, "sweep.users: user steps are for a closed loop: leave out `load.arrival`"),
        (USERS, {"users": 2, "run_time": "1m"}, "load.run_time: a sweep's steps set the run time: leave out `run_time`"),
        (USERS, {"users": 2, "stages": [{"duration": "10s", "users": 3}]}, "load.stages: a sweep sets the load step by step"),
        (RATES, {**OPEN, "stages": [{"duration": "10s", "rate": "3/s"}]}, "load.stages: a sweep sets the load step by step"),
        (RATES, {**OPEN, "run_time": "5m"}, "load.run_time: a sweep's steps set the run time"),
        (None, {"users": 2, "warmup": "5s"}, "load.warmup: needs `arrival: poisson` or `arrival: constant` (an open loop), or a `sweep`"),
    ],
)
def test_a_load_that_does_not_fit_the_sweep_is_named(sweep: dict[str, Any] | None, load: dict[str, Any] | None, message: str) -> None:
    text = problem(sweep, load)
    assert text.startswith(f"x.yaml: {message}"), text


def test_an_open_loop_without_a_rate_starts_at_the_sweeps_first_rate() -> None:
    opened = scenario(RATES, {"arrival": "poisson"})
    assert opened.load is not None and opened.load.rate is not None and opened.load.rate.per_s == 2.0
    assert RateProfile.of(opened.load).rate_at(0) == 2.0
    tokens = scenario({"rates": ["6000 output_tokens/min", "12000 output_tokens/min"], "step_time": "10s"}, {"arrival": "constant"})
    assert (
        tokens.load is not None
        and tokens.load.rate is not None
        and (tokens.load.rate.unit, tokens.load.rate.per_s) == ("output_tokens", 100)
    )


def test_a_closed_loops_warmup_is_allowed_with_a_sweep_only() -> None:
    closed = scenario(USERS, {"warmup": "5s", "spawn_rate": 2})
    assert closed.load is not None and closed.load.warmup_s == 5 and closed.sweep is not None and closed.sweep.kind == "users"
    assert "load.warmup" in problem(None, {"users": 2, "warmup": "5s"})


def test_a_swept_scenario_survives_the_trip_to_the_workers() -> None:
    original = scenario({**RATES, "resolution": 0.1, "stop_after_breach": False}, {"arrival": "poisson", "warmup": "3s"})
    assert scenario_from_dict(original.model_dump(mode="json"), source="from the master") == original


@pytest.mark.parametrize("rate", ["1/s", "100 input_tokens/s"])
def test_a_files_own_rate_beside_rate_steps_is_refused(rate: str) -> None:
    """Step 0 would run at the file's rate (or in its unit) while booked as the sweep's first."""
    with pytest.raises(ScenarioError) as caught:
        scenario(RATES, {**OPEN, "rate": rate})
    assert str(caught.value).startswith("x.yaml: load.rate: a rate sweep's load starts at its first step (2/s)")


def test_a_files_rate_equal_to_the_first_step_is_accepted() -> None:
    opened = scenario(RATES, {**OPEN, "rate": "2/s"})
    assert opened.load is not None and RateProfile.of(opened.load).rate_at(0) == 2.0


# --------------------------------------------------------------------------- the search


def test_a_search_in_which_every_step_passes_runs_every_listed_step() -> None:
    search = SweepSearch(swept(RATES))
    assert search_until_over(search, lambda value: True) == [2.0, 4.0, 8.0, 16.0]
    assert (search.last_good, search.first_bad) == (16.0, None)


def test_a_breach_at_the_third_step_bisects_to_the_knee_within_the_resolution() -> None:
    """rates 2, 4, 8 (breach), then between 4 and 8 (5% of the last good):
    6 (good), 7 (bad), 6.5 (bad), 6.25 (good); 6.5 - 6.25 = 0.25 <= 5% of 6.25: over."""
    knee = 6.3
    search = SweepSearch(swept(RATES))
    offered = search_until_over(search, lambda value: value <= knee)
    assert offered == [2.0, 4.0, 8.0, 6.0, 7.0, 6.5, 6.25]
    assert (search.last_good, search.first_bad) == (6.25, 6.5)
    assert search.last_good is not None and knee - search.last_good <= 0.05 * search.last_good
    assert [search.is_bisection(value) for value in offered] == [False, False, False, True, True, True, True]


def test_a_coarser_resolution_stops_the_bisection_sooner() -> None:
    """20%: 6 (good), then 8 - 6 = 2 > 1.2: 7 (bad), then 7 - 6 = 1 <= 1.2: over."""
    search = SweepSearch(swept({**RATES, "resolution": "20%"}))
    assert search_until_over(search, lambda value: value <= 6.3) == [2.0, 4.0, 8.0, 6.0, 7.0]
    assert (search.last_good, search.first_bad) == (6.0, 7.0)


def test_without_stop_after_breach_every_listed_step_runs_before_the_bisection() -> None:
    search = SweepSearch(swept({**RATES, "stop_after_breach": False}))
    assert search_until_over(search, lambda value: value <= 6.3) == [2.0, 4.0, 8.0, 16.0, 6.0, 7.0, 6.5, 6.25]
    assert (search.last_good, search.first_bad) == (6.25, 6.5)


def test_a_good_step_above_a_bad_one_does_not_count() -> None:
    search = SweepSearch(swept({**RATES, "stop_after_breach": False}))
    for value, passed in [(2.0, True), (4.0, False), (8.0, True), (16.0, False)]:
        assert search.next_value() == value
        search.record(value, passed)
    assert (search.last_good, search.first_bad, search.next_value()) == (2.0, 4.0, 3.0)


@pytest.mark.parametrize("stop_after_breach", [True, False])
def test_a_failing_first_step_leaves_no_sustainable_value(stop_after_breach: bool) -> None:
    search = SweepSearch(swept({**RATES, "stop_after_breach": stop_after_breach}))
    offered = search_until_over(search, lambda value: False)
    assert offered == ([2.0] if stop_after_breach else [2.0, 4.0, 8.0, 16.0])
    assert (search.next_value(), search.last_good, search.first_bad) == (None, None, 2.0)


def test_a_user_bisection_stays_on_integers_and_stops_when_adjacent() -> None:
    """5, 10, 20 (bad); 15 (bad); round(12.5) = 12 (good); round(13.5) = 14 (bad); 13 (good);
    then 13 and 14 are adjacent (1 > 5% of 13, but no integer lies between): over."""
    search = SweepSearch(swept(USERS))
    offered = search_until_over(search, lambda value: value <= 13)
    assert offered == [5.0, 10.0, 20.0, 15.0, 12.0, 14.0, 13.0]
    assert all(value == int(value) for value in offered)
    assert (search.last_good, search.first_bad) == (13.0, 14.0)


@pytest.mark.parametrize(("good", "bad"), [(1, 2), (2, 3), (7, 8)])
def test_a_user_bisection_between_adjacent_counts_is_over(good: int, bad: int) -> None:
    search = SweepSearch(swept({"users": [good, bad]}))
    search.record(good, True)
    search.record(bad, False)
    assert search.next_value() is None


def test_is_bisection_tells_listed_steps_from_placed_ones() -> None:
    search = SweepSearch(swept({"rates": ["2/s", "240/min"]}))
    assert not search.is_bisection(2.0) and not search.is_bisection(4.0)
    assert search.is_bisection(3.0)


# --------------------------------------------------------------------------- --sweep and the options


def with_sweep_steps(original: Scenario, steps: str | None) -> Scenario:
    """The scenario with `--sweep`'s steps (or `--sweep` alone: SCENARIO_SWEEP) and no other option."""
    return with_overrides(original, {}, steps)


def options(**given: Any) -> SimpleNamespace:
    return SimpleNamespace(**{"num_users": None, "run_time": None, "reset_stats": False, "rate": None, **given})


def test_sweep_rates_replace_the_scenarios_steps_and_its_first_rate() -> None:
    original = scenario({**RATES, "resolution": "10%"}, {**OPEN, "arrival": "poisson"})
    changed = with_sweep_steps(original, "3/s,9/s")
    assert changed.sweep is not None and changed.sweep.values == [3.0, 9.0] and changed.sweep.resolution == "10%"
    assert changed.load is not None and changed.load.rate is not None and changed.load.rate.per_s == 3.0
    assert changed.load.max_in_flight == 7 and changed.source == "x.yaml"


def test_sweep_users_replace_the_scenarios_steps_and_give_a_sweep_to_one_without() -> None:
    with_users = with_sweep_steps(scenario(USERS, {"users": 3}), "4,8")
    assert with_users.sweep is not None and with_users.sweep.users == [4, 8] and with_users.sweep.step_time == "10s"
    fresh = with_sweep_steps(scenario(load={"users": 3}), "5,10")
    assert fresh.sweep is not None and (fresh.sweep.kind, fresh.sweep.values, fresh.sweep.step_s) == ("users", [5.0, 10.0], 60)


def test_sweep_steps_leave_out_the_loads_run_time_and_stages() -> None:
    timed = with_sweep_steps(scenario(load={"users": 3, "run_time": "5m"}), "5,10")
    assert timed.load is not None and timed.load.run_time is None and timed.sweep is not None and timed.sweep.users == [5, 10]
    staged = with_sweep_steps(scenario(load={**OPEN, "stages": [{"duration": "10s", "rate": "3/s"}]}), "2/s,4/s")
    assert staged.load is not None and staged.load.stages is None and staged.load.rate is not None and staged.load.rate.per_s == 2


def test_arrival_and_sweep_rates_open_a_closed_loop_together() -> None:
    opened = with_overrides(scenario(load={"users": 3, "spawn_rate": 1}), {"arrival": "constant"}, "2/s,4/s")
    assert opened.load is not None and opened.load.open_loop and opened.load.users is None
    assert opened.load.rate is not None and opened.load.rate.per_s == 2 and opened.sweep is not None and opened.sweep.values == [2, 4]


def test_no_sweep_option_or_the_scenarios_own_keeps_the_scenario() -> None:
    own = scenario(USERS)
    assert with_sweep_steps(own, None) is own and with_sweep_steps(own, SCENARIO_SWEEP) is own
    plain = scenario()
    assert with_sweep_steps(plain, None) is plain


@pytest.mark.parametrize(
    ("load", "steps", "message"),
    [
        ({"users": 3}, "2/s,4/s", "x.yaml with --sweep 2/s,4/s: sweep.rates: rate steps need an open loop"),
        ({**OPEN, "rate": "2/s"}, "5,10", "x.yaml with --sweep 5,10: sweep.users: user steps are for a closed loop"),
        ({"users": 3}, "10,5", "x.yaml with --sweep 10,5: sweep: the steps must rise (got 10 users, 5 users)"),
        ({**OPEN, "rate": "2/s"}, "2/s,fast", "x.yaml with --sweep 2/s,fast: sweep.rates[1]: must be a rate"),
    ],
)
def test_sweep_steps_that_do_not_fit_name_the_option(load: dict[str, Any], steps: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        with_sweep_steps(scenario(load=load), steps)
    assert message in str(caught.value), str(caught.value)


def test_sweep_alone_needs_a_sweep_section() -> None:
    with pytest.raises(ScenarioError) as caught:
        with_sweep_steps(scenario(load={"users": 3}), SCENARIO_SWEEP)
    assert str(caught.value).startswith("x.yaml: sweep: --sweep without steps needs a `sweep:` section")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"run_time": 60}, "x.yaml: a sweep runs until its search is over; leave out -t/--run-time"),
        ({"num_users": 5}, "x.yaml: a sweep's steps set the users; leave out -u/--users"),
        ({"reset_stats": True}, "x.yaml: a sweep measures each step after its warm-up; leave out --reset-stats"),
        ({}, None),
        ({"rate": "3/s"}, None),
    ],
)
def test_options_a_user_sweep_refuses(given: dict[str, Any], message: str | None) -> None:
    assert load_problem(options(**given), scenario(USERS, {"users": 3})) == message


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"run_time": 60}, "x.yaml: a sweep runs until its search is over; leave out -t/--run-time"),
        ({"rate": "3/s"}, "x.yaml: a sweep's steps set the rate; leave out --rate"),
        ({"reset_stats": True}, "x.yaml: a sweep measures each step after its warm-up; leave out --reset-stats"),
        ({"num_users": 5}, "x.yaml: load.arrival is an open loop: its users are load.max_in_flight (7); leave out -u/--users"),
        ({}, None),
    ],
)
def test_options_a_rate_sweep_refuses(given: dict[str, Any], message: str | None) -> None:
    assert load_problem(options(**given), scenario(RATES, OPEN)) == message


# --------------------------------------------------------------------------- step changes of the rate


def test_a_rate_change_keeps_the_demand_continuous() -> None:
    profile = RateProfile(2.0).then(10, 4.0)
    assert profile.rate_at(9.999) == 2.0 and profile.rate_at(10) == 4.0 and profile.rate_at(100) == 4.0
    assert profile.demand_at(10 - 1e-9) == pytest.approx(20) and profile.demand_at(10) == pytest.approx(20)
    assert profile.demand_at(15) == pytest.approx(40)
    assert [profile.time_of(demand) for demand in (10, 20, 30, 40)] == pytest.approx([5, 10, 12.5, 15])


def test_a_rate_change_after_stages_holds_their_last_rate_until_it() -> None:
    profile = RateProfile(0.0, [(10, 10.0)]).then(20, 1.0)  # 0 -> 10/s over 10 s (50), 10/s to 20 s (150), then 1/s
    assert profile.rate_at(5) == pytest.approx(5) and profile.rate_at(15) == 10 and profile.rate_at(25) == 1
    assert profile.demand_at(20) == pytest.approx(150) and profile.demand_at(30) == pytest.approx(160)
    for t in (3.0, 10.0, 17.5, 20.0, 26.0):
        assert profile.time_of(profile.demand_at(t)) == pytest.approx(t)


def test_changes_follow_one_another_and_one_at_the_same_time_replaces_the_last() -> None:
    profile = RateProfile(2.0).then(10, 4.0).then(20, 1.0)
    assert profile.demand_at(20) == pytest.approx(60) and profile.time_of(61) == pytest.approx(21)
    replaced = profile.then(20, 3.0)
    assert replaced.rate_at(20) == 3.0 and replaced.time_of(63) == pytest.approx(21)


def test_a_zero_rate_brings_no_arrival_until_the_next_change() -> None:
    resting = RateProfile(2.0).then(10, 0.0)
    assert resting.rate_at(15) == 0.0 and resting.demand_at(100) == pytest.approx(20)
    assert resting.time_of(20) == pytest.approx(10) and resting.time_of(20.5) == math.inf
    resumed = resting.then(30, 5.0)
    assert resumed.time_of(20.5) == pytest.approx(30.1) and resumed.time_of(25) == pytest.approx(31)


def test_a_change_before_the_last_one_is_refused() -> None:
    profile = RateProfile(2.0).then(10, 4.0)
    with pytest.raises(ValueError, match="before the last one"):
        profile.then(9.5, 1.0)
    with pytest.raises(ValueError, match="before the last one"):
        RateProfile(0.0, [(10, 5.0)]).then(5, 1.0)


def test_constant_arrivals_follow_the_steps_across_the_cluster() -> None:
    profile = RateProfile(2.0).then(2, 4.0)

    def worker(index: int) -> list[float]:
        arrivals, times = WorkerArrivals(profile, "constant", index, 2, random.Random(index)), []
        while (t := arrivals.next()) < 3:
            times.append(t)
        return times

    assert sorted(worker(0) + worker(1)) == pytest.approx([0, 0.5, 1, 1.5, 2, 2.25, 2.5, 2.75])


def test_arrivals_pause_at_a_zero_rate_and_resume_with_the_next_step() -> None:
    profile = RateProfile(2.0).then(2, 0.0).then(4, 1.0)
    arrivals = WorkerArrivals(profile, "constant", 0, 1, random.Random(1))
    assert [arrivals.next() for _ in range(7)] == pytest.approx([0, 0.5, 1, 1.5, 2, 5, 6])
    late = WorkerArrivals(profile, "poisson", 0, 1, random.Random(1), since_s=3.0)
    assert all(late.next() > 4 for _ in range(20))


# --------------------------------------------------------------------------- the step book


def booked(book: StepBook, started: list[tuple[float, str]]) -> list[TimingRecord]:
    """Requests sent at these wall times (s) that ended with these outcomes."""
    records = []
    for wall_s, outcome in started:
        one = record(outcome)
        one.wall_start_ns = at(wall_s)
        book.start(one, at(wall_s))
        book.add(one)
        records.append(one)
    return records


def windows(book: StepBook) -> StepBook:
    book.open(0, 100.0, 110.0)
    book.open(1, 115.0, 125.0)
    return book


def test_a_window_holds_its_start_but_not_its_end() -> None:
    book = windows(StepBook())
    assert book.step_at(at(100)) == 0 and book.step_at(at(110) - 1) == 0 and book.step_at(at(110)) is None
    assert book.step_at(at(100) - 1) is None and book.step_at(at(112)) is None
    assert book.step_at(at(115)) == 1 and book.step_at(at(124.5)) == 1 and book.step_at(at(125)) is None


def test_opening_a_step_again_keeps_its_first_window() -> None:
    book = windows(StepBook())
    book.open(0, 200.0, 210.0)
    assert len(book.windows) == 2 and book.step_at(at(105)) == 0 and book.step_at(at(205)) is None


def test_requests_outside_every_window_belong_to_no_step() -> None:
    book = windows(StepBook())
    records = booked(book, [(99.0, OK), (105.0, OK), (110.0, OK), (112.0, OK), (116.0, OVERLOADED), (130.0, OK)])
    assert [one.step for one in records] == [None, 0, None, None, 1, None]
    assert book.figures(0).requests == 1 and book.figures(1).requests == 1
    assert (book.in_flight[0], book.in_flight[1]) == (0, 0)
    assert book.figures(1).total().figures().count(OVERLOADED) == 1


def test_in_flight_counts_each_steps_requests_until_they_end() -> None:
    book = windows(StepBook())
    first, second, unbooked = record(), record(), record()
    book.start(first, at(101))
    book.start(second, at(116))
    book.start(unbooked, at(112))
    assert (book.in_flight[0], book.in_flight[1], book.unsettled(0), book.unsettled(1)) == (1, 1, 1, 1)
    book.add(first)
    book.add(unbooked)
    assert (book.in_flight[0], book.in_flight[1]) == (0, 1) and book.figures(0).requests == 1
    book.add(second)
    assert book.unsettled(1) == 0 and book.figures(1).requests == 1


def test_a_master_merging_two_workers_counts_as_one_book_with_every_request() -> None:
    started = [(101.0, OK), (102.0, OVERLOADED), (109.9, OK), (113.0, OK), (115.0, OK), (120.0, OK), (124.0, OVERLOADED)]
    alone, master = windows(StepBook()), windows(StepBook())
    booked(alone, started)
    workers = {"a": windows(StepBook()), "b": windows(StepBook())}
    booked(workers["a"], started[::2])
    booked(workers["b"], started[1::2])
    for name, worker in workers.items():
        master.merge(name, worker.report())
        master.merge(name, worker.report())  # a report without new requests adds nothing
    for step in (0, 1):
        mine, theirs = master.figures(step).total().figures(), alone.figures(step).total().figures()
        assert (mine.requests, mine.outcomes) == (theirs.requests, theirs.outcomes)
    assert (master.figures(0).requests, master.figures(1).requests) == (3, 3)


def test_a_workers_reports_carry_deltas_that_add_up() -> None:
    worker, master = windows(StepBook()), windows(StepBook())
    booked(worker, [(101.0, OK), (102.0, OK)])
    master.merge("a", worker.report())
    booked(worker, [(103.0, OK)])
    report = worker.report()
    assert sum(label["outcomes"][OK] for label in report["stats"]["0"]) == 1
    master.merge("a", report)
    assert master.figures(0).requests == 3


def test_a_step_is_settled_once_every_source_reported_after_its_window_with_none_in_flight(clock: Clock) -> None:
    master, worker_a, worker_b = windows(StepBook()), windows(StepBook()), windows(StepBook())
    late = record()
    worker_a.start(late, at(108))
    clock.now = 109.0  # inside the window: never settled
    master.merge("a", worker_a.report())
    master.merge("b", worker_b.report())
    assert not master.settled(0, ["a", "b"])
    clock.now = 111.0  # closed, but a's request is in flight and b's report is from before the end
    assert not master.settled(0, ["a", "b"])
    master.merge("a", worker_a.report())
    master.merge("b", worker_b.report())
    assert not master.settled(0, ["a", "b"]) and master.unsettled(0) == 1
    worker_a.add(late)
    master.merge("a", worker_a.report())
    assert master.settled(0, ["a", "b"]) and master.unsettled(0) == 0 and master.figures(0).requests == 1
    assert not master.settled(0, ["a", "b", "c"])  # c has not reported
    assert master.settled(0, [])


def test_a_request_is_in_flight_through_its_retries_and_their_waits() -> None:
    """A step must not be judged in the wait before a retry: the request has not ended."""
    book = windows(StepBook())
    first = record(RATE_LIMITED)
    book.start(first, at(105))
    first.retried = True  # (set before it is emitted)
    book.add(first)
    assert book.in_flight[0] == 1  # waiting to be tried again
    retry = record()
    book.start(retry, at(112), previous=first)  # sent after the window: still its request's step
    assert retry.step == 0 and book.in_flight[0] == 1
    book.add(retry)
    assert book.in_flight[0] == 0 and book.figures(0).requests == 2  # both attempts in the figures
    abandoned = record(RATE_LIMITED)
    book.start(abandoned, at(106))
    abandoned.retried = True
    book.add(abandoned)
    book.abandon(abandoned)  # the run stopped in the wait
    assert book.in_flight[0] == 0


def test_what_ends_after_its_step_was_judged_is_counted_late_not_lost() -> None:
    master, worker = windows(StepBook()), windows(StepBook())
    own, theirs = record(), record()
    master.start(own, at(105))
    worker.start(theirs, at(105))
    master.forget(0)  # judged on the master (workers only report)
    master.add(own)
    worker.add(theirs)
    master.merge("w", worker.report())
    assert master.late[0] == 2 and master.figures(0).requests == 0


def test_an_arrival_is_booked_by_the_time_it_was_due(clock: Clock) -> None:
    book = windows(StepBook())
    clock.now = 110.5  # handed over late (a busy scheduler), due inside step 0's window
    book.arrival(at(109.9), dropped=True)
    assert book.arrivals(0) == (1, 1) and book.arrivals(1) == (0, 0)


def test_a_master_is_not_settled_with_its_own_request_in_flight(clock: Clock) -> None:
    book = windows(StepBook())
    own = record()
    book.start(own, at(105))
    clock.now = 130.0
    assert not book.settled(0, [])
    book.add(own)
    assert book.settled(0, [])


def test_a_lost_workers_requests_stay_unsettled() -> None:
    master, worker = windows(StepBook()), windows(StepBook())
    worker.start(record(), at(101))
    master.merge("gone", worker.report())
    assert master.unsettled(0) == 1 and master.unsettled(1) == 0


def test_arrivals_sum_scheduled_and_dropped_over_the_workers(clock: Clock) -> None:
    master = windows(StepBook())
    for name, dropped in [("a", [False, False, True]), ("b", [False, True, True, False])]:
        worker = windows(StepBook())
        clock.now = 105.0
        for one in dropped:
            worker.arrival(clock.perf_counter_ns(), one)
        clock.now = 112.0  # between the windows: not counted
        worker.arrival(clock.perf_counter_ns(), True)
        master.merge(name, worker.report())
        master.merge(name, worker.report())  # counts as they are now, not added twice
    clock.now = 120.0
    master.arrival(clock.perf_counter_ns(), False)
    assert master.arrivals(0) == (7, 3) and master.arrivals(1) == (1, 0) and master.arrivals(2) == (0, 0)


# --------------------------------------------------------------------------- the controller


def hooks(book: StepBook, rates: list[tuple[float, float]] | None = None) -> SweepHooks:
    changes = rates if rates is not None else []
    return SweepHooks(
        book=lambda: book,
        arrivals_start=lambda: 0.0,
        set_rate=lambda from_wall, per_s: changes.append((from_wall, per_s)),
        announce=lambda step, from_wall, until_wall: None,
        sources=list,
        idle=lambda since: True,
    )


def run_sweep(controller: SweepController, book: StepBook, clock: Clock, knee: float) -> list[tuple[int, float] | None]:
    """Tick the controller each second; each step's window gets requests that pass below the knee."""
    ticks: list[tuple[int, float] | None] = []
    served: set[int] = set()
    for _ in range(1000):
        ticks.append(controller.tick())
        step = controller.current
        if ticks[-1] is None:
            return ticks
        if step is not None and step.index not in served:
            outcome = OK if step.value <= knee else OVERLOADED
            booked(book, [(step.measured_from + i / 10, outcome) for i in range(10)])
            served.add(step.index)
        clock.now += 1
    raise AssertionError("the sweep does not end")


def test_a_controller_before_any_step_has_no_result_yet() -> None:
    controller = SweepController(scenario(RATES, OPEN), hooks(StepBook()))
    result = controller.result()
    assert (result.kind, result.unit, result.step_time_s, result.resolution, result.state) == ("rates", "requests", 10, 0.05, "running")
    assert result.steps == [] and result.sustainable is None and result.first_bad is None and result.sustainable_label is None
    assert controller.result(stopped=True).state == "stopped"
    assert controller.conclusion() == "no step met the SLOs; the search is still running" and controller.phase() is None


def test_the_conclusion_and_result_name_the_sustainable_load() -> None:
    controller = SweepController(scenario(RATES, OPEN), hooks(StepBook()))
    controller.search.record(2.0, True)
    assert controller.conclusion().startswith("sustainable 2/s under the SLOs: every step passed, the limit lies above the last step")
    controller.search.record(4.0, False)
    assert controller.conclusion().startswith("sustainable 2/s under the SLOs")
    result = controller.result()
    assert (result.sustainable, result.sustainable_label, result.first_bad, result.sustainable_rate_rps) == (2.0, "2/s", 4.0, 2.0)
    assert result.sustainable_tokens_per_min is None and result.sustainable_users is None


def test_a_token_sweeps_result_is_per_minute_and_a_user_sweeps_in_users() -> None:
    tokens = SweepController(scenario({"rates": ["60000 input_tokens/min"], "step_time": "10s"}, OPEN), hooks(StepBook()))
    tokens.search.record(1000.0, True)
    assert tokens.result().sustainable_tokens_per_min == 60000 and tokens.result().sustainable_rate_rps is None
    users = SweepController(scenario(USERS), hooks(StepBook()))
    users.search.record(5.0, True)
    assert users.result().sustainable_users == 5 and users.conclusion().startswith("sustainable 5 users")


def test_a_user_sweep_steps_the_users_and_bisects_to_the_knee(clock: Clock) -> None:
    book = StepBook()
    controller = SweepController(scenario(USERS, {"warmup": "2s"}, slos={"error_rate": 0.01}), hooks(book))
    ticks = run_sweep(controller, book, clock, knee=12)
    values = [step.value for step in controller.steps]
    assert values == [5, 10, 20, 15, 12, 14, 13]  # 13 fails; 12 and 13 are adjacent
    assert [step.passed for step in controller.steps] == [True, True, False, False, True, False, False]
    assert [step.bisection for step in controller.steps] == [False] * 3 + [True] * 4
    assert {users for users, _ in filter(None, ticks)} == {5, 10, 20, 15, 12, 14, 13}
    first = controller.steps[0]
    assert first.measured_from - first.started_at == 2 and first.measured_until - first.measured_from == 10
    assert first.requests == 10 and first.breaches == [] and controller.steps[2].breaches[0].startswith("SLO breached")
    result = controller.result()
    assert (result.state, result.sustainable_users, result.first_bad) == ("done", 12, 13.0)
    assert controller.conclusion() == "sustainable 12 users under the SLOs (the lowest step to breach them: 13 users)"
    assert controller.tick() is None


def test_a_rate_sweep_changes_the_rate_from_its_second_step_and_rests_after_a_breach(clock: Clock) -> None:
    book, changes = StepBook(), list[tuple[float, float]]()
    controller = SweepController(
        scenario({**RATES, "resolution": "20%"}, {**OPEN, "warmup": "1s"}, slos={"error_rate": 0.01}), hooks(book, changes)
    )
    ticks = run_sweep(controller, book, clock, knee=6.3)
    assert [step.value for step in controller.steps] == [2, 4, 8, 6, 7]
    assert [per_s for _, per_s in changes] == [4.0, 8.0, 0.0, 6.0, 7.0]  # none for the first step; a rest after 8/s
    starts = {step.value: step.started_at for step in controller.steps}
    assert [from_wall for from_wall, per_s in changes if per_s] == [starts[4], starts[8], starts[6], starts[7]]
    assert set(filter(None, ticks)) == {(7, 7.0)}  # an open loop's users are its slots
    assert controller.result().sustainable_rate_rps == 6.0
    assert controller.conclusion() == "sustainable 6/s under the SLOs (the lowest step to breach them: 7/s)"


def test_an_error_in_the_sweep_ends_the_test_and_fails_the_run_as_a_crash(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    from locust import log as locust_log

    monkeypatch.setattr(locust_log, "unhandled_greenlet_exception", False)
    book = StepBook()

    def broken(from_wall: float, per_s: float) -> None:
        raise RuntimeError("no open loop to change")

    controller = SweepController(
        scenario(RATES, OPEN), SweepHooks(lambda: book, lambda: 0.0, broken, lambda *_: None, list, lambda _: True)
    )
    assert run_sweep(controller, book, clock, knee=100)[-1] is None
    assert controller.failure == "RuntimeError: no open loop to change" and locust_log.unhandled_greenlet_exception
    assert controller.result().state == "failed" and [step.value for step in controller.steps] == [2.0]


def test_a_sweep_needs_slos() -> None:
    with pytest.raises(ScenarioError) as caught:
        scenario_from_dict({**BASE, "slos": {}, "load": OPEN, "sweep": RATES}, source="x.yaml")
    assert str(caught.value).startswith("x.yaml: sweep: a sweep judges each step on the scenario's SLOs: give `slos`")


def test_the_phase_follows_the_step(clock: Clock) -> None:
    book = StepBook()
    controller = SweepController(scenario(USERS, {"warmup": "2s"}), hooks(book))
    controller.tick()
    step = controller.current
    assert step is not None and step.started_at == clock.now + MARGIN_S + 1  # after the ramp: 5 users at 5/s
    phases = []
    for now in (step.started_at + 1, step.measured_from + 1, step.measured_until + 1):
        clock.now = now
        phase = controller.phase()
        assert phase is not None
        phases.append(phase["phase"])
    assert phases == ["warm-up", "measuring", "settling"]
    assert phase == {"index": 0, "label": "5 users", "phase": "settling", "bisection": False}


# --------------------------------------------------------------------------- the verdict
def sweep_summary(**changes: Any) -> Summary:
    summary = load_summary(Path(__file__).parent / "data" / "sweep-summary.json")
    assert summary.sweep is not None and summary.sweep.sustainable is not None
    return summary.model_copy(update={"sweep": summary.sweep.model_copy(update=changes)})


@pytest.mark.parametrize(
    ("changes", "status"),
    [
        ({}, "PASS"),
        ({"state": "stopped"}, "FAIL"),
        ({"state": "failed"}, "FAIL"),
        ({"sustainable_label": None, "sustainable": None}, "FAIL"),
    ],
)
def test_a_sweep_passes_only_when_its_search_is_over_and_found_a_sustainable_load(changes: dict[str, Any], status: str) -> None:
    judged = slo.verdict(sweep_summary(**changes), None, None, False)
    assert (judged.status, judged.exit_code) == (status, 0 if status == "PASS" else 1)
    assert judged.reasons[0].startswith("sweep: ")


def test_a_regression_fails_a_sweep_that_found_its_load() -> None:
    regression = RegressionResult(
        scope="all",
        metric="ttft_p95_ms",
        baseline_ms=100,
        current_ms=150,
        change_pct=50,
        ci_low_pct=20,
        ci_high_pct=80,
        threshold_pct=10,
        regressed=True,
    )
    summary = sweep_summary().model_copy(update={"regressions": [regression]})
    judged = slo.verdict(summary, None, None, False)
    assert (judged.status, judged.exit_code) == ("FAIL", 1) and any("REGRESSED" in reason for reason in judged.reasons)
