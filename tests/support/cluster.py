"""Locust's real master and workers (separate processes on loopback) against the emulator: the
`Cluster` that starts, watches and ends them."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.compressed import read_lines
from harness.emulator.process import EmulatorProcess
from harness.records import RECORDS_FILE
from tests.support.processes import LOCUST, ROOT, cluster_env, free_port, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, messages_truth

WAIT_S = 60.0  # for one piece of evidence (a process may be held up for seconds on this VM)
# the run time of a test that stops the run itself (SIGTERM: the master's graceful stop) once it
# has seen what it waits for: above the sum of its waits, so it is never what ends the run
CEILING = "240s"


def complete_lines(path: Path) -> list[str]:
    """The lines of a records file that is written in flushed chunks (or cut short by a kill):
    the complete ones. Empty while the file does not exist."""
    try:
        return [line.decode("utf-8", "replace") for line in read_lines(path)]
    except FileNotFoundError:
        return []


def spawn(command: list[str], cwd: Path, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """A child whose stdout and stderr go to logs.out and logs.err: a pipe nobody reads while the
    test waits would block a chatty child."""
    with logs.with_suffix(".out").open("wb") as out, logs.with_suffix(".err").open("wb") as err:
        return subprocess.Popen(command, cwd=cwd, stdout=out, stderr=err, env=env)


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


class Cluster:
    """An emulator, a headless master and workers, logging to files; a context manager that kills
    whatever still runs at the end, also when the constructor fails half-way."""

    def __init__(
        self,
        tmp_path: Path,
        workers: int,
        run_time: str | None,  # None: none given (a sweep ends by itself)
        users: int | None = 12,  # None: the scenario's (an open loop's max_in_flight)
        expect: int | None = None,
        env: dict[str, str] | None = None,
        profile: dict[str, Any] = FAST_PROFILE,
        spawn_rate: float | None = None,
        master_args: tuple[str, ...] = (),
        scenario: dict[str, Any] = SCENARIO,
    ) -> None:
        self.tmp = tmp_path
        self.env = cluster_env(**(env or {}))
        self.port = free_port()
        self.emulator = EmulatorProcess(profile=write_yaml(tmp_path / "profile.yaml", profile), ground_truth=tmp_path / "truth.jsonl")
        self.worker_dir = tmp_path / "worker-host"  # no scenarios/ here: workers get it from the master
        self.worker_dir.mkdir()
        shutil.copy(ROOT / "locustfile.py", self.worker_dir)
        self.summary_path = tmp_path / "summary.json"
        self.processes: list[subprocess.Popen[bytes]] = []  # what close() ends
        self.workers: list[subprocess.Popen[bytes]] = []  # in the order they were started
        scenario_path = write_yaml(tmp_path / "scenario.yaml", scenario)
        try:
            self.emulator.start()
            self.master = self._spawn(
                [
                    LOCUST,
                    "-f",
                    "locustfile.py",
                    "--master",
                    "--master-bind-host",
                    "127.0.0.1",
                    "--master-bind-port",
                    str(self.port),
                    "--headless",
                    "--only-summary",
                    "--expect-workers",
                    str(expect or workers),
                    *(("-u", str(users), "-r", str(spawn_rate or users)) if users is not None else ()),
                    *(("-t", run_time) if run_time is not None else ()),
                    "--host",
                    self.emulator.url or "",
                    "--scenario",
                    str(scenario_path),
                    "--output-dir",
                    str(tmp_path / "runs"),
                    "--stop-timeout",
                    "10",
                    "--summary-json",
                    str(self.summary_path),
                    "--csv",
                    str(tmp_path / "locust"),
                    *master_args,
                ],
                ROOT,
                self.env,
                tmp_path / "master",
            )
            for _ in range(workers):
                self.add_worker()
        except BaseException:
            self.close()
            raise

    def _spawn(self, command: list[str], cwd: Path, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
        process = spawn(command, cwd, env, logs)
        self.processes.append(process)
        return process

    def add_worker(
        self, env: dict[str, str] | None = None, master_host: str = "127.0.0.1", args: tuple[str, ...] = ()
    ) -> subprocess.Popen[bytes]:
        worker = self._spawn(
            [LOCUST, "-f", "locustfile.py", "--worker", "--master-host", master_host, "--master-port", str(self.port), *args],
            self.worker_dir,
            {**self.env, **(env or {})},
            self.tmp / f"worker-process-{len(self.workers)}",
        )
        self.workers.append(worker)
        return worker

    def worker_err(self, worker: subprocess.Popen[bytes]) -> str:
        return text(self.tmp / f"worker-process-{self.workers.index(worker)}.err")

    def master_err(self) -> str:
        return text(self.tmp / "master.err")

    def wait_for(self, what: str, condition: Callable[[], object], timeout_s: float = WAIT_S) -> None:
        """Poll until `condition()` holds, while the master runs."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.master.poll() is None, f"the master ended before {what}:\n{self.master_err()[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s:\n{self.master_err()[-3000:]}"
            time.sleep(0.25)

    def stop(self) -> None:
        """End the run now, as its run time would: on SIGTERM the master drains the workers,
        writes the summary and tells them to quit."""
        self.master.send_signal(signal.SIGTERM)

    def finish(self, timeout_s: float = 90) -> tuple[int, str, str]:
        """Wait for the master to end the run (the workers quit with it), then end everything:
        the emulator's log is complete afterwards. Returns the master's exit code, stdout, stderr."""
        try:
            code = self.master.wait(timeout_s)
            for worker in self.workers:
                with contextlib.suppress(subprocess.TimeoutExpired):  # killed by close()
                    worker.wait(15)
        finally:
            self.close()
        return code, text(self.tmp / "master.out"), self.master_err()

    def finished(self, timeout_s: float = 90) -> tuple[list[dict], list[dict], dict]:
        """`finish`, which must exit 0 with every worker's records written: the records, the
        server's log of Messages requests and the summary."""
        code, _out, err = self.finish(timeout_s)
        assert code == 0, err[-3000:]
        return self.records(), self.truth(), self.summary()

    def close(self) -> None:
        """Kill whatever still runs and stop the emulator; safe to call again."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.emulator.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text())

    def worker_lines(self, name: str) -> list[str]:
        """The records a worker has written so far (its file is buffered: flushed before each report)."""
        return [line for path in (self.tmp / "runs").glob(f"*/{name}/{RECORDS_FILE}") for line in complete_lines(path)]

    def records(self) -> list[dict]:
        paths = sorted((self.tmp / "runs").rglob(RECORDS_FILE))
        return [json.loads(line) for path in paths for line in complete_lines(path) if line.strip()]

    def truth(self) -> list[dict]:
        return messages_truth(self.tmp / "truth.jsonl")

    def master_requests(self) -> int:
        """The requests in the master's Locust stats so far: the workers' reports it has merged.
        From its CSV, rewritten every second; a read in the middle of a rewrite sees an older
        figure or a cut one, never a larger one."""
        try:
            rows = csv.DictReader(text(self.tmp / "locust_stats.csv").splitlines())
            counts = [row.get("Request Count") or "" for row in rows if row.get("Name") == "Aggregated"]
        except FileNotFoundError:
            return 0
        return int(counts[0]) if counts and counts[0].isdigit() else 0
