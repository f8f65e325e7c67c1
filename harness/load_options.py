"""The scenario's `load` as the command line meets it: `--arrival`/`--rate` in place of the
file's settings, the file's settings where the command line is silent, and the combinations
refused with a message."""

from __future__ import annotations

from typing import Any

from harness import options as cli
from harness.scenario import Scenario, load_scenario, with_load_overrides
from harness.shapes import stages_shape


def read_scenario(path: str, options: Any) -> Scenario:
    """A scenario file with the command line's load settings; a problem raises ScenarioError."""
    return with_load_overrides(load_scenario(path), cli.load_overrides(options))


def load_problem(options: Any, scenario: Scenario) -> str | None:
    """Why the scenario's `load` may not run with these options, if it may not."""
    load = scenario.load
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


def apply_load_defaults(options: Any, scenario: Scenario) -> None:
    """The scenario's `load` section fills in what the command line left unset. In an open loop
    the users are the slots of max_in_flight, all spawned at once before the first arrival."""
    load = scenario.load
    if load is None:
        return
    if load.open_loop:
        options.num_users = load.in_flight_limit
        options.spawn_rate = options.spawn_rate or load.in_flight_limit
    shape = stages_shape(load)
    if shape is not None:  # (the most users, for what is sized by them)
        options.num_users = shape.most_users
    if options.num_users is None and load.users:
        options.num_users = load.users
    if options.spawn_rate is None and load.spawn_rate:
        options.spawn_rate = load.spawn_rate
    if not options.run_time and load.run_time_s:
        options.run_time = load.run_time_s
