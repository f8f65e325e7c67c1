"""Rate-limit headroom per model: the API's `anthropic-ratelimit-*` headers and its 429s, so
that a run says where the limits bite before they do.

Every response's headers are read once, with its status (never per stream event):
`anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}`
and `retry-after`. Per model the run keeps the limits, the lowest remaining share of each
limit seen (with its remaining count and reset time), the 429s, the first one's time and the
rate requests of that model were sent at in the 10 s up to it, and the retry-after values.
A worker reports its figures as deltas; a master adds them up (the offered rate at the first
429 then counts every worker's requests). Send counts per tenth of a second are kept for the
last minute only, and for the 10 s up to the first 429 for good: memory stays flat.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.results import BucketLow, RateLimitFigures, RetryAfter
from harness.timing import TimingRecord

BUCKETS = ("requests", "tokens", "input_tokens", "output_tokens")
_HEADERS = tuple(
    (bucket, f"anthropic-ratelimit-{name}-limit", f"anthropic-ratelimit-{name}-remaining", f"anthropic-ratelimit-{name}-reset")
    for bucket, name in ((bucket, bucket.replace("_", "-")) for bucket in BUCKETS)
)
NS = 1_000_000_000
SLOT_NS = NS // 10  # send counts are kept per tenth of a second
OFFERED_WINDOW = 100  # slots: the offered rate at the first 429 counts the requests sent in the 10 s before it
KEEP = 600  # slots of send counts kept (a minute: a master's reports arrive within seconds)

RateLimitHeaders = dict[str, tuple[int, int | None, str | None]]  # bucket -> (limit, remaining, reset)


def read_rate_limits(header: Callable[[str], str | None]) -> RateLimitHeaders | None:
    """The rate-limit headers of one response (None: it had none); unreadable numbers are skipped."""
    found: RateLimitHeaders | None = None
    for bucket, limit_name, remaining_name, reset_name in _HEADERS:
        limit = header(limit_name)
        if limit is None:
            continue
        try:
            remaining = header(remaining_name)
            values = (int(limit), None if remaining is None else int(remaining), header(reset_name))
        except ValueError:
            continue
        if found is None:
            found = {}
        found[bucket] = values
    return found


def rate_limit_fields(record: TimingRecord) -> dict[str, int | None]:
    """A record's limits and remaining counts as point fields (none without the headers)."""
    if record.rate_limits is None:
        return {}
    fields: dict[str, int | None] = {}
    for bucket, (limit, remaining, _reset) in record.rate_limits.items():
        fields[f"ratelimit_{bucket}_limit"] = limit
        fields[f"ratelimit_{bucket}_remaining"] = remaining
    return fields


@dataclass
class ModelHeadroom:
    """One model's rate-limit figures: added from records, merged from workers' deltas."""

    with_headers: int = 0
    limits: dict[str, int] = field(default_factory=dict)  # the highest limit seen, per bucket
    lowest: dict[str, tuple[float, int, int, str | None]] = field(default_factory=dict)  # (share, remaining, limit, reset)
    rate_limited: int = 0  # 429 responses
    first_429_ns: int | None = None  # wall clock
    retry_after: list[float] = field(default_factory=lambda: [0, math.inf, 0.0, 0.0])  # count, min, max, sum
    sent: Counter[int] = field(default_factory=Counter)  # requests sent per slot (a tenth of a second, wall clock)
    first_slot: int | None = None  # the slot of the first request sent

    def add(self, record: TimingRecord) -> None:
        slot = record.wall_start_ns // SLOT_NS
        if slot not in self.sent:
            self._trim(slot)
            self.first_slot = slot if self.first_slot is None else min(self.first_slot, slot)
        self.sent[slot] += 1
        if record.rate_limits is not None:
            self.with_headers += 1
            for bucket, (limit, remaining, reset) in record.rate_limits.items():
                self._seen(bucket, limit, remaining, reset)
        if record.http_status == 429:
            self.rate_limited += 1
            if self.first_429_ns is None or record.wall_start_ns < self.first_429_ns:
                self.first_429_ns = record.wall_start_ns
        if record.retry_after_s is not None:
            self._retry_after(1, record.retry_after_s, record.retry_after_s, record.retry_after_s)

    def _seen(self, bucket: str, limit: int, remaining: int | None, reset: str | None) -> None:
        self.limits[bucket] = max(limit, self.limits.get(bucket, 0))
        if remaining is None or limit <= 0:
            return
        share = remaining / limit
        if bucket not in self.lowest or share < self.lowest[bucket][0]:
            self.lowest[bucket] = (share, remaining, limit, reset)

    def _retry_after(self, count: float, low: float, high: float, total: float) -> None:
        mine = self.retry_after
        self.retry_after = [mine[0] + count, min(mine[1], low), max(mine[2], high), mine[3] + total]

    def _trim(self, now: int) -> None:
        """Forget the send counts older than KEEP slots, but those before the first 429."""
        first = None if self.first_429_ns is None else self.first_429_ns // SLOT_NS
        for slot in [slot for slot in self.sent if slot < now - KEEP]:
            if first is None or not first - OFFERED_WINDOW < slot <= first:
                del self.sent[slot]

    def merge(self, other: ModelHeadroom) -> None:
        self.with_headers += other.with_headers
        for bucket, limit in other.limits.items():
            self.limits[bucket] = max(limit, self.limits.get(bucket, 0))
        for bucket, (share, remaining, limit, reset) in other.lowest.items():
            if bucket not in self.lowest or share < self.lowest[bucket][0]:
                self.lowest[bucket] = (share, remaining, limit, reset)
        self.rate_limited += other.rate_limited
        if other.first_429_ns is not None and (self.first_429_ns is None or other.first_429_ns < self.first_429_ns):
            self.first_429_ns = other.first_429_ns
        if other.retry_after[0]:
            self._retry_after(*other.retry_after)
        self.sent.update(other.sent)
        if other.sent:
            self._trim(max(other.sent))
        if other.first_slot is not None:
            self.first_slot = other.first_slot if self.first_slot is None else min(self.first_slot, other.first_slot)

    def offered_at_first_429(self) -> float | None:
        """Requests per second sent in the 10 s up to the first 429 (from the first request, when
        that came later, over a second at least), to a tenth of a second."""
        if self.first_429_ns is None:
            return None
        last = self.first_429_ns // SLOT_NS
        first = max(last - OFFERED_WINDOW + 1, last if self.first_slot is None else self.first_slot)
        sent = sum(self.sent.get(slot, 0) for slot in range(first, last + 1))
        return sent / max((last - first + 1) * SLOT_NS / NS, 1.0)  # (a burst in the first second: per that second)

    def figures(self) -> RateLimitFigures:
        count, low, high, total = self.retry_after
        return RateLimitFigures(
            responses_with_headers=self.with_headers,
            limits=dict(self.limits),
            lowest_remaining={
                bucket: BucketLow(share=share, remaining=remaining, limit=limit, reset=reset)
                for bucket, (share, remaining, limit, reset) in sorted(self.lowest.items())
            },
            rate_limited=self.rate_limited,
            first_429_at=None if self.first_429_ns is None else self.first_429_ns / NS,
            offered_rps_at_first_429=self.offered_at_first_429(),
            retry_after_s=RetryAfter(count=int(count), min=low, max=high, mean=total / count) if count else None,
        )

    def encode(self) -> dict[str, Any]:
        return {
            "with_headers": self.with_headers,
            "limits": self.limits,
            "lowest": self.lowest,
            "rate_limited": self.rate_limited,
            "first_429_ns": self.first_429_ns,
            "retry_after": self.retry_after if self.retry_after[0] else None,
            "sent": {str(slot): n for slot, n in self.sent.items()},
            "first_slot": self.first_slot,
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> ModelHeadroom:
        headroom = cls(
            with_headers=data["with_headers"],
            limits=dict(data["limits"]),
            lowest={bucket: tuple(values) for bucket, values in data["lowest"].items()},
            rate_limited=data["rate_limited"],
            first_429_ns=data["first_429_ns"],
            sent=Counter({int(slot): n for slot, n in data["sent"].items()}),
            first_slot=data["first_slot"],
        )
        if data["retry_after"]:
            headroom.retry_after = list(data["retry_after"])
        return headroom

    @property
    def seen(self) -> bool:
        """Anything to say: rate-limit headers or 429s."""
        return bool(self.with_headers or self.rate_limited)


class Headroom:
    """Every model's rate-limit figures of a run (the whole run: not only the measurement window)."""

    def __init__(self) -> None:
        self.models: dict[str, ModelHeadroom] = {}

    def add(self, record: TimingRecord) -> None:
        model = self.models.get(record.model)
        if model is None:
            model = self.models[record.model] = ModelHeadroom()
        model.add(record)

    def encode_delta(self) -> dict[str, dict[str, Any]]:
        """A worker's report: what was added since the last one (then nothing here)."""
        delta = {model: headroom.encode() for model, headroom in self.models.items()}
        self.models = {}
        return delta

    def merge_encoded(self, delta: dict[str, dict[str, Any]]) -> None:
        for model, data in delta.items():
            self.models.setdefault(model, ModelHeadroom()).merge(ModelHeadroom.decode(data))

    def figures(self) -> dict[str, RateLimitFigures]:
        return {model: headroom.figures() for model, headroom in sorted(self.models.items()) if headroom.seen}
