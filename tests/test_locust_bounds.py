"""Locust's per-second request counts keep the last minute only, and its live rates are unchanged;
a worker computes Locust's default options once, not at each option of each spawn message."""

from __future__ import annotations

import time

import gevent
import pytest
from locust.env import Environment
from locust.stats import RequestStats

from harness import locust_bounds
from harness.locust_bounds import KEEP_S, trim_per_second_counts


def stats_with_an_hour_of_seconds(now: int) -> RequestStats:
    stats = RequestStats()
    for name in ("a", "b"):
        entry = stats.get(name, "STREAM")
        for second in range(now - 3600, now + 1):
            entry.num_reqs_per_sec[second] = 3
            entry.num_fail_per_sec[second] = 1
            stats.total.num_reqs_per_sec[second] += 3
    stats.total.start_time = now - 3600  # RequestStats reads both from its total
    stats.total.last_request_timestamp = now
    return stats


def test_trim_keeps_the_last_minute_and_the_current_rates() -> None:
    now = int(time.time())
    stats = stats_with_an_hour_of_seconds(now)
    entry = stats.get("a", "STREAM")
    rates = (entry.current_rps, entry.current_fail_per_sec, stats.total.current_rps)
    dropped = trim_per_second_counts(stats, now)
    assert dropped == (3600 - KEEP_S) * 5  # 2 entries x (requests, failures) + the total's requests
    for counts in (entry.num_reqs_per_sec, entry.num_fail_per_sec, stats.total.num_reqs_per_sec):
        assert min(counts) == now - KEEP_S and max(counts) == now and len(counts) == KEEP_S + 1
    assert (entry.current_rps, entry.current_fail_per_sec, stats.total.current_rps) == rates == (3, 1, 6)
    assert trim_per_second_counts(stats, now) == 0


def test_a_running_environment_is_trimmed_in_the_background(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locust_bounds, "EVERY_S", 0.01)
    environment = Environment()
    now = int(time.time())
    environment.stats = stats_with_an_hour_of_seconds(now)
    greenlet = locust_bounds.keep_bounded(environment)
    try:
        gevent.sleep(0.1)
        assert len(environment.stats.total.num_reqs_per_sec) <= KEEP_S + 2
    finally:
        greenlet.kill()


def test_a_workers_default_options_are_computed_once_and_each_caller_gets_a_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from locust import argument_parser, runners

    builds = []
    original = argument_parser.default_args_dict
    monkeypatch.setattr(argument_parser, "default_args_dict", lambda: builds.append(1) or original())
    locust_bounds.remember_default_args()
    first, second = argument_parser.default_args_dict(), argument_parser.default_args_dict()
    assert first == second == original() and first is not second and len(builds) == 1
    locust_bounds.remember_default_args()  # (twice: still one build)
    argument_parser.default_args_dict()
    assert len(builds) == 1
    # what the worker calls at each spawn message, once per option: Locust's function, looked up then
    assert "argument_parser.default_args_dict()" in inspect.getsource(runners.WorkerRunner.handle_message)
