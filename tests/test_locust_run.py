"""`locust --headless` as a real subprocess against the real emulator process.

Each request's TTFT is checked against the emulator's ground truth (when it wrote the first
text), and every count against the emulator's own log: Locust's stats, the records file and
the summary must all hold every request exactly once.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.support.processes import by_request_id, percentile, run_locust, write_yaml
from tests.support.runs import FAST_PROFILE, GAP_MS, GAPPED_PROFILE, SCENARIO, run_against_emulator

pytestmark = pytest.mark.slow


def locust_entries(prefix: Path) -> list[dict]:
    """Locust's own final stats (--json-file writes them at shutdown; its CSV can lag)."""
    return json.loads(Path(f"{prefix}.json").read_text(encoding="utf-8"))


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "scenario.yaml", SCENARIO)


@pytest.mark.parametrize("transport", ["fast", "sdk"])
def test_ttft_matches_ground_truth_and_every_request_is_counted_once(tmp_path: Path, scenario_file: Path, transport: str) -> None:
    result, served = run_against_emulator(
        tmp_path,
        scenario_file,
        GAPPED_PROFILE,
        "--transport",
        transport,
        "--stop-timeout",
        "10",
        "--json-file",
        str(tmp_path / "locust"),
        users=10,
        run_time="5s",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr

    truth = by_request_id(served)
    records = result.records()
    assert records
    # exactly once: the same set of requests on both sides of the wire
    assert sorted(r["request_id"] for r in records) == sorted(truth)
    assert all(r["outcome"] == "ok" for r in records)

    errors = []
    for record in records:
        server = truth[record["request_id"]]
        assert record["mode"] == ("stream" if server["stream"] else "blocking")
        assert (record["input_tokens"], record["output_tokens"]) == (server["input_tokens"], server["output_tokens"])
        if record["mode"] == "blocking":
            assert record["ttft_ms"] is None and record["first_thinking_ms"] is None
            continue
        received_ns = record["start_ns"] + record["ttft_ms"] * 1_000_000
        errors.append((received_ns - server["t_first_text_ns"]) / 1_000_000)
    assert min(errors) >= 0, "the harness cannot see the first text before the server wrote it"
    # the size of the error is measured by `make bench`; here: the first text, not a later event
    assert percentile(errors, 50) < GAP_MS / 2, errors

    entries = locust_entries(tmp_path / "locust")
    requests = [e for e in entries if e["method"] in ("STREAM", "BLOCK")]
    ttft_rows = [e for e in entries if e["method"] == "TTFT"]
    assert len(requests) + len(ttft_rows) == len(entries)
    assert sum(e["num_requests"] for e in requests) == len(records)
    assert sum(e["num_requests"] for e in ttft_rows) == len(errors)
    assert {e["name"] for e in ttft_rows} <= {e["name"] for e in requests if e["method"] == "STREAM"}
    n = len(records)
    assert f"{n} requests recorded = {n} in the figures; {n} in Locust's stats, {n} records" in result.stdout


def test_requests_in_flight_at_the_end_are_counted_as_cancelled(tmp_path: Path, scenario_file: Path) -> None:
    slow = {"models": {"default": {"ttft_ms": 300, "output_tps": 20, "jitter": 0, "output_tokens": {"mean": 60, "sd": 0}}}}
    result, truth = run_against_emulator(tmp_path, scenario_file, slow, "--stop-timeout", "0", users=8, run_time="3s")
    records = result.records()
    outcomes = Counter(r["outcome"] for r in records)
    assert outcomes["cancelled"] == 8, outcomes  # every user had one request in flight
    assert len(records) == len(truth)
    assert Counter(row["outcome"] for row in truth)["client_closed"] >= 1
    n = len(records)
    assert f"{n} requests recorded = {n} in the figures (8 of them cancelled by the stop); {n} in Locust's stats" in result.stdout
    assert result.returncode == 0  # cut by the stop: failures in Locust's tables, but no error of the service


def test_stop_timeout_lets_requests_in_flight_finish(tmp_path: Path, scenario_file: Path) -> None:
    slow = {"models": {"default": {"ttft_ms": 300, "output_tps": 40, "jitter": 0, "output_tokens": {"mean": 40, "sd": 0}}}}
    result, truth = run_against_emulator(tmp_path, scenario_file, slow, "--stop-timeout", "10", users=8, run_time="3s")
    records = result.records()
    assert result.returncode == 0, result.stderr[-2000:]
    assert Counter(r["outcome"] for r in records) == {"ok": len(records)}
    assert len(records) == len(truth)


def test_by_default_requests_in_flight_at_the_stop_finish(tmp_path: Path, scenario_file: Path) -> None:
    # the README's command has no --stop-timeout: the harness's default lets them finish
    slow = {"models": {"default": {"ttft_ms": 300, "output_tps": 40, "jitter": 0, "output_tokens": {"mean": 40, "sd": 0}}}}
    result, truth = run_against_emulator(tmp_path, scenario_file, slow, users=8, run_time="3s")
    records = result.records()
    assert result.returncode == 0, result.stderr[-2000:]
    assert Counter(r["outcome"] for r in records) == {"ok": len(records)} and len(records) == len(truth) >= 8
    assert "verdict: DONE" in result.stdout


def test_first_thinking_has_its_own_percentiles_and_modes_their_own_rows(tmp_path: Path) -> None:
    scenario = write_yaml(
        tmp_path / "thinking.yaml",
        {
            "name": "thinking",
            "models": ["model-fast"],
            "prompts": [
                {
                    "name": "think",
                    "messages": [{"role": "user", "content": "Why?"}],
                    "max_tokens": 2000,
                    "thinking": {"type": "enabled", "budget_tokens": 1024},
                },
                {"name": "plain", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32},
            ],
            "stream": 0.5,
        },
    )
    result, truth = run_against_emulator(
        tmp_path, scenario, FAST_PROFILE, "--summary-json", str(tmp_path / "s.json"), users=4, run_time="3s"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary, records = json.loads((tmp_path / "s.json").read_text()), result.records()
    thinking = [r for r in records if r["first_thinking_ms"] is not None and r["outcome"] == "ok"]
    assert thinking and {r["prompt"] for r in thinking} == {"think"} and {r["mode"] for r in thinking} == {"stream"}
    assert summary["totals"]["first_thinking_ms"]["count"] == len(thinking)
    assert summary["modes"]["stream"]["requests"] + summary["modes"]["blocking"]["requests"] == len(truth)
    labels = {(g["prompt"], g["mode"]) for g in summary["labels"]}
    assert labels == {(r["prompt"], r["mode"]) for r in records}  # a row per prompt and mode that ran
    assert "first thinking ALL: p50 " in result.stdout and "ALL / blocking" in result.stdout


FAULT_PROFILE = {
    "models": {
        "default": {"ttft_ms": 30, "output_tps": 500, "output_tokens": {"mean": 30, "sd": 0, "min": 30}},
        "m-429": {"faults": {"rate_limited": 1.0}},
        "m-529": {"faults": {"overloaded": 1.0}},
        "m-500": {"faults": {"server_error": 1.0}},
        "m-midstream": {"faults": {"stream_error": 1.0}},
        "m-drop": {"faults": {"disconnect": 1.0}},
        "m-ok": {},
    }
}
EXPECTED = {
    "m-429": ("rate_limited", 429),
    "m-529": ("overloaded", 529),
    "m-500": ("api_error", 500),
    "m-midstream": ("overloaded", 200),
    "m-drop": ("connection_error", 200),
    "m-ok": ("ok", 200),
}


@pytest.mark.parametrize("transport", ["fast", "sdk"])
def test_faults_are_classified_never_retried_and_never_crash_a_user(tmp_path: Path, transport: str) -> None:
    scenario = write_yaml(
        tmp_path / "faults.yaml",
        {
            "name": "faults",
            "models": [{"model": model} for model in EXPECTED],
            "prompts": [{"name": "p", "messages": [{"role": "user", "content": "x"}], "max_tokens": 50}],
            "stream": 1,
        },
    )
    result, served = run_against_emulator(
        tmp_path, scenario, FAULT_PROFILE, "--transport", transport, "--stop-timeout", "10", users=6, run_time="3s"
    )
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    records = result.records()
    truth = by_request_id(served)
    assert sorted(r["request_id"] for r in records) == sorted(truth)  # no retries: one server request each
    seen = set()
    for record in records:
        assert (record["outcome"], record["http_status"]) == EXPECTED[record["model"]], record
        seen.add(record["model"])
    assert seen == set(EXPECTED)
    assert result.returncode == 1


def test_a_bad_scenario_exits_2_with_one_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodels: [{model: m}]\nprompts: [{name: p, input_tokens: 10, max_tokens: 0}]\nstrem: 1\n")
    result = run_locust(tmp_path, bad, timeout_s=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}: prompts[0].max_tokens: must be >= 1 (got 0)" in result.stderr
    assert f"{bad}: strem: unknown field" in result.stderr


def test_the_api_key_is_required_for_a_remote_host_and_never_written(tmp_path: Path, scenario_file: Path) -> None:
    result = run_locust(tmp_path, scenario_file, "--host", "https://api.example.invalid", timeout_s=60, env={"ANTHROPIC_API_KEY": ""})
    assert result.returncode == 2
    assert "ANTHROPIC_API_KEY" in result.stderr and "Traceback" not in result.stderr

    secret = "sk-ant-test-" + "x" * 30
    run, _ = run_against_emulator(tmp_path, scenario_file, FAST_PROFILE, users=2, run_time="2s", env={"ANTHROPIC_API_KEY": secret})
    assert run.records()
    for path in [*run.output_dir.rglob("*"), tmp_path / "truth.jsonl"]:
        if path.is_file():
            assert secret not in path.read_text(encoding="utf-8", errors="replace"), path
    assert secret not in run.stdout and secret not in run.stderr


def test_reset_stats_opens_the_measurement_window_and_locusts_tables_agree(tmp_path: Path, scenario_file: Path) -> None:
    # a ramp of 2 s (8 users at 4/s) with requests of about a second: many start before the reset
    result, truth = run_against_emulator(
        tmp_path,
        scenario_file,
        GAPPED_PROFILE,
        "-r",
        "4",
        "--reset-stats",
        "--json-file",
        str(tmp_path / "locust"),
        "--summary-json",
        str(tmp_path / "summary.json"),
        users=8,
        run_time="6s",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = result.records()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(r["request_id"] for r in records) == sorted(t["request_id"] for t in truth)
    window = summary["accounting"]["window"]
    inside = [r for r in records if r["window"] == window]
    before = [r for r in records if r["window"] != window]
    assert window == 1 and inside and before
    assert max(r["start_ns"] for r in before) < min(r["start_ns"] for r in inside)
    accounting = summary["accounting"]
    assert (accounting["recorded"], accounting["requests"], accounting["before_window"]) == (len(records), len(inside), len(before))
    entries = locust_entries(tmp_path / "locust")
    assert sum(e["num_requests"] for e in entries if e["method"] in ("STREAM", "BLOCK")) == len(inside)
    streamed_ok = [r for r in inside if r["mode"] == "stream" and r["outcome"] == "ok"]
    assert sum(e["num_requests"] for e in entries if e["method"] == "TTFT") == len(streamed_ok)
    n = len(records)
    assert f"{n} requests recorded = {len(inside)} in the figures + {len(before)} before the measurement window" in result.stdout
