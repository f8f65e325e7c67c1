"""The emulator's prompt cache, as the API's behaves (in usage and in time).

A request's prefix up to its last `cache_control` breakpoint (validate.cache_prefix) of at
least `MIN_TOKENS` is written to the cache the first time it is seen (cache_creation_input_tokens)
and read from it (cache_read_input_tokens) by a later request of the same model within `TTL_S`
of the prefix's last use; usage.input_tokens is the rest. Tokens read cost no processing time:
the TTFT's per-input-token part counts the others only. The cache is the process's, kept for
the distinct prefixes of the last `TTL_S` (older ones are dropped as new ones come).
"""

from __future__ import annotations

from harness.emulator.wire import InputUsage

MIN_TOKENS = 1024  # the API's least cacheable prompt (Sonnet, Opus)
TTL_S = 300  # the API's default (5 min), refreshed on each use
NS = 1_000_000_000


class PromptCache:
    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_ns = int(ttl_s * NS)
        self._until: dict[tuple[str, str], int] = {}  # (model, prefix digest) -> when it expires

    def usage(self, model: str, input_tokens: int, prefix: tuple[str, int] | None, now_ns: int) -> InputUsage:
        """A request's input tokens: processed, written to the cache, read from it (and the
        cache's state after it)."""
        if prefix is None or prefix[1] < MIN_TOKENS:
            return InputUsage(input_tokens)
        key, tokens = (model, prefix[0]), prefix[1]
        hit = self._until.get(key, 0) > now_ns
        if not hit and len(self._until) > 10_000:  # drop what has expired
            self._until = {k: until for k, until in self._until.items() if until > now_ns}
        self._until[key] = now_ns + self.ttl_ns
        if hit:
            return InputUsage(input_tokens - tokens, 0, tokens)
        return InputUsage(input_tokens - tokens, tokens, 0)
