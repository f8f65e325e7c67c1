"""The soak's arithmetic (`make soak` itself runs for minutes and is not in CI): the RSS slope is a
least-squares line through the samples at steady load only, and the verdict is against 5 %/h."""

from __future__ import annotations

import psutil
import pytest

from harness.soak import MB, Track, growth, render, slope_per_hour


def test_the_slope_is_a_least_squares_line_in_bytes_per_hour() -> None:
    samples = [(t, 100 * MB + t * 1000 + (500 if t % 20 else -500)) for t in range(0, 600, 10)]  # 1 kB/s and noise
    slope = slope_per_hour(samples)
    assert slope == pytest.approx(3_600_000, rel=0.01)
    assert slope_per_hour(samples[:2]) is None and slope_per_hour([(5, 1), (5, 2), (5, 3)]) is None


def test_only_the_samples_at_steady_load_count() -> None:
    track = Track("worker 1", psutil.Process())
    track.samples = [(t, 100 * MB) for t in range(0, 605, 5)]  # flat while the run runs
    track.samples += [(t, 130 * MB) for t in range(605, 700, 5)]  # the stop: final reports, not steady load
    result = growth(track, warmup_s=120, end_s=600)
    assert result["slope_mb_per_hour"] == pytest.approx(0, abs=1e-9) and result["rss_end_mb"] == 100
    assert result["samples"] == len(range(120, 601, 5))


def test_the_verdict_is_against_five_percent_per_hour() -> None:
    processes = [
        {"process": "master", "rss_after_warmup_mb": 100.0, "rss_end_mb": 100.5, "slope_mb_per_hour": 4.9, "slope_pct_per_hour": 4.9},
        {"process": "worker 1", "rss_after_warmup_mb": 100.0, "rss_end_mb": 101.0, "slope_mb_per_hour": 5.1, "slope_pct_per_hour": 5.1},
        {"process": "worker 2", "slope_pct_per_hour": None},
    ]
    result = {"minutes": 10, "users": 100, "workers": 2, "scenario": "s.yaml", "warmup_minutes": 2, "requests": 1000}
    text = render(
        {**result, "exit_code": 0, "processes": processes, "disk_bytes": 250_000, "disk_bytes_per_request": 250.0, "output_dir": "d"}
    )
    lines = text.splitlines()
    assert lines[2].endswith("PASS") and lines[3].endswith("MISS") and "too few samples" in lines[4]
    assert "250 B per request, 0.25 GB per million requests" in lines[5]
