"""The HTML report of a run: one self-contained file built from the JSON summary and,
when available, the per-request records (`requests.jsonl`).

Everything is inline (CSS and matplotlib plots as SVG): the file opens offline and can be
attached to a ticket or archived by CI.

This module owns loading the inputs, choosing what each section shows (its values, formatted,
as plain data: the `section_*` functions), rendering the Jinja2 template
harness/templates/report.html.j2 (the layout and the CSS) and the command line. The plots are
drawn by harness/report_plots.py.

The template is autoescaped and every value it prints is redacted (`redact`: anything that
looks like an API key, and credentials in URLs). The plots' SVG is the only markup printed as
it is: it is marked safe (`Markup`) in `drawn`, where it is made, and nowhere else.

    python -m harness.report SUMMARY.json [--records requests.jsonl] -o report.html
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from harness.formatting import DASH, fmt_cost, fmt_ms, fmt_num, fmt_time
from harness.records import read_records
from harness.report_plots import (
    OUTCOME_COLOURS,
    Columns,
    model_colours,
    pct,
    plot_distribution,
    plot_errors,
    plot_health,
    plot_percentiles,
    plot_sweep_errors,
    plot_sweep_rate,
    plot_sweep_times,
    plot_throughput,
    plot_tokens_cost,
    plot_ttft_over_time,
    plot_variant_cdfs,
    svg,
)
from harness.results import Group, InputError, Summary, SweepResult, SweepStep, WorkerInfo, load_summary
from harness.summary import (
    SWEEP_COLUMNS,
    VARIANT_COLUMNS,
    accounting_text,
    application_text,
    lost_text,
    render_arrivals,
    render_rate_limits,
    render_workload,
    stamping_text,
    sweep_cells,
    sweep_conclusion,
    variant_cells,
)
from harness.timing import OK, OUTCOMES
from harness.variant_figures import VARIANT_TITLES, VariantFigures

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SECRET = re.compile(r"(sk-ant-[A-Za-z0-9_\-]{4,}|sk-[A-Za-z0-9]{20,}|(?i:bearer)\s+[A-Za-z0-9._\-]{16,})")
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
TEMPLATE = "report.html.j2"
NO_RECORDS = "No per-request records were given, so this time series is not available (pass --records requests.jsonl)."


# --- text and template -------------------------------------------------------------------
def redact(text: str) -> str:
    """Hide anything that looks like a key, and credentials in URLs."""
    return _USERINFO.sub("[redacted]@", _SECRET.sub("[redacted]", text))


def _printable(value: Any) -> Any:
    """The template's finalize hook, on every value it prints: redacted text ("" for None),
    which autoescaping then escapes; markup marked safe is printed as it is."""
    if isinstance(value, Markup):
        return value
    return redact("" if value is None else str(value))


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("harness", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        finalize=_printable,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.globals["DASH"] = DASH
    return environment


# --- what the sections show --------------------------------------------------------------
@dataclass
class Chip:
    colour: str
    text: str


@dataclass
class Stats:
    """One group's figures in the per-model and per-label tables, formatted."""

    requests: str
    failures: str
    chips: list[Chip] | None  # None: no failures; empty: failures of no known class (a dash)
    cells: list[str]


@dataclass
class Row:
    names: list[str | None]  # None: printed empty
    stats: Stats
    total: bool = False


@dataclass
class Plot:
    key: str
    title: str
    caption: str
    draw: Callable[[], Figure] | None = None  # None: replaced by the caption as a note
    svg: Markup | None = None  # the drawn figure (section_plots)


def slo_badge(summary: Summary) -> tuple[str, str]:
    slos = summary.slos
    if not slos:
        return "NO SLOs", "neutral"
    failed = [s for s in slos if not s.passed]
    return (f"FAIL ({len(failed)} of {len(slos)} SLOs)", "fail") if failed else (f"PASS ({len(slos)} SLOs)", "pass")


def _badges(summary: Summary) -> list[tuple[str, str]]:
    """The header's badges as (CSS class, text)."""
    text, cls = slo_badge(summary)
    badges = [(cls, text)]
    if summary.health.unreliable:
        badges.append(("warn", "UNRELIABLE: the load generator was saturated, timings are late"))
    else:
        badges.append(("pass", "load generator OK"))
    if summary.lost_workers:
        badges.append(("fail", f"{len(summary.lost_workers)} worker(s) LOST"))
    if summary.verdict is not None:
        status = summary.verdict.status
        badges.append(({"PASS": "pass", "DONE": "neutral", "UNRELIABLE": "warn"}.get(status, "fail"), f"run: {status}"))
    return badges


def section_header(summary: Summary) -> dict[str, Any]:
    run = summary.run
    meta = [
        ("run", run.run_id),
        ("host", run.host),
        ("transport", run.transport),
        ("receive times", stamping_text(run.stamping, run.stamped_reads)),
        ("duration", f"{run.duration_s:g} s"),
        ("users", run.users),
        ("started", fmt_time(run.started_at)),
    ]
    reasons = summary.verdict.reasons if summary.verdict else []
    return {"name": run.scenario.name, "meta": meta, "badges": _badges(summary), "reasons": reasons}


def section_overview(summary: Summary) -> dict[str, Any]:
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
    return {"tiles": tiles, "accounting": accounting_line(summary)}


def accounting_line(summary: Summary) -> dict[str, Any]:
    acc = summary.accounting
    consistent = acc.recorded == acc.records == acc.requests + acc.before_window and acc.locust_requests == acc.requests
    if summary.run.in_progress:
        tail = "the run is in progress: each sink counted at a slightly different moment"
    elif consistent:
        tail = "every request counted once in every sink"
    else:
        tail = "MISMATCH: some sink missed or double-counted requests"
    return {"text": accounting_text(acc), "tail": tail, "bad": not (consistent or summary.run.in_progress)}


def section_slos(summary: Summary) -> list[dict[str, Any]]:
    return [
        {
            "name": s.name,
            "scope": s.scope,
            "metric": s.metric,
            "value": fmt_num(s.value),
            "limit": f"{s.operator} {fmt_num(s.limit)}",
            "passed": s.passed,
        }
        for s in summary.slos
    ]


def _failure_chips(outcomes: dict[str, int]) -> list[Chip]:
    return [Chip(OUTCOME_COLOURS.get(name, "#777"), f"{name} {n:,}") for name in OUTCOMES if name != OK and (n := outcomes.get(name))]


def stats(group: Group) -> Stats:
    requests, failures = group.requests, group.failures
    share = f" ({100 * failures / requests:.1f}%)" if requests and failures else ""
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
    return Stats(f"{requests:,}", f"{failures:,}{share}", _failure_chips(group.outcomes) if failures else None, cells)


def section_tables(summary: Summary) -> dict[str, Any]:
    """The per-model table (then each mode, then all), the per-label one, and the retries' view."""
    models = [Row([m], stats(g)) for m, g in summary.models.items()]
    if len(summary.modes) > 1:
        models += [Row([f"ALL / {m}"], stats(g)) for m, g in summary.modes.items()]
    models.append(Row(["ALL"], stats(summary.totals), total=True))
    labels = [Row([g.model, g.prompt, g.mode], stats(g)) for g in summary.labels]
    arrivals = [line.strip() for line in render_arrivals(summary)]
    rate_limits = render_rate_limits(summary)
    return {
        "models": models,
        "labels": labels,
        "application": application_lines(summary),
        "arrivals": arrivals,
        "rate_limits": rate_limits,
        "workload": render_workload(summary),
    }


def application_lines(summary: Summary) -> list[str]:
    """With retries: the requests as the application sees them (the tables count each attempt)."""
    groups = [(name, group.application) for name, group in [*summary.models.items(), ("ALL", summary.totals)]]
    return [application_text(name, app) for name, app in groups if app is not None]


def plot_list(summary: Summary, columns: Columns | None) -> list[Plot]:
    colours = model_colours(summary, columns)
    tokens = Plot(
        "tokens-cost",
        "Tokens and cost per model",
        "Token usage reported by the server and the cost computed from it.",
        partial(plot_tokens_cost, summary, colours),
    )
    return [
        *_distribution_plots(summary, columns, colours),
        *_time_series_plots(columns, colours),
        _errors_plot(summary, columns),
        tokens,
        _health_plot(summary),
    ]


def _distribution_plots(summary: Summary, columns: Columns | None, colours: dict[str, str]) -> list[Plot]:
    plots = []
    for metric, label in (("ttft_ms", "TTFT"), ("latency_ms", "Latency")):
        key = "ttft-dist" if metric == "ttft_ms" else "latency-dist"
        if columns is not None:
            draw = partial(plot_distribution, columns, colours, metric, label)
            caption = f"{label} of successful requests per model: histogram (clipped at p99.5) and cumulative distribution."
        else:
            draw = partial(plot_percentiles, summary, colours, metric, label)
            caption = f"{label} percentiles per model from the summary (no records given for full distributions)."
        plots.append(Plot(key, f"{label} distribution", caption, draw))
    return plots


def _time_series_plots(columns: Columns | None, colours: dict[str, str]) -> list[Plot]:
    ttft, throughput = "TTFT over time", "Requests per second by outcome"
    if columns is None:
        return [Plot("ttft-time", ttft, NO_RECORDS), Plot("throughput", throughput, NO_RECORDS)]
    return [
        Plot(
            "ttft-time",
            ttft,
            "Each successful streamed request's TTFT at the time it started, with p50 and p95 per time bin per model.",
            partial(plot_ttft_over_time, columns, colours),
        ),
        Plot("throughput", throughput, "Requests by the second they started, stacked by outcome class.", partial(plot_throughput, columns)),
    ]


def _errors_plot(summary: Summary, columns: Columns | None) -> Plot:
    if summary.totals.failures <= 0:
        return Plot("errors", "Errors", "No request failed: nothing to break down.")
    caption = "Failed requests by outcome class and error type (HTTP status when not 200), and each model's failure share."
    return Plot("errors", "Errors", caption, partial(plot_errors, summary, columns))


def _health_plot(summary: Summary) -> Plot:
    title = "Load generator health"
    if not summary.health.timeline:
        return Plot("health", title, "No health samples were recorded (the run was shorter than one sample).")
    caption = "CPU use and event-loop lag (p99 over each 2 s sample) of this process; above the limits its timings are late."
    return Plot("health", title, caption, partial(plot_health, summary))


def drawn(plots: list[Plot]) -> list[Plot]:
    """The plots, drawn. Their SVG is printed as it is: made by matplotlib, which escapes the
    text it writes (model names, error types), it is the one value marked safe."""
    for plot in plots:
        if plot.draw is not None:
            plot.svg = Markup(svg(plot.draw(), plot.key))
    return plots


def section_plots(summary: Summary, columns: Columns | None) -> list[Plot]:
    return drawn(plot_list(summary, columns))


def section_sweep(summary: Summary) -> dict[str, Any] | None:
    """A capacity sweep: its steps in the order run, the sustainable load in words, the capacity curve."""
    sweep = summary.sweep
    if sweep is None:
        return None
    return {
        "columns": [(column.header, _align(column.align)) for column in SWEEP_COLUMNS],
        "rows": [_sweep_row(step) for step in sweep.steps],
        "conclusion": sweep_conclusion(sweep),
        "plots": drawn(sweep_plots(sweep)),
    }


def section_variants(summary: Summary) -> dict[str, Any] | None:
    """The variants: a row each, every comparison with the baseline, their CDFs overlaid."""
    variants = summary.variants
    if variants is None:
        return None
    caption = "Each variant's distribution, from its HDR histogram (the baseline dashed); perceived: TTFT streamed, latency blocking."
    return {
        "baseline": variants.baseline,
        "method": variants.method,
        "columns": [(name, _align(align)) for name, align in VARIANT_COLUMNS],
        "rows": [variant_cells(variant) for variant in variants.variants],
        "comparisons": [_comparison_row(variant) for variant in variants.variants if variant.comparisons],
        "plots": drawn([Plot("variants-cdf", "Variants: distributions overlaid", caption, partial(plot_variant_cdfs, variants))]),
    }


def _comparison_row(variant: VariantFigures) -> tuple[str, list[tuple[str, list[tuple[str, str, str]]]]]:
    """A variant's comparisons by metric: each quantile's cell (ratio and interval), its CSS class, its verdict."""
    by_metric: dict[str, list[tuple[str, str, str]]] = {}
    for c in variant.comparisons:
        cell = f"{c.ratio:.2f}x ({c.low:.2f}-{c.high:.2f})" if c.low is not None and c.high is not None else f"{c.ratio:.2f}x (too few)"
        css = {"lower": "sig", "higher": "sig", "too_few": "muted"}.get(c.finding, "")
        by_metric.setdefault(VARIANT_TITLES[c.metric], []).append((cell, css, c.verdict))
    return variant.name, list(by_metric.items())


def _align(align: str) -> str:
    return "l" if align == "<" else ""


def _sweep_row(step: SweepStep) -> list[tuple[str, str]]:
    """A step's cells with their CSS classes; the last, its verdict, in the verdict's colour."""
    *cells, verdict = sweep_cells(step)
    classes = [_align(column.align) for column in SWEEP_COLUMNS]
    return [*zip(cells, classes), (verdict, f"l {'ok' if step.passed else 'bad'}")]


def sweep_plots(sweep: SweepResult) -> list[Plot]:
    marks = "Filled markers: the listed steps; hollow: steps placed by bisection; dashed line: the sustainable load."
    return [
        Plot(
            "sweep-rate",
            "Offered and achieved rate",
            f"Requests per second of each step's window. {marks}",
            partial(plot_sweep_rate, sweep),
        ),
        Plot(
            "sweep-times",
            "TTFT and latency",
            f"p50, p95 and p99 of each step, as the SLOs judge them, with their 95 % intervals as error bars. {marks}",
            partial(plot_sweep_times, sweep),
        ),
        Plot("sweep-errors", "Errors, 429s and 529s", f"Each step's share of failed requests. {marks}", partial(plot_sweep_errors, sweep)),
    ]


def section_health_workers(summary: Summary) -> dict[str, Any]:
    health, points = summary.health, summary.points
    return {
        "cpu_max": fmt_num(health.cpu_percent_max),
        "cpu_mean": fmt_num(health.cpu_percent_mean),
        "lag_max": fmt_num(health.loop_lag_p99_max_ms),
        "saturated": fmt_num(health.saturated_samples),
        "samples": fmt_num(health.samples),
        "limits": f"limits {fmt_num(health.max_cpu_percent_limit)}% CPU, {fmt_num(health.max_loop_lag_ms_limit)} ms loop lag",
        "unreliable": health.unreliable,
        "points_written": f"{points.written:,}",
        "points_sink": points.sink,
        "points_dropped": f"{points.dropped:,}" if points.dropped else None,
        "records_path": summary.records_path,
        **_workers(summary),
    }


def _workers(summary: Summary) -> dict[str, Any]:
    workers = summary.workers
    lost = [(w.name, lost_text(w)) for w in workers if w.lost] if summary.lost_workers else []
    return {"workers": [_worker_row(w) for w in workers], "lost": lost, "refused": list(summary.refused_workers.items())}


def _worker_row(worker: WorkerInfo) -> dict[str, Any]:
    last = worker.last_health
    cells = (
        worker.requests,
        worker.records,
        worker.points_written,
        worker.points_dropped,
        worker.saturated_samples,
        last.get("cpu_percent"),
        last.get("loop_lag_p99_ms"),
    )
    return {"name": worker.name, "cells": [fmt_num(c) for c in cells], "lost": worker.lost}


def section_scenario(summary: Summary) -> dict[str, Any]:
    run = summary.run
    scenario = run.scenario
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
    content = yaml.safe_dump(scenario.content, sort_keys=False, allow_unicode=True, width=100)
    return {"details": details, "versions": list(run.versions.items()), "yaml": content}


def build_html(summary: Summary, records: list[dict[str, Any]] | None) -> str:
    """The report; its plots, like its tables, show the requests of the measurement window."""
    window = summary.accounting.window
    records = [r for r in records if r.get("window", 0) == window] if records else None
    columns = Columns.from_records(records, summary.run.started_at) if records else None
    run = summary.run
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=f"Claude load test: {run.scenario.name} ({run.run_id})",
            header=section_header(summary),
            overview=section_overview(summary),
            slos=section_slos(summary),
            tables=section_tables(summary),
            plots=section_plots(summary, columns),
            sweep=section_sweep(summary),
            variants=section_variants(summary),
            health=section_health_workers(summary),
            scenario=section_scenario(summary),
            footer={"version": run.versions.get("harness"), "run_id": run.run_id},
        )
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


def _parser() -> _Parser:
    parser = _Parser(prog="python -m harness.report", description="Write the HTML report of a run.")
    parser.add_argument("summary", type=Path, help="the run's JSON summary (locust --summary-json)")
    parser.add_argument("--records", type=Path, help="requests.jsonl (default: the summary's records_path, if it exists)")
    parser.add_argument("-o", "--output", type=Path, help="the HTML file to write (default: SUMMARY with .html)")
    return parser


def _records_path(given: Path | None, summary: Summary) -> Path | None:
    """The records named on the command line, else the summary's if that file exists."""
    if given is None and summary.records_path and Path(summary.records_path).is_file():
        return Path(summary.records_path)
    return given


def main(argv: Iterable[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        summary = load_summary(args.summary)
        records_path = _records_path(args.records, summary)
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
