"""The summary's `variants`: each variant's figures with intervals, and each against the baseline.

Part of the typed result (harness/results.py includes it); computed by harness/experiment.py.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["ttft_ms", "latency_ms", "output_tps", "perceived_ms"]
Finding = Literal["lower", "higher", "no_difference", "too_few"]
VARIANT_TITLES: dict[Metric, str] = {
    "ttft_ms": "TTFT",
    "latency_ms": "latency",
    "output_tps": "output tokens/s",
    "perceived_ms": "perceived latency",
}


class _Figures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Estimate(_Figures):
    """A quantile with its 95 % distribution-free interval (None: too few requests for one)."""

    quantile: float = Field(description="50 for the median, ...")
    value: float
    low: float | None
    high: float | None
    needs: int | None = Field(default=None, description="when there is no interval: the requests it would take")


class Comparison(_Figures):
    """A variant's quantile against the baseline's: their ratio with its 95 % interval."""

    metric: Metric
    quantile: float
    ratio: float
    low: float | None = Field(description="the interval: each quantile's 97.5 % interval, divided end to end (Bonferroni)")
    high: float | None
    finding: Finding = Field(description="lower or higher than the baseline (the interval excludes 1), no_difference, or too_few")
    settle_requests: int | None = Field(default=None, description="no_difference: about how many requests per variant would settle it")
    verdict: str = Field(description="in words, as the console prints it")


class VariantFigures(_Figures):
    name: str
    baseline: bool
    changes: dict[str, Any] = Field(description="the settings it changes (none: the mix as it is)")
    requests: int
    failures: int
    modes: dict[str, int] = Field(description="its requests by mode (stream, blocking)")
    quantiles: dict[Metric, list[Estimate]] = Field(
        description="ttft_ms, latency_ms, output_tps and perceived_ms (TTFT when streamed, latency when blocking)"
    )
    cdf: dict[Metric, list[tuple[float, float]]] = Field(description="(percentile, value) points of its distributions, for plots")
    comparisons: list[Comparison] = Field(default_factory=list, description="against the baseline (none for the baseline)")


class Variants(_Figures):
    baseline: str
    method: str = Field(description="how the intervals are computed")
    variants: list[VariantFigures]
