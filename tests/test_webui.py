"""The Claude tab of Locust's web UI, in a real headless browser (Debian's chromium, Playwright).

`locust` runs as a subprocess with its web UI on loopback and the built-in emulator (fast
profile). The browser chooses the scenario in the start form, starts the test, reads the Claude
tab and compares it with the harness's own `/claude/stats` (the very snapshot the tab shows),
downloads the JSON summary and the HTML report through the UI's links, and stops the test.
Screenshots are kept in test-artifacts/webui-*.png.

The pure parts (fast HDR percentiles, the sliding-window buckets) are checked in-process; the
Locust private web-UI API the harness relies on (harness/webui.py's `LocustWebUI`), on a real
`locust.web.WebUI` in a child process.
"""

from __future__ import annotations

import json
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import webui
from harness.formatting import DASH, fmt_ms
from harness.histograms import histogram_values
from harness.live import COLUMNS, SWEEP_COLUMNS, VARIANT_COLUMNS, WINDOW_S, stats_figures, tab_rows
from harness.records import RECORDS_FILE, read_records
from harness.sampler import Pick, Sampler
from harness.scenario import load_scenario
from harness.stats import LabelStats, RecentStats, RunStats
from harness.timing import OUTCOMES, TimingRecord
from tests.support.processes import ROOT, check_in_child, write_yaml
from tests.support.webui import API_KEY, ARTIFACTS, LocustUI, new_page, poll

SMALL_SCENARIO = {
    "name": "small",
    "models": [{"model": "claude-haiku-4-5", "weight": 1}],
    "prompts": [{"name": "hi", "weight": 1, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}],
    "stream": 1.0,
}
INFLUX_TOKEN = "influx-token-WEBUI-never-shown-9876543210"


def screenshot(page: Any, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"webui-{name}.png"), full_page=full_page)


# --- the start form ----------------------------------------------------------------------------
def open_custom_parameters(page: Any) -> Any:
    page.get_by_text("Custom parameters").click()
    select = page.locator('select[name="scenario"]')
    select.wait_for(state="visible")
    return select


def start_from_form(page: Any, users: int, scenario: str | None = None) -> None:
    page.locator('input[name="userCount"]').fill(str(users))
    page.locator('input[name="spawnRate"]').fill(str(users))
    if scenario is not None:
        open_custom_parameters(page).select_option(scenario)
    page.locator('form button[type="submit"]').click()


# --- the Claude tab ----------------------------------------------------------------------------
READ_TABLE = """() => {
  const table = document.querySelector('table');
  if (!table) return null;
  const header = [...table.querySelectorAll('thead th')].map(th => th.innerText.trim());
  const rows = [...table.querySelectorAll('tbody tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()));
  return {header, rows};
}"""


def read_tab(page: Any) -> dict[str, Any]:
    """The Claude table, read in one go (one JavaScript task: one rendered snapshot)."""
    table = page.evaluate(READ_TABLE)
    assert table and table["rows"], "the Claude tab shows no table"
    return table


def snapshot_number(table: dict[str, Any]) -> int:
    match = re.search(r"snapshot #(\d+)", table["rows"][0][1])
    assert match, f"no snapshot number in the tab's first row: {table['rows'][0]}"
    return int(match.group(1))


def expected_cells(snapshot: dict[str, Any]) -> list[list[str]]:
    return [[row[key] for key, _ in COLUMNS] for row in tab_rows(snapshot)]


def wait_for_requests(page: Any, minimum: int) -> dict[str, Any]:
    def shown() -> dict[str, Any] | None:
        table = page.evaluate(READ_TABLE)
        ready = table and len(table["rows"]) > 2 and table["rows"][1][0] == "ALL" and "CPU" in table["rows"][0][0]
        return table if ready and int(table["rows"][1][2].replace(",", "")) >= minimum else None

    return poll(shown, f"the Claude tab showing {minimum} requests and a health sample")


def requests_sure_to_include(scenario: Path, users: int, wanted: Callable[[Pick], bool]) -> int:
    """How many finished requests include a pick `wanted` accepts, however the users' requests
    interleave: user u sends its picks in order, drawn from Sampler(seed * 1_000_003 + u) (as
    HarnessRun.new_sampler seeds it); past all the users' picks before their first wanted one,
    some user has finished a wanted one."""
    loaded = load_scenario(scenario)
    misses = [
        next(n for n, pick in enumerate(Sampler(loaded, seed=loaded.seed * 1_000_003 + user)) if wanted(pick)) for user in range(users)
    ]
    return sum(misses) + 1


def download(page: Any, link_text: str, target: Path) -> Path:
    with page.expect_download(timeout=90_000) as info:
        page.get_by_text(link_text).click()
    info.value.save_as(str(target))
    return target


# --- tests -------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_open_loop_chosen_in_the_form_runs_its_slots_and_the_tab_shows_its_rates(tmp_path: Path, browser: Any) -> None:
    """The form's user count gives way to the scenario's max_in_flight; its run time to the
    stages'; the tab's first rows say the target rate now and where every arrival went; a stop
    from the UI ends the arrivals there."""
    ui = LocustUI(tmp_path, "scenarios/demo.yaml")
    try:
        ui.wait_ready()
        page = new_page(browser)
        page.goto(ui.url)
        start_from_form(page, users=5, scenario="scenarios/open-loop.yaml")
        page.get_by_role("tab", name="Claude").click()

        def arrivals_shown() -> dict[str, Any] | None:
            table = page.evaluate(READ_TABLE)
            ready = table and len(table["rows"]) > 2 and table["rows"][1][0].startswith("open loop")
            return table if ready and " 0 scheduled" not in table["rows"][1][0] and table["rows"][2][0] == "ALL" else None

        table = poll(arrivals_shown, "the open loop's row in the Claude tab")
        snapshot = ui.get_json(f"/claude/stats?snapshot={snapshot_number(table)}")
        assert table["rows"] == expected_cells(snapshot) and snapshot["scenario"] == "open-loop"
        arrivals = snapshot["arrivals"]
        assert 5 <= arrivals["rate_now_per_s"] <= 10 and arrivals["arrival"] == "poisson"
        assert f"target now {arrivals['rate_now_per_s']:.4g}/s" in table["rows"][1][0]
        locust = ui.get_json("/stats/requests")
        assert locust["user_count"] == 50  # max_in_flight, not the form's 5
        screenshot(page, "open-loop")
        # the run time came from the stages: Locust's page says so (its template's arguments)
        assert ui.template_args()["run_time"] == 30
        page.locator("button", has_text=re.compile("^stop$", re.IGNORECASE)).click()
        final = poll(lambda: (stats := ui.get_json("/claude/stats"))["running"] is False and stats, "the run's end", 60)
        assert final["arrivals"]["scheduled"] == final["arrivals"]["sent"] + final["arrivals"]["dropped"] + final["arrivals"]["refused"]
        assert final["arrivals"]["span_s"] < 20  # stopped before the cool-down: its span ends at the stop
    finally:
        ui.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_claude_tab_matches_the_harness_stats_and_downloads_work(tmp_path: Path, browser: Any) -> None:
    ui = LocustUI(tmp_path, "scenarios/demo.yaml", "--influx-token", INFLUX_TOKEN)
    try:
        ui.wait_ready()
        page = new_page(browser)
        page.goto(ui.url)
        index_html = page.content()
        select = open_custom_parameters(page)
        options = select.locator("option").all_inner_texts()
        assert options == webui.scenario_files(ROOT / "scenarios") or sorted(options) == sorted(
            f"scenarios/{p.name}" for p in (ROOT / "scenarios").iterdir() if p.suffix in (".yaml", ".yml")
        ), options
        assert select.input_value() == "scenarios/demo.yaml"
        select.scroll_into_view_if_needed()
        screenshot(page, "form", full_page=False)
        select.locator("xpath=..").screenshot(path=str(ARTIFACTS / "webui-form-scenario.png"))
        start_from_form(page, users=5, scenario="scenarios/demo.yaml")

        page.get_by_role("tab", name="Claude").click()
        page.wait_for_url(re.compile(r"tab=claude"))
        # enough requests for both models and the long-context prompt to be in, whatever the timing
        wanted = [
            lambda p: p.model == "claude-haiku-4-5",
            lambda p: p.model == "claude-sonnet-4-5",
            lambda p: p.prompt.name == "long-context",
        ]
        wait_for_requests(page, minimum=max(requests_sure_to_include(ROOT / "scenarios/demo.yaml", 5, w) for w in wanted))

        # the tab equals the harness's own figures: the same snapshot, every cell
        table = read_tab(page)
        snapshot = ui.get_json(f"/claude/stats?snapshot={snapshot_number(table)}")
        assert table["header"] == [title for _, title in COLUMNS]
        assert table["rows"] == expected_cells(snapshot)
        assert snapshot["running"] and snapshot["scenario"] == "demo"
        totals, all_row = snapshot["totals"], table["rows"][1]
        assert all_row[:3] == ["ALL", "run", f"{totals['requests']:,}"]
        assert all_row[7] == fmt_ms(totals["ttft_ms"]["p50"]) and totals["ttft_ms"]["p50"] > 40
        assert table["rows"][2][:2] == ["ALL", f"last {WINDOW_S} s"]
        models = [row[0] for row in table["rows"] if row[1] == "run"][1:3]
        assert models == ["claude-haiku-4-5", "claude-sonnet-4-5"]
        assert any(" · long-context" in row[0] for row in table["rows"])
        assert table["rows"][0][0].startswith(("load generator", "⚠ LOAD GENERATOR SATURATED"))
        assert "CPU" in table["rows"][0][0] and "loop lag p99" in table["rows"][0][0]
        screenshot(page, "claude-tab")

        # downloads, through the links of Locust's "Download Data" tab, while the test runs
        page.get_by_role("tab", name="Download Data").click()
        screenshot(page, "downloads")
        live = json.loads(download(page, "Download Claude summary (JSON)", tmp_path / "live.json").read_text())
        assert live["schema"] == "claude-harness-summary" and live["run"]["in_progress"] is True
        assert live["run"]["run_id"] == snapshot["run_id"]
        assert live["accounting"]["requests"] >= totals["requests"]
        report = download(page, "Download Claude HTML report", tmp_path / "live.html").read_text(encoding="utf-8")
        assert report.lstrip().lower().startswith("<!doctype html") and snapshot["run_id"] in report

        # stop from the UI: the tab then shows the final figures, equal to the final summary
        page.locator("button", has_text=re.compile("^stop$", re.IGNORECASE)).click()

        def stopped_stats() -> dict[str, Any] | None:
            stats = ui.get_json("/claude/stats")
            return None if stats["running"] else stats

        final_stats = poll(stopped_stats, "the run stopped")
        page.get_by_role("tab", name="Download Data").click()
        final = json.loads(download(page, "Download Claude summary (JSON)", tmp_path / "final.json").read_text())
        assert final["run"]["in_progress"] is False and final["run"]["run_id"] == snapshot["run_id"]
        for group, figures in [
            (final["totals"], final_stats["totals"]),
            *[(final["models"][model], final_stats["models"][model]) for model in final["models"]],
        ]:
            for key in (
                "requests",
                "failures",
                "outcomes",
                "ttft_ms",
                "latency_ms",
                "output_tps",
                "input_tokens",
                "output_tokens",
                "cost_usd",
            ):
                assert group[key] == figures[key], key
        assert [{k: v for k, v in label.items() if k != "hdr"} for label in final["labels"]] == [
            {k: v for k, v in label.items() if k not in ("rate_limited_share", "overloaded_share")} for label in final_stats["labels"]
        ]
        final_report = download(page, "Download Claude HTML report", tmp_path / "final.html").read_text(encoding="utf-8")
        assert snapshot["run_id"] in final_report

        # the stopped run, as the tab shows it once loaded (the live updates were checked above;
        # on a loaded machine the open page's last poll may come before the run has closed)
        page.goto(ui.url + "/?tab=claude")
        page.get_by_role("tab", name="Claude").click()

        def stopped_tab() -> tuple[dict[str, Any], dict[str, Any]] | None:  # the UI polls /stats/requests every 2 s
            table = page.evaluate(READ_TABLE)
            if not (table and table["rows"]):  # not rendered yet
                return None
            shown = ui.get_json(f"/claude/stats?snapshot={snapshot_number(table)}")
            return None if shown["running"] else (table, shown)

        table, stopped = poll(stopped_tab, "the Claude tab showing the stopped run")
        assert table["rows"] == expected_cells(stopped)
        assert table["rows"][1][2] == f"{final['totals']['requests']:,}"
        screenshot(page, "claude-tab-stopped")

        # no secret anywhere: the page, the tab, the JSON, the downloads
        everything = [
            index_html,
            page.content(),
            json.dumps(final_stats),
            json.dumps(live),
            json.dumps(final),
            report,
            final_report,
            ui.get_text("/stats/requests"),
        ]
        for text in everything:
            assert API_KEY not in text and INFLUX_TOKEN not in text
    finally:
        ui.stop()
    log = ui.log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log, log[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_bad_scenario_chosen_in_the_form_is_refused_with_a_clear_message(tmp_path: Path, browser: Any) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    good = write_yaml(folder / "good.yaml", SMALL_SCENARIO)
    bad = write_yaml(folder / "bad.yaml", {**SMALL_SCENARIO, "name": "bad", "stream": 2.5, "colour": "red"})
    ui = LocustUI(tmp_path, good)
    try:
        ui.wait_ready()
        page = new_page(browser)
        page.goto(ui.url)
        select = open_custom_parameters(page)
        offered = select.locator("option").all_inner_texts()
        assert offered[0] == str(good) and str(bad) in offered and "scenarios/demo.yaml" in offered
        start_from_form(page, users=2, scenario=str(bad))
        alert = page.get_by_role("alert")
        alert.wait_for(state="visible")
        message = alert.inner_text()
        assert "Bad scenario, the test was not started" in message
        assert str(bad) in message and "stream" in message and "colour" in message
        screenshot(page, "bad-scenario")
        assert page.locator('form button[type="submit"]').is_visible()  # still the start form
        stats = ui.get_json("/claude/stats")
        assert stats["run_id"] is None and ui.get_json("/stats/requests")["state"] == "ready"

        # a path that is not offered is refused too, whatever the form posts
        body = urllib.parse.urlencode({"user_count": 1, "spawn_rate": 1, "scenario": "/etc/passwd"}).encode()
        with urllib.request.urlopen(urllib.request.Request(ui.url + "/swarm", data=body), timeout=20) as response:
            answer = json.loads(response.read())
        assert answer["success"] is False and "not one of the offered files" in answer["message"]

        # the good one starts; the report and summary exist only once a run does
        with pytest.raises(urllib.error.HTTPError) as no_summary:  # not before any run
            urllib.request.urlopen(ui.url + "/claude/summary.json", timeout=20).close()
        assert no_summary.value.code == 404
        page.goto(ui.url)
        start_from_form(page, users=2, scenario=str(good))
        page.get_by_role("tab", name="Claude").click()
        wait_for_requests(page, minimum=3)
        assert ui.get_json("/claude/stats")["scenario"] == "small"
    finally:
        ui.stop()


@pytest.mark.slow
def test_the_reset_button_opens_a_measurement_window_that_locusts_table_agrees_with(tmp_path: Path) -> None:
    ui = LocustUI(tmp_path, "scenarios/demo.yaml", "--summary-json", str(tmp_path / "s.json"))
    try:
        ui.wait_ready()
        ui.post("/swarm", {"user_count": 4, "spawn_rate": 4})
        poll(lambda: ui.get_json("/claude/stats")["totals"]["requests"] >= 4, "requests before the reset")
        ui.post("/stats/reset")
        poll(lambda: ui.get_json("/claude/stats")["totals"]["requests"] >= 4, "requests after the reset")
        ui.post("/stop")
        summary = poll(lambda: (tmp_path / "s.json").is_file() and json.loads((tmp_path / "s.json").read_text()), "the summary")
        locust_total = next(row for row in ui.get_json("/stats/requests")["stats"] if row["name"] == "Aggregated")
    finally:
        ui.stop()
    records = [record for path in (tmp_path / "runs").rglob(RECORDS_FILE) for record in read_records(path)]
    accounting = summary["accounting"]
    assert accounting["window"] == 1 and accounting["recorded"] == len(records)
    inside = [r for r in records if r["window"] == 1]
    assert inside and len(inside) < len(records)
    assert accounting["requests"] == len(inside) == locust_total["num_requests"] == accounting["locust_requests"]
    assert accounting["before_window"] == len(records) - len(inside)


# --- Locust's private web-UI API ---------------------------------------------------------------
def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(word.title() for word in rest)


def check_locust_web_ui_internals(folder: str) -> None:
    """In a process of its own (importing Locust monkey-patches the interpreter with gevent):
    each use of Locust's private web-UI API listed by `webui.LocustWebUI`, on a real `WebUI`."""
    from types import SimpleNamespace

    from locust import events
    from locust.argument_parser import LocustArgumentParser, get_parser
    from locust.env import Environment
    from locust.html import DEFAULT_BUILD_PATH
    from locust.web import WebUI

    import locustfile  # noqa: F401  (the harness's options, --scenario among them)

    # an option of an argument group, marked by hand, is a plain field of the start form
    parser = LocustArgumentParser()
    webui.add_scenario_argument(parser.add_argument_group("harness"), "a.yaml")
    assert "scenario" in parser.args_included_in_web_ui
    assert not {"scenario"} & {
        *parser.secret_args_included_in_web_ui,
        *parser.required_args_included_in_web_ui,
        *parser.multiple_args_included_in_web_ui,
    }

    # a stub session: no run yet, a scenario in a folder of its own (offered first)
    scenario = Path(folder) / "mine.yaml"
    scenario.write_text("name: mine\n")
    session = SimpleNamespace(
        run=None, summary=None, link=None, sweep=None, scenario=SimpleNamespace(name="mine", source=str(scenario), variants=[])
    )
    environment = Environment(events=events, parsed_options=get_parser().parse_args([]))
    environment.create_local_runner()
    web_ui = environment.create_web_ui("127.0.0.1", 0, delayed_start=True)
    assert callable(WebUI.update_template_args) and callable(web_ui.auth_required_if_enabled)
    offered = webui.install(environment, session)
    assert "update_template_args" in vars(web_ui)  # replaced on the instance
    client = web_ui.app.test_client()

    # the page hands the template args to the UI, our form options set after Locust's own
    page = client.get("/")
    assert page.status_code == 200
    match = re.search(r"window\.templateArgs = (.*)", page.get_data(as_text=True))
    assert match, "index.html no longer sets window.templateArgs"
    args = json.loads(match.group(1))
    assert args["extended_tabs"] == [
        {"key": webui.TAB_KEY, "title": webui.TAB_TITLE},
        {"key": webui.SWEEP_TAB_KEY, "title": webui.SWEEP_TAB_TITLE},
        {"key": webui.VARIANTS_TAB_KEY, "title": webui.VARIANTS_TAB_TITLE},
    ]
    assert args["extended_tables"] == [
        {"key": webui.TAB_KEY, "structure": [{"key": k, "title": t} for k, t in COLUMNS]},
        {"key": webui.SWEEP_TAB_KEY, "structure": [{"key": k, "title": t} for k, t in SWEEP_COLUMNS]},
        {"key": webui.VARIANTS_TAB_KEY, "structure": [{"key": k, "title": t} for k, t in VARIANT_COLUMNS]},
    ]
    assert args["extended_csv_files"] == [dict(link) for link in webui.DOWNLOADS]
    assert list(args["extra_options"]) == ["scenario"]
    field = args["extra_options"]["scenario"]
    assert field["choices"] == offered() and field["choices"][0] == str(scenario) and field["default_value"] == str(scenario)
    assert not (field["is_secret"] or field["is_required"] or field["is_multiple"])
    # the React UI reads those keys (camel-cased), and the extended tables' rows
    bundle = "".join(path.read_text(errors="replace") for path in (Path(DEFAULT_BUILD_PATH) / "assets").glob("*.js"))
    for key in (*webui.LocustWebUI.TEMPLATE_KEYS, "extended_stats"):
        assert _camel(key) in bundle, key

    # the endpoint the UI polls carries the tab's rows
    endpoints = {rule.endpoint: rule.rule for rule in web_ui.app.url_map.iter_rules()}
    assert endpoints[webui.LocustWebUI.REQUEST_STATS_ENDPOINT] == "/stats/requests"
    stats = client.get("/stats/requests").get_json()
    tables = {table["key"]: table["data"] for table in stats["extended_stats"]}
    assert len(tables) == len(stats["extended_stats"]) == 3
    assert tables[webui.TAB_KEY][1]["label"] == "no run yet: start a test"
    assert tables[webui.SWEEP_TAB_KEY][0]["load"].startswith("no sweep")
    assert tables[webui.VARIANTS_TAB_KEY][0]["variant"].startswith("no variants")
    assert client.get("/claude/stats").get_json()["run_id"] is None

    # with --web-login, the harness's routes are behind the login too
    guarded_environment = Environment(events=events, parsed_options=get_parser().parse_args([]))
    guarded_environment.create_local_runner()
    guarded = guarded_environment.create_web_ui("127.0.0.1", 0, web_login=True, delayed_start=True)
    guarded.app.secret_key = "test"
    guarded.app.login_manager.user_loader(lambda _user_id: None)
    webui.install(guarded_environment, session)
    for path in ("/claude/stats", "/claude/summary.json", "/claude/report.html"):
        answer = guarded.app.test_client().get(path)
        assert answer.status_code in (302, 401), (path, answer.status_code)


def test_the_locust_web_ui_internals_the_harness_relies_on(tmp_path: Path) -> None:
    check_in_child("tests.test_webui", "check_locust_web_ui_internals", str(tmp_path))


# --- in-process checks of the pure parts -------------------------------------------------------
def _random_stats(seed: int, n: int = 3000) -> RunStats:
    rng = random.Random(seed)
    stats = RunStats()
    for _ in range(n):
        record = TimingRecord(model=rng.choice(["a", "b"]), prompt=rng.choice(["x", "y", "z"]), mode="stream")
        record.outcome = rng.choice(["ok"] * 8 + ["rate_limited", "overloaded"])
        record.latency_ms = rng.lognormvariate(5, 1.2)
        record.ttft_ms = rng.lognormvariate(3.5, 0.8)
        record.first_content = "text"
        record.input_tokens, record.output_tokens = rng.randint(1, 5000), rng.randint(1, 800)
        record.cost_usd = rng.random() / 100
        stats.add(record)
    return stats


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_one_pass_percentiles_equal_hdrh_exactly(seed: int) -> None:
    stats = _random_stats(seed)
    groups = [stats.total(), *stats.by_model().values(), *stats.labels.values(), LabelStats()]
    for group in groups:  # the one-pass percentiles are hdrh's own, exactly
        for name in ("ttft", "latency", "output_tps"):
            histogram = getattr(group, name)
            if histogram.get_total_count():
                at, mean = histogram_values(histogram, (50, 90, 95, 99, 0, 100))
                assert at == {q: histogram.get_value_at_percentile(q) for q in (50, 90, 95, 99, 0, 100)}
                assert mean == histogram.get_mean_value()
    figures = stats_figures(stats.copy())
    assert {k: v for k, v in figures["totals"].items() if not k.endswith("_share")} == stats.total().figures().model_dump(exclude={"hdr"})
    overloaded = stats.total().outcomes["overloaded"]
    assert figures["totals"]["overloaded_share"] == overloaded / stats.requests


def test_the_live_window_with_pauses_sums_its_parts() -> None:
    now = [1000.0]
    recent = RecentStats(clock=lambda: now[0])
    source = _random_stats(4, n=600)
    records = [(key, group) for key, group in source.labels.items()]
    for step in range(40):  # deltas arriving over 80 s
        now[0] += 2.0
        delta = RunStats()
        key, group = records[step % len(records)]
        delta.labels[key] = group
        recent.merge(delta)
    pauses: list[int] = []
    for seconds in (10, 30, 60):
        parts = recent.window_parts(seconds)
        ours = RunStats()
        for part in parts:
            for key, group in part.labels.items():
                ours.labels.setdefault(key, LabelStats()).merge(group)
        before = len(pauses)
        theirs = recent.window(seconds, lambda: pauses.append(1))  # as the web UI asks: yielding between labels
        assert {k: v.figures() for k, v in ours.labels.items()} == {k: v.figures() for k, v in theirs.labels.items()}
        assert len(pauses) - before == sum(len(part.labels) for part in parts) > 0


def test_tab_rows_show_every_outcome_class_and_warn_when_saturated() -> None:
    stats = _random_stats(5, n=500)
    snapshot = {
        "snapshot": 7,
        "at": time.time(),
        "window_s": 30,
        "run_id": "r1",
        "running": True,
        **stats_figures(stats),
        "window": stats_figures(RunStats()),
        "health": {
            "saturated": True,
            "unreliable": True,
            "sources": [{"name": "local", "cpu_percent": 97.0, "loop_lag_p99_ms": 31.5, "saturated": True}],
        },
    }
    rows = tab_rows(snapshot)
    assert rows[0]["label"].startswith("⚠ LOAD GENERATOR SATURATED") and "CPU 97 %" in rows[0]["label"]
    assert "snapshot #7" in rows[0]["window"]
    assert [(r["label"], r["window"]) for r in rows[1:5]] == [("ALL", "run"), ("ALL", "last 30 s"), ("a", "run"), ("a", "last 30 s")]
    assert rows[4]["requests"] == "0" and rows[4]["ttft_p50"] == DASH  # nothing in the last 30 s
    failures = rows[1]["failures_by_class"]
    for outcome in ("rate_limited", "overloaded"):
        assert outcome in OUTCOMES and outcome in failures
    assert rows[1]["rate_limited_share"].endswith(" %")
    assert set(rows[1]) == {key for key, _ in COLUMNS} | {"name"}
