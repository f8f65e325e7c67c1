"""Scenario files: what a load test sends (model mix, prompt mix, streaming share, load).

A scenario is a YAML file validated with pydantic v2. Every user error (missing file,
YAML syntax, unknown or missing fields, out-of-range values, inconsistent settings)
becomes one :class:`ScenarioError` whose ``str()`` is the complete message, one problem
per line, each line shaped ``<file>: <field path>: <what is wrong and what is allowed>``::

    scenarios/x.yaml: prompts[1].max_tokens: must be >= 1 (got 0)
    scenarios/x.yaml: strem: unknown field; allowed: name, ..., stream (did you mean 'stream'?)

Prompt content, in short (see ``scenarios/demo.yaml`` for a commented example):

* ``messages``: the conversation, roles ``user``/``assistant``, first one ``user``;
  content a non-empty string or a list of content blocks (passed through unchanged,
  e.g. ``{type: text, text: ..., cache_control: {type: ephemeral}}``). Consecutive
  turns of the same role are allowed (the API merges them); a final ``assistant`` turn
  is a prefill.
* ``input_tokens``: a deterministic synthetic text of about that many tokens (4 bytes per
  token) becomes the first user message. With ``messages`` as well, the synthetic text
  is *prepended* to the first user message as its own text block (a long context
  followed by a real question). ``cache_synthetic: true`` marks that block with
  ``cache_control: {type: ephemeral}`` (the prompt-caching lever).

This module owns the schema and its loading; :mod:`harness.scenario_errors` words the
messages and :class:`harness.sampler.Sampler` chooses what each request sends.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from harness import yamlfile
from harness.content import AttachmentError, check_content, files_read
from harness.conversation import DEFAULT_TOOL_RESULT, ConversationSpec, checked_tools
from harness.credentials import checked_headers
from harness.datasets import DatasetError, DatasetRef, Entry, datasets_as_prompts, load_entries
from harness.fields import StrictModel, parse_timespan
from harness.load import Load
from harness.platforms import Platform
from harness.pricing import Price
from harness.scenario_errors import field_error, short, validation_problems, yaml_problem
from harness.sweep import Sweep, sweep_problem, with_first_rate
from harness.trace import trace_as_prompt
from harness.variants import Variant, check_variants

__all__ = [
    "DEFAULT_ANTHROPIC_VERSION",
    "DEFAULT_TIMEOUT_S",
    "Load",
    "Message",
    "ModelChoice",
    "Price",
    "Prompt",
    "Scenario",
    "ScenarioError",
    "Thinking",
    "load_scenario",
    "parse_timespan",
    "scenario_from_dict",
]

DEFAULT_ANTHROPIC_VERSION = "2026-10-21"
"""What anthropic SDK 2.x sends; it rejects temperature, top_p and top_k."""

SAMPLING_PARAMS_VERSION = "2023-06-01"
"""An ``anthropic-version`` that still accepts temperature / top_p / top_k."""

DEFAULT_TIMEOUT_S = 600.0

# Body fields the harness sets itself; ``extra`` may not override them.
RESERVED_BODY_FIELDS = ("model", "messages", "max_tokens", "stream", "system", "thinking", "temperature", "tools")
# Sampling parameters rejected by anthropic-version >= 2026-10-21.
SAMPLING_PARAMS = ("temperature", "top_p", "top_k")
THINKING_MIN_BUDGET = 1024


class ScenarioError(Exception):
    """A user error in a scenario. ``str(err)`` is the complete, user-facing message.

    ``source`` is the file (or label) and ``problems`` the list of ``(field_path, message)``
    pairs (field_path is ``""`` for file-level problems).
    """

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = list(problems)
        lines = [f"{source}: {path}: {msg}" if path else f"{source}: {msg}" for path, msg in self.problems]
        super().__init__("\n".join(lines))

    def __str__(self) -> str:  # the message, never the repr of args
        return self.args[0] if self.args else ""


# --------------------------------------------------------------------------- helpers


def _check_share(value: Any, allow_bool_passthrough: bool) -> Any:
    """A streaming share: a number in 0..1, or a bool (true = 1, false = 0)."""
    if isinstance(value, bool):
        return value if allow_bool_passthrough else float(value)
    if isinstance(value, (int, float)):
        if value != value or not 0 <= value <= 1:  # NaN or out of range
            raise ValueError(f"must be a share between 0 and 1, or true/false (got {value!r})")
        return float(value)
    raise ValueError(f"must be a share between 0 and 1, or true/false (got {value!r})")


# --------------------------------------------------------------------------- models


class ModelChoice(StrictModel):
    """One model in the mix. ``models:`` also accepts a bare model name (weight 1)."""

    model: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)


class Thinking(StrictModel):
    """Extended thinking, passed through as the request's ``thinking`` object."""

    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int | None = Field(default=None, ge=1)
    display: str | None = Field(default=None, min_length=1)

    def to_body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Message(StrictModel):
    role: Literal["user", "assistant"]
    content: Any

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> Any:
        return check_content(value)


class Timeouts(StrictModel):
    """A request's time limits; each gives the outcome `timeout` with its own error type."""

    connect_s: float = Field(default=10.0, gt=0)  # `connect_timeout`: the TCP (and TLS) connection
    first_byte_s: float = Field(default=60.0, gt=0)  # `first_byte_timeout`: a stream's response headers
    idle_s: float = Field(default=60.0, gt=0)  # `idle_timeout`: a stream without an event but pings
    total_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)  # `timeout`: the whole request


class FailFast(StrictModel):
    """Stop the run (exit 2) when every request of its first seconds failed with one cause."""

    within_s: float = Field(default=10.0, gt=0)


class Backoff(StrictModel):
    """A user that met `after` identical failures in a row waits before its next request,
    0.5 s at first, doubling up to `max_s`; a different outcome resets it."""

    after: int = Field(default=3, ge=1)
    max_s: float = Field(default=5.0, gt=0)


RetryOn = Literal["rate_limited", "overloaded", "api_error", "timeout", "connection_error", "protocol_error"]
DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("rate_limited", "overloaded", "connection_error")


class Retries(StrictModel):
    """A production client's retries (off by default): a failed attempt whose outcome is one of
    `on` is tried again, up to `max` more times, after a wait of `first_wait_s` doubling up to
    `max_wait_s` (with jitter, as the SDK does), or the server's `retry-after` (up to 60 s) when
    `wait_retry_after`. Every attempt is a request sent and recorded; the summary adds the
    requests as the application sees them."""

    max: int = Field(default=2, ge=1, le=10)
    on: list[RetryOn] = Field(default_factory=lambda: list(DEFAULT_RETRY_ON), min_length=1)
    wait_retry_after: bool = True
    first_wait_s: float = Field(default=0.5, ge=0, le=60)
    max_wait_s: float = Field(default=8.0, ge=0, le=600)


INHERIT: Final = "inherit"


class PromptFailures(StrictModel):
    """A prompt's own failure policy: what it gives overrides the scenario's (`inherit`, the
    default, takes the scenario's)."""

    fail_fast: Literal["inherit"] | None = INHERIT  # null: this prompt's failures do not count
    backoff: Backoff | Literal["inherit"] | None = INHERIT
    retries: Retries | Literal["inherit"] | None = INHERIT


class Failures(StrictModel):
    """What the harness does when requests fail (`null` turns a part off)."""

    fail_fast: FailFast | None = Field(default_factory=FailFast)
    backoff: Backoff | None = Field(default_factory=Backoff)
    retries: Retries | None = None


class Prompt(StrictModel):
    """One prompt in the mix. Needs ``messages`` or ``input_tokens`` (or both: the
    synthetic context is prepended to the first user message)."""

    name: str = Field(min_length=1)
    weight: float = Field(default=1.0, gt=0)
    system: Any = None
    messages: list[Message] | None = Field(default=None, min_length=1)
    input_tokens: int | None = Field(default=None, ge=1)
    cache_synthetic: bool = False
    max_tokens: int = Field(ge=1)
    temperature: float | None = Field(default=None, ge=0, le=1)
    thinking: Thinking | None = None
    stream: bool | float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0)
    failures: PromptFailures = Field(default_factory=lambda: PromptFailures())
    dataset: DatasetRef | None = None  # each request one of the file's (its max_tokens: for entries without their own)
    conversation: ConversationSpec | None = None  # sent as sessions of several turns (harness/conversation.py)
    tools: list[dict[str, Any]] | None = Field(default=None, min_length=1)  # tool definitions (an entry's own win)
    tool_result: str = Field(default=DEFAULT_TOOL_RESULT, min_length=1)  # the canned answer to each tool call

    _tools = field_validator("tools")(checked_tools)

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if isinstance(value, str) and value != value.strip():
            raise ValueError(f"must not start or end with spaces (got {value!r})")
        return value

    @field_validator("system", mode="before")
    @classmethod
    def _system(cls, value: Any) -> Any:
        return None if value is None else check_content(value)

    @field_validator("stream", mode="before")
    @classmethod
    def _stream(cls, value: Any) -> Any:
        return None if value is None else _check_share(value, allow_bool_passthrough=True)

    @model_validator(mode="after")
    def _consistent(self) -> Prompt:
        if self.dataset is not None and (self.messages is not None or self.input_tokens is not None):
            raise field_error("dataset", "a dataset's entries are the conversations: leave out 'messages' and 'input_tokens'")
        if self.messages is None and self.input_tokens is None and self.dataset is None:
            raise field_error("", "needs 'messages' (the conversation), 'input_tokens' (a synthetic prompt) or 'dataset' (a file)")
        if self.messages is not None and self.messages[0].role != "user":
            raise field_error("messages[0].role", f"the first message must be 'user' (got {self.messages[0].role!r})")
        if self.cache_synthetic and self.input_tokens is None:
            raise field_error("cache_synthetic", "only applies with 'input_tokens'")
        th = self.thinking
        if th is not None:
            if th.type == "enabled":
                if th.budget_tokens is None:
                    raise field_error("thinking.budget_tokens", "required when thinking type is 'enabled'")
                if th.budget_tokens < THINKING_MIN_BUDGET:
                    raise field_error("thinking.budget_tokens", f"must be >= {THINKING_MIN_BUDGET} (got {th.budget_tokens})")
                if th.budget_tokens >= self.max_tokens:
                    raise field_error(
                        "thinking.budget_tokens",
                        f"must be < max_tokens ({self.max_tokens}) (got {th.budget_tokens})",
                    )
            elif th.budget_tokens is not None:
                raise field_error("thinking.budget_tokens", f"only allowed with type 'enabled' (got type {th.type!r})")
            if th.type != "disabled" and self.temperature is not None and self.temperature != 1:
                raise field_error("temperature", f"the API only accepts temperature 1 with thinking on (got {self.temperature})")
        for key in self.extra:
            if key in RESERVED_BODY_FIELDS:
                hint = "set by the sampler" if key in ("model", "stream") else f"use the prompt's '{key}' field"
                raise field_error(f"extra.{key}", f"not allowed in extra ({hint})")
        return self

    @property
    def stream_share(self) -> float | None:
        return None if self.stream is None else float(self.stream)


class SloLimits(StrictModel):
    """Service-level objectives, checked at the end on the precise (HDR) statistics."""

    ttft_p50_ms: float | None = Field(default=None, gt=0)
    ttft_p90_ms: float | None = Field(default=None, gt=0)
    ttft_p95_ms: float | None = Field(default=None, gt=0)
    ttft_p99_ms: float | None = Field(default=None, gt=0)
    latency_p50_ms: float | None = Field(default=None, gt=0)
    latency_p90_ms: float | None = Field(default=None, gt=0)
    latency_p95_ms: float | None = Field(default=None, gt=0)
    latency_p99_ms: float | None = Field(default=None, gt=0)
    error_rate: float | None = Field(default=None, ge=0, le=1)
    rate_limited_share: float | None = Field(default=None, ge=0, le=1)
    overloaded_share: float | None = Field(default=None, ge=0, le=1)
    min_output_tps: float | None = Field(default=None, gt=0)
    min_requests: int | None = Field(default=None, ge=1)


class Slos(SloLimits):
    """Global objectives, plus per-model ones under `models`."""

    models: dict[str, SloLimits] = Field(default_factory=dict)


class AbortRule(StrictModel):
    """Stop early when a breach cannot recover, as k6's abortOnFail does."""

    error_rate: float = Field(gt=0, le=1)
    window_s: float = Field(default=30.0, gt=0)
    min_requests: int = Field(default=20, ge=1)


RegressionMetric = Literal[
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
]
DEFAULT_REGRESSION_METRICS: tuple[RegressionMetric, ...] = ("ttft_p50_ms", "ttft_p95_ms", "latency_p50_ms", "latency_p95_ms")


class Regression(StrictModel):
    """How much worse than a baseline run (`--baseline`) a percentile may get."""

    threshold_pct: float = Field(default=10.0, gt=0)
    metrics: list[RegressionMetric] = Field(default_factory=lambda: list(DEFAULT_REGRESSION_METRICS))


MAX_STATS_GROUPS = 256  # (model, prompt, mode) groups a run keeps statistics for


class Scenario(StrictModel):
    """A validated scenario. Build one with :func:`load_scenario` or :func:`scenario_from_dict`."""

    name: str = Field(min_length=1)
    description: str | None = None
    anthropic_version: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")
    beta: list[str] = Field(default_factory=list)
    models: list[ModelChoice] = Field(min_length=1)
    prompts: list[Prompt] = Field(min_length=1)
    stream: float = Field(default=1.0, ge=0, le=1)
    seed: int = 0
    input_tokens_by: Literal["count_tokens", "bytes"] = "count_tokens"  # how `input_tokens` is sized (harness/calibration.py)
    timeouts: Timeouts = Field(default_factory=Timeouts)  # `timeout_s: N` is read as timeouts.total_s
    failures: Failures = Field(default_factory=Failures)
    prices: dict[str, Price] = Field(default_factory=dict)
    load: Load | None = None
    slos: Slos = Field(default_factory=Slos)
    abort: AbortRule | None = None
    regression: Regression = Field(default_factory=Regression)
    budget_usd: float | None = Field(default=None, gt=0)
    sweep: Sweep | None = None
    variants: list[Variant] = Field(default_factory=list)  # the levers compared in one run (harness/variants.py)
    headers: dict[str, str] = Field(default_factory=dict)  # a gateway's headers, ${NAME} from the environment (credentials.py)
    platform: Platform = Field(default_factory=Platform)  # the API, or Vertex AI (harness/platforms.py)

    _source: str = PrivateAttr(default="<scenario>")
    _datasets: dict[str, list[Entry]] = PrivateAttr(default_factory=dict)  # a dataset prompt's entries, by its name
    _dataset_split: tuple[int, int] = PrivateAttr(default=(0, 1))  # a worker's share of an order: (index, count)
    _input_bytes: dict[tuple[str, str, str], int] = PrivateAttr(default_factory=dict)  # (model, prompt, variant): calibration.py
    _variant_prompts: dict[tuple[str, str], Prompt] = PrivateAttr(default_factory=dict)  # (variant, prompt): as sent

    _headers = field_validator("headers")(checked_headers)

    @field_validator("anthropic_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        # YAML reads an unquoted 2023-06-01 as a date
        if isinstance(value, (date, datetime)):
            return value.strftime("%Y-%m-%d")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"model": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("stream", mode="before")
    @classmethod
    def _stream(cls, value: Any) -> Any:
        return _check_share(value, allow_bool_passthrough=False)

    @field_validator("beta", mode="before")
    @classmethod
    def _beta(cls, value: Any) -> Any:
        if isinstance(value, str):  # a single header value
            value = [value]
        if isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, str) and (not v.strip() or "," in v or v != v.strip()):
                    raise ValueError(f"[{i}]: one beta name per item, no commas or spaces (got {v!r})")
        return value

    def backoff_for(self, prompt: Prompt | None) -> Backoff | None:
        """The backoff rule after a request of `prompt` (its own, if it gives one; None: a prompt
        built in code, which takes the scenario's)."""
        own = prompt.failures.backoff if prompt is not None else INHERIT
        return self.failures.backoff if own == INHERIT else own

    def retries_for(self, prompt: Prompt | None) -> Retries | None:
        """The retry rule of `prompt`'s requests (as `backoff_for`)."""
        own = prompt.failures.retries if prompt is not None else INHERIT
        return self.failures.retries if own == INHERIT else own

    @property
    def retries(self) -> bool:
        """Does any prompt retry? (the summary then shows requests as the application sees them)"""
        return any(self.retries_for(prompt) is not None for prompt in self.prompts)

    def counts_for_fail_fast(self, prompt: Prompt | None) -> bool:
        return prompt is None or prompt.failures.fail_fast == INHERIT

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        """The shorter spellings, written out: `timeout_s`, the top-level `datasets:` (prompts
        after the file's own), an open loop swept by rates starting at the sweep's first, and a
        trace replay's trace as its one prompt."""
        if not isinstance(data, dict):
            return data
        data, problem = datasets_as_prompts(with_first_rate(_timeout_written_out(data)))
        if problem is None:
            data, problem = trace_as_prompt(data)
        if problem is not None:
            raise field_error(*problem)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        modes = 2 if 0 < self.stream < 1 or any(v.stream is not None for v in self.variants) else 1
        models = {m.model for m in self.models} | {v.model for v in self.variants if v.model}
        groups = len(models) * len(self.prompts) * modes
        if groups > MAX_STATS_GROUPS:
            raise field_error(
                "prompts",
                f"{len(models)} model(s) x {len(self.prompts)} prompt(s) x {modes} mode(s) = {groups:,} stats groups; "
                f"at most {MAX_STATS_GROUPS} (each keeps its own latency histograms, about 0.75 MB)",
            )
        seen: dict[str, int] = {}
        for i, p in enumerate(self.prompts):
            if p.name in seen:
                raise field_error(f"prompts[{i}].name", f"duplicate prompt name {p.name!r} (also prompts[{seen[p.name]}])")
            seen[p.name] = i
        seen = {}
        for i, m in enumerate(self.models):
            if m.model in seen:
                raise field_error(f"models[{i}].model", f"duplicate model {m.model!r} (also models[{seen[m.model]}])")
            seen[m.model] = i
        load = self.load or Load()
        slos = bool(self.slos.model_dump(exclude_none=True, exclude={"models"})) or any(
            limits.model_dump(exclude_none=True) for limits in self.slos.models.values()
        )
        if self.sweep is not None and load.trace is not None:
            raise field_error("sweep", "a trace replay sets its own times: a sweep cannot step its load")
        if self.sweep is not None and (problem := sweep_problem(self.sweep, load, slos)):
            raise field_error(*problem)
        if self.sweep is None and not load.open_loop and load.warmup is not None:
            raise field_error("load.warmup", "needs `arrival: poisson` or `arrival: constant` (an open loop), or a `sweep` (each step's)")
        if self.effective_anthropic_version >= DEFAULT_ANTHROPIC_VERSION:
            for i, p in enumerate(self.prompts):
                used = (["temperature"] if p.temperature is not None else []) + [k for k in SAMPLING_PARAMS if k in p.extra]
                for key in used:
                    where = key if key == "temperature" else f"extra.{key}"
                    raise field_error(
                        f"prompts[{i}].{where}",
                        f'needs anthropic_version: "{SAMPLING_PARAMS_VERSION}" at the top level '
                        f"(anthropic-version {self.effective_anthropic_version} rejects temperature, top_p and top_k)",
                    )
        self._variant_prompts = check_variants(self) if self.variants else {}
        return self

    # ------------------------------------------------------------------ helpers

    def __eq__(self, other: object) -> bool:
        # fields only: where it was read from and the datasets read do not count
        if not isinstance(other, Scenario):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    def __hash__(self) -> int:
        return hash(self.digest())

    @property
    def effective_anthropic_version(self) -> str:
        return self.anthropic_version or DEFAULT_ANTHROPIC_VERSION

    @property
    def source(self) -> str:
        """The file (or label) this scenario was read from."""
        return self._source

    def prompt(self, name: str) -> Prompt:
        for p in self.prompts:
            if p.name == name:
                return p
        raise KeyError(name)

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def digest(self) -> str:
        """sha256 hex of the canonical JSON: equal for equal scenarios, whatever the file layout."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- loading


def _timeout_written_out(data: dict[str, Any]) -> dict[str, Any]:
    """`timeout_s: N` (the older spelling) is `timeouts: {total_s: N}`."""
    if "timeout_s" not in data:
        return data
    data = dict(data)
    total = data.pop("timeout_s")
    timeouts = data.get("timeouts")
    if timeouts is None:
        data["timeouts"] = {"total_s": total}
    elif isinstance(timeouts, dict):
        if "total_s" in timeouts and timeouts["total_s"] != total:
            raise field_error("timeout_s", "give the total time limit once: timeout_s or timeouts.total_s")
        data["timeouts"] = {**timeouts, "total_s": total}
    return data


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file. Any problem raises :class:`ScenarioError`."""
    source = str(path)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(source, [("", "file not found")]) from None
    except IsADirectoryError:
        raise ScenarioError(source, [("", "is a directory, not a scenario file")]) from None
    except PermissionError:
        raise ScenarioError(source, [("", "permission denied")]) from None
    except OSError as exc:
        raise ScenarioError(source, [("", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [("", f"not UTF-8 text (byte {exc.start})")]) from None
    try:
        data = yamlfile.load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [("", yaml_problem(exc))]) from None
    if data is None:
        raise ScenarioError(source, [("", "the file is empty; a scenario needs at least name, models and prompts")])
    try:
        data = files_read(data, p.parent)
    except AttachmentError as exc:
        raise ScenarioError(source, [exc.args]) from None
    scenario = scenario_from_dict(data, source=source)
    own = len(data.get("prompts") or []) if isinstance(data, dict) else 0  # then those of `datasets:`
    for index, prompt in enumerate(scenario.prompts):
        if prompt.dataset is not None:
            try:
                scenario._datasets[prompt.name] = load_entries(p.parent / prompt.dataset.path, prompt.dataset.format, prompt.dataset.column)
            except DatasetError as exc:
                where = f"prompts[{index}].dataset.path" if index < own else f"datasets[{index - own}].path"
                where = "load.trace.path" if prompt.dataset.format == "trace" and scenario.load and scenario.load.trace else where
                raise ScenarioError(source, [(where, str(exc))]) from None
    return scenario


def scenario_from_dict(data: dict, source: str = "<scenario>") -> Scenario:
    """Validate a mapping (e.g. parsed YAML or ``Scenario.model_dump(mode="json")``)."""
    if not isinstance(data, dict):
        raise ScenarioError(
            source, [("", f"the top level must be a mapping of fields (name, models, prompts, ...), got {type(data).__name__}")]
        )
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ScenarioError(source, [("", f"field names must be strings (got {short(bad_keys[0])})")])
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, validation_problems(exc, Scenario)) from None
    scenario._source = source
    return scenario
