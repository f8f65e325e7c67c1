"""HDR statistics on records with known values: percentiles, outcomes, modes, merges, windows."""

from __future__ import annotations

import gc
import random

import pytest
from hdrh.histogram import HdrHistogram

from harness.histograms import Histogram, new_histogram
from harness.stats import RecentStats, RunStats
from harness.timing import RATE_LIMITED
from tests.support.records import record


def test_percentiles_are_precise_to_three_digits() -> None:
    stats = RunStats()
    for i in range(1, 1001):  # TTFT 1..1000 ms in 1 ms steps
        stats.add(record("a", ttft=float(i), latency=1000.0 + i))
    model = stats.by_model()["a"].figures()
    assert model.ttft_ms is not None and model.latency_ms is not None and model.output_tps is not None
    assert model.ttft_ms.p50 == pytest.approx(500, rel=1e-3)
    assert model.ttft_ms.p99 == pytest.approx(990, rel=1e-3)
    assert model.latency_ms.p95 == pytest.approx(1950, rel=1e-3)
    # (latency - ttft) / (11 - 1) = 100 ms per token -> 10 tokens/s
    assert model.output_tps.p50 == pytest.approx(10, rel=1e-3)
    assert model.first_thinking_ms is None  # no thinking in these requests


def test_failures_are_counted_by_class_and_kept_out_of_latency() -> None:
    stats = RunStats()
    stats.add(record("a", ttft=100, latency=200))
    stats.add(record("a", ttft=None, latency=5, outcome=RATE_LIMITED))
    stats.add(record("b", ttft=None, latency=300, prompt="q"))
    total = stats.total()
    assert (total.requests, total.failures, total.outcomes[RATE_LIMITED]) == (3, 1, 1)
    assert total.latency.get_total_count() == 2
    assert total.ttft.get_total_count() == 1  # the blocking request has no TTFT
    assert total.cost_usd == pytest.approx(1.5) and total.output_tokens == 33


def test_streamed_and_blocking_requests_are_apart_and_first_thinking_has_percentiles() -> None:
    stats = RunStats()
    for i in range(1, 101):
        rec = record("a", ttft=float(100 + i), latency=300.0)
        rec.first_thinking_ms = float(i)
        stats.add(rec)
    for _ in range(7):
        stats.add(record("a", ttft=None, latency=50.0))
    modes = {mode: group.figures() for mode, group in stats.by_mode().items()}
    assert (modes["stream"].requests, modes["blocking"].requests) == (100, 7)
    assert modes["blocking"].ttft_ms is None and modes["blocking"].latency_ms.p50 == pytest.approx(50, rel=1e-3)
    assert sorted(stats.labels) == [("a", "p", "blocking"), ("a", "p", "stream")]
    thinking = stats.total().figures().first_thinking_ms
    assert thinking is not None and thinking.count == 100 and thinking.p50 == pytest.approx(50, rel=1e-3)


def test_requests_of_unpriced_models_are_counted_apart_from_the_cost() -> None:
    stats = RunStats()
    stats.add(record("priced", ttft=1, latency=2))
    unpriced = record("unpriced", ttft=1, latency=2)
    unpriced.cost_usd = None
    stats.add(unpriced)
    total = stats.total().figures()
    assert total.cost_usd == pytest.approx(0.5) and total.unpriced_requests == 1 and not total.cost_known
    assert stats.by_model()["priced"].figures().cost_known


def test_encoded_deltas_merge_to_the_same_percentiles() -> None:
    whole, worker_a, worker_b = RunStats(), RunStats(), RunStats()
    for i in range(1, 2001):
        rec = record("a", ttft=float(i % 997) + 0.5, latency=2000.0 + i)
        whole.add(rec)
        (worker_a if i % 3 else worker_b).add(rec)
    merged = RunStats()
    for worker in (worker_a, worker_b):
        merged.merge(RunStats.decode(worker.encode_delta()))
    assert worker_a.requests == 0 and worker_a.encode_delta() == []  # the delta is handed over once
    assert merged.total().figures(with_histograms=True) == whole.total().figures(with_histograms=True)


def test_a_delta_whose_label_has_no_ttft_leaves_the_merged_minimum_alone() -> None:
    """A worker's delta in which a streamed label's requests all failed carries an empty TTFT
    histogram: merged, it must not make the label's minimum TTFT 0."""
    streamed, failed = RunStats(), RunStats()
    streamed.add(record("a", ttft=250.0, latency=900.0))
    failed_request = record("a", ttft=1.0, latency=50.0, outcome=RATE_LIMITED)
    failed_request.ttft_ms = None
    failed.add(failed_request)
    merged = RunStats()
    for worker in (streamed, failed):
        merged.merge(RunStats.decode(worker.encode_delta()))
    ttft = merged.total().figures().ttft_ms
    assert ttft is not None and ttft.count == 1 and ttft.min == pytest.approx(250, rel=0.001)


def test_a_worker_reuses_its_histograms_from_one_delta_to_the_next() -> None:
    worker, second_only = RunStats(), RunStats()
    for i in range(1, 501):
        worker.add(record("a", ttft=float(i), latency=1000.0 + i))
    worker.add(record("b", ttft=5.0, latency=50.0))
    first = worker.encode_delta()
    histograms = [id(stats.ttft) for stats in worker.labels.values()]
    for i in range(1, 301):  # only label "a" has requests in the second delta
        rec = record("a", ttft=float(i % 50) + 0.25, latency=3000.0 + i)
        worker.add(rec)
        second_only.add(rec)
    second = worker.encode_delta()
    assert [id(stats.ttft) for stats in worker.labels.values()] == histograms  # zeroed, not made anew
    assert len(first) == 2 and [item["model"] for item in second] == ["a"]  # a label without requests is not sent
    assert RunStats.decode(second).total().figures(with_histograms=True) == second_only.total().figures(with_histograms=True)


def test_a_reset_histogram_is_a_new_one() -> None:
    histogram, fresh = new_histogram(), new_histogram()
    for value in (1, 7, 123_456, 3_600_000_000):
        histogram.record_value(value)
    histogram.reset()
    assert histogram.get_total_count() == 0 and not any(histogram.counts)
    assert (histogram.get_min_value(), histogram.get_max_value()) == (fresh.get_min_value(), fresh.get_max_value())
    histogram.record_value(42)
    fresh.record_value(42)
    assert histogram.encode() == fresh.encode()


def test_a_value_is_recorded_as_hdrh_records_it() -> None:
    rng = random.Random(5)
    values = [0, 1, 2, 2047, 2048, 2049, 4095, 4096, 10**6, 3_600_000_000, 3_600_000_001, -1, 10**12]
    values += [rng.randint(1, 3_600_000_000) for _ in range(3000)] + [int(rng.expovariate(1e-4)) for _ in range(3000)]
    ours, hdrh = new_histogram(), HdrHistogram(1, 3_600_000_000, 3)
    for value in values:
        assert ours.record_value(value) == hdrh.record_value(value), value
    ours.record_value(77, count=5)
    hdrh.record_value(77, count=5)
    assert list(ours.counts) == list(hdrh.counts)
    assert (ours.total_count, ours.min_value, ours.max_value) == (hdrh.total_count, hdrh.min_value, hdrh.max_value)


def test_histograms_encode_as_hdrh_does_without_a_ctypes_type_per_size() -> None:
    rng = random.Random(3)
    histograms = []
    for _ in range(200):  # maxima far apart: hdrh would make an array type per encoded size
        histogram = new_histogram()
        for _ in range(rng.randint(0, 50)):
            histogram.record_value(rng.randint(1, 3_600_000_000))
        histograms.append(histogram)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        encoded = [histogram.encode() for histogram in histograms]
        gc.collect()
        types_left = [o for o in gc.garbage if isinstance(o, type)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not types_left
    assert encoded == [HdrHistogram.encode(histogram) for histogram in histograms]  # hdrh's own encoding, byte for byte
    for histogram, blob in zip(histograms, encoded, strict=True):
        decoded = Histogram.decode(blob)
        assert (decoded.get_total_count(), decoded.get_max_value()) == (histogram.get_total_count(), histogram.get_max_value())


def test_recent_stats_cover_a_sliding_window() -> None:
    now = [1000.0]
    recent = RecentStats(bucket_s=5, keep_s=60, clock=lambda: now[0])
    recent.add(record("a", ttft=100, latency=200))
    now[0] += 20
    recent.add(record("a", ttft=300, latency=400))
    window = recent.window(10).total().figures()
    assert window.requests == 1 and window.ttft_ms is not None and window.ttft_ms.p50 == pytest.approx(300, rel=1e-3)
    assert recent.window(30).requests == 2
    now[0] += 100
    assert recent.window(300).requests == 0  # older than keep_s: forgotten


def test_requests_as_the_application_sees_them_count_once_and_travel_in_deltas() -> None:
    whole, worker = RunStats(), RunStats()
    attempts = []
    for i in range(300):  # every third request was rate limited once, then answered
        if i % 3 == 0:
            failed = record("a", ttft=None, latency=20.0, outcome=RATE_LIMITED)
            failed.retried = True
            attempts.append(failed)
        last = record("a", ttft=50.0, latency=400.0 + i)
        last.attempt = 2 if i % 3 == 0 else 1
        last.settle_request(last.start_ns - (1_020_000_000 if i % 3 == 0 else 0))  # a retry-after of 1 s waited
        attempts.append(last)
    cut = record("a", ttft=None, latency=20.0, outcome=RATE_LIMITED)
    cut.retried = True
    for rec in [*attempts, cut]:
        whole.add(rec)
        worker.add(rec)
    whole.abandon(cut)  # the run stopped while it waited for its retry
    worker.abandon(cut)
    merged = RunStats()
    merged.merge(RunStats.decode(worker.encode_delta()))
    app = merged.total().figures().application
    assert app == whole.total().figures().application
    assert app is not None and (app.requests, app.attempts, app.retried, app.failures) == (301, 401, 101, 1)
    assert app.outcomes == {"ok": 300, "cancelled": 1} and merged.total().requests == 401
    assert app.latency_ms is not None and app.latency_ms.max == pytest.approx(1020 + 400 + 297, rel=1e-3)
    assert app.ttft_ms is not None and app.ttft_ms.p50 == pytest.approx(50, rel=1e-3)


def test_without_retries_there_are_no_application_figures() -> None:
    stats = RunStats()
    stats.add(record("a", ttft=10.0, latency=20.0))
    assert stats.total().figures().application is None and "application" not in stats.encode()[0]


def test_merges_pause_after_each_label_and_copies_stay_apart() -> None:
    stats = RunStats()
    for model, prompt in [("b", "p"), ("a", "p"), ("a", "q")]:
        stats.add(record(model, ttft=10, latency=20, prompt=prompt))
    pauses: list[int] = []
    copy = stats.copy(lambda: pauses.append(1))
    assert len(pauses) == 3 and list(copy.labels) == list(stats.labels)  # labels in their order
    stats.add(record("a", ttft=10, latency=20))
    assert (copy.requests, stats.requests) == (3, 4)  # a copy: later requests are not in it
    assert stats.total(lambda: pauses.append(1)).figures() == RunStats.combined([stats]).total().figures()
    assert list(stats.by_model(lambda: pauses.append(1))) == ["a", "b"] and len(pauses) == 3 + 3 + 3
    assert [label for label, _ in stats.sorted_labels()] == [("a", "p", "stream"), ("a", "q", "stream"), ("b", "p", "stream")]


def test_the_window_parts_are_the_buckets_of_the_last_seconds() -> None:
    now = [1000.0]
    recent = RecentStats(bucket_s=5, keep_s=30, clock=lambda: now[0])
    for _ in range(4):  # one request in each of four buckets, 5 s apart
        recent.add(record("a", ttft=100, latency=200))
        now[0] += 5
    assert [part.requests for part in recent.window_parts(10)] == [1]  # 1015..1020 s; nothing yet in the current one
    assert len(recent.window_parts(30)) == 4 and recent.window(30).requests == 4
    assert recent.window_parts(30)[-1] is recent.window_parts(10)[-1]  # the live buckets, not copies
