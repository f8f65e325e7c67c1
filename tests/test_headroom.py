"""Rate-limit headroom: the headers read (unit), the figures merged from workers equal to those
of all records together, then real runs against the emulator, whose profile sets the limits:
the limits reported are the profile's with both transports, and a 429 storm's first 429 comes
with the rate it was offered at."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.headroom import KEEP, OFFERED_WINDOW, SLOT_NS, Headroom, ModelHeadroom, rate_limit_fields, read_rate_limits
from harness.points import REQUEST_FIELDS, request_line
from harness.timing import OK, RATE_LIMITED, TimingRecord
from tests.support.runs import summarized_run

NS = 1_000_000_000
HEADERS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "12",
    "anthropic-ratelimit-requests-reset": "2026-12-03T10:00:05Z",
    "anthropic-ratelimit-output-tokens-limit": "8000",
    "anthropic-ratelimit-output-tokens-remaining": "not a number",
    "retry-after": "3",
}


def test_the_rate_limit_headers_of_a_response_are_read_and_bad_numbers_skipped() -> None:
    assert read_rate_limits(HEADERS.get) == {"requests": (50, 12, "2026-12-03T10:00:05Z")}
    assert read_rate_limits({}.get) is None


def record(t_s: float, status: int = 200, remaining: int = 10, limit: int = 50, retry_after: float | None = None) -> TimingRecord:
    rec = TimingRecord(model="m", prompt="p", mode="stream", wall_start_ns=int(t_s * NS))
    rec.http_status, rec.outcome = status, OK if status == 200 else RATE_LIMITED
    rec.rate_limits = {"requests": (limit, remaining, f"reset-{remaining}")}
    rec.retry_after_s = retry_after
    return rec


def test_a_models_figures_are_its_limits_lowest_share_first_429_and_retry_after() -> None:
    headroom = ModelHeadroom()
    start = 1_800_000_000.0
    for i in range(40):  # 20/s for 2 s, then 429s
        status = 429 if i >= 30 else 200
        headroom.add(record(start + i / 20, status, remaining=max(0, 30 - i), retry_after=1.0 if status == 429 else None))
    figures = headroom.figures()
    assert figures.limits == {"requests": 50}
    assert figures.lowest_remaining["requests"].remaining == 0 and figures.lowest_share == 0.0
    assert figures.rate_limited == 10 and figures.first_429_at == pytest.approx(start + 1.5)
    assert figures.offered_rps_at_first_429 == pytest.approx(20, rel=0.07)  # 31 sent in the 1.6 s of slots up to it
    assert figures.retry_after_s is not None and figures.retry_after_s.count == 10 and figures.retry_after_s.mean == 1.0


def test_a_burst_at_the_start_is_offered_per_second_not_per_tenth() -> None:
    headroom = ModelHeadroom()
    start = 1_800_000_000.0
    for i in range(20):  # 20 users start together; the last gets the first 429
        headroom.add(record(start + i / 1000, 429 if i == 19 else 200))
    assert headroom.figures().offered_rps_at_first_429 == pytest.approx(20)


def test_workers_deltas_merged_equal_the_figures_of_all_records_together() -> None:
    rng = random.Random(3)
    start = 1_800_000_000.0
    records = [
        record(start + rng.uniform(0, 20), rng.choice([200, 200, 429]), rng.randint(0, 50), retry_after=rng.choice([None, 1.5, 4.0]))
        for _ in range(500)
    ]
    alone = Headroom()
    for rec in sorted(records, key=lambda r: r.wall_start_ns):
        alone.add(rec)
    master = Headroom()
    workers = [Headroom(), Headroom(), Headroom()]
    for index, rec in enumerate(sorted(records, key=lambda r: r.wall_start_ns)):
        workers[index % 3].add(rec)
        if index % 37 == 0:  # reports at different moments
            for worker in workers:
                master.merge_encoded(json.loads(json.dumps(worker.encode_delta())))  # as it travels
    for worker in workers:
        master.merge_encoded(json.loads(json.dumps(worker.encode_delta())))
    assert master.figures() == alone.figures()


def test_send_counts_are_kept_a_minute_and_for_good_up_to_the_first_429() -> None:
    headroom = ModelHeadroom()
    start = 1_800_000_000.0
    for i in range(3600):  # 1 h at 1/s, the 429 at 100 s
        headroom.add(record(start + i, 429 if i == 100 else 200))
    assert len(headroom.sent) <= KEEP // 10 + OFFERED_WINDOW // 10 + 2
    first = int((start + 100) * NS) // SLOT_NS
    assert sum(n for slot, n in headroom.sent.items() if first - OFFERED_WINDOW < slot <= first) == 10
    assert headroom.figures().offered_rps_at_first_429 == pytest.approx(1.0)


def test_points_carry_each_limit_and_what_remained_of_it() -> None:
    rec = record(1_800_000_000.0, remaining=7)
    assert rate_limit_fields(rec) == {"ratelimit_requests_limit": 50, "ratelimit_requests_remaining": 7}
    assert set(rate_limit_fields(rec)) <= set(REQUEST_FIELDS)
    assert "ratelimit_requests_remaining=7i" in request_line(rec, {"run_id": "r"})


# --- against the emulator -------------------------------------------------------------------------
LIMITS = {"requests_per_minute": 60, "input_tokens_per_minute": 500_000, "output_tokens_per_minute": 120_000}
PROFILE = {
    "seed": 1,
    "models": {"default": {"ttft_ms": 40, "output_tps": 500, "jitter": 0, "output_tokens": {"mean": 10, "sd": 0, "min": 10, "max": 10}}},
    "rate_limits": LIMITS,
}
STORM_RPS = 20


def storm(tmp_path: Path, transport: str) -> dict:
    scenario = {
        "name": "storm",
        "models": ["claude-haiku-4-5"],
        "prompts": [{"name": "q", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}],
        "load": {"arrival": "constant", "rate": f"{STORM_RPS}/s", "max_in_flight": 20, "run_time": "5s"},
    }
    return summarized_run(tmp_path, scenario, PROFILE, "--transport", transport)[1]


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["fast", "sdk"])
def test_a_429_storm_shows_the_profiles_limits_and_the_rate_of_the_first_429(tmp_path: Path, transport: str) -> None:
    summary = storm(tmp_path, transport)
    figures = summary["rate_limits"]["claude-haiku-4-5"]
    limits = figures["limits"]
    assert limits["requests"] == LIMITS["requests_per_minute"]
    assert limits["input_tokens"] == LIMITS["input_tokens_per_minute"]
    assert limits["output_tokens"] == LIMITS["output_tokens_per_minute"]
    assert figures["responses_with_headers"] == summary["totals"]["requests"]
    # 60 requests a minute (a bucket of 60, refilled at 1/s) at 20/s: empty after about 3 s
    assert figures["lowest_remaining"]["requests"]["remaining"] == 0
    assert figures["rate_limited"] == summary["totals"]["outcomes"]["rate_limited"] > 0
    assert figures["offered_rps_at_first_429"] == pytest.approx(STORM_RPS, rel=0.10)
    assert summary["run"]["started_at"] + 2.5 < figures["first_429_at"] < summary["run"]["ended_at"]
    assert figures["retry_after_s"]["count"] == figures["rate_limited"] and figures["retry_after_s"]["min"] >= 1
