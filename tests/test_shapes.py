"""User stages (a closed loop's `load.stages` with `users`): the shape's ticks, then a headless
run whose users Locust's own history file shows ramping up, holding and ramping down."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest

from harness.load import Load
from harness.shapes import StagesShape, stages_shape
from tests.support.processes import run_locust, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, run_against_emulator


def at(shape: StagesShape, elapsed_s: float) -> tuple[int, float] | None:
    shape.start_time = time.perf_counter() - elapsed_s
    return shape.tick()


def test_each_stage_ramps_from_the_users_before_it_at_its_own_rate_then_the_test_ends() -> None:
    load = Load.model_validate(
        {"users": 2, "stages": [{"duration": "10s", "users": 12}, {"duration": "1m", "users": 12}, {"duration": "5s", "users": 0}]}
    )
    shape = stages_shape(load)
    assert shape is not None and shape.most_users == 12
    assert at(shape, 0) == (12, 1.0)  # 10 more users over 10 s
    assert at(shape, 30) == (12, 12.0)  # held: no ramp
    assert at(shape, 72) == (0, 2.4)  # 12 fewer over 5 s
    assert at(shape, 75.1) is None
    assert stages_shape(Load.model_validate({"users": 3})) is None
    assert stages_shape(Load.model_validate({"arrival": "poisson", "rate": "1/s", "stages": [{"duration": "5s", "rate": "2/s"}]})) is None


def user_counts(history: Path) -> list[tuple[float, int]]:
    """(seconds since the first row, users) from Locust's --csv-full-history file."""
    rows = [row for row in csv.DictReader(history.read_text().splitlines()) if row["Name"] == "Aggregated"]
    first = int(rows[0]["Timestamp"])
    return [(int(row["Timestamp"]) - first, int(row["User Count"])) for row in rows]


@pytest.mark.slow
def test_user_stages_run_headless_and_locusts_history_shows_the_ramps(tmp_path: Path) -> None:
    stages = [{"duration": "4s", "users": 8}, {"duration": "4s", "users": 8}, {"duration": "3s", "users": 2}]
    scenario = write_yaml(tmp_path / "staged.yaml", {**SCENARIO, "load": {"stages": stages}})
    history = ("--csv", str(tmp_path / "locust"), "--csv-full-history")
    result, _truth = run_against_emulator(tmp_path, scenario, FAST_PROFILE, *history, users=None, run_time=None)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = user_counts(tmp_path / "locust_stats_history.csv")
    users = [n for _, n in counts]
    assert max(users) == 8 and users[-1] <= 3  # up to 8, down towards 2 at the end
    rising = [n for t, n in counts if t <= 4]
    assert rising == sorted(rising) and 1 <= rising[1] <= 5  # two users a second, not all at once
    assert all(n == 8 for t, n in counts if 5 <= t <= 8)  # held
    assert 10 <= counts[-1][0] <= 14  # the stages' 11 s, then the test ended by itself


@pytest.mark.slow
def test_the_command_line_may_not_contradict_the_stages(tmp_path: Path) -> None:
    scenario = write_yaml(tmp_path / "staged.yaml", {**SCENARIO, "load": {"stages": [{"duration": "3s", "users": 2}]}})
    for args, message in (
        ({"users": 4, "run_time": None}, "leave out -u/--users"),
        ({"users": None, "run_time": "5s"}, "leave out -t/--run-time"),
    ):
        result = run_locust(tmp_path, scenario, timeout_s=60, **args)  # type: ignore[arg-type]
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
