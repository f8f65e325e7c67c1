"""The disk under a run's folder: a warning before it fills, no new request once nearly full."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from harness import exitcodes
from harness.disk import MB, DiskWatch
from tests.support.processes import write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, run_against_emulator


def test_a_warning_as_the_disk_fills_then_no_new_request_until_space_is_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    free = [10_000 * MB]
    watch = DiskWatch(tmp_path / "run", min_free_mb=100, free_bytes=lambda path: free[0])
    caplog.set_level(logging.WARNING, "harness.disk")
    for mb in (10_000, 390, 380, 190, 150, 90, 95, 120):
        free[0] = mb * MB
        watch.check()
        assert (watch.refusal is not None) == (mb < 100), mb
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and warnings[0].startswith("disk filling: 390 MB free") and "190 MB free" in warnings[1]
    assert "full in about" in warnings[1]  # the rate is known from the second check on
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "the disk is nearly full: 90 MB free" in errors[0] and "--min-free-disk-mb 100" in errors[0]


@pytest.mark.slow
def test_a_run_on_a_nearly_full_disk_stops_with_the_reason_and_keeps_its_outputs(tmp_path: Path) -> None:
    """The real file system: a minimum above what is free now."""
    minimum = shutil.disk_usage(tmp_path).free / MB + 1000
    summary = tmp_path / "summary.json"
    result, truth = run_against_emulator(
        tmp_path,
        write_yaml(tmp_path / "scenario.yaml", SCENARIO),
        FAST_PROFILE,
        "--min-free-disk-mb",
        f"{minimum:.0f}",
        "--summary-json",
        str(summary),
        users=2,
        run_time="60s",
        timeout_s=90,
    )
    assert result.returncode == exitcodes.COST_GUARD, result.stderr[-3000:]
    assert "the disk is nearly full" in result.stderr
    data = json.loads(summary.read_text())
    assert data["verdict"]["status"] == "STOPPED" and "disk is nearly full" in " ".join(data["verdict"]["reasons"])
    assert data["accounting"]["recorded"] == len(truth) == len(result.records()) == 0
