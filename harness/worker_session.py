"""A worker's side of a distributed run: it gets the scenario, the run id and its shares from the
master, runs its users and reports its deltas (the messages are in harness/distributed.py)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
from locust import __version__ as locust_version
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from harness import exitcodes, locust_env, pauses
from harness.cluster_arrivals import ArrivalShare
from harness.distributed import WorkerLink, worker_output_dir
from harness.run import HarnessRun
from harness.run_setup import run_config
from harness.scenario import Scenario
from harness.shares import Share
from harness.workerauth import WorkerGate

if TYPE_CHECKING:
    from locust.env import Environment

logger = logging.getLogger("harness")


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
        self.sweep_windows: list[list[float]] = []  # a sweep's step windows: [step, from, until] (epoch s)
        self.link = WorkerLink(
            environment,
            self._on_run,
            self._report,
            self._on_window,
            self._on_share,
            self._on_arrivals,
            self._on_sweep_step,
            lambda: self.gate.master_proven,
            self.give_up,
        )
        self.gate = WorkerGate(locust_env.worker(environment), worker_secret, self.give_up, locust_version)
        gevent.spawn(self.link.watch_master, lambda: locust_env.options(environment).master_lost_timeout, self.master_lost)

    def _on_run(
        self, scenario: Scenario, run_id: str, epoch: int, startup_host: str | None, share: Share, windows: list[list[float]]
    ) -> None:
        self.scenario, self.run_id, self.epoch, self.startup_host = scenario, run_id, epoch, startup_host
        self.sweep_windows = list(windows)
        self._on_share(run_id, share)
        self._start_run()

    def _on_sweep_step(self, run_id: str, window: list[float]) -> None:
        """A sweep's next step: its measured window (requests due before it arrived here are in
        no step: said, as for a late split of the arrivals)."""
        if run_id != self.run_id:
            return  # a message of another run
        late_s = time.time() - window[1]
        if late_s > 0:
            logger.warning("%s: sweep step %d's window came %.1f s after it opened", self.link.name, int(window[0]), late_s)
        self.sweep_windows.append(window)
        self._follow_steps()

    def _follow_steps(self) -> None:
        run = self.run
        if run is not None and run.steps is not None and run.config.run_id == self.run_id:
            for step, from_wall, until_wall in self.sweep_windows:
                run.steps.open(int(step), from_wall, until_wall)

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
            run.open_loop.rearrange(share.index, share.count, share.since_s, share.rates)
        else:
            run.open_loop.start(share.start_ns(), share.until_s, share.index, share.count, share.since_s, share.rates)

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
        self._follow_steps()
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
