"""The time-series schema: which measurements, tags and fields the harness writes, and the
conversion of a TimingRecord (or a health sample) into an InfluxDB line-protocol point.

Tags have bounded cardinality (labels of the run); per-request identifiers are fields.
The Grafana dashboard's queries are checked against these names by the tests.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from harness.headroom import BUCKETS, rate_limit_fields
from harness.timing import TimingRecord

REQUEST_MEASUREMENT = "claude_request"
HEALTH_MEASUREMENT = "harness_health"
RUN_MEASUREMENT = "harness_run"

REQUEST_TAGS = ("run_id", "scenario", "model", "prompt", "variant", "mode", "outcome", "worker", "step", "turn")
REQUEST_FIELDS = (
    "ttft_ms",
    "first_tool_input_ms",
    "latency_ms",
    "ttfb_ms",
    "first_thinking_ms",
    "tpot_ms",
    "output_tps",
    "max_gap_ms",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost_usd",
    "request_id",
    "error_type",
    "http_status",
    "window",
    "retry_after_s",
    "attempt",
    "retried",
    "app_latency_ms",
    "app_ttft_ms",
    "send_lag_ms",
    "entry",
    *(f"ratelimit_{bucket}_{kind}" for bucket in BUCKETS for kind in ("limit", "remaining")),
)
INT_FIELDS = frozenset(
    {"input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens", "http_status", "window", "attempt", "entry"}
    | {name for name in REQUEST_FIELDS if name.startswith("ratelimit_")}
)
STRING_FIELDS = frozenset({"request_id", "error_type", "event", "detail"})
_NOT_FLOAT = INT_FIELDS | STRING_FIELDS

HEALTH_TAGS = ("run_id", "scenario", "worker", "role")
HEALTH_FIELDS = (
    "cpu_percent",
    "loop_lag_max_ms",
    "loop_lag_p99_ms",
    "users",
    "in_flight",
    "points_written",
    "points_dropped",
    "buffer_size",
    "saturated",
)

RUN_TAGS = ("run_id", "scenario", "worker")
RUN_FIELDS = ("event", "detail")  # event: "start" or "stop"

SCHEMA: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    REQUEST_MEASUREMENT: (REQUEST_TAGS, REQUEST_FIELDS),
    HEALTH_MEASUREMENT: (HEALTH_TAGS, HEALTH_FIELDS),
    RUN_MEASUREMENT: (RUN_TAGS, RUN_FIELDS),
}


def _escape_key(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ")


@functools.lru_cache(maxsize=4096, typed=True)  # a run's tags take few values: each escaped once
def _tag(key: str, value: Any) -> str:
    return f",{key}={_escape_key(str(value))}"


def _escape_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', r"\"") + '"'


def _field(name: str, value: Any) -> str:
    kind = type(value)  # the common cases first: a float field, an integer one (bool is neither)
    if kind is float and name not in _NOT_FLOAT:
        return f"{name}={value!r}"
    if kind is int and name not in STRING_FIELDS:
        return f"{name}={value}i"
    if isinstance(value, bool):
        return f"{name}={'true' if value else 'false'}"
    if name in STRING_FIELDS:
        return f"{name}={_escape_string(str(value))}"
    if name in INT_FIELDS or isinstance(value, int):
        return f"{name}={int(value)}i"
    return f"{name}={float(value)!r}"


def line(measurement: str, tags: Mapping[str, Any], fields: Mapping[str, Any], time_ns: int) -> str:
    """One line of InfluxDB line protocol; empty tags and None fields are left out."""
    tag_part = "".join([_tag(k, v) for k, v in sorted(tags.items()) if v is not None and v != ""])
    field_part = ",".join([_field(k, v) for k, v in fields.items() if v is not None])
    return f"{_escape_key(measurement)}{tag_part} {field_part} {time_ns}"


def request_line(record: TimingRecord, labels: Mapping[str, Any]) -> str:
    """The point of one finished request, stamped at the request's start (wall clock, ns), or in
    an open loop at the time it was due."""
    tags = {**labels, "model": record.model, "prompt": record.prompt, "mode": record.mode, "outcome": record.outcome, "step": record.step}
    tags["turn"] = record.turn  # a conversation's request: its place in the session (None: not one)
    tags["variant"] = record.variant  # the scenario's variant it was sent as (None: no variants)
    fields = {
        "ttft_ms": record.ttft_ms if record.first_content == "text" else None,
        "first_tool_input_ms": record.ttft_ms if record.first_content == "tool_use" else None,
        "latency_ms": record.latency_ms,
        "ttfb_ms": record.ttfb_ms,
        "first_thinking_ms": record.first_thinking_ms,
        "tpot_ms": record.tpot_ms,
        "output_tps": record.output_tps,
        "max_gap_ms": record.max_gap_ms,
        "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens,
        "cache_read_tokens": record.cache_read_tokens,
        "cache_creation_tokens": record.cache_creation_tokens,
        "cost_usd": record.cost_usd,
        "request_id": record.request_id,
        "error_type": record.error_type,
        "http_status": record.http_status,
        "window": record.window,  # the measurement window it started in (the figures: the last one)
        "retry_after_s": record.retry_after_s,
        # with retries only (left out otherwise): a retry's number, a retried attempt, and on a
        # request's last attempt what the application saw
        "attempt": record.attempt if record.attempt > 1 else None,
        "retried": True if record.retried else None,
        "app_latency_ms": record.app_latency_ms,
        "app_ttft_ms": record.app_ttft_ms,
        # in an open loop: how late it was sent (its point is stamped at the time it was due)
        "send_lag_ms": record.send_lag_ms,
        "entry": record.entry,  # a dataset prompt's request: its entry's line in the file
        # the API's rate-limit headers (harness/headroom.py): each limit and what remained of it
        **rate_limit_fields(record),
    }
    return line(REQUEST_MEASUREMENT, tags, fields, record.scheduled_wall_ns or record.wall_start_ns)
