"""Headless CI runs: every exit code through a real `locust --headless` subprocess against the
emulator, the JSON summary against its schema, JUnit and Markdown outputs, the regression
check against a baseline, the abort rule and the cost guard."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness import exitcodes
from harness.emulator.process import EmulatorProcess
from harness.outputs import junit_xml, markdown
from harness.results import SloResult, json_schema, load_summary
from harness.scenario import Regression, Slos
from harness.slo import Crashes, compare, evaluate, verdict
from harness.stats import RunStats
from harness.summary import render_sweep, render_text
from harness.timing import CANCELLED, RATE_LIMITED
from tests.support.processes import LOCUST, ROOT, LocustResult, own_address, run_locust, write_yaml
from tests.support.records import record
from tests.support.runs import FAST_PROFILE, SCENARIO, messages_truth, run_against_emulator
from tests.support.summaries import summary_of

SCHEMA = json.loads((ROOT / "docs" / "summary.schema.json").read_text())


def stats_with(ttft_ms: float, n: int = 400, failures: int = 0, spread: float = 20) -> RunStats:
    stats = RunStats()
    for i in range(n):
        jitter = spread * (i % 20) / min(n, 20)
        stats.add(record("m", ttft=ttft_ms + jitter, latency=2 * ttft_ms + jitter))
    for _ in range(failures):
        stats.add(record("m", ttft=None, latency=5, outcome="rate_limited"))
    return stats


# --- units: evaluation, regression, renderings ----------------------------------------------
def test_slos_are_judged_globally_and_per_model_on_the_precise_figures() -> None:
    summary = summary_of(stats_with(100, failures=10))
    slos = Slos(ttft_p50_ms=150, error_rate=0.01, rate_limited_share=0.05, models={"m": {"ttft_p99_ms": 100}, "absent": {"ttft_p50_ms": 1}})
    results = {(r.scope, r.name): r for r in evaluate(slos, summary)}
    assert results[("all", "ttft_p50_ms")].passed and results[("all", "ttft_p50_ms")].value == pytest.approx(110, abs=1)
    assert not results[("all", "error_rate")].passed and results[("all", "error_rate")].value == pytest.approx(10 / 410)
    assert results[("all", "rate_limited_share")].passed
    assert not results[("m", "ttft_p99_ms")].passed
    assert results[("absent", "ttft_p50_ms")].value is None and not results[("absent", "ttft_p50_ms")].passed


def test_a_real_regression_is_flagged_and_noise_is_not() -> None:
    baseline = summary_of(stats_with(100))
    slower = compare(summary_of(stats_with(130)), baseline, Regression(threshold_pct=10))
    assert any(r.regressed and r.metric == "ttft_p50_ms" and r.change_pct > 25 for r in slower)
    assert all(r.ci_low_pct <= r.change_pct <= r.ci_high_pct for r in slower)
    same = compare(summary_of(stats_with(101)), baseline, Regression(threshold_pct=10))
    assert same and not any(r.regressed for r in same)
    # a 15 % change on a handful of widely spread samples is not significant: its interval spans zero
    tiny = compare(summary_of(stats_with(115, n=5, spread=400)), summary_of(stats_with(100, n=5, spread=400)), Regression(threshold_pct=10))
    assert not any(r.regressed for r in tiny)


def test_junit_has_one_case_per_slo_and_markdown_tells_the_verdict() -> None:
    summary = summary_of(stats_with(100))
    summary = summary.model_copy(
        update={
            "slos": [
                SloResult(name="ttft_p50_ms", metric="TTFT p50 (ms)", scope="all", limit=150.0, value=110.0, passed=True),
                SloResult(name="error_rate", metric="errors", scope="m", limit=0.0, value=0.5, passed=False),
            ]
        }
    )
    summary = summary.model_copy(update={"verdict": verdict(summary, None, None, False)})
    suite = ET.fromstring(junit_xml(summary)).find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    assert [case.get("classname") for case in suite.iter("testcase")] == ["slo.all", "slo.m"]
    text = markdown(summary)
    assert "FAIL" in text and "| error_rate | m | 0.5 | <= 0 | ❌ fail |" in text


def test_each_slo_says_what_it_measures_and_which_way_its_limit_points() -> None:
    results = {r.name: r for r in evaluate(Slos(ttft_p95_ms=500, min_output_tps=5, min_requests=1), summary_of(stats_with(100)))}
    assert results["ttft_p95_ms"].metric == "TTFT p95 (ms)" and results["ttft_p95_ms"].operator == "<="
    assert results["min_output_tps"].bound == "min" and results["min_output_tps"].operator == ">="
    assert all(r.passed for r in results.values())


def test_cancelled_requests_are_not_judged_and_alone_are_no_error() -> None:
    stats = stats_with(100, n=50)
    for _ in range(10):
        stats.add(record("m", ttft=None, latency=5, outcome=CANCELLED))
    summary = summary_of(stats)
    assert summary.totals.judged == 50 and summary.totals.error_rate == 0 and summary.totals.share(RATE_LIMITED) == 0
    assert verdict(summary, None, None, False).model_dump() == {"status": "DONE", "exit_code": 0, "reasons": []}
    stats.add(record("m", ttft=None, latency=5, outcome=RATE_LIMITED))
    errors = verdict(summary_of(stats), None, None, False, exit_code_on_error=7)
    assert (errors.status, errors.exit_code) == ("ERRORS", 7) and "1 of 51 judged requests failed" in errors.reasons[0]


def test_a_run_in_which_the_harness_or_locust_crashed_never_passes() -> None:
    summary = summary_of(stats_with(100))
    assert verdict(summary, None, None, False, crashes=Crashes(unhandled=True)).exit_code == exitcodes.CRASHED
    users_raised = verdict(summary, None, None, False, exit_code_on_error=9, crashes=Crashes(user_exceptions=3))
    assert (users_raised.status, users_raised.exit_code) == ("ERRORS", 9) and "3 exception(s)" in users_raised.reasons[0]
    breached = summary.model_copy(update={"slos": evaluate(Slos(ttft_p50_ms=1), summary)})
    assert verdict(breached, None, None, False, crashes=Crashes(unhandled=True)).exit_code == exitcodes.FAILED


@pytest.mark.slow
def test_an_exception_in_a_user_fails_a_run_without_slos(tmp_path: Path) -> None:
    locustfile = tmp_path / "locustfile.py"
    locustfile.write_text(
        "from locust import User, constant, events, task\n"
        "from harness import plugin\n"
        "plugin.register(events)\n"
        "class BrokenUser(User):  # its only task raises: deterministic\n"
        "    wait_time = constant(0.1)\n"
        "    @task\n"
        "    def broken(self):\n"
        "        raise RuntimeError('a bug in a user')\n",
        encoding="utf-8",
    )
    completed = subprocess.run(
        [
            LOCUST,
            "-f",
            str(locustfile),
            "--headless",
            "--scenario",
            str(scenario_with(tmp_path)),
            "-u",
            "1",
            "-r",
            "1",
            "-t",
            "2s",
            "--output-dir",
            str(tmp_path / "runs"),
            "--summary-json",
            str(tmp_path / "s.json"),
            "BrokenUser",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 1, completed.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["verdict"]["status"] == "ERRORS" and "exception(s) raised in users" in summary["verdict"]["reasons"][0]


def test_the_committed_schema_is_the_one_the_model_generates() -> None:
    assert json_schema() == SCHEMA, "run `python -m harness.results > docs/summary.schema.json`"


def test_a_version_1_summary_still_loads_as_a_baseline(tmp_path: Path) -> None:
    current = summary_of(stats_with(100)).model_dump(mode="json", by_alias=True)
    old = {**current, "version": 1, "accounting": {"requests": 400, "locust_requests": 400, "records": 400}}
    for group in [old["totals"], *old["models"].values()]:
        del group["first_thinking_ms"], group["unpriced_requests"]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(old))
    loaded = load_summary(path)
    assert loaded.version == 2 and loaded.accounting.recorded == 400
    assert compare(summary_of(stats_with(100)), loaded, Regression(threshold_pct=10))


SWEEP_SUMMARY = ROOT / "tests" / "data" / "sweep-summary.json"


def test_a_sweep_is_a_row_per_step_and_the_sustainable_load_on_the_console_and_in_markdown() -> None:
    summary = load_summary(SWEEP_SUMMARY)
    lines = render_sweep(summary)
    assert lines[0].startswith("capacity sweep of rates, 3 s measured per step")
    rows = lines[4:-2]  # between the header's rule and the closing one
    assert [row.split()[:2] for row in rows] == [["0", "6/s"], ["1", "12/s"], ["2", "9/s"], ["3", "10.5/s"], ["4", "9.75/s"]]
    assert "9.75/s (bisection)" in rows[4] and "(bisection)" not in rows[1]
    assert rows[1].endswith("FAIL") and rows[4].endswith("PASS") and " 727 " in rows[1]
    assert lines[-1] == "sweep: sustainable 9.75/s under the SLOs (the lowest step to breach them: 10.5/s)"
    assert "\n".join(lines) in render_text(summary)
    text = markdown(summary)
    assert "### Sweep" in text and "| 1 | 12/s | 36 | 12 | 12 | 500 | 727 | 755 | 821 | 0.0 % | 0.0 % | 0.0 % | 240.0 | FAIL |" in text
    assert "**Sweep:** sustainable 9.75/s under the SLOs" in text


def test_a_sweep_says_when_every_step_passed_none_did_or_its_search_did_not_end() -> None:
    summary = load_summary(SWEEP_SUMMARY)
    assert summary.sweep is not None
    above = summary.sweep.model_copy(update={"steps": summary.sweep.steps[:1], "first_bad": None, "state": "stopped"})
    none = summary.sweep.model_copy(update={"sustainable": None, "sustainable_label": None, "state": "running"})
    assert render_sweep(summary.model_copy(update={"sweep": above}))[-1] == (
        "sweep: sustainable 9.75/s under the SLOs: every step passed, the limit lies above the last step; "
        "the run ended before the search did"
    )
    assert render_sweep(summary.model_copy(update={"sweep": none}))[-1] == "sweep: no step met the SLOs; the search is still running"
    without = summary.model_copy(update={"sweep": None})
    assert render_sweep(without) == [] and "capacity sweep" not in render_text(without)
    assert "Sweep" not in markdown(without)


# --- real runs: exit codes and outputs --------------------------------------------------------
def scenario_with(tmp_path: Path, **extra: object) -> Path:
    return write_yaml(tmp_path / "scenario.yaml", {**SCENARIO, **extra})


def ci_run(
    folder: Path, scenario: Path, *args: str, profile: dict = FAST_PROFILE, users: int = 4, run_time: str = "3s", **kwargs: Any
) -> tuple[LocustResult, list[dict]]:
    """A headless run as CI makes one (against the emulator, in `folder`): the run and the server's log."""
    return run_against_emulator(folder, scenario, profile, "--stop-timeout", "10", *args, users=users, run_time=run_time, **kwargs)


@pytest.mark.slow
def test_exit_0_when_slos_hold_with_schema_valid_json_junit_and_markdown(tmp_path: Path) -> None:
    scenario = scenario_with(tmp_path, slos={"ttft_p95_ms": 5000, "error_rate": 0.01, "models": {"model-fast": {"ttft_p50_ms": 5000}}})
    outputs = (
        "--summary-json",
        str(tmp_path / "s.json"),
        "--junit",
        str(tmp_path / "junit.xml"),
        "--markdown",
        str(tmp_path / "summary.md"),
    )
    result, truth = ci_run(tmp_path, scenario, *outputs)
    assert result.returncode == exitcodes.OK, result.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    assert summary["verdict"]["status"] == "PASS" and len(summary["slos"]) == 3
    assert summary["accounting"]["requests"] == len(truth)
    assert summary["run"]["scenario"]["digest"] and summary["run"]["versions"]["locust"]
    suite = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "0"
    assert "PASS" in (tmp_path / "summary.md").read_text()
    assert "SLO PASS" in result.stdout


@pytest.mark.slow
def test_exit_1_when_an_slo_is_breached_and_the_report_says_why(tmp_path: Path) -> None:
    scenario = scenario_with(tmp_path, slos={"models": {"model-slow": {"ttft_p50_ms": 10}}})
    result, _ = ci_run(tmp_path, scenario, "--summary-json", str(tmp_path / "s.json"), "--junit", str(tmp_path / "junit.xml"))
    assert result.returncode == exitcodes.FAILED
    summary = json.loads((tmp_path / "s.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    assert summary["verdict"]["status"] == "FAIL"
    assert any("model-slow: ttft_p50_ms <= 10" in reason for reason in summary["verdict"]["reasons"])
    failure = ET.parse(tmp_path / "junit.xml").getroot().find("testsuite/testcase/failure")
    assert failure is not None and "limit 10" in (failure.get("message") or "")
    assert "SLO FAIL  model-slow: ttft_p50_ms" in result.stdout


@pytest.mark.slow
def test_exit_1_on_a_regression_against_a_baseline(tmp_path: Path) -> None:
    # one model and one prompt: each run's TTFTs come from one narrow range (60 +-10 % ms, then
    # 160 +-10 % ms), so the change's whole interval lies far above the threshold whatever the sample
    scenario = scenario_with(tmp_path, models=[{"model": "model-fast"}], prompts=SCENARIO["prompts"][:1], stream=1.0)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()

    def profile(ttft_ms: int) -> dict:
        return {"seed": 7, "models": {"default": {**FAST_PROFILE["models"]["default"], "ttft_ms": ttft_ms, "jitter": 0.1}}}

    result, _ = ci_run(first, scenario, "--summary-json", str(tmp_path / "base.json"), profile=profile(60))
    assert result.returncode == 0, result.stderr[-3000:]
    new = ("--baseline", str(tmp_path / "base.json"), "--summary-json", str(tmp_path / "new.json"))
    result, _ = ci_run(second, scenario, *new, profile=profile(160))
    assert result.returncode == exitcodes.FAILED, result.stdout[-3000:]
    summary = json.loads((tmp_path / "new.json").read_text())
    jsonschema.validate(summary, SCHEMA)
    regressed = [r for r in summary["regressions"] if r["regressed"]]
    assert any(r["scope"] == "all" and r["metric"] == "ttft_p50_ms" and r["ci_low_pct"] > 10 for r in regressed)
    assert "baseline REGRESSED: all ttft_p50_ms" in result.stdout


@pytest.mark.slow
def test_exit_2_for_a_bad_baseline_file(tmp_path: Path) -> None:
    bad = tmp_path / "baseline.json"
    bad.write_text('{"not": "a summary"}')
    result = run_locust(tmp_path, scenario_with(tmp_path), "--baseline", str(bad), users=1, run_time="1s", timeout_s=60)
    assert result.returncode == exitcodes.USAGE
    assert f"--baseline {bad}: not a harness summary" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_exit_2_without_a_budget_against_a_real_api(tmp_path: Path) -> None:
    result = run_locust(
        tmp_path,
        scenario_with(tmp_path),
        "--host",
        "https://api.example.invalid",
        timeout_s=60,
        env={"ANTHROPIC_API_KEY": "sk-ant-test-not-real"},
    )
    assert result.returncode == exitcodes.USAGE
    assert "needs a budget" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("variable", ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"])
def test_exit_2_for_a_key_no_header_can_carry_and_the_key_is_not_shown(tmp_path: Path, variable: str) -> None:
    """A key read from a file with its line break: said at start-up, not sent (geventhttpclient's
    own check named the whole value in every request's error message)."""
    secret = "sk-ant-test-not-real-7f3a"
    result = run_locust(
        tmp_path, scenario_with(tmp_path), "--host", "https://api.example.invalid", timeout_s=60, env={variable: secret + "\n"}
    )
    assert result.returncode == exitcodes.USAGE
    assert f"{variable} holds a line break" in result.stderr and "Traceback" not in result.stderr
    assert secret not in result.stderr + result.stdout


@pytest.mark.slow
def test_exit_3_when_the_cost_guard_stops_the_run_at_the_budget(tmp_path: Path) -> None:
    priced = scenario_with(
        tmp_path, prices={"model-fast": {"input": 1000.0, "output": 5000.0}, "model-slow": {"input": 1000.0, "output": 5000.0}}
    )
    result, truth = ci_run(
        tmp_path, priced, "--max-cost-usd", "2", "--summary-json", str(tmp_path / "s.json"), run_time="120s", timeout_s=240
    )
    assert result.returncode == exitcodes.COST_GUARD, result.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["verdict"]["status"] == "STOPPED" and "budget $2" in summary["verdict"]["reasons"][0]
    assert summary["run"]["duration_s"] < 60  # stopped long before the 120 s run time
    assert summary["totals"]["cost_usd"] >= 2
    assert summary["accounting"]["requests"] == len(truth)  # what was in flight was still counted


@pytest.mark.slow
def test_exit_3_with_max_requests_sends_exactly_that_many(tmp_path: Path) -> None:
    result, truth = ci_run(tmp_path, scenario_with(tmp_path), "--max-requests", "17", users=5, run_time="30s", timeout_s=90)
    assert result.returncode == exitcodes.COST_GUARD
    assert len(truth) == len(result.records()) == 17


@pytest.mark.slow
def test_exit_4_when_asked_to_fail_on_an_unreliable_load_generator(tmp_path: Path) -> None:
    # a CPU limit of 0.001 % makes every health sample "saturated": the mechanism, end to end
    unreliable = ("--max-cpu-percent", "0.001", "--fail-on-unreliable")
    result, _ = ci_run(tmp_path, scenario_with(tmp_path), *unreliable, users=2, run_time="5s")
    assert result.returncode == exitcodes.UNRELIABLE
    assert "UNRELIABLE" in result.stdout and "load generator saturated" in result.stderr


@pytest.mark.slow
def test_the_abort_rule_stops_a_failing_run_early(tmp_path: Path) -> None:
    failing = {"models": {"default": {**FAST_PROFILE["models"]["default"], "faults": {"rate_limited": 0.9}}}}
    scenario = scenario_with(tmp_path, abort={"error_rate": 0.5, "window_s": 5, "min_requests": 10})
    result, truth = ci_run(tmp_path, scenario, "--summary-json", str(tmp_path / "s.json"), profile=failing, run_time="120s", timeout_s=240)
    assert result.returncode == exitcodes.FAILED
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["verdict"]["status"] == "ABORTED"
    assert summary["verdict"]["reasons"][0].startswith("aborted early: error rate")
    assert summary["run"]["duration_s"] < 60  # run time 120 s
    # the abort can come while users are still starting: a request cut before its bytes reached the
    # server is recorded (cancelled) but never served. Every answered request is in both, exactly.
    records = result.records()
    assert summary["accounting"]["requests"] == len(records)
    answered = {r["request_id"] for r in records if r["http_status"] is not None}
    unanswered = [r for r in records if r["http_status"] is None]
    assert len(answered) == len(records) - len(unanswered) and answered <= {t["request_id"] for t in truth}
    assert all(r["outcome"] == "cancelled" for r in unanswered)
    assert len(answered) <= len(truth) <= len(records)  # the server saw some of the cut ones, never more


@pytest.mark.slow
def test_with_json_stdout_is_exactly_locusts_json_and_the_summary_goes_to_stderr(tmp_path: Path) -> None:
    result, truth = run_against_emulator(tmp_path, scenario_with(tmp_path), FAST_PROFILE, "--json", users=2, run_time="2s")
    assert result.returncode == 0, result.stderr[-3000:]
    entries = json.loads(result.stdout)  # nothing but Locust's JSON
    assert sum(e["num_requests"] for e in entries if e["method"] in ("STREAM", "BLOCK")) == len(truth)
    assert "Claude summary" in result.stderr and "verdict: DONE" in result.stderr


@pytest.mark.slow
def test_models_without_a_price_are_refused_against_a_real_api_unless_allowed(tmp_path: Path) -> None:
    # a real (non-loopback) target: the emulator on this machine's own network address
    emulator = EmulatorProcess(host=own_address(), ground_truth=tmp_path / "truth.jsonl")
    url = emulator.start()
    try:
        args = ("--host", url, "--max-cost-usd", "5", "--summary-json", str(tmp_path / "s.json"))
        env = {"ANTHROPIC_API_KEY": "test-key-not-real"}
        refused = run_locust(tmp_path, scenario_with(tmp_path), *args, users=1, run_time="2s", timeout_s=60, env=env)
        assert refused.returncode == exitcodes.USAGE
        assert "no price for model-fast, model-slow" in refused.stderr and "--allow-unpriced" in refused.stderr
        assert "Traceback" not in refused.stderr
        allowed = run_locust(tmp_path, scenario_with(tmp_path), *args, "--allow-unpriced", users=1, run_time="2s", timeout_s=60, env=env)
    finally:
        emulator.stop()
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["totals"]["unpriced_requests"] == summary["accounting"]["requests"] > 0
    served = messages_truth(tmp_path / "truth.jsonl")  # (count_tokens calls apart: the synthetic prompt's sizing)
    assert len(served) == summary["accounting"]["recorded"]  # the refused run sent nothing
    assert any(reason.startswith("cost unknown") for reason in summary["verdict"]["reasons"])
    assert "(unknown part)" in allowed.stdout
