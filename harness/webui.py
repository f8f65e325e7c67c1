"""The Locust web UI speaks Claude: a live Claude tab, the scenario in the start form, downloads.

- A "Claude" tab (Locust's `extended_tabs` / `extended_tables`, rows sent as `extended_stats`
  in the `/stats/requests` response): per model and per model x prompt, the run's totals and,
  right below each, the same figures over the last 30 s; the load generator's health on top,
  with a warning when it is saturated. All figures come from the harness's HDR stats, the
  same numbers as the final summary.
- `GET /claude/stats`: the harness's own live figures as JSON. Each snapshot has a number;
  the tab shows it, and `GET /claude/stats?snapshot=N` returns that very snapshot again.
- `GET /claude/summary.json`, `GET /claude/report.html`: the JSON summary and the HTML report
  of the current run (built on demand) or of the last one; linked in "Download Data".
- The start form offers the scenario as a select (the files of scenarios/ and those next to
  the `--scenario` given); the command line still accepts any path.
  The form shows no other option: what it may change is harness/webaccess.py's business.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gevent
from gevent import subprocess as gevent_subprocess

from harness import locust_env
from harness.compressed import read_lines
from harness.formatting import failures_by_class, fmt_cost, fmt_int, fmt_ms, fmt_share, fmt_tps
from harness.records import RECORDS_FILE
from harness.results import Group, Summary
from harness.stats import LIVE_WINDOW_S, LabelStats
from harness.summary import build_summary
from harness.timing import OVERLOADED, RATE_LIMITED

if TYPE_CHECKING:
    from locust.env import Environment

if TYPE_CHECKING:
    from harness.run import HarnessRun
    from harness.stats import RecentStats, RunStats

logger = logging.getLogger("harness.webui")

TAB_KEY = "claude"
TAB_TITLE = "Claude"
WINDOW_S = LIVE_WINDOW_S
SCENARIO_DIR = "scenarios"
SCENARIO_SUFFIXES = (".yaml", ".yml")
KEEP_SNAPSHOTS = 30

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
DOWNLOADS = (
    {"href": "./claude/summary.json", "title": "Download Claude summary (JSON)"},
    {"href": "./claude/report.html", "title": "Download Claude HTML report"},
)


# --- the scenario in the start form -------------------------------------------------------
class ScenarioChoices(list[str]):
    """Choices shown in the web UI's select; on the command line any path is accepted."""

    def __contains__(self, item: object) -> bool:
        return True


def scenario_files(*directories: str | Path) -> list[str]:
    """The YAML files of the given folders, as paths the process can open (sorted, unique)."""
    found: list[str] = []
    for directory in directories:
        folder = Path(directory)
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix in SCENARIO_SUFFIXES and path.is_file():
                name = str(path)
                if name not in found:
                    found.append(name)
    return found


def add_scenario_argument(group: Any, default: str) -> Any:
    """`--scenario`: any path on the command line, a select of scenario files in the web UI."""
    action = group.add_argument(
        "--scenario",
        default=default,
        metavar="FILE",
        choices=ScenarioChoices(scenario_files(SCENARIO_DIR)),
        help=f"scenario file (YAML); the web UI offers the files of {SCENARIO_DIR}/",
    )
    # an argument group bypasses LocustArgumentParser.add_argument: mark it for the web UI here
    action.include_in_web_ui = True
    action.is_secret = action.is_required = action.is_multiple = False
    return action


# --- figures (the tab shows strings; tests format /claude/stats the same way) -------------
def group_figures(group: Group) -> dict[str, Any]:
    """One group's figures as `/claude/stats` sends them: the summary's, plus 429/529 shares."""
    figures = group.model_dump(exclude={"hdr"})
    figures["rate_limited_share"] = group.share(RATE_LIMITED)
    figures["overloaded_share"] = group.share(OVERLOADED)
    return figures


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


def health_text(health: dict[str, Any]) -> str:
    """The load generator's state in one line, a warning first when it is saturated."""
    sources = health["sources"]
    if not sources:
        return "load generator: no health sample yet"
    parts = []
    for source in sources:
        parts.append(
            f"{source['name']}: CPU {source['cpu_percent']:.0f} %, loop lag p99 {source['loop_lag_p99_ms']:.1f} ms"
            + (" SATURATED" if source["saturated"] else "")
        )
    detail = "; ".join(parts)
    if health["saturated"]:
        return f"⚠ LOAD GENERATOR SATURATED, timings are late: {detail}"
    verdict = "ok, but saturated earlier in the run" if health["unreliable"] else "ok"
    return f"load generator {verdict}: {detail}"


def snapshot_label(stats: dict[str, Any]) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(stats["at"]))
    return f"snapshot #{stats['snapshot']} at {clock}"


def tab_rows(stats: dict[str, Any]) -> list[dict[str, str]]:
    """The Claude tab's rows for one `/claude/stats` snapshot."""
    empty = {key: "" for key, _ in COLUMNS}
    rows = [{**empty, "name": "health", "label": health_text(stats["health"]), "window": snapshot_label(stats)}]
    if stats["run_id"] is None:
        rows.append({**empty, "name": "idle", "label": "no run yet: start a test"})
        return _in_order(rows)
    window = f"last {stats['window_s']} s"
    recent = stats["window"]

    nothing = group_figures(LabelStats().figures())  # no request in the window

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
    return _in_order(rows)


def _in_order(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """Locust's table sorts rows by `name` until a header is clicked: names keep our order."""
    return [{**row, "name": f"{index:03d} {row['name']}"} for index, row in enumerate(rows)]


# --- snapshots of the harness's stats ---------------------------------------------------------
def yield_to_loop() -> None:
    """Let the event loop run its timers and I/O (gevent.sleep(0) does not run timers)."""
    gevent.idle()


# Copying and merging histograms costs about 1 ms per group (allocating three histograms of
# ~23,000 counters): done all at once it would hold the event loop for tens of milliseconds,
# so every step below yields (`pause`) between groups.
def collect(parts: Iterable[RunStats], pause: Callable[[], None]) -> RunStats:
    """A copy of the sum of `parts`, one label at a time (labels in first-seen order)."""
    from harness.stats import RunStats

    result = RunStats()
    for part in parts:
        for key, group in list(part.labels.items()):
            copy = result.labels.get(key)
            if copy is None:
                copy = result.labels[key] = LabelStats()
            copy.merge(group)
            pause()
    return result


def window_parts(recent: RecentStats, seconds: float) -> list[RunStats]:
    """The time buckets `recent.window(seconds)` merges (tests check the sum is the same)."""
    buckets = getattr(recent, "_buckets", None)
    if buckets is None or not hasattr(recent, "bucket_s"):
        return [recent.window(seconds)]
    now = recent._clock()
    first = max(int((now - seconds) / recent.bucket_s) + 1, int(now / recent.bucket_s) - recent.keep + 1)
    return [bucket for index, bucket in list(buckets.items()) if index >= first]


def merged_groups(stats: RunStats, pause: Callable[[], None]) -> tuple[LabelStats, dict[str, LabelStats]]:
    """`stats.total()` and `stats.by_model()`, merged in the same order, yielding between labels."""
    total = LabelStats()
    for group in list(stats.labels.values()):
        total.merge(group)
        pause()
    models: dict[str, LabelStats] = {}
    for (model, _prompt, _mode), group in sorted(stats.labels.items()):
        models.setdefault(model, LabelStats()).merge(group)
        pause()
    return total, models


def stats_figures(stats: RunStats, pause: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Totals, per model and per model x prompt; `pause` runs between groups (a gevent yield)."""

    def figures(group: LabelStats) -> dict[str, Any]:
        result = group_figures(group.figures())
        pause()
        return result

    total, models = merged_groups(stats, pause)
    return {
        "totals": figures(total),
        "models": {model: figures(group) for model, group in sorted(models.items())},
        "labels": [{"model": m, "prompt": p, "mode": mode, **figures(group)} for (m, p, mode), group in sorted(stats.labels.items())],
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


def health_figures(run: HarnessRun, session: Any) -> dict[str, Any]:
    """The latest health sample of each process that times requests (workers on a master)."""
    thresholds = run.config.thresholds
    sources: list[dict[str, Any]] = []
    unreliable = False
    link = getattr(session, "link", None)
    if link is not None:
        for state in link.workers.values():
            if state.health:
                sources.append(_sample_fields(state.name, state.health))
            unreliable = unreliable or state.saturated_samples > 0
    else:
        latest = run.health.latest
        if latest is not None:
            sources.append(_sample_fields("local", {**latest.fields(), "at": latest.at}))
        unreliable = run.health.unreliable
    return {
        "saturated": any(source["saturated"] for source in sources),
        "unreliable": unreliable,
        "max_cpu_percent": thresholds.max_cpu_percent,
        "max_loop_lag_ms": thresholds.max_loop_lag_ms,
        "sources": sources,
    }


class Snapshots:
    """Builds `/claude/stats` snapshots, numbered, and keeps the last ones the UI was sent."""

    def __init__(self, session: Any, keep: int = KEEP_SNAPSHOTS, pause: Callable[[], None] | None = None) -> None:
        self.session = session
        self.keep = keep
        self.pause = pause or yield_to_loop
        self._seq = 0
        self._kept: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def build(self) -> dict[str, Any]:
        self._seq += 1
        seq = self._seq
        run: HarnessRun | None = self.session.run
        snapshot: dict[str, Any] = {"snapshot": seq, "at": time.time(), "window_s": WINDOW_S}
        if run is None:
            empty = {"requests": 0}
            snapshot.update(
                run_id=None,
                scenario=self.session.scenario.name,
                running=False,
                totals=empty,
                models={},
                labels=[],
                window={"totals": empty, "models": {}, "labels": []},
                health={"saturated": False, "unreliable": False, "sources": []},
            )
        else:
            # copy first (totals then equal the sum of their parts), then compute, yielding
            # between groups so that requests in flight are not held up (timings would be late)
            # the window first: requests that end while the totals are copied count in the
            # totals only, so that a total is never below its window's figure
            window = collect(window_parts(run.recent, WINDOW_S), self.pause)
            totals = collect([run.stats], self.pause)
            health = health_figures(run, self.session)
            running = run.ended_at is None
            snapshot.update(
                run_id=run.config.run_id,
                scenario=run.scenario.name,
                running=running,
                **stats_figures(totals, self.pause),
                window=stats_figures(window, self.pause),
                health=health,
            )
        self._kept[seq] = snapshot
        while len(self._kept) > self.keep:
            self._kept.popitem(last=False)
        return snapshot

    def get(self, seq: int) -> dict[str, Any] | None:
        return self._kept.get(seq)


# --- summary and report downloads -----------------------------------------------------------
def current_summary(session: Any, pause: Callable[[], None] | None = None) -> Summary | None:
    """The summary of the last finished run, or one built now from the run in progress (from a
    copy of its stats, yielding between groups so that requests in flight are not held up)."""
    run: HarnessRun | None = session.run
    summary: Summary | None = session.summary
    if run is None:
        return summary
    if summary is not None and summary.run.run_id == run.config.run_id:
        return summary
    pause = pause or yield_to_loop
    frozen = collect([run.stats], pause)
    return build_summary(run, session.environment.stats.total.num_requests, session.options, session.link, stats=frozen, pause=pause)


def records_files(session: Any) -> list[Path]:
    """The request records of the current or last run (the workers' too, on a master)."""
    run: HarnessRun | None = session.run
    if run is None:
        return []
    if run.records is not None:
        if run.ended_at is None:
            run.records.flush()  # whole lines on disk
        return [run.records.path]
    # a master: workers sharing its file system write below the run's folder
    return sorted(Path(run.config.output_dir).glob(f"*/{RECORDS_FILE}"))


def render_report_file(summary: Summary, records: list[Path], folder: Path, timeout_s: float = 120) -> Path:
    """`python -m harness.report` in a child process (matplotlib would stall this process's
    event loop for seconds, and every request in flight with it)."""
    summary_path = folder / "summary.json"
    summary_path.write_text(summary.to_json(), encoding="utf-8")
    output = folder / "report.html"
    command = [sys.executable, "-m", "harness.report", str(summary_path), "-o", str(output)]
    if len(records) == 1:
        command += ["--records", str(records[0])]
    elif records:
        combined = folder / "requests.jsonl"  # the complete lines of each (a worker's may still grow)
        with combined.open("wb") as out:
            for path in records:
                out.writelines(line + b"\n" for line in read_lines(path))
        command += ["--records", str(combined)]
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    done = gevent_subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    if done.returncode != 0 or not output.is_file():
        raise RuntimeError((done.stderr or done.stdout or f"exit code {done.returncode}").strip())
    return output


# --- the Flask side -----------------------------------------------------------------------
def install(environment: Environment, session: Any) -> Callable[[], list[str]]:
    """Add the harness's tab, routes and form field to Locust's web UI (Flask app); returns
    what lists the scenario files the start form offers."""
    from flask import Response, jsonify, request

    web_ui = locust_env.web_ui(environment)
    app = web_ui.app
    assert app is not None, "the web UI's Flask app exists once the UI does"
    snapshots = Snapshots(session)
    web_ui.template_args["extended_tabs"] = [{"key": TAB_KEY, "title": TAB_TITLE}]
    web_ui.template_args["extended_tables"] = [{"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}]
    web_ui.template_args["extended_csv_files"] = [dict(link) for link in DOWNLOADS]
    started_with = Path(session.scenario.source).parent  # the --scenario given: its folder is offered too

    def offered_scenarios() -> list[str]:
        current = session.scenario.source
        files = scenario_files(SCENARIO_DIR, started_with)
        return [current] + [path for path in files if path != current]

    original_update = web_ui.update_template_args

    def update_template_args() -> None:
        original_update()
        extra = web_ui.template_args.get("extra_options") or {}
        # the form offers the scenario only: every other option is the command line's
        web_ui.template_args["extra_options"] = (
            {"scenario": {**extra["scenario"], "choices": offered_scenarios(), "default_value": session.scenario.source}}
            if "scenario" in extra
            else {}
        )

    web_ui.update_template_args = update_template_args  # type: ignore[method-assign]  # Locust calls it before each page
    update_template_args()

    @app.after_request
    def add_extended_stats(response: Response) -> Response:
        if request.endpoint != "locust.request_stats" or response.status_code != 200:
            return response
        try:
            data = json.loads(response.get_data())
            rows = tab_rows(snapshots.build())
        except Exception:  # the UI must keep working even if the tab cannot be filled
            logger.exception("Claude tab: cannot build the figures")
            return response
        data.setdefault("extended_stats", []).append({"key": TAB_KEY, "data": rows})
        response.set_data(json.dumps(data))
        return response

    @app.route("/claude/stats")
    @web_ui.auth_required_if_enabled
    def claude_stats() -> Any:
        wanted = request.args.get("snapshot")
        if wanted is None:
            return jsonify(snapshots.build())
        snapshot = snapshots.get(int(wanted)) if wanted.isdigit() else None
        if snapshot is None:
            return jsonify({"error": f"snapshot {wanted} is not kept (only the last {snapshots.keep})"}), 404
        return jsonify(snapshot)

    @app.route("/claude/summary.json")
    @web_ui.auth_required_if_enabled
    def claude_summary() -> Any:
        summary = current_summary(session)
        if summary is None:
            return jsonify({"error": "no run yet: start a test first"}), 404
        response = app.response_class(summary.to_json(), mimetype="application/json")
        response.headers["Content-Disposition"] = f"attachment; filename=claude-summary-{summary.run.run_id}.json"
        return response

    @app.route("/claude/report.html")
    @web_ui.auth_required_if_enabled
    def claude_report() -> Any:
        summary = current_summary(session)
        if summary is None:
            return Response("No run yet: start a test first.\n", status=404, mimetype="text/plain")
        with tempfile.TemporaryDirectory(prefix="claude-report-") as folder:
            try:
                html = render_report_file(summary, records_files(session), Path(folder)).read_bytes()
            except (RuntimeError, OSError, gevent_subprocess.TimeoutExpired) as exc:
                logger.error("HTML report failed: %s", exc)
                return Response(f"The HTML report could not be built: {exc}\n", status=500, mimetype="text/plain")
        response = app.response_class(html, mimetype="text/html")
        response.headers["Content-Disposition"] = f"attachment; filename=claude-report-{summary.run.run_id}.html"
        return response

    return offered_scenarios
