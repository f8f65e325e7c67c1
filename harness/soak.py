"""The soak test: `python -m harness.soak` (`make soak`, not in CI).

    python -m harness.soak [--minutes 10] [--users 100] [--workers 0] [--warmup-minutes 2]
                           [--scenario scenarios/demo.yaml] [--output-dir runs/soak] [--json PATH]

Runs the harness headless at steady load against its built-in emulator (locally, or as a
master with `--workers N` worker processes on this machine), samples the resident memory
(RSS) of every process every few seconds, and prints, per process, the RSS after warm-up and
at the end and the slope of a least-squares line through the samples at steady load (after
warm-up, until the run time is up: the stop and the last reports are not steady load), in MB
per hour and in percent per hour of the RSS after warm-up (the target: under 5 % per hour).
Then the disk a run takes: the bytes of every file it wrote (records, points, the emulator's
log, reports) per million requests recorded. Exit code 0 unless the soak could not run (a
missed target is printed, like the benchmark's).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 5.0
TARGET_PCT_PER_HOUR = 5.0
MB = 1024 * 1024


@dataclass
class Track:
    """The RSS samples of one process: (seconds since the start, bytes)."""

    name: str
    process: psutil.Process
    samples: list[tuple[float, int]] = field(default_factory=list)

    def sample(self, at_s: float) -> None:
        try:
            rss = self.process.memory_info().rss
        except psutil.Error:
            return  # it has ended
        if rss:  # 0: it has exited, and not yet been waited for
            self.samples.append((at_s, rss))

    def steady(self, warmup_s: float, end_s: float) -> list[tuple[float, int]]:
        """The samples at steady load: after the warm-up, before the run's end (its stop and
        final reports are not steady load)."""
        return [(t, rss) for t, rss in self.samples if warmup_s <= t <= end_s]


def slope_per_hour(samples: list[tuple[float, int]]) -> float | None:
    """Bytes per hour: the least-squares slope of RSS over time (None: too few samples)."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_rss = sum(rss for _, rss in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if not spread:
        return None
    return sum((t - mean_t) * (rss - mean_rss) for t, rss in samples) / spread * 3600


def growth(track: Track, warmup_s: float, end_s: float) -> dict[str, Any]:
    samples = track.steady(warmup_s, end_s)
    slope = slope_per_hour(samples)
    start = samples[0][1] if samples else None
    return {
        "process": track.name,
        "samples": len(samples),
        "rss_after_warmup_mb": start / MB if start else None,
        "rss_end_mb": samples[-1][1] / MB if samples else None,
        "slope_mb_per_hour": slope / MB if slope is not None else None,
        "slope_pct_per_hour": 100 * slope / start if slope is not None and start else None,
    }


def locust_command(args: argparse.Namespace, output_dir: Path, role: str) -> list[str]:
    command = [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "--only-summary"]
    if role == "worker":
        return [*command, "--worker", "--master-host", "127.0.0.1", "--master-port", str(args.master_port)]
    command += [
        "--scenario",
        args.scenario,
        "-u",
        str(args.users),
        "-r",
        str(max(1, args.users // 10)),
        "-t",
        f"{int(args.minutes * 60)}s",
        "--output-dir",
        str(output_dir),
        "--summary-json",
        str(output_dir / "summary.json"),
        "--stop-timeout",
        "10",
    ]
    if role == "master":
        command += [
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(args.master_port),
            "--expect-workers",
            str(args.workers),
        ]
    return command


def disk_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def run(args: argparse.Namespace) -> dict[str, Any]:
    output_dir = Path(args.output_dir) / time.strftime("%Y%m%d-%H%M%S")
    output_dir.mkdir(parents=True)
    env = {**os.environ, "CLAUDE_LOADTEST_WORKER_SECRET": secrets.token_hex(16)}
    logs = (output_dir / "locust.log").open("wb")
    main_role = "master" if args.workers else "local"
    processes = [subprocess.Popen(locust_command(args, output_dir, main_role), cwd=ROOT, env=env, stdout=logs, stderr=logs)]
    processes += [
        subprocess.Popen(locust_command(args, output_dir, "worker"), cwd=ROOT, env=env, stdout=logs, stderr=logs)
        for _ in range(args.workers)
    ]
    tracks = [Track(main_role, psutil.Process(processes[0].pid))]
    tracks += [Track(f"worker {i + 1}", psutil.Process(p.pid)) for i, p in enumerate(processes[1:])]
    started = time.monotonic()
    deadline = started + args.minutes * 60 + 120
    emulator: Track | None = None
    try:
        while processes[0].poll() is None and time.monotonic() < deadline:
            at = time.monotonic() - started
            if emulator is None:  # the built-in emulator: the local process's (or master's) child
                children = [c for c in tracks[0].process.children() if "harness.emulator" in " ".join(c.cmdline())]
                emulator = Track("emulator", children[0]) if children else None
                if emulator is not None:
                    tracks.append(emulator)
            for track in tracks:
                track.sample(at)
            if sys.stdout.isatty():
                print(
                    f"\r{at:5.0f} s: " + ", ".join(f"{t.name} {t.samples[-1][1] / MB:.0f} MB" for t in tracks if t.samples),
                    end="",
                    flush=True,
                )
            time.sleep(SAMPLE_S)
        print()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait(30)
        logs.close()
    summary = json.loads((output_dir / "summary.json").read_text()) if (output_dir / "summary.json").exists() else {}
    recorded = summary.get("accounting", {}).get("recorded", 0)
    written = disk_bytes(output_dir)
    warmup_s = args.warmup_minutes * 60
    return {
        "minutes": args.minutes,
        "users": args.users,
        "workers": args.workers,
        "scenario": args.scenario,
        "warmup_minutes": args.warmup_minutes,
        "requests": recorded,
        "exit_code": processes[0].returncode,
        "processes": [growth(track, warmup_s, args.minutes * 60) for track in tracks],
        "disk_bytes": written,
        "disk_bytes_per_request": written / recorded if recorded else None,
        "output_dir": str(output_dir),
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"soak: {result['minutes']:g} min, {result['users']} users, {result['workers']} workers, scenario {result['scenario']}: "
        f"{result['requests']} requests, exit code {result['exit_code']}",
        f"memory after {result['warmup_minutes']:g} min of warm-up (target: RSS growth under {TARGET_PCT_PER_HOUR:g} % per hour):",
    ]
    for p in result["processes"]:
        if p["slope_pct_per_hour"] is None:
            lines.append(f"  {p['process']:<10} too few samples")
            continue
        verdict = "PASS" if p["slope_pct_per_hour"] < TARGET_PCT_PER_HOUR else "MISS"
        lines.append(
            f"  {p['process']:<10} {p['rss_after_warmup_mb']:7.1f} -> {p['rss_end_mb']:7.1f} MB, "
            f"slope {p['slope_mb_per_hour']:+8.1f} MB/h = {p['slope_pct_per_hour']:+6.1f} %/h  {verdict}"
        )
    per_request = result["disk_bytes_per_request"]
    if per_request:
        lines.append(
            f"disk: {result['disk_bytes'] / MB:.1f} MB in {result['output_dir']}: {per_request:.0f} B per request, "
            f"{per_request * 1e6 / 1e9:.2f} GB per million requests"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--scenario", default="scenarios/demo.yaml")
    parser.add_argument("--output-dir", default="runs/soak")
    parser.add_argument("--master-port", type=int, default=5599)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    if args.minutes <= args.warmup_minutes or args.users < 1 or args.workers < 0:
        parser.error("--minutes must exceed --warmup-minutes; --users >= 1; --workers >= 0")
    result = run(args)
    print(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
