"""The figures of the HTML report (harness/report.py): matplotlib plots of a run's summary
and per-request records, returned as inline SVG text. No HTML here: the report's template
(harness/templates/report.html.j2) places the SVG.

Owns: the records as numpy columns, the colours of models and outcome classes, one function
per plot (data in, a matplotlib Figure out; a sweep's capacity curve among them) and `svg`,
which turns a Figure into self-contained SVG text (ids unique per plot; rasterized scatters are
PNG inside the SVG).
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, MaxNLocator

from harness.results import Group, Summary, SweepResult, SweepStep
from harness.timing import OK, OUTCOMES
from harness.variant_figures import VARIANT_TITLES, Metric, Variants

OUTCOME_COLOURS = {
    "ok": "#2e9d5b",
    "rate_limited": "#f0a020",
    "overloaded": "#d9482b",
    "api_error": "#8e44ad",
    "timeout": "#8c5a2b",
    "connection_error": "#5d6d7e",
    "protocol_error": "#bcbd22",
    "client_error": "#e377c2",
    "cancelled": "#b0b7bf",
}
MODEL_COLOURS = ("#1f6fb4", "#e8772e", "#2ca02c", "#9b59b6", "#c0392b", "#17becf", "#7f7f7f", "#bcbd22")


def pct(group: Group, metric: str, key: str) -> float | None:
    """One percentile of a group's metric (None without data)."""
    values = getattr(group, metric)
    return getattr(values, key) if values else None


# --- records as columns ------------------------------------------------------------------
@dataclass
class Columns:
    """The records as numpy columns (fast for 10^4..10^5 requests); t_s is seconds since the start."""

    model: np.ndarray
    outcome: np.ndarray
    error_type: np.ndarray
    http_status: np.ndarray
    t_s: np.ndarray
    ttft_ms: np.ndarray
    latency_ms: np.ndarray

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], started_at: float | None) -> Columns:
        def column(key: str, kind: Any = float) -> np.ndarray:
            if kind is float:
                return np.array([np.nan if r.get(key) is None else r[key] for r in records], dtype=float)
            return np.array([str(r.get(key) or "") for r in records], dtype=object)

        wall = column("wall_start_ns") / 1e9
        origin = started_at if started_at else (np.nanmin(wall) if len(wall) else 0.0)
        return cls(
            model=column("model", str),
            outcome=column("outcome", str),
            error_type=column("error_type", str),
            http_status=column("http_status"),
            t_s=wall - origin,
            ttft_ms=column("ttft_ms"),
            latency_ms=column("latency_ms"),
        )


def model_colours(summary: Summary, columns: Columns | None) -> dict[str, str]:
    """One colour per model: the summary's models first, then any only the records name."""
    names = list(summary.models)
    if columns is not None:
        names += sorted(set(columns.model) - set(names))
    return {name: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, name in enumerate(names)}


# --- figures as SVG text -----------------------------------------------------------------
plt.rcParams.update(
    {
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.color": "#e3e6ea",
        "grid.linewidth": 0.7,
        "axes.edgecolor": "#8a929a",
        "svg.hashsalt": "claude-harness",
        "figure.dpi": 100,
    }
)

_SVG_ID = re.compile(r'\bid="([^"]+)"')
_SVG_REF = re.compile(r'(url\(#|href="#)([^")]+)')


def svg(fig: plt.Figure, key: str) -> str:
    """The figure as inline SVG: no XML prolog or metadata, ids made unique per plot, fluid width.
    matplotlib escapes the text it writes, so the result is safe to place in HTML as is."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)  # the HTML parser knows the SVG namespaces
    text = _SVG_ID.sub(lambda m: f'id="{key}-{m.group(1)}"', text)
    text = _SVG_REF.sub(lambda m: f"{m.group(1)}{key}-{m.group(2)}", text)
    head_end = text.index(">")
    head = re.sub(r'\s(width|height)="[^"]*"', "", text[:head_end])
    return f'{head} role="img" style="width:100%;height:auto">{text[head_end + 1 :]}'


def _legend(ax: plt.Axes, **kwargs: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, **kwargs)


# --- the plots ---------------------------------------------------------------------------
def plot_distribution(columns: Columns, colours: dict[str, str], metric: str, label: str) -> plt.Figure:
    """Histogram and CDF of a per-request time, one colour per model (successful requests)."""
    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    values = getattr(columns, metric)
    ok = (columns.outcome == OK) & ~np.isnan(values)
    lo, hi = np.percentile(values[ok], [0, 99.5]) if ok.any() else (0, 1)
    bins = np.linspace(lo, max(hi, lo + 1), 50)
    for model, colour in colours.items():
        data = np.sort(values[ok & (columns.model == model)])
        if not len(data):
            continue
        hist.hist(np.clip(data, lo, bins[-1]), bins=bins, color=colour, alpha=0.35, label=f"{model} (n={len(data):,})")
        hist.hist(np.clip(data, lo, bins[-1]), bins=bins, color=colour, histtype="step", linewidth=1.2)
        cdf.plot(data, np.arange(1, len(data) + 1) / len(data), color=colour, linewidth=1.6, label=model)
    hist.set(title=f"{label} histogram", xlabel=f"{label} (ms)", ylabel="requests")
    cdf.set(title=f"{label} CDF", xlabel=f"{label} (ms)", ylabel="share of requests ≤ x", ylim=(0, 1.02))
    _quantile_lines(cdf)
    _legend(hist)
    return fig


def _quantile_lines(cdf: plt.Axes) -> None:
    for q in (0.5, 0.95, 0.99):
        cdf.axhline(q, color="#9aa3ab", linewidth=0.7, linestyle=":")
        cdf.annotate(
            f"p{round(q * 100)}", (1.0, q), xycoords=("axes fraction", "data"), fontsize=7, color="#69737c", ha="right", va="bottom"
        )


def plot_percentiles(summary: Summary, colours: dict[str, str], metric: str, label: str) -> plt.Figure:
    """Without records: the summary's percentiles per model."""
    fig, ax = plt.subplots(figsize=(9, 3.0), layout="constrained")
    keys = ("p50", "p90", "p95", "p99")
    for model, group in summary.models.items():
        values = [v for key in keys if (v := pct(group, metric, key)) is not None]
        if len(values) == len(keys):
            ax.plot(keys, values, marker="o", color=colours.get(model), label=model)
    ax.set(title=f"{label} percentiles per model (from the summary)", xlabel="percentile", ylabel=f"{label} (ms)")
    _legend(ax)
    return fig


def plot_variant_cdfs(variants: Variants) -> plt.Figure:
    """Each variant's CDF of TTFT, latency and perceived latency, overlaid (the baseline dashed)."""
    metrics: tuple[Metric, ...] = ("ttft_ms", "latency_ms", "perceived_ms")
    fig, axes = plt.subplots(1, len(metrics), figsize=(11, 3.4), layout="constrained", sharey=True)
    palette = plt.get_cmap("tab10" if len(variants.variants) <= 10 else "tab20")
    for ax, metric in zip(axes, metrics, strict=True):
        for index, variant in enumerate(variants.variants):
            points = variant.cdf.get(metric)
            if points:
                values, shares = [value for _, value in points], [percentile / 100 for percentile, _ in points]
                style = {"linestyle": "--", "linewidth": 2.2} if variant.baseline else {"linewidth": 1.4}
                ax.plot(values, shares, color=palette(index % palette.N), label=variant.name, **style)
        ax.set(title=VARIANT_TITLES[metric], xlabel="ms", ylim=(0, 1.02))
        _quantile_lines(ax)
    axes[0].set_ylabel("share of requests ≤ x")
    _legend(axes[-1], fontsize=7, loc="lower right")
    return fig


def _bins(t_s: np.ndarray) -> np.ndarray:
    end = float(np.nanmax(t_s)) if len(t_s) else 1.0
    width = max(1.0, math.ceil(end / 240))
    return np.arange(0.0, end + width, width)


def _binned_percentiles(t: np.ndarray, v: np.ndarray, edges: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """The centre, p50 and p95 of each time bin that holds values."""
    index = np.digitize(t, edges) - 1
    centres, p50, p95 = [], [], []
    for i in np.unique(index):
        chunk = v[index == i]
        centres.append((edges[i] + edges[min(i + 1, len(edges) - 1)]) / 2)
        p50.append(np.percentile(chunk, 50))
        p95.append(np.percentile(chunk, 95))
    return centres, p50, p95


def plot_ttft_over_time(columns: Columns, colours: dict[str, str]) -> plt.Figure:
    """Each streamed request's TTFT at its start time, with p50 and p95 per time bin and model."""
    fig, ax = plt.subplots(figsize=(9, 3.4), layout="constrained")
    ok = (columns.outcome == OK) & ~np.isnan(columns.ttft_ms)
    edges = _bins(columns.t_s[ok])
    for model, colour in colours.items():
        mask = ok & (columns.model == model)
        if not mask.any():
            continue
        t, v = columns.t_s[mask], columns.ttft_ms[mask]
        ax.scatter(t, v, s=7, color=colour, alpha=0.3, linewidths=0, rasterized=True)
        centres, p50, p95 = _binned_percentiles(t, v, edges)
        ax.plot(centres, p50, color=colour, linewidth=1.8, label=model)
        ax.plot(centres, p95, color=colour, linewidth=1.2, linestyle="--")
    width = edges[1] - edges[0] if len(edges) > 1 else 1
    ax.set(
        title=f"TTFT over time (dots: requests; lines: p50 / p95 per {width:g} s)",
        xlabel="seconds since start (request start)",
        ylabel="TTFT (ms)",
    )
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="#69737c", linewidth=1.8), Line2D([], [], color="#69737c", linewidth=1.2, linestyle="--")]
    ax.legend(handles, [*labels, "p50", "p95"], frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def plot_throughput(columns: Columns) -> plt.Figure:
    """Requests started per second, stacked by outcome."""
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    edges = _bins(columns.t_s)
    width = edges[1] - edges[0] if len(edges) > 1 else 1.0
    bottom = np.zeros(len(edges))
    for outcome in OUTCOMES:
        mask = columns.outcome == outcome
        if not mask.any():
            continue
        counts, _ = np.histogram(columns.t_s[mask], bins=edges)
        top = bottom + np.append(counts, counts[-1]) / width  # the last value repeated: steps need len(edges)
        ax.fill_between(
            edges, bottom, top, step="post", color=OUTCOME_COLOURS.get(outcome), linewidth=0, label=f"{outcome} ({int(mask.sum()):,})"
        )
        bottom = top
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(bottom=0)
    ax.set(title="Requests per second by outcome (by request start)", xlabel="seconds since start", ylabel="requests / s")
    _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _failure_kinds(summary: Summary, columns: Columns | None) -> Counter[str]:
    if columns is None:
        return Counter({o: n for o, n in summary.totals.outcomes.items() if o != OK and n})
    kinds: Counter[str] = Counter()
    for outcome, error_type, status in zip(columns.outcome, columns.error_type, columns.http_status):
        if outcome != OK:
            http = f", HTTP {status:.0f}" if not math.isnan(status) and status != 200 else ""
            kinds[f"{outcome}: {error_type or 'unknown'}{http}"] += 1
    return kinds


def plot_errors(summary: Summary, columns: Columns | None) -> plt.Figure:
    """Failed requests by class and error type, and the failure share of each model."""
    kinds = _failure_kinds(summary, columns)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(9, max(2.6, 0.32 * len(kinds) + 1.2)), layout="constrained", gridspec_kw={"width_ratios": [1.4, 1]}
    )
    _failure_bars(left, kinds)
    _failure_shares(right, summary)
    return fig


def _failure_bars(ax: plt.Axes, kinds: Counter[str]) -> None:
    names = [name for name, _ in kinds.most_common()][::-1]
    counts = [kinds[name] for name in names]
    bars = ax.barh(names, counts, color=[OUTCOME_COLOURS.get(n.split(":")[0], "#999") for n in names])
    ax.bar_label(bars, padding=2, fontsize=8)
    ax.set(title="Failed requests by class: error type", xlabel="requests")
    ax.grid(axis="y", visible=False)


def _failure_shares(ax: plt.Axes, summary: Summary) -> None:
    models = list(summary.models)
    lefts = np.zeros(len(models))
    for outcome in OUTCOMES:
        if outcome == OK:
            continue
        shares = np.array([100 * g.count(outcome) / max(g.requests, 1) for g in summary.models.values()])
        if shares.any():
            ax.barh(models, shares, left=lefts, height=0.55, color=OUTCOME_COLOURS[outcome], label=outcome)
            lefts += shares
    for y, total in enumerate(lefts):
        ax.annotate(f"{total:.1f}%", (total, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set(title="Failure share per model", xlabel="% of the model's requests", xlim=(0, max(lefts.max(initial=0) * 1.3, 1)))
    ax.grid(axis="y", visible=False)
    _legend(ax, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)


def plot_tokens_cost(summary: Summary, colours: dict[str, str]) -> plt.Figure:
    """Input tokens, output tokens and cost per model (from the summary)."""
    models = list(summary.models)
    fig, axes = plt.subplots(1, 3, figsize=(9, max(2.4, 0.45 * len(models) + 1.3)), layout="constrained")
    panels = (
        ("input_tokens", "Input tokens", "{:,.0f}"),
        ("output_tokens", "Output tokens", "{:,.0f}"),
        ("cost_usd", "Cost (USD)", "${:,.4f}"),
    )
    for ax, (key, title, fmt) in zip(axes, panels):
        values = [getattr(summary.models[m], key) for m in models]
        bars = ax.barh(models, values, height=0.6, color=[colours.get(m, "#999") for m in models])
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], padding=2, fontsize=8)
        ax.set_xlim(0, max(values, default=0) * 1.45 or 1)
        ax.set(title=title)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.xaxis.set_major_formatter("${x:,.2f}" if key == "cost_usd" else EngFormatter(sep=""))
        if ax is not axes[0]:
            ax.set_yticklabels([])
    return fig


def plot_health(summary: Summary) -> plt.Figure:
    """The load generator's CPU and event-loop lag over the run, with the saturation limits."""
    timeline = summary.health.timeline
    start = summary.run.started_at or timeline[0].at
    t = np.array([s.at - start for s in timeline])
    fig, (cpu, lag) = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True, layout="constrained")
    _health_panel(cpu, summary, t, "cpu_percent", "CPU %", "max_cpu_percent_limit")
    _health_panel(lag, summary, t, "loop_lag_p99_ms", "loop lag p99 (ms)", "max_loop_lag_ms_limit")
    cpu.set_title("Load generator health (red bands: saturated 2 s samples)")
    lag.set_xlabel("seconds since start")
    lag.set_xlim(left=0)
    return fig


def _health_panel(ax: plt.Axes, summary: Summary, t: np.ndarray, key: str, label: str, limit_key: str) -> None:
    """One health series over time, its limit, and a red band on each saturated sample."""
    timeline = summary.health.timeline
    limit = getattr(summary.health, limit_key)
    ax.plot(t, [getattr(s, key) for s in timeline], marker="o", markersize=3, color="#1f6fb4", label=label)
    ax.axhline(limit, color="#d9482b", linestyle="--", linewidth=1, label=f"limit {limit:g}")
    for s, x in zip(timeline, t):
        if s.saturated:
            ax.axvspan(x - 2, x, color="#d9482b", alpha=0.12, linewidth=0)
    ax.set_ylabel(label)
    ax.set_ylim(bottom=0)
    _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))


# --- a capacity sweep --------------------------------------------------------------------
_QUANTILE_COLOURS = {"p50": MODEL_COLOURS[0], "p95": MODEL_COLOURS[1], "p99": MODEL_COLOURS[4]}


def _step_x(sweep: SweepResult) -> str:
    return "users" if sweep.kind == "users" else f"target rate ({sweep.unit} / s)"


def _step_series(
    ax: plt.Axes, steps: list[SweepStep], y: np.ndarray, yerr: np.ndarray | None = None, *, colour: str, label: str, linestyle: str = "-"
) -> None:
    """One figure over the step values: a line (with error bars when given), a filled marker on
    each listed step and a hollow one on each bisection step."""
    x = [step.value for step in steps]
    ax.errorbar(x, y, yerr=yerr, color=colour, linewidth=1.4, linestyle=linestyle, capsize=3, label=label)
    ax.scatter(x, y, s=26, color=colour, facecolors=["white" if step.bisection else colour for step in steps], zorder=3)


def _step_frame(ax: plt.Axes, sweep: SweepResult, title: str, ylabel: str) -> None:
    """Titles, the sustainable value as a vertical line, and the legend (with the marker kinds)."""
    if sweep.sustainable is not None:
        ax.axvline(sweep.sustainable, color="#1d2329", linestyle="--", linewidth=1.2, label=f"sustainable {sweep.sustainable_label}")
    ax.set(title=title, xlabel=_step_x(sweep), ylabel=ylabel)
    ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    markers = [("listed step", "#69737c")]
    if any(step.bisection for step in sweep.steps):
        markers.append(("bisection step", "white"))
    handles += [Line2D([], [], marker="o", color="#69737c", markerfacecolor=face, linestyle="") for _, face in markers]
    ax.legend(handles, [*labels, *(name for name, _ in markers)], frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _by_value(sweep: SweepResult) -> list[SweepStep]:
    return sorted(sweep.steps, key=lambda step: step.value)


def _values(items: list[Any]) -> np.ndarray:
    return np.array([np.nan if item is None else item for item in items], dtype=float)


def plot_sweep_rate(sweep: SweepResult) -> plt.Figure:
    """The rate each step offered and achieved against its load; the identity line when the load is a request rate."""
    steps = _by_value(sweep)
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    if sweep.kind == "rates" and sweep.unit == "requests":
        ax.axline((0, 0), slope=1, color="#9aa3ab", linestyle=":", linewidth=1, label="achieved = target")
    _step_series(ax, steps, _values([step.achieved_per_s for step in steps]), colour=OUTCOME_COLOURS[OK], label="achieved (successful)")
    _step_series(ax, steps, _values([step.offered_per_s for step in steps]), colour=MODEL_COLOURS[0], label="offered", linestyle="--")
    _step_frame(ax, sweep, "Offered and achieved rate per step", "requests / s")
    return fig


def _quantile_bars(steps: list[SweepStep], metric: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """A quantile over the steps, and its 95 % interval as error bars (NaN where a step has no value)."""
    intervals = [None if (quantiles := getattr(step, metric)) is None else getattr(quantiles, key) for step in steps]
    value, low, high = (_values([None if i is None else getattr(i, part) for i in intervals]) for part in ("value", "low", "high"))
    return value, np.array([value - low, high - value])


def plot_sweep_times(sweep: SweepResult) -> plt.Figure:
    """TTFT and latency p50, p95 and p99 per step, each with its 95 % interval as error bars."""
    steps = _by_value(sweep)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharex=True, layout="constrained")
    for ax, (metric, label) in zip(axes, (("ttft_ms", "TTFT"), ("latency_ms", "Latency"))):
        for key, colour in _QUANTILE_COLOURS.items():
            _step_series(ax, steps, *_quantile_bars(steps, metric, key), colour=colour, label=key)
        _step_frame(ax, sweep, f"{label} per step", f"{label} (ms)")
    axes[0].get_legend().remove()
    return fig


def plot_sweep_errors(sweep: SweepResult) -> plt.Figure:
    """The share of failed, rate-limited (429) and overloaded (529) requests per step."""
    steps = _by_value(sweep)
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    series = (
        ("error_share", "failed (any class)", "#5d6d7e"),
        ("rate_limited_share", "429 rate limited", OUTCOME_COLOURS["rate_limited"]),
        ("overloaded_share", "529 overloaded", OUTCOME_COLOURS["overloaded"]),
    )
    percents = [100 * _values([getattr(step, field) for step in steps]) for field, _, _ in series]
    for y, (_, label, colour) in zip(percents, series):
        _step_series(ax, steps, y, colour=colour, label=label)
    _step_frame(ax, sweep, "Errors, 429s and 529s per step", "% of the step's requests")
    ax.set_ylim(top=max(np.nan_to_num(percents).max(initial=0) * 1.15, 1))  # no failures: a flat line at 0 of 1 %
    return fig
