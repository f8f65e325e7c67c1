"""Sweeps against the emulator, whose profile fixes the knee: two servers, each request served
in 200 ms (100 ms to the first token, 20 tokens at 200 tokens/s, no jitter), so 10 requests/s
is the most it serves without a queue; past it requests queue and their TTFT grows with the
queue. Constant arrivals leave no queue below the knee, so a TTFT SLO just above the service's
own TTFT finds it. Real `locust` processes (one alone, a master with workers, one with its web UI), short steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import Cluster
from tests.support.processes import LocustResult, write_yaml
from tests.support.runs import summarized_run
from tests.support.webui import LocustUI, new_page
from tests.test_webui import download, poll, screenshot, start_from_form

KNEE_RPS = 10.0
SERVERS = 2
KNEE_PROFILE = {
    "seed": 1,
    "ping": False,
    "models": {
        "default": {
            "ttft_ms": 100,
            "ttft_ms_per_1k_input": 0,
            "output_tps": 200,
            "jitter": 0,
            "output_tokens": {"mean": 20, "sd": 0, "min": 20, "max": 20},
            "capacity": {"concurrency": SERVERS, "queue": 40},
        }
    },
}


def knee_scenario(**sweep: Any) -> dict[str, Any]:
    return {
        "name": "knee",
        "models": ["claude-haiku-4-5"],
        "prompts": [{"name": "q", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}],
        "timeout_s": 20,
        "slos": {"ttft_p95_ms": 150, "error_rate": 0.01},
        "load": {"arrival": "constant", "max_in_flight": 60, "warmup": "1s"},
        "sweep": {"rates": ["6/s", "12/s"], "step_time": "2s", "resolution": "10%", **sweep},
    }


def sweep_run(tmp_path: Path, scenario: dict[str, Any], *args: str) -> tuple[LocustResult, dict[str, Any]]:
    return summarized_run(tmp_path, scenario, KNEE_PROFILE, *args, timeout_s=150)


def records_of(output_dir: Path) -> list[dict[str, Any]]:
    from harness.records import read_records

    return [record for path in sorted(output_dir.rglob("requests.jsonl.gz")) for record in read_records(path)]


def check_steps_count_their_records(summary: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """Each step's figures hold exactly the requests booked to it, none of them twice."""
    steps = summary["sweep"]["steps"]
    for step in steps:
        booked = [record for record in records if record["step"] == step["index"]]
        assert step["requests"] == len(booked), step["label"]
        assert step["unsettled"] == 0
    assert summary["accounting"]["recorded"] == len(records)


@pytest.mark.slow
def test_a_rate_sweep_finds_the_knee_the_profile_fixes(tmp_path: Path) -> None:
    result, summary = sweep_run(tmp_path, knee_scenario(), "--report", str(tmp_path / "report.html"))
    sweep = summary["sweep"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert sweep["state"] == "done"
    assert sweep["sustainable_rate_rps"] == pytest.approx(KNEE_RPS, rel=0.10)
    steps = {step["value"]: step for step in sweep["steps"]}
    assert steps[6.0]["passed"] and not steps[12.0]["passed"]
    assert any(step["bisection"] for step in sweep["steps"])
    # below the knee nothing queues: TTFT is the service's own (100 ms, plus the sender's lag on a
    # busy machine); a request that queued would wait a whole service time (200 ms) more; past the
    # knee the queue shows in TTFT
    assert steps[6.0]["ttft_ms"]["p95"]["value"] < 140
    assert steps[12.0]["ttft_ms"]["p95"]["value"] > 300
    assert all(
        step["ttft_ms"]["p95"]["low"] <= step["ttft_ms"]["p95"]["value"] <= step["ttft_ms"]["p95"]["high"] for step in steps.values()
    )
    # a constant schedule at the step's rate: offered = the step's value, and all of it served
    for value, step in steps.items():
        assert step["offered_per_s"] == pytest.approx(value, abs=1 / 2 + 0.01), step  # one arrival more or less in 2 s
    check_steps_count_their_records(summary, records_of(tmp_path / "runs"))
    assert summary["verdict"]["status"] == "PASS" and "sustainable" in summary["verdict"]["reasons"][0]
    assert "sweep: sustainable" in result.stdout


@pytest.mark.slow
def test_a_rate_sweep_across_a_cluster_finds_the_same_knee(tmp_path: Path) -> None:
    scenario = knee_scenario(rates=["8/s", "12/s"])
    with Cluster(tmp_path, workers=2, run_time=None, users=None, profile=KNEE_PROFILE, scenario=scenario) as cluster:
        code, _out, err = cluster.finish(timeout_s=150)
        summary = cluster.summary()
        records = cluster.records()
    sweep = summary["sweep"]
    assert code == 0, err[-3000:]
    assert sweep["state"] == "done"
    assert sweep["sustainable_rate_rps"] == pytest.approx(KNEE_RPS, rel=0.10)
    check_steps_count_their_records(summary, records)
    # both workers sent every step's arrivals: the split carries the step's rate
    for step in sweep["steps"]:
        workers = {record["worker"] for record in records if record["step"] == step["index"]}
        assert len(workers) == 2, step["label"]
        assert step["offered_per_s"] == pytest.approx(step["value"], abs=1.01), step


@pytest.mark.slow
def test_a_sweep_in_which_no_step_meets_the_slos_exits_1(tmp_path: Path) -> None:
    scenario = knee_scenario(rates=["4/s", "8/s"])
    scenario["slos"] = {"ttft_p95_ms": 50}  # below the service's own 100 ms
    result, summary = sweep_run(tmp_path, scenario)
    assert result.returncode == 1, result.stderr[-3000:]
    assert summary["sweep"]["sustainable"] is None and summary["sweep"]["sustainable_rate_rps"] is None
    assert [step["value"] for step in summary["sweep"]["steps"]] == [4.0]  # stop_after_breach
    assert summary["verdict"]["status"] == "FAIL" and "no step met the SLOs" in summary["verdict"]["reasons"][0]


READ_SWEEP_TABLE = (
    """() => [...document.querySelectorAll('table tbody tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))"""
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_sweep_chosen_in_the_web_ui_form_runs_and_its_tab_shows_the_steps(tmp_path: Path, browser: Any) -> None:
    """The process starts with a plain scenario; the form picks the sweep's (user steps): it runs as
    the sweep's load shape, the Sweep tab lists each judged step live and then the sustainable
    load, equal to the summary the UI hands out."""
    write_yaml(tmp_path / "plain.yaml", {**knee_scenario(), "name": "plain", "load": None, "sweep": None})
    swept = {**knee_scenario(), "load": {"warmup": "1s"}, "sweep": {"users": [SERVERS, SERVERS + 1], "step_time": "2s"}}
    sweep_path = write_yaml(tmp_path / "sweep.yaml", swept)
    ui = LocustUI(tmp_path, tmp_path / "plain.yaml", "--emulator-profile", str(write_yaml(tmp_path / "knee.yaml", KNEE_PROFILE)))
    try:
        ui.wait_ready()
        page = new_page(browser)
        page.goto(ui.url)
        start_from_form(page, users=3, scenario=str(sweep_path))
        page.get_by_role("tab", name="Sweep").click()
        first = poll(
            lambda: (rows := page.evaluate(READ_SWEEP_TABLE)) and rows[0][-1] in ("PASS", "FAIL") and rows, "the first judged step", 90
        )
        assert first[0][:2] == ["0", f"{SERVERS} users"] and first[0][-1] == "PASS"
        assert first[1][1] == f"{SERVERS + 1} users" and first[1][-1] in ("warm-up", "measuring", "settling")  # the step under way
        summary = poll(lambda: (data := ui.get_json("/claude/stats")) and not data["running"] and data, "the run's end", 150)
        final = poll(
            lambda: (rows := page.evaluate(READ_SWEEP_TABLE)) and "still running" not in rows[-1][1] and rows, "the tab's last rows", 10
        )
        sweep = summary["sweep"]
        assert sweep["state"] == "done" and sweep["sustainable_users"] == SERVERS  # as many users as servers
        assert sweep["kind"] == "users" and [step["passed"] for step in sweep["steps"]] == [True, False]
        assert [row[1] for row in final[:-1]] == [step["label"] + (" (bisection)" if step["bisection"] else "") for step in sweep["steps"]]
        assert final[-1][1].startswith(f"sustainable {sweep['sustainable_label']} under the SLOs")
        screenshot(page, "sweep-tab")
        page.get_by_role("tab", name="Download Data").click()
        summary = json.loads(download(page, "Download Claude summary (JSON)", tmp_path / "summary.json").read_text())
        check_steps_count_their_records(summary, records_of(tmp_path / "runs"))
    finally:
        ui.stop()
