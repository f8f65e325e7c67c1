"""Helpers for tests that start real processes: Locust runs, their outputs, ground truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))


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
        return read_jsonl(self.run_dir / "requests.jsonl")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def run_locust(
    tmp_path: Path,
    scenario: Path,
    *args: str,
    users: int = 10,
    run_time: str = "4s",
    timeout_s: float = 120,
    env: dict[str, str] | None = None,
) -> LocustResult:
    """`locust --headless` as a subprocess from the repo root; bounded in time."""
    output_dir = tmp_path / "runs"
    command = [
        LOCUST, "-f", "locustfile.py", "--headless", "--only-summary",
        "--scenario", str(scenario), "--output-dir", str(output_dir),
        "-u", str(users), "-r", str(users), "-t", run_time, *args,
    ]  # fmt: skip
    completed = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )
    return LocustResult(completed.returncode, completed.stdout, completed.stderr, output_dir)


def by_request_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    index = {row["request_id"]: row for row in rows}
    assert len(index) == len(rows), "request ids must be unique"
    return index


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]
