"""The HTML report of a run: one self-contained file built from the JSON summary and,
when available, the per-request records (`requests.jsonl`).

Everything is inline (CSS and matplotlib plots as SVG): the file opens offline and can be
attached to a ticket or archived by CI. Every piece of text is escaped, and anything that
looks like an API key is redacted.

    python -m harness.report SUMMARY.json [--records requests.jsonl] -o report.html
"""

from __future__ import annotations

import argparse
import html
import io
import json
import math
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import yaml
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter, MaxNLocator

from harness.formatting import DASH, fmt_cost, fmt_ms, fmt_num, fmt_time
from harness.records import read_records
from harness.results import Group, InputError, Summary, WorkerInfo, load_summary
from harness.summary import accounting_text, application_text, lost_text
from harness.timing import OK, OUTCOMES

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
_SECRET = re.compile(r"(sk-ant-[A-Za-z0-9_\-]{4,}|sk-[A-Za-z0-9]{20,}|(?i:bearer)\s+[A-Za-z0-9._\-]{16,})")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


# --- text helpers ------------------------------------------------------------------------
def redact(text: str) -> str:
    """Hide anything that looks like a key, and credentials in URLs."""
    return _USERINFO.sub("[redacted]@", _SECRET.sub("[redacted]", text))


def esc(value: Any) -> str:
    return html.escape(redact("" if value is None else str(value)))


def pct(group: Group, metric: str, key: str) -> float | None:
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
    names = list(summary.models)
    if columns is not None:
        names += sorted(set(columns.model) - set(names))
    return {name: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, name in enumerate(names)}


# --- plots -------------------------------------------------------------------------------
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
    """The figure as inline SVG: no XML prolog or metadata, ids made unique per plot, fluid width."""
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
    for q in (0.5, 0.95, 0.99):
        cdf.axhline(q, color="#9aa3ab", linewidth=0.7, linestyle=":")
        cdf.annotate(
            f"p{round(q * 100)}", (1.0, q), xycoords=("axes fraction", "data"), fontsize=7, color="#69737c", ha="right", va="bottom"
        )
    _legend(hist)
    return fig


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


def _bins(t_s: np.ndarray) -> np.ndarray:
    end = float(np.nanmax(t_s)) if len(t_s) else 1.0
    width = max(1.0, math.ceil(end / 240))
    return np.arange(0.0, end + width, width)


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
        index = np.digitize(t, edges) - 1
        centres, p50, p95 = [], [], []
        for i in np.unique(index):
            chunk = v[index == i]
            centres.append((edges[i] + edges[min(i + 1, len(edges) - 1)]) / 2)
            p50.append(np.percentile(chunk, 50))
            p95.append(np.percentile(chunk, 95))
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
    names = [name for name, _ in kinds.most_common()][::-1]
    counts = [kinds[name] for name in names]
    bars = left.barh(names, counts, color=[OUTCOME_COLOURS.get(n.split(":")[0], "#999") for n in names])
    left.bar_label(bars, padding=2, fontsize=8)
    left.set(title="Failed requests by class: error type", xlabel="requests")
    left.grid(axis="y", visible=False)
    models = list(summary.models)
    lefts = np.zeros(len(models))
    for outcome in OUTCOMES:
        if outcome == OK:
            continue
        shares = np.array([100 * g.count(outcome) / max(g.requests, 1) for g in summary.models.values()])
        if shares.any():
            right.barh(models, shares, left=lefts, height=0.55, color=OUTCOME_COLOURS[outcome], label=outcome)
            lefts += shares
    for y, total in enumerate(lefts):
        right.annotate(f"{total:.1f}%", (total, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    right.set(title="Failure share per model", xlabel="% of the model's requests", xlim=(0, max(lefts.max(initial=0) * 1.3, 1)))
    right.grid(axis="y", visible=False)
    _legend(right, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)
    return fig


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
    health = summary.health
    timeline = health.timeline
    start = summary.run.started_at or timeline[0].at
    t = np.array([s.at - start for s in timeline])
    fig, (cpu, lag) = plt.subplots(2, 1, figsize=(9, 3.6), sharex=True, layout="constrained")
    series = (
        (cpu, "cpu_percent", "CPU %", "max_cpu_percent_limit"),
        (lag, "loop_lag_p99_ms", "loop lag p99 (ms)", "max_loop_lag_ms_limit"),
    )
    for ax, key, label, limit in series:
        ax.plot(t, [getattr(s, key) for s in timeline], marker="o", markersize=3, color="#1f6fb4", label=label)
        ax.axhline(getattr(health, limit), color="#d9482b", linestyle="--", linewidth=1, label=f"limit {getattr(health, limit):g}")
        for s, x in zip(timeline, t):
            if s.saturated:
                ax.axvspan(x - 2, x, color="#d9482b", alpha=0.12, linewidth=0)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        _legend(ax, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    cpu.set_title("Load generator health (red bands: saturated 2 s samples)")
    lag.set_xlabel("seconds since start")
    lag.set_xlim(left=0)
    return fig


# --- HTML sections -----------------------------------------------------------------------
CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f4f6f8;color:#1d2329;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif}
main{max-width:1240px;margin:0 auto;padding:20px 24px 48px}
header.top{background:#1d2733;color:#fff;padding:20px 24px}
header.top .inner{max-width:1240px;margin:0 auto;padding:0 24px}
header.top h1{margin:0 0 4px;font-size:22px;font-weight:600}
header.top .meta{color:#c3ccd6;font-size:13px}
header.top .meta b{color:#fff;font-weight:600}
.badges{margin-top:10px;display:flex;gap:8px;flex-wrap:wrap}
.badge{display:inline-block;padding:3px 10px;border-radius:12px;font-weight:700;font-size:13px;letter-spacing:.03em}
.pass{background:#2e9d5b;color:#fff}.fail{background:#d9482b;color:#fff}.warn{background:#f0a020;color:#1d2329}
.neutral{background:#5d6d7e;color:#fff}
ul.reasons{margin:8px 0 0;padding-left:18px;color:#dfe5eb;font-size:13px}
section{background:#fff;border:1px solid #dde2e7;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:4px 0 6px}
.tiles{display:grid;grid-template-columns:repeat(4,1fr);gap:10px}
.tile{background:#f7f9fb;border:1px solid #e3e7eb;border-radius:6px;padding:8px 12px}
.tile .v{font-size:20px;font-weight:600}.tile .k{color:#5d6873;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{padding:5px 7px;border-bottom:1px solid #e6e9ec;text-align:right;white-space:nowrap}
th{background:#f1f4f6;font-weight:600;color:#3b4651}
th.l,td.l{text-align:left}
tr.all td{font-weight:700;border-top:2px solid #c9d0d6}
td.chips{white-space:normal;text-align:left;min-width:170px}
td.ok{color:#1e7a44;font-weight:700}td.bad{color:#c0392b;font-weight:700}
.chip{display:inline-block;padding:0 6px;margin:1px 3px 1px 0;border-radius:9px;font-size:11.5px;color:#fff}
.scroll{overflow-x:auto}
.plots{display:grid;grid-template-columns:1fr;gap:8px}
figure{margin:0 0 10px}
figure.plot figcaption{color:#5d6873;font-size:12.5px;margin:0 0 4px}
.note{color:#5d6873;background:#f7f9fb;border:1px dashed #cbd3da;border-radius:6px;padding:10px 14px}
.bad-text{color:#c0392b;font-weight:600}
pre{background:#f7f9fb;border:1px solid #e3e7eb;border-radius:6px;padding:10px 12px;overflow-x:auto;font-size:12.5px;white-space:pre-wrap}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:16px}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0}
dl.kv dt{color:#5d6873}dl.kv dd{margin:0;word-break:break-all}
footer{color:#7b8590;font-size:12px;text-align:center}
"""


def slo_badge(summary: Summary) -> tuple[str, str]:
    slos = summary.slos
    if not slos:
        return "NO SLOs", "neutral"
    failed = [s for s in slos if not s.passed]
    return (f"FAIL ({len(failed)} of {len(slos)} SLOs)", "fail") if failed else (f"PASS ({len(slos)} SLOs)", "pass")


def section_header(summary: Summary) -> str:
    run = summary.run
    text, cls = slo_badge(summary)
    badges = [f'<span class="badge {cls}">{esc(text)}</span>']
    if summary.health.unreliable:
        badges.append('<span class="badge warn">UNRELIABLE: the load generator was saturated, timings are late</span>')
    else:
        badges.append('<span class="badge pass">load generator OK</span>')
    if summary.lost_workers:
        badges.append(f'<span class="badge fail">{len(summary.lost_workers)} worker(s) LOST</span>')
    run_verdict = summary.verdict
    if run_verdict is not None:
        cls = {"PASS": "pass", "DONE": "neutral", "UNRELIABLE": "warn"}.get(run_verdict.status, "fail")
        badges.append(f'<span class="badge {cls}">run: {esc(run_verdict.status)}</span>')
    reasons = "".join(f"<li>{esc(reason)}</li>" for reason in (run_verdict.reasons if run_verdict else []))
    meta = [
        ("run", run.run_id),
        ("host", run.host),
        ("transport", run.transport),
        ("duration", f"{run.duration_s:g} s"),
        ("users", run.users),
        ("started", fmt_time(run.started_at)),
    ]
    meta_html = " &middot; ".join(f"{esc(k)} <b>{esc(v)}</b>" for k, v in meta)
    return (
        f'<header class="top"><div class="inner"><h1>Claude load test: {esc(run.scenario.name)}</h1>'
        f'<div class="meta">{meta_html}</div><div class="badges">{"".join(badges)}</div>'
        f"{f'<ul class=reasons>{reasons}</ul>' if reasons else ''}</div></header>"
    )


def section_overview(summary: Summary) -> str:
    totals, run = summary.totals, summary.run
    duration = run.duration_s
    failures = totals.failures
    share = 100 * failures / totals.requests if totals.requests else 0
    tiles = [
        ("requests", f"{totals.requests:,}"),
        ("requests / s", f"{totals.requests / duration:.1f}" if duration else DASH),
        ("failures", f"{failures:,} ({share:.1f}%)"),
        ("TTFT p50 / p95 (ms)", f"{fmt_ms(pct(totals, 'ttft_ms', 'p50'))} / {fmt_ms(pct(totals, 'ttft_ms', 'p95'))}"),
        ("latency p50 / p95 (ms)", f"{fmt_ms(pct(totals, 'latency_ms', 'p50'))} / {fmt_ms(pct(totals, 'latency_ms', 'p95'))}"),
        ("output tok/s (p50)", fmt_num(pct(totals, "output_tps", "p50"))),
        ("tokens in / out", f"{totals.input_tokens:,} / {totals.output_tokens:,}"),
        ("cost", f"${fmt_cost(totals.cost_usd, totals.cost_known)}"),
    ]
    body = "".join(f'<div class="tile"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>' for k, v in tiles)
    return f'<section id="overview"><h2>Overview</h2><div class="tiles">{body}</div>{accounting_line(summary)}</section>'


def accounting_line(summary: Summary) -> str:
    acc = summary.accounting
    consistent = acc.recorded == acc.records == acc.requests + acc.before_window and acc.locust_requests == acc.requests
    cls = "" if consistent or summary.run.in_progress else ' class="bad-text"'
    if summary.run.in_progress:
        tail = "the run is in progress: each sink counted at a slightly different moment"
    elif consistent:
        tail = "every request counted once in every sink"
    else:
        tail = "MISMATCH: some sink missed or double-counted requests"
    return f'<p id="accounting"{cls}>Accounting: {esc(accounting_text(acc))}: {esc(tail)}.</p>'


def section_slos(summary: Summary) -> str:
    slos = summary.slos
    if not slos:
        return '<section id="slos"><h2>SLOs</h2><p class="note">No SLOs were set for this run.</p></section>'
    rows = "".join(
        f'<tr><td class="l">{esc(s.name)}</td><td class="l">{esc(s.scope)}</td>'
        f'<td class="l">{esc(s.metric)}</td><td>{esc(fmt_num(s.value))}</td>'
        f"<td>{esc(s.operator)} {esc(fmt_num(s.limit))}</td>"
        f'<td class="{"ok" if s.passed else "bad"}">{"PASS" if s.passed else "FAIL"}</td></tr>'
        for s in slos
    )
    head = '<tr><th class="l">SLO</th><th class="l">scope</th><th class="l">metric</th><th>value</th><th>limit</th><th>result</th></tr>'
    return f'<section id="slos"><h2>SLOs</h2><div class="scroll"><table class="slos">{head}{rows}</table></div></section>'


def _failure_chips(outcomes: dict[str, int]) -> str:
    chips = [
        f'<span class="chip" style="background:{OUTCOME_COLOURS.get(name, "#777")}">{esc(name)} {n:,}</span>'
        for name in OUTCOMES
        if name != OK and (n := outcomes.get(name))
    ]
    return "".join(chips) or DASH


def _stats_cells(group: Group) -> str:
    requests, failures = group.requests, group.failures
    share = f" ({100 * failures / requests:.1f}%)" if requests and failures else ""
    chips = f"<br>{_failure_chips(group.outcomes)}" if failures else ""
    cells = [
        fmt_ms(pct(group, "ttft_ms", "p50")),
        fmt_ms(pct(group, "ttft_ms", "p95")),
        fmt_ms(pct(group, "ttft_ms", "p99")),
        fmt_ms(pct(group, "latency_ms", "p50")),
        fmt_ms(pct(group, "latency_ms", "p95")),
        fmt_num(pct(group, "output_tps", "p50")),
        f"{group.input_tokens:,} / {group.output_tokens:,}",
        fmt_cost(group.cost_usd, group.cost_known),
    ]
    rest = "".join(f"<td>{esc(c)}</td>" for c in cells)
    return f'<td>{requests:,}</td><td class="chips">{esc(f"{failures:,}{share}")}{chips}</td>{rest}'


_STATS_HEAD = (
    "<th>requests</th><th class='l'>failures by class</th><th>TTFT p50</th><th>TTFT p95</th><th>TTFT p99</th>"
    "<th>latency p50</th><th>latency p95</th><th>out tok/s</th><th>tokens in / out</th><th>cost $</th>"
)


def section_tables(summary: Summary) -> str:
    models = "".join(f'<tr><td class="l">{esc(m)}</td>{_stats_cells(g)}</tr>' for m, g in summary.models.items())
    if len(summary.modes) > 1:
        models += "".join(f'<tr><td class="l">ALL / {esc(m)}</td>{_stats_cells(g)}</tr>' for m, g in summary.modes.items())
    models += f'<tr class="all"><td class="l">ALL</td>{_stats_cells(summary.totals)}</tr>'
    labels = "".join(
        f'<tr><td class="l">{esc(g.model)}</td><td class="l">{esc(g.prompt)}</td><td class="l">{esc(g.mode)}</td>{_stats_cells(g)}</tr>'
        for g in summary.labels
    )
    note = "<p class='note'>Times in ms. TTFT covers successful streamed requests; latency successful requests; percentiles from HDR histograms (3 significant digits); out tok/s is the median.</p>"
    return (
        f'<section id="models"><h2>Per model</h2><div class="scroll"><table class="models"><tr><th class="l">model</th>'
        f"{_STATS_HEAD}</tr>{models}</table></div>{note}</section>{section_application(summary)}"
        f'<section id="labels"><h2>Per model &times; prompt &times; mode</h2><div class="scroll"><table class="labels"><tr>'
        f'<th class="l">model</th><th class="l">prompt</th><th class="l">mode</th>{_STATS_HEAD}</tr>{labels}</table></div></section>'
    )


def section_application(summary: Summary) -> str:
    """With retries: the requests as the application sees them (the tables count each attempt)."""
    groups = [(name, group.application) for name, group in [*summary.models.items(), ("ALL", summary.totals)]]
    rows = "".join(f"<li>{esc(application_text(name, app))}</li>" for name, app in groups if app is not None)
    if not rows:
        return ""
    note = "<p class='note'>The tables above count each attempt (a failed one stays a failure there); here each request counts once, its latency and TTFT from its first attempt's start, retries and waits included.</p>"
    return f'<section id="application"><h2>As the application sees them (retries)</h2><ul>{rows}</ul>{note}</section>'


@dataclass
class Plot:
    key: str
    title: str
    caption: str
    draw: Callable[[], plt.Figure] | None  # None: replaced by the caption as a note


def plot_list(summary: Summary, columns: Columns | None) -> list[Plot]:
    colours = model_colours(summary, columns)
    no_records = "No per-request records were given, so this time series is not available (pass --records requests.jsonl)."
    has_failures = summary.totals.failures > 0
    plots = []
    for metric, label in (("ttft_ms", "TTFT"), ("latency_ms", "Latency")):
        key = "ttft-dist" if metric == "ttft_ms" else "latency-dist"
        if columns is not None:
            draw = lambda m=metric, lb=label: plot_distribution(columns, colours, m, lb)  # noqa: E731
            caption = f"{label} of successful requests per model: histogram (clipped at p99.5) and cumulative distribution."
        else:
            draw = lambda m=metric, lb=label: plot_percentiles(summary, colours, m, lb)  # noqa: E731
            caption = f"{label} percentiles per model from the summary (no records given for full distributions)."
        plots.append(Plot(key, f"{label} distribution", caption, draw))
    if columns is not None:
        plots.append(
            Plot(
                "ttft-time",
                "TTFT over time",
                "Each successful streamed request's TTFT at the time it started, with p50 and p95 per time bin per model.",
                lambda: plot_ttft_over_time(columns, colours),
            )
        )
        plots.append(
            Plot(
                "throughput",
                "Requests per second by outcome",
                "Requests by the second they started, stacked by outcome class.",
                lambda: plot_throughput(columns),
            )
        )
    else:
        plots.append(Plot("ttft-time", "TTFT over time", no_records, None))
        plots.append(Plot("throughput", "Requests per second by outcome", no_records, None))
    if has_failures:
        plots.append(
            Plot(
                "errors",
                "Errors",
                "Failed requests by outcome class and error type (HTTP status when not 200), and each model's failure share.",
                lambda: plot_errors(summary, columns),
            )
        )
    else:
        plots.append(Plot("errors", "Errors", "No request failed: nothing to break down.", None))
    plots.append(
        Plot(
            "tokens-cost",
            "Tokens and cost per model",
            "Token usage reported by the server and the cost computed from it.",
            lambda: plot_tokens_cost(summary, colours),
        )
    )
    if summary.health.timeline:
        plots.append(
            Plot(
                "health",
                "Load generator health",
                "CPU use and event-loop lag (p99 over each 2 s sample) of this process; above the limits its timings are late.",
                lambda: plot_health(summary),
            )
        )
    else:
        plots.append(
            Plot("health", "Load generator health", "No health samples were recorded (the run was shorter than one sample).", None)
        )
    return plots


def section_plots(summary: Summary, columns: Columns | None) -> str:
    figures = []
    for plot in plot_list(summary, columns):
        if plot.draw is None:
            body = f'<p class="note">{esc(plot.caption)}</p>'
            figures.append(f'<figure class="note-plot" id="plot-{plot.key}"><h3>{esc(plot.title)}</h3>{body}</figure>')
        else:
            figures.append(
                f'<figure class="plot" id="plot-{plot.key}"><h3>{esc(plot.title)}</h3>'
                f"<figcaption>{esc(plot.caption)}</figcaption>{svg(plot.draw(), plot.key)}</figure>"
            )
    return f'<section id="plots"><h2>Plots</h2><div class="plots">{"".join(figures)}</div></section>'


def section_health_workers(summary: Summary) -> str:
    health, points = summary.health, summary.points
    limits = f"limits {fmt_num(health.max_cpu_percent_limit)}% CPU, {fmt_num(health.max_loop_lag_ms_limit)} ms loop lag"
    state = '<span class="bad-text">UNRELIABLE</span>' if health.unreliable else "ok"
    lines = [
        f"<p>Load generator: CPU max {fmt_num(health.cpu_percent_max)}% (mean {fmt_num(health.cpu_percent_mean)}%), "
        f"event-loop lag p99 max {fmt_num(health.loop_lag_p99_max_ms)} ms, {fmt_num(health.saturated_samples)} "
        f"of {fmt_num(health.samples)} samples saturated ({esc(limits)}): {state}.</p>",
    ]
    dropped = f'<span class="bad-text">{points.dropped:,} dropped</span>' if points.dropped else "none dropped"
    written = f"{points.written:,} written to {esc(points.sink)}"
    lines.append(f'<p id="points">Points: {written}, {dropped}.</p>')
    if summary.records_path:
        lines.append(f"<p>Records: <code>{esc(summary.records_path)}</code></p>")
    workers = summary.workers
    if workers:
        rows = "".join(_worker_row(w) for w in workers)
        lines.append(
            '<div class="scroll"><table class="workers"><tr><th class="l">worker</th><th>requests</th><th>records</th>'
            "<th>points written</th><th>points dropped</th><th>saturated samples</th><th>CPU %</th><th>loop lag p99 ms</th>"
            f'<th class="l">state</th></tr>{rows}</table></div>'
        )
    else:
        lines.append("<p>Workers: none (a single-process run).</p>")
    if summary.lost_workers:
        lines += [f'<p class="bad-text">{esc(w.name)}: {esc(lost_text(w))}</p>' for w in workers if w.lost]
    for client, reason in summary.refused_workers.items():
        lines.append(f'<p class="bad-text">Worker {esc(client)} refused: {esc(reason)}</p>')
    return f'<section id="health"><h2>Load generator, workers and points</h2>{"".join(lines)}</section>'


def _worker_row(worker: WorkerInfo) -> str:
    last = worker.last_health
    state = '<td class="l bad">LOST</td>' if worker.lost else '<td class="l ok">ok</td>'
    cells = (
        worker.requests,
        worker.records,
        worker.points_written,
        worker.points_dropped,
        worker.saturated_samples,
        last.get("cpu_percent"),
        last.get("loop_lag_p99_ms"),
    )
    return f'<tr><td class="l">{esc(worker.name)}</td>{"".join(f"<td>{esc(fmt_num(c))}</td>" for c in cells)}{state}</tr>'


def section_scenario(summary: Summary) -> str:
    run = summary.run
    scenario = run.scenario
    content = yaml.safe_dump(scenario.content, sort_keys=False, allow_unicode=True, width=100)
    details = [
        ("name", scenario.name),
        ("source", scenario.source),
        ("digest", scenario.digest),
        ("anthropic-version", run.anthropic_version),
        ("spawn rate", run.spawn_rate),
        ("run time (s)", run.run_time_s),
        ("seeds", json.dumps(run.seeds)),
        ("started", fmt_time(run.started_at)),
        ("ended", fmt_time(run.ended_at)),
        ("role", run.role),
        ("summary schema", f"{summary.schema_} v{summary.version}"),
    ]
    kv = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in details)
    versions = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in run.versions.items())
    return (
        '<section id="scenario"><h2>Scenario and versions</h2><div class="cols">'
        f'<div><h3>Run</h3><dl class="kv">{kv}</dl></div><div><h3>Versions</h3><dl class="kv">{versions}</dl></div></div>'
        f'<h3>Scenario (YAML)</h3><pre class="yaml">{esc(content)}</pre></section>'
    )


def build_html(summary: Summary, records: list[dict[str, Any]] | None) -> str:
    """The report; its plots, like its tables, show the requests of the measurement window."""
    window = summary.accounting.window
    records = [r for r in records if r.get("window", 0) == window] if records else None
    columns = Columns.from_records(records, summary.run.started_at) if records else None
    title = f"Claude load test: {summary.run.scenario.name} ({summary.run.run_id})"
    body = "".join(
        [
            section_header(summary),
            "<main>",
            section_overview(summary),
            section_slos(summary),
            section_tables(summary),
            section_plots(summary, columns),
            section_health_workers(summary),
            section_scenario(summary),
            f"<footer>claude-loadtest-harness {esc(summary.run.versions.get('harness'))} &middot; "
            f"report of run {esc(summary.run.run_id)}</footer></main>",
        ]
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def render_report(summary: Summary, records: list[dict[str, Any]] | None, path: Path) -> Path:
    """Write the self-contained HTML report of a run to `path` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_html(summary, records), encoding="utf-8")
    return path


# --- CLI ---------------------------------------------------------------------------------
def load_records(path: Path) -> list[dict[str, Any]]:
    """A records file for the report; a bad one is one line for the user."""
    try:
        return read_records(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such records file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read: {error}") from None
    except ValueError as error:
        raise InputError(f"{path}: {error}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: Iterable[str] | None = None) -> int:
    parser = _Parser(prog="python -m harness.report", description="Write the HTML report of a run.")
    parser.add_argument("summary", type=Path, help="the run's JSON summary (locust --summary-json)")
    parser.add_argument("--records", type=Path, help="requests.jsonl (default: the summary's records_path, if it exists)")
    parser.add_argument("-o", "--output", type=Path, help="the HTML file to write (default: SUMMARY with .html)")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        summary = load_summary(args.summary)
        records_path = args.records
        if records_path is None and summary.records_path and Path(summary.records_path).is_file():
            records_path = Path(summary.records_path)
        records = load_records(records_path) if records_path else None
        output = args.output or args.summary.with_suffix(".html")
        render_report(summary, records, output)
    except InputError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"{parser.prog}: error: cannot write the report: {error}", file=sys.stderr)
        return 2
    print(f"report written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
