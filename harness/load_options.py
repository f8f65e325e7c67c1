"""The scenario's `load` as the command line meets it: `--arrival`/`--rate` in place of the
file's settings, the file's settings where the command line is silent, and the combinations
refused with a message."""

from __future__ import annotations

import math
from typing import Any

from harness import options as cli
from harness.cluster_arrivals import MARGIN_S
from harness.scenario import Scenario, ScenarioError, load_scenario, scenario_from_dict
from harness.shapes import stages_shape
from harness.trace import TAIL_S, trace_of

DEFAULT_STEP_TIME = "60s"  # --sweep's steps for a scenario without a sweep


def read_scenario(path: str, options: Any) -> Scenario:
    """A scenario file with the command line's load settings; a problem raises ScenarioError."""
    return with_overrides(load_scenario(path), cli.load_overrides(options), getattr(options, "sweep", None))


def with_overrides(scenario: Scenario, load: dict[str, str], sweep: str | None = None) -> Scenario:
    """The scenario with the command line's load settings (`--arrival`, `--rate`) and sweep steps
    (`--sweep`) in place of its own, validated again; a problem names the options with the file.
    `--arrival` makes a closed loop open (its users and spawn rate are left out); `--sweep` steps
    replace the sweep's and leave out the load's run time and stages (the steps set the load over
    time); `--sweep` alone needs the scenario's own sweep."""
    if sweep == cli.SCENARIO_SWEEP and scenario.sweep is None:
        raise ScenarioError(
            scenario.source, [("sweep", "--sweep without steps needs a `sweep:` section (or give steps: --sweep 2/s,4/s,8/s)")]
        )
    steps = None if sweep in (None, cli.SCENARIO_SWEEP) else sweep
    if not load and steps is None:
        return scenario
    data = scenario.model_dump(mode="json")
    flags = [f"--{name} {value}" for name, value in load.items()]
    if load:
        data["load"] = _overridden_load(data.get("load") or {}, load)
    if steps is not None:
        data = _swept(data, steps.split(","))
        flags.append(f"--sweep {steps}")
    changed = scenario_from_dict(data, source=f"{scenario.source} with {' '.join(flags)}")
    changed._source, changed._datasets = scenario.source, scenario._datasets
    return changed


def _overridden_load(load: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    if "arrival" in overrides:
        load = {key: value for key, value in load.items() if key not in ("users", "spawn_rate")}
    return {**load, **overrides}


def _swept(data: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """A scenario's data with these sweep steps: users (all whole numbers) or rates."""
    kind = "users" if all(value.isdigit() for value in values) else "rates"
    sweep = {key: value for key, value in (data.get("sweep") or {"step_time": DEFAULT_STEP_TIME}).items() if key not in ("rates", "users")}
    dropped = ("run_time", "stages", "rate") if kind == "rates" else ("run_time", "stages")  # rate steps start at the first
    load = {key: value for key, value in (data.get("load") or {}).items() if key not in dropped}
    return {**data, "load": load or None, "sweep": {**sweep, kind: [int(value) for value in values] if kind == "users" else values}}


def load_problem(options: Any, scenario: Scenario) -> str | None:
    """Why the scenario's `load` may not run with these options, if it may not."""
    load = scenario.load
    if scenario.sweep is not None and (problem := _sweep_problem(options, scenario)):
        return problem
    if load is None:
        return None
    if not load.open_loop:
        if load.stages and options.num_users is not None:
            return f"{scenario.source}: load.stages set the users over time; leave out -u/--users"
        if load.stages and options.run_time:
            return f"{scenario.source}: load.stages set the run time ({load.run_time_s} s); leave out -t/--run-time"
        return None
    where = f"{scenario.source}: load.arrival is an open loop"
    if options.num_users is not None:
        return f"{where}: its users are load.max_in_flight ({load.in_flight_limit}); leave out -u/--users"
    if options.reset_stats:
        return f"{where}: its measurement window opens after load.warmup; leave out --reset-stats"
    return None


def _sweep_problem(options: Any, scenario: Scenario) -> str | None:
    where = f"{scenario.source}: a sweep"
    if options.run_time:
        return f"{where} runs until its search is over; leave out -t/--run-time"
    if options.num_users is not None and scenario.sweep is not None and scenario.sweep.kind == "users":
        return f"{where}'s steps set the users; leave out -u/--users"
    if getattr(options, "rate", None) and scenario.sweep is not None and scenario.sweep.kind == "rates":
        return f"{where}'s steps set the rate; leave out --rate"
    if options.reset_stats:
        return f"{where} measures each step after its warm-up; leave out --reset-stats"
    return None


def apply_load_defaults(options: Any, scenario: Scenario) -> None:
    """The scenario's `load` section fills in what the command line left unset. In an open loop
    the users are the slots of max_in_flight, all spawned at once before the first arrival."""
    load = scenario.load
    if load is None:
        if scenario.sweep is not None and scenario.sweep.users:
            options.num_users = max(scenario.sweep.users)
        return
    if load.open_loop:
        options.num_users = load.in_flight_limit
        options.spawn_rate = options.spawn_rate or load.in_flight_limit
    shape = stages_shape(load)
    if shape is not None:  # (the most users, for what is sized by them)
        options.num_users = shape.most_users
    if scenario.sweep is not None and scenario.sweep.users:
        options.num_users = max(scenario.sweep.users)
    if options.num_users is None and load.users:
        options.num_users = load.users
    if options.spawn_rate is None and load.spawn_rate:
        options.spawn_rate = load.spawn_rate
    if not options.run_time and load.run_time_s:
        options.run_time = load.run_time_s
    if not options.run_time and (trace := trace_of(scenario)) is not None:  # a trace replay: its span
        # a master's split of the arrivals holds from MARGIN_S after the start: the span begins then
        options.run_time = math.ceil(trace.span_s + (MARGIN_S if getattr(options, "master", False) else 0)) + TAIL_S
