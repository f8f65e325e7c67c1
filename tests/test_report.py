"""The HTML report (harness/report.py), rendered from a real run against the emulator.

One short `locust --headless` run per module (with injected 429s, 529s and stream errors,
so every plot has data) feeds every test; the report is also opened in a real headless
Chromium (Debian's, driven by Playwright) with the network blocked, and screenshotted into
test-artifacts/report.png.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.report import load_records, main, render_report
from harness.results import load_summary, parse_summary
from tests.support.processes import ROOT, run_locust, write_yaml

PLOTS = ("ttft-dist", "latency-dist", "ttft-time", "throughput", "errors", "tokens-cost", "health")
TIME_SERIES = ("ttft-time", "throughput")
SECTIONS = ("overview", "accounting", "slos", "models", "labels", "plots", "health", "points", "scenario")
ARTIFACTS = ROOT / "test-artifacts"
SWEEP_SUMMARY = ROOT / "tests" / "data" / "sweep-summary.json"
SWEEP_PLOTS = ("sweep-rate", "sweep-times", "sweep-errors")

PROFILE = {
    "seed": 11,
    "models": {
        "default": {
            "ttft_ms": 40,
            "ttft_ms_per_1k_input": 10,
            "output_tps": 400,
            "jitter": 0.2,
            "output_tokens": {"mean": 30, "sd": 8, "min": 3},
        },
        "claude-sonnet-4-5": {"ttft_ms": 90, "output_tps": 250},
    },
    "faults": {"rate_limited": 0.1, "overloaded": 0.03, "stream_error": 0.02},
}
SCENARIO = {
    "name": "report-itest",
    "models": [{"model": "claude-haiku-4-5", "weight": 2}, {"model": "claude-sonnet-4-5", "weight": 1}],
    "prompts": [
        {"name": "short", "weight": 3, "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 48},
        {"name": "long", "weight": 1, "input_tokens": 1500, "max_tokens": 32},
    ],
    "stream": 0.8,
}
SLOS = [
    {
        "name": "ttft_p95_ms",
        "metric": "TTFT p95 (ms)",
        "scope": "claude-haiku-4-5",
        "bound": "max",
        "limit": 2000,
        "value": 61.2,
        "passed": True,
    },
    {
        "name": "error_rate",
        "metric": "share of judged requests that failed",
        "scope": "all",
        "bound": "max",
        "limit": 0.01,
        "value": 0.12,
        "passed": False,
    },
]


class Run:
    def __init__(self, summary_path: Path) -> None:
        self.summary_path = summary_path
        self.data: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
        self.summary = parse_summary(self.data)
        self.records = load_records(Path(self.data["records_path"]))

    def summary_copy(self) -> dict[str, Any]:
        """The summary's JSON form, to change and read back with `parse_summary`."""
        return copy.deepcopy(self.data)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    tmp = tmp_path_factory.mktemp("report-run")
    profile = write_yaml(tmp / "profile.yaml", PROFILE)
    scenario = write_yaml(tmp / "scenario.yaml", SCENARIO)
    summary_path = tmp / "summary.json"
    result = run_locust(
        tmp,
        scenario,
        "--emulator-profile",
        str(profile),
        "--summary-json",
        str(summary_path),
        "--stop-timeout",
        "5",
        users=10,
        run_time="5s",
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert summary_path.is_file(), result.stderr[-3000:]
    loaded = Run(summary_path)
    assert loaded.summary.totals.failures > 0, "the profile injects faults: the error plot needs data"
    return loaded


def figure(html: str, key: str) -> str:
    match = re.search(rf'<figure class="[^"]*" id="plot-{key}">(.*?)</figure>', html, re.S)
    assert match, f"no figure for plot {key}"
    return match.group(1)


def graphics(fragment: str) -> int:
    """Inline SVGs and PNG images (a PNG inside an SVG, like a rasterized scatter, is part of its SVG)."""
    return fragment.count("<svg") + len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", fragment))


@pytest.mark.slow
def test_report_has_every_section_and_one_graphic_per_plot(run: Run, tmp_path: Path) -> None:
    html = render_report(run.summary, run.records, tmp_path / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    for key in PLOTS:
        assert graphics(figure(html, key)) == 1, key
    assert graphics(html) == len(PLOTS)
    summary = run.summary
    assert "Claude load test: report-itest" in html
    assert summary.run.run_id in html and summary.run.scenario.digest in html
    for model in summary.models:
        assert f'<td class="l">{model}</td>' in html
    for prompt in ("short", "long"):
        assert f'<td class="l">{prompt}</td>' in html
    assert "rate_limited" in html and "NO SLOs" in html
    n = summary.accounting.recorded
    assert f"{n} requests recorded = {n} in the figures" in html and "every request counted once in every sink" in html
    assert "max_tokens: 48" in html  # the scenario, as YAML
    assert f"<dt>locust</dt><dd>{summary.run.versions['locust']}</dd>" in html
    # the run's receive times: plain HTTP to the emulator, every read with the kernel's stamp but a connection's end
    reads = summary.run.stamped_reads
    assert summary.run.stamping == "kernel" and reads["kernel"] > 0 and reads["clamped"] == 0
    assert f"{reads['kernel']:,} of {reads['kernel'] + reads['user']:,} reads kernel-stamped" in html


@pytest.mark.slow
def test_slo_table_and_verdict(run: Run, tmp_path: Path) -> None:
    summary = run.summary_copy()
    summary["slos"] = copy.deepcopy(SLOS)
    html = render_report(parse_summary(summary), run.records, tmp_path / "fail.html").read_text(encoding="utf-8")
    table = re.search(r'<table class="slos">(.*?)</table>', html, re.S)
    assert table and table.group(1).count("<tr>") == 3  # header + 2 SLOs
    assert '<td class="l">TTFT p95 (ms)</td>' in table.group(1) and "share of judged requests that failed" in table.group(1)
    assert "&lt;= 0.01" in table.group(1)
    assert '<td class="ok">PASS</td>' in table.group(1) and '<td class="bad">FAIL</td>' in table.group(1)
    assert "FAIL (1 of 2 SLOs)" in html

    summary["slos"][1]["passed"] = True
    html = render_report(parse_summary(summary), run.records, tmp_path / "pass.html").read_text(encoding="utf-8")
    assert "PASS (2 SLOs)" in html and '<td class="bad">' not in html


@pytest.mark.slow
def test_unreliable_run_and_lost_workers_are_named(run: Run, tmp_path: Path) -> None:
    summary = run.summary_copy()
    summary["health"]["unreliable"] = True
    worker = {
        "name": "worker-7",
        "requests": 10,
        "records": 10,
        "points_written": 12,
        "points_dropped": 3,
        "saturated_samples": 1,
        "unreliable": True,
        "last_health": {"cpu_percent": 97.0, "loop_lag_p99_ms": 30.0},
        "lost": True,
        "unreported": [4, 9],
    }
    summary["workers"], summary["lost_workers"] = [worker], ["worker-7"]
    html = render_report(parse_summary(summary), run.records, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "UNRELIABLE" in html
    assert '<td class="l">worker-7</td>' in html and '<td class="l bad">LOST</td>' in html
    assert "worker-7: LOST: counted up to its last report; requests sent and not counted: about 4 to 9" in html


@pytest.mark.slow
def test_without_records_the_time_series_become_notes(run: Run, tmp_path: Path) -> None:
    html = render_report(run.summary, None, tmp_path / "report.html").read_text(encoding="utf-8")
    for key in TIME_SERIES:
        part = figure(html, key)
        assert graphics(part) == 0 and "No per-request records" in part
    for key in set(PLOTS) - set(TIME_SERIES):
        assert graphics(figure(html, key)) == 1, key


@pytest.mark.slow
def test_no_external_resources(run: Run, tmp_path: Path) -> None:
    html = render_report(run.summary, run.records, tmp_path / "report.html").read_text(encoding="utf-8")
    assert not re.search(r"<script|<link|<iframe|@import", html, re.I)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"""url\(\s*["']?(https?:)?//""", html, re.I)
    # the target host is shown as text; nothing else is a URL
    without_host = html.replace(run.summary.run.host, "")
    assert "http://" not in without_host and "https://" not in without_host


@pytest.mark.slow
def test_text_is_escaped_and_keys_never_shown(run: Run, tmp_path: Path) -> None:
    summary = run.summary_copy()
    summary["run"]["scenario"]["name"] = "<script>alert(1)</script>"
    fake_key = "sk-ant-" + "api03-AbCdEfGhIjKlMnOp_qrstu-vwxyz0123"  # split: no key-like literal in the repo
    summary["run"]["scenario"]["content"]["description"] = f"key {fake_key}"
    summary["run"]["host"] = "https://user:secret-password@gateway.example"
    html = render_report(parse_summary(summary), run.records, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "sk-ant-api03" not in html and "AbCdEfGhIjKlMnOp" not in html
    assert "secret-password" not in html


@pytest.mark.slow
def test_the_plots_show_the_measurement_window_as_the_tables_do(run: Run, tmp_path: Path) -> None:
    summary = run.summary_copy()
    summary["accounting"]["window"] = 1
    half = len(run.records) // 2
    records = [{**r, "window": 0 if i < half else 1} for i, r in enumerate(run.records)]
    html = render_report(parse_summary(summary), records, tmp_path / "report.html").read_text(encoding="utf-8")
    inside = [r for r in records if r["window"] == 1]
    ok = sum(1 for r in inside if r["outcome"] == "ok")
    assert f"ok ({ok:,})" in figure(html, "throughput")  # the legend counts the window's requests only


@pytest.mark.slow
def test_twenty_thousand_records_render_into_a_small_file(run: Run, tmp_path: Path) -> None:
    # how long it takes is a benchmark's business; here: every plot, and a file that stays small
    copies = -(-20_000 // len(run.records))
    span_ns = int(run.summary.run.duration_s * 1e9)
    records = [{**r, "wall_start_ns": r["wall_start_ns"] + i * span_ns} for i in range(copies) for r in run.records]
    assert len(records) >= 20_000
    html = render_report(run.summary, records, tmp_path / "big.html").read_text(encoding="utf-8")
    assert graphics(html) == len(PLOTS)
    assert len(html) < 3_000_000, "scatter points are rasterized: the file stays small"


@pytest.mark.slow
def test_cli_reads_the_records_named_in_the_summary(run: Run, tmp_path: Path) -> None:
    output = tmp_path / "cli.html"
    completed = cli(str(run.summary_path), "-o", str(output))
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == "" and str(output) in completed.stdout
    html = output.read_text(encoding="utf-8")
    assert all(graphics(figure(html, key)) == 1 for key in PLOTS)


def test_a_sweep_has_its_section_step_table_and_capacity_curve(tmp_path: Path) -> None:
    summary = load_summary(SWEEP_SUMMARY)
    html = render_report(summary, None, tmp_path / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="sweep"><h2>Capacity sweep</h2>(.*?)</section>', html, re.S)
    assert section, "no sweep section"
    table = re.search(r'<table class="sweep">(.*?)</table>', section.group(1), re.S)
    assert table and table.group(1).count("<tr>") == 1 + 5  # header + a row per step
    assert '<td class="l">9.75/s (bisection)</td>' in table.group(1)
    assert table.group(1).count('<td class="l ok">PASS</td>') == 3 and table.group(1).count('<td class="l bad">FAIL</td>') == 2
    assert "<b>Sweep:</b> sustainable 9.75/s under the SLOs (the lowest step to breach them: 10.5/s)." in section.group(1)
    for key in SWEEP_PLOTS:
        assert graphics(figure(section.group(1), key)) == 1, key
    assert "sustainable 9.75/s" in figure(html, "sweep-rate")  # the vertical line's legend


def test_without_a_sweep_the_report_has_no_sweep_section(tmp_path: Path) -> None:
    summary = load_summary(SWEEP_SUMMARY).model_copy(update={"sweep": None})
    html = render_report(summary, None, tmp_path / "report.html").read_text(encoding="utf-8")
    assert 'id="sweep"' not in html and 'id="plot-sweep' not in html and "Capacity sweep" not in html
    assert 'id="plots"' in html


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.report", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    (tmp / "not.json").write_text("{not json", encoding="utf-8")
    (tmp / "other.json").write_text(json.dumps({"schema": "something-else", "run": {}}), encoding="utf-8")
    (tmp / "list.json").write_text("[1, 2]", encoding="utf-8")
    (tmp / "broken.json").write_text(json.dumps({"schema": "claude-harness-summary"}), encoding="utf-8")
    (tmp / "bad.jsonl").write_text('{"model": "m"}\nnot json\n', encoding="utf-8")
    return {
        "missing summary": [str(tmp / "missing.json")],
        "not JSON": [str(tmp / "not.json")],
        "wrong schema": [str(tmp / "other.json")],
        "not an object": [str(tmp / "list.json")],
        "schema without content": [str(tmp / "broken.json")],
        "missing records": [str(tmp / "broken.json"), "--records", str(tmp / "missing.jsonl")],
        "records not JSON": [str(tmp / "broken.json"), "--records", str(tmp / "bad.jsonl")],
        "no arguments": [],
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing summary",
        "not JSON",
        "wrong schema",
        "not an object",
        "schema without content",
        "missing records",
        "records not JSON",
        "no arguments",
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out.html"
    with pytest.raises(SystemExit) if case == "no arguments" else contextlib.nullcontext() as exited:
        code = main([*_bad_inputs(tmp_path)[case], "-o", str(output)])
    code = exited.value.code if case == "no arguments" else code
    captured = capsys.readouterr()
    assert code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], captured.err
    assert captured.out == "" and not output.exists()


@pytest.mark.parametrize("case", ["not JSON", "wrong schema"])
def test_cli_bad_input_exits_2_without_a_traceback(tmp_path: Path, case: str) -> None:
    completed = cli(*_bad_inputs(tmp_path)[case], "-o", str(tmp_path / "out.html"))
    assert completed.returncode == 2, completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and "Traceback" not in completed.stderr
    assert completed.stdout == ""
    assert "not JSON" in completed.stderr if case == "not JSON" else "not a harness summary" in completed.stderr


# --- in a real browser -------------------------------------------------------------------
@pytest.mark.slow
def test_report_renders_in_a_real_browser_offline(run: Run, tmp_path: Path, browser: Any) -> None:
    from PIL import Image
    from playwright.sync_api import Route

    summary = run.summary_copy()
    summary["slos"] = copy.deepcopy(SLOS)
    report = render_report(parse_summary(summary), run.records, tmp_path / "report.html")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"

    blocked: list[str] = []
    failed: list[str] = []
    errors: list[str] = []

    def only_files(route: Route) -> None:
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route("**/*", only_files)
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    response = page.goto(report.as_uri(), wait_until="load")
    assert response is not None and response.ok
    boxes = page.evaluate(
        "Array.from(document.querySelectorAll('svg, img')).map(e => {"
        " const r = e.getBoundingClientRect(); return [e.tagName, r.width, r.height]; })"
    )
    title = page.title()
    page.screenshot(path=str(screenshot), full_page=True)

    assert not blocked and not failed and not errors, (blocked, failed, errors)
    assert "report-itest" in title
    assert len(boxes) == len(PLOTS)
    assert all(width > 300 and height > 100 for _, width, height in boxes), boxes
    assert screenshot.stat().st_size > 50_000
    with Image.open(screenshot) as image:
        assert image.width == 1280 and image.height > 3000  # the whole page, not the viewport
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
        assert colours is not None and len(colours) > 200, "the screenshot is (almost) one colour"
