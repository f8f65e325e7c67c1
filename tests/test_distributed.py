"""Locust's real master and workers (separate processes on loopback) against the emulator.

The workers run from a folder holding only the locustfile: the scenario reaches them from
the master. Every request must be counted once in the master's Locust stats, its merged
summary and the workers' records, and equal the emulator's own log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from harness.emulator_process import EmulatorProcess
from tests.processes import LOCUST, ROOT, VictoriaMetrics, free_port, percentile, read_jsonl, write_yaml
from tests.test_locust_run import FAST_PROFILE, SCENARIO, messages_truth
from tests.test_recording import INFLUX_ENV

pytestmark = pytest.mark.slow


class Cluster:
    """An emulator, a headless master and workers; everything bounded in time and killed at the end."""

    def __init__(
        self, tmp_path: Path, workers: int, run_time: str, users: int = 12, expect: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.tmp = tmp_path
        self.env = {**os.environ, **(env or {})}
        self.port = free_port()
        self.emulator = EmulatorProcess(profile=write_yaml(tmp_path / "profile.yaml", FAST_PROFILE), ground_truth=tmp_path / "truth.jsonl")
        self.worker_dir = tmp_path / "worker-host"  # no scenarios/ here: workers get it from the master
        self.worker_dir.mkdir()
        shutil.copy(ROOT / "locustfile.py", self.worker_dir)
        self.summary_path = tmp_path / "summary.json"
        self.workers: list[subprocess.Popen[str]] = []
        self.worker_logs: list[str] = []  # stderr of each worker, once finished
        self.emulator.start()
        scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
        self.master = subprocess.Popen(
            [LOCUST, "-f", "locustfile.py", "--master", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(self.port), "--headless", "--only-summary",
             "--expect-workers", str(expect or workers), "-u", str(users), "-r", str(users), "-t", run_time,
             "--host", self.emulator.url or "", "--scenario", str(scenario), "--output-dir", str(tmp_path / "runs"),
             "--stop-timeout", "10", "--summary-json", str(self.summary_path)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env,
        )  # fmt: skip
        for _ in range(workers):
            self.add_worker()

    def add_worker(self, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        worker = subprocess.Popen(
            [LOCUST, "-f", "locustfile.py", "--worker", "--master-host", "127.0.0.1", "--master-port", str(self.port)],
            cwd=self.worker_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**self.env, **(env or {})},
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def finish(self, timeout_s: float = 90) -> tuple[int, str, str]:
        try:
            out, err = self.master.communicate(timeout=timeout_s)
            for worker in self.workers:
                try:
                    self.worker_logs.append(worker.communicate(timeout=15)[1])
                except subprocess.TimeoutExpired:
                    worker.kill()
                    self.worker_logs.append(worker.communicate()[1])
            return self.master.returncode, out, err
        finally:
            for process in [self.master, *self.workers]:
                if process.poll() is None:
                    process.kill()
                    process.wait(10)
            self.emulator.stop()

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text())

    def records(self) -> list[dict]:
        return [r for path in sorted((self.tmp / "runs").rglob("requests.jsonl")) for r in read_jsonl(path)]

    def truth(self) -> list[dict]:
        return messages_truth(self.tmp / "truth.jsonl")


def test_two_workers_without_the_scenario_count_exactly_what_the_server_saw(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, workers=2, run_time="6s")
    code, out, err = cluster.finish()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    summary, records, truth = cluster.summary(), cluster.records(), cluster.truth()

    # exactly once, everywhere
    assert len(records) == len(truth) > 50
    assert sorted(r["request_id"] for r in records) == sorted(t["request_id"] for t in truth)
    assert summary["accounting"] == {"requests": len(truth), "locust_requests": len(truth), "records": len(truth)}
    assert summary["totals"]["requests"] == len(truth) and summary["lost_workers"] == []
    workers = {w["name"]: w for w in summary["workers"]}
    assert set(workers) == {"worker-0", "worker-1"}
    assert Counter(r["worker"] for r in records) == {name: w["requests"] for name, w in workers.items()}
    assert all(w["requests"] > 10 for w in workers.values())  # both carried load
    assert {r["run_id"] for r in records} == {summary["run"]["run_id"]}  # one run id chosen by the master

    # merged HDR percentiles == percentiles of all requests together (3 significant digits)
    ttft = sorted(r["ttft_ms"] for r in records if r["ttft_ms"] is not None and r["outcome"] == "ok")
    for q in (50, 95, 99):
        exact = ttft[max(1, int(q / 100 * len(ttft) + 0.5)) - 1]  # HDR's rank: nearest, halves up
        assert summary["totals"]["ttft_ms"][f"p{q}"] == pytest.approx(exact, rel=2e-3, abs=0.01), q
    # ... and the TTFT median matches the server's truth: when it wrote the first text
    by_id = {t["request_id"]: t for t in truth}
    true_ttft = sorted((by_id[r["request_id"]]["t_first_text_ns"] - r["start_ns"]) / 1e6 for r in records if r["ttft_ms"] is not None)
    assert summary["totals"]["ttft_ms"]["p50"] == pytest.approx(percentile(true_ttft, 50), abs=2.0)
    assert "worker-0:" in out and "worker-1:" in out


def test_a_worker_killed_mid_run_is_named_and_its_reported_requests_kept(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, workers=2, run_time="12s")
    time.sleep(8)  # start-up, then a few reports from both workers
    victim = cluster.workers[0]
    victim.send_signal(signal.SIGKILL)
    killed_at = time.time()
    code, out, err = cluster.finish()
    summary, records = cluster.summary(), cluster.records()
    assert summary["lost_workers"] and len(summary["lost_workers"]) == 1
    lost = summary["lost_workers"][0]
    assert f"{lost}:" in out and "LOST" in out
    survivor = next(w for w in summary["workers"] if w["name"] != lost)
    # the run went on: the surviving worker kept sending requests after the kill
    assert any(r["worker"] == survivor["name"] and r["wall_start_ns"] / 1e9 > killed_at + 1 for r in records)
    # the master kept what the lost worker had reported, and never more than it sent
    lost_reported = next(w for w in summary["workers"] if w["name"] == lost)["requests"]
    lost_sent = sum(1 for r in records if r["worker"] == lost)
    assert 0 < lost_reported <= lost_sent
    assert summary["accounting"]["requests"] == summary["accounting"]["locust_requests"]
    assert summary["accounting"]["requests"] == survivor["requests"] + lost_reported
    assert code in (0, 1), err[-3000:]


def test_a_worker_joining_mid_run_gets_the_scenario_and_users(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, workers=1, run_time="8s", users=8, expect=1)
    time.sleep(4)
    cluster.add_worker()
    code, out, err = cluster.finish()
    summary, records, truth = cluster.summary(), cluster.records(), cluster.truth()
    # rebalancing moves users to the new worker: a moved user's request in flight may be
    # cut off, and is then counted as cancelled (Locust's exit code 1 for a failure)
    failures = Counter(r["outcome"] for r in records if r["outcome"] != "ok")
    assert set(failures) <= {"cancelled"} and code == (1 if failures else 0), (failures, err[-3000:])
    assert {w["name"] for w in summary["workers"]} == {"worker-0", "worker-1"}
    assert Counter(r["worker"] for r in records)["worker-1"] > 0, cluster.worker_logs[-1][-3000:]
    assert len(records) == len(truth) == summary["accounting"]["requests"]


def test_a_worker_with_another_harness_version_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other-version"
    shutil.copytree(ROOT / "harness", other / "harness")
    init = other / "harness" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9-'))
    cluster = Cluster(tmp_path, workers=1, run_time="5s", expect=1)
    time.sleep(1)
    stranger = cluster.add_worker(env={"PYTHONPATH": str(other)})
    code, out, err = cluster.finish()
    stranger_err = cluster.worker_logs[cluster.workers.index(stranger)]
    assert "refusing to run" in stranger_err and "9.9.9-" in stranger_err
    assert "REFUSED" in out and "9.9.9-" in out
    records, truth = cluster.records(), cluster.truth()
    assert len(records) == len(truth) == cluster.summary()["accounting"]["requests"]
    assert {r["worker"] for r in records} == {"worker-0"}


def test_workers_write_every_request_to_influxdb_under_the_masters_run_id(tmp_path: Path) -> None:
    vm = VictoriaMetrics(tmp_path / "vm").start()
    try:
        cluster = Cluster(tmp_path, workers=2, run_time="5s", env={**INFLUX_ENV, "INFLUXDB_V2_URL": vm.url})
        code, out, err = cluster.finish()
        assert code == 0, err[-3000:]
        truth, summary = cluster.truth(), cluster.summary()
        series = vm.export("claude_request_latency_ms")
        assert sum(len(s["values"]) for s in series) == len(truth) == summary["accounting"]["requests"]
        assert {s["metric"]["run_id"] for s in series} == {summary["run"]["run_id"]}
        assert {s["metric"]["worker"] for s in series} == {"worker-0", "worker-1"}
        assert {s["metric"]["worker"] for s in vm.export("harness_health_cpu_percent")} >= {"worker-0", "worker-1"}
        assert summary["points"]["dropped"] == 0
    finally:
        vm.stop()
