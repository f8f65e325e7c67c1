"""HDR statistics, the price table and the summary table, on records with known values."""

from __future__ import annotations

import pytest

from harness.pricing import Price, PriceTable
from harness.stats import RecentStats, RunStats
from harness.summary import render_table
from harness.timing import OK, RATE_LIMITED, TimingRecord


def record(model: str, ttft: float | None, latency: float, outcome: str = OK, prompt: str = "p") -> TimingRecord:
    mode = "blocking" if ttft is None else "stream"
    rec = TimingRecord(model=model, prompt=prompt, mode=mode, outcome=outcome, latency_ms=latency)
    if ttft is not None:
        rec.ttft_ms, rec.first_content, rec.last_token_ms = ttft, "text", latency
    rec.input_tokens, rec.output_tokens, rec.cost_usd = 10, 11, 0.5
    return rec


def test_percentiles_are_precise_to_three_digits() -> None:
    stats = RunStats()
    for i in range(1, 1001):  # TTFT 1..1000 ms in 1 ms steps
        stats.add(record("a", ttft=float(i), latency=1000.0 + i))
    model = stats.by_model()["a"]
    assert model.ttft_ms(50) == pytest.approx(500, rel=1e-3)
    assert model.ttft_ms(99) == pytest.approx(990, rel=1e-3)
    assert model.latency_ms(95) == pytest.approx(1950, rel=1e-3)
    # (latency - ttft) / (11 - 1) = 100 ms per token -> 10 tokens/s
    assert model.median_output_tps() == pytest.approx(10, rel=1e-3)


def test_failures_are_counted_by_class_and_kept_out_of_latency() -> None:
    stats = RunStats()
    stats.add(record("a", ttft=100, latency=200))
    stats.add(record("a", ttft=None, latency=5, outcome=RATE_LIMITED))
    stats.add(record("b", ttft=None, latency=300, prompt="q"))
    total = stats.total()
    assert (total.requests, total.failures, total.outcomes[RATE_LIMITED]) == (3, 1, 1)
    assert total.latency.get_total_count() == 2
    assert total.ttft.get_total_count() == 1  # the blocking request has no TTFT
    assert total.cost_usd == pytest.approx(1.5) and total.output_tokens == 33


def test_summary_has_a_row_per_model_and_per_label() -> None:
    stats = RunStats()
    stats.add(record("alpha", ttft=123.4, latency=456))
    stats.add(record("beta", ttft=None, latency=10, outcome=RATE_LIMITED, prompt="q"))
    summary = {
        "models": {model: s.to_summary() for model, s in stats.by_model().items()},
        "totals": stats.total().to_summary(),
        "labels": [{"model": m, "prompt": p, **s.to_summary()} for (m, p), s in sorted(stats.labels.items())],
    }
    lines = render_table(summary).splitlines()
    assert any(line.startswith("alpha ") and "123" in line for line in lines)
    assert any(line.startswith("beta ") and "rate_limited=1" in line for line in lines)
    assert any(line.startswith("alpha / p ") for line in lines)
    assert any(line.startswith("ALL ") for line in lines)


def test_cost_from_usage_with_cache_factors_and_overrides() -> None:
    table = PriceTable({"custom": Price(2.0, 8.0)})
    assert table.cost("claude-haiku-4-5", 1_000_000, 0) == pytest.approx(1.0)
    assert table.cost("claude-sonnet-4-5", 0, 1_000_000) == pytest.approx(15.0)
    assert table.cost("custom", 1_000_000, 1_000_000, 1_000_000, 1_000_000) == pytest.approx(2 + 8 + 0.2 + 2.5)
    assert table.cost("unknown-model", 10, 10) is None


def test_encoded_deltas_merge_to_the_same_percentiles() -> None:
    whole, worker_a, worker_b = RunStats(), RunStats(), RunStats()
    for i in range(1, 2001):
        rec = record("a", ttft=float(i % 997) + 0.5, latency=2000.0 + i)
        whole.add(rec)
        (worker_a if i % 3 else worker_b).add(rec)
    merged = RunStats()
    for worker in (worker_a, worker_b):
        merged.merge(RunStats.decode(worker.take().encode()))
    assert worker_a.requests == 0  # take() hands the delta over
    assert merged.total().to_summary() == whole.total().to_summary()


def test_recent_stats_cover_a_sliding_window() -> None:
    now = [1000.0]
    recent = RecentStats(bucket_s=5, keep_s=60, clock=lambda: now[0])
    recent.add(record("a", ttft=100, latency=200))
    now[0] += 20
    recent.add(record("a", ttft=300, latency=400))
    assert recent.window(10).requests == 1 and recent.window(10).total().ttft_ms(50) == pytest.approx(300, rel=1e-3)
    assert recent.window(30).requests == 2
    now[0] += 100
    assert recent.window(300).requests == 0  # older than keep_s: forgotten
