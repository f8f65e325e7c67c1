"""The package alone: its wheel in a clean venv (dependencies from pip's cache or the registry)
runs `claude-loadtest` from an empty folder, with the scenarios it ships."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


def test_the_wheel_alone_runs_a_packaged_scenario_from_an_empty_folder(tmp_path: Path) -> None:
    wheels, venv, empty = tmp_path / "wheels", tmp_path / "venv", tmp_path / "empty"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    empty.mkdir()
    command = str(venv / "bin" / "claude-loadtest")
    listed = subprocess.run([command, "--list"], cwd=empty, capture_output=True, text=True, timeout=60)
    assert listed.stdout.split() == ["demo", "latency-levers", "open-loop", "sweep"]
    helped = subprocess.run([command, "--help"], cwd=empty, capture_output=True, text=True, timeout=60)
    assert "--scenario FILE" in helped.stdout and "--users" in helped.stdout  # the harness's options with Locust's
    run = subprocess.run(
        [command, "demo", "--headless", "--only-summary", "-u", "3", "-r", "3", "-t", "3s", "--summary-json", "summary.json"],
        cwd=empty,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Claude summary: scenario demo" in run.stdout and (empty / "summary.json").is_file() and (empty / "runs").is_dir()
    missing = subprocess.run([command, "nope"], cwd=empty, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such file, and no packaged scenario of that name" in missing.stderr
    assert not any((venv / "bin" / tool).exists() for tool in ("ruff", "mypy", "playwright"))  # none of the test tools
