"""The burst mode of `benchmarks.bench`: N streams whose first text the emulator sends in the same
millisecond, every grid step (`first_output_grid_ms`), against the harness in one process.

All users start together and each sends one request per step: the request's first text is due
at the next grid line, then the rest of the answer follows at a model-like pace (a delta of one
token every 20 ms, 30 tokens): between bursts the loop is busy with every stream's deltas. The figure is the TTFT error of every streamed request against
the emulator's ground truth (client first-text stamp minus the emulator's first-text write):
how far the stamps of the load generator drift when hundreds of first tokens arrive together.
"""

from __future__ import annotations

from typing import Any

GRID_MS = 1000  # one request per user per step: the cycle (ttft + output, ~0.8 s) fits in it
LEVELS = (200, 500)
LIMITS_MS = {200: 2.0, 500: 5.0}  # TTFT p99 error targets per burst size

PROFILE: dict[str, Any] = {
    "seed": 1,
    "ping": True,
    "models": {
        "default": {
            "ttft_ms": 200,
            "ttft_ms_per_1k_input": 0,
            "output_tps": 50,
            "jitter": 0.0,
            "tokens_per_chunk": 1,
            "output_tokens": {"mean": 30, "sd": 0, "min": 30, "max": 30},
            "first_output_grid_ms": GRID_MS,
        }
    },
}


def targets(bursts: list[dict[str, Any]], levels: list[int]) -> list[tuple[str, float | None, float, str]]:
    """(name, value, limit, why missing) of each burst target: the TTFT p99 error at its size."""
    by_level = {b["level"]: b for b in bursts if b.get("status") == "ok" and b["config"] == "fast"}
    out = []
    for level in levels:
        limit = LIMITS_MS.get(level, LIMITS_MS[max(LIMITS_MS)])
        measured = by_level.get(level)
        value = measured["ttft_err_ms"]["p99"] if measured else None
        out.append((f"burst of {level}: TTFT p99 error <= {limit:g} ms", value, limit, f"burst of {level} not measured"))
    return out
