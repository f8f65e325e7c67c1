"""Latency/fault profiles for the emulator: YAML schema, defaults, validation.

A profile file looks like::

    seed: 1                      # --seed overrides
    ping: true                   # send a `ping` event after message_start
    models:
      default:                   # used for any model not listed
        ttft_ms: 300             # base time to first output token (first text when not thinking)
        ttft_ms_per_1k_input: 20 # added per 1000 input tokens
        output_tps: 80           # output tokens per second (thinking and text)
        jitter: 0.1              # relative, uniform +-, on ttft and on each inter-chunk gap (0..0.5)
        output_tokens: {mean: 150, sd: 40, min: 1, max: null}
        tokens_per_chunk: 1      # tokens carried by each thinking/text delta
        thinking_tokens: 40      # thinking tokens when thinking is on (capped by budget_tokens)
        empty_first_delta: false # send an empty text_delta before the first real one
        display_name: null
        faults: {...}            # per-model override of the global faults, field by field
        rate_limits: {...}       # per-model override of the global rate limits, field by field
        fast_output_factor: 2.5  # fast mode (a request's `speed: fast`): output_tps times this
        standard_only_ttft_ms: 0 # added to TTFT of a request with `service_tier: standard_only`
        first_output_grid_ms: null # the first output moves to the next multiple of this on the
                                 # monotonic clock: streams that arrive within one step all send their
                                 # first text in the same millisecond (a burst, for benchmarks)
        capacity:                # optional: requests served at once, the others queue
          concurrency: 8         #   first come first served (their TTFT grows by the wait)
          queue: 16              #   queued at most; past it 529 overloaded_error (null: no bound)
      claude-haiku-4-5: {ttft_ms: 250, output_tps: 150}   # missing keys come from `default`
    faults:                      # probabilities per request
      rate_limited: 0.0          # 429 rate_limit_error (+ retry-after) before the stream starts
      overloaded: 0.0            # 529 overloaded_error
      server_error: 0.0          # 500 api_error
      stream_error: 0.0          # 200 stream, then `event: error` (overloaded_error) after some text
      disconnect: 0.0            # 200 stream, then the socket is aborted after some text
      stall: 0.0                 # probability of one pause of `stall_ms` mid-stream
      stall_ms: 0
      retry_after_s: 1           # value of the retry-after header on injected 429/529
    rate_limits:                 # optional token buckets, each model its own; a limit given is enforced
      requests_per_minute: null
      input_tokens_per_minute: null
      output_tokens_per_minute: null   # charged up front from max_tokens, like the real API

Model entries inherit every key they do not set from `models.default` (which itself
defaults to the built-in values above); `faults` and `rate_limits` inside a model entry
override the global ones key by key. Every model listed (and `default`, for the others) has
its own rate-limit buckets and its own capacity, as the API's limits are per model. Unknown
keys are errors.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import yamlfile

__all__ = [
    "Capacity",
    "Faults",
    "ModelProfile",
    "OutputTokens",
    "Profile",
    "ProfileError",
    "RateLimits",
    "default_profile",
    "load_profile",
    "parse_profile",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputTokens(_Strict):
    mean: float = Field(150.0, ge=0)
    sd: float = Field(40.0, ge=0)
    min: int = Field(1, ge=1)
    max: int | None = Field(None, ge=1)


class Faults(_Strict):
    rate_limited: float = Field(0.0, ge=0, le=1)
    overloaded: float = Field(0.0, ge=0, le=1)
    server_error: float = Field(0.0, ge=0, le=1)
    stream_error: float = Field(0.0, ge=0, le=1)
    disconnect: float = Field(0.0, ge=0, le=1)
    stall: float = Field(0.0, ge=0, le=1)
    stall_ms: float = Field(0.0, ge=0)
    retry_after_s: int = Field(1, ge=0)


class RateLimits(_Strict):
    requests_per_minute: int | None = Field(None, ge=1)
    input_tokens_per_minute: int | None = Field(None, ge=1)
    output_tokens_per_minute: int | None = Field(None, ge=1)


class Capacity(_Strict):
    concurrency: int = Field(ge=1)
    queue: int | None = Field(None, ge=0)


class ModelProfile(_Strict):
    ttft_ms: float = Field(300.0, ge=0)
    ttft_ms_per_1k_input: float = Field(20.0, ge=0)
    output_tps: float = Field(80.0, gt=0)
    jitter: float = Field(0.1, ge=0, le=0.5)
    output_tokens: OutputTokens = Field(default_factory=OutputTokens)
    tokens_per_chunk: int = Field(1, ge=1, le=1000)
    thinking_tokens: int = Field(40, ge=0)
    empty_first_delta: bool = False
    display_name: str | None = None
    faults: Faults | None = None  # resolved (merged with the global faults) by Profile
    rate_limits: RateLimits | None = None  # resolved (merged with the global rate limits) by Profile
    capacity: Capacity | None = None
    fast_output_factor: float = Field(2.5, gt=0)  # fast mode (`speed: fast`): output_tps times this
    standard_only_ttft_ms: float = Field(0.0, ge=0)  # `service_tier: standard_only`: added to TTFT (the priority queue skipped)
    first_output_grid_ms: float | None = Field(None, gt=0)  # the first output aligned to this grid: bursts


class Profile(_Strict):
    seed: int = 1
    ping: bool = True
    models: dict[str, ModelProfile] = Field(default_factory=dict)
    faults: Faults = Field(default_factory=Faults)
    rate_limits: RateLimits | None = None

    def model_for(self, name: str) -> ModelProfile:
        """The profile of `name`, falling back to `default` (its `faults` already merged by parse_profile)."""
        mp = self.models.get(self.entry_of(name))
        return mp if mp is not None else ModelProfile()

    def entry_of(self, name: str) -> str:
        """The entry that serves model `name`: its own, or `default` (a bounded set of keys)."""
        return name if name in self.models else "default"


class ProfileError(Exception):
    """A user error in a profile file: one line, names the file and the field."""


_BUILTIN: dict[str, Any] = {
    "seed": 1,
    "models": {
        "default": {},
        "claude-haiku-4-5": {"ttft_ms": 250, "output_tps": 150, "display_name": "Claude Haiku 4.5"},
        "claude-sonnet-4-5": {"ttft_ms": 600, "output_tps": 70, "display_name": "Claude Sonnet 4.5"},
        "claude-opus-5-5": {"ttft_ms": 900, "output_tps": 50, "display_name": "Claude Opus 5.5"},
    },
}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _fmt_error(source: str, err: ValidationError) -> str:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e.get("loc", ())) or "(top level)"
    msg = e.get("msg", "invalid")
    more = len(err.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"invalid profile {source}: field '{loc}': {msg}{tail}"


def parse_profile(raw: Any, source: str = "<profile>") -> Profile:
    """Validate a parsed YAML document into a Profile with inheritance resolved."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ProfileError(f"invalid profile {source}: the top level must be a mapping")
    models_raw = raw.get("models", {}) or {}
    if not isinstance(models_raw, dict):
        raise ProfileError(f"invalid profile {source}: field 'models': must be a mapping of model name to settings")
    faults_raw = raw.get("faults", {}) or {}
    if not isinstance(faults_raw, dict):
        raise ProfileError(f"invalid profile {source}: field 'faults': must be a mapping")
    limits_raw = raw.get("rate_limits", {}) or {}
    if not isinstance(limits_raw, dict):
        raise ProfileError(f"invalid profile {source}: field 'rate_limits': must be a mapping")
    default_raw = models_raw.get("default", {}) or {}
    if not isinstance(default_raw, dict):
        raise ProfileError(f"invalid profile {source}: field 'models.default': must be a mapping")
    resolved: dict[str, Any] = {}
    for name, entry in models_raw.items():
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise ProfileError(f"invalid profile {source}: field 'models.{name}': must be a mapping")
        merged = entry if name == "default" else _deep_merge(default_raw, entry)
        mf = merged.get("faults")
        if mf is not None and not isinstance(mf, dict):
            raise ProfileError(f"invalid profile {source}: field 'models.{name}.faults': must be a mapping")
        mr = merged.get("rate_limits")
        if mr is not None and not isinstance(mr, dict):
            raise ProfileError(f"invalid profile {source}: field 'models.{name}.rate_limits': must be a mapping")
        merged = dict(merged)
        merged["faults"] = _deep_merge(faults_raw, mf or {})
        merged["rate_limits"] = _deep_merge(limits_raw, mr or {})
        resolved[str(name)] = merged
    if "default" not in resolved:
        resolved["default"] = {"faults": copy.deepcopy(faults_raw), "rate_limits": copy.deepcopy(limits_raw)}
    doc = dict(raw)
    doc["models"] = resolved
    try:
        return Profile.model_validate(doc)
    except ValidationError as err:
        raise ProfileError(_fmt_error(source, err)) from None


def default_profile() -> Profile:
    """The built-in profile: default + haiku-4-5 / sonnet-4-5 / opus-5-5, no faults."""
    return parse_profile(copy.deepcopy(_BUILTIN), "<built-in>")


def load_profile(path: str | Path) -> Profile:
    """Read and validate a YAML profile; raise ProfileError with a one-line message."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ProfileError(f"cannot read profile {p}: {err.strerror or err}") from None
    try:
        raw = yamlfile.load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "parse error"
        raise ProfileError(f"invalid profile {p}: YAML {problem}{where}") from None
    return parse_profile(raw, str(p))
