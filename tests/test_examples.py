"""examples/github-actions.yml: actionlint (with shellcheck) passes on it, its baseline really is the
last successful run's, and its load test command runs (against the built-in emulator, for 3 s, in
place of the API for 5 min)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.processes import LOCUST, ROOT

WORKFLOW = ROOT / "examples" / "github-actions.yml"
ACTIONLINT = str(Path(sys.executable).with_name("actionlint"))


def steps() -> dict[str, dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    return {step["name"]: step for step in workflow["jobs"]["load-test"]["steps"] if "name" in step}


def test_the_baseline_is_the_one_the_last_successful_run_kept() -> None:
    workflow, named = yaml.safe_load(WORKFLOW.read_text()), steps()
    assert workflow["permissions"]["actions"] == "read"  # gh run list / download need it
    fetch = named["Fetch the baseline summary of the last successful run"]
    assert "uses" not in fetch  # download-artifact without a run id sees only this run's artifacts
    assert "gh run list --workflow" in fetch["run"] and "--status success" in fetch["run"]
    assert 'gh run download "$run_id" --name claude-latency-baseline --dir baseline' in fetch["run"]
    keep = named["Keep this summary as the next baseline"]
    assert keep["if"] == "success()" and keep["with"]["name"] == "claude-latency-baseline" and keep["with"]["path"] == "out/summary.json"
    assert "--baseline baseline/summary.json" in named["Load test against the real API (budget-capped)"]["run"]


def actionlint(workflow: Path) -> subprocess.CompletedProcess[str]:
    """actionlint on one file: the workflow schema, expressions, the inputs of known actions, deprecated
    action runtimes, and the run: scripts through shellcheck (which actionlint skips when it is missing)."""
    assert shutil.which("shellcheck"), "shellcheck is a system package of the tests (make system-deps)"
    return subprocess.run([ACTIONLINT, "-no-color", str(workflow)], capture_output=True, text=True, timeout=60)


def test_actionlint_passes_on_the_example() -> None:
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("correct", "mistaken", "reported"),
    [
        ("overwrite: true", "overwirte: true", 'input "overwirte" is not defined'),
        ("actions/checkout@v5", "actions/checkout@v4", 'runtime "node20" is deprecated'),
        ('if [ -n "$run_id" ]', "if [ -n $run_id ]", "SC2070"),  # shellcheck, through actionlint
    ],
)
def test_actionlint_reports_a_mistake_in_the_example(tmp_path: Path, correct: str, mistaken: str, reported: str) -> None:
    """The check above is not vacuous: the same file with one mistake fails, naming it."""
    text = WORKFLOW.read_text()
    assert correct in text
    broken = tmp_path / "claude-latency.yml"
    broken.write_text(text.replace(correct, mistaken, 1))
    result = actionlint(broken)
    assert result.returncode == 1 and reported in result.stdout, result.stdout


@pytest.mark.slow
def test_the_load_test_command_runs_and_writes_what_the_next_steps_read(tmp_path: Path) -> None:
    script = steps()["Load test against the real API (budget-capped)"]["run"]
    command = shlex.split(script[script.index(".venv/bin/locust") :].replace("\\\n", " ").replace('"${BASELINE[@]}"', ""))
    assert command[0] == ".venv/bin/locust" and "BASELINE=(--baseline baseline/summary.json)" in script
    command = [LOCUST, *command[1:]]
    command[command.index("--host") : command.index("--host") + 2] = []  # the built-in emulator
    command[command.index("-t") + 1] = "3s"
    command = [re.sub(r"^out/", f"{tmp_path}/out/", word) for word in command]
    result = subprocess.run([*command, "--output-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for written in ("summary.json", "junit.xml", "summary.md", "report.html"):
        assert (tmp_path / "out" / written).stat().st_size > 0
