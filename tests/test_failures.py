"""The failure policy: users back off after identical failures, a run whose first seconds all
fail alike stops with the cause and exit 2, a target that comes up in time is not stopped, and
the scenario's time limits reach the transports."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import exitcodes
from harness.emulator.process import EmulatorProcess
from harness.failures import Backoff, FailFast
from harness.scenario import Backoff as BackoffRule
from harness.scenario import FailFast as FailFastRule
from harness.scenario import Retries as RetriesRule
from harness.scenario import ScenarioError, scenario_from_dict
from harness.timing import CANCELLED, CONNECTION_ERROR, OK, TimingRecord
from tests.support.cluster import CEILING, Cluster
from tests.support.processes import ROOT, free_port, read_jsonl, run_locust, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, messages_truth, run_against_emulator

WITHIN_S = 2.0


def record(outcome: str = OK, error_type: str | None = None, status: int | None = 200, message: str | None = None) -> TimingRecord:
    result = TimingRecord(model="m", prompt="p", mode="stream")
    result.outcome, result.error_type, result.http_status, result.error_message = outcome, error_type, status, message
    return result


REFUSED = {"outcome": CONNECTION_ERROR, "error_type": "connection_failed", "status": None, "message": "ConnectionRefusedError: [Errno 111]"}


def test_backoff_waits_after_identical_failures_doubling_up_to_its_maximum() -> None:
    rule = BackoffRule(after=3, max_s=5)
    backoff = Backoff(lambda prompt: rule)
    waits = [backoff.wait_after(record(**REFUSED)) for _ in range(9)]
    assert waits == [0, 0, 0.5, 1, 2, 4, 5, 5, 5]
    assert backoff.wait_after(record()) == 0  # a success resets it
    assert [backoff.wait_after(record(**REFUSED)) for _ in range(3)] == [0, 0, 0.5]
    assert backoff.wait_after(record("api_error", "api_error", 500)) == 0  # another cause starts again
    assert backoff.wait_after(record(CANCELLED, "cancelled", None)) == 0
    assert Backoff(lambda prompt: None).wait_after(record(**REFUSED)) == 0


def test_fail_fast_needs_every_request_of_the_window_to_fail_alike() -> None:
    rule = FailFastRule(within_s=10)
    alike = FailFast(rule, started=0.0)
    for t in (1, 2, 3):
        alike.observe(record(**REFUSED), now=t)
    assert alike.verdict(now=9.9) is None  # the window is not over
    verdict = alike.verdict(now=10.1)
    assert verdict is not None and "all 3 requests of the first 10 s failed with one cause, connection_error (connection_failed)" in verdict
    assert "ConnectionRefusedError" in verdict and "check --host" in verdict
    answered = FailFast(rule, started=0.0)
    answered.observe(record(**REFUSED), now=1)
    answered.observe(record(), now=2)  # the target came up
    assert answered.verdict(now=11) is None
    mixed = FailFast(rule, started=0.0)
    mixed.observe(record(**REFUSED), now=1)
    mixed.observe(record("api_error", "api_error", 500), now=2)
    assert mixed.verdict(now=11) is None
    late = FailFast(rule, started=0.0)
    late.observe(record(**REFUSED), now=11)  # after the window: not its business
    assert late.verdict(now=12) is None
    unauthorized = FailFast(rule, started=0.0)
    unauthorized.observe(record("api_error", "authentication_error", 401), now=1)
    assert "HTTP 401" in str(unauthorized.verdict(now=11)) and "ANTHROPIC_API_KEY" in str(unauthorized.verdict(now=11))
    assert FailFast(None, started=0.0).verdict(now=100) is None
    opted_out = FailFast(rule, started=0.0, counts=lambda prompt: prompt != "p")
    opted_out.observe(record(**REFUSED), now=1)  # prompt "p" opted out
    assert opted_out.verdict(now=11) is None


def test_a_prompt_may_give_its_own_failure_policy() -> None:
    data = {
        **SCENARIO,
        "failures": {"retries": {"max": 3}},
        "prompts": [
            {**SCENARIO["prompts"][0], "failures": {"backoff": {"after": 1, "max_s": 2}, "fail_fast": None, "retries": None}},
            {**SCENARIO["prompts"][1], "failures": {"backoff": None}},
        ],
    }
    loaded = scenario_from_dict(scenario_from_dict(data).model_dump(mode="json"))  # as a worker gets it
    own, off = loaded.prompts
    assert loaded.backoff_for(own) == BackoffRule(after=1, max_s=2) and loaded.backoff_for(off) is None
    assert not loaded.counts_for_fail_fast(own) and loaded.counts_for_fail_fast(off)
    assert loaded.retries_for(own) is None and loaded.retries_for(off) == RetriesRule(max=3) and loaded.retries
    assert scenario_from_dict(SCENARIO).retries is False  # off by default
    with pytest.raises(ScenarioError, match=r"prompts\[0\]\.failures\.fail_fast"):
        scenario_from_dict({**data, "prompts": [{**SCENARIO["prompts"][0], "failures": {"fail_fast": {"within_s": 3}}}]})
    with pytest.raises(ScenarioError, match=r"failures.retries.on\[0\]: must be one of 'rate_limited', .*\(got 'cancelled'\)"):
        scenario_from_dict({**SCENARIO, "failures": {"retries": {"on": ["cancelled"]}}})


def scenario(tmp_path: Path, **failures: object) -> Path:
    return write_yaml(tmp_path / "scenario.yaml", {**SCENARIO, "failures": {"fail_fast": {"within_s": WITHIN_S}, **failures}})


@pytest.mark.slow
def test_a_refused_port_fails_fast_with_the_cause_and_is_not_hammered(tmp_path: Path) -> None:
    users = 4
    started = time.monotonic()
    result = run_locust(
        tmp_path,
        scenario(tmp_path),
        "--host",
        f"http://127.0.0.1:{free_port()}",
        "--summary-json",
        str(tmp_path / "s.json"),
        users=users,
        run_time="60s",
        timeout_s=90,
    )
    assert result.returncode == exitcodes.USAGE, result.stderr[-3000:]
    assert time.monotonic() - started < 30  # not the 60 s run time
    assert "failed with one cause, connection_error (connection_failed)" in result.stderr and "check --host" in result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["verdict"]["status"] == "FAILED_FAST" and summary["verdict"]["exit_code"] == exitcodes.USAGE
    records = result.records()
    assert len(records) == summary["accounting"]["recorded"]
    # each user: `after` failures at once, then waits of 0.5, 1, 2 s...: a handful in the window, not thousands
    assert len(records) <= users * 8, len(records)


@pytest.mark.slow
def test_a_request_the_api_refuses_fails_fast_with_its_status(tmp_path: Path) -> None:
    emulator = EmulatorProcess(profile=write_yaml(tmp_path / "profile.yaml", FAST_PROFILE), ground_truth=tmp_path / "truth.jsonl")
    url = emulator.start()
    try:  # a top_k the API refuses (400): every request of the run fails alike
        data = {
            **SCENARIO,
            "anthropic_version": "2023-06-01",
            "failures": {"fail_fast": {"within_s": WITHIN_S}},
            "prompts": [{"name": "bad", "input_tokens": 10, "max_tokens": 8, "extra": {"top_k": -1}}],
        }
        result = run_locust(tmp_path, write_yaml(tmp_path / "scenario.yaml", data), "--host", url, users=2, run_time="60s", timeout_s=90)
    finally:
        emulator.stop()
    assert result.returncode == exitcodes.USAGE, result.stderr[-3000:]
    assert "failed with one cause, api_error (invalid_request_error, HTTP 400)" in result.stderr
    assert len(result.records()) == len(messages_truth(tmp_path / "truth.jsonl"))


@pytest.mark.slow
def test_a_target_that_comes_up_within_the_window_is_not_stopped(tmp_path: Path) -> None:
    port = free_port()
    emulator = EmulatorProcess(
        profile=write_yaml(tmp_path / "profile.yaml", FAST_PROFILE), ground_truth=tmp_path / "truth.jsonl", port=port
    )

    def start_the_target(line: str) -> None:  # once the run has started, while every request fails
        if "output in" in line and emulator.url is None:
            time.sleep(0.5)
            emulator.start()

    try:
        result = run_locust(
            tmp_path,
            scenario(tmp_path, fail_fast={"within_s": 5}),
            "--host",
            f"http://127.0.0.1:{port}",
            "--summary-json",
            str(tmp_path / "s.json"),
            users=2,
            run_time="8s",
            timeout_s=90,
            on_stderr_line=start_the_target,
        )
    finally:
        emulator.stop()
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["verdict"]["status"] != "FAILED_FAST" and result.returncode != exitcodes.USAGE, result.stderr[-3000:]
    outcomes = {r["outcome"] for r in result.records()}
    assert {OK, CONNECTION_ERROR} <= outcomes
    assert summary["totals"]["outcomes"][OK] == len(messages_truth(tmp_path / "truth.jsonl"))


@pytest.mark.slow
def test_a_master_stops_when_every_worker_failed_fast(tmp_path: Path) -> None:
    data = {**SCENARIO, "failures": {"fail_fast": {"within_s": WITHIN_S}}}
    dead = f"http://127.0.0.1:{free_port()}"
    with Cluster(tmp_path, workers=2, run_time="120s", users=4, master_args=("--host", dead), scenario=data) as cluster:
        code, _out, err = cluster.finish(timeout_s=90)
    assert code == exitcodes.USAGE, err[-3000:]
    assert "worker-0: all" in err and "worker-1: all" in err and "connection_error (connection_failed)" in err
    assert cluster.summary()["verdict"]["status"] == "FAILED_FAST"
    assert len(cluster.records()) == cluster.summary()["accounting"]["recorded"]


@pytest.mark.slow
@contextmanager
def replay_server(tmp_path: Path) -> Iterator[str]:
    """tests/support/replay_server.py in its own process: its URL."""
    log = tmp_path / "replay.jsonl"
    replay = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "replay_server.py"), "--log", str(log)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert replay.stdout is not None
        yield replay.stdout.readline().split()[-1]
    finally:
        replay.kill()
        replay.wait(10)


def test_the_scenarios_time_limits_reach_the_transport(tmp_path: Path) -> None:
    """A stream whose headers come and then nothing: the idle limit ends it, not the total."""
    with replay_server(tmp_path) as url:
        data = {
            "name": "stalls",
            "models": [{"model": "stall"}],
            "prompts": [{"name": "p", "input_tokens": 10, "max_tokens": 8}],
            "input_tokens_by": "bytes",  # (the server stalls every request: it cannot count)
            "timeouts": {"idle_s": 1, "total_s": 30},
            "failures": {"fail_fast": None},
        }
        result = run_locust(tmp_path, write_yaml(tmp_path / "stalls.yaml", data), "--host", url, users=2, run_time="4s", timeout_s=90)
    records = [r for r in result.records() if r["outcome"] != CANCELLED]
    assert records and {(r["outcome"], r["error_type"]) for r in records} == {("timeout", "idle_timeout")}, result.stderr[-2000:]
    assert all(1000 <= r["latency_ms"] < 3000 for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["fast", "sdk"])
def test_a_redirect_fails_fast_with_a_hint_and_is_not_hammered(tmp_path: Path, transport: str) -> None:
    """A 302 (a host without its path behind a proxy, say) drew 50,585 requests in 8 s."""
    with replay_server(tmp_path) as url:
        data = {**SCENARIO, "models": [{"model": "http-302"}], "failures": {"fail_fast": {"within_s": WITHIN_S}}}
        result = run_locust(
            tmp_path,
            write_yaml(tmp_path / "redirect.yaml", data),
            "--host",
            url,
            "--transport",
            transport,
            users=2,
            run_time="60s",
            timeout_s=90,
        )
        served = read_jsonl(tmp_path / "replay.jsonl")
    assert result.returncode == exitcodes.USAGE, result.stderr[-3000:]
    assert "HTTP 302" in result.stderr and "the server redirects: give the final URL with --host" in result.stderr
    records = result.records()
    assert {r["http_status"] for r in records} == {302} and len(records) < 40  # backoff: not hammered
    assert len(served) == len(records) + 1  # and the synthetic prompt's one count_tokens call, its redirect not followed


@pytest.mark.slow
def test_workers_stop_soon_after_their_master_is_lost_and_keep_every_record(tmp_path: Path) -> None:
    with Cluster(tmp_path, workers=1, run_time=CEILING, expect=1, master_args=("--master-lost-timeout", "3")) as cluster:
        cluster.wait_for("requests from worker-0", lambda: len(cluster.worker_lines("worker-0")) >= 5)
        cluster.master.kill()  # SIGKILL: no goodbye to the workers
        cluster.master.wait(10)
        killed = time.monotonic()
        worker = cluster.workers[0]
        code = worker.wait(60)
        stopped_after_s = time.monotonic() - killed
        cluster.close()  # the emulator's log is complete now
        err = cluster.worker_err(worker)
    assert code == exitcodes.MASTER_LOST, err[-3000:]
    assert stopped_after_s < 3 + 15, stopped_after_s  # its 3 s limit, then the stop: not Locust's 60 s
    assert "no heartbeat from the master" in err and "requests recorded in run" in err and "Traceback" not in err
    records, truth = cluster.records(), cluster.truth()
    assert records and len(records) == len(truth)  # every request the emulator served is on disk


@pytest.mark.slow
def test_workers_on_their_own_spend_no_more_than_their_share_of_the_budget(tmp_path: Path) -> None:
    """The master freezes at the start (SIGSTOP: its guard never runs again): each worker stops
    sending at its share of the budget, so the cluster's spend stays within the budget plus what
    was in flight, although the workers go on for 20 s before they give their master up."""
    import os
    import signal

    price = {"input": 100.0, "output": 100.0}  # $ per million tokens: a request costs cents
    scenario = {**SCENARIO, "prices": {"model-fast": price, "model-slow": price}}
    budget, users = 4.0, 12
    master_args = ("--max-cost-usd", str(budget), "--master-lost-timeout", "20")
    with Cluster(tmp_path, workers=2, run_time=CEILING, users=users, master_args=master_args, scenario=scenario) as cluster:
        cluster.wait_for("requests from both workers", lambda: cluster.worker_lines("worker-0") and cluster.worker_lines("worker-1"))
        os.kill(cluster.master.pid, signal.SIGSTOP)
        frozen_at = time.time()
        codes = [worker.wait(90) for worker in cluster.workers]
        cluster.close()  # the master too; the emulator's log is complete now
        errs = [cluster.worker_err(worker) for worker in cluster.workers]
    records, truth = cluster.records(), cluster.truth()
    assert codes == [exitcodes.MASTER_LOST] * 2, errs
    assert len(records) == len(truth)  # every request the emulator served is on disk
    assert all("its share of the budget" in err for err in errs), errs
    # in flight when a share was reached: at most one request per user, each at most this
    most = max(2000 + 64, 10 + 64) * price["input"] / 1e6
    spent = sum(r["cost_usd"] or 0.0 for r in records)
    assert budget * 0.9 <= spent <= budget + users * most, spent
    # the users idled: nothing started in the seconds before the workers gave up
    assert max(r["wall_start_ns"] for r in records) / 1e9 < frozen_at + 15


def test_a_retry_waits_the_servers_retry_after_or_a_doubling_backoff_and_only_for_its_outcomes() -> None:
    import random

    from harness.failures import Retrying
    from harness.scenario import Retries

    rule = Retries(max=2, on=["rate_limited", "overloaded"], first_wait_s=0.5, max_wait_s=0.8)
    retrying = Retrying(lambda prompt: rule, random.Random(1))

    def attempt(number: int, outcome: str = "rate_limited", after: float | None = None) -> TimingRecord:
        result = record(outcome, "rate_limit_error", 429)
        result.attempt, result.retry_after_s = number, after
        return result

    assert retrying.wait_before_retry(attempt(1, after=2.0)) == 2.0  # the server's word
    assert 0.375 <= (retrying.wait_before_retry(attempt(1)) or 0) <= 0.5  # 0.5 s less up to 25 % jitter
    assert 0.6 <= (retrying.wait_before_retry(attempt(2, after=61.0)) or 0) <= 0.8  # too long: the backoff, capped
    assert retrying.wait_before_retry(attempt(3)) is None  # 2 retries done
    assert retrying.wait_before_retry(attempt(1, "api_error")) is None and retrying.wait_before_retry(record()) is None
    assert retrying.wait_before_retry(attempt(1, CANCELLED)) is None
    assert (
        Retrying(lambda prompt: rule.model_copy(update={"wait_retry_after": False}), random.Random(1)).wait_before_retry(
            attempt(1, after=9.0)
        )
        <= 0.5
    )


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["fast", "sdk"])
def test_retries_count_attempts_and_requests_apart_and_time_what_the_application_waits(tmp_path: Path, transport: str) -> None:
    profile = {**FAST_PROFILE, "faults": {"rate_limited": 0.3, "retry_after_s": 1}}
    retries = {"max": 2, "on": ["rate_limited"], "wait_retry_after": True}
    scenario = write_yaml(tmp_path / "retries.yaml", {**SCENARIO, "failures": {"retries": retries, "backoff": None}})
    summary_path = tmp_path / "s.json"
    result, truth = run_against_emulator(
        tmp_path,
        scenario,
        profile,
        "--transport",
        transport,
        "--summary-json",
        str(summary_path),
        "--stop-timeout",
        "10",
        users=6,
        run_time="8s",
        timeout_s=90,
    )
    records, summary = result.records(), json.loads(summary_path.read_text())
    # every attempt is a request the server saw, recorded once, a failure where it failed
    assert len(records) == len(truth) == summary["totals"]["requests"], result.stderr[-2000:]
    limited = [r for r in records if r["outcome"] == "rate_limited"]
    assert len(limited) == sum(1 for t in truth if t["status"] == 429) == summary["totals"]["outcomes"]["rate_limited"]
    assert all(r["retry_after_s"] == 1.0 for r in limited)
    # a request's attempts: the retried ones, then its last one; the stop may cut a retry's wait
    last = [r for r in records if not r["retried"]]
    count = Counter((r["attempt"], r["retried"]) for r in records)
    cut = {k: count[k, True] - count[k + 1, True] - count[k + 1, False] for k in (1, 2)}  # retried, never tried again
    assert all(n >= 0 for n in cut.values()) and count[4, False] == count[4, True] == 0, count
    app = summary["totals"]["application"]
    assert app["requests"] == len(last) + sum(cut.values())
    assert app["attempts"] == sum(r["attempt"] for r in last) + sum(k * n for k, n in cut.items())
    assert app["outcomes"].get("cancelled", 0) == sum(1 for r in last if r["outcome"] == "cancelled") + sum(cut.values())
    assert all(r["retried"] == (r["outcome"] == "rate_limited" and r["attempt"] <= 2) for r in records if r["outcome"] != "cancelled")
    assert app["failures"] == sum(1 for r in last if r["outcome"] != "ok") + sum(cut.values()) < len(limited)
    assert app["retried"] == sum(1 for r in last if r["attempt"] > 1) + sum(cut.values()) > 0
    # what the application waited: its attempts and the server's retry-after of 1 s before each retry
    for r in last:
        if r["outcome"] == "cancelled":
            continue
        waited_ms = r["app_latency_ms"] - r["latency_ms"]
        assert 1000 * (r["attempt"] - 1) <= waited_ms < 1600 * (r["attempt"] - 1) + 1, r
        if r["ttft_ms"] is not None:
            assert r["app_ttft_ms"] == pytest.approx(waited_ms + r["ttft_ms"], abs=0.01)
    # the longest wait of a successful request (two retries in about 9 % of them, not in every short run)
    retried_most = max((r["attempt"] - 1 for r in last if r["outcome"] == "ok"), default=0)
    assert retried_most >= 1 and app["latency_ms"]["max"] >= 1000 * retried_most > summary["totals"]["latency_ms"]["max"]
    assert "requests as the application sees them" in result.stdout and "retried" in result.stdout
