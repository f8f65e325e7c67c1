"""The cluster mode of `benchmarks.bench`: how many workers one master carries.

A real master (`locust --master` with the harness and its web UI, on its own core) and N
simulated workers (`benchmarks.simulated_workers`, one process on the other core): real
WorkerRunners that join with the harness's handshake and send real reports (Locust's stats and
the harness's HDR-encoded deltas) at Locust's interval, for requests they make up at a steady
rate. The test is started and stopped from the web UI, as an operator would. Measured over the
window: the master process's CPU (its own, nothing else), the size of the workers' reports, the
web UI's response time (Locust's /stats/requests and the harness's /claude/stats, polled as the
page does), and whether the master's merged counts equal what the workers made up, exactly.
"""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

from harness.credentials import WORKER_SECRET_ENV

WORKERS = 100
USERS_PER_WORKER = 5
RATE_PER_USER = 2.0  # requests/s a simulated user makes up: 1,000 requests/s across 100 workers
CPU_LIMIT_PCT = 50.0
# the run lasts until the benchmark stops it (no run time); six labels, as a small real scenario has
SCENARIO: dict[str, Any] = {
    "name": "cluster-bench",
    "description": "benchmarks.cluster: the labels simulated workers report",
    "models": [{"model": "claude-haiku-4-5", "weight": 1}, {"model": "claude-sonnet-4-5", "weight": 1}],
    "prompts": [
        {"name": name, "weight": 1, "messages": [{"role": "user", "content": "Hello."}], "max_tokens": 200}
        for name in ("classify", "summarize", "long-context")
    ],
    "stream": 1.0,
}
POLL_S = 2.0  # the web UI page polls about this often
START_TIMEOUT_S = 90.0


def _get(url: str) -> tuple[float, bytes]:
    """A GET's response time (ms) and body."""
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    return (time.perf_counter() - began) * 1000, body


def _post(url: str, form: dict[str, Any] | None = None) -> bytes:
    data = urllib.parse.urlencode(form or {}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=120) as response:
        return response.read()


def _wait_for(what: str, condition: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.2)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def target(result: dict[str, Any] | None) -> tuple[str, float | None, float, str]:
    """(name, value, limit, why missing): the master's CPU, counted only when its merged counts are exact."""
    workers = result["workers"] if result else WORKERS
    name = f"master: {workers} workers with < {CPU_LIMIT_PCT:g} % of one core, merged counts exact"
    if result is None or result.get("status") != "ok":
        return name, None, CPU_LIMIT_PCT, (result or {}).get("reason", "no cluster run")
    if not result["exact"]:
        return name, None, CPU_LIMIT_PCT, f"merged counts not exact: sent {result['sent']}, merged {result['merged']}"
    return name, result["master_cpu_pct"], CPU_LIMIT_PCT, ""


def run_cluster(
    workdir: Path,
    workers: int,
    duration_s: float,
    master_cpus: set[int] | None,
    sim_cpus: set[int] | None,
    spawn: Any,
) -> dict[str, Any]:
    """One master with `workers` simulated workers for `duration_s` of measured load; `spawn` is
    the benchmark's process starter (cmd, cpus, env, **Popen kwargs). Never raises for a bad run."""
    master_port, web_port = _free_port(), _free_port()
    base = {"mode": "cluster", "workers": workers, "users": workers * USERS_PER_WORKER, "duration_s": duration_s}
    env = {WORKER_SECRET_ENV: secrets.token_hex(16)}
    scenario = workdir / "cluster-scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO, sort_keys=False), encoding="utf-8")
    web = f"http://127.0.0.1:{web_port}"
    master_log = (workdir / "master.log").open("wb")
    master = spawn(
        [
            str(Path(sys.executable).with_name("locust")),
            "-f",
            "locustfile.py",
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(master_port),
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(web_port),
            "--scenario",
            str(scenario),
            "--output-dir",
            str(workdir / "runs"),
            "--points",
            "off",
            "--stop-timeout",
            "10",
        ],
        master_cpus,
        env,
        stdout=master_log,
        stderr=subprocess.STDOUT,
    )
    out = workdir / "simulated.json"
    sim = spawn(
        [
            sys.executable,
            "-m",
            "benchmarks.simulated_workers",
            "--master-port",
            str(master_port),
            "--workers",
            str(workers),
            "--scenario",
            str(scenario),
            "--rate-per-user",
            str(RATE_PER_USER),
            "--out",
            str(out),
        ],
        sim_cpus,
        env,
        stdout=subprocess.PIPE,
        stderr=(workdir / "simulated.log").open("wb"),
        text=True,
    )
    try:
        _wait_for("web UI", lambda: _answers(web), START_TIMEOUT_S)
        joined = sim.stdout.readline().strip() if sim.stdout is not None else ""
        if joined != f"joined {workers}":
            return {**base, "status": "error", "reason": f"the simulated workers said {joined!r}"}
        _wait_for("workers in the web UI", lambda: len(json.loads(_get(web + "/stats/requests")[1])["workers"]) == workers, 60)
        _post(web + "/swarm", {"user_count": workers * USERS_PER_WORKER, "spawn_rate": workers * USERS_PER_WORKER})
        time.sleep(5.0)  # every user runs, a report or two in
        measured = _measure(master.pid, sim.pid, web, duration_s)
        _post(web + "/stop")
        _wait_for("end of the simulated workers (drained by the master)", lambda: sim.poll() is not None, 60)
        counts = json.loads(out.read_text(encoding="utf-8"))
        _, summary_body = _get(web + "/claude/summary.json")
        _, locust_body = _get(web + "/stats/requests")
        return {**base, "status": "ok", **measured, **_exactness(counts, json.loads(summary_body), json.loads(locust_body))}
    except (RuntimeError, OSError, ValueError) as exc:
        return {**base, "status": "error", "reason": f"{type(exc).__name__}: {exc}"}
    finally:
        for process in (sim, master):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        master_log.close()


def _answers(web: str) -> bool:
    try:
        _get(web + "/claude/stats")
    except OSError:
        return False
    return True


def _measure(pid: int, sim_pid: int, web: str, duration_s: float) -> dict[str, Any]:
    """The master's CPU over the window (its process only), the web UI's response times, and the
    simulated workers' CPU (near 100 %: they, not the master, are the limit of the run)."""
    process, sim = psutil.Process(pid), psutil.Process(sim_pid)
    times0, sim0, t0 = process.cpu_times(), sim.cpu_times(), time.monotonic()
    locust_ms: list[float] = []
    claude_ms: list[float] = []
    while time.monotonic() - t0 < duration_s:
        locust_ms.append(_get(web + "/stats/requests")[0])
        claude_ms.append(_get(web + "/claude/stats")[0])
        time.sleep(POLL_S)
    times1, sim1, seconds = process.cpu_times(), sim.cpu_times(), time.monotonic() - t0
    cpu = (times1.user - times0.user) + (times1.system - times0.system)
    sim_cpu = (sim1.user - sim0.user) + (sim1.system - sim0.system)
    return {
        "window_s": round(seconds, 1),
        "master_cpu_pct": round(100 * cpu / seconds, 1),
        "simulator_cpu_pct": round(100 * sim_cpu / seconds, 1),
        "master_rss_mb": round(process.memory_info().rss / 2**20, 1),
        "web_stats_ms": {"p50": _pct(locust_ms, 0.5), "p99": _pct(locust_ms, 0.99), "max": _pct(locust_ms, 1.0), "n": len(locust_ms)},
        "web_claude_ms": {"p50": _pct(claude_ms, 0.5), "p99": _pct(claude_ms, 0.99), "max": _pct(claude_ms, 1.0), "n": len(claude_ms)},
    }


def _exactness(counts: dict[str, Any], summary: dict[str, Any], locust: dict[str, Any]) -> dict[str, Any]:
    """What the workers made up against what the master merged: the harness's figures, its
    accounting of Locust's total, and Locust's own table."""
    sizes = counts["report_bytes"]
    aggregated = next(row for row in locust["stats"] if row["name"] == "Aggregated")
    merged = {
        "harness": summary["accounting"]["requests"],
        "recorded": summary["accounting"]["recorded"],
        "locust": aggregated["num_requests"],
    }
    return {
        "sent": counts["sent"],
        "merged": merged,
        "exact": all(value == counts["sent"] for value in merged.values()),
        "drained": sum(1 for w in counts["workers"] if w["drained"]),
        "denied": [w["denied"] for w in counts["workers"] if w["denied"]],
        "reports": len(sizes),
        "report_bytes": {"mean": round(sum(sizes) / len(sizes)) if sizes else None, "max": max(sizes, default=None)},
    }
