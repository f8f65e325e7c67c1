"""Long runs keep memory flat: nothing a request, a time bucket, a report or a live figure
creates stays behind in reference cycles (the harness keeps the garbage collector nearly idle
so that no collection delays a timing: what sits in a cycle would never be freed), and the
objects the process holds do not grow with the requests it has sent.

Counted, not timed: the checkpoints are N requests apart (`make soak` measures the RSS slope).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cluster import CEILING, Cluster
from tests.support.processes import ROOT, cluster_env, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, start_emulator

pytestmark = pytest.mark.slow

N = 1500
SATELLITES_PER_HISTOGRAM = 12
# what one request in flight holds (its stream's reader, line splitter and chunk decoder, its
# timer, record, waiter, bound methods, ...: about 13 counted): more requests in flight at the
# last checkpoint than at the one before is no growth with the requests
OBJECTS_PER_REQUEST_IN_FLIGHT = 20
WINDOW_S = 10  # the local child's live window (the web UI's is 30 s): its buckets fill up sooner
HARNESS_TYPES = {"Histogram", "HdrHistogramEncoder", "LabelStats", "RunStats", "AppStats", "TimingRecord", "HealthSample", "Group"}


SCENARIO_ARGS = {
    "abort": {"error_rate": 0.5, "window_s": 10},
    "failures": {"retries": {"max": 1}},
}  # the guard merges a window twice a second
PROFILE = {**FAST_PROFILE, "faults": {"rate_limited": 0.05, "retry_after_s": 0}}
LABELS, PER_LABEL = 2 * 2 * 2, 6  # models x prompts x modes; ttft, first thinking, latency, tps + the application's two


def test_requests_leave_no_garbage_in_cycles_and_no_objects_behind(tmp_path: Path) -> None:
    scenario = write_yaml(tmp_path / "scenario.yaml", {**SCENARIO, **SCENARIO_ARGS})
    emulator = start_emulator(tmp_path, PROFILE)
    try:
        checkpoints = run_child([emulator.url or "", str(scenario), str(tmp_path / "runs")], cluster_env())
    finally:
        emulator.stop()
    # histograms: the run's, those of the live figures' time buckets (one more or less at a
    # checkpoint), and a merge's
    assert_flat(checkpoints, max_histograms=LABELS * PER_LABEL * (WINDOW_S // 5 + 1 + 1 + 3))


def test_a_worker_leaves_no_garbage_and_makes_no_histograms_per_report(tmp_path: Path) -> None:
    """A real master on loopback; the child is its worker, reporting every few seconds."""
    with Cluster(
        tmp_path, workers=0, expect=1, users=40, run_time=CEILING, profile=PROFILE, scenario={**SCENARIO, **SCENARIO_ARGS}
    ) as cluster:
        checkpoints = run_child(["--worker", str(cluster.port)], cluster.env)
        cluster.stop()
    # a worker keeps its run's histograms only, zeroed after each report (no sliding window: the
    # master keeps it), so their number is that of the labels seen
    assert_flat(checkpoints, max_histograms=LABELS * PER_LABEL)


def run_child(args: list[str], env: dict[str, str]) -> list[dict]:
    child = subprocess.run(
        [sys.executable, "-m", "tests.support.memory_child", *args, str(N), "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**env, "MEMORY_CHILD_WINDOW_S": str(WINDOW_S)},
    )
    assert child.returncode == 0, child.stderr[-3000:]
    checkpoints = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    assert len(checkpoints) == 3 and all(c["requests"] >= N for c in checkpoints)
    return checkpoints


def assert_flat(checkpoints: list[dict], max_histograms: int) -> None:
    for checkpoint in checkpoints:
        garbage = checkpoint["garbage"]
        assert not HARNESS_TYPES & set(garbage), garbage
        assert sum(garbage.values()) < 0.05 * N, garbage  # a rare cycle in a library, never one per request
    # between the last two checkpoints: what the process holds does not grow with the requests;
    # histograms are counted apart (their number follows time buckets, not requests)
    before, after = checkpoints[-2]["tracked"], checkpoints[-1]["tracked"]
    grown = {kind: after.get(kind, 0) - count for kind, count in before.items() if after.get(kind, 0) > count}
    histogram_family = {
        kind
        for kind in after
        if kind.startswith(("Histogram", "HdrHistogram", "HdrPayload", "PayloadHeader", "ExternalHeader", "c_ulong_Array"))
    }
    # a histogram comes with its own small objects (its encoder's weak references, bound methods,
    # dicts): as many more are allowed as the histograms gained (a time bucket that began since)
    satellites = SATELLITES_PER_HISTOGRAM * max(0, after["Histogram"] - before.get("Histogram", 0))
    satellites += OBJECTS_PER_REQUEST_IN_FLIGHT * max(0, checkpoints[-1]["in_flight"] - checkpoints[-2]["in_flight"])
    others = sum(n for kind, n in grown.items() if kind not in histogram_family)
    # a leak of one object per request would be N or more; what grows without one (Locust's table
    # of distinct errors, the health timeline's samples, timers and their weak references: about
    # 50 to 110 here) stays below a tenth of N
    assert others < 0.1 * N + satellites, sorted(grown.items(), key=lambda item: -item[1])[:10]
    assert after["Histogram"] <= max_histograms, after["Histogram"]
