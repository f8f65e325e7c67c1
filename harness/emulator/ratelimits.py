"""The emulator's rate limits: token buckets and the `anthropic-ratelimit-*` headers.

Three buckets refill continuously per minute: requests, input tokens and output tokens
(charged up front from max_tokens, like the real API); each model has its own, as the API's
limits are per model. A limit set in the profile's `rate_limits` (the model's, else the
global one) is enforced (a request it cannot admit is answered 429 with retry-after);
the others only feed the headers with plausible values. Times are `perf_counter_ns`.
"""

from __future__ import annotations

import time

from harness.emulator.profile import RateLimits
from harness.emulator.wire import rfc3339

perf_ns = time.perf_counter_ns

# (limit, remaining, reset) header names of the requests, input-tokens and output-tokens buckets
RATE_LIMIT_HEADER_NAMES = tuple(
    (f"anthropic-ratelimit-{name}-limit", f"anthropic-ratelimit-{name}-remaining", f"anthropic-ratelimit-{name}-reset")
    for name in ("requests", "input-tokens", "output-tokens")
)


class _Bucket:
    """One token bucket of `per_minute` capacity, refilled continuously."""

    __slots__ = ("cap", "enforce", "level", "rate", "t")

    def __init__(self, per_minute: int, enforce: bool, now: int) -> None:
        self.cap = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60e9  # per ns
        self.t = now
        self.enforce = enforce

    def refill(self, now: int) -> None:
        if now > self.t:
            self.level = min(self.cap, self.level + (now - self.t) * self.rate)
            self.t = now

    def wait_s(self, n: float) -> float:
        """Seconds until `n` can be taken (0 when it can now, or when the limit is not enforced)."""
        if not self.enforce or self.level >= n:
            return 0.0
        if n > self.cap:
            return 60.0
        return (n - self.level) / (self.rate * 1e9)

    def take(self, n: float) -> None:
        self.level = max(0.0, self.level - n)

    def reset_s(self) -> float:
        """Seconds until the bucket is full again."""
        return (self.cap - self.level) / (self.rate * 1e9)


class RateLimiter:
    """Token buckets for requests, input tokens and output tokens (charged from max_tokens).

    Limits set in the profile's `rate_limits` are enforced; the others only feed the
    `anthropic-ratelimit-*` headers with plausible values.
    """

    DEFAULTS = (4000, 2_000_000, 400_000)

    def __init__(self, rl: RateLimits | None) -> None:
        now = perf_ns()
        vals = (
            (rl.requests_per_minute if rl else None),
            (rl.input_tokens_per_minute if rl else None),
            (rl.output_tokens_per_minute if rl else None),
        )
        self.req, self.inp, self.out = (_Bucket(v if v is not None else d, v is not None, now) for v, d in zip(vals, self.DEFAULTS))

    def admit(self, input_tokens: int, max_tokens: int) -> tuple[float, list[tuple[str, str]]]:
        """Return (retry_after_s, headers); retry_after_s > 0 means answer 429."""
        now = perf_ns()
        for b in (self.req, self.inp, self.out):
            b.refill(now)
        wait = max(self.req.wait_s(1), self.inp.wait_s(input_tokens), self.out.wait_s(max_tokens))
        if wait <= 0:
            self.req.take(1)
            self.inp.take(input_tokens)
            self.out.take(max_tokens)
        return wait, self.headers()

    def headers(self) -> list[tuple[str, str]]:
        """The `anthropic-ratelimit-*` headers of the buckets' current levels."""
        wall = time.time()
        inp, out = self.inp, self.out
        h: list[tuple[str, str]] = []
        for (limit, remaining, reset), b in zip(RATE_LIMIT_HEADER_NAMES, (self.req, inp, out)):
            h.append((limit, str(int(b.cap))))
            h.append((remaining, str(int(b.level))))
            h.append((reset, rfc3339(int(wall + b.reset_s()))))
        h.append(("anthropic-ratelimit-tokens-limit", str(int(inp.cap + out.cap))))
        h.append(("anthropic-ratelimit-tokens-remaining", str(int(inp.level + out.level))))
        h.append(("anthropic-ratelimit-tokens-reset", rfc3339(int(wall + max(inp.reset_s(), out.reset_s())))))
        return h
