"""Variants compared (harness/variants.py): each variant's TTFT, latency, output tokens/s and
perceived latency (TTFT when it streams, latency when it blocks: what its user waits for before
reading) at p50, p90 and p99 with 95 % intervals, and each against the baseline as a ratio
with its interval and a verdict in words.

One interval method, computed from HDR histograms alone, so that it holds for a cluster (the
workers' histograms merge exactly): a quantile's interval is the pair of order statistics
around rank n*q (harness/intervals.py). A ratio's 95 % interval divides the two quantiles'
97.5 % intervals end to end: both hold at once with at least 95 % (Bonferroni), whatever the
distributions, so the ratio's interval does too; it is conservative. When it includes 1 the
verdict says "no significant difference" and about how many requests per variant would settle a
difference of the size seen (an interval's width shrinks as 1/sqrt(n)).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hdrh.histogram import HdrHistogram

from harness.histograms import histogram_values, new_histogram, record_ms
from harness.intervals import Z_95, interval_holds, quantile_intervals
from harness.stats import LabelStats, no_pause
from harness.timing import TimingRecord
from harness.variant_figures import VARIANT_TITLES, Comparison, Estimate, Metric, VariantFigures, Variants
from harness.variants import baseline_of

if TYPE_CHECKING:
    from harness.scenario import Scenario

__all__ = ["METHOD", "VariantBook", "compare"]

QUANTILES = (50, 90, 99)
METRICS: tuple[Metric, ...] = ("ttft_ms", "latency_ms", "output_tps", "perceived_ms")
TITLES: dict[Metric, str] = {
    "ttft_ms": "TTFT",
    "latency_ms": "latency",
    "output_tps": "output tokens/s",
    "perceived_ms": "perceived latency",
}
Z_RATIO = 2.2414  # two-sided 97.5 %: each of the two quantiles' intervals in a ratio's
CDF_PERCENTILES = (0.5, 1, 2.5, *range(5, 100, 5), 97.5, 99, 99.5, 99.9)
METHOD = (
    "distribution-free: a quantile's 95 % interval is the pair of order statistics around rank n*q "
    "(+-1.96 binomial standard deviations); a ratio's 95 % interval divides the two quantiles' 97.5 % intervals "
    "end to end (Bonferroni)"
)
MAX_SETTLE = 10_000_000
_STATS_HISTOGRAM = {"ttft_ms": "ttft", "latency_ms": "latency", "output_tps": "output_tps"}  # LabelStats' histogram of each


class VariantStats:
    """One variant's requests: the usual figures, its modes, and its perceived latency."""

    def __init__(self) -> None:
        self.stats = LabelStats()
        self.modes: Counter[str] = Counter()
        self.perceived = new_histogram()

    def add(self, record: TimingRecord) -> None:
        self.stats.add(record)
        self.modes[record.mode] += 1
        if record.ok:
            streamed = record.mode == "stream" and record.first_content == "text"
            record_ms(self.perceived, record.ttft_ms if streamed else record.latency_ms)

    def histogram(self, metric: Metric) -> HdrHistogram:
        return self.perceived if metric == "perceived_ms" else getattr(self.stats, _STATS_HISTOGRAM[metric])

    def encode(self) -> dict[str, Any]:
        return {"stats": self.stats.encode(), "modes": dict(self.modes), "perceived": self.perceived.encode().decode()}

    def merge_encoded(self, data: dict[str, Any]) -> None:
        self.stats.merge(LabelStats.decode(data["stats"]))
        self.modes.update(data["modes"])
        self.perceived.decode_and_add(data["perceived"].encode())

    def clear(self) -> None:
        self.stats.clear()
        self.modes.clear()
        self.perceived.reset()


class VariantBook:
    """Every variant's figures (in the measurement window); a worker reports what was added since
    its last report, the master merges the reports."""

    def __init__(self) -> None:
        self.variants: dict[str, VariantStats] = {}

    def add(self, record: TimingRecord) -> None:
        if record.variant is not None:
            stats = self.variants.get(record.variant)
            if stats is None:
                stats = self.variants[record.variant] = VariantStats()
            stats.add(record)

    def reset(self) -> None:
        self.variants.clear()

    def encode_delta(self) -> dict[str, Any]:
        delta = {name: stats.encode() for name, stats in self.variants.items() if stats.modes}
        for stats in self.variants.values():
            stats.clear()
        return delta

    def merge_encoded(self, delta: dict[str, Any]) -> None:
        for name, data in delta.items():
            self.variants.setdefault(name, VariantStats()).merge_encoded(data)


def compare(book: VariantBook, scenario: Scenario, pause: Callable[[], None] = no_pause) -> Variants | None:
    """The summary's `variants`: each of the scenario's, in its order, against the baseline
    (`pause` runs after each: the web UI's live tab yields to the event loop there)."""
    base = baseline_of(scenario)
    if base is None:
        return None
    stats = {variant.name: book.variants.get(variant.name) or VariantStats() for variant in scenario.variants}
    figures = []
    for variant in scenario.variants:
        own = stats[variant.name]
        comparisons = [] if variant.name == base else _comparisons(variant.name, own, base, stats[base])
        figures.append(
            VariantFigures(
                name=variant.name,
                baseline=variant.name == base,
                changes=variant.changes(),
                requests=own.stats.requests,
                failures=own.stats.failures,
                modes=dict(own.modes),
                quantiles={metric: _estimates(own.histogram(metric)) for metric in METRICS if own.histogram(metric).get_total_count()},
                cdf={metric: _cdf(own.histogram(metric)) for metric in METRICS if own.histogram(metric).get_total_count()},
                comparisons=comparisons,
            )
        )
        pause()
    return Variants(baseline=base, method=METHOD, variants=figures)


def _estimates(histogram: HdrHistogram) -> list[Estimate]:
    n = histogram.get_total_count()
    at = quantile_intervals(histogram, QUANTILES)
    estimates = []
    for quantile in QUANTILES:
        low, value, high = at[quantile]
        holds = interval_holds(n, quantile)
        estimates.append(
            Estimate(
                quantile=quantile,
                value=value,
                low=low if holds else None,
                high=high if holds else None,
                needs=None if holds else _needed(quantile, Z_95),
            )
        )
    return estimates


def _cdf(histogram: HdrHistogram) -> list[tuple[float, float]]:
    at, _ = histogram_values(histogram, CDF_PERCENTILES)
    return [(percentile, at[percentile] / 1000) for percentile in CDF_PERCENTILES]


def _needed(quantile: float, z: float) -> int:
    """The fewest values whose `quantile` has an interval at `z` (both order statistics exist)."""
    high = 2
    while not interval_holds(high, quantile, z):
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if interval_holds(middle, quantile, z) else (middle, high)
    return high


def _comparisons(name: str, own: VariantStats, base: str, baseline: VariantStats) -> list[Comparison]:
    found = []
    blocking = "blocking" in own.modes or "blocking" in baseline.modes
    for metric in METRICS if blocking else METRICS[:-1]:  # perceived latency is TTFT when both stream
        mine, theirs = own.histogram(metric), baseline.histogram(metric)
        if not mine.get_total_count() or not theirs.get_total_count():
            continue
        at_mine, at_theirs = quantile_intervals(mine, QUANTILES, z=Z_RATIO), quantile_intervals(theirs, QUANTILES, z=Z_RATIO)
        n = min(mine.get_total_count(), theirs.get_total_count())
        for quantile in QUANTILES:
            found.append(_comparison(name, base, metric, quantile, at_mine[quantile], at_theirs[quantile], n))
    return found


def _comparison(
    name: str,
    base: str,
    metric: Metric,
    quantile: float,
    mine: tuple[float, float, float],
    theirs: tuple[float, float, float],
    n: int,
) -> Comparison:
    (my_low, my_value, my_high), (their_low, their_value, their_high) = mine, theirs
    ratio = my_value / their_value
    head = f"{name}: {VARIANT_TITLES[metric]} p{quantile:g} {ratio:.2f}x {base}"
    if not interval_holds(n, quantile, Z_RATIO):
        needs = _needed(quantile, Z_RATIO)
        verdict = f"{head}: too few requests for an interval (about {needs:,} per variant needed)"
        return Comparison(metric=metric, quantile=quantile, ratio=ratio, low=None, high=None, finding="too_few", verdict=verdict)
    low, high = my_low / their_high, my_high / their_low
    head += f", 95 % CI {low:.2f}-{high:.2f}"
    if low > 1 or high < 1:
        finding = "higher" if low > 1 else "lower"
        better = (finding == "higher") == (metric == "output_tps")
        word = ("faster" if better else "slower") if metric == "output_tps" else ("shorter" if better else "longer")
        verdict = f"{head}: {word}"
        return Comparison(metric=metric, quantile=quantile, ratio=ratio, low=low, high=high, finding=finding, verdict=verdict)
    settle = _settling(n, low, high, ratio)
    if settle is None:
        verdict = f"{head}: no significant difference (the estimates agree within 0.1 %)"
    else:
        verdict = f"{head}: no significant difference; about {settle:,} requests per variant would settle a difference of {ratio - 1:+.1%}"
    return Comparison(
        metric=metric, quantile=quantile, ratio=ratio, low=low, high=high, finding="no_difference", settle_requests=settle, verdict=verdict
    )


def _settling(n: int, low: float, high: float, ratio: float) -> int | None:
    """Requests per variant whose interval (its width shrinking as 1/sqrt(n)) would exclude 1 at
    the ratio seen; None when the ratio is within 0.1 % of 1."""
    seen = abs(math.log(ratio))
    if seen < 1e-3:
        return None
    half_width = (math.log(high) - math.log(low)) / 2
    return min(MAX_SETTLE, math.ceil(n * (half_width / seen) ** 2))
