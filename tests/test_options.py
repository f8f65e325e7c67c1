"""Bad command-line values and unwritable outputs are refused before the run, with exit 2 and
one line; an output that cannot be written at the end fails the run without a traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness import exitcodes, options
from harness.records import RECORDS_FILE, read_records
from tests.support.cluster import Cluster
from tests.support.processes import ROOT, read_jsonl, run_locust, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, run_against_emulator, start_emulator


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (options.positive_count, ["1", "250"], ["0", "-1", "1.5", "x", ""]),
        (options.non_negative_count, ["0", "3"], ["-3", "nan"]),
        (options.positive_usd, ["0.01", "5"], ["0", "-1", "inf", "nan", "five"]),
        (options.positive_seconds, ["0.5", "10"], ["0", "-2", "inf"]),
        (options.non_negative_seconds, ["0", "3"], ["-0.1", "nan"]),
        (options.positive_percent, ["0.5", "10"], ["0", "-5"]),
        (options.cpu_percent, ["50", "100"], ["0", "150"]),
        (options.tcp_port, ["1", "65535"], ["0", "65536", "99999", "-1"]),
    ],
)
def test_argparse_types_refuse_what_would_misbehave(parse, good: list[str], bad: list[str]) -> None:  # type: ignore[no-untyped-def]
    for text in good:
        parse(text)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_output_paths_are_tried_not_guessed(tmp_path: Path) -> None:
    def check(**paths: str) -> str | None:
        return options.output_paths_problem(
            SimpleNamespace(**{"output_dir": str(tmp_path / "runs"), **dict.fromkeys(options.OUTPUT_FILES), **paths})
        )

    assert check(summary_json=str(tmp_path / "new" / "s.json")) is None
    assert not (tmp_path / "new" / "s.json").exists()  # tried, then removed
    existing = tmp_path / "kept.json"
    existing.write_text("old")
    assert check(junit=str(existing)) is None and existing.read_text() == "old"
    assert "is a folder" in str(check(report=str(tmp_path)))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert "--markdown" in str(check(markdown=str(blocker / "below" / "x.md")))
    assert "--output-dir" in str(
        options.output_paths_problem(SimpleNamespace(output_dir=str(blocker), **dict.fromkeys(options.OUTPUT_FILES)))
    )


# --- real processes -----------------------------------------------------------------------------
BAD_VALUES = [
    (("--max-requests", "-1"), "argument --max-requests: -1 must be a whole number >= 1"),
    (("--max-requests", "0"), "argument --max-requests: 0 must be a whole number >= 1"),
    (("--max-cost-usd", "-1"), "argument --max-cost-usd: -1 must be an amount of USD > 0"),
    (("--max-cost-usd", "0"), "argument --max-cost-usd: 0 must be an amount of USD > 0"),
    (("-u", "-3"), "argument -u/--users: -3 must be a whole number >= 0"),
    (("--web-port", "99999"), "argument --web-port/-P: 99999 must be a TCP port <= 65535"),
    (("--influx-buffer", "-1"), "argument --influx-buffer: -1 must be a whole number >= 1"),
    (("--regression-threshold", "-5"), "argument --regression-threshold: -5 must be a percentage > 0"),
    (("--points-flush-timeout", "-1"), "argument --points-flush-timeout: -1 must be a number of seconds >= 0"),
    (("--max-cpu-percent", "150"), "argument --max-cpu-percent: 150 must be a percentage <= 100"),
    (("--summary-json", "/proc/summary.json"), "--summary-json /proc/summary.json: cannot write in the folder /proc"),
    (("--junit", "/tmp"), "--junit /tmp: is a folder, not a file"),
    (("--output-dir", "/proc/runs"), "--output-dir /proc/runs: cannot write in the folder"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), BAD_VALUES, ids=[" ".join(args) for args, _ in BAD_VALUES])
def test_a_bad_value_is_refused_before_any_request(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    emulator = start_emulator(tmp_path, FAST_PROFILE)
    try:
        scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
        result = run_locust(tmp_path, scenario, "--host", emulator.url or "", *args, users=2, run_time="3s", timeout_s=60)
    finally:
        emulator.stop()
    assert result.returncode == exitcodes.USAGE, result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert read_jsonl(tmp_path / "truth.jsonl") == []  # not one request


@pytest.mark.slow
def test_an_output_that_cannot_be_written_at_the_end_fails_the_run_and_the_others_are_written(tmp_path: Path) -> None:
    summary_path, junit_path = tmp_path / "out" / "summary.json", tmp_path / "out" / "junit.xml"

    def block_the_summary(line: str) -> None:  # once the run has started: a folder where the file goes
        if "output in" in line and not summary_path.exists():
            summary_path.mkdir(parents=True)

    scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
    result, truth = run_against_emulator(
        tmp_path,
        scenario,
        FAST_PROFILE,
        "--summary-json",
        str(summary_path),
        "--junit",
        str(junit_path),
        users=2,
        run_time="2s",
        on_stderr_line=block_the_summary,
    )
    assert result.returncode == exitcodes.USAGE, result.stderr[-3000:]
    assert f"could not write the summary to {summary_path}" in result.stderr and "Traceback" not in result.stderr
    assert junit_path.read_text().startswith("<?xml") and truth
    assert "verdict:" in result.stdout  # the console summary is still printed


@pytest.mark.slow
def test_a_worker_writes_below_its_own_output_dir(tmp_path: Path) -> None:
    own = tmp_path / "worker-own-runs"
    with Cluster(tmp_path, workers=1, run_time="3s", expect=2) as cluster:
        cluster.add_worker(args=("--output-dir", str(own)))
        code, _, err = cluster.finish()
    assert code == 0, err[-3000:]
    mine = [record for path in own.rglob(RECORDS_FILE) for record in read_records(path)]
    shared = [record for path in (tmp_path / "runs").rglob(RECORDS_FILE) for record in read_records(path)]
    assert mine and shared and len({r["worker"] for r in mine} | {r["worker"] for r in shared}) == 2
    assert not {r["worker"] for r in mine} & {r["worker"] for r in shared}
    assert len(mine) + len(shared) == len(cluster.truth()) == cluster.summary()["accounting"]["requests"]


def test_the_harnesss_options_are_listed_with_locusts() -> None:
    """`locust -f locustfile.py --help` prints before the locustfile loads: this lists them."""
    listed = subprocess.run([sys.executable, "-m", "harness.options"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    for option in ("--scenario FILE", "--transport {fast,sdk}", "--platform {anthropic,vertex,bedrock}", "--users", "--run-time"):
        assert option in listed.stdout, option
