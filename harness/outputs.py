"""The files a CI job asks for at the end of a run, all made from the typed summary:
`--summary-json`, `--junit` (one test case per SLO and per regression check), `--markdown`
(a job summary) and `--report` (the HTML report, harness.report)."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.formatting import fmt_cost, fmt_ms, fmt_tps
from harness.records import read_records
from harness.results import Group, Summary
from harness.summary import SWEEP_COLUMNS, VARIANT_COLUMNS, render_workload, sweep_cells, sweep_conclusion, variant_cells

logger = logging.getLogger("harness.outputs")


def junit_xml(summary: Summary) -> str:
    """One test case per SLO (and per regression check), so CI systems show them natively."""
    cases = [
        (f"slo.{r.scope}", f"{r.name} {r.operator} {r.limit:g}", r.passed, f"value {r.value}, limit {r.limit:g}") for r in summary.slos
    ]
    cases += [(f"regression.{r.scope}", r.metric, not r.regressed, r.describe()) for r in summary.regressions]
    failures = sum(1 for case in cases if not case[2])
    root = ET.Element("testsuites", name="claude-harness")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=f"claude-harness {summary.run.scenario.name}",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        time=f"{summary.run.duration_s:.3f}",
    )
    for classname, name, passed, message in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        if not passed:
            ET.SubElement(case, "failure", message=message, type="breach").text = message
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _p(group: Group, field: str, key: str) -> float | None:
    values = getattr(group, field)
    return getattr(values, key) if values else None


def markdown(summary: Summary) -> str:
    """A CI job summary: verdict, SLOs, per-model figures, a sweep's steps."""
    run, verdict = summary.run, summary.verdict
    status = verdict.status if verdict else "IN PROGRESS"
    lines = [
        f"## Claude load test: {run.scenario.name} — {status}",
        "",
        f"Run `{run.run_id}` against `{run.host}`, {run.duration_s:.0f} s, "
        f"{summary.accounting.requests} requests, transport `{run.transport}`.",
    ]
    if verdict and verdict.reasons:
        lines += ["", *[f"- {reason}" for reason in verdict.reasons]]
    if summary.slos:
        lines += ["", "| SLO | scope | value | limit | result |", "|---|---|---:|---:|---|"]
        for r in summary.slos:
            value = "no data" if r.value is None else f"{r.value:.4g}"
            lines.append(f"| {r.name} | {r.scope} | {value} | {r.operator} {r.limit:g} | {'✅ pass' if r.passed else '❌ fail'} |")
    lines += [
        "",
        "| model | requests | failures | TTFT p50 | TTFT p95 | latency p95 | out tok/s | cost $ |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, g in [*summary.models.items(), ("all", summary.totals)]:
        lines.append(
            f"| {model} | {g.requests} | {g.failures} | {fmt_ms(_p(g, 'ttft_ms', 'p50'))} | {fmt_ms(_p(g, 'ttft_ms', 'p95'))} | "
            f"{fmt_ms(_p(g, 'latency_ms', 'p95'))} | {fmt_tps(_p(g, 'output_tps', 'p50'))} | {fmt_cost(g.cost_usd, g.cost_known)} |"
        )
    workload = render_workload(summary)
    if workload:
        lines += ["", *(f"- {line.strip()}" for line in workload)]
    lines += _variants_markdown(summary)
    lines += _sweep_markdown(summary)
    return "\n".join(lines) + "\n"


def _variants_markdown(summary: Summary) -> list[str]:
    """The variants: a row each (p50s with intervals), then each against the baseline at p50."""
    variants = summary.variants
    if variants is None:
        return []
    rule = ["---:" if align == ">" else "---" for _, align in VARIANT_COLUMNS]
    rows = [[name for name, _ in VARIANT_COLUMNS], rule, *map(variant_cells, variants.variants)]
    verdicts = [f"- {c.verdict}" for variant in variants.variants for c in variant.comparisons if c.quantile == 50]
    return ["", f"### Variants against {variants.baseline}", "", *(f"| {' | '.join(row)} |" for row in rows), "", *verdicts]


def _sweep_markdown(summary: Summary) -> list[str]:
    """A capacity sweep: its steps in the order run, and the sustainable load."""
    sweep = summary.sweep
    if sweep is None:
        return []
    header = [column.header for column in SWEEP_COLUMNS]
    rule = ["---:" if column.align == ">" else "---" for column in SWEEP_COLUMNS]
    rows = [header, rule, *map(sweep_cells, sweep.steps)]
    return ["", "### Sweep", "", *(f"| {' | '.join(row)} |" for row in rows), "", f"**Sweep:** {sweep_conclusion(sweep)}."]


def _write(path: Path, text: str, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    logger.info("%s written to %s", what, path)


def write_outputs(summary: Summary, options: Any, records_path: Path | None) -> list[str]:
    """The files the command line asked for; returns what could not be written (each one
    logged), after trying every one (a full disk must not cost the others)."""
    wanted: list[tuple[str | None, str, Callable[[Path], None]]] = [
        (options.summary_json, "summary", lambda path: _write(path, summary.to_json(), "summary")),
        (options.junit, "JUnit report", lambda path: _write(path, junit_xml(summary), "JUnit report")),
        (options.markdown, "Markdown summary", lambda path: _write(path, markdown(summary), "Markdown summary")),
        (options.report, "HTML report", lambda path: _write_report(summary, records_path, path)),
    ]
    failed: list[str] = []
    for value, what, write in wanted:
        if not value:
            continue
        try:
            write(Path(value))
        except OSError as exc:
            logger.error("could not write the %s to %s: %s", what, value, exc.strerror or exc)
            failed.append(f"{what} ({value})")
    return failed


def _write_report(summary: Summary, records_path: Path | None, path: Path) -> None:
    from harness.report import render_report

    records = read_records(records_path) if records_path is not None else None
    render_report(summary, records, path)
    logger.info("HTML report written to %s", path)
