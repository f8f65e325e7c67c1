"""The end-of-run summary: a `harness.results.Summary` built from a run's precise stats and
accounting, and its console rendering (a row per model, per mode and per model x prompt x mode;
a sweep's row per step, shared with Markdown and the HTML report)."""

from __future__ import annotations

import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import metadata
from itertools import chain
from typing import TYPE_CHECKING, Any, NamedTuple

from harness import __version__
from harness.arrivals import RateProfile
from harness.credentials import shown_headers
from harness.datasets import entries_digest
from harness.experiment import compare
from harness.formatting import failures_by_class, fmt_cost, fmt_int, fmt_ms, fmt_num, fmt_share, fmt_tps
from harness.results import (
    Accounting,
    Application,
    Arrivals,
    DatasetInfo,
    Group,
    Health,
    LabelGroup,
    Points,
    RateLimitFigures,
    RunInfo,
    ScenarioInfo,
    StepQuantiles,
    Summary,
    SweepResult,
    SweepStep,
    WorkerInfo,
)
from harness.stamps import KERNEL, MIXED, USER
from harness.stats import LabelStats, RunStats
from harness.timing import CANCELLED
from harness.trace import Trace, trace_of
from harness.variant_figures import VARIANT_TITLES, VariantFigures

if TYPE_CHECKING:
    from harness.distributed import MasterLink
    from harness.run import HarnessRun


def _versions() -> dict[str, str]:
    versions = {"harness": __version__, "python": platform.python_version()}
    for package in ("locust", "anthropic", "gevent", "geventhttpclient"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _stamping(run: HarnessRun, workers: list[WorkerInfo]) -> tuple[str, dict[str, int]]:
    """The run's receive times and its reads by how they were stamped: a master's come from its
    workers' reports (its own setting is a guess until one reports), mixed where they differ."""
    reported = {worker.stamping for worker in workers if worker.stamping is not None}
    stamping = (reported.pop() if len(reported) == 1 else MIXED) if reported else run.stamping
    reads = Counter(run.stamped_reads())
    for worker in workers:
        reads.update(worker.stamped_reads)
    return stamping, dict(reads)


def _run_info(run: HarnessRun, options: Any, ended: float, workers: list[WorkerInfo]) -> RunInfo:
    scenario, config = run.scenario, run.config
    stamping, stamped_reads = _stamping(run, workers)
    return RunInfo(
        run_id=config.run_id,
        role=config.role,
        scenario=ScenarioInfo(
            name=scenario.name,
            digest=scenario.digest(),
            source=scenario.source,
            content=scenario.model_dump(mode="json") | {"headers": shown_headers(scenario.headers)},
        ),
        host=config.target.base_url,
        transport=config.transport,
        stamping=stamping,
        stamped_reads=stamped_reads,
        anthropic_version=scenario.effective_anthropic_version,
        started_at=run.started_at,
        ended_at=ended,
        duration_s=round(ended - run.started_at, 3),
        in_progress=run.ended_at is None,
        users=getattr(options, "num_users", None),
        spawn_rate=getattr(options, "spawn_rate", None),
        run_time_s=getattr(options, "run_time", None),
        seeds={"scenario": scenario.seed, "emulator": getattr(options, "emulator_seed", None)},
        datasets={name: DatasetInfo(entries=len(entries), sha256=entries_digest(entries)) for name, entries in scenario._datasets.items()},
        versions=_versions(),
    )


def build_summary(
    run: HarnessRun,
    locust_requests: int,
    options: Any,
    link: MasterLink | None = None,
    stats: RunStats | None = None,
    pause: Callable[[], None] = lambda: None,
    sweep: SweepResult | None = None,
) -> Summary:
    """Everything a person or a CI job needs to judge and reproduce the run; no secrets.
    A run still in progress gets a summary of what it has so far (of `stats`, a copy of the
    run's); `pause` runs between groups (the web UI yields to the event loop there)."""
    stats, config = stats or run.stats, run.config

    def figures(group: LabelStats, with_histograms: bool = False) -> Group:
        result = group.figures(with_histograms)
        pause()
        return result

    workers = [WorkerInfo(**state.as_dict()) for state in link.workers.values()] if link else []
    points = run.points
    totals = figures(stats.total(), with_histograms=True)
    ledger = run.ledger
    recorded = ledger.recorded + sum(w.recorded for w in workers)
    before_window = ledger.before_window + sum(w.before_window for w in workers)
    health = run.health.summary()
    # a master times no requests: only the processes that do can make timings unreliable
    own = health["unreliable"] and config.role != "master"
    health["unreliable"] = own or any(w.unreliable for w in workers)
    return Summary(
        run=_run_info(run, options, run.ended_at or time.time(), workers),
        accounting=Accounting(
            recorded=recorded,
            requests=totals.requests,
            before_window=before_window,
            cancelled=totals.count(CANCELLED),
            locust_requests=locust_requests,
            records=run.records.written if run.records is not None else sum(w.records for w in workers),
            window=ledger.window,
            window_opened_at=ledger.window_opened_at,
        ),
        totals=totals,
        models={model: figures(s, with_histograms=True) for model, s in stats.by_model().items()},
        modes={mode: figures(s) for mode, s in stats.by_mode().items()},
        labels=[LabelGroup(model=m, prompt=p, mode=mode, **dict(figures(s))) for (m, p, mode), s in sorted(stats.labels.items())],
        health=Health(**health, timeline=run.health.timeline.samples),
        points=Points(
            sink=points.sink.description if points else "off",
            written=(points.written if points else 0) + sum(w.points_written for w in workers),
            dropped=(points.dropped if points else 0) + sum(w.points_dropped for w in workers),
        ),
        workers=workers,
        lost_workers=[w.name for w in workers if w.lost],
        refused_workers=dict(link.refused) if link else {},
        records_path=str(run.records.path) if run.records is not None else None,
        arrivals=arrivals_of(run, link),
        sweep=sweep,
        rate_limits=run.headroom.figures(),
        conversations=run.conversations.figures(),
        caching=run.caching.figures(),
        input_sizes=sorted(run.input_sizes.values(), key=lambda size: (size.prompt, size.model, size.variant or "")),
        variants=compare(run.variants, run.scenario),
    )


def arrivals_of(run: HarnessRun, link: MasterLink | None) -> Arrivals | None:
    """An open loop's arrivals: this process's, or on a master its workers' summed."""
    load = run.scenario.load
    if load is None or load.arrival is None:
        return None
    if link is not None:
        cluster = link.arrivals
        if cluster is None or not cluster.started:
            return None
        counts, span = link.arrival_counts(), cluster.span_s()
    else:
        if run.open_loop is None or not run.open_loop.started:
            return None
        counts, span = run.open_loop.counts, run.open_loop.span_s()
    per_s = max(span, 1e-9)
    return Arrivals(
        arrival=load.arrival,
        unit=load.rate_unit,
        span_s=span,
        target_per_s=rate_profile(run, link).demand_at(span) / per_s,
        scheduled_per_s=counts.scheduled_demand / per_s,
        achieved_per_s=counts.sent_demand / per_s,
        scheduled=counts.scheduled,
        sent=counts.sent,
        dropped=counts.dropped,
        refused=counts.refused,
        min_achieved=load.achieved_floor,
        unscheduled=len(trace.times_s) - counts.scheduled if (trace := trace_of(run.scenario)) is not None else None,
    )


def rate_profile(run: HarnessRun, link: MasterLink | None) -> RateProfile | Trace:
    """The target rate over the run: the load's, with a sweep's changes (or a trace's times)."""
    if link is not None and link.arrivals is not None:
        assert run.scenario.load is not None, "arrivals come from an open loop"
        return trace_of(run.scenario) or RateProfile.of(run.scenario.load, link.arrivals.rates)
    assert run.open_loop is not None
    return run.open_loop.profile


# --- console -----------------------------------------------------------------------------
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


def _pick(values: Any, key: str) -> float | None:
    return getattr(values, key) if values is not None else None


def _row(label: str, group: Group) -> list[str]:
    ttft, latency = group.ttft_ms, group.latency_ms
    return [
        label,
        str(group.requests),
        str(group.failures),
        failures_by_class(group.outcomes),
        fmt_ms(_pick(ttft, "p50")),
        fmt_ms(_pick(ttft, "p95")),
        fmt_ms(_pick(ttft, "p99")),
        fmt_ms(_pick(latency, "p50")),
        fmt_ms(_pick(latency, "p95")),
        fmt_tps(_pick(group.output_tps, "p50")),
        fmt_cost(group.cost_usd, group.cost_known),
    ]


def aligned_table(columns: Sequence[tuple[str, str]], *blocks: list[list[str]]) -> list[str]:
    """A console table: the header, then each block of rows, between rules; `columns` are
    (name, alignment: "<" or ">")."""
    header = [name for name, _ in columns]
    widths = [max(len(row[i]) for row in [header, *chain(*blocks)]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{cell:{align}{width}}" for cell, (_, align), width in zip(cells, columns, widths)).rstrip()

    rule = "-" * len(line(header))
    out = [rule, line(header)]
    for block in blocks:
        out += [rule, *map(line, block)]
    return [*out, rule]


def render_table(summary: Summary) -> str:
    rows = [_row(model, group) for model, group in summary.models.items()]
    if len(summary.modes) > 1:
        rows += [_row(f"ALL / {mode}", group) for mode, group in summary.modes.items()]
    rows.append(_row("ALL", summary.totals))
    detail = [_row(f"{g.model} / {g.prompt} / {g.mode}", g) for g in summary.labels]
    blocks = [rows, detail] if len(detail) > 1 else [rows]
    out = ["times in ms (TTFT: streamed requests only; percentiles from HDR histograms)", *aligned_table(_COLUMNS, *blocks)]
    thinking = [(name, group.first_thinking_ms) for name, group in [*summary.models.items(), ("ALL", summary.totals)]]
    out += [
        f"first thinking {name}: p50 {fmt_ms(values.p50)}, p95 {fmt_ms(values.p95)}, p99 {fmt_ms(values.p99)} ms ({values.count} requests)"
        for name, values in thinking
        if values is not None
    ]
    return "\n".join(out)


def application_text(name: str, app: Application) -> str:
    """One group's requests as the application sees them (with retries)."""
    latency, ttft = app.latency_ms, app.ttft_ms
    failed = f"{app.failures} failed ({failures_by_class(app.outcomes)})" if app.failures else "none failed"
    return (
        f"{name}: {app.requests} requests in {app.attempts} attempts ({app.retried} retried), {failed}; "
        f"latency p50 {fmt_ms(_pick(latency, 'p50'))}, p95 {fmt_ms(_pick(latency, 'p95'))}, p99 {fmt_ms(_pick(latency, 'p99'))} ms; "
        f"TTFT p50 {fmt_ms(_pick(ttft, 'p50'))}, p95 {fmt_ms(_pick(ttft, 'p95'))} ms"
    )


def render_application(summary: Summary) -> list[str]:
    groups = [(name, group.application) for name, group in [*summary.models.items(), ("ALL", summary.totals)]]
    lines = [f"  {application_text(name, app)}" for name, app in groups if app is not None]
    if not lines:
        return []
    return ["requests as the application sees them (the table above counts each attempt; latency here includes retries and waits):", *lines]


def render_arrivals(summary: Summary) -> list[str]:
    """An open loop's target and achieved rate, where every arrival went, and the times from
    when requests were due."""
    arrivals = summary.arrivals
    if arrivals is None:
        return []
    unit = "" if arrivals.unit == "requests" else f" {arrivals.unit}"
    share = arrivals.achieved_share
    verdict = f" BELOW min_achieved {arrivals.min_achieved:g}" if arrivals.below_target else ""
    lines = [
        f"arrivals ({arrivals.arrival}, over {arrivals.span_s:.1f} s): target {arrivals.target_per_s:.4g}{unit}/s, "
        f"scheduled {arrivals.scheduled_per_s:.4g}{unit}/s, achieved {arrivals.achieved_per_s:.4g}{unit}/s "
        f"({100 * share:.3g} % of scheduled){verdict}; "
        f"{arrivals.scheduled} scheduled = {arrivals.sent} sent + {arrivals.dropped} dropped (max_in_flight busy) "
        f"+ {arrivals.refused} refused (a limit or the stop)"
        + (f"; {arrivals.unscheduled} of the trace's requests not scheduled: the run ended first" if arrivals.unscheduled else "")
        if share is not None
        else f"arrivals ({arrivals.arrival}): none scheduled"
    ]
    timed = summary.totals.from_schedule
    if timed is not None:
        lines.append(
            f"  from the scheduled time, ms (what the SLOs judge): TTFT p50 {fmt_ms(_pick(timed.ttft_ms, 'p50'))} "
            f"p95 {fmt_ms(_pick(timed.ttft_ms, 'p95'))} p99 {fmt_ms(_pick(timed.ttft_ms, 'p99'))}, "
            f"latency p50 {fmt_ms(_pick(timed.latency_ms, 'p50'))} p95 {fmt_ms(_pick(timed.latency_ms, 'p95'))} "
            f"p99 {fmt_ms(_pick(timed.latency_ms, 'p99'))}; send lag p50 {fmt_ms(_pick(timed.send_lag_ms, 'p50'))} "
            f"p99 {fmt_ms(_pick(timed.send_lag_ms, 'p99'))} max {fmt_ms(_pick(timed.send_lag_ms, 'max'))}"
        )
    return lines


_LIMIT_ORDER = {name: index for index, name in enumerate(("requests", "tokens", "input_tokens", "output_tokens"))}


def rate_limits_line(model: str, figures: RateLimitFigures) -> str:
    """A model's rate-limit headroom in one line: each limit and its lowest remaining share, the 429s."""
    lows = figures.lowest_remaining
    limits = ", ".join(
        f"{bucket} {fmt_int(limit)}" + (f" (lowest left {fmt_share(lows[bucket].share)})" if bucket in lows else "")
        for bucket, limit in sorted(figures.limits.items(), key=lambda item: _LIMIT_ORDER.get(item[0], len(_LIMIT_ORDER)))
    )
    line = f"rate limits {model}: {limits or 'no headers'}"
    if figures.rate_limited and figures.first_429_at is not None:
        first = time.strftime("%H:%M:%S", time.localtime(figures.first_429_at))
        offered = f" at {figures.offered_rps_at_first_429:.3g} req/s" if figures.offered_rps_at_first_429 is not None else ""
        line += f"; {fmt_int(figures.rate_limited)} responses 429, the first at {first}{offered}"
    if figures.retry_after_s is not None:
        line += f"; retry-after {figures.retry_after_s.min:g}..{figures.retry_after_s.max:g} s"
    return line


def render_rate_limits(summary: Summary) -> list[str]:
    return [rate_limits_line(model, figures) for model, figures in summary.rate_limits.items()]


def render_caching(summary: Summary) -> list[str]:
    """A line per label where prompt caching happened: hit share, tokens, TTFT with and without reads."""
    lines = []
    for cache in summary.caching:
        with_reads, without = cache.ttft_with_reads_ms, cache.ttft_without_reads_ms
        ttft = ", ".join(
            f"TTFT {name} p50 {fmt_ms(figures.p50)} p95 {fmt_ms(figures.p95)}"
            for name, figures in (("with reads", with_reads), ("without", without))
            if figures is not None
        )
        lines.append(
            f"prompt cache {cache.model} / {cache.prompt} / {cache.mode}: {fmt_share(cache.hit_share)} of {fmt_int(cache.requests)} "
            f"requests read it ({fmt_int(cache.read_tokens)} tokens read, {fmt_int(cache.creation_tokens)} written)"
            + (f"; {ttft}" if ttft else "")
        )
    return lines


def render_input_sizes(summary: Summary) -> list[str]:
    """A synthetic prompt's size for each model: its target and the count the API gave."""
    lines = []
    for size in summary.input_sizes:
        counted = (
            f"counted {fmt_int(size.achieved)}"
            if size.achieved is not None
            else f"not counted ({size.problem or 'input_tokens_by: bytes'})"
        )
        lines.append(
            f"input size {size.model} / {size.prompt}{f' [{size.variant}]' if size.variant else ''}: {fmt_int(size.target)} tokens asked, {counted}, {fmt_int(size.text_bytes)} bytes of text"
        )
    return lines


def render_conversations(summary: Summary) -> list[str]:
    """How the sessions ended, and a line per turn: its requests, TTFT, first tool input, latency."""
    conversations = summary.conversations
    if conversations is None:
        return []
    endings = ", ".join(f"{name} {fmt_int(count)}" for name, count in conversations.endings.items())
    lines = [f"conversations: {fmt_int(conversations.sessions)} sessions ({endings or 'none ended'}); per turn, ms:"]
    for turn in conversations.turns:
        parts = [f"turn {turn.turn}: {fmt_int(turn.requests)} requests ({fmt_int(turn.failures)} failed)"]
        for name, figures in (("TTFT", turn.ttft_ms), ("first tool input", turn.first_tool_input_ms), ("latency", turn.latency_ms)):
            if figures is not None:
                parts.append(f"{name} p50 {fmt_ms(figures.p50)} p95 {fmt_ms(figures.p95)}")
        lines.append("  " + ", ".join(parts) + f", input tokens {fmt_int(round(turn.input_tokens / max(turn.requests, 1)))} each")
    return lines


VARIANT_COLUMNS = (("variant", "<"), ("reqs", ">"), ("modes", "<"), *((f"{title} p50", ">") for title in VARIANT_TITLES.values()))


def variant_cells(variant: VariantFigures) -> list[str]:
    """A variant's row (VARIANT_COLUMNS): p50 of each metric with its 95 % interval."""
    cells = [variant.name + (" (baseline)" if variant.baseline else ""), fmt_int(variant.requests)]
    cells.append(", ".join(f"{mode} {fmt_int(count)}" for mode, count in sorted(variant.modes.items())))
    for metric in VARIANT_TITLES:
        median = next((estimate for estimate in variant.quantiles.get(metric, []) if estimate.quantile == 50), None)
        show = fmt_tps if metric == "output_tps" else fmt_ms
        if median is None:
            cells.append(show(None))
        else:
            interval = f" ({show(median.low)}-{show(median.high)})" if median.low is not None and median.high is not None else ""
            cells.append(show(median.value) + interval)
    return cells


def render_variants(summary: Summary) -> list[str]:
    """The variants: a row each (p50s with intervals), then each against the baseline at p50."""
    variants = summary.variants
    if variants is None:
        return []
    head = f"variants against {variants.baseline} (times in ms, p50 with its 95 % interval; perceived: TTFT streamed, latency blocking):"
    verdicts = [f"  {c.verdict}" for v in variants.variants for c in v.comparisons if c.quantile == 50]
    return [head, *aligned_table(VARIANT_COLUMNS, [variant_cells(v) for v in variants.variants]), *verdicts]


def render_workload(summary: Summary) -> list[str]:
    """What the workload did beyond the tables: synthetic prompts' sizes, prompt caching, conversations."""
    return [*render_input_sizes(summary), *render_caching(summary), *render_conversations(summary)]


class SweepColumn(NamedTuple):
    """A column of the sweep's step table: its key and title in the web UI's Sweep tab, its
    header in the console, Markdown and report, and its alignment there."""

    key: str
    title: str
    header: str
    align: str  # ">" right, "<" left


SWEEP_COLUMNS = (
    SweepColumn("step", "Step", "step", ">"),
    SweepColumn("load", "Load", "load", "<"),
    SweepColumn("requests", "Requests", "reqs", ">"),
    SweepColumn("offered", "Offered /s", "offered/s", ">"),
    SweepColumn("achieved", "Achieved /s", "achieved/s", ">"),
    SweepColumn("ttft_p50", "TTFT p50 ms", "TTFT p50", ">"),
    SweepColumn("ttft_p95", "TTFT p95 ms", "TTFT p95", ">"),
    SweepColumn("ttft_p99", "TTFT p99 ms", "TTFT p99", ">"),
    SweepColumn("latency_p95", "Latency p95 ms", "lat p95", ">"),
    SweepColumn("error_share", "Errors", "errors", ">"),
    SweepColumn("rate_limited_share", "429 share", "429s", ">"),
    SweepColumn("overloaded_share", "529 share", "529s", ">"),
    SweepColumn("output_tps", "Output tok/s", "out tok/s", ">"),
    SweepColumn("verdict", "Verdict", "result", "<"),
)
_SWEEP_STATES = {
    "stopped": "; the run ended before the search did",
    "running": "; the search is still running",
    "failed": "; an error in the harness ended the search (see the log)",
}


def _step_ms(quantiles: StepQuantiles | None, key: str) -> str:
    return fmt_ms(None if quantiles is None else getattr(quantiles, key).value)


def sweep_cells(step: SweepStep) -> list[str]:
    """A sweep step's row (SWEEP_COLUMNS), for the console, Markdown and the HTML report."""
    return [
        str(step.index),
        f"{step.label} (bisection)" if step.bisection else step.label,
        fmt_int(step.requests),
        fmt_num(step.offered_per_s),
        fmt_num(step.achieved_per_s),
        _step_ms(step.ttft_ms, "p50"),
        _step_ms(step.ttft_ms, "p95"),
        _step_ms(step.ttft_ms, "p99"),
        _step_ms(step.latency_ms, "p95"),
        fmt_share(step.error_share),
        fmt_share(step.rate_limited_share),
        fmt_share(step.overloaded_share),
        fmt_tps(step.output_tokens_per_s),
        "PASS" if step.passed else "FAIL",
    ]


def sweep_conclusion(sweep: SweepResult) -> str:
    """The sustainable load in words: whether the sweep found the limit, and whether its search is over."""
    first_bad = next((step for step in sweep.steps if step.value == sweep.first_bad), None)
    if sweep.sustainable_label is None:
        words = "no step met the SLOs"
    elif first_bad is None:
        words = f"sustainable {sweep.sustainable_label} under the SLOs: every step passed, the limit lies above the last step"
    else:
        words = f"sustainable {sweep.sustainable_label} under the SLOs (the lowest step to breach them: {first_bad.label})"
    return words + _SWEEP_STATES.get(sweep.state, "")


def render_sweep(summary: Summary) -> list[str]:
    """A capacity sweep: a row per step in the order run, then the sustainable load."""
    sweep = summary.sweep
    if sweep is None:
        return []
    head = f"capacity sweep of {sweep.kind}, {sweep.step_time_s:g} s measured per step (times in ms, as the SLOs judge them):"
    columns = [(column.header, column.align) for column in SWEEP_COLUMNS]
    return [head, *aligned_table(columns, [sweep_cells(step) for step in sweep.steps]), f"sweep: {sweep_conclusion(sweep)}"]


def accounting_text(accounting: Accounting) -> str:
    """Where every request went, checkable: recorded = in the figures + before the window."""
    parts = [f"{accounting.requests} in the figures"]
    if accounting.cancelled:
        parts[0] += f" ({accounting.cancelled} of them cancelled by the stop)"
    if accounting.before_window:
        parts.append(f"{accounting.before_window} before the measurement window")
    return (
        f"{accounting.recorded} requests recorded = {' + '.join(parts)}; "
        f"{accounting.locust_requests} in Locust's stats, {accounting.records} records"
    )


def stamping_text(stamping: str | None, reads: dict[str, int]) -> str:
    """How receive times were taken, with the reads behind it (harness/stamps.py)."""
    text = {KERNEL: "the kernel's stamps", USER: "stamped when read", MIXED: "mixed (the workers differ)"}.get(
        stamping or "", "not reported"
    )
    kernel, total, clamped = reads.get("kernel", 0), reads.get("kernel", 0) + reads.get("user", 0), reads.get("clamped", 0)
    if total:
        text += f" ({kernel:,} of {total:,} reads kernel-stamped" + (f", {clamped:,} clamped: the wall clock stepped)" if clamped else ")")
    return text


def lost_text(worker: WorkerInfo) -> str:
    """What a lost worker's figures miss."""
    missing = "unknown" if worker.unreported is None else "about {} to {}".format(*worker.unreported)
    return f"LOST: counted up to its last report; requests sent and not counted: {missing} (in flight then, or started before it died)"


def render_text(summary: Summary) -> str:
    run, health, points = summary.run, summary.health, summary.points
    lines = [
        f"Claude summary: scenario {run.scenario.name}, run {run.run_id}: {accounting_text(summary.accounting)}",
        render_table(summary),
        *render_application(summary),
        *render_arrivals(summary),
        *render_rate_limits(summary),
        *render_workload(summary),
        *render_variants(summary),
        *render_sweep(summary),
    ]
    state = "UNRELIABLE: the load generator was saturated, timings are late" if health.unreliable else "ok"
    lines.append(
        f"load generator: CPU max {health.cpu_percent_max:.0f}% (mean {health.cpu_percent_mean:.0f}%), "
        f"event-loop lag p99 max {health.loop_lag_p99_max_ms:.1f} ms: {state}; receive times: {stamping_text(run.stamping, run.stamped_reads)}"
    )
    for worker in summary.workers:
        last = worker.last_health
        worker_state = lost_text(worker) if worker.lost else "ok"
        saturated = f", SATURATED in {worker.saturated_samples} samples" if worker.saturated_samples else ""
        stamps = f", receive times: {stamping_text(worker.stamping, worker.stamped_reads)}" if run.stamping == MIXED else ""
        lines.append(
            f"  {worker.name}: {worker.requests} requests, CPU {last.get('cpu_percent', 0):.0f}%, "
            f"loop lag p99 {last.get('loop_lag_p99_ms', 0):.1f} ms{saturated}{stamps}: {worker_state}"
        )
    for client_id, reason in summary.refused_workers.items():
        lines.append(f"  worker {client_id} REFUSED: {reason}")
    if points.sink != "off":
        dropped = f", {points.dropped} DROPPED" if points.dropped else ", none dropped"
        lines.append(f"points: {points.written} written to {points.sink}{dropped}")
    if summary.records_path:
        lines.append(f"records: {summary.records_path}")
    for result in summary.slos:
        value = "no data" if result.value is None else f"{result.value:.4g}"
        lines.append(
            f"SLO {'PASS' if result.passed else 'FAIL'}  {result.scope}: {result.name} = {value} ({result.operator} {result.limit:g})"
        )
    for item in summary.regressions:
        lines.append(f"baseline {item.describe()}")
    if summary.verdict is not None:
        lines.append(f"verdict: {summary.verdict.status}" + "".join(f"\n  - {reason}" for reason in summary.verdict.reasons))
    return "\n".join(lines)
