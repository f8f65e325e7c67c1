"""Helpers for tests that start real processes: Locust runs, their outputs, ground truth."""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from harness.credentials import WORKER_SECRET_ENV
from harness.emulator.process import stop_process
from harness.records import RECORDS_FILE, read_records

ROOT = Path(__file__).resolve().parents[2]
LOCUST = str(Path(sys.executable).with_name("locust"))
# a master and its workers share a secret (harness/workerauth.py): every cluster a test starts has this one
CLUSTER_ENV = {WORKER_SECRET_ENV: "tests-worker-secret-7f3a9c1e"}


def cluster_env(**extra: str) -> dict[str, str]:
    """The environment of a master or worker a test starts."""
    return {**os.environ, **CLUSTER_ENV, **extra}


@dataclass
class LocustResult:
    returncode: int
    stdout: str
    stderr: str
    output_dir: Path

    @property
    def run_dir(self) -> Path:
        (run_dir,) = [p for p in self.output_dir.iterdir() if p.is_dir()]
        return run_dir

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.run_dir / RECORDS_FILE)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, plain or gzip (also one still being written)."""
    return read_records(path)


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_lines(path: Path, items: list[Any]) -> Path:
    """`items` as JSON lines."""
    path.write_text("\n".join(json.dumps(item) for item in items) + "\n", encoding="utf-8")
    return path


def run_locust(
    tmp_path: Path,
    scenario: Path,
    *args: str,
    users: int | None = 10,  # None: none given (an open loop's users are its max_in_flight)
    run_time: str | None = "4s",  # None: none given (the scenario's stages set it)
    timeout_s: float = 120,
    env: dict[str, str] | None = None,
    on_stderr_line: Callable[[str], None] | None = None,
) -> LocustResult:
    """`locust --headless` as a subprocess from the repo root; bounded in time. `on_stderr_line`
    sees each line the run logs as it comes, so a test can act on what the run reports."""
    output_dir = tmp_path / "runs"
    command = [
        LOCUST,
        "-f",
        "locustfile.py",
        "--headless",
        "--only-summary",
        "--scenario",
        str(scenario),
        "--output-dir",
        str(output_dir),
        *(["-u", str(users), "-r", str(users)] if users is not None else []),
        *(["-t", run_time] if run_time is not None else []),
        *args,
    ]
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    stdout: list[str] = []
    stderr: list[str] = []

    def collect(pipe: IO[str], lines: list[str], callback: Callable[[str], None] | None) -> None:
        for text in pipe:
            lines.append(text)
            if callback is not None:
                callback(text)

    readers = [
        threading.Thread(target=collect, args=(process.stdout, stdout, None)),
        threading.Thread(target=collect, args=(process.stderr, stderr, on_stderr_line)),
    ]
    for reader in readers:
        reader.start()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finally:
        for reader in readers:
            reader.join(30)
    return LocustResult(process.returncode, "".join(stdout), "".join(stderr), output_dir)


class Background(threading.Thread):
    """A test's side action (an outage, a late start) beside a run; `finish` re-raises its failure."""

    def __init__(self, action: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.action = action
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.action()
        except BaseException as error:  # handed to the test's own thread
            self.error = error

    def finish(self, timeout_s: float = 120) -> None:
        self.join(timeout_s)
        assert not self.is_alive(), "the background action did not end"
        if self.error is not None:
            raise self.error


def by_request_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    index = {row["request_id"]: row for row in rows}
    assert len(index) == len(rows), "request ids must be unique"
    return index


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def own_address() -> str:
    """This machine's own non-loopback IPv4 address (what another host on its network would reach)."""
    import psutil

    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        for address in addresses:
            if name in up and address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    raise AssertionError("this machine has no non-loopback IPv4 address")


_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port for a server a test starts, safe from the race between this check and the
    server's bind: it lies below the kernel's ephemeral range (which bind(0) and every outgoing
    connection draw from), and it is handed out once per test session; the pytest processes of
    a parallel run (tests/support/shards.py, `TEST_SHARD=i/N`) each draw from their own ports."""
    rng = random.SystemRandom()
    high = _ephemeral_low() - 1
    index, _, count = os.environ.get("TEST_SHARD", "0/1").partition("/")
    for _ in range(1000):
        port = rng.randint(high - 12_000, high)
        if port in _handed_out or port % int(count) != int(index):
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


# the InfluxDB settings of a run that writes its points to a test server (each test adds INFLUXDB_V2_URL)
INFLUX_ENV = {"INFLUXDB_V2_TOKEN": "test-token", "INFLUXDB_V2_ORG": "test-org", "INFLUXDB_V2_BUCKET": "test"}


class VictoriaMetrics:
    """Debian's victoria-metrics on loopback: it accepts influxdb-client's /api/v2/write."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20) -> VictoriaMetrics:
        binary = shutil.which("victoria-metrics")
        assert binary, "victoria-metrics is not installed: `make test` installs it (apt)"
        self._process = subprocess.Popen(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.data_dir}",
                "-retentionPeriod=100y",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("victoria-metrics did not start")

    def stop(self) -> None:
        """A graceful stop (SIGTERM): the database keeps every point it acknowledged."""
        if self._process is not None:
            stop_process(self._process, timeout_s=20)
            self._process = None

    def export(self, metric_regex: str) -> list[dict[str, Any]]:
        """Every stored series matching the regex, after a forced flush (values, timestamps)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        query = urllib.parse.urlencode({"match[]": f'{{__name__=~"{metric_regex}"}}', "end": int(time.time()) + 60})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{query}", timeout=30) as response:
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]


class FaultProxy:
    """tests/support/fault_proxy.py in its own process, in front of a server on `upstream_port`:
    `set("refuse")`, `set("stall")` and `set("pass")` simulate an outage while the server stays up."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.fault_proxy", str(self.port), str(upstream_port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._expect("ready")

    def _expect(self, answer: str, timeout_s: float = 20) -> None:
        stdout = self._process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline().strip() if ready else f"nothing within {timeout_s} s"
        assert line == answer, f"fault proxy said {line!r}, expected {answer!r}"

    def set(self, mode: str) -> None:
        """Switch the mode and return once it is in effect."""
        assert self._process.stdin is not None
        self._process.stdin.write(mode + "\n")
        self._process.stdin.flush()
        self._expect(f"ok {mode}")

    def stop(self) -> None:
        stop_process(self._process)
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                pipe.close()


def check_in_child(module: str, function: str, *args: str) -> None:
    """Run `module.function(*args)` in a fresh interpreter (Locust's internals checked on their
    own, away from this process's state: importing Locust monkey-patches it); it must succeed."""
    process = subprocess.run(
        [sys.executable, "-c", f"from {module} import {function} as check; check(*{args!r})"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.returncode == 0, process.stderr[-3000:]
