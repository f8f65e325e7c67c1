"""How figures are written for people: one definition for the console, the web UI, Markdown
and the HTML report, so the same number reads the same everywhere."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from harness.timing import OK, OUTCOMES

DASH = "-"  # no value


def fmt_ms(value: float | None) -> str:
    """Milliseconds: whole above 100, one decimal below."""
    if value is None:
        return DASH
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def fmt_int(value: int | None) -> str:
    return DASH if value is None else f"{value:,}"


def fmt_share(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f} %"


def fmt_tps(value: float | None) -> str:
    return DASH if value is None else f"{value:,.1f}"


def fmt_cost(value: float | None, known: bool = True) -> str:
    """Dollars; a cost that leaves out unpriced requests says so."""
    if value is None:
        return DASH
    return f"{value:.4f}" if known else f"{value:.4f}+ (unknown part)"


def fmt_num(value: Any) -> str:
    """Any other value: counts with separators, floats to 4 significant digits."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def fmt_time(epoch_s: float | None) -> str:
    if not epoch_s:
        return DASH
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def failures_by_class(outcomes: Mapping[str, int], separator: str = " ") -> str:
    """`rate_limited=3 cancelled=1`, in the order of the outcome classes."""
    parts = [f"{name}={outcomes[name]}" for name in OUTCOMES if name != OK and outcomes.get(name)]
    return separator.join(parts) or DASH
