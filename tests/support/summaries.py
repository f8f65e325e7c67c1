"""Summaries for unit tests: a typed `Summary` around given stats, the rest filled neutrally."""

from __future__ import annotations

from typing import Any

from harness.results import Accounting, Health, Points, RunInfo, ScenarioInfo, Summary
from harness.stats import RunStats


def summary_of(stats: RunStats, **fields: Any) -> Summary:
    totals = stats.total().figures(with_histograms=True)
    summary = Summary(
        run=RunInfo(
            run_id="r",
            role="local",
            host="h",
            transport="fast",
            anthropic_version="2023-06-01",
            scenario=ScenarioInfo(name="s", digest="0" * 64, source="s.yaml", content={}),
            started_at=0.0,
            ended_at=1.0,
            duration_s=1.0,
            seeds={},
            versions={"harness": "test"},
        ),
        accounting=Accounting(recorded=totals.requests, requests=totals.requests, locust_requests=totals.requests, records=totals.requests),
        totals=totals,
        models={m: s.figures(with_histograms=True) for m, s in stats.by_model().items()},
        labels=[],
        health=Health(
            samples=0,
            saturated_samples=0,
            unreliable=False,
            cpu_percent_max=0,
            cpu_percent_mean=0,
            loop_lag_max_ms=0,
            loop_lag_p99_max_ms=0,
            max_cpu_percent_limit=90,
            max_loop_lag_ms_limit=50,
            timeline=[],
        ),
        points=Points(sink="off", written=0, dropped=0),
    )
    return summary.model_copy(update=fields)
