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
- The start form offers the scenario as a select (the files of scenarios/, those next to the
  `--scenario` given and the scenarios the package ships, each file once); the command line
  still accepts any path.
  The form shows no other option: what it may change is harness/webaccess.py's business.

This module owns the Flask side: the routes and the patching of Locust's web UI. The figures
are harness/live.py's. Every use of Locust's private or undocumented web-UI API is in
`LocustWebUI` (its docstring lists them; tests/test_webui.py checks them against Locust).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gevent import subprocess as gevent_subprocess

from harness import locust_env
from harness.compressed import read_lines
from harness.console import SCENARIOS as PACKAGED_SCENARIOS
from harness.live import COLUMNS, SWEEP_COLUMNS, VARIANT_COLUMNS, Snapshots, sweep_rows, tab_rows, variant_rows, yield_to_loop
from harness.records import RECORDS_FILE
from harness.results import Summary
from harness.summary import build_summary

if TYPE_CHECKING:
    from flask import Flask, Response
    from locust.env import Environment
    from locust.web import WebUI

    from harness.plugin import Session

logger = logging.getLogger("harness.webui")

TAB_KEY = "claude"
TAB_TITLE = "Claude"
SWEEP_TAB_KEY = "claude_sweep"
SWEEP_TAB_TITLE = "Sweep"
VARIANTS_TAB_KEY = "claude_variants"
VARIANTS_TAB_TITLE = "Variants"
SCENARIO_DIR = "scenarios"
SCENARIO_SUFFIXES = (".yaml", ".yml")
View = Callable[..., Any]

DOWNLOADS = (
    {"href": "./claude/summary.json", "title": "Download Claude summary (JSON)"},
    {"href": "./claude/report.html", "title": "Download Claude HTML report"},
)


# --- Locust's private web-UI API: all of it here ------------------------------------------
class LocustWebUI:
    """Locust's web UI as the harness extends it. Every use of Locust's private or undocumented
    web-UI API is in this class (Locust 2.47), and
    tests/test_webui.py::test_the_locust_web_ui_internals_the_harness_relies_on fails if one changes:

    - `WebUI.template_args`, the dict `index.html` hands to the React UI, and its keys
      `extended_tabs` and `extended_tables` (a tab with a table), `extended_csv_files` (links of
      "Download Data") and `extra_options` (the start form's custom parameters);
    - `WebUI.update_template_args()`, which Locust calls before it renders a page: replaced on
      the instance, so that `extra_options` is adjusted after Locust has rebuilt it;
    - the Flask endpoint `locust.request_stats` (`GET /stats/requests`, which the UI polls) and
      the `extended_stats` key of its JSON, the rows of the extended tables;
    - `WebUI.auth_required_if_enabled`, the decorator that puts a route behind `--web-login`;
    - the attributes `LocustArgumentParser.add_argument` gives an option and the form reads
      (`include_in_web_ui`, `is_secret`, `is_required`, `is_multiple`), set by hand on an
      option of an argument group (whose `add_argument` is argparse's own).
    """

    REQUEST_STATS_ENDPOINT = "locust.request_stats"
    TEMPLATE_KEYS = ("extended_tabs", "extended_tables", "extended_csv_files", "extra_options")
    FORM_ATTRIBUTES = ("include_in_web_ui", "is_secret", "is_required", "is_multiple")

    def __init__(self, web_ui: WebUI) -> None:
        assert web_ui.app is not None, "the web UI's Flask app exists once the UI does"
        self.web_ui = web_ui
        self.app: Flask = web_ui.app

    @staticmethod
    def show_in_form(action: Any) -> None:
        """Offer an option of an argument group in the start form (a plain field)."""
        action.include_in_web_ui = True
        action.is_secret = action.is_required = action.is_multiple = False

    def add_table_tab(self, key: str, title: str, columns: Iterable[tuple[str, str]]) -> None:
        """A tab `title` holding a table of `columns` (key, title); see `add_table_rows`."""
        args = self.web_ui.template_args
        args["extended_tabs"] = [*(args.get("extended_tabs") or []), {"key": key, "title": title}]
        structure = [{"key": column, "title": heading} for column, heading in columns]
        args["extended_tables"] = [*(args.get("extended_tables") or []), {"key": key, "structure": structure}]

    def add_downloads(self, links: Iterable[dict[str, str]]) -> None:
        """Links (`href`, `title`) in the "Download Data" tab."""
        self.web_ui.template_args["extended_csv_files"] = [dict(link) for link in links]

    def adjust_form_options(self, adjust: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """The start form's custom parameters become `adjust(Locust's)`, on every page."""
        web_ui, rebuild = self.web_ui, self.web_ui.update_template_args

        def update_template_args() -> None:
            rebuild()
            web_ui.template_args["extra_options"] = adjust(web_ui.template_args.get("extra_options") or {})

        web_ui.update_template_args = update_template_args  # type: ignore[method-assign]  # Locust calls it before each page
        update_template_args()

    def add_table_rows(self, key: str, rows: Callable[[], list[dict[str, str]]]) -> None:
        """Each `GET /stats/requests` answer carries `rows()` as the table `key`'s rows."""
        from flask import request

        @self.app.after_request
        def add_extended_stats(response: Response) -> Response:
            if request.endpoint != self.REQUEST_STATS_ENDPOINT or response.status_code != 200:
                return response
            try:
                data = json.loads(response.get_data())
                table = rows()
            except Exception:  # the UI must keep working even if the tab cannot be filled
                logger.exception("the %s tab: cannot build the figures", key)
                return response
            data.setdefault("extended_stats", []).append({"key": key, "data": table})
            response.set_data(json.dumps(data))
            return response

    def route(self, path: str) -> Callable[[View], View]:
        """`app.route(path)`, behind the UI's login when `--web-login` is on."""

        def register(view: View) -> View:
            self.app.route(path)(self.web_ui.auth_required_if_enabled(view))
            return view

        return register


# --- the scenario in the start form -------------------------------------------------------
class ScenarioChoices(list[str]):
    """Choices shown in the web UI's select; on the command line any path is accepted."""

    def __contains__(self, item: object) -> bool:
        return True


def scenario_files(*directories: str | Path) -> list[str]:
    """The YAML files of the given folders, as paths the process can open (sorted per folder)."""
    found: list[str] = []
    for directory in directories:
        folder = Path(directory)
        if folder.is_dir():
            found += [str(path) for path in sorted(folder.iterdir()) if path.suffix in SCENARIO_SUFFIXES and path.is_file()]
    return distinct_files(found)


def distinct_files(paths: Iterable[str]) -> list[str]:
    """Each file once, under the first name given for it (scenarios/ and the packaged folder may be
    one folder under two names: harness/scenarios is a link to scenarios/ in a checkout)."""
    seen: set[Path] = set()
    kept: list[str] = []
    for path in paths:
        key = Path(path).resolve()
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def add_scenario_argument(group: Any, default: str) -> Any:
    """`--scenario`: any path on the command line, a select of scenario files in the web UI."""
    action = group.add_argument(
        "--scenario",
        default=default,
        metavar="FILE",
        choices=ScenarioChoices(scenario_files(SCENARIO_DIR, PACKAGED_SCENARIOS)),
        help=f"scenario file (YAML); the web UI offers the files of {SCENARIO_DIR}/, of this file's folder and the packaged ones",
    )
    LocustWebUI.show_in_form(action)
    return action


def scenario_offer(session: Session) -> Callable[[], list[str]]:
    """What lists the files the start form offers: the current scenario first, then those of
    scenarios/, of the folder of the `--scenario` given at start-up and the packaged ones."""
    started_with = Path(session.scenario.source).parent

    def offered() -> list[str]:
        return distinct_files([session.scenario.source, *scenario_files(SCENARIO_DIR, started_with, PACKAGED_SCENARIOS)])

    return offered


def form_options(extra: dict[str, Any], offered: Callable[[], list[str]], current: str) -> dict[str, Any]:
    """The start form's custom parameters: the scenario only, every other option is the command line's."""
    if "scenario" not in extra:
        return {}
    return {"scenario": {**extra["scenario"], "choices": offered(), "default_value": current}}


# --- summary and report downloads -----------------------------------------------------------
def current_summary(session: Session, pause: Callable[[], None] | None = None) -> Summary | None:
    """The summary of the last finished run, or one built now from the run in progress (from a
    copy of its stats, yielding between groups so that requests in flight are not held up)."""
    run, summary = session.run, session.summary
    if run is None:
        return summary
    if summary is not None and summary.run.run_id == run.config.run_id:
        return summary
    pause = pause or yield_to_loop
    frozen = run.stats.copy(pause)
    sweep = session.sweep.result(stopped=run.ended_at is not None) if session.sweep is not None else None
    return build_summary(
        run, session.environment.stats.total.num_requests, session.options, session.link, stats=frozen, pause=pause, sweep=sweep
    )


def records_files(session: Session) -> list[Path]:
    """The request records of the current or last run (the workers' too, on a master)."""
    run = session.run
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


def report_html(summary: Summary, records: list[Path]) -> bytes:
    with tempfile.TemporaryDirectory(prefix="claude-report-") as folder:
        return render_report_file(summary, records, Path(folder)).read_bytes()


# --- the Flask side -----------------------------------------------------------------------
def install(environment: Environment, session: Session) -> Callable[[], list[str]]:
    """Add the harness's tab, routes and form field to Locust's web UI (Flask app); returns
    what lists the scenario files the start form offers."""
    ui = LocustWebUI(locust_env.web_ui(environment))
    snapshots = Snapshots(session)
    ui.add_table_tab(TAB_KEY, TAB_TITLE, COLUMNS)
    ui.add_table_tab(SWEEP_TAB_KEY, SWEEP_TAB_TITLE, SWEEP_COLUMNS)
    ui.add_table_tab(VARIANTS_TAB_KEY, VARIANTS_TAB_TITLE, VARIANT_COLUMNS)
    ui.add_downloads(DOWNLOADS)
    offered = scenario_offer(session)
    ui.adjust_form_options(lambda extra: form_options(extra, offered, session.scenario.source))
    ui.add_table_rows(TAB_KEY, lambda: tab_rows(snapshots.build()))
    ui.add_table_rows(SWEEP_TAB_KEY, lambda: sweep_rows(session.sweep))
    ui.add_table_rows(VARIANTS_TAB_KEY, lambda: variant_rows(session))
    add_stats_route(ui, snapshots)
    add_download_routes(ui, session)
    return offered


def add_stats_route(ui: LocustWebUI, snapshots: Snapshots) -> None:
    """`GET /claude/stats`: a new snapshot, or `?snapshot=N` again while it is kept."""
    from flask import jsonify, request

    @ui.route("/claude/stats")
    def claude_stats() -> Any:
        wanted = request.args.get("snapshot")
        if wanted is None:
            return jsonify(snapshots.build())
        snapshot = snapshots.get(int(wanted)) if wanted.isdigit() else None
        if snapshot is None:
            return jsonify({"error": f"snapshot {wanted} is not kept (only the last {snapshots.keep})"}), 404
        return jsonify(snapshot)


def add_download_routes(ui: LocustWebUI, session: Session) -> None:
    """`GET /claude/summary.json` and `GET /claude/report.html`, as attachments."""
    from flask import Response, jsonify

    def attachment(body: str | bytes, mimetype: str, filename: str) -> Response:
        response = ui.app.response_class(body, mimetype=mimetype)
        response.headers["Content-Disposition"] = f"attachment; filename={filename}"
        return response

    @ui.route("/claude/summary.json")
    def claude_summary() -> Any:
        summary = current_summary(session)
        if summary is None:
            return jsonify({"error": "no run yet: start a test first"}), 404
        return attachment(summary.to_json(), "application/json", f"claude-summary-{summary.run.run_id}.json")

    @ui.route("/claude/report.html")
    def claude_report() -> Any:
        summary = current_summary(session)
        if summary is None:
            return Response("No run yet: start a test first.\n", status=404, mimetype="text/plain")
        try:
            html = report_html(summary, records_files(session))
        except (RuntimeError, OSError, gevent_subprocess.TimeoutExpired) as exc:
            logger.error("HTML report failed: %s", exc)
            return Response(f"The HTML report could not be built: {exc}\n", status=500, mimetype="text/plain")
        return attachment(html, "text/html", f"claude-report-{summary.run.run_id}.html")
