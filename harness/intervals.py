"""Distribution-free intervals of quantiles, read from HDR histograms.

A quantile q of n values lies, with probability about 1 - alpha, between the order statistics of
ranks n*q -+ z*sqrt(n*q*(1-q)) (the binomial's normal approximation, z for 1 - alpha). Being read
from histograms (exactly mergeable), the intervals hold for a cluster's merged figures as for one
process's. The sweep's verdicts, the SLO checks and the variants' comparisons use them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

from harness.histograms import histogram_values

__all__ = ["Z_95", "interval_holds", "quantile_intervals"]

Z_95 = 1.96


def quantile_intervals(
    histogram: HdrHistogram, quantiles: Iterable[float], scale: int = 1000, z: float = Z_95
) -> dict[float, tuple[float, float, float]]:
    """(low, estimate, high) of each quantile (0..100), its 95 % distribution-free interval (or
    that of `z`): the order statistics around rank n*q, +-z standard deviations of the binomial,
    clamped to the smallest and largest values (see `interval_holds`); values divided by `scale`
    (microseconds to ms). One pass over the histogram for all of them."""
    n = histogram.get_total_count()
    ranks = {}
    for quantile in quantiles:
        q = quantile / 100
        spread = z * math.sqrt(n * q * (1 - q))
        ranks[quantile] = (max(0.0, (n * q - spread) / n) * 100, quantile, min(1.0, (n * q + spread + 1) / n) * 100)
    at, _ = histogram_values(histogram, {p for low_mid_high in ranks.values() for p in low_mid_high})
    return {quantile: tuple(at[p] / scale for p in low_mid_high) for quantile, low_mid_high in ranks.items()}  # type: ignore[misc]


def interval_holds(n: int, quantile: float, z: float = Z_95) -> bool:
    """Do `n` values give `quantile`'s interval without clamping (both order statistics exist)?"""
    q = quantile / 100
    spread = z * math.sqrt(n * q * (1 - q))
    return n * q - spread >= 1 and n * q + spread + 1 <= n
