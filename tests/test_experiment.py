"""Variants compared (harness/experiment.py): the intervals hold, a known ratio is found, equal
variants are not told apart, too few requests are said, and a cluster's merged figures give the
same verdicts as one process's."""

from __future__ import annotations

import random

from harness.experiment import VariantBook, compare
from harness.scenario import scenario_from_dict
from harness.timing import OK, TimingRecord

SCENARIO = scenario_from_dict(
    {
        "name": "x",
        "models": ["m"],
        "prompts": [{"name": "q", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}],
        "variants": [{"name": "base"}, {"name": "same"}, {"name": "slow", "max_tokens": 99}, {"name": "blocking", "stream": False}],
    }
)
FACTOR = {"base": 1.0, "same": 1.0, "slow": 2.0, "blocking": 1.0}


def record(variant: str, rng: random.Random) -> TimingRecord:
    """A successful request whose times are drawn from a skewed distribution, scaled by its variant's factor."""
    ttft = FACTOR[variant] * 200 * rng.lognormvariate(0, 0.3)
    streamed = variant != "blocking"
    return TimingRecord(
        model="m",
        prompt="q",
        mode="stream" if streamed else "blocking",
        variant=variant,
        outcome=OK,
        ttft_ms=ttft if streamed else None,
        first_content="text" if streamed else None,
        last_token_ms=ttft + 1000 if streamed else None,
        latency_ms=ttft + 1000,
        output_tokens=101,
    )


def book_of(per_variant: int, seed: int) -> VariantBook:
    rng, book = random.Random(seed), VariantBook()
    for _ in range(per_variant):
        for variant in FACTOR:
            book.add(record(variant, rng))
    return book


def comparison(figures, name: str, metric: str, quantile: float = 50):  # type: ignore[no-untyped-def]
    variant = next(v for v in figures.variants if v.name == name)
    return next(c for c in variant.comparisons if c.metric == metric and c.quantile == quantile)


def test_a_variant_twice_as_slow_is_found_so_and_an_equal_one_is_not_told_apart() -> None:
    figures = compare(book_of(800, seed=1), SCENARIO)
    assert figures is not None and figures.baseline == "base"
    slow = comparison(figures, "slow", "ttft_ms")
    assert slow.low is not None and slow.high is not None and slow.low <= 2 <= slow.high
    assert (
        slow.finding == "higher" and slow.verdict.startswith(f"slow: TTFT p50 {slow.ratio:.2f}x base, 95 % CI") and "longer" in slow.verdict
    )
    same = comparison(figures, "same", "ttft_ms")
    assert same.finding == "no_difference" and "no significant difference" in same.verdict
    assert same.settle_requests is None or same.settle_requests > 800  # a difference this small needs more requests
    assert comparison(figures, "slow", "ttft_ms", 99).finding in ("higher", "too_few")


def test_perceived_latency_puts_a_blocking_variants_latency_beside_the_baselines_ttft() -> None:
    figures = compare(book_of(400, seed=2), SCENARIO)
    assert figures is not None
    blocking = next(v for v in figures.variants if v.name == "blocking")
    assert blocking.modes == {"blocking": 400} and "ttft_ms" not in blocking.quantiles
    perceived = comparison(figures, "blocking", "perceived_ms")
    assert perceived.finding == "higher" and 4 < perceived.ratio < 7  # about (200 + 1000) / 200
    assert not any(c.metric == "perceived_ms" for c in next(v for v in figures.variants if v.name == "same").comparisons)


def test_the_ratio_interval_covers_the_true_ratio_at_least_95_percent_of_the_time() -> None:
    covered = 0
    runs = 100
    for seed in range(runs):
        slow = comparison(compare(book_of(150, seed=100 + seed), SCENARIO), "slow", "ttft_ms")
        covered += slow.low is not None and slow.high is not None and slow.low <= 2 <= slow.high
    assert covered >= 0.95 * runs


def test_too_few_requests_say_how_many_an_interval_needs() -> None:
    figures = compare(book_of(20, seed=3), SCENARIO)
    assert figures is not None
    p99 = comparison(figures, "slow", "ttft_ms", 99)
    assert p99.finding == "too_few" and p99.low is None and "too few requests for an interval (about" in p99.verdict
    estimate = next(e for e in next(v for v in figures.variants if v.name == "base").quantiles["ttft_ms"] if e.quantile == 99)
    assert estimate.low is None and estimate.needs is not None and estimate.needs > 20


def test_reports_merged_on_a_master_give_exactly_the_figures_of_one_process() -> None:
    whole = book_of(300, seed=4)
    rng = random.Random(4)
    workers, master = [VariantBook(), VariantBook()], VariantBook()
    for index in range(300):
        for variant in FACTOR:
            workers[index % 2].add(record(variant, rng))
        if index % 50 == 49:  # each worker reports what it added since its last report
            for worker in workers:
                master.merge_encoded(worker.encode_delta())
    assert compare(master, SCENARIO) == compare(whole, SCENARIO)
