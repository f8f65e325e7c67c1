"""Locust's real master and workers (separate processes on loopback) against the emulator.

The workers run from a folder holding only the locustfile: the scenario reaches them from
the master. Every request must be counted once in the master's Locust stats, its merged
summary and the workers' records, and equal the emulator's own log.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import CEILING, Cluster
from tests.support.processes import INFLUX_ENV, ROOT, VictoriaMetrics, check_in_child, free_port, percentile
from tests.support.runs import GAP_MS, GAPPED_PROFILE, SCENARIO

pytestmark = pytest.mark.slow


def test_two_workers_without_the_scenario_count_exactly_what_the_server_saw(tmp_path: Path) -> None:
    with Cluster(tmp_path, workers=2, run_time="6s", profile=GAPPED_PROFILE) as cluster:
        code, out, err = cluster.finish()
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    summary, records, truth = cluster.summary(), cluster.records(), cluster.truth()

    # exactly once, everywhere
    assert len(records) == len(truth) > 0
    assert sorted(r["request_id"] for r in records) == sorted(t["request_id"] for t in truth)
    n = len(truth)
    assert summary["accounting"] == {
        "recorded": n,
        "requests": n,
        "before_window": 0,
        "cancelled": 0,
        "locust_requests": n,
        "records": n,
        "window": 0,
        "window_opened_at": None,
    }
    assert summary["totals"]["requests"] == len(truth) and summary["lost_workers"] == []
    workers = {w["name"]: w for w in summary["workers"]}
    assert set(workers) == {"worker-0", "worker-1"}
    assert Counter(r["worker"] for r in records) == {name: w["requests"] for name, w in workers.items()}
    assert all(w["requests"] > 0 for w in workers.values())  # both carried load
    assert {r["run_id"] for r in records} == {summary["run"]["run_id"]}  # one run id chosen by the master

    # merged HDR percentiles == percentiles of all requests together (3 significant digits)
    ttft = sorted(r["ttft_ms"] for r in records if r["ttft_ms"] is not None and r["outcome"] == "ok")
    for q in (50, 95, 99):
        exact = ttft[max(1, int(q / 100 * len(ttft) + 0.5)) - 1]  # HDR's rank: nearest, halves up
        assert summary["totals"]["ttft_ms"][f"p{q}"] == pytest.approx(exact, rel=2e-3, abs=0.01), q
    # ... and each TTFT is the server's first text (its ground truth): seen after it was written,
    # and on most requests well before the next chunk (due GAP_MS later, give or take 20 %):
    # not another event
    by_id = {t["request_id"]: t for t in truth}
    late_ms = [
        r["ttft_ms"] - (by_id[r["request_id"]]["t_first_text_ns"] - r["start_ns"]) / 1e6 for r in records if r["ttft_ms"] is not None
    ]
    assert min(late_ms) >= 0, "the harness cannot see the first text before the server wrote it"
    assert percentile(late_ms, 50) < GAP_MS / 2, late_ms
    assert "worker-0:" in out and "worker-1:" in out
    # receive times: each worker's own, reported with its reads; the run's reads are theirs summed
    assert summary["run"]["stamping"] == "kernel" and {w["stamping"] for w in workers.values()} == {"kernel"}
    reads = summary["run"]["stamped_reads"]
    assert reads == {kind: sum(w["stamped_reads"][kind] for w in workers.values()) for kind in ("kernel", "user", "clamped")}
    assert reads["kernel"] > 0 and reads["clamped"] == 0


def test_workers_that_stamp_differently_make_a_mixed_run_each_named(tmp_path: Path) -> None:
    """One worker with the kernel's receive stamps, one told to stamp when read (as a worker
    without them would): the summary does not take the master's guess for both."""
    with Cluster(tmp_path, workers=0, expect=2, run_time="4s") as cluster:
        cluster.add_worker()
        cluster.add_worker(env={"HARNESS_RECEIVE_STAMPS": "user"})
        code, out, err = cluster.finish()
    assert code == 0, err[-3000:]
    summary = cluster.summary()
    assert summary["run"]["stamping"] == "mixed"
    by_stamping = {w["stamping"]: w for w in summary["workers"]}
    assert set(by_stamping) == {"kernel", "user"}
    kernel, user = by_stamping["kernel"]["stamped_reads"], by_stamping["user"]["stamped_reads"]
    assert kernel["kernel"] > 0 and user["kernel"] == 0 and user["user"] > 0
    assert summary["run"]["stamped_reads"] == {kind: kernel[kind] + user[kind] for kind in kernel}
    assert "receive times: mixed (the workers differ)" in out
    assert f"{by_stamping['user']['name']}: " in out and "receive times: stamped when read" in out


def reported_by_both_workers(cluster: Cluster) -> bool:
    """The master counts more requests than either worker has written: so each has reported
    some (a worker's report never counts a request that is not yet in its file)."""
    counted = cluster.master_requests()  # first: the files only grow
    return all(counted > len(cluster.worker_lines(name)) for name in ("worker-0", "worker-1"))


def most_in_flight(records: list[dict], after_s: float) -> int:
    """The most requests of these records in flight at once, among those started after `after_s`
    (epoch seconds): a closed-loop worker has one per user (each user waits for its answer)."""
    edges = sorted(
        edge
        for r in records
        if r["wall_start_ns"] / 1e9 > after_s
        for edge in ((r["wall_start_ns"], 1), (r["wall_start_ns"] + int(r["latency_ms"] * 1e6), -1))
    )
    most = level = 0
    for _, step in edges:
        level += step
        most = max(most, level)
    return most


def test_a_worker_killed_mid_run_is_named_its_users_moved_and_its_uncounted_requests_estimated(tmp_path: Path) -> None:
    users = 12
    with Cluster(tmp_path, workers=2, run_time=CEILING, users=users) as cluster:
        cluster.wait_for("report from each worker", lambda: reported_by_both_workers(cluster))
        cluster.workers[0].kill()
        killed_at = time.time()

        def survivor_has_all_users() -> bool:  # only the survivor starts requests after the kill
            records = [json.loads(line) for name in ("worker-0", "worker-1") for line in cluster.worker_lines(name)]
            return most_in_flight(records, killed_at) == users  # it had half of them

        # the lost worker's users move to the survivor (Locust alone waits a minute to do so)
        cluster.wait_for("the lost worker's users on the survivor", survivor_has_all_users)
        cluster.stop()
        code, out, err = cluster.finish()
    summary, records, truth = cluster.summary(), cluster.records(), cluster.truth()
    assert summary["lost_workers"] and len(summary["lost_workers"]) == 1
    lost = summary["lost_workers"][0]
    assert f"{lost}: " in out and "LOST" in out
    survivor = next(w for w in summary["workers"] if w["name"] != lost)
    # the master kept what the lost worker had reported, and never more than it sent
    lost_info = next(w for w in summary["workers"] if w["name"] == lost)
    lost_reported = lost_info["requests"]
    assert 0 < lost_reported <= sum(1 for r in records if r["worker"] == lost)
    assert summary["accounting"]["requests"] == summary["accounting"]["locust_requests"]
    assert summary["accounting"]["requests"] == survivor["requests"] + lost_reported
    # what the server served and nobody counted is estimated: about right, never hidden
    uncounted = len(truth) - survivor["requests"] - lost_reported
    low, high = lost_info["unreported"]
    assert uncounted > 0 and low / 2 - 3 <= uncounted <= high * 1.5 + 3, (uncounted, low, high)
    assert f"about {low} to {high}" in out
    assert code in (0, 1), err[-3000:]


def test_a_worker_joining_mid_run_gets_the_scenario_and_users(tmp_path: Path) -> None:
    with Cluster(tmp_path, workers=1, run_time=CEILING, users=8, expect=1) as cluster:
        cluster.wait_for("request from worker-0", lambda: cluster.worker_lines("worker-0"))
        joining = cluster.add_worker()
        cluster.wait_for("request from worker-1", lambda: cluster.worker_lines("worker-1"))
        cluster.stop()
        code, _out, err = cluster.finish()
    summary, records, truth = cluster.summary(), cluster.records(), cluster.truth()
    # rebalancing moves users to the new worker: a moved user's request in flight may be
    # cut off, and is then counted as cancelled (Locust's exit code 1 for a failure)
    failures = Counter(r["outcome"] for r in records if r["outcome"] != "ok")
    assert set(failures) <= {"cancelled"} and code == (1 if failures else 0), (failures, err[-3000:])
    assert {w["name"] for w in summary["workers"]} == {"worker-0", "worker-1"}
    assert Counter(r["worker"] for r in records)["worker-1"] > 0, cluster.worker_err(joining)[-3000:]
    assert len(records) == len(truth) == summary["accounting"]["requests"]


def test_a_worker_with_another_harness_version_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other-version"
    shutil.copytree(ROOT / "harness", other / "harness")
    init = other / "harness" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "', '__version__ = "9.9.9-'))
    with Cluster(tmp_path, workers=1, run_time=CEILING, expect=1) as cluster:
        # the run has started with the right worker (worker-0) before the other one connects
        cluster.wait_for("request from worker-0", lambda: cluster.worker_lines("worker-0"))
        stranger = cluster.add_worker(env={"PYTHONPATH": str(other)})
        cluster.wait_for("refusal logged by the master", lambda: "9.9.9-" in cluster.master_err())
        cluster.stop()
        _code, out, _err = cluster.finish()
    stranger_err = cluster.worker_err(stranger)
    assert "this worker stops" in stranger_err and "9.9.9-" in stranger_err
    assert stranger.wait(30) == 2
    assert "REFUSED" in out and "9.9.9-" in out
    records, truth = cluster.records(), cluster.truth()
    assert len(records) == len(truth) == cluster.summary()["accounting"]["requests"]
    assert {r["worker"] for r in records} == {"worker-0"}


def test_workers_write_every_request_to_influxdb_under_the_masters_run_id(tmp_path: Path) -> None:
    vm = VictoriaMetrics(tmp_path / "vm")
    try:
        vm.start()
        with Cluster(tmp_path, workers=2, run_time="5s", env={**INFLUX_ENV, "INFLUXDB_V2_URL": vm.url}) as cluster:
            code, _out, err = cluster.finish()
        assert code == 0, err[-3000:]
        truth, summary = cluster.truth(), cluster.summary()
        series = vm.export("claude_request_latency_ms")
        assert sum(len(s["values"]) for s in series) == len(truth) == summary["accounting"]["requests"]
        assert {s["metric"]["run_id"] for s in series} == {summary["run"]["run_id"]}
        assert {s["metric"]["worker"] for s in series} == {"worker-0", "worker-1"}
        assert {s["metric"]["worker"] for s in vm.export("harness_health_cpu_percent")} >= {"worker-0", "worker-1"}
        assert summary["points"]["dropped"] == 0
    finally:
        vm.stop()


def test_reset_stats_opens_one_window_for_the_whole_cluster_and_locusts_tables_agree(tmp_path: Path) -> None:
    # a ramp of 3 s (12 users at 4/s) with requests of about a second: many start before the reset
    with Cluster(
        tmp_path,
        workers=2,
        run_time="8s",
        profile=GAPPED_PROFILE,
        spawn_rate=4,
        master_args=("--reset-stats", "--json-file", str(tmp_path / "locust-final")),
    ) as cluster:
        code, _out, err = cluster.finish()
    assert code == 0, err[-3000:]
    summary, records, truth = cluster.summary(), cluster.records(), cluster.truth()
    assert sorted(r["request_id"] for r in records) == sorted(t["request_id"] for t in truth)
    window = summary["accounting"]["window"]
    inside = [r for r in records if r["window"] == window]
    before = [r for r in records if r["window"] != window]
    assert window == 1 and inside and before
    accounting = summary["accounting"]
    assert (accounting["recorded"], accounting["requests"], accounting["before_window"]) == (len(records), len(inside), len(before))
    assert accounting["locust_requests"] == len(inside) and accounting["window_opened_at"] is not None
    # Locust's own final table: exactly the requests that started inside the window
    entries = json.loads((tmp_path / "locust-final.json").read_text())
    assert sum(e["num_requests"] for e in entries if e["method"] in ("STREAM", "BLOCK")) == len(inside)
    streamed_ok = [r for r in inside if r["mode"] == "stream" and r["outcome"] == "ok"]
    assert sum(e["num_requests"] for e in entries if e["method"] == "TTFT") == len(streamed_ok)
    assert summary["totals"]["requests"] == len(inside)
    # on each worker, every request of the window started after every request before it
    for worker in {r["worker"] for r in records}:
        starts_before = [r["start_ns"] for r in before if r["worker"] == worker]
        starts_inside = [r["start_ns"] for r in inside if r["worker"] == worker]
        assert not starts_before or not starts_inside or max(starts_before) < min(starts_inside)


def test_a_report_of_a_closed_window_reaches_neither_the_harness_nor_locusts_stats() -> None:
    """The race the window message leaves: a worker's report sent before it opened the window,
    merged by the master after it did. On a real Locust master runner whose own stats listener is
    registered after the harness's filter, as in a real run (locustfile first); in a process of
    its own, since importing Locust monkey-patches the interpreter (this one's threads included)."""
    check_in_child("tests.test_distributed", "check_stale_reports_are_dropped")


def check_stale_reports_are_dropped() -> None:
    """Run by the test above in its own process."""
    from locust.env import Environment
    from locust.event import Events
    from locust.stats import StatsEntry

    from harness.distributed import REPORT_KEY, MasterLink, StaleReportFilter
    from harness.scenario import scenario_from_dict

    events = Events()
    stale_reports = StaleReportFilter()
    events.worker_report.add_listener(stale_reports)
    environment = Environment(events=events)
    runner = environment.create_master_runner("127.0.0.1", free_port())
    try:
        link = MasterLink(environment, scenario_from_dict(SCENARIO), lambda: None, None)
        stale_reports.link = link
        link.run_id, link.epoch = "run", 1

        def report(window: int) -> dict[str, Any]:
            entry = StatsEntry(environment.stats, "m p", "STREAM")
            entry.log(100, 10)
            total = StatsEntry(environment.stats, "Aggregated", None)
            total.log(100, 10)
            ours = {
                "run_id": "run",
                "window": window,
                "stats": [],
                "name": "worker-0",
                "records": 1,
                "recorded": 1,
                "before_window": 0,
                "spent_usd": 0.0,
                "points_written": 0,
                "points_dropped": 0,
                "saturated_samples": 0,
                "unreliable": False,
                "health": {},
            }
            return {"stats": [entry.serialize()], "stats_total": total.serialize(), "errors": {}, REPORT_KEY: ours}

        events.worker_report.fire(client_id="w0", data=report(window=0))  # sent before the window opened
        assert environment.stats.total.num_requests == 0 and not environment.stats.entries
        events.worker_report.fire(client_id="w0", data=report(window=1))
        assert environment.stats.total.num_requests == 1 and environment.stats.entries[("m p", "STREAM")].num_requests == 1
    finally:
        runner.quit()
