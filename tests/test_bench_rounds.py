"""benchmarks/rounds.py: the CPU ratio targets read paired rounds, not one noisy baseline."""

from __future__ import annotations

from typing import Any

from benchmarks.bench import targets
from benchmarks.rounds import RATIO_LEVEL, add_ratios, describe, plan, summarize


def _row(config: str, level: int, cpu: float, round_: int = 1, p99: float | None = 1.0) -> dict[str, Any]:
    return {"config": config, "level": level, "round": round_, "status": "ok", "cpu_ms_per_req": cpu, "ttft_err_ms": {"p99": p99}}


def test_further_rounds_run_the_baseline_and_the_ratio_configurations_again_at_the_ratio_level_only() -> None:
    runs = plan([50, RATIO_LEVEL], ["baseline", "sdk", "fast", "fast-conversation"], 3)
    assert [r for r in runs if r[0] == 50] == [(50, c, 1) for c in ("baseline", "sdk", "fast", "fast-conversation")]
    at_ratio = [r for r in runs if r[0] == RATIO_LEVEL]
    assert at_ratio[:4] == [(RATIO_LEVEL, c, 1) for c in ("baseline", "sdk", "fast", "fast-conversation")]
    # each further round: the baseline first, then what is divided by it (sdk runs once)
    assert at_ratio[4:] == [(RATIO_LEVEL, c, n) for n in (2, 3) for c in ("baseline", "fast", "fast-conversation")]
    assert plan([RATIO_LEVEL], ["fast"], 1) == [(RATIO_LEVEL, "fast", 1)]


def test_each_run_is_divided_by_its_own_rounds_baseline_and_the_target_reads_the_median() -> None:
    rows = [
        _row("baseline", RATIO_LEVEL, 5.0, 1),
        _row("fast", RATIO_LEVEL, 1.0, 1, p99=2.0),
        _row("baseline", RATIO_LEVEL, 8.0, 2),
        _row("fast", RATIO_LEVEL, 1.2, 2, p99=9.0),
        _row("baseline", RATIO_LEVEL, 6.0, 3),
        _row("fast", RATIO_LEVEL, 1.5, 3, p99=3.0),
        _row("baseline", 100, 4.0, 1),
        _row("fast", 100, 1.0, 1),
        {"config": "baseline", "level": RATIO_LEVEL, "round": 4, "status": "error", "reason": "x"},
        _row("fast", RATIO_LEVEL, 0.1, 4),  # its round's baseline failed: no ratio, not in the median
    ]
    add_ratios(rows)
    assert [r["cpu_per_req_vs_baseline"] for r in rows if r["config"] == "fast"] == [0.2, 0.15, 0.25, 0.25, None]
    (summary,) = [s for s in summarize(rows) if s["level"] == RATIO_LEVEL]
    assert summary["ratios"] == [0.2, 0.15, 0.25] and summary["median"] == 0.2
    assert (summary["min"], summary["max"], summary["rounds"]) == (0.15, 0.25, 3)
    assert summary["baseline_cpu_ms_per_req"] == [5.0, 8.0, 6.0]
    assert "median 0.200x of 3 round(s)" in describe(summary) and "5.00 8.00 6.00" in describe(summary)

    (ratio,) = [t for t in targets(rows, [], [], []) if t["target"].startswith("fast CPU/request")]
    assert ratio["value"] == 0.2 and ratio["status"] == "PASS"
    (ttft,) = [t for t in targets(rows, [], [], []) if t["target"].startswith(f"fast TTFT p99 error <= 20 ms at {RATIO_LEVEL}")]
    assert ttft["value"] == 9.0  # the worst round's TTFT error, not the last one's


def test_targets_read_rounds_with_the_floor_beside_them() -> None:
    """The floor times nothing (no TTFT error) and runs in every round: the targets take the
    median of the paired ratios and the worst TTFT of the rounds that have one (a full run
    once stopped here, comparing the floor's missing p99 of two rounds)."""
    results = []
    for round_, (base, fast, p99) in enumerate([(4.0, 0.76, 0.01), (4.4, 0.92, 0.03), (4.4, 0.92, 0.02)], start=1):
        results += [_row("baseline", RATIO_LEVEL, base, round_, 3.0), _row("fast", RATIO_LEVEL, fast, round_, p99)]
        results.append(_row("floor", RATIO_LEVEL, 0.33, round_, None))
    add_ratios(results)
    by_name = {t["target"].split(" (")[0].split(":")[0]: t for t in targets(results, [], [], [])}
    ratio = by_name["fast CPU/request <= 0.2x baseline at 200 streams"]
    assert ratio["value"] == 0.209 and ratio["status"] == "MISS"  # the median of 0.19, 0.209, 0.209
    assert by_name["fast TTFT p99 error <= 20 ms at 200 streams"]["value"] == 0.03  # the worst round
