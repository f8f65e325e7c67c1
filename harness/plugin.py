"""Locust integration: the checks at start-up (scenario, secrets, exposure, output paths), the
built-in emulator, one HarnessRun per test, and the summary at the end (the command line
itself is harness/options.py).

User errors (a bad scenario, a missing API key) stop the process at init time with one
clear message and exit code 2, never from inside a running listener.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import gevent
import gevent.event
from locust import LoadTestShape
from locust import log as locust_log
from locust.runners import MasterRunner

from harness import credentials, exitcodes, locust_bounds, locust_env, locust_outputs, network, pauses, slo, stamps, webaccess, webui
from harness import options as cli
from harness.cluster_arrivals import MARGIN_S
from harness.credentials import API_KEY_ENV, CredentialsError, is_loopback, take_influx_token
from harness.distributed import STALE_REPORTS, MasterLink, WorkerState
from harness.emulator.process import EmulatorError, EmulatorProcess
from harness.guards import Guard, max_cost_per_request
from harness.load_options import apply_load_defaults, load_problem, read_scenario
from harness.outputs import write_outputs
from harness.platforms import effective_platform, platform_problem
from harness.pricing import PriceTable
from harness.results import InputError, Summary, load_summary
from harness.run import HarnessRun, new_run_id
from harness.run_setup import run_config
from harness.scenario import Scenario, ScenarioError
from harness.shapes import stages_shape
from harness.summary import build_summary, render_text
from harness.sweep_run import SweepController, SweepHooks, SweepShape
from harness.sweep_steps import StepBook
from harness.transport import preload_sdk
from harness.worker_session import WorkerSession
from harness.workerauth import MasterGate

if TYPE_CHECKING:
    from locust.env import Environment

logger = logging.getLogger("harness")


def load_baseline(path: str) -> Summary:
    """A previous run's JSON summary; a bad file is a usage error."""
    try:
        return load_summary(Path(path))
    except InputError as exc:
        fail_usage(f"--baseline {exc}")


def fail_usage(message: str) -> NoReturn:
    """Stop the process with a clear message and the usage/config exit code."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(exitcodes.USAGE)


class Session:
    """Lives for the whole Locust process (local or master): the scenario, the emulator, the
    current run and, on a master, the link to the workers."""

    def __init__(
        self, environment: Environment, scenario: Scenario, startup_host: str | None, influx_token: str | None, worker_secret: bytes | None
    ) -> None:
        self.environment = environment
        self.options = locust_env.options(environment)
        self.scenario = scenario
        self.startup_host = startup_host  # the --host given (None: the built-in emulator): the API key goes only there
        self.influx_token = influx_token
        self.emulator: EmulatorProcess | None = None
        self.run: HarnessRun | None = None
        self.summary: Summary | None = None
        self._next_run_id = new_run_id()  # reserved at start-up: the emulator logs into its folder
        self.link: MasterLink | None = None
        self.gate: MasterGate | None = None
        self._warmup: gevent.Greenlet | None = None  # an open loop's warm-up: opens the measurement window
        if isinstance(environment.runner, MasterRunner):
            assert worker_secret is not None, "a master has the worker secret"
            self.link = MasterLink(
                environment, scenario, lambda: self.run, startup_host, lambda: (self.guard.budget_usd, self.guard.max_requests)
            )
            self.gate = MasterGate(locust_env.master(environment), worker_secret, self.link.on_join)
            self.gate.start()
            # a lost worker's users go to the others as soon as it is missing (Locust moves
            # them only a minute later otherwise)
            self.options.enable_rebalancing = True
        self.guard = Guard(
            environment,
            lambda: self.run,
            self.options.max_cost_usd or scenario.budget_usd,
            self.options.max_requests,
            scenario.abort,
            workers=self._workers if self.link is not None else None,
        )
        self.baseline = load_baseline(self.options.baseline) if self.options.baseline else None

    def _workers(self) -> Iterable[WorkerState]:
        """The workers of the current run (the link makes their states anew at each run)."""
        return self.link.workers.values() if self.link is not None else ()

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
            ground_truth=run_dir / "emulator-ground-truth.jsonl.gz",
        )
        url = self.emulator.start()
        logger.info("built-in emulator listening on %s", url)
        return url

    def real_api_problem(self, host: str, scenario: Scenario) -> str | None:
        return real_api_problem(host, scenario, self.options)

    def use_shape(self, scenario: Scenario) -> None:
        """A scenario with user stages or a sweep runs them as Locust's load shape; any other, none."""
        shape: LoadTestShape | None = stages_shape(scenario.load)
        if scenario.sweep is not None:
            shape = SweepShape(lambda: SweepController(scenario, self._sweep_hooks()))
        if shape is not None:
            shape.runner = self.environment.runner
        self.environment.shape_class = shape

    @property
    def sweep(self) -> SweepController | None:
        shape = self.environment.shape_class
        return shape.controller if isinstance(shape, SweepShape) else None

    def _current_run(self) -> HarnessRun | None:
        """The run under way, if any (not the last one, which has ended)."""
        run = self.run
        return run if run is not None and run.ended_at is None else None

    def _sweep_hooks(self) -> SweepHooks:
        def steps() -> StepBook | None:
            run = self._current_run()
            return run.steps if run is not None else None

        def arrivals_start() -> float | None:
            if self.link is not None:
                return self.link.arrivals.start_wall if self.link.arrivals is not None else None
            run = self._current_run()
            return run.open_loop.start_wall if run is not None and run.open_loop is not None else None

        def set_rate(from_wall: float, per_s: float) -> None:
            run = self._current_run()
            if self.link is not None and self.link.arrivals is not None:
                self.link.arrivals.change_rate(from_wall, per_s)
            elif run is not None and run.open_loop is not None and run.open_loop.start_wall is not None:
                run.open_loop.change_rate(from_wall - run.open_loop.start_wall, per_s)
            else:
                raise RuntimeError(f"the sweep's rate {per_s:g}/s has no open loop to change")

        def idle(since_wall: float) -> bool:
            if self.link is not None:
                return self.link.idle_since(since_wall)
            run = self._current_run()
            return run is None or run.in_flight == 0

        link = self.link
        return SweepHooks(
            book=steps,
            arrivals_start=arrivals_start,
            set_rate=set_rate,
            announce=link.announce_step if link is not None else lambda *_: None,
            sources=link.working if link is not None else list,
            idle=idle,
        )

    def read_scenario(self, path: str) -> Scenario:
        """A scenario file as this process runs it: with the command line's load settings."""
        return read_scenario(path, self.options)

    def reload_scenario(self) -> None:
        """The web UI's start form may name another scenario file than the one loaded."""
        path = self.options.scenario
        if path and path != self.scenario.source:
            self.scenario = self.read_scenario(path)  # validated again by the web UI before it starts
            self.guard.abort = self.scenario.abort
            self.guard.budget_usd = self.options.max_cost_usd or self.scenario.budget_usd
            if self.link is not None:
                self.link.scenario = self.scenario

    def on_test_start(self) -> None:
        self.reload_scenario()
        run_id, output_dir = self.next_run_dir()
        config = run_config(self.environment, self.scenario, run_id, output_dir, self.role, self.startup_host, self.influx_token)
        self.run = HarnessRun(config, self.environment)
        if self.link is not None:
            self.link.start_run(run_id)
        self.run.on_limit = self.guard.trip
        pauses.settle()
        self.run.start()
        self.guard.start()
        logger.info("run %s: output in %s", run_id, output_dir)

    def on_test_stopping(self) -> None:
        if self.run is not None:
            self.run.end_arrivals()
        if self.link is not None:
            self.link.drain(self.environment.stop_timeout or 0.0)

    def on_spawning_complete(self) -> None:
        """Every user is up: `--reset-stats` opens the measurement window; an open loop's
        arrivals start (until the cool-down), and its warm-up ends the window's wait."""
        if self.environment.reset_stats:
            self.open_window()
        run = self.run
        load = self.scenario.load
        if run is None or load is None or not load.open_loop or self._nothing_to_start(run):
            return
        start = time.time()
        until_s = None
        if self.options.run_time:  # the cool-down's start, from the arrivals' start
            until_s = max(0.0, self.options.run_time - load.cooldown_s - (start - run.started_at))
        if self.link is not None and self.link.arrivals is not None:
            start = self.link.arrivals.start(max(0.0, until_s - MARGIN_S) if until_s is not None else None)
        elif run.open_loop is not None:
            run.open_loop.start(time.perf_counter_ns(), until_s)
        if load.warmup_s and self.scenario.sweep is None:  # (a sweep's warm-up is each step's)
            self._warmup = gevent.spawn_later(start + load.warmup_s - time.time(), self._end_warmup)

    def _nothing_to_start(self, run: HarnessRun) -> bool:
        """No open loop here, or its arrivals have started already (spawning completes again
        when users are rebalanced)."""
        if self.link is not None:
            return self.link.arrivals is None or self.link.arrivals.started
        return run.open_loop is None or run.open_loop.started

    def _end_warmup(self) -> None:
        """The warm-up is over: the figures start now, Locust's tables too (as on --reset-stats)."""
        self._warmup = None
        locust_env.runner(self.environment).stats.reset_all()
        self.open_window()

    def open_window(self) -> None:
        """`--reset-stats` (spawning complete) or the web UI's "Reset stats": the figures start
        again from now, as Locust's tables do; every request stays recorded."""
        if self.link is not None:
            self.link.open_window()
        elif self.run is not None:
            self.run.open_window()

    def on_test_stop(self) -> None:
        run = self.run
        if run is None:
            return
        if self._warmup is not None:
            self._warmup.kill(block=False)
            self._warmup = None
        self.guard.stop()
        run.close()
        sweep = self.sweep.result(stopped=True) if self.sweep is not None else None
        built = build_summary(run, self.environment.stats.total.num_requests, self.options, self.link, sweep=sweep)
        rule = self.scenario.regression
        if self.options.regression_threshold:
            rule = rule.model_copy(update={"threshold_pct": self.options.regression_threshold})
        summary = slo.judge_run(
            built,
            self.scenario.slos,
            self.baseline,
            rule,
            stopped_by=self.guard.stopped_by,
            aborted=self.guard.aborted,
            failed_fast=self.guard.failed_fast,
            fail_on_unreliable=self.options.fail_on_unreliable,
            exit_code_on_error=self.options.exit_code_on_error,
            crashes=slo.Crashes(len(locust_env.runner(self.environment).exceptions), locust_log.unhandled_greenlet_exception),
        )
        self.summary = summary
        unwritten = write_outputs(summary, self.options, run.records.path if run.records is not None else None)
        if not self.options.headless:
            self.show(render_text(summary))
        # the verdict decides the exit code, not Locust's "any failure" rule; an output asked
        # for and not written fails the run whatever the verdict (the log says which)
        assert summary.verdict is not None  # judged above
        self.environment.process_exit_code = exitcodes.USAGE if unwritten else summary.verdict.exit_code

    def current_run(self) -> HarnessRun:
        assert self.run is not None, "users start after test_start created the run"
        return self.run

    def on_quitting(self) -> None:
        """An unhandled error after the verdict (while quitting) still fails the run."""
        if locust_log.unhandled_greenlet_exception and self.environment.process_exit_code == exitcodes.OK:
            logger.error("an unhandled error after the run (see the traceback above): exit code %d", exitcodes.CRASHED)
            self.environment.process_exit_code = exitcodes.CRASHED

    def show(self, text: str) -> None:
        """The summary for people: on stdout, unless Locust's --json owns stdout."""
        print(text, file=sys.stderr if getattr(self.options, "json", False) else sys.stdout, flush=True)

    def on_quit(self) -> None:
        if self.summary and self.options.headless:
            self.show(render_text(self.summary))
        if self.emulator is not None:
            self.emulator.stop()


def on_init(environment: Environment, **_kwargs: Any) -> None:
    options = environment.parsed_options
    if options is None:
        return
    locust_outputs.register(environment)
    influx_token = take_influx_token(options)  # Locust copies every option into its spawn messages
    master = isinstance(environment.runner, MasterRunner)
    try:
        secret = credentials.worker_secret() if master or options.worker else None
        login = webaccess.required_login(options) if environment.web_ui is not None else None
    except CredentialsError as exc:
        fail_usage(str(exc))
    problem = cli.output_paths_problem(options) or network.proxy_problem() or stamps.stamping_problem() or credentials.secrets_problem()
    if problem:
        fail_usage(problem)
    if options.worker:
        assert secret is not None
        locust_bounds.remember_default_args()  # (at each spawn message: harness/locust_bounds.py)
        # the master's spawn messages overwrite every option: a worker's own folder is kept now
        own_dir = options.output_dir if options.output_dir != cli.DEFAULT_OUTPUT_DIR else None
        locust_env.attach_session(environment, WorkerSession(environment, secret, influx_token, own_dir))
        if options.transport == "sdk":
            preload_sdk()
        return
    try:
        scenario = read_scenario(options.scenario, options)
    except ScenarioError as exc:
        fail_usage(str(exc))
    problem = load_problem(options, scenario) or platform_problem(effective_platform(scenario.platform, options), options.transport)
    if problem:
        fail_usage(problem)
    try:  # the headers' values from the environment are there (each worker reads its own)
        credentials.header_values(scenario.headers, to_startup_host=bool(environment.host) and not options.host_is_emulator)
    except CredentialsError as exc:
        fail_usage(str(exc))
    apply_load_defaults(options, scenario)
    if options.transport == "sdk":
        preload_sdk()
    session = Session(environment, scenario, environment.host or None, influx_token, secret)
    session.use_shape(scenario)
    locust_env.attach_session(environment, session)
    environment.events.quit.add_listener(lambda **_: session.on_quit())
    environment.events.quitting.add_listener(lambda **_: session.on_quitting())
    environment.events.reset_stats.add_listener(session.open_window)
    environment.events.spawning_complete.add_listener(lambda **_: session.on_spawning_complete())
    STALE_REPORTS.link = session.link
    locust_bounds.keep_bounded(environment)
    if environment.web_ui is not None:
        offered = webui.install(environment, session)
        webaccess.install(environment, session, login, offered)
    if not environment.host:
        try:
            environment.host = session.start_emulator()
        except EmulatorError as exc:
            fail_usage(str(exc))
    else:
        problem = real_api_problem(environment.host, scenario, options)
        if problem:
            fail_usage(problem)
    announce_cost(scenario, options)
    # start-up blocked the event loop (the SDK import alone takes seconds); refresh the
    # loop's cached clock, or Locust's --run-time timer, armed next, fires that much early
    gevent.get_hub().loop.update_now()


def real_api_problem(host: str, scenario: Scenario, options: Any) -> str | None:
    """Why a run of `scenario` against `host` may not start, if it may not: a real (non-loopback)
    API needs the key, a budget and a price for every model the budget must count."""
    if is_loopback(host) or options.host_is_emulator:
        return None
    if not os.environ.get(API_KEY_ENV):
        return f"--host {host} is not the emulator: set {API_KEY_ENV}"
    if not (options.max_cost_usd or scenario.budget_usd):
        return f"--host {host} is a real API: a run needs a budget (--max-cost-usd USD or budget_usd in the scenario)"
    unpriced = PriceTable(scenario.prices).unpriced([choice.model for choice in scenario.models])
    if unpriced and not options.allow_unpriced:
        return (
            f"{scenario.source}: no price for {', '.join(unpriced)}: the budget cannot count their cost. "
            f"Add them to the scenario's `prices:` (USD per million tokens, e.g. "
            f"`prices: {{{unpriced[0]}: {{input: 3.0, output: 15.0}}}}`) or pass --allow-unpriced"
        )
    return None


def announce_cost(scenario: Scenario, options: Any) -> None:
    prices = PriceTable(scenario.prices)
    per_request = max_cost_per_request(scenario, prices)
    if per_request is None:
        unpriced = ", ".join(prices.unpriced([choice.model for choice in scenario.models]))
        logger.info("cost: no price for %s: their cost is unknown (the summary says so)", unpriced)
        return
    users = options.num_users or 1
    logger.info(
        "cost: at most $%.5f per request (output at max_tokens); at one request per user per second, "
        "%d users spend at most $%.2f per minute",
        per_request,
        users,
        per_request * users * 60,
    )


_registered: list[Any] = []  # the event hooks register() added its listeners to (once each)


def register(events: Any) -> None:
    """Add the harness's listeners to Locust's events (a second call adds nothing)."""
    if events in _registered:
        return
    _registered.append(events)
    events.init_command_line_parser.add_listener(cli.add_arguments)
    events.worker_report.add_listener(STALE_REPORTS)  # before Locust's own: registered at import
    events.init.add_listener(on_init)
    events.test_start.add_listener(lambda environment, **_: _call(environment, "on_test_start"))
    events.test_stopping.add_listener(lambda environment, **_: _call(environment, "on_test_stopping"))
    events.test_stop.add_listener(lambda environment, **_: _call(environment, "on_test_stop"))


def _call(environment: Environment, method: str) -> None:
    session = getattr(environment, "claude", None)
    if session is not None and hasattr(session, method):
        getattr(session, method)()
