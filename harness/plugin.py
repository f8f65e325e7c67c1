"""Locust integration: command-line options, scenario validation at start-up, the built-in
emulator, one HarnessRun per test, and the summary at the end.

User errors (a bad scenario, a missing API key) stop the process at init time with one
clear message and exit code 2, never from inside a running listener.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import gevent

from harness import pauses
from harness.emulator_process import EmulatorError, EmulatorProcess
from harness.payload import build_headers
from harness.run import EMULATOR_API_KEY, HarnessRun, RunConfig, is_loopback, new_run_id
from harness.scenario import Scenario, ScenarioError, load_scenario
from harness.summary import render
from harness.transport import TRANSPORTS, Target, preload_sdk

logger = logging.getLogger("harness")

EXIT_USAGE = 2
DEFAULT_SCENARIO = "scenarios/demo.yaml"
API_KEY_ENV = "ANTHROPIC_API_KEY"


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("Claude harness")
    group.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario file (YAML)")
    group.add_argument("--transport", choices=TRANSPORTS, default="fast", help="HTTP transport (default: fast)")
    group.add_argument("--output-dir", default="runs", help="folder for run outputs (default: runs/)")
    group.add_argument("--emulator-profile", default=None, help="latency profile for the built-in emulator")
    group.add_argument("--emulator-seed", type=int, default=None, help="seed for the built-in emulator")


def fail_usage(message: str) -> None:
    """Stop the process with a clear message and the usage/config exit code."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(EXIT_USAGE)


class Session:
    """Lives for the whole Locust process: the scenario, the emulator, the current run."""

    def __init__(self, environment: Any, scenario: Scenario) -> None:
        self.environment = environment
        self.options = environment.parsed_options
        self.scenario = scenario
        self.emulator: EmulatorProcess | None = None
        self.run: HarnessRun | None = None
        self.summary: str | None = None
        self._next_run_id = new_run_id()  # reserved at start-up: the emulator logs into its folder

    def next_run_dir(self) -> tuple[str, Path]:
        run_id, self._next_run_id = self._next_run_id, new_run_id()
        return run_id, Path(self.options.output_dir) / f"{run_id}-{self.scenario.name}"

    def start_emulator(self) -> str:
        run_dir = Path(self.options.output_dir) / f"{self._next_run_id}-{self.scenario.name}"
        run_dir.mkdir(parents=True, exist_ok=True)
        profile = self.options.emulator_profile
        self.emulator = EmulatorProcess(
            profile=Path(profile) if profile else None,
            seed=self.options.emulator_seed,
            ground_truth=run_dir / "emulator-ground-truth.jsonl",
        )
        url = self.emulator.start()
        logger.info("built-in emulator listening on %s", url)
        return url

    def target(self) -> Target:
        host = self.environment.host
        key = os.environ.get(API_KEY_ENV) or (EMULATOR_API_KEY if is_loopback(host) else "")
        return Target(base_url=host, api_key=key, headers=build_headers(self.scenario))

    def on_test_start(self) -> None:
        run_id, output_dir = self.next_run_dir()
        users = max(self.options.num_users or 1, 100)
        config = RunConfig(self.scenario, self.target(), self.options.transport, output_dir, run_id, pool_size=users)
        self.run = HarnessRun(config, self.environment)
        pauses.settle()
        logger.info("run %s: records in %s", run_id, output_dir)

    def on_test_stop(self) -> None:
        run = self.run
        if run is None:
            return
        run.close()
        locust_total = self.environment.stats.total.num_requests
        title = (
            f"Claude summary: scenario {self.scenario.name}, run {run.config.run_id}, "
            f"{run.stats.requests} requests ({locust_total} in Locust stats, {run.records.written} records)"
        )
        self.summary = render(run.stats, title)
        if not self.options.headless:
            print(self.summary, flush=True)

    def on_quit(self) -> None:
        if self.summary and self.options.headless:
            print(self.summary, flush=True)
        if self.emulator is not None:
            self.emulator.stop()


def on_init(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None or getattr(options, "worker", False):
        return
    try:
        scenario = load_scenario(options.scenario)
    except ScenarioError as exc:
        fail_usage(str(exc))
        return
    _apply_load_defaults(options, scenario)
    if options.transport == "sdk":
        preload_sdk()
    session = Session(environment, scenario)
    environment.claude = session
    environment.events.quit.add_listener(lambda **_: session.on_quit())
    if not environment.host:
        try:
            environment.host = session.start_emulator()
        except EmulatorError as exc:
            fail_usage(str(exc))
    elif not is_loopback(environment.host) and not os.environ.get(API_KEY_ENV):
        fail_usage(f"--host {environment.host} is not the emulator: set {API_KEY_ENV}")
    # start-up blocked the event loop (the SDK import alone takes seconds); refresh the
    # loop's cached clock, or Locust's --run-time timer, armed next, fires that much early
    gevent.get_hub().loop.update_now()


def _apply_load_defaults(options: Any, scenario: Scenario) -> None:
    """The scenario's `load` section fills in what the command line left unset."""
    load = scenario.load
    if load is None:
        return
    if options.num_users is None and load.users:
        options.num_users = load.users
    if options.spawn_rate is None and load.spawn_rate:
        options.spawn_rate = load.spawn_rate
    if not options.run_time and load.run_time_s:
        options.run_time = load.run_time_s


def register(events: Any) -> None:
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(on_init)
    events.test_start.add_listener(lambda environment, **_: _call(environment, Session.on_test_start))
    events.test_stop.add_listener(lambda environment, **_: _call(environment, Session.on_test_stop))


def _call(environment: Any, method: Any) -> None:
    session = getattr(environment, "claude", None)
    if session is not None:
        method(session)
