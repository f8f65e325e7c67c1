"""Simulated workers for the cluster benchmark (`benchmarks.cluster`): N workers in one process,
each a real Locust `WorkerRunner` (its own connection, heartbeats and stats reports at Locust's
interval) that joins the master with the harness's own handshake (`WorkerGate`), takes the
master's run, and reports what its users did as a real harness worker does: Locust's stats and
the harness's report with HDR-encoded deltas (`RunStats.encode_delta`). Its users send nothing:
each makes up a streamed request's record at a steady rate (a label of the scenario, plausible
timings) and counts it, so the master's merged counts can be checked exactly.

    python -m benchmarks.simulated_workers --master-port P --workers 100 --scenario FILE
        [--rate-per-user 1.0] --out FILE

Prints "joined N" once every worker has joined; on SIGTERM (or once the master drained it, for
every worker) writes its counts and the size of its reports as JSON to --out and exits.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from locust import User, __version__, task  # noqa: E402
from locust.env import Environment  # noqa: E402
from locust.rpc import Message  # noqa: E402

from harness import locust_bounds  # noqa: E402
from harness.credentials import WORKER_SECRET_ENV  # noqa: E402
from harness.distributed import DRAIN_MESSAGE, DRAINED_MESSAGE, REPORT_KEY, RUN_MESSAGE, WINDOW_MESSAGE  # noqa: E402
from harness.scenario import load_scenario  # noqa: E402
from harness.stats import RunStats  # noqa: E402
from harness.timing import OK, TimingRecord  # noqa: E402
from harness.workerauth import WorkerGate  # noqa: E402

IGNORED = ("claude_share", "claude_arrivals", "claude_sweep_step", "claude_dataset_chunk")


class SimulatedWorker:
    """One worker: a real WorkerRunner whose users make up records."""

    def __init__(self, index: int, master_port: int, labels: list[tuple[str, str]], rate_per_user: float, secret: bytes) -> None:
        self.index = index
        self.labels = labels
        self.rate_per_user = rate_per_user
        self.rng = random.Random(index)
        self.stats = RunStats()
        self.sent = 0  # records made up (each counted once, in both stats)
        self.reports = 0
        self.report_bytes: list[int] = []
        self.run_id: str | None = None
        self.epoch = 0
        self.drained = False
        self.denied: str | None = None
        self.environment = Environment(user_classes=[self._user_class()], events=None)
        self.runner = self.environment.create_worker_runner("127.0.0.1", master_port)
        runner = self.runner
        runner.register_message(RUN_MESSAGE, self._on_run)
        runner.register_message(WINDOW_MESSAGE, lambda msg, **_: setattr(self, "epoch", msg.data["epoch"]))
        runner.register_message(DRAIN_MESSAGE, self._on_drain, concurrent=True)
        for name in IGNORED:
            runner.register_message(name, lambda **_: None)
        self.environment.events.report_to_master.add_listener(self._on_report)
        self.gate = WorkerGate(runner, secret, self._on_denied, __version__)

    def _user_class(self) -> type[User]:
        worker = self

        class ScenarioUser(User):  # the master's user class, by name
            @task
            def one(self) -> None:
                gevent.sleep(worker.rng.expovariate(worker.rate_per_user))
                worker.make_request()

        return ScenarioUser

    def make_request(self) -> None:
        """One made-up streamed request: in the harness's stats and Locust's, with no yield between."""
        model, prompt = self.rng.choice(self.labels)
        ttft = self.rng.lognormvariate(5.5, 0.3)  # ~250 ms
        latency = ttft + self.rng.uniform(500, 3000)
        record = TimingRecord(model, prompt, "stream", ttfb_ms=ttft / 2, message_start_ms=ttft / 2, ttft_ms=ttft)
        record.first_content, record.latency_ms, record.last_token_ms = "text", latency, latency
        record.input_tokens, record.output_tokens, record.outcome, record.events = 40, 120, OK, 124
        record.cost_usd, record.window, record.max_gap_ms = 0.0006, self.epoch, 30.0
        self.stats.add(record)
        name = f"{model} {prompt}"
        self.environment.events.request.fire(
            request_type="STREAM", name=name, response_time=latency, response_length=120, exception=None, context={}
        )
        self.environment.stats.get(name, "TTFT").log(ttft, 0)  # type: ignore[arg-type]  # float ms, as the harness logs it
        self.sent += 1

    def _on_run(self, msg: Any, **_: Any) -> None:
        self.run_id, self.epoch = msg.data["run_id"], msg.data["epoch"]

    def _on_drain(self, **_: Any) -> None:
        self.runner.stop()
        self.runner._send_stats()  # the last report (as the harness's worker sends it)
        self.runner.send_message(DRAINED_MESSAGE, {"name": f"worker-{self.runner.worker_index}"})
        self.drained = True

    def _on_denied(self, reason: str) -> None:
        self.denied = reason

    def _on_report(self, data: dict[str, Any], **_: Any) -> None:
        if self.run_id is None:
            return
        data[REPORT_KEY] = {
            "run_id": self.run_id,
            "name": f"worker-{self.runner.worker_index}",
            "stats": self.stats.encode_delta(),
            "health": {"cpu_percent": 10.0, "loop_lag_p99_ms": 1.0, "saturated": False},
            "saturated_samples": 0,
            "unreliable": False,
            "records": self.sent,
            "recorded": self.sent,
            "in_flight": 0,
            "before_window": 0,
            "window": self.epoch,
            "spent_usd": 0.0006 * self.sent,
            "failed_fast": None,
            "points_written": self.sent,
            "points_dropped": 0,
            "arrivals": None,
            "steps": None,
            "headroom": {},
            "conversations": {},
            "caching": [],
            "variants": {},
            "input_sizes": [],
        }
        gevent.spawn(self._measure, data)

    def _measure(self, data: dict[str, Any]) -> None:
        """The report's size as sent (Locust's msgpack message), measured beside the send."""
        self.reports += 1
        self.report_bytes.append(len(Message("stats", data, self.runner.client_id).serialize()))

    def counts(self) -> dict[str, Any]:
        return {"index": self.index, "sent": self.sent, "reports": self.reports, "drained": self.drained, "denied": self.denied}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simulated_workers")
    parser.add_argument("--master-port", type=int, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--rate-per-user", type=float, default=1.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    scenario = load_scenario(args.scenario)
    labels = [(m.model, p.name) for m in scenario.models for p in scenario.prompts]
    secret = os.environ[WORKER_SECRET_ENV].encode()
    locust_bounds.remember_default_args()  # as a harness worker does (at each spawn message)
    stopping = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    workers = []
    for index in range(args.workers):
        workers.append(SimulatedWorker(index, args.master_port, labels, args.rate_per_user, secret))
    deadline = time.monotonic() + 60
    while any(w.runner.worker_index < 0 for w in workers) and time.monotonic() < deadline:
        gevent.sleep(0.2)
    print(f"joined {sum(w.runner.worker_index >= 0 for w in workers)}", flush=True)
    while not stopping.is_set() and not all(w.drained for w in workers):
        stopping.wait(0.5)
    gevent.sleep(1.0)  # the last reports leave
    sizes = [size for w in workers for size in w.report_bytes]
    result = {"workers": [w.counts() for w in workers], "sent": sum(w.sent for w in workers), "report_bytes": sizes}
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
