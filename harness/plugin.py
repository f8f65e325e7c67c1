"""Locust integration: command-line options, scenario validation at start-up, the built-in
emulator, one HarnessRun per test, and the summary at the end.

User errors (a bad scenario, a missing API key) stop the process at init time with one
clear message and exit code 2, never from inside a running listener.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import gevent
from locust.runners import MasterRunner

from harness import exitcodes, pauses
from harness.distributed import MasterLink, WorkerLink, worker_output_dir
from harness.emulator_process import EmulatorError, EmulatorProcess
from harness.health import DEFAULT_MAX_CPU_PERCENT, DEFAULT_MAX_LOOP_LAG_MS, Thresholds
from harness.payload import build_headers
from harness.recording import CLOSE_TIMEOUT_S, DEFAULT_BUFFER, InfluxConfig
from harness.run import EMULATOR_API_KEY, HarnessRun, RunConfig, is_loopback, new_run_id
from harness.scenario import Scenario, ScenarioError, load_scenario
from harness.summary import build_summary, render_text
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
    group.add_argument("--summary-json", default=None, help="write the run's summary as JSON to this path")
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    logger.info("summary written to %s", path)


def fail_usage(message: str) -> None:
    """Stop the process with a clear message and the usage/config exit code."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(exitcodes.USAGE)


class Session:
    """Lives for the whole Locust process (local or master): the scenario, the emulator, the
    current run and, on a master, the link to the workers."""

    def __init__(self, environment: Any, scenario: Scenario) -> None:
        self.environment = environment
        self.options = environment.parsed_options
        self.scenario = scenario
        self.emulator: EmulatorProcess | None = None
        self.run: HarnessRun | None = None
        self.summary: dict[str, Any] | None = None
        self._next_run_id = new_run_id()  # reserved at start-up: the emulator logs into its folder
        self.link: MasterLink | None = None
        if isinstance(environment.runner, MasterRunner):
            self.link = MasterLink(environment, scenario, lambda: self.run)

    @property
    def role(self) -> str:
        return "master" if self.link is not None else "local"

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

    def on_test_start(self) -> None:
        run_id, output_dir = self.next_run_dir()
        self.run = HarnessRun(run_config(self.environment, self.scenario, run_id, output_dir, self.role), self.environment)
        if self.link is not None:
            self.link.start_run(run_id)
        pauses.settle()
        self.run.start()
        logger.info("run %s: output in %s", run_id, output_dir)

    def on_test_stopping(self) -> None:
        if self.link is not None:
            self.link.drain(self.environment.stop_timeout or 0.0)

    def on_test_stop(self) -> None:
        run = self.run
        if run is None:
            return
        run.close()
        self.summary = build_summary(run, self.environment.stats.total.num_requests, self.options, self.link)
        if self.options.summary_json:
            write_json(Path(self.options.summary_json), self.summary)
        if not self.options.headless:
            print(render_text(self.summary), flush=True)
        if self.summary["health"]["unreliable"] and self.options.fail_on_unreliable:
            self.environment.process_exit_code = exitcodes.UNRELIABLE

    def on_quit(self) -> None:
        if self.summary and self.options.headless:
            print(render_text(self.summary), flush=True)
        if self.emulator is not None:
            self.emulator.stop()


class WorkerSession:
    """A worker: gets the scenario and run id from the master, runs users, reports deltas."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.scenario: Scenario | None = None
        self.run_id: str | None = None
        self.run: HarnessRun | None = None
        self.link = WorkerLink(environment, self._on_run, self._report)

    def _on_run(self, scenario: Scenario, run_id: str) -> None:
        self.scenario, self.run_id = scenario, run_id

    def _report(self) -> dict[str, Any] | None:
        return self.run.report() if self.run is not None else None

    def on_test_start(self) -> None:
        if self.scenario is None or self.run_id is None:
            logger.error("no scenario from the master (is it running the same locustfile?): users cannot start")
            return
        options = self.environment.parsed_options
        output_dir = worker_output_dir(options.output_dir, self.run_id, self.scenario, self.link.name)
        config = run_config(self.environment, self.scenario, self.run_id, output_dir, "worker", worker=self.link.name)
        self.run = HarnessRun(config, self.environment)
        pauses.settle()
        self.run.start()

    def on_test_stop(self) -> None:
        if self.run is not None:
            self.run.close()
            self.link.send_final_report()


def run_config(environment: Any, scenario: Scenario, run_id: str, output_dir: Path, role: str, worker: str = "local") -> RunConfig:
    """A run's configuration from the (master's) command-line options, on any process."""
    options, host = environment.parsed_options, environment.host
    key = os.environ.get(API_KEY_ENV) or (EMULATOR_API_KEY if is_loopback(host) else "")
    return RunConfig(
        scenario, Target(base_url=host, api_key=key, headers=build_headers(scenario)), options.transport,
        output_dir, run_id,
        pool_size=max(options.num_users or 1, 100),
        worker=worker,
        role=role,
        points=options.points,
        influx=InfluxConfig.resolve(
            url=options.influx_url, token=options.influx_token, org=options.influx_org, bucket=options.influx_bucket
        ),
        points_buffer=options.influx_buffer,
        points_flush_timeout_s=options.points_flush_timeout,
        thresholds=Thresholds(options.max_cpu_percent, options.max_loop_lag_ms),
    )  # fmt: skip


def on_init(environment: Any, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if getattr(options, "worker", False):
        environment.claude = WorkerSession(environment)
        if options.transport == "sdk":
            preload_sdk()
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
    events.test_start.add_listener(lambda environment, **_: _call(environment, "on_test_start"))
    events.test_stopping.add_listener(lambda environment, **_: _call(environment, "on_test_stopping"))
    events.test_stop.add_listener(lambda environment, **_: _call(environment, "on_test_stop"))


def _call(environment: Any, method: str) -> None:
    session = getattr(environment, "claude", None)
    if session is not None and hasattr(session, method):
        getattr(session, method)()
