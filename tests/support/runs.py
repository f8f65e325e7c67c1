"""Runs against the built-in emulator: its profiles, the scenario most runs use, and a headless
`locust` run with the emulator's ground truth (its log of what it served)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.emulator.process import EmulatorProcess
from tests.support.processes import LocustResult, read_jsonl, run_locust, write_yaml

FAST_PROFILE = {
    "seed": 7,
    "models": {
        "default": {
            "ttft_ms": 60,
            "ttft_ms_per_1k_input": 10,
            "output_tps": 400,
            "jitter": 0.2,
            "output_tokens": {"mean": 40, "sd": 10, "min": 5},
        },
        "model-slow": {"ttft_ms": 150, "output_tps": 200},
    },
}

SCENARIO = {
    "name": "itest",
    "models": [{"model": "model-fast", "weight": 2}, {"model": "model-slow", "weight": 1}],
    "prompts": [
        {"name": "short", "weight": 3, "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 64},
        {"name": "long", "weight": 1, "input_tokens": 2000, "max_tokens": 32},
    ],
    "stream": 0.7,
}

# Text arrives one token per 50 ms: a harness that times the wrong event, or whose reads wait for
# more bytes, is late by at least one such gap on most requests; scheduling noise is not.
GAP_MS = 50
GAPPED_PROFILE = {
    "seed": 7,
    "models": {"default": {"ttft_ms": 60, "output_tps": 1000 / GAP_MS, "jitter": 0.2, "output_tokens": {"mean": 12, "sd": 3, "min": 3}}},
}


def start_emulator(tmp_path: Path, profile: dict) -> EmulatorProcess:
    emulator = EmulatorProcess(profile=write_yaml(tmp_path / "profile.yaml", profile), ground_truth=tmp_path / "truth.jsonl")
    emulator.start()
    return emulator


def messages_truth(path: Path) -> list[dict]:
    return [row for row in read_jsonl(path) if row["path"] == "/v1/messages"]


def run_against_emulator(tmp_path: Path, scenario: Path, profile: dict, *args: str, **kwargs: Any) -> tuple[LocustResult, list[dict]]:
    """Emulator up, `locust --headless` against it, emulator down: the run and the server's log."""
    emulator = start_emulator(tmp_path, profile)
    try:
        result = run_locust(tmp_path, scenario, "--host", emulator.url or "", *args, **kwargs)
    finally:
        emulator.stop()
    return result, messages_truth(tmp_path / "truth.jsonl")


def recorded_run(
    tmp_path: Path, scenario: dict, users: int | None, run_time: str | None
) -> tuple[LocustResult, dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A headless run of `scenario` against an emulator process on FAST_PROFILE, which must exit
    0: the run, its JSON summary, its records and the server's log of Messages requests."""
    from harness.records import RECORDS_FILE, read_records

    summary_path = tmp_path / "summary.json"
    scenario_path = write_yaml(tmp_path / "scenario.yaml", scenario)
    args = ("--summary-json", str(summary_path))
    result, truth = run_against_emulator(tmp_path, scenario_path, FAST_PROFILE, *args, users=users, run_time=run_time)
    assert result.returncode == 0, result.stderr[-3000:]
    records = list(read_records(next((tmp_path / "runs").rglob(RECORDS_FILE))))
    return result, json.loads(summary_path.read_text()), records, truth


def summarized_run(tmp_path: Path, scenario: dict, profile: dict, *args: str, timeout_s: float = 120) -> tuple[LocustResult, dict]:
    """`locust --headless` of `scenario` with the built-in emulator on `profile`, the users and
    run time the scenario's own: the run and its JSON summary."""
    summary_path = tmp_path / "summary.json"
    result = run_locust(
        tmp_path,
        write_yaml(tmp_path / "scenario.yaml", scenario),
        "--emulator-profile",
        str(write_yaml(tmp_path / "profile.yaml", profile)),
        "--summary-json",
        str(summary_path),
        *args,
        users=None,
        run_time=None,
        timeout_s=timeout_s,
    )
    assert summary_path.is_file(), result.stderr[-3000:]
    return result, json.loads(summary_path.read_text())
