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
from locust import __version__ as locust_version
from locust import log as locust_log
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner

from harness import credentials, exitcodes, locust_bounds, locust_env, locust_outputs, pauses, slo, webaccess, webui
from harness import options as cli
from harness.cluster_arrivals import MARGIN_S, ArrivalShare
from harness.credentials import API_KEY_ENV, EMULATOR_API_KEY, CredentialsError, api_key_for, is_loopback, take_influx_token
from harness.distributed import STALE_REPORTS, MasterLink, WorkerLink, WorkerState, worker_output_dir
from harness.emulator.process import EmulatorError, EmulatorProcess
from harness.guards import Guard, max_cost_per_request
from harness.health import Thresholds
from harness.load_options import apply_load_defaults, load_problem, read_scenario
from harness.outputs import write_outputs
from harness.payload import build_headers
from harness.pricing import PriceTable
from harness.recording import InfluxConfig
from harness.results import InputError, Summary, load_summary
from harness.run import HarnessRun, RunConfig, new_run_id
from harness.scenario import Scenario, ScenarioError
from harness.shapes import stages_shape
from harness.shares import Share
from harness.summary import build_summary, render_text
from harness.transport import Target, preload_sdk
from harness.workerauth import MasterGate, WorkerGate

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

    def use_stages(self, scenario: Scenario) -> None:
        """A scenario with user stages runs them as Locust's load shape; any other, none."""
        shape = stages_shape(scenario.load)
        if shape is not None:
            shape.runner = self.environment.runner
        self.environment.shape_class = shape

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
        if load.warmup_s:
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
        built = build_summary(run, self.environment.stats.total.num_requests, self.options, self.link)
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


class WorkerSession:
    """A worker: gets the scenario and run id from the master, runs users, reports deltas.

    Locust may start a worker's test (its spawn message) before the run from the master has
    arrived (a worker joining mid-run); the run starts when both have happened, and users
    wait for it."""

    RUN_WAIT_S = 30.0
    GIVE_UP_AFTER_S = 0.5  # time for a last message to the master to leave

    def __init__(self, environment: Environment, worker_secret: bytes, influx_token: str | None, output_dir: str | None) -> None:
        self.environment = environment
        self.influx_token = influx_token
        self.output_dir = output_dir  # None: below the master's --output-dir (a shared file system)
        self.scenario: Scenario | None = None
        self.run_id: str | None = None
        self.startup_host: str | None = None  # the master's: the only host this worker's API key goes to
        self.run: HarnessRun | None = None
        # Locust can process the master's spawn message (test_start) before this plugin is
        # initialised: a test may already be under way
        self._testing = locust_env.worker(environment).worker_state in (STATE_SPAWNING, STATE_RUNNING)
        self._ready = gevent.event.Event()
        self.epoch = 0  # the master's measurement window when this worker got the run
        self.share = Share()  # this worker's share of the run's limits (harness/shares.py)
        self._waiting_for: str | None = None  # why the users wait (their share is used up)
        self.arrivals: ArrivalShare | None = None  # an open loop: this worker's share of the arrivals
        self.link = WorkerLink(
            environment,
            self._on_run,
            self._report,
            self._on_window,
            self._on_share,
            self._on_arrivals,
            lambda: self.gate.master_proven,
            self.give_up,
        )
        self.gate = WorkerGate(locust_env.worker(environment), worker_secret, self.give_up, locust_version)
        gevent.spawn(self.link.watch_master, lambda: locust_env.options(environment).master_lost_timeout, self.master_lost)

    def _on_run(self, scenario: Scenario, run_id: str, epoch: int, startup_host: str | None, share: Share) -> None:
        self.scenario, self.run_id, self.epoch, self.startup_host = scenario, run_id, epoch, startup_host
        self._on_share(run_id, share)
        self._start_run()

    def _on_share(self, run_id: str, share: Share) -> None:
        """The master's new split of the limits: what this worker may still spend and send."""
        if run_id != self.run_id:
            return  # a message of another run
        self.share = share
        if self.run is not None and self.run.config.run_id == run_id:
            self.run.share = share

    def _on_arrivals(self, share: ArrivalShare) -> None:
        """The master's (new) split of an open loop's arrivals."""
        if share.run_id != self.run_id:
            return  # a message of another run
        self.arrivals = share
        self._follow_arrivals()

    def _follow_arrivals(self) -> None:
        """This worker's open loop sends its share: from the common start, or anew from the split's time."""
        share, run = self.arrivals, self.run
        if share is None or run is None or run.open_loop is None or run.config.run_id != share.run_id:
            return
        if run.open_loop.started:
            late_s = time.time() - (share.start_wall + share.since_s)
            if late_s > 0:
                logger.warning("%s: the master's new split of the arrivals came %.1f s after its time", self.link.name, late_s)
            run.open_loop.rearrange(share.index, share.count, share.since_s)
        else:
            run.open_loop.start(share.start_ns(), share.until_s, share.index, share.count, share.since_s)

    def _share_used_up(self, reason: str) -> None:
        """A user found no room in this worker's share: said once per run."""
        if self._waiting_for is None:
            self._waiting_for = reason
            logger.warning("%s: %s; its users wait until that changes or the run ends", self.link.name, reason)

    def give_up(self, reason: str) -> None:
        """This worker cannot work for its master: it says why and quits with the usage exit code."""
        logger.error("this worker stops: %s", reason)
        self.environment.process_exit_code = exitcodes.USAGE
        gevent.spawn_later(self.GIVE_UP_AFTER_S, locust_env.runner(self.environment).quit)

    def master_lost(self, silent_s: float) -> None:
        """The master stopped answering: stop now (requests in flight are cancelled, every one
        recorded), say what this worker did, and exit with its own code."""
        logger.error("no heartbeat from the master for %.0f s: it is lost; this worker stops its users", silent_s)
        environment = self.environment
        environment.process_exit_code = exitcodes.MASTER_LOST
        environment.stop_timeout = 0.0
        locust_env.runner(environment).stop()  # test_stop closes the run: records flushed
        run = self.run
        if run is not None:
            where = run.records.path if run.records is not None else "no records file"
            logger.error(
                "%s: %d requests recorded in run %s (%s), $%.4f spent on priced models, before the master was lost",
                self.link.name,
                run.ledger.recorded,
                run.config.run_id,
                where,
                run.ledger.spent_usd,
            )
        locust_env.runner(environment).quit()

    def _on_window(self, run_id: str, epoch: int) -> None:
        """The master opened the measurement window: what this worker has not reported yet
        started before it (dropped from the stats, Locust's too), what starts now is in it."""
        if run_id != self.run_id:
            return  # a message of another run
        run = self.run
        if run is None or run.config.run_id != run_id:
            self.epoch = epoch  # the run starts in this window
            return
        if epoch <= run.ledger.window:
            return  # this worker joined in that window already
        run.open_window()
        locust_env.runner(self.environment).stats.reset_all()

    def _report(self) -> dict[str, Any] | None:
        return self.run.report() if self.run is not None else None

    def current_run(self) -> HarnessRun:
        """For a user starting: the run, once it exists (bounded wait)."""
        if not self._ready.wait(self.RUN_WAIT_S) or self.run is None:
            raise RuntimeError("no run from the master: is it running the same harness and locustfile?")
        return self.run

    def _start_run(self) -> None:
        if not self._testing or self.scenario is None or self.run_id is None:
            return
        if self.run is not None and self.run.config.run_id == self.run_id:
            return
        options = locust_env.options(self.environment)
        output_dir = worker_output_dir(self.output_dir or options.output_dir, self.run_id, self.scenario, self.link.name)
        config = run_config(
            self.environment, self.scenario, self.run_id, output_dir, "worker", self.startup_host, self.influx_token, worker=self.link.name
        )
        self.run = HarnessRun(config, self.environment)
        self.run.ledger.base_window = self.epoch
        self.run.share = self.share
        self.run.on_limit = self._share_used_up
        self._waiting_for = None
        pauses.settle()
        self.run.start()
        self._follow_arrivals()
        self._ready.set()

    def on_test_start(self) -> None:
        self._testing = True
        self._start_run()

    def on_test_stopping(self) -> None:
        if self.run is not None:
            self.run.end_arrivals()

    def on_test_stop(self) -> None:
        self._testing = False
        self._ready.clear()
        if self.run is not None:
            self.run.close()
            self.link.send_final_report()


def run_config(
    environment: Environment,
    scenario: Scenario,
    run_id: str,
    output_dir: Path,
    role: str,
    startup_host: str | None,
    influx_token: str | None,
    worker: str = "local",
) -> RunConfig:
    """A run's configuration from the (master's) command-line options, on any process; the
    secrets are this process's own."""
    options, host = locust_env.options(environment), environment.host
    assert host, "the emulator's or the --host given"
    key = EMULATOR_API_KEY if options.host_is_emulator else api_key_for(host, startup_host)
    return RunConfig(
        scenario,
        Target(base_url=host, api_key=key, headers=build_headers(scenario)),
        options.transport,
        output_dir,
        run_id,
        pool_size=max(options.num_users or 1, 100),
        worker=worker,
        role=role,
        points=options.points,
        influx=InfluxConfig.resolve(
            timeout_s=options.influx_timeout,
            url=options.influx_url,
            token=influx_token,
            org=options.influx_org,
            bucket=options.influx_bucket,
        ),
        points_buffer=options.influx_buffer,
        points_flush_timeout_s=options.points_flush_timeout,
        thresholds=Thresholds(options.max_cpu_percent, options.max_loop_lag_ms),
        max_requests=options.max_requests if role == "local" else None,
        min_free_disk_mb=options.min_free_disk_mb,
    )


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
    problem = cli.output_paths_problem(options)
    if problem:
        fail_usage(problem)
    if options.worker:
        assert secret is not None
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
    problem = load_problem(options, scenario)
    if problem:
        fail_usage(problem)
    apply_load_defaults(options, scenario)
    if options.transport == "sdk":
        preload_sdk()
    session = Session(environment, scenario, environment.host or None, influx_token, secret)
    session.use_stages(scenario)
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


def register(events: Any) -> None:
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
