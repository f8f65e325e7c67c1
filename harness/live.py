"""The web UI's live figures: `/claude/stats` snapshots and the Claude tab's rows.

Stats in, JSON-able dicts and rows out; no Flask, no Locust (harness/webui.py serves them).
A snapshot holds the run's totals, per model and per model x prompt x mode, the same over the
last `WINDOW_S` seconds, and the load generator's health; each has a number, and the last
`KEEP_SNAPSHOTS` are kept so that the tab's figures can be fetched again by that number.
All figures come from the harness's HDR stats (harness/stats.py), the same numbers as the
final summary; the tab shows them as strings, formatted as harness/formatting.py does.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import gevent

from harness.experiment import compare
from harness.formatting import failures_by_class, fmt_cost, fmt_int, fmt_ms, fmt_share, fmt_tps
from harness.results import Group, RateLimitFigures
from harness.stats import LIVE_WINDOW_S, LabelStats, RunStats, no_pause
from harness.summary import SWEEP_COLUMNS as SUMMARY_SWEEP_COLUMNS
from harness.summary import VARIANT_COLUMNS as SUMMARY_VARIANT_COLUMNS
from harness.summary import arrivals_of, rate_limits_line, rate_profile, sweep_cells, sweep_conclusion, variant_cells
from harness.timing import OVERLOADED, RATE_LIMITED

if TYPE_CHECKING:
    from harness.distributed import MasterLink
    from harness.run import HarnessRun
    from harness.scenario import Scenario
    from harness.sweep_run import SweepController

WINDOW_S = LIVE_WINDOW_S
KEEP_SNAPSHOTS = 30
VARIANT_KEYS = ("variant", "requests", "modes", "ttft", "latency", "output_tps", "perceived")  # the Variants tab's columns

# Column keys: snake_case here, camel-cased by Locust's UI on both sides (structure and rows).
# No digit may follow an underscore (camel-casing of `x_429` is not the same on both sides).
COLUMNS = (
    ("label", "Model / prompt"),
    ("window", "Window"),
    ("requests", "Requests"),
    ("failures", "Failures"),
    ("failures_by_class", "Failures by class"),
    ("rate_limited_share", "429 share"),
    ("overloaded_share", "529 share"),
    ("ttft_p50", "TTFT p50 ms"),
    ("ttft_p95", "TTFT p95 ms"),
    ("ttft_p99", "TTFT p99 ms"),
    ("latency_p50", "Latency p50 ms"),
    ("latency_p95", "Latency p95 ms"),
    ("output_tps", "Output tok/s p50"),
    ("input_tokens", "Input tokens"),
    ("output_tokens", "Output tokens"),
    ("cost", "Cost $"),
)


class LiveSession(Protocol):
    """What the live figures read of a local or master process's session (plugin's `Session`)."""

    @property
    def run(self) -> HarnessRun | None: ...

    @property
    def scenario(self) -> Scenario: ...

    @property
    def link(self) -> MasterLink | None: ...

    @property
    def sweep(self) -> SweepController | None: ...


# --- figures of one snapshot ---------------------------------------------------------------------
def group_figures(group: Group) -> dict[str, Any]:
    """One group's figures as `/claude/stats` sends them: the summary's, plus 429/529 shares."""
    figures = group.model_dump(exclude={"hdr"})
    figures["rate_limited_share"] = group.share(RATE_LIMITED)
    figures["overloaded_share"] = group.share(OVERLOADED)
    return figures


def stats_figures(stats: RunStats, pause: Callable[[], None] = no_pause) -> dict[str, Any]:
    """Totals, per model and per model x prompt; `pause` runs between groups (a gevent yield)."""

    def figures(group: LabelStats) -> dict[str, Any]:
        result = group_figures(group.figures())
        pause()
        return result

    total, models = stats.total(pause), stats.by_model(pause)
    return {
        "totals": figures(total),
        "models": {model: figures(group) for model, group in sorted(models.items())},
        "labels": [{"model": m, "prompt": p, "mode": mode, **figures(group)} for (m, p, mode), group in stats.sorted_labels()],
    }


def _sample_fields(name: str, sample: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "at": sample.get("at"),
        "cpu_percent": sample.get("cpu_percent", 0.0),
        "loop_lag_p99_ms": sample.get("loop_lag_p99_ms", 0.0),
        "loop_lag_max_ms": sample.get("loop_lag_max_ms", 0.0),
        "users": sample.get("users", 0),
        "in_flight": sample.get("in_flight", 0),
        "saturated": bool(sample.get("saturated", False)),
    }


def _health_sources(run: HarnessRun, link: MasterLink | None) -> tuple[list[dict[str, Any]], bool]:
    """The latest sample of each process that times requests, and whether one was ever saturated."""
    if link is None:
        latest = run.health.latest
        local = [] if latest is None else [_sample_fields("local", {**latest.fields(), "at": latest.at})]
        return local, run.health.unreliable
    workers = list(link.workers.values())
    sources = [_sample_fields(state.name, state.health) for state in workers if state.health]
    return sources, any(state.saturated_samples > 0 for state in workers)


def health_figures(run: HarnessRun, link: MasterLink | None) -> dict[str, Any]:
    """The load generator's health: this process's, or its workers' on a master (`link`)."""
    thresholds = run.config.thresholds
    sources, unreliable = _health_sources(run, link)
    return {
        "saturated": any(source["saturated"] for source in sources),
        "unreliable": unreliable,
        "max_cpu_percent": thresholds.max_cpu_percent,
        "max_loop_lag_ms": thresholds.max_loop_lag_ms,
        "sources": sources,
    }


# --- snapshots -------------------------------------------------------------------------------------
def yield_to_loop() -> None:
    """Let the event loop run its timers and I/O (gevent.sleep(0) does not run timers)."""
    gevent.idle()


def idle_figures(scenario_name: str) -> dict[str, Any]:
    """A snapshot's figures before any run."""
    empty = {"requests": 0}
    return {
        "run_id": None,
        "scenario": scenario_name,
        "running": False,
        "totals": empty,
        "models": {},
        "labels": [],
        "window": {"totals": empty, "models": {}, "labels": []},
        "health": {"saturated": False, "unreliable": False, "sources": []},
    }


def run_figures(run: HarnessRun, link: MasterLink | None, pause: Callable[[], None]) -> dict[str, Any]:
    """A snapshot's figures of `run`. Copying and merging histograms costs about 1 ms per group
    (three histograms of ~23,000 counters): done at once it would hold the event loop, and the
    timing of every request in flight, for tens of milliseconds, so `pause` runs between groups.
    Copies first (totals then equal the sum of their parts), the window before the totals:
    requests that end while the totals are copied count in the totals only, so that a total is
    never below its window's figure. Whether the run is still running is read before the copies:
    a request may end while they yield, so only a run that had ended before they began has
    final figures in them."""
    running = run.ended_at is None
    window = run.recent.window(WINDOW_S, pause)
    totals = run.stats.copy(pause)
    health = health_figures(run, link)
    return {
        "run_id": run.config.run_id,
        "scenario": run.scenario.name,
        "running": running,
        **stats_figures(totals, pause),
        "window": stats_figures(window, pause),
        "health": health,
        "arrivals": arrival_figures(run, link),
        "rate_limits": {model: figures.model_dump() for model, figures in run.headroom.figures().items()},
    }


def arrival_figures(run: HarnessRun, link: MasterLink | None) -> dict[str, Any] | None:
    """An open loop's arrivals so far (the summary's figures) and the target rate now."""
    arrivals = arrivals_of(run, link)
    load = run.scenario.load
    if arrivals is None or load is None:
        return None
    return {**arrivals.model_dump(), "rate_now_per_s": rate_profile(run, link).rate_at(arrivals.span_s)}


def sweep_figures(sweep: SweepController | None) -> dict[str, Any] | None:
    """A sweep's steps so far (the summary's figures) and the step under way."""
    if sweep is None:
        return None
    return {**sweep.result().model_dump(), "current": sweep.phase()}


class Snapshots:
    """Builds `/claude/stats` snapshots, numbered, and keeps the last ones the UI was sent."""

    def __init__(self, session: LiveSession, keep: int = KEEP_SNAPSHOTS, pause: Callable[[], None] | None = None) -> None:
        self.session = session
        self.keep = keep
        self.pause = pause or yield_to_loop
        self._seq = 0
        self._kept: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def build(self) -> dict[str, Any]:
        self._seq += 1
        snapshot: dict[str, Any] = {"snapshot": self._seq, "at": time.time(), "window_s": WINDOW_S}
        run = self.session.run
        if run is None:
            snapshot.update(idle_figures(self.session.scenario.name))
        else:
            snapshot.update(run_figures(run, self.session.link, self.pause))
        snapshot["sweep"] = sweep_figures(self.session.sweep)
        self._kept[self._seq] = snapshot
        while len(self._kept) > self.keep:
            self._kept.popitem(last=False)
        return snapshot

    def get(self, seq: int) -> dict[str, Any] | None:
        return self._kept.get(seq)


# --- the Claude tab's rows (strings; tests format /claude/stats the same way) ---------------------
def _pick(values: dict[str, float] | None, key: str) -> float | None:
    return values[key] if values else None


def figures_row(name: str, label: str, window: str, figures: dict[str, Any]) -> dict[str, str]:
    """A table row of the Claude tab, from one group of `/claude/stats`."""
    ttft, latency, tps = figures["ttft_ms"], figures["latency_ms"], figures["output_tps"]
    return {
        "name": name,
        "label": label,
        "window": window,
        "requests": fmt_int(figures["requests"]),
        "failures": fmt_int(figures["failures"]),
        "failures_by_class": failures_by_class(figures["outcomes"], ", "),
        "rate_limited_share": fmt_share(figures["rate_limited_share"]),
        "overloaded_share": fmt_share(figures["overloaded_share"]),
        "ttft_p50": fmt_ms(_pick(ttft, "p50")),
        "ttft_p95": fmt_ms(_pick(ttft, "p95")),
        "ttft_p99": fmt_ms(_pick(ttft, "p99")),
        "latency_p50": fmt_ms(_pick(latency, "p50")),
        "latency_p95": fmt_ms(_pick(latency, "p95")),
        "output_tps": fmt_tps(_pick(tps, "p50")),
        "input_tokens": fmt_int(figures["input_tokens"]),
        "output_tokens": fmt_int(figures["output_tokens"]),
        "cost": fmt_cost(figures["cost_usd"], not figures["unpriced_requests"]),
    }


def _source_text(source: dict[str, Any]) -> str:
    saturated = " SATURATED" if source["saturated"] else ""
    return f"{source['name']}: CPU {source['cpu_percent']:.0f} %, loop lag p99 {source['loop_lag_p99_ms']:.1f} ms{saturated}"


def health_text(health: dict[str, Any]) -> str:
    """The load generator's state in one line, a warning first when it is saturated."""
    sources = health["sources"]
    if not sources:
        return "load generator: no health sample yet"
    detail = "; ".join(_source_text(source) for source in sources)
    if health["saturated"]:
        return f"⚠ LOAD GENERATOR SATURATED, timings are late: {detail}"
    verdict = "ok, but saturated earlier in the run" if health["unreliable"] else "ok"
    return f"load generator {verdict}: {detail}"


def arrivals_text(arrivals: dict[str, Any]) -> str:
    """An open loop in one line: the target now, the rates so far, where every arrival went."""
    unit = "" if arrivals["unit"] == "requests" else f" {arrivals['unit']}"
    scheduled = arrivals["scheduled_per_s"]
    share = f" ({fmt_share(arrivals['achieved_per_s'] / scheduled)} of scheduled)" if scheduled else ""
    return (
        f"open loop ({arrivals['arrival']}): target now {arrivals['rate_now_per_s']:.4g}{unit}/s; over "
        f"{arrivals['span_s']:.0f} s target {arrivals['target_per_s']:.4g}/s, scheduled {scheduled:.4g}/s, "
        f"sent {arrivals['achieved_per_s']:.4g}/s{share}; {fmt_int(arrivals['scheduled'])} scheduled = "
        f"{fmt_int(arrivals['sent'])} sent + {fmt_int(arrivals['dropped'])} dropped + {fmt_int(arrivals['refused'])} refused"
    )


# the Sweep tab: the summary's sweep table (harness/summary.py), keyed for the UI
SWEEP_COLUMNS = [(column.key, column.title) for column in SUMMARY_SWEEP_COLUMNS]
_SWEEP_KEYS = [column.key for column in SUMMARY_SWEEP_COLUMNS]


def sweep_rows(sweep: SweepController | None) -> list[dict[str, str]]:
    """The Sweep tab's rows: each judged step, the step under way, and the sustainable load."""
    empty = dict.fromkeys(_SWEEP_KEYS, "")
    if sweep is None:
        return _in_order([{**empty, "name": "none", "load": "no sweep: this scenario has no `sweep:` section"}])
    result = sweep.result()
    rows = [{"name": f"step {step.index}", **dict(zip(_SWEEP_KEYS, sweep_cells(step), strict=True))} for step in result.steps]
    current = sweep.phase()
    if current is not None:
        load = current["label"] + (" (bisection)" if current["bisection"] else "")
        rows.append({**empty, "name": "current", "step": str(current["index"]), "load": load, "verdict": current["phase"]})
    rows.append({**empty, "name": "result", "load": sweep_conclusion(result)})
    return _in_order(rows)


VARIANT_COLUMNS = [(key, title) for key, (title, _) in zip(VARIANT_KEYS, SUMMARY_VARIANT_COLUMNS, strict=True)]


def variant_rows(session: LiveSession, pause: Callable[[], None] = yield_to_loop) -> list[dict[str, str]]:
    """The Variants tab's rows: a row per variant (p50s with intervals), then each p50 verdict."""
    empty = dict.fromkeys(VARIANT_KEYS, "")
    run = session.run
    if not session.scenario.variants:
        return _in_order([{**empty, "name": "none", "variant": "no variants: this scenario has no `variants:` section"}])
    variants = compare(run.variants, run.scenario, pause) if run is not None else None
    if variants is None:
        return _in_order([{**empty, "name": "idle", "variant": "no run yet: start a test"}])
    rows = [{"name": f"variant {v.name}", **dict(zip(VARIANT_KEYS, variant_cells(v), strict=True))} for v in variants.variants]
    verdicts = [c.verdict for v in variants.variants for c in v.comparisons if c.quantile == 50]
    return _in_order(rows + [{**empty, "name": "verdict", "variant": verdict} for verdict in verdicts])


def snapshot_label(stats: dict[str, Any]) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(stats["at"]))
    return f"snapshot #{stats['snapshot']} at {clock}"


def tab_rows(stats: dict[str, Any]) -> list[dict[str, str]]:
    """The Claude tab's rows for one `/claude/stats` snapshot."""
    empty = {key: "" for key, _ in COLUMNS}
    rows = [{**empty, "name": "health", "label": health_text(stats["health"]), "window": snapshot_label(stats)}]
    if stats.get("arrivals"):
        rows.append({**empty, "name": "arrivals", "label": arrivals_text(stats["arrivals"]), "window": "run"})
    if stats["run_id"] is None:
        rows.append({**empty, "name": "idle", "label": "no run yet: start a test"})
    else:
        rows += _group_rows(stats)
    for model, figures in (stats.get("rate_limits") or {}).items():  # after the figures: headroom per model
        line = rate_limits_line(model, RateLimitFigures.model_validate(figures))
        rows.append({**empty, "name": f"rate limits:{model}", "label": line, "window": "run"})
    return _in_order(rows)


def _group_rows(stats: dict[str, Any]) -> list[dict[str, str]]:
    """Each group's run row, then its window row: totals, per model, per label."""
    window = f"last {stats['window_s']} s"
    recent = stats["window"]
    nothing = group_figures(LabelStats().figures())  # no request in the window
    rows: list[dict[str, str]] = []

    def pair(name: str, label: str, total: dict[str, Any], live: dict[str, Any] | None) -> None:
        rows.append(figures_row(f"{name}:run", label, "run", total))
        rows.append(figures_row(f"{name}:window", label, window, live or nothing))

    pair("all", "ALL", stats["totals"], recent["totals"])
    for model, figures in stats["models"].items():
        pair(f"model:{model}", model, figures, recent["models"].get(model))
    live_labels = {(g["model"], g["prompt"], g["mode"]): g for g in recent["labels"]}
    for group in stats["labels"]:
        key = (group["model"], group["prompt"], group["mode"])
        pair(f"label:{':'.join(key)}", " · ".join(key), group, live_labels.get(key))
    return rows


def _in_order(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Locust's table sorts rows by `name` until a header is clicked: names keep our order."""
    return [{**row, "name": f"{index:03d} {row['name']}"} for index, row in enumerate(rows)]
