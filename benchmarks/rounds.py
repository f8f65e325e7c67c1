"""The benchmark's CPU ratios measured in rounds: how `benchmarks.bench` divides by a noisy baseline.

On a shared VM the baseline's CPU per request moves by a third between runs minutes apart
(measured at 200 streams on one day: 4.8, 6.6 and 7.7 ms), more than any change to the
harness; one baseline run against one harness run says little. So at the level of the
ratio targets (`RATIO_LEVEL`) the baseline and the configurations with a ratio target
(`RATIO_CONFIGS`) run in several rounds, one after the other in each round. Each run is
divided by the baseline of its own round (runs a minute apart share the machine's state),
and a target reads the median of those paired ratios, with their range beside it.

Every other level runs once (round 1), and its rows are divided by the baseline of that round.
"""

from __future__ import annotations

import statistics
from typing import Any

RATIO_LEVEL = 200  # streams: the level of the CPU ratio targets
RATIO_CONFIGS = ("baseline", "fast", "fast-conversation", "floor")  # run again in each further round (the floor: beside them)
ROUNDS = 3  # at RATIO_LEVEL (--rounds)


def plan(levels: list[int], configs: list[str], rounds: int) -> list[tuple[int, str, int]]:
    """The runs, in order: (level, configuration, round). Round 1 runs every configuration at
    every level; rounds 2.. run the baseline and the ratio configurations again at RATIO_LEVEL."""
    out: list[tuple[int, str, int]] = []
    for level in levels:
        out += [(level, config, 1) for config in configs]
        if level == RATIO_LEVEL:
            again = [config for config in configs if config in RATIO_CONFIGS]
            out += [(level, config, n) for n in range(2, rounds + 1) for config in again]
    return out


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Each row's CPU per request against the baseline at the same level in the same round."""
    baseline = {
        (r["level"], r.get("round", 1)): r.get("cpu_ms_per_req") for r in results if r["config"] == "baseline" and r.get("status") == "ok"
    }
    for r in results:
        b = baseline.get((r["level"], r.get("round", 1)))
        mine = r.get("cpu_ms_per_req")
        r["cpu_per_req_vs_baseline"] = round(mine / b, 3) if r.get("status") == "ok" and b and mine is not None else None


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per configuration and level with a ratio: the paired ratios of its rounds, their median
    and range, and the baseline's own CPU per request in each round (its spread)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in results:
        if r["config"] != "baseline" and r.get("cpu_per_req_vs_baseline") is not None:
            groups.setdefault((r["config"], r["level"]), []).append(r)
    baselines = {
        (r["level"], r.get("round", 1)): r["cpu_ms_per_req"] for r in results if r["config"] == "baseline" and r.get("status") == "ok"
    }
    out = []
    for (config, level), rows in groups.items():
        ratios = [r["cpu_per_req_vs_baseline"] for r in rows]
        out.append(
            {
                "config": config,
                "level": level,
                "rounds": len(rows),
                "ratios": ratios,
                "median": round(statistics.median(ratios), 3),
                "min": min(ratios),
                "max": max(ratios),
                "cpu_ms_per_req": [r["cpu_ms_per_req"] for r in rows],
                "baseline_cpu_ms_per_req": [baselines[(level, r.get("round", 1))] for r in rows],
            }
        )
    return out


def describe(summary: dict[str, Any]) -> str:
    """One line of the console: a configuration's paired ratios and the baselines they divide by."""
    ratios = " ".join(f"{x:.3f}" for x in summary["ratios"])
    base = " ".join(f"{x:.2f}" for x in summary["baseline_cpu_ms_per_req"])
    return (
        f"{summary['config']:<17} at {summary['level']} streams: median {summary['median']:.3f}x of {summary['rounds']} "
        f"round(s) [{ratios}]; baseline ms/req per round [{base}]"
    )
