"""Variants in real runs against the emulator: a variant whose model the profile makes twice as
slow is found so, an unchanged one is not told apart, requests interleave, every sink carries
the variant, and a master with two workers gives the same verdicts; `make levers`' scenario
finds the effects its emulator profile is known to have."""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.records import RECORDS_FILE, read_records
from tests.support.cluster import Cluster
from tests.support.processes import ROOT, write_yaml
from tests.support.runs import run_against_emulator
from tests.support.webui import LocustUI, new_page
from tests.test_variants import runs_z
from tests.test_webui import poll, screenshot, start_from_form

pytestmark = pytest.mark.slow

PROFILE = {
    "seed": 3,
    "models": {
        # TTFTs long beside the client's own overhead (a few ms on a busy machine, the same for all):
        # the measured ratio is then 2 within a fraction of a percent
        "default": {"ttft_ms": 250, "ttft_ms_per_1k_input": 0, "output_tps": 1000, "jitter": 0.1, "output_tokens": {"mean": 10, "sd": 0}},
        "model-slow": {"ttft_ms": 500},  # twice the TTFT, the same output
    },
}
SCENARIO: dict[str, Any] = {
    "name": "variants",
    "models": ["model-a"],
    "prompts": [{"name": "q", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}],
    "variants": [{"name": "base", "baseline": True}, {"name": "same"}, {"name": "slow", "model": "model-slow"}],
}


def verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variant's TTFT p50 against the baseline."""
    return {
        variant["name"]: next(c for c in variant["comparisons"] if c["metric"] == "ttft_ms" and c["quantile"] == 50)
        for variant in summary["variants"]["variants"]
        if not variant["baseline"]
    }


def assert_known_effects(summary: dict[str, Any]) -> None:
    found = verdicts(summary)
    slow, same = found["slow"], found["same"]
    assert slow["finding"] == "higher" and slow["low"] <= 2 <= slow["high"], slow
    assert same["finding"] == "no_difference", same
    requests = {variant["name"]: variant["requests"] for variant in summary["variants"]["variants"]}
    assert sum(requests.values()) == summary["accounting"]["requests"] and min(requests.values()) > 150, requests


def test_a_variant_twice_as_slow_is_found_so_and_every_sink_carries_the_variant(tmp_path: Path) -> None:
    summary_path = tmp_path / "summary.json"
    result, truth = run_against_emulator(
        tmp_path,
        write_yaml(tmp_path / "scenario.yaml", SCENARIO),
        PROFILE,
        "--summary-json",
        str(summary_path),
        "--csv",
        str(tmp_path / "locust"),
        users=30,
        run_time="12s",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert_known_effects(summary)
    slow = verdicts(summary)["slow"]
    assert slow["verdict"] in result.stdout + result.stderr  # the console says it in words
    records = sorted(read_records(next(result.output_dir.rglob(RECORDS_FILE))), key=lambda r: r["start_ns"])
    by_variant = Counter(r["variant"] for r in records)
    assert by_variant == {v["name"]: v["requests"] for v in summary["variants"]["variants"]}
    assert abs(runs_z([r["variant"] == "base" for r in records])) < 3  # interleaved at random over the run
    assert Counter(row["model"] for row in truth) == {"model-a": by_variant["base"] + by_variant["same"], "model-slow": by_variant["slow"]}
    with gzip.open(result.run_dir / "points.lp.gz", "rt") as points:
        tagged = Counter(
            tag.split("=")[1]
            for line in points
            if line.startswith("claude_request,")
            for tag in line.split(" ")[0].split(",")
            if tag.startswith("variant=")
        )
    assert tagged == by_variant
    with open(tmp_path / "locust_stats.csv") as stats:
        rows = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(stats) if row["Type"] == "STREAM"}
    assert rows == {
        "model-a q [base]": by_variant["base"],
        "model-a q [same]": by_variant["same"],
        "model-slow q [slow]": by_variant["slow"],
    }


def test_a_master_with_two_workers_gives_the_same_verdicts(tmp_path: Path) -> None:
    with Cluster(tmp_path, workers=2, run_time="12s", users=30, profile=PROFILE, scenario=SCENARIO) as cluster:
        records, truth, summary = cluster.finished()
    assert_known_effects(summary)
    assert Counter(r["variant"] for r in records) == {v["name"]: v["requests"] for v in summary["variants"]["variants"]}
    assert len(truth) == len(records)


LEVERS_EFFECTS = {  # (variant, metric): the finding at p50 that scenarios/emulator/levers.yaml makes
    ("haiku", "ttft_ms"): "lower",
    ("haiku", "output_tps"): "higher",
    ("short-prompt", "ttft_ms"): "lower",
    ("long-prompt", "ttft_ms"): "higher",
    ("short-output", "latency_ms"): "lower",
    ("short-output", "ttft_ms"): "no_difference",
    ("temperature-0", "ttft_ms"): "no_difference",
    ("temperature-0", "latency_ms"): "no_difference",
    ("blocking", "perceived_ms"): "higher",
    ("cached", "ttft_ms"): "lower",
    ("fast-mode", "output_tps"): "higher",
    ("fast-mode", "latency_ms"): "lower",
    ("standard-only", "ttft_ms"): "higher",
}


def test_the_levers_scenario_finds_the_effects_its_emulator_profile_has(tmp_path: Path) -> None:
    """`make levers`, shortened: its scenario against its profile."""
    summary_path, report = tmp_path / "summary.json", tmp_path / "report.html"
    result, _truth = run_against_emulator(
        tmp_path,
        ROOT / "scenarios" / "latency-levers.yaml",
        yaml.safe_load((ROOT / "scenarios" / "emulator" / "levers.yaml").read_text()),
        "--summary-json",
        str(summary_path),
        "--report",
        str(report),
        users=None,
        run_time="30s",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    found = {
        (variant["name"], c["metric"]): c["finding"]
        for variant in summary["variants"]["variants"]
        for c in variant["comparisons"]
        if c["quantile"] == 50
    }
    assert {key: found.get(key) for key in LEVERS_EFFECTS} == LEVERS_EFFECTS
    assert 'id="variants"' in report.read_text() and 'id="plot-variants-cdf"' in report.read_text()


READ_TABLE = (
    """() => [...document.querySelectorAll('table tbody tr')].map(tr => [...tr.querySelectorAll('td')].map(td => td.innerText.trim()))"""
)


@pytest.mark.timeout(240)
def test_the_web_uis_variants_tab_shows_each_variant_and_its_verdicts_live(tmp_path: Path, browser: Any) -> None:
    scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
    ui = LocustUI(tmp_path, scenario, "--emulator-profile", str(write_yaml(tmp_path / "variants.yaml", PROFILE)))
    try:
        ui.wait_ready()
        page = new_page(browser)
        page.goto(ui.url)
        start_from_form(page, users=20)
        page.get_by_role("tab", name="Variants").click()
        rows = poll(
            lambda: (rows := page.evaluate(READ_TABLE)) and any("slow: TTFT p50" in row[0] and "longer" in row[0] for row in rows) and rows,
            "the slow variant's verdict",
            90,
        )
        assert [row[0] for row in rows[:3]] == ["base (baseline)", "same", "slow"] and all(
            int(row[1].replace(",", "")) > 0 for row in rows[:3]
        )
        assert any(row[0].startswith("same: TTFT p50") and "no significant difference" in row[0] for row in rows)
        screenshot(page, "variants-tab")
    finally:
        ui.stop()
