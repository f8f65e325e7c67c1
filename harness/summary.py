"""The console summary: one row per model (and per model x prompt), from the precise stats."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.stats import LabelStats, RunStats
from harness.timing import OK, OUTCOMES

if TYPE_CHECKING:
    from harness.run import HarnessRun

_COLUMNS = (
    ("label", "<"),
    ("reqs", ">"),
    ("fails", ">"),
    ("failures by class", "<"),
    ("TTFT p50", ">"),
    ("p95", ">"),
    ("p99", ">"),
    ("lat p50", ">"),
    ("p95 ", ">"),
    ("out tok/s", ">"),
    ("cost $", ">"),
)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _failures(stats: LabelStats) -> str:
    parts = [f"{name}={stats.outcomes[name]}" for name in OUTCOMES if name != OK and stats.outcomes[name]]
    return " ".join(parts) or "-"


def _row(label: str, stats: LabelStats) -> list[str]:
    tps = stats.median_output_tps()
    return [
        label,
        str(stats.requests),
        str(stats.failures),
        _failures(stats),
        _ms(stats.ttft_ms(50)),
        _ms(stats.ttft_ms(95)),
        _ms(stats.ttft_ms(99)),
        _ms(stats.latency_ms(50)),
        _ms(stats.latency_ms(95)),
        "-" if tps is None else f"{tps:.1f}",
        f"{stats.cost_usd:.4f}",
    ]


def render(stats: RunStats, title: str) -> str:
    """A fixed-width table: per model, then per model x prompt, then the total."""
    rows = [_row(model, model_stats) for model, model_stats in stats.by_model().items()]
    rows.append(_row("ALL", stats.total()))
    detail = [_row(f"{model} / {prompt}", s) for (model, prompt), s in sorted(stats.labels.items())]
    header = [name for name, _ in _COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows, *detail]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{cell:{align}{width}}" for cell, (_, align), width in zip(cells, _COLUMNS, widths))

    rule = "-" * len(line(header))
    out = [title, "times in ms (TTFT: streamed requests only; percentiles from HDR histograms)", rule, line(header)]
    out += [rule, *map(line, rows)]
    if len(detail) > 1:
        out += [rule, *map(line, detail)]
    out.append(rule)
    return "\n".join(out)


def render_run(run: HarnessRun, locust_requests: int) -> str:
    """The end-of-run summary: counts from every sink, the table, health and points."""
    stats, points, health = run.stats, run.points, run.health.summary()
    title = (
        f"Claude summary: scenario {run.scenario.name}, run {run.config.run_id}, "
        f"{stats.requests} requests ({locust_requests} in Locust stats, {run.records.written} records)"
    )
    lines = [render(stats, title)]
    verdict = "UNRELIABLE: the load generator was saturated, timings are late" if health["unreliable"] else "ok"
    lines.append(
        f"load generator: CPU max {health['cpu_percent_max']:.0f}% (mean {health['cpu_percent_mean']:.0f}%), "
        f"event-loop lag p99 max {health['loop_lag_p99_max_ms']:.1f} ms: {verdict}"
    )
    if points is not None:
        dropped = f", {points.dropped} DROPPED" if points.dropped else ", none dropped"
        lines.append(f"points: {points.written} written to {points.sink.description}{dropped}")
    lines.append(f"records: {run.records.path}")
    return "\n".join(lines)
