"""Prompt caching, measured: the hit share, tokens read and written, and TTFT with and without
reads per label, merged exactly from workers; then a real run against the emulator, whose
prompt cache writes a prefix once and reads it after (reads cost no processing time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.caching import CacheBook
from harness.timing import TimingRecord
from tests.support.runs import recorded_run


def record(read: int = 0, written: int = 0, ttft: float = 100.0, prompt: str = "ctx") -> TimingRecord:
    return TimingRecord(
        "m", prompt, "stream", outcome="ok", ttft_ms=ttft, first_content="text", cache_read_tokens=read, cache_creation_tokens=written
    )


def test_a_labels_hits_tokens_and_ttft_with_and_without_reads_merge_exactly() -> None:
    workers = [CacheBook(), CacheBook()]
    for book in workers:
        book.add(record(written=1000, ttft=300))
        book.add(record(read=1000, ttft=100))
        book.add(record(read=1000, ttft=120))
        book.add(record(prompt="plain"))  # no caching: not reported
    master = CacheBook()
    for book in workers:
        master.merge_encoded(json.loads(json.dumps(book.encode_delta())))
        book.add(record(read=1000, ttft=90))  # after a report: counted in the next one
        master.merge_encoded(book.encode_delta())
    (figures,) = master.figures()
    assert (figures.prompt, figures.requests, figures.hits, figures.writes) == ("ctx", 8, 6, 2)
    assert (figures.hit_share, figures.read_tokens, figures.creation_tokens) == (0.75, 6000, 2000)
    assert figures.ttft_with_reads_ms is not None and figures.ttft_with_reads_ms.count == 6
    assert figures.ttft_without_reads_ms is not None and figures.ttft_without_reads_ms.min == pytest.approx(300, rel=0.001)


@pytest.mark.slow
def test_calibrated_cached_prompts_read_the_cache_and_reads_cost_no_processing_time(tmp_path: Path) -> None:
    prompt = {"input_tokens": 8000, "max_tokens": 8, "messages": [{"role": "user", "content": "What is it about?"}]}
    scenario = {
        "name": "cached",
        "models": ["claude-sonnet-4-5"],  # FAST_PROFILE's default: 60 ms, plus 10 ms per 1k input tokens processed, +-20 %
        "prompts": [{"name": "cached", "cache_synthetic": True, **prompt}, {"name": "plain", **prompt}],
    }
    _, summary, records, truth = recorded_run(tmp_path, scenario, users=3, run_time="4s")
    served = {row["request_id"]: row for row in truth}
    for item in records:  # each record's cache tokens are the server's
        row = served[item["request_id"]]
        assert (item["cache_read_tokens"], item["cache_creation_tokens"]) == (row["cache_read_tokens"], row["cache_creation_tokens"])
    (cache,) = [figures for figures in summary["caching"] if figures["mode"] == "stream"]
    cached = [item for item in records if item["prompt"] == "cached" and item["mode"] == "stream"]
    assert cache["prompt"] == "cached" and cache["requests"] == len(cached) and cache["writes"] == 1  # written once, read after
    assert cache["hits"] == len(cached) - 1 and cache["read_tokens"] == cache["hits"] * cache["creation_tokens"]
    for row in truth:  # the server's schedule: tokens read add nothing to the time to first token
        if row["stream"] and row["outcome"] == "ok":
            processed = row["input_tokens"] + row["cache_creation_tokens"]
            scheduled_ms = (row["scheduled_first_text_ns"] - row["t_received_ns"] - row["queued_ns"]) / 1e6
            ttft_ms = 60 + 10 * processed / 1000  # the first chunk's own jitter: +-20 % of a 2.5 ms gap
            assert ttft_ms * 0.8 - 0.5 <= scheduled_ms <= ttft_ms * 1.2 + 0.5, row
    # measured by the client: the schedule puts reads at least 40 ms ahead (48-72 ms against 112-168 ms)
    assert cache["ttft_with_reads_ms"]["p50"] < cache["ttft_without_reads_ms"]["p50"] - 20
