"""Master/worker runs: the scenario shipped to workers, precise stats merged on the master,
a drain that counts every request in flight at the end, and lost workers named.

Messages (over Locust's own master/worker channel), once a worker has joined with the worker
secret (harness/workerauth.py: a worker that has not joined gets none of them):
- master -> worker `claude_run`: harness version, run id, the validated scenario (a dict:
  workers need no file access), the host given at start-up (the only one the worker's API
  key goes to) and the worker's share of the limits. Sent at test start, and to a worker
  that joins later (a worker joining mid-run may get Locust's spawn message before its plugin
  is initialised: its users wait).
  The run message also carries the entries of the scenario's dataset prompts (workers need no
  copy of the files), compressed.
- master -> worker `claude_share`: the worker's share of the budget and of --max-requests
  (harness/shares.py), every second while the run has such limits; each worker's report
  says which share it applies (`share_seq`).
- master -> worker `claude_arrivals`: in an open loop, the worker's share of the arrivals
  (harness/cluster_arrivals.py).
- master -> worker `claude_sweep_step`: a sweep's step and its measured window (wall clock),
  ahead of its start (harness/sweep_steps.py); the run message carries the windows so far.
- worker -> master `claude_refused`: the worker runs another harness version; it quits.
- master -> worker `claude_drain`: the run is ending: stop the users (in-flight requests
  finish within --stop-timeout or are cancelled), send the final report, confirm.
- worker -> master `claude_drained`: that worker's last report has been sent.
- master -> worker `claude_window`: the measurement window opens now (`--reset-stats` when
  spawning completes, or the web UI's "Reset stats"), with its number (epoch). The worker
  drops its unreported stats (harness and Locust) and counts only requests that start from
  now; its reports carry the epoch, and the master drops what an older epoch's reports hold,
  from its own stats and from Locust's (a filter that runs before Locust merges a report).
Each periodic worker report carries the worker's stats delta (HDR-encoded, not a message
per request), its health and its sink counters. Locust's own headless stop does not wait
for workers' last reports; the drain, run from the master's `test_stopping`, does.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from locust.runners import HEARTBEAT_INTERVAL
from locust.stats import StatsEntry

from harness import __version__, locust_env
from harness.cluster_arrivals import ARRIVALS_MESSAGE, ArrivalShare, ClusterArrivals
from harness.datasets import DatasetError, Shipment, received_datasets, shipment
from harness.openloop import ArrivalCounts
from harness.results import InputSize
from harness.scenario import Scenario, ScenarioError, scenario_from_dict
from harness.shares import INTERVAL_S, Share, ShareBook, Spent
from harness.stats import RunStats

if TYPE_CHECKING:
    from locust.env import Environment

if TYPE_CHECKING:
    from harness.run import HarnessRun

logger = logging.getLogger("harness.distributed")

RUN_MESSAGE = "claude_run"
DATASET_CHUNK_MESSAGE = "claude_dataset_chunk"  # a piece of a shipped dataset, ahead of its run
REFUSED_MESSAGE = "claude_refused"
DRAIN_MESSAGE = "claude_drain"
DRAINED_MESSAGE = "claude_drained"
WINDOW_MESSAGE = "claude_window"
SHARE_MESSAGE = "claude_share"
SWEEP_STEP_MESSAGE = "claude_sweep_step"
REPORT_KEY = "claude"
DRAIN_MARGIN_S = 15.0


@dataclass
class WorkerState:
    """What the master knows about one worker, from its reports."""

    client_id: str
    name: str
    requests: int = 0
    records: int = 0
    recorded: int = 0
    before_window: int = 0
    spent_usd: float = 0.0
    share_seq: int | None = None  # the share its last report applied
    failed_fast: str | None = None  # why this worker's first seconds all failed alike
    points_written: int = 0
    points_dropped: int = 0
    health: dict[str, Any] = field(default_factory=dict)
    saturated_samples: int = 0
    unreliable: bool = False
    last_report_at: float = 0.0
    counted_from: float = field(default_factory=time.time)  # when the rate's interval began: its last report, or the run's start
    in_flight: int = 0  # at its last report
    rate_per_s: float = 0.0  # requests recorded per second between its last two reports
    last_heartbeat_at: float = 0.0
    drained: bool = False
    arrivals: dict[str, float] | None = None  # an open loop's counts, at its last report
    stamping: str | None = None  # its receive times (harness/stamps.py), and its reads by how they were stamped
    stamped_reads: dict[str, int] = field(default_factory=dict)

    def unreported(self) -> tuple[int, int] | None:
        """For a lost worker: about how many requests it sent that no report counted, as a range:
        those in flight at its last report, plus those started (at its last rate) until it died,
        which was after its last heartbeat and before the next one was due. None before a first
        report (nothing to estimate from)."""
        if not self.last_report_at:
            return None
        alive_s = max(0.0, self.last_heartbeat_at - self.last_report_at)
        return self.in_flight + round(self.rate_per_s * alive_s), self.in_flight + math.ceil(
            self.rate_per_s * (alive_s + HEARTBEAT_INTERVAL)
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "records": self.records,
            "recorded": self.recorded,
            "before_window": self.before_window,
            "spent_usd": self.spent_usd,
            "points_written": self.points_written,
            "points_dropped": self.points_dropped,
            "saturated_samples": self.saturated_samples,
            "unreliable": self.unreliable,
            "last_health": self.health,
            "lost": not self.drained,
            "unreported": None if self.drained else self.unreported(),
            "arrivals": self.arrivals,
            "stamping": self.stamping,
            "stamped_reads": self.stamped_reads,
        }


class MasterLink:
    """The master's side: ships the run, merges worker reports, drains at the end."""

    def __init__(
        self,
        environment: Environment,
        scenario: Scenario,
        run: Callable[[], HarnessRun | None],
        startup_host: str | None,
        limits: Callable[[], tuple[float | None, int | None]] = lambda: (None, None),
    ) -> None:
        self.environment = environment
        self.runner = locust_env.master(environment)
        self.scenario = scenario
        self.startup_host = startup_host
        self.run = run  # the master's current run, whose stats the workers' deltas merge into
        self.limits = limits  # the run's budget (USD) and request limit, split among the workers
        self._splitting: gevent.Greenlet | None = None
        self.share_book = ShareBook(None, None)
        self.run_id: str | None = None
        self.epoch = 0  # the measurement window's number: reports of an older one are stale
        self.workers: dict[str, WorkerState] = {}
        self.refused: dict[str, str] = {}
        self.arrivals: ClusterArrivals | None = None  # an open loop's split among the workers
        self._shipment = Shipment({}, [])  # the run's dataset entries, for every worker
        runner = self.runner
        runner.register_message(REFUSED_MESSAGE, self._on_refused)
        runner.register_message(DRAINED_MESSAGE, self._on_drained)
        environment.events.worker_report.add_listener(self._on_report)
        environment.events.worker_connect.add_listener(self._on_connect)
        environment.events.heartbeat_sent.add_listener(self._on_heartbeat)

    def _payload(self, share: Share, client_id: str) -> dict[str, Any]:
        return {
            "version": __version__,
            "run_id": self.run_id,
            "epoch": self.epoch,
            "scenario": self.scenario.model_dump(mode="json"),
            "startup_host": self.startup_host,
            "share": share.as_dict(),
            "sweep_steps": self._sweep_windows(),
            "datasets": self._shipment.manifest,
            "dataset_split": self._dataset_split(client_id),
        }

    def _send_run(self, client_id: str, share: Share) -> None:
        """The run to a worker: its datasets' chunks first (messages to a worker arrive in order)."""
        for name, index, piece in self._shipment.chunks:
            self.runner.send_message(
                DATASET_CHUNK_MESSAGE, {"run_id": self.run_id, "name": name, "index": index, "data": piece}, client_id=client_id
            )
        self.runner.send_message(RUN_MESSAGE, self._payload(share, client_id), client_id=client_id)

    def _dataset_split(self, client_id: str) -> list[int]:
        """A worker's share of a dataset sent in order: [index, count] among the working workers
        (as they are when it gets the run: a worker joining later may overlap another's)."""
        working = self.working()
        return [working.index(client_id), len(working)] if client_id in working else [0, 1]

    def _sweep_windows(self) -> list[list[float]]:
        """A sweep's step windows so far: [step, from, until] (epoch s) each."""
        run = self.run()
        steps = run.steps if run is not None and run.config.run_id == self.run_id else None
        return [[window.step, window.from_ns / 1e9, window.until_ns / 1e9] for window in steps.windows] if steps is not None else []

    def idle_since(self, since_wall: float) -> bool:
        """No request in flight on any working worker, in reports made since `since_wall`."""
        states = [self.workers.get(client_id) for client_id in self.working()]
        return all(state is not None and state.last_report_at >= since_wall and not state.in_flight for state in states)

    def announce_step(self, step: int, from_wall: float, until_wall: float) -> None:
        """A sweep's step, to every worker of the run."""
        for client_id in list(self.workers):  # (a send may yield to a worker joining)
            self.runner.send_message(
                SWEEP_STEP_MESSAGE, {"run_id": self.run_id, "window": [step, from_wall, until_wall]}, client_id=client_id
            )

    def start_run(self, run_id: str) -> None:
        self.run_id = run_id
        limit_mb = locust_env.options(self.environment).dataset_ship_limit_mb
        self._shipment = shipment(self.scenario, limit_mb * 1024 * 1024)  # compressed once for every worker
        self.epoch = 0
        runner = self.runner
        # every worker of the run is known from the start: one that dies before its first
        # report is still named as lost
        self.workers = {client.id: WorkerState(client.id, self._name(client.id)) for client in runner.clients.all}
        self.share_book = ShareBook(*self.limits())
        for client_id, share in self.shares().items():
            self._send_run(client_id, share)
        self._stop_splitting()
        if any(limit is not None for limit in self.limits()):
            self._splitting = gevent.spawn(self._keep_splitting)
        if self.arrivals is not None:
            self.arrivals.stop()
        self.arrivals = (
            ClusterArrivals(run_id, self._sending, self._send_arrivals) if self.scenario.load and self.scenario.load.open_loop else None
        )

    def working(self) -> list[str]:
        """The workers that take part in the run, in the order of their index."""
        working = [c.id for c in self.runner.clients.all if self._present(c) and not self._drained(c.id)]
        return sorted(working, key=self.runner.get_worker_index)

    def _sending(self) -> list[str]:
        """The workers that can send an open loop's arrivals: those with users (its slots)."""
        clients = self.runner.clients
        return [client_id for client_id in self.working() if clients[client_id].user_count > 0]

    def _send_arrivals(self, client_id: str, share: dict[str, Any]) -> None:
        self.runner.send_message(ARRIVALS_MESSAGE, share, client_id=client_id)

    def arrival_counts(self) -> ArrivalCounts:
        """The workers' arrivals, summed from their last reports."""
        return ArrivalCounts.total(state.arrivals for state in self.workers.values() if state.arrivals is not None)

    def shares(self) -> dict[str, Share]:
        """Each working worker's next share of the limits, from what all of them reported."""
        spent = {client_id: Spent(state.spent_usd, state.recorded, state.share_seq) for client_id, state in self.workers.items()}
        return self.share_book.split(spent, self.working(), self._holding())

    def _holding(self) -> list[str]:
        """Workers missing for less than the time a worker takes to give its master up (with a
        heartbeat's margin): they may still spend their share, or come back."""
        lost_after_s = locust_env.options(self.environment).master_lost_timeout + 2 * HEARTBEAT_INTERVAL
        now = time.time()
        return [
            client_id
            for client_id, state in self.workers.items()
            if not state.drained and client_id not in self.refused and now - state.last_heartbeat_at < lost_after_s
        ]

    def _keep_splitting(self) -> None:
        while True:
            gevent.sleep(INTERVAL_S)
            for client_id, share in self.shares().items():
                self.runner.send_message(SHARE_MESSAGE, {"run_id": self.run_id, **share.as_dict()}, client_id=client_id)

    def _stop_splitting(self) -> None:
        if self._splitting is not None:
            self._splitting.kill(block=False)
            self._splitting = None

    def _name(self, client_id: str) -> str:
        return f"worker-{self.runner.get_worker_index(client_id)}"

    def _on_connect(self, client_id: str, **_: Any) -> None:
        if self.run_id is not None:  # a worker joining mid-run: its users wait for the run
            self._worker(client_id, self._name(client_id))

    def on_join(self, client_id: str) -> None:
        """A worker proved the worker secret (and Locust knows it now): it gets the current run."""
        if self.run_id is not None:
            logger.info("worker %s joined the running test: sending it run %s", client_id, self.run_id)
            self._send_run(client_id, self.shares().get(client_id, Share()))

    def _on_heartbeat(self, client_id: str, timestamp: float, **_: Any) -> None:
        state = self.workers.get(client_id)
        if state is not None:
            state.last_heartbeat_at = timestamp

    def _on_refused(self, msg: Any, **_: Any) -> None:
        self.refused[msg.node_id] = msg.data["reason"]
        logger.error("worker %s refused: %s", msg.node_id, msg.data["reason"])

    def _on_drained(self, msg: Any, **_: Any) -> None:
        self._worker(msg.node_id, msg.data.get("name", msg.node_id)).drained = True

    def _worker(self, client_id: str, name: str) -> WorkerState:
        state = self.workers.get(client_id)
        if state is None:
            state = self.workers[client_id] = WorkerState(client_id, name)
        return state

    def open_window(self) -> None:
        """The measurement window opens now, on every worker too."""
        run = self.run()
        if run is None or self.run_id is None:
            return
        self.epoch += 1
        run.open_window()
        for state in self.workers.values():
            state.requests = 0
        self.runner.send_message(WINDOW_MESSAGE, {"run_id": self.run_id, "epoch": self.epoch})
        logger.info("measurement window %d opened on the workers", self.epoch)

    def drop_if_stale(self, data: dict[str, Any]) -> None:
        """A report of an older window keeps its counters but no stats: neither ours nor Locust's."""
        report = data.get(REPORT_KEY)
        if report and report.get("run_id") == self.run_id and report.get("window") != self.epoch:
            report["stats"], report["conversations"], report["caching"], report["variants"] = [], {}, [], {}
            data["stats"], data["errors"] = [], {}
            data["stats_total"] = StatsEntry(self.runner.stats, "Aggregated", "").serialize()

    def _on_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        report = data.get(REPORT_KEY)
        run = self.run()
        if not report or run is None or report.get("run_id") != self.run_id:
            return
        delta = RunStats.decode(report["stats"])
        run.stats.merge(delta)
        run.recent.merge(delta)
        if report.get("steps") is not None and run.steps is not None:
            run.steps.merge(client_id, report["steps"])
        run.headroom.merge_encoded(report.get("headroom") or {})
        run.conversations.merge_encoded(report.get("conversations") or {})
        run.caching.merge_encoded(report.get("caching") or [])
        run.variants.merge_encoded(report.get("variants") or {})
        for size in map(InputSize.model_validate, report.get("input_sizes") or []):
            run.input_sizes.setdefault(size.key, size)
        state = self._worker(client_id, report["name"])
        now = time.time()
        state.rate_per_s = max(0, report["recorded"] - state.recorded) / max(now - state.counted_from, 1e-3)
        state.counted_from = now
        state.requests += delta.requests
        state.in_flight = report["in_flight"]
        state.records, state.points_written, state.points_dropped = report["records"], report["points_written"], report["points_dropped"]
        state.recorded, state.before_window, state.spent_usd = report["recorded"], report["before_window"], report["spent_usd"]
        state.share_seq = report.get("share_seq")
        state.failed_fast = report.get("failed_fast")
        state.saturated_samples, state.unreliable = report["saturated_samples"], report["unreliable"]
        state.arrivals = report.get("arrivals")
        state.stamping, state.stamped_reads = report.get("stamping"), report.get("stamped_reads") or {}
        state.last_report_at = now
        if report["health"]:
            if report["health"].get("saturated") and not state.health.get("saturated"):
                logger.warning("worker %s is saturated (CPU %s%%): its timings are late", state.name, report["health"]["cpu_percent"])
            state.health = report["health"]

    def drain(self, stop_timeout_s: float) -> None:
        """Stop every worker's users and wait for every last report (bounded in time)."""
        self._stop_splitting()
        if self.arrivals is not None:
            self.arrivals.stop()
        runner = self.runner
        active = [client.id for client in runner.clients.all if self._present(client)]
        if not active:
            return
        for client_id in active:
            runner.send_message(DRAIN_MESSAGE, None, client_id=client_id)
        deadline = time.monotonic() + stop_timeout_s + DRAIN_MARGIN_S
        while time.monotonic() < deadline:
            alive = [cid for cid in active if cid in runner.clients and runner.clients[cid].state != "missing"]
            if all(self._drained(client_id) for client_id in alive):
                return
            gevent.sleep(0.05)
        missing = [cid for cid in active if not self._drained(cid)]
        logger.error("no final report from %s within %.0f s", ", ".join(missing), stop_timeout_s + DRAIN_MARGIN_S)

    def _present(self, client: Any) -> bool:
        """A worker that has not gone missing and has not refused the run (it quits)."""
        return bool(client.state != "missing" and client.id not in self.refused)

    def _drained(self, client_id: str) -> bool:
        state = self.workers.get(client_id)
        return state is not None and state.drained

    def lost_workers(self) -> list[WorkerState]:
        return [state for state in self.workers.values() if not state.drained]


class WorkerLink:
    """A worker's side: receives the run, reports deltas, drains on request."""

    def __init__(
        self,
        environment: Environment,
        on_run: Callable[[Scenario, str, int, str | None, Share, list[list[float]]], None],
        report: Callable[[], dict[str, Any] | None],
        on_window: Callable[[str, int], None],
        on_share: Callable[[str, Share], None],
        on_arrivals: Callable[[ArrivalShare], None],
        on_sweep_step: Callable[[str, list[float]], None],
        master_proven: Callable[[], bool],
        give_up: Callable[[str], None],
    ) -> None:
        self.environment = environment
        self.runner = locust_env.worker(environment)
        self.on_run = on_run
        self.report = report
        self.on_window = on_window
        self.master_proven = master_proven  # a run is taken only from a master that proved the secret
        self.give_up = give_up
        self._chunks: dict[str, dict[str, dict[int, str]]] = {}  # by run: each dataset's pieces so far
        # the master opens the measurement window for all: Locust's own reset on a worker
        # (when its spawning completes) would drop requests of the master's window
        environment.reset_stats = False
        runner = self.runner
        runner.register_message(RUN_MESSAGE, self._on_run)
        runner.register_message(DATASET_CHUNK_MESSAGE, self._on_chunk)
        runner.register_message(WINDOW_MESSAGE, lambda msg, **_: self.on_window(msg.data["run_id"], msg.data["epoch"]))
        runner.register_message(SHARE_MESSAGE, lambda msg, **_: on_share(msg.data["run_id"], Share.from_dict(msg.data)))
        runner.register_message(ARRIVALS_MESSAGE, lambda msg, **_: on_arrivals(ArrivalShare.from_dict(msg.data)))
        runner.register_message(SWEEP_STEP_MESSAGE, lambda msg, **_: on_sweep_step(msg.data["run_id"], msg.data["window"]))
        runner.register_message(DRAIN_MESSAGE, self._on_drain, concurrent=True)
        environment.events.report_to_master.add_listener(self._on_report_to_master)

    @property
    def name(self) -> str:
        return f"worker-{self.runner.worker_index}"

    def _on_chunk(self, msg: Any, **_: Any) -> None:
        """A piece of a dataset of the run about to come (kept until its run message)."""
        data = msg.data
        self._chunks.setdefault(data["run_id"], {}).setdefault(data["name"], {})[data["index"]] = data["data"]

    def _on_run(self, msg: Any, **_: Any) -> None:
        data, runner = msg.data, self.runner
        if not self.master_proven():
            logger.error("ignoring a run from a master that has not proven the worker secret")
            return
        if data["version"] != __version__:
            reason = f"harness {__version__} on this worker, {data['version']} on the master: install the same version"
            runner.send_message(REFUSED_MESSAGE, {"reason": reason})
            self.give_up(reason)
            return
        try:
            scenario = scenario_from_dict(data["scenario"], source="scenario from the master")
        except ScenarioError as exc:  # cannot happen with the same version; refuse cleanly
            runner.send_message(REFUSED_MESSAGE, {"reason": str(exc)})
            return
        logger.info("run %s of scenario %s received from the master", data["run_id"], scenario.name)
        chunks, self._chunks = self._chunks.get(data["run_id"], {}), {}
        try:
            scenario._datasets = received_datasets(data.get("datasets") or {}, chunks)
        except DatasetError as exc:
            runner.send_message(REFUSED_MESSAGE, {"reason": str(exc)})
            self.give_up(str(exc))
            return
        scenario._dataset_split = tuple(data.get("dataset_split") or (0, 1))
        share, windows = Share.from_dict(data.get("share")), data.get("sweep_steps") or []
        self.on_run(scenario, data["run_id"], data["epoch"], data.get("startup_host"), share, windows)

    def _on_report_to_master(self, data: dict[str, Any], **_: Any) -> None:
        report = self.report()
        if report is not None:
            data[REPORT_KEY] = {**report, "name": self.name}

    def _on_drain(self, **_: Any) -> None:
        runner = self.runner
        runner.stop()  # in-flight requests end (or are cancelled); test_stop sends the last report
        runner.send_message(DRAINED_MESSAGE, {"name": self.name})

    def watch_master(self, timeout_s: Callable[[], float], on_lost: Callable[[float], None]) -> None:
        """A greenlet: once the master has answered, `on_lost` when it stays silent `timeout_s()`
        seconds (Locust's own limit is 60 s, during which the users would go on)."""
        runner = self.runner
        while True:
            gevent.sleep(1.0)
            last = runner.last_heartbeat_timestamp
            if last and time.time() - last > timeout_s():
                on_lost(time.time() - last)
                return

    def send_final_report(self) -> None:
        """Called once the run's users are stopped: Locust's stop message handler would send
        `client_stopped` before the next periodic report; this sends the last one first."""
        self.runner._send_stats()  # Locust's own (private) report call


def worker_output_dir(output_dir: str, run_id: str, scenario: Scenario, name: str) -> Path:
    """Workers sharing a host with the master (or each other) write to their own folders."""
    return Path(output_dir) / f"{run_id}-{scenario.name}" / name


class StaleReportFilter:
    """A `worker_report` listener registered when the locustfile is imported, so that it runs
    before Locust's own (which merges the report into Locust's stats): it empties a report of an
    older measurement window. One per process; the master's link is set at init."""

    def __init__(self) -> None:
        self.link: MasterLink | None = None

    def __call__(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if self.link is not None:
            self.link.drop_if_stale(data)


STALE_REPORTS = StaleReportFilter()
