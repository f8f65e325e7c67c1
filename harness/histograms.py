"""HDR histograms as the harness keeps them: hdrh's, without what it costs a long run.

hdrh's `HdrHistogram` is kept as the format (its encoding travels in worker reports, byte for
byte); `Histogram` takes out its reference cycle, its per-value string, its per-size ctypes
type and its counter-by-counter reset, and `histogram_values` reads percentiles in one pass.
Values are recorded in microseconds: 1 us .. 1 hour at 3 significant digits.
"""

from __future__ import annotations

import base64
import ctypes
import sys
import weakref
import zlib
from collections.abc import Iterable
from itertools import compress
from typing import Any

from hdrh.codec import V2_MAX_WORD_SIZE_IN_BYTES, HdrHistogramEncoder, HdrPayload, ext_header_size, payload_header_size
from hdrh.histogram import HdrHistogram
from pyhdrh import encode as encode_varints

US_MAX = 3_600_000_000
DIGITS = 3


class Histogram(HdrHistogram):
    """hdrh's histogram without its reference cycle (histogram <-> encoder): freed by reference
    counting as soon as it is dropped. The harness keeps the garbage collector nearly idle
    (harness/pauses.py), so a histogram in a cycle would stay in memory for good: a run makes
    new ones for every time bucket, report delta and live figure."""

    min_value: int
    max_value: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoder.histogram = weakref.proxy(self)
        self._bucket_base = self.unit_magnitude + self.sub_bucket_half_count_magnitude + 1

    def record_value(self, value: int, count: int = 1) -> bool:
        """hdrh's record_value with the same effect, its index math in one function: hdrh's takes
        five calls and builds a string per value (its leading zeros are the length of bin())."""
        if value < 0:
            return False
        whole = int(value)
        bucket = (whole | self.sub_bucket_mask).bit_length() - self._bucket_base
        index = (
            ((bucket + 1) << self.sub_bucket_half_count_magnitude) + (whole >> (bucket + self.unit_magnitude)) - self.sub_bucket_half_count
        )
        if index < 0 or index >= self.counts_len:
            return False
        self.counts[index] += count
        self.total_count += count
        if value < self.min_value:
            self.min_value = value
        if value > self.max_value:
            self.max_value = value
        return True

    @staticmethod
    def decode(encoded_histogram: bytes | str, b64_wrap: bool = True) -> Histogram:
        hdr_payload = HdrHistogramEncoder.decode(encoded_histogram, b64_wrap)
        payload = hdr_payload.payload
        return Histogram(
            payload.lowest_trackable_value, payload.highest_trackable_value, payload.significant_figures, hdr_payload=hdr_payload
        )

    def decode_and_add(self, encoded_histogram: bytes | str) -> None:
        self.add(Histogram.decode(encoded_histogram, self.b64_wrap))

    def add(self, other_hist: HdrHistogram) -> None:
        """hdrh's add, but an empty one adds nothing (hdrh would take its minimum, 0, for ours)."""
        if other_hist.get_total_count():
            super().add(other_hist)

    def encode(self) -> bytes:
        """hdrh's encoding (V2, zlib, base64), byte for byte, without a new ctypes type per call:
        see `_compressed_counts`."""
        assert self.b64_wrap
        relevant = self.get_counts_array_index(self.max_value) + 1 if self.total_count else 0
        compressed = _compressed_counts(self.encoder.payload, relevant)
        header = self.encoder.header
        header.length = len(compressed)
        return base64.b64encode(ctypes.string_at(ctypes.addressof(header), ext_header_size) + compressed)

    def reset(self) -> None:
        """hdrh's reset, with the counters zeroed in one call (hdrh sets them one by one in Python:
        about a millisecond per histogram, with the event loop stalled)."""
        ctypes.memset(self.counts, 0, ctypes.sizeof(self.counts))
        self.total_count = 0
        self.min_value = sys.maxsize
        self.max_value = 0
        self.start_time_stamp_msec = sys.maxsize
        self.end_time_stamp_msec = 0


class _EncodeBuffer:
    """The one scratch buffer of `_compressed_counts` (the event loop runs one encoding at a time)."""

    array: ctypes.Array[ctypes.c_byte] | None = None

    @classmethod
    def at_least(cls, size: int) -> ctypes.Array[ctypes.c_byte]:
        if cls.array is None or len(cls.array) < size:
            cls.array = (ctypes.c_byte * size)()
        return cls.array


def _compressed_counts(payload: HdrPayload, counts_limit: int) -> bytes:
    """hdrh's `HdrPayload.compress`, into one buffer kept for the process. hdrh allocates its
    buffer as a ctypes array of the exact size, and each new size is a new ctypes type: a type
    lives in reference cycles, which the harness's rare collections (harness/pauses.py) leave in
    memory, about 2 KB for each size met. A worker encodes dozens of histograms per report, of
    ever new sizes: its memory crept up for hours."""
    buffer = _EncodeBuffer.at_least(payload_header_size + payload.counts_len * V2_MAX_WORD_SIZE_IN_BYTES)
    start = ctypes.addressof(buffer)
    varint_len = encode_varints(
        ctypes.addressof(payload.counts),
        counts_limit,
        payload.word_size,
        start + payload_header_size,
        counts_limit * V2_MAX_WORD_SIZE_IN_BYTES,
    )
    payload.payload.payload_len = varint_len
    ctypes.memmove(start, ctypes.addressof(payload.payload), payload_header_size)
    return zlib.compress(ctypes.string_at(start, payload_header_size + varint_len))


def new_histogram() -> HdrHistogram:
    return Histogram(1, US_MAX, DIGITS)


# hdrh computes each percentile and the mean in a Python loop over all ~23,000 counters of a
# histogram: about 0.2 s per group, which stalls the event loop (and every request's timing)
# when the web UI or the summary asks. The same values come from one pass over the non-zero
# counters only, exactly as hdrh defines them (tests compare both on random data).
def histogram_values(histogram: HdrHistogram, quantiles: Iterable[float]) -> tuple[dict[float, int], float]:
    """hdrh's get_value_at_percentile for each quantile, and get_mean_value, in one pass."""
    length = min(histogram.counts_len, histogram.encoder.payload.counts_len)
    counts = histogram.counts[:length]
    targets = sorted((histogram.get_target_count_at_percentile(q), q) for q in quantiles)
    half_magnitude, half = histogram.sub_bucket_half_count_magnitude, histogram.sub_bucket_half_count
    unit = histogram.unit_magnitude
    values: dict[float, int] = {}
    running = weighted = pending = 0
    for index in compress(range(length), counts):
        count = counts[index]
        running += count
        # get_value_from_index, then the median of its range of equivalent values
        bucket = (index >> half_magnitude) - 1
        sub_bucket = (index & (half - 1)) + half
        if bucket < 0:
            sub_bucket -= half
            bucket = 0
        lowest = sub_bucket << (bucket + unit)
        weighted += count * (lowest + ((1 << (unit + bucket)) >> 1))
        while pending < len(targets) and running >= targets[pending][0]:
            q = targets[pending][1]
            values[q] = histogram.get_highest_equivalent_value(lowest) if q else histogram.get_lowest_equivalent_value(lowest)
            pending += 1
    total = histogram.get_total_count()
    return values, (float(weighted) / total if total else 0.0)


def record_ms(histogram: HdrHistogram, value_ms: float | None) -> None:
    if value_ms is not None:
        histogram.record_value(min(max(round(value_ms * 1000), 1), US_MAX))
