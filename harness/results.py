"""The typed result of a run: the summary every output reads.

One pydantic model, versioned, from which the console table, the JSON summary
(`--summary-json`, its JSON Schema in docs/summary.schema.json is generated from this
module), JUnit, Markdown, the HTML report, the web UI and the `--baseline` comparison are
all made. Each derived fact (a share, an error rate, whether a cost is known) is defined
once here, as a property of the figures it derives from.

Version history: 1 had no measurement window (accounting: requests, locust_requests,
records), no split by mode, no first-thinking percentiles and untyped SLO results; a
version-1 file still loads (for `--baseline`), upgraded on the way in.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.timing import CANCELLED, OK
from harness.variant_figures import Variants

SCHEMA: Final = "claude-harness-summary"
SCHEMA_VERSION: Final = 2
READABLE_VERSIONS = (1, 2)
STAMPED_READS = "reads of plain-HTTP connections: kernel (with its stamp), user (none came: stamped when read), clamped (the clock stepped)"


class InputError(Exception):
    """A bad input file: one line for the user."""


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


# --- figures of a group of requests ------------------------------------------------------------
class Percentiles(_Result):
    """A distribution's figures from its HDR histogram (3 significant digits)."""

    count: int
    min: float
    max: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float


class Histograms(_Result):
    """The HDR histograms themselves (base64, compressed): what a later `--baseline` compares."""

    ttft: str
    latency: str


class Application(_Result):
    """With retries (the scenario's `failures.retries`): the requests as the application sees
    them, one per request however many attempts it took. The group's own figures count every
    attempt (each is a request sent, and a failed one stays a failure there)."""

    requests: int = Field(ge=0)
    failures: int = Field(ge=0, description="requests whose last attempt failed")
    outcomes: dict[str, int] = Field(description="requests by their last attempt's outcome; cancelled: cut by the stop, in a wait too")
    attempts: int = Field(ge=0, description="the attempts these requests took")
    retried: int = Field(ge=0, description="requests that took more than one attempt")
    latency_ms: Percentiles | None = Field(description="from the first attempt's start to the last one's end, waits included")
    ttft_ms: Percentiles | None = Field(description="from the first attempt's start to the first text of the last one")


class FromSchedule(_Result):
    """In an open loop: the times from when each request was due, what a user of the service
    felt (the SLOs judge these), and how late the requests were sent."""

    send_lag_ms: Percentiles | None = Field(description="from the time a request was due to its (first attempt's) send")
    latency_ms: Percentiles | None = Field(description="from the time a request was due to its last attempt's end")
    ttft_ms: Percentiles | None = Field(description="from the time a request was due to the first text of its last attempt")


class Group(_Result):
    """The figures of one group of requests: the whole run, a model, a mode or a label.

    Requests count every request of the measurement window, those cut by the stop
    (`cancelled`) included, as Locust's tables do; percentiles come from successful requests
    only; shares and the error rate are taken over the *judged* requests (the cancelled ones
    say nothing about the service)."""

    requests: int = Field(ge=0)
    failures: int = Field(ge=0)
    outcomes: dict[str, int] = Field(description="requests by outcome class (non-zero classes only)")
    ttft_ms: Percentiles | None = Field(description="time to first text token, streamed requests only")
    first_thinking_ms: Percentiles | None = Field(default=None, description="time to first thinking content")
    latency_ms: Percentiles | None
    output_tps: Percentiles | None = Field(description="output tokens per second after the first token")
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0, description="cost of the priced requests")
    unpriced_requests: int = Field(default=0, ge=0, description="requests of models without a price: not in cost_usd")
    hdr: Histograms | None = None
    application: Application | None = Field(default=None, description="with retries: the requests as the application sees them")
    from_schedule: FromSchedule | None = Field(default=None, description="in an open loop: the times from when each request was due")

    def count(self, outcome: str) -> int:
        return self.outcomes.get(outcome, 0)

    @property
    def judged(self) -> int:
        """Requests that tell something about the service: all but those cut by the stop."""
        return self.requests - self.count(CANCELLED)

    def share(self, outcome: str) -> float | None:
        """The share of judged requests with this outcome (None without judged requests)."""
        return self.count(outcome) / self.judged if self.judged else None

    @property
    def errors(self) -> int:
        """Judged requests that failed."""
        return self.judged - self.count(OK)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.judged if self.judged else None

    @property
    def cost_known(self) -> bool:
        return self.unpriced_requests == 0


class LabelGroup(Group):
    model: str
    prompt: str
    mode: Literal["stream", "blocking"] | None = Field(default=None, description="absent in version 1")


# --- the run --------------------------------------------------------------------------------
class ScenarioInfo(_Result):
    name: str
    digest: str = Field(pattern="^[0-9a-f]{64}$")
    source: str
    content: dict[str, Any]


class DatasetInfo(_Result):
    """A dataset prompt's entries as the run read them: how many, and their digest (the same
    entries give the same digest, wherever the file was)."""

    entries: int = Field(ge=1)
    sha256: str = Field(pattern="^[0-9a-f]{64}$")


class RunInfo(_Result):
    """Everything needed to reproduce the run; never a secret."""

    run_id: str
    role: Literal["local", "master"]
    scenario: ScenarioInfo
    host: str
    transport: Literal["fast", "sdk"]
    stamping: Literal["kernel", "user", "mixed"] = Field(
        "user", description="receive times: kernel stamps, when read, or mixed (workers differ)"
    )
    stamped_reads: dict[str, int] = Field(default_factory=dict, description=STAMPED_READS)
    anthropic_version: str
    started_at: float = Field(description="epoch seconds")
    ended_at: float = Field(description="epoch seconds")
    duration_s: float = Field(ge=0)
    in_progress: bool = False
    users: int | None = None
    spawn_rate: float | None = None
    run_time_s: int | None = None
    seeds: dict[str, int | None]
    versions: dict[str, str]
    datasets: dict[str, DatasetInfo] = Field(default_factory=dict, description="per dataset prompt: what its file held")


class InputSize(_Result):
    """How a synthetic prompt (`input_tokens`) was sized for a model (harness.calibration)."""

    model: str
    prompt: str
    variant: str | None = Field(default=None, description="a variant's own size of the prompt (harness.variants)")
    target: int = Field(ge=1, description="the prompt's input_tokens: the request's input tokens as the API counts them")
    achieved: int | None = Field(description="the target's count_tokens of the request as sent; None: not counted")
    text_bytes: int = Field(ge=1, description="the synthetic text's length")
    by: Literal["count_tokens", "bytes"] = Field(default="count_tokens", description="bytes: 4 bytes a token, not counted")
    problem: str | None = Field(default=None, description="why it was not counted (the target could not count)")

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.model, self.prompt, self.variant)


class Accounting(_Result):
    """Where every request went: recorded = requests (in the window) + before_window."""

    recorded: int = Field(ge=0, description="every request sent and recorded (records file, points)")
    requests: int = Field(ge=0, description="in the figures: started inside the measurement window")
    before_window: int = Field(default=0, ge=0, description="recorded before the measurement window opened")
    cancelled: int = Field(default=0, ge=0, description="of `requests`: cut by the stop")
    locust_requests: int = Field(ge=0, description="Locust's own total")
    records: int = Field(ge=0, description="lines written to the records files")
    window: int = Field(default=0, ge=0, description="the measurement window in the figures: 0 from the start, +1 at each reset")
    window_opened_at: float | None = Field(default=None, description="epoch seconds; None: open from the start")


class HealthSample(_Result):
    """One sample of the load generator's health (every 2 s, harness.health)."""

    at: float
    cpu_percent: float
    loop_lag_max_ms: float
    loop_lag_p99_ms: float
    users: int
    in_flight: int
    points_written: int
    points_dropped: int
    buffer_size: int
    saturated: bool

    def fields(self) -> dict[str, Any]:
        """The sample's values without its time (the fields of its point)."""
        return self.model_dump(exclude={"at"})


class Health(_Result):
    samples: int
    saturated_samples: int
    unreliable: bool = Field(description="the load generator was saturated: timings are late")
    cpu_percent_max: float
    cpu_percent_mean: float
    loop_lag_max_ms: float
    loop_lag_p99_max_ms: float
    max_cpu_percent_limit: float
    max_loop_lag_ms_limit: float
    timeline: list[HealthSample] = Field(description="the samples in time order; on a long run at most 720, evenly thinned")


class SloResult(_Result):
    name: str = Field(description="the scenario's key, e.g. ttft_p95_ms")
    metric: str = Field(description="what is measured, in words")
    scope: str = Field(description="'all' or a model")
    bound: Literal["max", "min"] = "max"
    limit: float
    value: float | None = Field(description="None: no data to judge (a breach)")
    passed: bool

    @property
    def operator(self) -> str:
        return "<=" if self.bound == "max" else ">="

    @property
    def label(self) -> str:
        return f"{self.scope}: {self.name} {self.operator} {self.limit:g}"


class RegressionResult(_Result):
    scope: str
    metric: str
    baseline_ms: float
    current_ms: float
    change_pct: float
    ci_low_pct: float
    ci_high_pct: float
    threshold_pct: float
    regressed: bool

    def describe(self) -> str:
        verdict = "REGRESSED" if self.regressed else "ok"
        return (
            f"{verdict}: {self.scope} {self.metric} {self.baseline_ms:.1f} -> {self.current_ms:.1f} ms "
            f"({self.change_pct:+.1f} %, 95 % CI {self.ci_low_pct:+.1f} .. {self.ci_high_pct:+.1f} %; "
            f"limit +{self.threshold_pct:g} %)"
        )


class Points(_Result):
    sink: str
    written: int
    dropped: int


class ArrivalTally(_Result):
    """One process's open-loop arrivals: scheduled = sent + dropped + refused."""

    scheduled: int = Field(ge=0)
    sent: int = Field(ge=0)
    dropped: int = Field(ge=0)
    refused: int = Field(ge=0)
    scheduled_demand: float = Field(ge=0, description="the units (requests or tokens) of the arrivals scheduled")
    sent_demand: float = Field(ge=0, description="the units (requests or tokens) of the arrivals sent")


class WorkerInfo(_Result):
    name: str
    requests: int = Field(description="in the figures")
    records: int
    recorded: int = 0
    before_window: int = 0
    spent_usd: float = 0.0
    points_written: int
    points_dropped: int
    saturated_samples: int
    unreliable: bool
    last_health: dict[str, Any]
    lost: bool
    unreported: tuple[int, int] | None = Field(
        default=None,
        description="a lost worker's requests that no report counted, about: from .. to (in flight at its last report, "
        "plus those started at its last rate until it died); None: not lost, or it never reported",
    )
    arrivals: ArrivalTally | None = Field(default=None, description="an open loop: its arrivals, at its last report")
    stamping: Literal["kernel", "user"] | None = Field(default=None, description="its receive times (None: it never reported)")
    stamped_reads: dict[str, int] = Field(default_factory=dict, description=STAMPED_READS)


Status = Literal["PASS", "FAIL", "DONE", "ERRORS", "ABORTED", "STOPPED", "UNRELIABLE", "FAILED_FAST"]


class Arrivals(_Result):
    """An open loop's arrivals (the scenario's `load`): the target and what was achieved.
    scheduled = sent + dropped + refused, exactly."""

    arrival: Literal["poisson", "constant", "trace"]
    unit: Literal["requests", "input_tokens", "output_tokens"] = Field(description="what the rates count")
    span_s: float = Field(ge=0, description="the time arrivals were scheduled (from the start to the cool-down or the stop)")
    target_per_s: float = Field(ge=0, description="the mean target rate over the span")
    scheduled_per_s: float = Field(
        ge=0, description="what was scheduled, per second of the span (a Poisson schedule varies around the target by 1/sqrt(n))"
    )
    achieved_per_s: float = Field(ge=0, description="what was sent, per second of the span")
    scheduled: int = Field(ge=0)
    sent: int = Field(ge=0)
    dropped: int = Field(ge=0, description="arrivals that found every one of max_in_flight busy")
    refused: int = Field(
        ge=0, description="arrivals handed to a user and not sent: a limit (budget, request limit, disk) or the stop came first"
    )
    min_achieved: float = Field(description="the scenario's floor for achieved / target")
    unscheduled: int | None = Field(default=None, description="a trace replay: its requests the run ended before (never scheduled)")

    @property
    def achieved_share(self) -> float | None:
        """What was sent of what was scheduled (not of the target: a Poisson schedule's own
        count varies around it)."""
        return self.achieved_per_s / self.scheduled_per_s if self.scheduled_per_s else None

    @property
    def behind_schedule(self) -> bool:
        """The schedule itself fell short of the target (the load generator could not keep up),
        by more than a Poisson count's chance (3 sigma) below min_achieved of it."""
        expected = self.target_per_s * self.span_s
        got = self.scheduled_per_s * self.span_s
        per_arrival = got / self.scheduled if self.scheduled else 1.0  # 1, or an arrival's tokens
        chance = 3 * math.sqrt(expected * per_arrival) if self.arrival == "poisson" else per_arrival
        return got < self.min_achieved * expected - chance

    @property
    def below_target(self) -> bool:
        share = self.achieved_share
        return (share is not None and share < self.min_achieved) or self.behind_schedule


class BucketLow(_Result):
    """The lowest remaining share of one rate limit seen in the run's responses."""

    share: float = Field(description="remaining / limit")
    remaining: int
    limit: int
    reset: str | None = Field(description="the limit's reset time as the response gave it (RFC 3339)")


class RetryAfter(_Result):
    count: int
    min: float
    max: float
    mean: float


class RateLimitFigures(_Result):
    """One model's rate limits as the API's `anthropic-ratelimit-*` headers and 429s showed them
    over the whole run (harness.headroom)."""

    responses_with_headers: int = Field(ge=0)
    limits: dict[str, int] = Field(description="per limit (requests, tokens, input_tokens, output_tokens): the highest seen")
    lowest_remaining: dict[str, BucketLow] = Field(description="per limit: the lowest remaining share seen")
    rate_limited: int = Field(ge=0, description="429 responses")
    first_429_at: float | None = Field(description="epoch seconds: the first 429's request was sent")
    offered_rps_at_first_429: float | None = Field(description="requests of this model sent per second in the 10 s before it")
    retry_after_s: RetryAfter | None = Field(description="the retry-after values the responses carried")

    @property
    def lowest_share(self) -> float | None:
        """The least headroom of any limit."""
        return min((low.share for low in self.lowest_remaining.values()), default=None)


class Interval(_Result):
    """A quantile with its 95 % distribution-free interval (harness.stats.quantile_intervals)."""

    value: float
    low: float
    high: float


class StepQuantiles(_Result):
    p50: Interval
    p95: Interval
    p99: Interval


class SweepStep(_Result):
    """One step of a sweep: the requests due (or sent) in its measured window, judged on the SLOs."""

    index: int = Field(ge=0)
    value: float = Field(description="the step's load: a rate per second (requests or tokens), or users")
    label: str = Field(description="the load as the scenario writes it, e.g. 4/s")
    bisection: bool = Field(description="a step placed by bisection, not listed in the scenario")
    started_at: float = Field(description="epoch seconds: the load changed to this step's (its warm-up began)")
    measured_from: float = Field(description="epoch seconds")
    measured_until: float = Field(description="epoch seconds")
    requests: int = Field(ge=0)
    unsettled: int = Field(ge=0, description="requests of the window still in flight when the step was judged (not in its figures)")
    late: int = Field(default=0, ge=0, description="attempts of the window that ended after the step was judged (not in its figures)")
    offered_per_s: float = Field(ge=0, description="requests due (open loop) or sent (closed loop) per second of the window")
    achieved_per_s: float = Field(ge=0, description="successful requests per second of the window")
    scheduled: int | None = Field(default=None, description="open loop: arrivals due in the window")
    dropped: int | None = Field(default=None, description="open loop: of those, dropped (every slot of max_in_flight busy)")
    ttft_ms: StepQuantiles | None = Field(description="from the scheduled time in an open loop, as the SLOs judge it")
    latency_ms: StepQuantiles | None = Field(description="from the scheduled time in an open loop, as the SLOs judge it")
    error_share: float | None
    rate_limited_share: float | None
    overloaded_share: float | None
    output_tokens_per_s: float = Field(ge=0)
    slos: list[SloResult]
    passed: bool
    breaches: list[str] = Field(description="why the step failed, in words")


class SweepResult(_Result):
    """A capacity sweep (the scenario's `sweep`): its steps and the sustainable load."""

    kind: Literal["rates", "users"]
    unit: Literal["requests", "input_tokens", "output_tokens", "users"]
    step_time_s: float
    resolution: float = Field(description="bisection stops within this share of the last good step")
    state: Literal["running", "done", "stopped", "failed"] = Field(
        description="stopped: the run ended before the search did; failed: an error in the harness ended it (see the log)"
    )
    steps: list[SweepStep]
    sustainable: float | None = Field(description="the highest step that met every SLO, below the first that did not")
    sustainable_label: str | None
    first_bad: float | None = Field(description="the lowest step that breached an SLO; None: none did")
    sustainable_rate_rps: float | None = Field(default=None, description="rate sweeps in requests")
    sustainable_tokens_per_min: float | None = Field(default=None, description="token-rate sweeps")
    sustainable_users: int | None = Field(default=None, description="user sweeps")


class TurnFigures(_Result):
    """The requests at one place of their conversations (harness.conversation)."""

    turn: int = Field(ge=1, description="the request's place in its session: 1, 2, ... (a tool result's request is a turn)")
    requests: int = Field(ge=0)
    failures: int = Field(ge=0)
    ttft_ms: Percentiles | None = Field(description="to the first text, of the answers that began with text")
    first_tool_input_ms: Percentiles | None = Field(description="to the first tool input, of the answers that called a tool")
    latency_ms: Percentiles | None
    input_tokens: int = Field(ge=0, description="their sum: it grows with the turns as the conversation does")


class CacheFigures(_Result):
    """One label's prompt caching (harness.caching): its successful requests in the window."""

    model: str
    prompt: str
    mode: str
    requests: int = Field(ge=0)
    hits: int = Field(ge=0, description="requests that read from the cache")
    hit_share: float = Field(ge=0, le=1)
    writes: int = Field(ge=0, description="requests that wrote to the cache")
    read_tokens: int = Field(ge=0)
    creation_tokens: int = Field(ge=0, description="tokens written to the cache")
    ttft_with_reads_ms: Percentiles | None
    ttft_without_reads_ms: Percentiles | None = Field(description="writes and requests that read nothing")


class Conversations(_Result):
    """Prompts sent as conversations: how the sessions ended, and each turn's figures."""

    sessions: int = Field(ge=0, description="sessions that ended in the measurement window")
    endings: dict[str, int] = Field(
        description="completed; failed (a request failed: the conversation cannot go on); stopped (by the end of the run); "
        "no_reply (an empty answer); tool_loop (more tool calls in a turn than the harness answers)"
    )
    turns: list[TurnFigures]


class Verdict(_Result):
    status: Status
    exit_code: int | None = Field(description="the process's exit code (README: exit codes)")
    reasons: list[str]


class Summary(_Result):
    """Written by --summary-json at the end of a run. Times in ms, costs in USD, timestamps in
    epoch seconds. Never holds the API key."""

    schema_: Literal["claude-harness-summary"] = Field(default=SCHEMA, alias="schema")
    version: Literal[2] = SCHEMA_VERSION
    run: RunInfo
    accounting: Accounting
    totals: Group
    models: dict[str, Group]
    modes: dict[str, Group] = Field(default_factory=dict, description="stream and blocking apart")
    labels: list[LabelGroup]
    health: Health
    slos: list[SloResult] = Field(default_factory=list)
    regressions: list[RegressionResult] = Field(default_factory=list)
    points: Points
    workers: list[WorkerInfo] = Field(default_factory=list)
    lost_workers: list[str] = Field(default_factory=list)
    refused_workers: dict[str, str] = Field(default_factory=dict)
    records_path: str | None = None
    arrivals: Arrivals | None = Field(default=None, description="an open loop's arrivals; None: a closed loop")
    sweep: SweepResult | None = Field(default=None, description="a capacity sweep's steps and sustainable load")
    rate_limits: dict[str, RateLimitFigures] = Field(
        default_factory=dict, description="per model: the API's rate-limit headers and 429s (models with either)"
    )
    conversations: Conversations | None = Field(default=None, description="prompts sent as conversations; None: none are")
    caching: list[CacheFigures] = Field(default_factory=list, description="per label where prompt caching happened")
    input_sizes: list[InputSize] = Field(default_factory=list, description="each (model, synthetic prompt): its size as sent")
    variants: Variants | None = Field(default=None, description="the scenario's variants compared; None: it has none")
    verdict: Verdict | None = None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


# --- reading summaries back (--baseline, the report CLI) ------------------------------------
def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A version-1 summary in version-2 shape (the fields 2 added get their neutral values)."""
    data = {**data, "version": SCHEMA_VERSION}
    accounting = data.get("accounting", {})
    cancelled = data.get("totals", {}).get("outcomes", {}).get(CANCELLED, 0)
    data["accounting"] = {**accounting, "recorded": accounting.get("requests", 0), "cancelled": cancelled}
    data["slos"] = [{**s, "metric": s["name"], "bound": "min" if s["name"].startswith("min_") else "max"} for s in data.get("slos", [])]
    return data


def parse_summary(data: Any, origin: str = "summary") -> Summary:
    """A summary from its JSON form (any readable version); InputError says what is wrong."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"{origin}: not a harness summary (schema {found!r}, expected {SCHEMA!r})")
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        raise InputError(f"{origin}: summary version {version!r} cannot be read (this harness reads {READABLE_VERSIONS})")
    if version == 1:
        data = _upgrade_v1(data)
    try:
        return Summary.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InputError(f"{origin}: {where}: {first['msg']}") from None


def load_summary(path: Path) -> Summary:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    return parse_summary(data, str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the summary (docs/summary.schema.json is this, committed)."""
    schema = Summary.model_json_schema(by_alias=True, mode="serialization")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA}/{SCHEMA_VERSION}",
        **schema,
        "title": f"Claude load-test harness: run summary, version {SCHEMA_VERSION}",
    }


def main() -> None:
    """`python -m harness.results`: print the summary's JSON Schema."""
    print(json.dumps(json_schema(), indent=2))


if __name__ == "__main__":
    main()
