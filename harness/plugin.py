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

from harness import exitcodes, pauses
from harness.health import DEFAULT_MAX_CPU_PERCENT, DEFAULT_MAX_LOOP_LAG_MS, Thresholds
from harness.emulator_process import EmulatorError, EmulatorProcess
from harness.payload import build_headers
from harness.run import EMULATOR_API_KEY, HarnessRun, RunConfig, is_loopback, new_run_id
from harness.scenario import Scenario, ScenarioError, load_scenario
from harness.recording import CLOSE_TIMEOUT_S, DEFAULT_BUFFER, InfluxConfig
from harness.summary import render_run
from harness.transport import TRANSPORTS, Target, preload_sdk

logger = logging.getLogger("harness")

DEFAULT_SCENARIO = "scenarios/demo.yaml"
API_KEY_ENV = "ANTHROPIC_API_KEY"


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("Claude harness")
    group.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario file (YAML)")
    group.add_argument("--transport", choices=TRANSPORTS, default="fast", help="HTTP transport (default: fast)")
    group.add_argument("--output-dir", default="runs", help="folder for run outputs (default: runs/)")
    group.add_argument("--emulator-profile", default=None, help="latency profile for the built-in emulator")
    group.add_argument("--emulator-seed", type=int, default=None, help="seed for the built-in emulator")
    # Locust's own add_argument (not argparse groups) knows is_secret and include_in_web_ui
    points = health = parser
    points.add_argument(
        "--points", choices=("auto", "off"), default="auto",
        help="per-request points: to InfluxDB when configured, else to points.lp in the run folder (auto); or off",
    )  # fmt: skip
    points.add_argument("--influx-url", default=None, help="InfluxDB URL (default: $INFLUXDB_V2_URL)")
    points.add_argument("--influx-token", default=None, is_secret=True, help="InfluxDB token (default: $INFLUXDB_V2_TOKEN)")
    points.add_argument("--influx-org", default=None, help="InfluxDB org (default: $INFLUXDB_V2_ORG)")
    points.add_argument("--influx-bucket", default=None, help="InfluxDB bucket (default: $INFLUXDB_V2_BUCKET or loadtest)")
    points.add_argument("--influx-buffer", type=int, default=DEFAULT_BUFFER, help="points buffered at most before dropping")
    points.add_argument(
        "--points-flush-timeout", type=float, default=CLOSE_TIMEOUT_S,
        help="seconds to flush buffered points at the end; what is left is counted as dropped",
    )  # fmt: skip
    health.add_argument("--max-cpu-percent", type=float, default=DEFAULT_MAX_CPU_PERCENT, help="CPU use above which the run is unreliable")
    health.add_argument("--max-loop-lag-ms", type=float, default=DEFAULT_MAX_LOOP_LAG_MS, help="event-loop lag p99 above which the run is unreliable")
    health.add_argument(
        "--fail-on-unreliable", action="store_true", default=False,
        help=f"exit with code {exitcodes.UNRELIABLE} when the load generator was saturated",
    )  # fmt: skip


def fail_usage(message: str) -> None:
    """Stop the process with a clear message and the usage/config exit code."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(exitcodes.USAGE)


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
        options = self.options
        config = RunConfig(
            self.scenario, self.target(), options.transport, output_dir, run_id,
            pool_size=max(options.num_users or 1, 100),
            points=options.points,
            influx=InfluxConfig.resolve(
                url=options.influx_url, token=options.influx_token, org=options.influx_org, bucket=options.influx_bucket
            ),
            points_buffer=options.influx_buffer,
            points_flush_timeout_s=options.points_flush_timeout,
            thresholds=Thresholds(options.max_cpu_percent, options.max_loop_lag_ms),
        )  # fmt: skip
        self.run = HarnessRun(config, self.environment)
        pauses.settle()
        self.run.start()
        logger.info("run %s: records in %s", run_id, output_dir)

    def on_test_stop(self) -> None:
        run = self.run
        if run is None:
            return
        run.close()
        self.summary = render_run(run, locust_requests=self.environment.stats.total.num_requests)
        if not self.options.headless:
            print(self.summary, flush=True)
        if run.health.unreliable and self.options.fail_on_unreliable:
            self.environment.process_exit_code = exitcodes.UNRELIABLE

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
