"""The per-request timing record and the parser that fills it from a Messages API response.

One `TimingRecord` per Claude request feeds every sink (Locust stats, HDR histograms, the
records file). Times are `time.perf_counter_ns()` readings (CLOCK_MONOTONIC on Linux,
comparable across processes), taken by the transport when bytes come off the socket; the
record stores them relative to `start_ns`, the moment just before the request was sent.
Definitions (also in docs/timing.md):

- ttfb_ms: response headers received.
- message_start_ms: the `message_start` event's line received.
- first_thinking_ms: first thinking content (a thinking_delta or signature_delta).
- ttft_ms: first non-empty `text_delta` (or, for tool use, the first non-empty
  `input_json_delta`; `first_content` says which). Blocking requests have none.
- last_token_ms: the last content delta; latency_ms: the response fully read.
- max_gap_ms: the largest pause between two consecutive content deltas.
- tpot_ms: (last_token - first output token) / (output_tokens - 1), where the first output
  token is the earlier of first thinking and first text, because thinking tokens are
  counted in usage.output_tokens; output_tps = 1000 / tpot_ms.
Token counts come from the server's usage (message_delta usage is cumulative), never from
counting chunks.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from harness.replies import SETTLE_EVENTS, Reply

NS_PER_MS = 1_000_000

# Outcome classes (docs/timing.md). Anything but "ok" is a failure in Locust's stats.
OK = "ok"
RATE_LIMITED = "rate_limited"
OVERLOADED = "overloaded"
API_ERROR = "api_error"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
PROTOCOL_ERROR = "protocol_error"  # the server broke the protocol: malformed events, not UTF-8, a body of another type
CLIENT_ERROR = "client_error"
CANCELLED = "cancelled"
OUTCOMES = (OK, RATE_LIMITED, OVERLOADED, API_ERROR, TIMEOUT, CONNECTION_ERROR, PROTOCOL_ERROR, CLIENT_ERROR, CANCELLED)

# the API's error types, and a Bedrock stream's exceptions that say the same (harness/bedrock_frames.py)
_ERROR_TYPE_OUTCOME = {
    "rate_limit_error": RATE_LIMITED,
    "overloaded_error": OVERLOADED,
    "throttlingException": RATE_LIMITED,
    "serviceUnavailableException": OVERLOADED,
}


def outcome_for_status(status: int, error_type: str | None) -> str:
    """Classify an HTTP error status (or an in-stream error, status 200) into an outcome."""
    if error_type in _ERROR_TYPE_OUTCOME:
        return _ERROR_TYPE_OUTCOME[error_type]
    if status == 429:
        return RATE_LIMITED
    if status == 529:
        return OVERLOADED
    return API_ERROR


def _ms(t_ns: int | None, start_ns: int) -> float | None:
    return None if t_ns is None else (t_ns - start_ns) / NS_PER_MS


@dataclass(slots=True)
class TimingRecord:
    """Everything measured about one request. Labels first, then timings, usage, outcome."""

    model: str
    prompt: str
    mode: str  # "stream" or "blocking"
    start_ns: int = 0  # perf_counter_ns just before the request was sent
    wall_start_ns: int = 0  # time.time_ns at the same moment (for time-series sinks)
    ttfb_ms: float | None = None
    message_start_ms: float | None = None
    first_thinking_ms: float | None = None
    ttft_ms: float | None = None
    first_content: str | None = None  # "text" or "tool_use": what ttft_ms measured
    last_token_ms: float | None = None
    latency_ms: float | None = None
    max_gap_ms: float | None = None
    events: int = 0  # SSE events seen (for per-event cost figures)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    stop_reason: str | None = None
    request_id: str | None = None
    http_status: int | None = None
    outcome: str = CLIENT_ERROR
    error_type: str | None = None
    error_message: str | None = None
    cost_usd: float | None = None
    window: int = 0  # the measurement window it started in (--reset-stats opens window 1, ...)
    retry_after_s: float | None = None  # the server's retry-after (or retry-after-ms) on this response
    rate_limits: dict[str, tuple[int, int | None, str | None]] | None = None  # harness/headroom.py: limit, remaining, reset
    # with retries (the scenario's failures.retries), each attempt is a record:
    attempt: int = 1  # this attempt's number in its request
    retried: bool = False  # its failure was tried again: the application did not see it
    app_latency_ms: float | None = None  # on a request's last attempt: from its first attempt's start, waits included
    app_ttft_ms: float | None = None  # the same for the first text of the last attempt
    # in an open loop (harness/openloop.py): when the request was due, and how late this attempt
    # was sent (a retry's lag includes the attempts and waits before it)
    scheduled_wall_ns: int | None = None
    send_lag_ms: float | None = None
    scheduled_ns: int | None = None  # perf_counter_ns; not written (it means nothing outside the process)
    step: int | None = None  # in a sweep: the step whose measured window it was due (or sent) in
    entry: int | None = None  # a dataset prompt's request: its entry's line in the file
    turn: int | None = None  # a conversation's request: its place in the session (harness/conversation.py)
    variant: str | None = None  # the scenario's variant it was sent as (harness/variants.py)

    @property
    def latency_from_schedule_ms(self) -> float | None:
        """From the time the request was due to this attempt's end: what a user of the service
        felt, on a request's last attempt."""
        return None if self.send_lag_ms is None or self.latency_ms is None else self.send_lag_ms + self.latency_ms

    @property
    def ttft_from_schedule_ms(self) -> float | None:
        if self.send_lag_ms is None or self.ttft_ms is None or self.first_content != "text":
            return None
        return self.send_lag_ms + self.ttft_ms

    @property
    def ok(self) -> bool:
        return self.outcome == OK

    @property
    def first_token_ms(self) -> float | None:
        """The first output token of any kind: thinking or text (start of decoding)."""
        candidates = [t for t in (self.first_thinking_ms, self.ttft_ms) if t is not None]
        return min(candidates) if candidates else None

    @property
    def tpot_ms(self) -> float | None:
        first, last, tokens = self.first_token_ms, self.last_token_ms, self.output_tokens
        if first is None or last is None or not tokens or tokens < 2:
            return None
        return (last - first) / (tokens - 1)

    @property
    def output_tps(self) -> float | None:
        tpot = self.tpot_ms
        return 1000.0 / tpot if tpot else None

    def as_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELD_NAMES}  # flat: cheaper than asdict
        data["tpot_ms"] = self.tpot_ms
        data["output_tps"] = self.output_tps
        return data

    def apply_usage(self, usage: dict[str, Any]) -> None:
        """Take token counts from a usage object (message_start, message_delta or a message)."""
        if (value := usage.get("input_tokens")) is not None:
            self.input_tokens = value
        if (value := usage.get("output_tokens")) is not None:
            self.output_tokens = value
        if (value := usage.get("cache_read_input_tokens")) is not None:
            self.cache_read_tokens = value
        if (value := usage.get("cache_creation_input_tokens")) is not None:
            self.cache_creation_tokens = value

    def apply_error_body(self, status: int, body: bytes) -> None:
        """Classify an HTTP error response from its status and JSON error body."""
        self.http_status = status
        error = _error_of(body)
        self.error_type = error.get("type")
        self.error_message = error.get("message")
        self.outcome = outcome_for_status(status, self.error_type)
        if self.request_id is None:
            self.request_id = _request_id_of(body)

    def apply_message(self, body: bytes, end_ns: int) -> None:
        """Fill a blocking request's record from its complete JSON message."""
        self.latency_ms = _ms(end_ns, self.start_ns)
        try:
            message = json.loads(body)
        except ValueError:
            self.fail(PROTOCOL_ERROR, "invalid_json", "response body is not JSON")
            return
        self.apply_usage(message.get("usage") or {})
        self.stop_reason = message.get("stop_reason")
        self.outcome = OK

    def settle_request(self, first_start_ns: int) -> None:
        """This attempt is its request's last: what the application saw, from the start of the
        request's first attempt (retries and waits included)."""
        before_ms = (self.start_ns - first_start_ns) / NS_PER_MS
        self.app_latency_ms = before_ms + (self.latency_ms or 0.0)
        self.app_ttft_ms = before_ms + self.ttft_ms if self.ttft_ms is not None and self.first_content == "text" else None

    def fail(self, outcome: str, error_type: str, message: str) -> None:
        self.outcome = outcome
        self.error_type = error_type
        self.error_message = message


_FIELD_NAMES = tuple(field.name for field in fields(TimingRecord) if field.name != "scheduled_ns")


def retry_after_s(header: Callable[[str], str | None]) -> float | None:
    """The server's wait before a retry, from `retry-after-ms` or `retry-after` (seconds or an
    HTTP date), as the SDK reads them; None when absent or unreadable (`inf` and `nan` too)."""
    try:
        if (value := header("retry-after-ms")) is not None:
            seconds = float(value) / 1000
        elif (value := header("retry-after")) is None:
            return None
        else:
            try:
                seconds = float(value)
            except ValueError:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _error_of(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {"type": "unparsable_error_body", "message": body[:200].decode("utf-8", "replace")}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


def _request_id_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get("request_id") if isinstance(data, dict) else None


_OBJECT_ENDS = (b"}", b"}\r")  # a line without its \n (a CRLF stream's keeps its \r)


def _looks_whole(data: bytes) -> bool:
    """A delta after the first text, checked without parsing it (the per-event path stays
    cheap): a JSON object's end, and UTF-8. A delta cut short or with broken bytes fails;
    only a line that does not end as usual is parsed to be sure."""
    if not data.endswith(_OBJECT_ENDS):
        try:
            return isinstance(orjson.loads(data), dict)
        except ValueError:
            return False
    if data.isascii():
        return True
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


class StreamTimer:
    """Fills a TimingRecord from SSE lines as they arrive, each with its arrival time.

    Per-event work is kept small: JSON is parsed for message_start, message_delta and
    error events, and for content deltas only until the first text (or tool input) has
    been seen; later deltas only move the last-token time and the largest gap.
    """

    __slots__ = ("_bad", "_error", "_event", "_last_delta_ns", "_max_gap_ns", "_seen_text", "_stopped", "progress_ns", "record", "reply")

    def __init__(self, record: TimingRecord, now_ns: int = 0, reply: Reply | None = None) -> None:
        self.record = record
        self.reply = reply  # a conversation's: it keeps every data payload, parsed after the stream
        self.progress_ns = now_ns  # when the last event that is not a ping arrived (idle timeout)
        self._event = b""
        self._last_delta_ns: int | None = None
        self._max_gap_ns = 0
        self._seen_text = False
        self._stopped = False
        self._error: dict[str, Any] | None = None
        self._bad = 0  # data lines that were not a JSON object

    def feed(self, t_ns: int, lines: list[bytes]) -> None:
        """SSE lines (without their \\n) that arrived together at t_ns: what one read brought.
        (One call per read, not per line: a stream's events are three lines each.)"""
        reply = self.reply
        for line in lines:
            if line.startswith(b"data:"):
                data = line[5:]
                if reply is not None:
                    (reply.deltas if self._event == b"content_block_delta" else reply.data).append(data)
                self._on_data(t_ns, self._event, data)
            elif line.startswith(b"event:"):
                self._event = line[6:].strip()
            # blank lines end an event; comments (":") and other fields are ignored
        if reply is not None and len(reply.data) + len(reply.deltas) > SETTLE_EVENTS:
            reply.settle()

    def _on_data(self, t_ns: int, event: bytes, data: bytes) -> None:
        record = self.record
        record.events += 1
        if event != b"ping":
            self.progress_ns = t_ns
        if event == b"content_block_delta":
            last = self._last_delta_ns
            if last is not None and t_ns - last > self._max_gap_ns:
                self._max_gap_ns = t_ns - last
            self._last_delta_ns = t_ns
            if not self._seen_text:
                self._on_early_delta(t_ns, data)
            elif not _looks_whole(data):
                self._bad += 1
        elif event == b"message_start":
            record.message_start_ms = _ms(t_ns, record.start_ns)
            message = self._json(data).get("message") or {}
            record.request_id = record.request_id or message.get("id")
            record.apply_usage(message.get("usage") or {})
        elif event == b"message_delta":
            payload = self._json(data)
            record.apply_usage(payload.get("usage") or {})
            record.stop_reason = (payload.get("delta") or {}).get("stop_reason") or record.stop_reason
        elif event == b"message_stop":
            self._stopped = True
        elif event == b"error":
            self._error = self._json(data).get("error") or {"type": "unknown_error"}
        elif event == b"content_block_start" and not self._seen_text:
            block = self._json(data).get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                self._first_content(t_ns, "text")
        # ping, content_block_stop and unknown events need nothing

    def _on_early_delta(self, t_ns: int, data: bytes) -> None:
        delta = self._json(data).get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            if delta.get("text"):
                self._first_content(t_ns, "text")
        elif kind in ("thinking_delta", "signature_delta"):
            if self.record.first_thinking_ms is None:
                self.record.first_thinking_ms = _ms(t_ns, self.record.start_ns)
        elif kind == "input_json_delta" and delta.get("partial_json"):
            self._first_content(t_ns, "tool_use")

    def _first_content(self, t_ns: int, kind: str) -> None:
        self._seen_text = True
        self.record.ttft_ms = _ms(t_ns, self.record.start_ns)
        self.record.first_content = kind

    def finish(self, end_ns: int) -> TimingRecord:
        """The stream ended (cleanly or not) at end_ns: settle timings and the outcome."""
        record = self.record
        record.latency_ms = _ms(end_ns, record.start_ns)
        record.last_token_ms = _ms(self._last_delta_ns, record.start_ns)
        record.max_gap_ms = self._max_gap_ns / NS_PER_MS if self._last_delta_ns is not None else None
        if self._error is not None:
            record.error_type = self._error.get("type")
            record.error_message = self._error.get("message")
            record.outcome = outcome_for_status(200, record.error_type)
        elif self._bad:
            record.fail(PROTOCOL_ERROR, "invalid_event", f"{self._bad} stream event(s) were not JSON objects in UTF-8")
        elif self._stopped:
            record.outcome = OK
        else:
            record.fail(CONNECTION_ERROR, "incomplete_stream", "stream ended before message_stop")
        return record

    def _json(self, data: bytes) -> dict[str, Any]:
        try:
            value = orjson.loads(data)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        self._bad += 1
        return {}
