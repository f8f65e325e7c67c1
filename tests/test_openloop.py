"""Open loops (the scenario's `load.arrival`): the hand-off of arrivals to idle users and the
token pacing in-process; then runs in one process against the emulator, whose own log shows the
arrival process and every request: each arrival sent, dropped or refused exactly once, times
from the scheduled time, the warm-up, and bad combinations refused.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from pathlib import Path

import gevent
import pytest

from harness.compressed import read_lines
from harness.openloop import Arrival, OpenLoop, TokenDemand
from harness.results import Arrivals
from harness.sampler import Sampler
from harness.scenario import scenario_from_dict
from harness.timing import OK, TimingRecord
from tests.support.processes import run_locust, write_yaml
from tests.support.runs import FAST_PROFILE, run_against_emulator

SHORT = {"name": "short", "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 32}


def open_loop(load: dict, prompts: list[dict] = [SHORT]) -> OpenLoop:  # noqa: B006
    scenario = scenario_from_dict({"name": "u", "models": ["m"], "prompts": prompts, "load": load})
    assert scenario.load is not None
    return OpenLoop(scenario.load, Sampler(scenario, 1), lambda _pick: 1.0, seed=1)


def test_an_arrival_goes_to_an_idle_user_or_is_dropped_and_counted() -> None:
    loop = open_loop({"arrival": "constant", "rate": "100/s"})
    taken: list[Arrival | None] = []

    def user() -> None:
        while (arrival := loop.take()) is not None:
            taken.append(arrival)
            gevent.sleep(0.035)  # busy for 3.5 arrival intervals

    users = [gevent.spawn(user) for _ in range(2)]
    start = time.perf_counter_ns()
    loop.start(start, until_s=1.0)
    gevent.sleep(1.2)
    loop.close()
    gevent.joinall(users, timeout=1)
    counts = loop.counts
    assert counts.scheduled == 100 and counts.scheduled == counts.sent + counts.dropped + counts.refused
    assert counts.sent == len(taken) and 50 <= counts.sent <= 60  # 2 users, each free every 4th arrival
    assert all(user.dead for user in users)  # closing let the waiting users go
    due = [(a.scheduled_ns - start) / 1e9 for a in taken if a is not None]
    assert all(abs(t * 100 - round(t * 100)) < 1e-6 for t in due)  # each keeps its own slot: k / 100 s
    assert loop.span_s() == pytest.approx(1.0) and loop.take() is None  # the cool-down came at 1 s


def test_stopping_at_any_moment_leaves_every_arrival_counted_once() -> None:
    """Close and kill the users (as Locust's stop does) at random moments of a fast schedule: an
    arrival handed over and never sent is refused, never lost between the counts."""
    rng = random.Random(7)
    for _trial in range(60):
        loop = open_loop({"arrival": "poisson", "rate": "2000/s"})
        sent: list[Arrival] = []

        def user() -> None:
            while (arrival := loop.take()) is not None:  # noqa: B023 (each trial's own loop)
                sent.append(arrival)  # noqa: B023
                gevent.sleep(rng.random() * 0.004)

        users = [gevent.spawn(user) for _ in range(8)]
        loop.start(time.perf_counter_ns(), until_s=None)
        gevent.sleep(rng.random() * 0.04)
        loop.close()
        gevent.killall(users, timeout=1)
        counts = loop.counts
        assert counts.scheduled == counts.sent + counts.dropped + counts.refused, counts
        assert counts.sent == len(sent), (counts, len(sent))


def test_a_token_rate_paces_by_the_tokens_the_responses_report() -> None:

    pick = Sampler(scenario_from_dict({"name": "u", "models": ["m"], "prompts": [SHORT]}), 1).next()
    demand = TokenDemand("input_tokens", lambda _pick: 400)
    assert demand(pick) == 100  # 400 bytes at 4 a token, before any response
    demand.observe(TimingRecord("m", "short", "stream", input_tokens=12, output_tokens=8, outcome=OK), max_tokens=32)
    assert demand(pick) == 12
    output = TokenDemand("output_tokens", lambda _pick: 400)
    assert output(pick) == 32  # max_tokens, before any response
    output.observe(TimingRecord("m", "short", "stream", input_tokens=12, output_tokens=8, outcome=OK), max_tokens=32)
    assert output(pick) == 8  # a quarter of max_tokens used


def arrivals(scheduled: int, sent: int, target_per_s: float = 10.0, span_s: float = 100.0, kind: str = "poisson") -> Arrivals:
    return Arrivals.model_validate(
        {
            "arrival": kind,
            "unit": "requests",
            "span_s": span_s,
            "target_per_s": target_per_s,
            "scheduled_per_s": scheduled / span_s,
            "achieved_per_s": sent / span_s,
            "scheduled": scheduled,
            "sent": sent,
            "dropped": scheduled - sent,
            "refused": 0,
            "min_achieved": 0.95,
        }
    )


def test_the_achieved_rate_is_judged_against_the_schedule_and_the_schedule_against_chance() -> None:
    # 1000 arrivals expected: a Poisson schedule's count has a sigma of about 32
    assert not arrivals(940, 940).below_target  # a schedule 2 sigma short, all sent: chance
    assert arrivals(1000, 940).below_target and not arrivals(1000, 940).behind_schedule  # 6 % dropped
    assert arrivals(840, 840).behind_schedule  # 5 sigma below the floor: the generator fell behind
    assert arrivals(940, 940, kind="constant").behind_schedule  # constant arrivals have no chance in them
    assert not arrivals(999, 999, kind="constant").below_target


def scenario(tmp_path: Path, load: dict, **extra: object) -> Path:
    body = {"name": "open", "models": ["model-fast"], "prompts": [SHORT], "stream": 1.0, "seed": 5, "load": load, **extra}
    return write_yaml(tmp_path / "open.yaml", body)


def run(
    tmp_path: Path, load: dict, profile: dict = FAST_PROFILE, run_time: str = "12s", args: tuple[str, ...] = (), **extra: object
) -> tuple[dict, list[dict], list[dict]]:
    """The run's summary, its records and the server's log of /v1/messages."""
    path = scenario(tmp_path, load, **extra)
    summary_path = tmp_path / "summary.json"
    result, truth = run_against_emulator(tmp_path, path, profile, "--summary-json", str(summary_path), *args, users=None, run_time=run_time)
    assert result.returncode in (0, 1), result.stderr[-3000:]
    records = [json.loads(line) for file in result.output_dir.rglob("requests.jsonl*") for line in read_lines(file)]
    return json.loads(summary_path.read_text()), records, truth


def ks_exponential(times_s: list[float], rate: float) -> tuple[float, float]:
    """Kolmogorov-Smirnov distance of the gaps from the exponential at `rate`, and its 0.1 % critical value."""
    gaps = sorted(b - a for a, b in itertools.pairwise(sorted(times_s)))
    n = len(gaps)
    distance = max(max((i + 1) / n - cdf, cdf - i / n) for i, cdf in enumerate(1 - math.exp(-rate * gap) for gap in gaps))
    return distance, 1.95 / math.sqrt(n)


@pytest.mark.slow
def test_poisson_arrivals_reach_the_server_as_a_poisson_process(tmp_path: Path) -> None:
    summary, records, truth = run(tmp_path, {"arrival": "poisson", "rate": "30/s", "max_in_flight": 40}, run_time="13s")
    arrivals = summary["arrivals"]
    expected = 30 * arrivals["span_s"]
    assert arrivals["dropped"] == arrivals["refused"] == 0
    assert arrivals["scheduled"] == arrivals["sent"] == len(records) == len(truth) == summary["accounting"]["recorded"]
    assert abs(len(truth) - expected) < 5 * math.sqrt(expected), (len(truth), expected)
    distance, critical = ks_exponential([row["t_received_ns"] / 1e9 for row in truth], 30.0)
    assert distance < critical, (distance, critical)
    assert all(record["send_lag_ms"] is not None and record["send_lag_ms"] >= 0 for record in records)


@pytest.mark.slow
def test_constant_arrivals_are_evenly_spaced_at_the_server(tmp_path: Path) -> None:
    _summary, _records, truth = run(tmp_path, {"arrival": "constant", "rate": "20/s", "max_in_flight": 20}, run_time="8s")
    received = sorted(row["t_received_ns"] / 1e6 for row in truth)
    gaps = sorted(b - a for a, b in itertools.pairwise(received))
    assert len(truth) > 100
    assert gaps[len(gaps) // 2] == pytest.approx(50, abs=1)  # the median gap: 1/rate
    assert gaps[len(gaps) // 10] > 40 and gaps[-len(gaps) // 10] < 60  # 80 % within 10 ms of it


@pytest.mark.slow
def test_a_slow_server_makes_arrivals_drop_and_every_one_is_counted(tmp_path: Path) -> None:
    slow = {
        "seed": 3,
        "models": {"default": {"ttft_ms": 400, "output_tps": 100, "jitter": 0.1, "output_tokens": {"mean": 30, "sd": 5, "min": 20}}},
    }
    summary, records, truth = run(tmp_path, {"arrival": "poisson", "rate": "25/s", "max_in_flight": 4}, profile=slow, run_time="10s")
    arrivals = summary["arrivals"]
    assert arrivals["dropped"] > arrivals["sent"] > 0  # about 5 per second fit in 4 slots of ~0.7 s
    assert arrivals["scheduled"] == arrivals["sent"] + arrivals["dropped"] + arrivals["refused"]
    assert arrivals["sent"] == len(records) == len(truth) == summary["accounting"]["recorded"]
    assert arrivals["achieved_per_s"] < 0.5 * arrivals["target_per_s"]
    assert summary["verdict"]["status"] != "PASS" and any("below min_achieved" in reason for reason in summary["verdict"]["reasons"])
    for record in records:  # from the scheduled time = lag + latency, on every request
        assert record["send_lag_ms"] >= 0 and record["scheduled_wall_ns"] <= record["wall_start_ns"]
    timed, sent = summary["totals"]["from_schedule"], summary["totals"]
    assert timed["latency_ms"]["max"] >= sent["latency_ms"]["max"] and timed["latency_ms"]["count"] == sent["latency_ms"]["count"]


@pytest.mark.slow
def test_warm_up_requests_are_recorded_and_not_in_the_figures(tmp_path: Path) -> None:
    load = {"arrival": "constant", "rate": "20/s", "max_in_flight": 20, "warmup": "3s", "cooldown": "2s"}
    report = tmp_path / "report.html"
    summary, records, truth = run(tmp_path, load, run_time="10s", args=("--report", str(report)), slos={"ttft_p95_ms": 5000})
    accounting = summary["accounting"]
    assert accounting["recorded"] == accounting["requests"] + accounting["before_window"] == len(records) == len(truth)
    assert accounting["before_window"] == pytest.approx(60, abs=3) and accounting["locust_requests"] == accounting["requests"]
    assert {record["window"] for record in records} == {0, 1}
    assert summary["slos"][0]["metric"].endswith("from the scheduled time") and summary["verdict"]["status"] == "PASS"
    # the cool-down: nothing arrives in the last 2 s of the run (spawning took a moment of the 10 s)
    assert summary["arrivals"]["span_s"] <= 8.0 and summary["arrivals"]["sent"] <= 20 * 8 + 1
    html = report.read_text()
    assert 'id="arrivals"' in html and f"{summary['arrivals']['scheduled']} scheduled = {summary['arrivals']['sent']} sent" in html


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-u", "5"], "its users are load.max_in_flight (7); leave out -u/--users"),
        (["--reset-stats"], "its measurement window opens after load.warmup; leave out --reset-stats"),
    ],
)
def test_options_that_make_no_sense_in_an_open_loop_are_refused(tmp_path: Path, args: list[str], message: str) -> None:

    path = scenario(tmp_path, {"arrival": "poisson", "rate": "5/s", "max_in_flight": 7})
    result = run_locust(tmp_path, path, *args, users=None, run_time="3s", timeout_s=60)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
