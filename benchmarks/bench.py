"""Benchmark of the load generator itself: `python -m benchmarks.bench` (`make bench`).

    python -m benchmarks.bench [--levels 50,100,200,500] [--duration 15] [--json PATH]
                               [--configs baseline,sdk,fast,fast-norecord,fast-conversation] [--bursts 200,500] [--quick]

For each level N (concurrent streams) and each configuration, against the emulator in
its own process (pinned to one CPU, the load generator to another when there are 2+),
with a bench profile that keeps the emulator far from saturation:

- `baseline`: the hand-written AsyncAnthropic loop a user would write
  (`benchmarks.baseline`, its own process, uvloop when installed);
- `sdk`: the harness in Locust with `--transport sdk`;
- `fast`: the harness in Locust with the default fast transport;
- `fast-norecord`: as `fast` with points off (`NO_RECORD_ARGS`): the recording overhead;
- `fast-conversation`: as `fast`, the prompt sent as conversations of 3 turns (each reply kept
  and sent back: `CONVERSATION_SCENARIO`);
- `floor`: the event loop reading the same streams and doing nothing else (`benchmarks.floor`,
  its own process): about the least a gevent load generator pays on this machine, so that the
  harness's own work is the difference;
- `fast-user-stamps` (not by default; the control of the bursts): as `fast`, stamped when read.

Measured over a window that starts `warmup` seconds after all users/tasks run: CPU
seconds of the load-generating process (psutil user+system), requests completed in the
window, CPU per request and per SSE event, throughput, the ratio of CPU per request to the
baseline at the same level, and the client's TTFT error against the emulator's ground truth
(client first-text receive time minus the emulator's first-text write time, both
perf_counter_ns = CLOCK_MONOTONIC) plus the emulator's own lateness (first text written
minus scheduled), so that a late server is visible. At 200 streams the baseline and the
configurations with a ratio target run in several rounds (`--rounds`, `benchmarks.rounds`):
each run is divided by its own round's baseline, and a target reads the median ratio. Then the bursts (`benchmarks.burst`): N streams whose first text the emulator sends in the
same millisecond, the harness's TTFT error against the ground truth. Then the capacity: a raw asyncio
client (bytes only, no parsing) holding 500, 750 and 1000 streams against the emulator on one
core, and the same against `benchmarks.reference`, the least a Python server can do
for the same schedule: its lateness in the same run is the machine's floor (steal time of
the server's core is reported too). Everything goes to a JSON file with the machine,
package versions and the profile.

Absolute times depend on the machine (and on its neighbours on a shared VM): read the
ratios. Targets are printed as PASS/MISS; a miss never fails the process (exit 0 unless
the benchmark itself could not run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, cast

import psutil
import yaml

from benchmarks import burst, cluster, realistic, rounds
from harness.compressed import read_lines
from harness.emulator.process import stop_process
from harness.records import RECORDS_FILE

ROOT = Path(__file__).resolve().parent.parent  # the repository: children run from it
CONFIGS = ("baseline", "sdk", "fast", "fast-norecord", "fast-conversation", "floor", "fast-user-stamps")
DEFAULT_CONFIGS = CONFIGS[:6]
OWN_LOOPS = {"baseline": "benchmarks.baseline", "floor": "benchmarks.floor"}  # configurations that are not Locust: their module
NO_RECORD_ARGS = ["--points", "off"]  # recording (points) off
USER_STAMPS_ENV = {"HARNESS_RECEIVE_STAMPS": "user"}  # fast-user-stamps: stamped when read (the control of kernel stamps)

MODEL = "claude-haiku-4-5"
PROMPT = "Write a haiku about load tests."
MAX_TOKENS = 200

BENCH_PROFILE: dict[str, Any] = {
    "seed": 1,
    "ping": True,
    "models": {
        "default": {
            "ttft_ms": 300,
            "ttft_ms_per_1k_input": 0,
            "output_tps": 50,
            "jitter": 0.1,
            "tokens_per_chunk": 2,
            "output_tokens": {"mean": 60, "sd": 15, "min": 20, "max": 120},
        }
    },
}

BENCH_SCENARIO: dict[str, Any] = {
    "name": "bench",
    "description": "benchmarks.bench: one short streamed prompt",
    "models": [{"model": MODEL, "weight": 1}],
    "prompts": [{"name": "short", "weight": 1, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}],
    "stream": 1.0,
    "seed": 0,
    "timeout_s": 60,
}

CONVERSATION_SCENARIO: dict[str, Any] = {
    **BENCH_SCENARIO,
    "prompts": [{**BENCH_SCENARIO["prompts"][0], "conversation": {"turns": 3}}],
}
CONVERSATION_FILE = "conversation.yaml"  # beside the bench scenario

RAMP_S = 1.0  # users/tasks start evenly over this long (Locust: -r N)
STOP_TIMEOUT_S = 10  # --stop-timeout: requests in flight at the end finish
RUN_TIME_MARGIN_S = 4  # Locust's -t runs this long past the end of the measured window (--quick: 2)
STARTUP_TIMEOUT_S = 90  # a load generator must have all users running within this
EXIT_TIMEOUT_S = 60  # ...and exit this long after its run time

PACKAGES = ("anthropic", "httpx2", "locust", "gevent", "geventhttpclient", "uvloop", "psutil", "pydantic")

HEADER = (
    "Benchmark of the load generator (benchmarks.bench). Absolute times depend on this machine and\n"
    "its neighbours: compare the RATIOS (CPU per request vs the hand-written AsyncAnthropic\n"
    "baseline at the same level) and the TTFT errors against the emulator's ground truth."
)

perf_ns = time.perf_counter_ns


# ----------------------------------------------------------------------------- processes


class Children:
    """Every process the benchmark starts; all are killed at the end, even on Ctrl-C."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[Any]] = []

    def spawn(self, cmd: list[str], cpus: set[int] | None, extra_env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[Any]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        env.pop("ANTHROPIC_API_KEY", None)  # a benchmark on loopback never needs, nor sends, the real key
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, **kwargs)
        self._procs.append(proc)
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, cpus)
        return proc

    stop = staticmethod(stop_process)

    def kill_all(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    proc.kill()
                    proc.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        self._procs.clear()


class OutputWatcher:
    """Drains a child's stdout and stderr in threads; remembers the tail and when a line appeared."""

    def __init__(self, proc: subprocess.Popen[str], patterns: tuple[str, ...] = ()) -> None:
        self.tail: deque[str] = deque(maxlen=2000)
        self.seen: dict[str, int] = {}  # pattern -> perf_counter_ns when first seen
        self.event = threading.Event()
        self._patterns = patterns
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._drain, args=(stream,), daemon=True) for stream in (proc.stdout, proc.stderr) if stream is not None
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, stream: Any) -> None:
        for line in iter(stream.readline, ""):
            now = perf_ns()
            with self._lock:
                self.tail.append(line.rstrip("\n"))
                for pattern in self._patterns:
                    if pattern not in self.seen and pattern in line:
                        self.seen[pattern] = now
                        self.event.set()
        stream.close()

    def text(self) -> str:
        with self._lock:
            return "\n".join(self.tail)

    def join(self, timeout_s: float = 5.0) -> None:
        for thread in self._threads:
            thread.join(timeout_s)


def cpu_seconds(pid: int) -> float | None:
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return times.user + times.system


def cpu_plan() -> tuple[set[int] | None, set[int] | None, list[int]]:
    """(load generator CPUs, emulator CPUs, available CPUs): separate cores when there are 2+."""
    try:
        available = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None, list(range(os.cpu_count() or 1))
    if len(available) >= 2:
        return {available[0]}, {available[1]}, available
    return None, None, available


class Emulator:
    """`python -m harness.emulator` in its own process, pinned, with a ground-truth file."""

    MODULE = "harness.emulator"
    READY = "emulator listening on "

    def __init__(self, children: Children, profile: Path, ground_truth: Path, cpus: set[int] | None, log: Path) -> None:
        self.children = children
        self.ground_truth = ground_truth
        self._truth: list[dict[str, Any]] | None = None
        self._log = log.open("w", encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            self.MODULE,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--profile",
            str(profile),
            "--ground-truth",
            str(ground_truth),
        ]
        self.proc = children.spawn(cmd, cpus, stdout=subprocess.PIPE, stderr=self._log, text=True)
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], 20)
        line = stdout.readline() if ready else ""
        if not line.startswith(self.READY):
            Children.stop(self.proc)
            raise RuntimeError(f"{self.MODULE} did not start: {line.strip()!r} (log: {log})")
        self.url = line[len(self.READY) :].strip()
        self.pid = self.proc.pid

    def stop(self) -> list[dict[str, Any]]:
        """Stop (SIGTERM flushes the ground truth) and return the /v1/messages ground truth."""
        if self._truth is not None:
            return self._truth
        Children.stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        rows = _read_jsonl(self.ground_truth) if self.ground_truth.exists() else []
        self._truth = [row for row in rows if row.get("path") == "/v1/messages"]
        return self._truth


class ReferenceServer(Emulator):
    """`python -m benchmarks.reference`: the machine's floor for the capacity test."""

    MODULE = "benchmarks.reference"
    READY = "reference server listening on "


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in read_lines(path):  # plain or gzip; a line cut by a kill is left out
        if line.strip():
            with contextlib.suppress(ValueError):  # a line cut by a kill
                rows.append(json.loads(line))
    return rows


# ----------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


@dataclass
class Request:
    """One request as the load generator saw it, in perf_counter_ns."""

    request_id: str | None
    start_ns: int
    end_ns: int
    first_text_ns: int | None
    events: int
    ok: bool


def harness_requests(records: list[dict[str, Any]]) -> list[Request]:
    out = []
    for r in records:
        start = int(r.get("start_ns") or 0)
        latency = r.get("latency_ms")
        if not start or latency is None:
            continue
        ttft = r.get("ttft_ms") if r.get("first_content") in (None, "text") else None
        out.append(
            Request(
                r.get("request_id"),
                start,
                start + round(latency * 1e6),
                None if ttft is None else start + round(ttft * 1e6),
                int(r.get("events") or 0),
                r.get("outcome") == "ok",
            )
        )
    return out


def own_loop_requests(records: list[dict[str, Any]]) -> list[Request]:
    return [
        Request(r.get("request_id"), r["start_ns"], r["end_ns"], r.get("first_text_ns"), r["events"], r["outcome"] == "ok") for r in records
    ]


@dataclass
class Window:
    t0_ns: int
    t1_ns: int
    cpu_s: float | None  # load generator
    emulator_cpu_s: float | None
    per_cpu: list[dict[str, float]] | None = None

    @property
    def seconds(self) -> float:
        return (self.t1_ns - self.t0_ns) / 1e9


def _pct(part: float, total: float) -> float:
    return round(100.0 * part / total, 1) if total > 0 else 0.0


def per_cpu_busy(before: list[Any], after: list[Any]) -> list[dict[str, float]]:
    """Per CPU: busy % (everything but idle and iowait) and steal % (time the VM's host took)."""
    out = []
    for a, b in zip(before, after):
        total = sum(b) - sum(a)
        idle = (b.idle - a.idle) + (getattr(b, "iowait", 0) - getattr(a, "iowait", 0))
        steal = getattr(b, "steal", 0) - getattr(a, "steal", 0)
        out.append({"busy_pct": _pct(total - idle, total), "steal_pct": _pct(steal, total)})
    return out


def other_pct(core: dict[str, float], own_pct: float) -> float:
    """Busy time of a core that was neither the measured process nor the host's steal."""
    return round(max(0.0, core["busy_pct"] - core["steal_pct"] - own_pct), 1)


def measure_window(pid: int, emulator_pid: int, warmup_s: float, duration_s: float, alive: Callable[[], bool]) -> Window:
    time.sleep(warmup_s)
    machine0 = psutil.cpu_times(percpu=True)
    t0, cpu0, emu0 = perf_ns(), cpu_seconds(pid), cpu_seconds(emulator_pid)
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline and alive():
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    t1, cpu1, emu1 = perf_ns(), cpu_seconds(pid), cpu_seconds(emulator_pid)
    machine1 = psutil.cpu_times(percpu=True)
    return Window(
        t0,
        t1,
        None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        None if emu0 is None or emu1 is None else emu1 - emu0,
        per_cpu_busy(machine0, machine1),
    )


def analyze(requests: list[Request], truth: list[dict[str, Any]], window: Window, loadgen_cpu: int | None) -> dict[str, Any]:
    """Figures over the requests that completed inside the measured window."""
    inside = [r for r in requests if window.t0_ns <= r.end_ns <= window.t1_ns]
    truth_by_id = {row["request_id"]: row for row in truth if row.get("request_id")}
    seconds = window.seconds
    completed = len(inside)
    events = sum(r.events for r in inside)
    errors = sum(1 for r in inside if not r.ok)
    ttft_err: list[float] = []
    lateness: list[float] = []
    unmatched = 0
    for r in inside:
        row = truth_by_id.get(r.request_id or "")
        if row is None:
            unmatched += 1
            continue
        t_text, scheduled = row.get("t_first_text_ns"), row.get("scheduled_first_text_ns")
        if t_text is not None and scheduled is not None:
            lateness.append((t_text - scheduled) / 1e6)
        if r.ok and r.first_text_ns is not None and t_text is not None:
            ttft_err.append((r.first_text_ns - t_text) / 1e6)
    cpu = window.cpu_s
    noise = None  # busy time of the load generator's core that was not the load generator: neighbours
    if loadgen_cpu is not None and window.per_cpu and cpu is not None:
        noise = other_pct(window.per_cpu[loadgen_cpu], 100 * cpu / seconds)
    return {
        "status": "ok",
        "window_s": round(seconds, 3),
        "requests": completed,
        "errors": errors,
        "events": events,
        "unmatched_ground_truth": unmatched,
        "cpu_s": None if cpu is None else round(cpu, 3),
        "cpu_pct": None if cpu is None else round(100 * cpu / seconds, 1),
        "req_per_s": round(completed / seconds, 2) if seconds > 0 else None,
        "events_per_s": round(events / seconds) if seconds > 0 else None,
        "cpu_ms_per_req": round(1000 * cpu / completed, 4) if cpu is not None and completed else None,
        "cpu_us_per_event": round(1e6 * cpu / events, 3) if cpu is not None and events else None,
        "ttft_err_ms": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in dist(ttft_err).items()},
        "emulator_lateness_ms": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in dist(lateness).items()},
        "emulator_cpu_pct": None if window.emulator_cpu_s is None else round(100 * window.emulator_cpu_s / seconds, 1),
        "loadgen_core_other_pct": noise,
        "per_cpu": window.per_cpu,
    }


# ----------------------------------------------------------------------------- one configuration


@dataclass
class Setup:
    workdir: Path
    profile_path: Path
    scenario_path: Path
    loadgen_cpus: set[int] | None
    emulator_cpus: set[int] | None
    warmup_s: float
    duration_s: float
    margin_s: float = RUN_TIME_MARGIN_S
    children: Children = field(default_factory=Children)


def locust_command(
    setup: Setup, url: str, users: int, transport: str, output_dir: Path, extra: list[str], conversation: bool = False
) -> list[str]:
    # BENCH_LOCUSTFILE: another locustfile (e.g. one that adds probes) for investigations
    locust = Path(sys.executable).with_name("locust")
    head = [str(locust)] if locust.exists() else [sys.executable, "-m", "locust"]
    run_time = math.ceil(RAMP_S + setup.warmup_s + setup.duration_s + setup.margin_s)
    return [
        *head,
        "-f",
        os.environ.get("BENCH_LOCUSTFILE", "locustfile.py"),
        "--headless",
        "--only-summary",
        "--scenario",
        str(setup.scenario_path.with_name(CONVERSATION_FILE) if conversation else setup.scenario_path),
        "--host",
        url,
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{run_time}s",
        "--transport",
        transport,
        "--output-dir",
        str(output_dir),
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        *extra,
    ]


def own_loop_command(setup: Setup, module: str, url: str, users: int, out: Path) -> list[str]:
    """The baseline's (or the floor's) command line: both take the same options."""
    run_time = RAMP_S + setup.warmup_s + setup.duration_s + 1.0
    return [
        sys.executable,
        "-m",
        module,
        "--url",
        url,
        "--concurrency",
        str(users),
        "--ramp",
        str(RAMP_S),
        "--run-time",
        f"{run_time:.1f}",
        "--out",
        str(out),
        "--model",
        MODEL,
        "--max-tokens",
        str(MAX_TOKENS),
        "--prompt",
        PROMPT,
    ]


def run_config(setup: Setup, config: str, level: int, tag: str | None = None) -> dict[str, Any]:
    """One configuration at one level, with its own emulator; never raises for a bad run."""
    tag = tag or f"{config}-{level}"
    cdir = setup.workdir / tag
    cdir.mkdir(parents=True, exist_ok=True)
    base: dict[str, Any] = {"config": config, "level": level}
    try:
        emulator = Emulator(setup.children, setup.profile_path, cdir / "truth.jsonl", setup.emulator_cpus, cdir / "emulator.log")
    except RuntimeError as exc:
        return {**base, "status": "error", "reason": str(exc)}
    proc: subprocess.Popen[str] | None = None
    watcher: OutputWatcher | None = None
    truth: list[dict[str, Any]] = []
    try:
        if config in OWN_LOOPS:
            out = cdir / f"{config}.jsonl"
            cmd = own_loop_command(setup, OWN_LOOPS[config], emulator.url, level, out)
            ready = "all tasks started"
        else:
            transport = "sdk" if config == "sdk" else "fast"
            extra = NO_RECORD_ARGS if config == "fast-norecord" else []
            cmd = locust_command(setup, emulator.url, level, transport, cdir / "runs", extra, config == "fast-conversation")
            ready = "All users spawned"
        base["command"] = " ".join(cmd[cmd.index("-f") if "-f" in cmd else 1 :])
        env = USER_STAMPS_ENV if config == "fast-user-stamps" else None
        proc = setup.children.spawn(cmd, setup.loadgen_cpus, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watcher = OutputWatcher(proc, (ready, "Ramping to"))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while ready not in watcher.seen and proc.poll() is None and time.monotonic() < deadline:
            watcher.event.wait(0.1)
            watcher.event.clear()
        if ready not in watcher.seen:
            Children.stop(proc)
            watcher.join()
            output = watcher.text()
            return {**base, "status": "error", "reason": f"no '{ready}' (exit code {proc.returncode})", "output_tail": output[-2000:]}
        window = measure_window(proc.pid, emulator.pid, setup.warmup_s, setup.duration_s, lambda: proc.poll() is None)
        run_time_s = RAMP_S + setup.warmup_s + setup.duration_s + (setup.margin_s if config not in OWN_LOOPS else 1.0)
        try:
            proc.wait(run_time_s + STOP_TIMEOUT_S + EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            Children.stop(proc)
            base["killed"] = True
        watcher.join()
        (cdir / "loadgen.log").write_text(watcher.text() + "\n", encoding="utf-8")
        base["exit_code"] = proc.returncode
        truth = emulator.stop()
        started = watcher.seen.get("Ramping to")
        if started is not None and config not in OWN_LOOPS:
            base["window_truncated"] = window.t1_ns > started + int((math.ceil(run_time_s) - 0.5) * 1e9)
        if config in OWN_LOOPS:
            if not out.exists():
                return {**base, "status": "error", "reason": f"the {config} wrote no records", "output_tail": watcher.text()[-2000:]}
            requests = own_loop_requests(_read_jsonl(out))
        else:
            files = sorted((cdir / "runs").glob(f"*/{RECORDS_FILE}"))
            if not files:
                return {**base, "status": "error", "reason": f"no {RECORDS_FILE}", "output_tail": watcher.text()[-2000:]}
            requests = harness_requests(_read_jsonl(files[-1]))
        core = min(setup.loadgen_cpus) if setup.loadgen_cpus else None
        return {**base, **analyze(requests, truth, window, core)}
    finally:
        if proc is not None and proc.poll() is None:
            Children.stop(proc)
        emulator.stop()


# ----------------------------------------------------------------------------- emulator capacity


class _RawStream(asyncio.Protocol):
    """One keep-alive connection sending streamed Messages requests back to back; counts bytes only."""

    def __init__(self, request: bytes, counters: dict[str, int], stop: asyncio.Event, done: asyncio.Future[None]) -> None:
        self.request = request
        self.c = counters
        self.stop = stop
        self.done = done
        self.tail = b""
        self.new_response = True
        self.tr: asyncio.Transport  # set by connection_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no asyncio.Transport subclass)
        self._send()

    def _send(self) -> None:
        if self.stop.is_set():
            self.tr.close()
            return
        self.new_response = True
        self.tail = b""
        self.tr.write(self.request)

    def data_received(self, data: bytes) -> None:
        c = self.c
        if self.new_response:
            self.new_response = False
            if not data.startswith(b"HTTP/1.1 200"):
                c["errors"] += 1
                self.tr.close()
                return
        c["bytes"] += len(data)
        c["events"] += data.count(b"\n\n")
        tail = (self.tail + data[-5:])[-5:]
        self.tail = tail
        if tail == b"0\r\n\r\n":
            c["responses"] += 1
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _capacity_client(url: str, streams: int, warmup_s: float, duration_s: float, server_pid: int) -> dict[str, Any]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    body = json.dumps(
        {"model": MODEL, "max_tokens": MAX_TOKENS, "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    ).encode()
    request = (
        f"POST /v1/messages HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"x-api-key: bench\r\nanthropic-version: 2023-06-01\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    counters = {"bytes": 0, "events": 0, "responses": 0, "errors": 0, "connect_errors": 0}
    stop = asyncio.Event()
    done: list[asyncio.Future[None]] = []

    async def open_one(i: int) -> None:
        await asyncio.sleep(RAMP_S * i / streams)
        future: asyncio.Future[None] = loop.create_future()
        try:
            await loop.create_connection(lambda: _RawStream(request, counters, stop, future), host, port)
            done.append(future)
        except OSError:
            counters["connect_errors"] += 1

    await asyncio.gather(*(open_one(i) for i in range(streams)))
    await asyncio.sleep(warmup_s)
    me = psutil.Process()
    machine0 = psutil.cpu_times(percpu=True)
    t0, srv0, own0, c0 = perf_ns(), cpu_seconds(server_pid), sum(me.cpu_times()[:2]), dict(counters)
    await asyncio.sleep(duration_s)
    t1, srv1, own1, c1 = perf_ns(), cpu_seconds(server_pid), sum(me.cpu_times()[:2]), dict(counters)
    machine1 = psutil.cpu_times(percpu=True)
    stop.set()
    if done:
        await asyncio.wait(done, timeout=15)
    seconds = (t1 - t0) / 1e9
    return {
        "t0_ns": t0,
        "t1_ns": t1,
        "window_s": round(seconds, 3),
        "connected": len(done),
        "connect_errors": counters["connect_errors"],
        "http_errors": counters["errors"],
        "server_cpu_pct": None if srv0 is None or srv1 is None else round(100 * (srv1 - srv0) / seconds, 1),
        "client_cpu_pct": round(100 * (own1 - own0) / seconds, 1),
        "events_per_s": round((c1["events"] - c0["events"]) / seconds, 1),
        "responses_per_s": round((c1["responses"] - c0["responses"]) / seconds, 1),
        "mbytes_per_s": round((c1["bytes"] - c0["bytes"]) / seconds / 1e6, 3),
        "per_cpu": per_cpu_busy(machine0, machine1),
    }


CAPACITY_SERVERS = {"reference": ReferenceServer, "emulator": Emulator}


def run_capacity(setup: Setup, server: str, streams: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    """`streams` raw streams against `server` (emulator or reference) on its own core."""
    cdir = setup.workdir / f"capacity-{server}-{streams}"
    cdir.mkdir(parents=True, exist_ok=True)
    head = {"server": server, "streams": streams}
    try:
        proc = CAPACITY_SERVERS[server](setup.children, setup.profile_path, cdir / "truth.jsonl", setup.emulator_cpus, cdir / "server.log")
    except RuntimeError as exc:
        return {"status": "error", "reason": str(exc), **head}
    previous = None
    try:
        if setup.loadgen_cpus:
            previous = os.sched_getaffinity(0)
            os.sched_setaffinity(0, setup.loadgen_cpus)
        loop_factory = None
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            result = runner.run(
                asyncio.wait_for(
                    _capacity_client(proc.url, streams, warmup_s, duration_s, proc.pid),
                    timeout=RAMP_S + warmup_s + duration_s + 60,
                )
            )
        result["client_loop"] = "uvloop" if loop_factory else "asyncio"
    except (TimeoutError, OSError) as exc:
        proc.stop()
        return {"status": "error", "reason": f"{type(exc).__name__}: {exc}", **head}
    finally:
        if previous is not None:
            os.sched_setaffinity(0, previous)
    truth = proc.stop()
    t0, t1 = result.pop("t0_ns"), result.pop("t1_ns")
    lateness = [
        (row["t_first_text_ns"] - row["scheduled_first_text_ns"]) / 1e6
        for row in truth
        if row.get("t_first_text_ns") is not None and row.get("scheduled_first_text_ns") is not None and t0 <= row["t_first_text_ns"] <= t1
    ]
    if not lateness:
        return {"status": "error", "reason": f"no first text in the window in {server}'s ground truth", **head}
    late = dist(lateness)
    if setup.emulator_cpus and result["server_cpu_pct"] is not None:
        core = result["per_cpu"][min(setup.emulator_cpus)]
        result["server_core_other_pct"] = other_pct(core, result["server_cpu_pct"])
        result["server_core_steal_pct"] = core["steal_pct"]
    rounded = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in late.items()}
    return {"status": "ok", **head, **result, "lateness_ms": rounded}


def run_capacities(setup: Setup, streams: list[int], warmup_s: float, duration_s: float, out: list[dict[str, Any]]) -> None:
    """At each stream count: the reference (the machine's floor), then the emulator; each
    result is appended to `out` as soon as it is measured (an interrupt keeps them)."""
    for n in streams:
        for server in CAPACITY_SERVERS:
            began = time.monotonic()
            result = run_capacity(setup, server, n, warmup_s, duration_s)
            out.append(result)
            print(f"  {n:>5} streams capacity/{server:<9} {capacity_summary(result)}  [{time.monotonic() - began:.1f} s]", flush=True)


def add_capacity_ratios(caps: list[dict[str, Any]]) -> None:
    """Server CPU / the reference's at the same stream count (what the emulator costs above the floor)."""
    floor = {c["streams"]: c.get("server_cpu_pct") for c in caps if c["server"] == "reference" and c.get("status") == "ok"}
    for c in caps:
        ref, mine = floor.get(c["streams"]), c.get("server_cpu_pct")
        c["cpu_vs_reference"] = round(mine / ref, 3) if c.get("status") == "ok" and ref and mine is not None else None


# ----------------------------------------------------------------------------- report


def _fmt(value: Any, spec: str = ".2f", width: int = 8) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, (int, float)):
        return format(value, spec).rjust(width)
    return str(value).rjust(width)


# a column: (heading, width, value of a row, format spec)
Column = tuple[str, int, Callable[[dict[str, Any]], Any], str]


def render(
    rows: list[dict[str, Any]],
    key_head: str,
    key: Callable[[dict[str, Any]], str],
    columns: list[Column],
    note: Callable[[dict[str, Any]], str] = lambda r: "",
) -> str:
    """A fixed-width table: key columns, then one right-aligned cell per column (a row that
    could not be measured shows its reason instead)."""
    head = key_head + "".join(f"{name:>{width}}" for name, width, _, _ in columns)
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(key(r) + str(r.get("reason") or r.get("status") or "?"))
            continue
        lines.append(key(r) + "".join(_fmt(get(r), spec, width) for _, width, get, spec in columns) + note(r))
    return "\n".join(lines)


def _ratio(value: float | None) -> str | None:
    return None if value is None else f"{value:.2f}x"


TTFT_ERROR_COLUMNS: list[Column] = [
    ("TTFT err p50", 13, lambda r: r["ttft_err_ms"]["p50"], ".2f"),
    ("p99", 8, lambda r: r["ttft_err_ms"]["p99"], ".2f"),
    ("max", 8, lambda r: r["ttft_err_ms"]["max"], ".2f"),
]
RESULT_COLUMNS: list[Column] = [
    ("req/s", 8, lambda r: r["req_per_s"], ".1f"),
    ("CPU%", 7, lambda r: r["cpu_pct"], ".0f"),
    ("CPU ms/req", 11, lambda r: r["cpu_ms_per_req"], ".3f"),
    ("CPU us/ev", 10, lambda r: r["cpu_us_per_event"], ".1f"),
    ("vs base", 8, lambda r: _ratio(r.get("cpu_per_req_vs_baseline")), ""),
    *TTFT_ERROR_COLUMNS,
    ("emu late p99", 13, lambda r: r["emulator_lateness_ms"]["p99"], ".2f"),
    ("noise%", 7, lambda r: r.get("loadgen_core_other_pct"), ".0f"),
]
CAPACITY_COLUMNS: list[Column] = [
    ("conn", 6, lambda c: c["connected"], "d"),
    ("CPU%", 6, lambda c: c["server_cpu_pct"], ".0f"),
    ("vs ref", 7, lambda c: _ratio(c.get("cpu_vs_reference")), ""),
    ("events/s", 10, lambda c: c["events_per_s"], ".0f"),
    ("resp/s", 8, lambda c: c["responses_per_s"], ".0f"),
    ("late p50", 9, lambda c: c["lateness_ms"]["p50"], ".2f"),
    ("p99", 8, lambda c: c["lateness_ms"]["p99"], ".2f"),
    ("max", 8, lambda c: c["lateness_ms"]["max"], ".2f"),
    ("steal%", 7, lambda c: c.get("server_core_steal_pct"), ".1f"),
    ("noise%", 7, lambda c: c.get("server_core_other_pct"), ".1f"),
    ("client CPU%", 12, lambda c: c["client_cpu_pct"], ".0f"),
]


def _run_name(r: dict[str, Any]) -> str:
    """A configuration's name, with its round after the first (benchmarks/rounds.py)."""
    return r["config"] if r.get("round", 1) == 1 else f"{r['config']} #{r['round']}"


def table(results: list[dict[str, Any]]) -> str:
    return render(
        results,
        f"{'streams':>7} {'config':<20}",
        lambda r: f"{r['level']:>7} {_run_name(r):<20}",
        RESULT_COLUMNS,
        note=lambda r: "  (window truncated)" if r.get("window_truncated") else "",
    )


BURST_COLUMNS: list[Column] = [
    ("requests", 9, lambda r: r["requests"], "d"),
    ("CPU%", 7, lambda r: r["cpu_pct"], ".0f"),
    *TTFT_ERROR_COLUMNS,
    ("emu late p99", 13, lambda r: r["emulator_lateness_ms"]["p99"], ".2f"),
    ("noise%", 7, lambda r: r.get("loadgen_core_other_pct"), ".0f"),
]


BURST_CONFIGS = ("fast", "fast-user-stamps")  # the harness as run, and its control stamped when read


def burst_table(bursts: list[dict[str, Any]]) -> str:
    return render(bursts, f"{'burst':>7} {'config':<17}", lambda r: f"{r['level']:>7} {r['config']:<17}", BURST_COLUMNS)


def timed_run(run: Callable[[], dict[str, Any]], out: list[dict[str, Any]], ok_text: Callable[[dict[str, Any]], str]) -> str:
    """Run one measurement, note how long it took, keep it in `out`; its line for the console."""
    began = time.monotonic()
    result = run()
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    out.append(result)
    text = ok_text(result) if result.get("status") == "ok" else str(result.get("reason"))
    return f"{text}  [{result['elapsed_s']} s]"


def run_mode(setup: Setup, mode: str, profile: dict[str, Any], runs: list[tuple[str, int]], out: list[dict[str, Any]]) -> None:
    """A mode of its own emulator profile: each (configuration, level) with its own emulator."""
    if not runs:
        return
    profile_path = setup.workdir / f"{mode}-profile.yaml"
    profile_path.write_text(yaml.safe_dump(profile, sort_keys=False), encoding="utf-8")
    mode_setup = replace(setup, profile_path=profile_path)
    for config, level in runs:
        line = timed_run(
            lambda: run_config(mode_setup, config, level, tag=f"{mode}-{config}-{level}"),  # noqa: B023  # called at once
            out,
            lambda r: (
                f"{r['events_per_s']} events/s at CPU {r['cpu_pct']}%, TTFT err p50 {r['ttft_err_ms']['p50']} "
                f"p99 {r['ttft_err_ms']['p99']} max {r['ttft_err_ms']['max']} ms"
            ),
        )
        print(f"  {mode} {level:>4} {config:<17} {line}", flush=True)


REALISTIC_COLUMNS: list[Column] = [
    ("events/s", 9, lambda r: r["events_per_s"], "d"),
    ("CPU%", 7, lambda r: r["cpu_pct"], ".0f"),
    ("per core", 9, lambda r: round(100 * r["events_per_s"] / r["cpu_pct"]) if r["cpu_pct"] else None, "d"),
    ("CPU us/ev", 10, lambda r: r["cpu_us_per_event"], ".1f"),
    *TTFT_ERROR_COLUMNS,
    ("emu late p99", 13, lambda r: r["emulator_lateness_ms"]["p99"], ".2f"),
    ("emu CPU%", 9, lambda r: r["emulator_cpu_pct"], ".0f"),
]


def realistic_table(rows: list[dict[str, Any]]) -> str:
    return render(rows, f"{'streams':>7} ", lambda r: f"{r['level']:>7} ", REALISTIC_COLUMNS)


CLUSTER_COLUMNS: list[Column] = [
    ("requests", 9, lambda r: r["sent"], "d"),
    ("CPU%", 7, lambda r: r["master_cpu_pct"], ".1f"),
    ("RSS MB", 8, lambda r: r["master_rss_mb"], ".0f"),
    ("report B", 9, lambda r: r["report_bytes"]["mean"], "d"),
    ("web p50", 8, lambda r: r["web_stats_ms"]["p50"], ".0f"),
    ("p99", 6, lambda r: r["web_stats_ms"]["p99"], ".0f"),
    ("claude p99", 11, lambda r: r["web_claude_ms"]["p99"], ".0f"),
    ("exact", 6, lambda r: "yes" if r["exact"] else "NO", ""),
    ("sim CPU%", 9, lambda r: r["simulator_cpu_pct"], ".0f"),
]


def cluster_table(rows: list[dict[str, Any]]) -> str:
    return render(rows, f"{'workers':>7} ", lambda r: f"{r['workers']:>7} ", CLUSTER_COLUMNS)


def run_master(setup: Setup, workers: int, duration_s: float, out: list[dict[str, Any]]) -> None:
    """The cluster mode: the master on the load generator's core, the simulated workers on the other."""
    workdir = setup.workdir / f"cluster-{workers}"
    workdir.mkdir(parents=True, exist_ok=True)
    line = timed_run(
        lambda: cluster.run_cluster(workdir, workers, duration_s, setup.loadgen_cpus, setup.emulator_cpus, setup.children.spawn),
        out,
        lambda r: f"master CPU {r['master_cpu_pct']}%, {r['sent']} requests, exact {r['exact']}",
    )
    print(f"  cluster of {workers} workers: {line}", flush=True)


def capacity_table(caps: list[dict[str, Any]]) -> str:
    return render(caps, f"{'streams':>7} {'server':<10}", lambda c: f"{c['streams']:>7} {c['server']:<10}", CAPACITY_COLUMNS)


def capacity_summary(cap: dict[str, Any]) -> str:
    if cap.get("status") != "ok":
        return str(cap.get("reason"))
    return f"CPU {cap['server_cpu_pct']}%, {cap['events_per_s']:.0f} events/s, first-text lateness p99 {cap['lateness_ms']['p99']} ms"


def targets(
    results: list[dict[str, Any]],
    caps: list[dict[str, Any]],
    burst_results: list[dict[str, Any]],
    burst_levels: list[int],
    realistic_results: list[dict[str, Any]] | None = None,
    cluster_results: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    by: dict[tuple[str, int], dict[str, Any]] = {}  # the round with the worst TTFT p99 error (rounds: benchmarks/rounds.py)
    for r in results:
        key, p99 = (r["config"], r["level"]), r.get("ttft_err_ms", {}).get("p99")
        if r.get("status") == "ok" and p99 is not None and (key not in by or p99 > by[key]["ttft_err_ms"]["p99"]):
            by[key] = r  # (the floor times nothing: it has no TTFT error)
    ratio = {(s["config"], s["level"]): s for s in rounds.summarize(results)}

    def target(name: str, value: float | None, limit: float, missing: str, at_least: bool = False) -> dict[str, Any]:
        met = value is not None and (value >= limit if at_least else value <= limit)
        status = "n/a" if value is None else ("PASS" if met else "MISS")
        return {"target": name, "value": value, "limit": limit, "status": status, **({"reason": missing} if value is None else {})}

    fast200, fast100 = by.get(("fast", rounds.RATIO_LEVEL)), by.get(("fast", 100))
    fast_ratio, conversation_ratio = ratio.get(("fast", rounds.RATIO_LEVEL)), ratio.get(("fast-conversation", rounds.RATIO_LEVEL))
    bursts = [target(*t) for t in burst.targets(burst_results, burst_levels)]
    streams = [target(*realistic.target(realistic_results), at_least=True)] if realistic_results else []
    masters = [target(*cluster.target(c)) for c in cluster_results or []]
    out = [
        target(
            "fast CPU/request <= 0.2x baseline at 200 streams (median of the rounds' paired ratios)",
            fast_ratio["median"] if fast_ratio else None,
            0.2,
            "fast or baseline at 200 not measured",
        ),
        target(
            "fast-conversation CPU/request <= 0.2x baseline at 200 streams (median of the rounds' paired ratios)",
            conversation_ratio["median"] if conversation_ratio else None,
            0.2,
            "fast-conversation or baseline at 200 not measured",
        ),
        target(
            "fast TTFT p99 error <= 20 ms at 200 streams",
            fast200["ttft_err_ms"]["p99"] if fast200 else None,
            20.0,
            "fast at 200 not measured",
        ),
        target(
            "fast TTFT p99 error <= 5 ms at 100 streams",
            fast100["ttft_err_ms"]["p99"] if fast100 else None,
            5.0,
            "fast at 100 not measured",
        ),
        *bursts,
        *streams,
        *masters,
    ]
    cap = {(c["server"], c["streams"]): c for c in caps if c.get("status") == "ok"}
    n = min((streams for server, streams in cap if server == "emulator" and streams >= 1000), default=None)
    emulator, reference = cap.get(("emulator", n)), cap.get(("reference", n))
    t = target(
        f"emulator: {n or 1000} streams on one core, first-text lateness p99 <= 5 ms",
        emulator["lateness_ms"]["p99"] if emulator else None,
        5.0,
        "no capacity run at 1000+ streams",
    )
    if emulator and reference:
        # the same target met by the reference server in the same run: what the machine allows
        floor = reference["lateness_ms"]["p99"]
        t["floor"] = {"reference_p99_ms": floor, "steal_pct": reference.get("server_core_steal_pct")}
        if t["status"] == "MISS" and floor > 5.0:
            t["reason"] = (
                f"the machine's floor misses it too: the reference server's p99 in the same run was "
                f"{floor:.3g} ms (steal {reference.get('server_core_steal_pct')}%)"
            )
    out.append(t)
    return out


def machine_info(cpus: list[int], loadgen: set[int] | None, emulator: set[int] | None) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_available": cpus,
        "loadgen_cpus": sorted(loadgen) if loadgen else None,
        "emulator_cpus": sorted(emulator) if emulator else None,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "packages": versions,
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--levels", default=None, help="concurrent streams, comma-separated (default 50,100,200,500)")
    p.add_argument("--duration", type=float, default=None, help="seconds of measured load per configuration (default 15)")
    p.add_argument("--warmup", type=float, default=None, help="seconds after all users run before measuring (default 3)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"rounds of the baseline and the ratio configurations at {rounds.RATIO_LEVEL} streams (default {rounds.ROUNDS}; --quick 1)",
    )
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"subset of {','.join(CONFIGS)}")
    p.add_argument("--bursts", default=None, help="burst sizes, comma-separated (default 200,500; 0 skips the bursts)")
    p.add_argument("--realistic", default=None, help="stream counts of the realistic-stream mode (default 150,250,350,450; 0 skips it)")
    p.add_argument("--cluster", type=int, default=None, help="simulated workers of one master (default 100; 0 skips the cluster mode)")
    p.add_argument("--cluster-duration", type=float, default=None, help="seconds the cluster mode measures (default 180)")
    p.add_argument("--capacity-streams", default=None, help="stream counts of the capacity test, comma-separated (default 500,750,1000)")
    p.add_argument("--no-capacity", action="store_true", help="skip the capacity test (emulator and reference server)")
    p.add_argument("--capacity-only", action="store_true", help="run only the capacity test")
    p.add_argument("--json", default=None, help="result file (default runs/bench-<timestamp>.json)")
    p.add_argument("--quick", action="store_true", help="smoke run: levels 10, duration 3, short warm-up and capacity test")
    p.add_argument("--keep", action="store_true", help="keep the per-run folders (records, ground truth, logs)")
    return p


def _int_list(parser: argparse.ArgumentParser, option: str, text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        parser.error(f"{option}: not a list of integers: {text!r}")
    if not values or min(values) < 1:
        parser.error(f"{option}: give at least one positive number")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    quick = args.quick
    args.levels = _int_list(parser, "--levels", args.levels or ("10" if quick else "50,100,200,500"))
    default_bursts = "20" if quick else ",".join(map(str, burst.LEVELS))
    args.bursts = [] if args.bursts == "0" or args.capacity_only else _int_list(parser, "--bursts", args.bursts or default_bursts)
    default_realistic = "20" if quick else ",".join(map(str, realistic.LEVELS))
    skip_realistic = args.realistic == "0" or args.capacity_only
    args.realistic = [] if skip_realistic else _int_list(parser, "--realistic", args.realistic or default_realistic)
    args.cluster = 0 if args.capacity_only else (args.cluster if args.cluster is not None else (5 if quick else cluster.WORKERS))
    args.cluster_duration = args.cluster_duration if args.cluster_duration is not None else (8.0 if quick else 180.0)
    if args.cluster < 0 or not 0 < args.cluster_duration < math.inf:
        parser.error("--cluster must be >= 0 and --cluster-duration > 0 (finite seconds)")
    args.capacity_streams = _int_list(parser, "--capacity-streams", args.capacity_streams or ("100" if quick else "500,750,1000"))
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown or not args.configs:
        parser.error(f"--configs: unknown {unknown}; choose from {','.join(CONFIGS)}")
    args.configs = [c for c in CONFIGS if c in args.configs]  # baseline first: ratios need it
    if args.capacity_only and args.no_capacity:
        parser.error("--capacity-only and --no-capacity exclude each other")
    if args.capacity_only:
        args.levels = []
    args.rounds = args.rounds if args.rounds is not None else (1 if quick else rounds.ROUNDS)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    args.duration = args.duration if args.duration is not None else (3.0 if quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 3.0)
    if not (args.duration > 0 and args.warmup >= 0 and math.isfinite(args.duration + args.warmup)):
        parser.error("--duration must be > 0 and --warmup >= 0 (finite seconds)")
    args.capacity_duration = 2.0 if quick else args.duration
    args.capacity_warmup = 1.0 if quick else args.warmup
    if args.json is None:
        args.json = str(ROOT / "runs" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json")
    return args


def _sigterm(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadgen_cpus, emulator_cpus, cpus = cpu_plan()
    workdir = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    profile_path = workdir / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(BENCH_PROFILE, sort_keys=False), encoding="utf-8")
    scenario_path = workdir / "scenario.yaml"
    scenario_path.write_text(yaml.safe_dump(BENCH_SCENARIO, sort_keys=False), encoding="utf-8")
    scenario_path.with_name(CONVERSATION_FILE).write_text(yaml.safe_dump(CONVERSATION_SCENARIO, sort_keys=False), encoding="utf-8")
    setup = Setup(
        workdir,
        profile_path,
        scenario_path,
        loadgen_cpus,
        emulator_cpus,
        args.warmup,
        args.duration,
        margin_s=2.0 if args.quick else RUN_TIME_MARGIN_S,
    )
    previous_handler = signal.signal(signal.SIGTERM, _sigterm)
    report: dict[str, Any] = {
        "benchmark": "benchmarks.bench",
        "note": "Absolute times depend on the machine; compare ratios (CPU per request vs the baseline) and TTFT errors.",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(cpus, loadgen_cpus, emulator_cpus),
        "settings": {
            "levels": args.levels,
            "configs": args.configs,
            "rounds": {"level": rounds.RATIO_LEVEL, "rounds": args.rounds, "configs": list(rounds.RATIO_CONFIGS)},
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "ramp_s": RAMP_S,
            "stop_timeout_s": STOP_TIMEOUT_S,
            "quick": args.quick,
            "no_record_args": NO_RECORD_ARGS,
            "capacity_streams": None if args.no_capacity else args.capacity_streams,
            "window": "requests completed between warm-up end and warm-up end + duration",
            "ttft_error": "client first-text receive time - emulator t_first_text_ns (perf_counter_ns)",
            "emulator_lateness": "emulator t_first_text_ns - scheduled_first_text_ns",
            "baseline": "AsyncAnthropic(max_retries=0, http_client=DefaultAsyncHttpxClient(limits>=N)), SDK defaults otherwise",
            "floor": "gevent, the streams read in the event loop's callback with kernel stamps, nothing decoded (benchmarks.floor)",
        },
        "profile": BENCH_PROFILE,
        "scenario": BENCH_SCENARIO,
        "conversation_scenario": CONVERSATION_SCENARIO,
        "burst_profile": burst.PROFILE,
        "realistic_profile": realistic.PROFILE,
        "results": [],
        "ratios": [],
        "bursts": [],
        "realistic": [],
        "cluster": [],
        "capacity": [],
    }
    results: list[dict[str, Any]] = report["results"]
    print(HEADER, flush=True)
    print(
        f"CPUs: load generator {sorted(loadgen_cpus) if loadgen_cpus else 'any'}, "
        f"emulator {sorted(emulator_cpus) if emulator_cpus else 'any'}; work dir {workdir}",
        flush=True,
    )
    interrupted = False
    try:
        if loadgen_cpus:
            os.sched_setaffinity(0, loadgen_cpus)  # this process only waits; keep it off the emulator's core
        for level, config, round_ in rounds.plan(args.levels, args.configs, args.rounds):
            tag = f"{config}-{level}" + (f"-round{round_}" if round_ > 1 else "")
            line = timed_run(
                lambda: {**run_config(setup, config, level, tag), "round": round_},  # noqa: B023  # called at once
                results,
                lambda r: f"{r['requests']} requests, CPU {r['cpu_ms_per_req']} ms/req, TTFT err p99 {r['ttft_err_ms']['p99']} ms",
            )
            print(f"  {level:>5} streams {_run_name({'config': config, 'round': round_}):<20} {line}", flush=True)
        run_mode(setup, "burst", burst.PROFILE, [(c, n) for n in args.bursts for c in BURST_CONFIGS], report["bursts"])
        run_mode(setup, "realistic", realistic.PROFILE, [("fast", n) for n in args.realistic], report["realistic"])
        if args.cluster:
            run_master(setup, args.cluster, args.cluster_duration, report["cluster"])
        if not args.no_capacity:
            run_capacities(setup, args.capacity_streams, args.capacity_warmup, args.capacity_duration, report["capacity"])
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping every process", file=sys.stderr, flush=True)
    finally:
        setup.children.kill_all()
        signal.signal(signal.SIGTERM, previous_handler)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rounds.add_ratios(results)
    report["ratios"] = rounds.summarize(results)
    add_capacity_ratios(report["capacity"])
    report["targets"] = targets(results, report["capacity"], report["bursts"], args.bursts, report["realistic"], report["cluster"])
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["interrupted"] = interrupted
    report["machine"]["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print()
    print(HEADER)
    print(
        f"profile: ttft {BENCH_PROFILE['models']['default']['ttft_ms']} ms, {BENCH_PROFILE['models']['default']['output_tps']} "
        f"tokens/s, 2 tokens/chunk, ~60 output tokens; window {args.duration:g} s after {args.warmup:g} s warm-up; "
        f"TTFT err = client first text - emulator first-text write (ms)"
    )
    if results:
        print(
            "vs base = CPU per request / the baseline's at the same level; emu late = emulator first text written - "
            "scheduled (ms); noise% = busy time of the load generator's core used by other processes"
        )
        print(table(results))
        for summary in report["ratios"]:
            if summary["level"] == rounds.RATIO_LEVEL:
                print(rounds.describe(summary))
    if report["bursts"]:
        print()
        print(
            f"bursts: N users started together, each stream's first text sent by the emulator on the same {burst.GRID_MS} ms "
            "grid line (then a token every 20 ms, 30 in all);\nTTFT err = client first text - emulator first-text write (ms)"
        )
        print(burst_table(report["bursts"]))
    if report["realistic"]:
        print()
        print(
            "realistic streams: ~300 output tokens at 80 tokens/s, one token per delta; events/s = SSE events completed in the "
            "window per second;\nper core = events/s / the load generator's CPU share (an extrapolation, for sizing)"
        )
        print(realistic_table(report["realistic"]))
    if report["cluster"]:
        print()
        print(
            "cluster: a real master (its web UI polled every 2 s) and N simulated workers sending real reports at Locust's "
            "interval;\nCPU = the master process only; exact = the master's merged counts equal the requests the workers made up"
        )
        print(cluster_table(report["cluster"]))
    if report["capacity"]:
        print()
        print(
            "capacity: a raw client (bytes only) on the load generator's core holding N streams against the server on "
            "its own core;\nreference = the least a Python server can do for the same schedule (the machine's floor); "
            "late = first text written - scheduled (ms);\nsteal% = time the VM's host took from the server's core; "
            "noise% = that core's busy time used by other processes"
        )
        print(capacity_table(report["capacity"]))
    for t in report["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        print(f"{t['status']:>4}  {t['target']}: {value}" + (f" ({t['reason']})" if t.get("reason") else ""))
    print(f"results: {out}" + (f"; run folders kept in {workdir}" if args.keep else ""))
    if interrupted:
        return 130
    # a target miss is a finding, not a failure; a configuration that could not be measured is
    failed = [r for r in results + report["capacity"] if r.get("status") == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
