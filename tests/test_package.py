"""The package alone: its wheel in a clean venv (dependencies from pip's cache or the registry)
runs `claude-loadtest` from an empty folder, with the scenarios it ships, headless and from the
web UI's start form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.webui import LocustUI, poll

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean venv with the wheel of this checkout and its pinned dependencies, nothing else."""
    work = tmp_path_factory.mktemp("package")
    wheels, venv = work / "wheels", work / "venv"
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
    return venv


def test_the_wheel_alone_runs_a_packaged_scenario_from_an_empty_folder(tmp_path: Path, venv: Path) -> None:
    empty = tmp_path / "empty"
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


def test_the_web_ui_of_the_package_offers_the_packaged_scenarios_and_runs_one(tmp_path: Path, venv: Path) -> None:
    """Started from an empty folder with a team's own scenario file: the start form offers it first,
    then the scenarios the package ships; one of those chosen in the form is the one that runs."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "mine.yaml").write_text((ROOT / "scenarios" / "demo.yaml").read_text().replace("name: demo", "name: mine", 1))
    ui = LocustUI(tmp_path, "mine.yaml", launcher=(str(venv / "bin" / "claude-loadtest"),), cwd=empty)
    try:
        ui.wait_ready()
        offered = ui.template_args()["extra_options"]["scenario"]["choices"]
        packaged = venv.glob("lib/python*/site-packages/harness/scenarios/*.yaml")
        assert offered == ["mine.yaml", *sorted(str(path) for path in packaged)], offered
        chosen = next(path for path in offered if path.endswith("/latency-levers.yaml"))
        ui.post("/swarm", {"user_count": 2, "spawn_rate": 2, "scenario": chosen})
        stats = poll(lambda: (s := ui.get_json("/claude/stats"))["totals"]["requests"] > 0 and s, "requests of the chosen scenario", 60)
        assert stats["scenario"] == "latency-levers"
        ui.post("/stop")
    finally:
        ui.stop()
