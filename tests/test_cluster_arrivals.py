"""Open loops across a cluster: the master's split of the arrivals (unit), a process's switch to
a new share, then real masters and workers against the emulator, whose own log shows the
cluster's arrival process: Poisson at the total rate, constant arrivals evenly spaced across
the workers, a lost worker's share taken over and a joining worker given one, every arrival
counted once.
"""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path
from typing import Any

import gevent
import pytest

from harness.cluster_arrivals import MARGIN_S, ArrivalShare, ClusterArrivals
from harness.openloop import Arrival
from tests.support.cluster import CEILING, Cluster
from tests.support.runs import SCENARIO
from tests.test_openloop import SHORT, ks_exponential, open_loop


def test_the_master_splits_the_arrivals_among_the_working_workers_and_again_when_they_change() -> None:
    working = ["a", "b"]
    sent: list[tuple[str, ArrivalShare]] = []
    cluster = ClusterArrivals("run-1", lambda: list(working), lambda client, data: sent.append((client, ArrivalShare.from_dict(data))))
    before = time.time()
    start = cluster.start(until_s=30.0)
    assert before + MARGIN_S <= start <= time.time() + MARGIN_S
    assert [(client, share.index, share.count, share.since_s) for client, share in sent] == [("a", 0, 2, 0.0), ("b", 1, 2, 0.0)]
    assert all(share.start_wall == start and share.until_s == 30.0 and share.run_id == "run-1" for _, share in sent)
    sent.clear()
    working.remove("a")  # missing (maybe alive: told to send none)
    gevent.sleep(0.6)
    assert [(client, share.index, share.count) for client, share in sent] == [("b", 0, 1), ("a", 0, 0)]
    # the new split holds from MARGIN_S after it was made, on every worker
    assert sent[0][1].since_s == pytest.approx(time.time() - start + MARGIN_S, abs=0.5)
    sent.clear()
    gevent.sleep(0.6)
    assert sent == []  # nothing changed, nothing sent
    cluster.stop()
    assert cluster.span_s() == pytest.approx(time.time() - start, abs=0.1)


def test_a_share_starts_at_the_common_start_on_this_processs_clock() -> None:
    share = ArrivalShare("r", time.time() + 2.0, None, 0.0, 0, 1)
    assert (share.start_ns() - time.perf_counter_ns()) / 1e9 == pytest.approx(2.0, abs=0.01)
    assert ArrivalShare.from_dict(share.as_dict()) == share


def test_a_process_takes_over_a_lost_workers_share_from_the_time_of_the_split() -> None:
    """Two processes at 100/s constant, 50/s each; one is lost, the other becomes 1 of 1 from
    0.5 s on: the cluster's arrivals stay 10 ms apart before and after, the gap between aside."""
    loops = [open_loop({"arrival": "constant", "rate": "100/s"}, [SHORT]) for _ in range(2)]
    taken: list[list[Arrival]] = [[], []]

    def user(index: int) -> None:
        while (arrival := loops[index].take()) is not None:
            taken[index].append(arrival)

    users = [gevent.spawn(user, index) for index in (0, 1) for _ in range(3)]
    start = time.perf_counter_ns()
    for index, loop in enumerate(loops):
        loop.start(start, until_s=1.0, index=index, count=2)
    gevent.sleep(0.3)
    loops[1].close()  # lost at 0.3 s
    loops[0].rearrange(0, 1, since_s=0.5)
    gevent.sleep(0.9)
    loops[0].close()
    gevent.joinall(users, timeout=1)
    due = due_slots(start, list(itertools.chain(*taken)))
    assert due == [*range(0, 30), *range(30, 50, 2), *range(50, 100)]  # the lost one's share from 0.3 to 0.5 s: not sent
    assert {round((a.scheduled_ns - start) / 1e7) % 2 for a in taken[1]} == {1}  # worker 1 of 2 took the odd slots
    counts = loops[0].counts
    assert counts.scheduled == counts.sent == len(taken[0])


def due_slots(loop_start: int, taken: list[Arrival], slot_s: float = 0.01) -> list[int]:
    return sorted(round((a.scheduled_ns - loop_start) / 1e9 / slot_s) for a in taken)


def test_a_split_that_comes_late_sends_no_time_twice_and_switches_apply_in_order() -> None:
    """A process at 100/s constant as 1 of 1 gets, 0.3 s late, the split "0 of 2 from 0.2 s",
    then "none from 0.6 s" and "0 of 1 from 0.8 s" (in the other order): its arrivals are every
    slot to the moment the late split came, every other one after, none from 0.6 to 0.8 s."""
    loop = open_loop({"arrival": "constant", "rate": "100/s"}, [SHORT])
    taken: list[Arrival] = []

    def user() -> None:
        while (arrival := loop.take()) is not None:
            taken.append(arrival)

    users = [gevent.spawn(user) for _ in range(3)]
    start = time.perf_counter_ns()
    loop.start(start, until_s=1.0)
    gevent.sleep(0.5)
    loop.rearrange(0, 2, since_s=0.2)  # came 0.3 s late
    came = round((time.perf_counter_ns() - start) / 1e7)
    loop.rearrange(0, 1, since_s=0.8)
    loop.rearrange(0, 0, since_s=0.6)
    gevent.sleep(0.7)
    loop.close()
    gevent.joinall(users, timeout=1)
    due = due_slots(start, taken)
    assert len(due) == len(set(due))  # no time twice
    assert due[: came - 1] == list(range(came - 1))  # the old share, to the moment the split came
    assert [d for d in due if came + 1 < d < 60] == [d for d in range(came + 2, 60) if d % 2 == 0]
    assert [d for d in due if 60 <= d < 80] == [] and [d for d in due if d >= 80] == list(range(80, 100))
    assert loop.span_s() == pytest.approx(1.0)


def test_a_closed_loop_is_not_started_or_rearranged() -> None:
    loop = open_loop({"arrival": "poisson", "rate": "100/s"}, [SHORT])
    loop.close()
    loop.start(time.perf_counter_ns(), None)
    loop.rearrange(0, 1, 0.0)
    assert not loop.started and loop.take() is None


# --- real master and workers ------------------------------------------------------------
OPEN = {**SCENARIO, "prompts": [SHORT], "stream": 1.0, "seed": 11}


def cluster_scenario(load: dict[str, Any]) -> dict[str, Any]:
    return {**OPEN, "load": load}


def received_s(truth: list[dict]) -> list[float]:
    return sorted(row["t_received_ns"] / 1e9 for row in truth)


@pytest.mark.slow
def test_two_workers_send_a_poisson_process_at_the_total_rate_and_count_every_arrival_once(tmp_path: Path) -> None:
    load = {"arrival": "poisson", "rate": "30/s", "max_in_flight": 40, "warmup": "3s", "cooldown": "2s"}
    with Cluster(tmp_path, workers=2, run_time="25s", users=None, scenario=cluster_scenario(load)) as cluster:
        code, out, err = cluster.finish()
    assert code in (0, 1), err[-3000:]
    summary, records, truth = cluster.summary(), cluster.records(), cluster.truth()
    arrivals = summary["arrivals"]
    assert arrivals["scheduled"] == arrivals["sent"] + arrivals["dropped"] + arrivals["refused"] and arrivals["dropped"] == 0
    assert arrivals["sent"] == len(records) == len(truth) == summary["accounting"]["recorded"]
    expected = 30 * arrivals["span_s"]
    assert arrivals["span_s"] > 19 and abs(len(truth) - expected) < 5 * math.sqrt(expected), (len(truth), expected)
    distance, critical = ks_exponential(received_s(truth), 30.0)
    assert distance < critical, (distance, critical)
    by_worker = {name: sum(1 for r in records if r["worker"] == name) for name in ("worker-0", "worker-1")}
    assert all(abs(n - expected / 2) < 5 * math.sqrt(expected / 2) for n in by_worker.values()), by_worker
    # the warm-up: its requests are recorded, not in the figures; the accounting adds up
    accounting = summary["accounting"]
    assert accounting["recorded"] == accounting["requests"] + accounting["before_window"]
    assert abs(accounting["before_window"] - 90) < 5 * math.sqrt(90) and accounting["locust_requests"] == accounting["requests"]
    assert cluster.master_requests() == accounting["requests"]  # Locust's own CSV, reset at the warm-up's end too
    assert {r["window"] for r in records} == {0, 1}
    assert all(r["send_lag_ms"] is not None and r["send_lag_ms"] >= 0 for r in records)
    assert "arrivals" in out and f"{arrivals['scheduled']} scheduled" in out


@pytest.mark.slow
def test_constant_arrivals_are_evenly_spaced_across_the_workers(tmp_path: Path) -> None:
    load = {"arrival": "constant", "rate": "20/s", "max_in_flight": 20}
    with Cluster(tmp_path, workers=2, run_time="9s", users=None, scenario=cluster_scenario(load)) as cluster:
        code, _out, err = cluster.finish()
    assert code in (0, 1), err[-3000:]
    truth, records = cluster.truth(), cluster.records()
    gaps = sorted(b - a for a, b in itertools.pairwise(received_s(truth)))
    assert len(truth) > 100 and {r["worker"] for r in records} == {"worker-0", "worker-1"}
    assert gaps[len(gaps) // 2] * 1000 == pytest.approx(50, abs=1)  # the median gap: 1/rate
    assert gaps[len(gaps) // 10] * 1000 > 40 and gaps[-len(gaps) // 10] * 1000 < 60  # 80 % within 10 ms of it
    scheduled = sorted((r["scheduled_wall_ns"], r["worker"]) for r in records)
    alternating = sum(a[1] != b[1] for a, b in itertools.pairwise(scheduled))
    assert alternating == len(scheduled) - 1  # the workers take turns: each offset by half a period


def rate_between(truth: list[dict], start_s: float, end_s: float) -> float:
    return sum(1 for t in received_s(truth) if start_s <= t < end_s) / (end_s - start_s)


@pytest.mark.slow
def test_a_lost_workers_share_moves_to_the_survivor_and_a_joining_worker_gets_one(tmp_path: Path) -> None:
    load = {"arrival": "constant", "rate": "20/s", "max_in_flight": 20}
    with Cluster(tmp_path, workers=2, run_time=CEILING, users=None, scenario=cluster_scenario(load)) as cluster:
        cluster.wait_for("requests from both workers", lambda: cluster.worker_lines("worker-0") and cluster.worker_lines("worker-1"))
        time.sleep(2)
        cluster.workers[0].kill()
        killed_s = time.perf_counter()
        time.sleep(9)  # Locust marks it missing after ~3 heartbeats; the new split holds a second later
        cluster.add_worker()
        cluster.wait_for("requests from the joining worker", lambda: cluster.worker_lines("worker-2"))
        joined_s = time.perf_counter()
        time.sleep(5)
        cluster.stop()
        code, _out, err = cluster.finish()
    assert code in (0, 1), err[-3000:]
    truth, records, summary = cluster.truth(), cluster.records(), cluster.summary()
    assert rate_between(truth, killed_s - 2, killed_s) == pytest.approx(20, abs=2)  # both workers
    assert rate_between(truth, killed_s + 6, killed_s + 9) == pytest.approx(20, abs=2)  # the survivor alone
    assert rate_between(truth, joined_s + 1, joined_s + 5) == pytest.approx(20, abs=2)  # the survivor and the new one
    assert len(summary["lost_workers"]) == 1 and "split among 1 workers" in err and "split among 2 workers" in err
    lost = summary["lost_workers"][0]  # (Locust numbers the first two workers in the order they join)
    survivors = {"worker-0", "worker-1", "worker-2"} - {lost}
    late = sorted((r["scheduled_wall_ns"], r["worker"]) for r in records if r["worker"] in survivors)
    assert {worker for _, worker in late[-40:]} == survivors  # both send to the end
    # the cluster's counts add up; those of the workers that drained are exact, the lost one's
    # are as it last reported them
    arrivals = summary["arrivals"]
    assert arrivals["scheduled"] == arrivals["sent"] + arrivals["dropped"] + arrivals["refused"]
    workers = {worker["name"]: worker for worker in summary["workers"]}
    assert sum(worker["arrivals"]["sent"] for worker in workers.values()) == arrivals["sent"]
    for name in survivors:
        assert workers[name]["arrivals"]["sent"] == sum(1 for r in records if r["worker"] == name) == workers[name]["recorded"]
    lost_sent = workers[lost]["arrivals"]["sent"]
    assert 0 < lost_sent <= len(truth) - arrivals["sent"] + lost_sent
