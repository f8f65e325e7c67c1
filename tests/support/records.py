"""Timing records with known values, for the statistics' unit tests."""

from __future__ import annotations

from harness.timing import OK, TimingRecord


def record(model: str, ttft: float | None, latency: float, outcome: str = OK, prompt: str = "p") -> TimingRecord:
    mode = "blocking" if ttft is None else "stream"
    rec = TimingRecord(model=model, prompt=prompt, mode=mode, outcome=outcome, latency_ms=latency)
    if ttft is not None:
        rec.ttft_ms, rec.first_content, rec.last_token_ms = ttft, "text", latency
    rec.input_tokens, rec.output_tokens, rec.cost_usd = 10, 11, 0.5
    return rec
