"""Prompt caching, measured: per label (model, prompt, mode) the share of requests that read
from the cache, the tokens read and written, and TTFT with reads beside TTFT without.

Every request's record carries its cache read and write tokens (from its usage); this book
adds them up over the measurement window for the labels where caching happened at all (a
label's first read or write starts its TTFT histograms; its request counts are kept from the
start, so the hit share counts all its successful requests). A worker reports what was added
since its last report; the master merges the reports.
"""

from __future__ import annotations

from typing import Any

from harness.histograms import Histogram, new_histogram, record_ms
from harness.results import CacheFigures
from harness.stats import percentiles
from harness.timing import TimingRecord

__all__ = ["CacheBook"]

Label = tuple[str, str, str]
_COUNTS = ("requests", "hits", "writes", "read_tokens", "creation_tokens")


class CacheStats:
    """One label's successful requests and their cache usage."""

    def __init__(self) -> None:
        self.requests = self.hits = self.writes = self.read_tokens = self.creation_tokens = 0
        self.ttft_read: Histogram | None = None  # made at the label's first cache read or write
        self.ttft_unread: Histogram | None = None

    @property
    def active(self) -> bool:
        return self.ttft_read is not None

    def add(self, record: TimingRecord) -> None:
        read, written = record.cache_read_tokens or 0, record.cache_creation_tokens or 0
        self.requests += 1
        self.hits += read > 0
        self.writes += written > 0
        self.read_tokens += read
        self.creation_tokens += written
        if self.ttft_read is None and (read or written):
            self.ttft_read, self.ttft_unread = new_histogram(), new_histogram()
        if self.ttft_unread is not None and self.ttft_read is not None and record.first_content == "text":
            record_ms(self.ttft_read if read else self.ttft_unread, record.ttft_ms)

    def encode(self) -> dict[str, Any]:
        encoded: dict[str, Any] = {name: getattr(self, name) for name in _COUNTS}
        if self.ttft_read is not None and self.ttft_unread is not None:
            encoded |= {"ttft_read": self.ttft_read.encode().decode(), "ttft_unread": self.ttft_unread.encode().decode()}
        return encoded

    def clear(self) -> None:
        """Back to no requests, still active once it was (its histograms kept, zeroed)."""
        self.requests = self.hits = self.writes = self.read_tokens = self.creation_tokens = 0
        for histogram in (self.ttft_read, self.ttft_unread):
            if histogram is not None:
                histogram.reset()

    def merge_encoded(self, data: dict[str, Any]) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + data[name])
        if "ttft_read" in data:
            if self.ttft_read is None or self.ttft_unread is None:
                self.ttft_read, self.ttft_unread = new_histogram(), new_histogram()
            self.ttft_read.decode_and_add(data["ttft_read"].encode())
            self.ttft_unread.decode_and_add(data["ttft_unread"].encode())

    def figures(self, label: Label) -> CacheFigures:
        model, prompt, mode = label
        return CacheFigures(
            model=model,
            prompt=prompt,
            mode=mode,
            requests=self.requests,
            hits=self.hits,
            hit_share=self.hits / self.requests if self.requests else 0.0,
            writes=self.writes,
            read_tokens=self.read_tokens,
            creation_tokens=self.creation_tokens,
            ttft_with_reads_ms=percentiles(self.ttft_read) if self.ttft_read is not None else None,
            ttft_without_reads_ms=percentiles(self.ttft_unread) if self.ttft_unread is not None else None,
        )


class CacheBook:
    """The cache figures of every label (in the measurement window)."""

    def __init__(self) -> None:
        self.labels: dict[Label, CacheStats] = {}

    def add(self, record: TimingRecord) -> None:
        if record.ok:
            key = (record.model, record.prompt, record.mode)
            stats = self.labels.get(key)
            if stats is None:
                stats = self.labels[key] = CacheStats()
            stats.add(record)

    def reset(self) -> None:
        self.labels.clear()

    def encode_delta(self) -> list[dict[str, Any]]:
        """What was added since the last report; then every label back to no requests."""
        delta = [{"label": list(label), **stats.encode()} for label, stats in self.labels.items() if stats.requests]
        for stats in self.labels.values():
            stats.clear()
        return delta

    def merge_encoded(self, delta: list[dict[str, Any]]) -> None:
        for item in delta:
            model, prompt, mode = item["label"]
            self.labels.setdefault((model, prompt, mode), CacheStats()).merge_encoded(item)

    def figures(self) -> list[CacheFigures]:
        """The labels where caching happened, in (model, prompt, mode) order."""
        return [stats.figures(label) for label, stats in sorted(self.labels.items()) if stats.active]
