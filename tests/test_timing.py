"""The SSE timing parser on recorded event sequences: what counts as the first token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.timing import (
    API_ERROR,
    CONNECTION_ERROR,
    OK,
    OVERLOADED,
    PROTOCOL_ERROR,
    RATE_LIMITED,
    StreamTimer,
    TimingRecord,
    outcome_for_status,
    retry_after_s,
)
from tests.support.sse import block_start, block_stop, delta, message_end, message_start, sse, text

MS = 1_000_000
START = 5_000 * MS


PING = sse("ping", {"type": "ping"})


def run(events: list[tuple[int, list[bytes]]], end_ms: int) -> TimingRecord:
    """Feed (arrival ms, lines) pairs; returns the finished record."""
    record = TimingRecord(model="m", prompt="p", mode="stream", start_ns=START)
    timer = StreamTimer(record)
    for at_ms, lines in events:
        timer.feed(START + at_ms * MS, [line.removesuffix(b"\n") for line in lines])
    return timer.finish(START + end_ms * MS)


def test_plain_text_stream() -> None:
    record = run(
        [
            (100, message_start()),
            (101, block_start(0, "text")),
            (150, text(0, "Hello")),
            (170, text(0, " world")),
            (230, text(0, "!")),
            (231, block_stop(0)),
            (232, message_end(output_tokens=3)),
        ],
        end_ms=233,
    )
    assert record.outcome == OK
    assert record.message_start_ms == 100
    assert record.ttft_ms == 150
    assert record.first_content == "text"
    assert record.last_token_ms == 230
    assert record.latency_ms == 233
    assert record.max_gap_ms == 60
    assert (record.input_tokens, record.output_tokens, record.stop_reason) == (12, 3, "end_turn")
    assert record.tpot_ms == pytest.approx((230 - 150) / 2)
    assert record.output_tps == pytest.approx(1000 / 40)
    assert record.request_id == "msg_1"  # no header id: the message id is kept


def test_thinking_with_only_a_signature_is_not_ttft() -> None:
    record = run(
        [
            (50, message_start()),
            (60, block_start(0, "thinking")),
            (400, delta(0, "signature_delta", signature="EqQBCgIYAhIM")),
            (401, block_stop(0)),
            (402, block_start(1, "text")),
            (450, text(1, "Answer")),
            (460, message_end(output_tokens=40)),
        ],
        end_ms=461,
    )
    assert record.first_thinking_ms == 400
    assert record.ttft_ms == 450
    # decoding started with the thinking tokens, which usage counts as output
    assert record.tpot_ms == pytest.approx((450 - 400) / 39)


def test_thinking_deltas_then_text() -> None:
    record = run(
        [
            (10, message_start()),
            (11, block_start(0, "thinking")),
            (100, delta(0, "thinking_delta", thinking="Let me")),
            (120, delta(0, "thinking_delta", thinking=" think")),
            (130, delta(0, "signature_delta", signature="sig")),
            (140, block_start(1, "text")),
            (300, text(1, "Hi")),
            (301, message_end(output_tokens=5)),
        ],
        end_ms=302,
    )
    assert (record.first_thinking_ms, record.ttft_ms) == (100, 300)
    assert record.max_gap_ms == 170


def test_empty_text_delta_is_not_the_first_token() -> None:
    record = run(
        [(10, message_start()), (11, block_start(0, "text")), (20, text(0, "")), (90, text(0, "x")), (91, message_end(2))],
        end_ms=92,
    )
    assert record.ttft_ms == 90


def test_ping_anywhere_and_unknown_events_are_tolerated() -> None:
    unknown = sse("brand_new_event", {"type": "brand_new_event", "x": 1})
    record = run(
        [
            (5, PING),
            (10, message_start()),
            (12, PING),
            (13, unknown),
            (14, block_start(0, "text")),
            (15, PING),
            (40, text(0, "a")),
            (41, PING),
            (42, text(0, "b")),
            (50, message_end(2)),
            (51, PING),
        ],
        end_ms=52,
    )
    assert record.outcome == OK
    assert record.ttft_ms == 40
    assert record.max_gap_ms == 2  # pings are not content


def test_tool_use_first_input_json_delta_counts_and_says_so() -> None:
    record = run(
        [
            (10, message_start()),
            (11, block_start(0, "tool_use")),
            (30, delta(0, "input_json_delta", partial_json="")),
            (35, delta(0, "input_json_delta", partial_json='{"city"')),
            (40, message_end(3, "tool_use")),
        ],
        end_ms=41,
    )
    assert record.ttft_ms == 35
    assert record.first_content == "tool_use"


@pytest.mark.parametrize(
    ("error_type", "outcome"),
    [("overloaded_error", OVERLOADED), ("rate_limit_error", RATE_LIMITED), ("api_error", API_ERROR)],
)
def test_mid_stream_error_event(error_type: str, outcome: str) -> None:
    error = sse("error", {"type": "error", "error": {"type": error_type, "message": "boom"}})
    record = run(
        [(10, message_start()), (11, block_start(0, "text")), (20, text(0, "par")), (25, error)],
        end_ms=26,
    )
    assert record.outcome == outcome
    assert (record.error_type, record.error_message) == (error_type, "boom")
    assert record.ttft_ms == 20  # what arrived before the error is still measured


def test_missing_message_stop_is_a_connection_error() -> None:
    record = run([(10, message_start()), (11, block_start(0, "text")), (20, text(0, "cut"))], end_ms=30)
    assert record.outcome == CONNECTION_ERROR
    assert record.error_type == "incomplete_stream"
    assert record.latency_ms == 30


def test_garbage_data_is_a_protocol_error_not_a_crash() -> None:
    garbage = [b"event: message_delta\n", b"data: {not json\n", b"\n"]
    record = run([(10, message_start()), (11, garbage), (12, message_end(1))], end_ms=13)
    assert record.outcome == PROTOCOL_ERROR
    assert record.error_type == "invalid_event"


def test_crlf_line_endings_and_lines_without_endings() -> None:
    lines = [b"event: message_start\r\n", b'data: {"type":"message_start","message":{"id":"m"}}\r\n', b"\r\n"]
    lines += [b"event: content_block_delta", b'data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"a"}}']
    lines += [b"event: message_stop", b'data: {"type":"message_stop"}']
    record = run([(7, lines)], end_ms=8)
    assert (record.outcome, record.ttft_ms) == (OK, 7)


def test_blocking_message_has_no_ttft() -> None:
    record = TimingRecord(model="m", prompt="p", mode="blocking", start_ns=START)
    body = {"usage": {"input_tokens": 9, "output_tokens": 30}, "stop_reason": "max_tokens", "content": []}
    record.apply_message(json.dumps(body).encode(), START + 800 * MS)
    assert record.outcome == OK
    assert record.latency_ms == 800
    assert record.ttft_ms is None and record.tpot_ms is None and record.output_tps is None
    assert (record.output_tokens, record.stop_reason) == (30, "max_tokens")


@pytest.mark.parametrize(
    ("status", "error_type", "outcome"),
    [
        (429, "rate_limit_error", RATE_LIMITED),
        (529, "overloaded_error", OVERLOADED),
        (500, "api_error", API_ERROR),
        (400, "invalid_request_error", API_ERROR),
    ],
)
def test_http_error_bodies(status: int, error_type: str, outcome: str) -> None:
    record = TimingRecord(model="m", prompt="p", mode="stream", start_ns=START)
    body = {"type": "error", "error": {"type": error_type, "message": "no"}, "request_id": "req_9"}
    record.apply_error_body(status, json.dumps(body).encode())
    assert (record.outcome, record.error_type, record.http_status, record.request_id) == (outcome, error_type, status, "req_9")


def test_status_alone_classifies_when_the_body_is_not_json() -> None:
    assert outcome_for_status(429, None) == RATE_LIMITED
    assert outcome_for_status(529, "unparsable_error_body") == OVERLOADED
    assert outcome_for_status(502, None) == API_ERROR


def test_deltas_after_the_first_text_are_checked_cheaply_but_exactly_enough() -> None:
    def delta_line(payload: bytes) -> list[bytes]:
        return [b"event: content_block_delta\n", b"data: " + payload + b"\n", b"\n"]

    first = (11, block_start(0, "text"))
    cut = delta_line(b'{"type":"content_block_delta","index":0,"delta":{"type":"text_')
    broken = delta_line(b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\xff"}}')
    spaced = delta_line(b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}   ')
    unicode = delta_line('{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"é"}}'.encode())
    for lines, outcome in [(cut, PROTOCOL_ERROR), (broken, PROTOCOL_ERROR), (spaced, OK), (unicode, OK)]:
        record = run([(10, message_start()), first, (12, text(0, "a")), (13, lines), (14, message_end(2))], end_ms=15)
        assert record.outcome == outcome, (lines, record)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "inf"}, None),  # unreadable, not a wait forever (nor a null in the records)
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "1e400"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_a_finite_wait_or_none(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_s(headers.get) == seconds


def test_a_record_with_what_orjson_refuses_is_still_written(tmp_path: Path) -> None:
    """A lone surrogate in an error message (from an error body) and an integer beyond 64 bits
    (a usage figure) go through the json module: every request gets its line."""
    from harness.records import RecordsFile, read_records

    record = TimingRecord(model="m", prompt="p", mode="stream", start_ns=START)
    record.fail("api_error", "api_error", "bad \ud800 text")
    record.input_tokens = 2**70
    records = RecordsFile(tmp_path / "requests.jsonl.gz", {"run_id": "r"})
    records.write(record)
    records.close()
    (line,) = read_records(tmp_path / "requests.jsonl.gz")
    assert line["error_message"] == "bad \ud800 text" and line["input_tokens"] == 2**70 and line["run_id"] == "r"


def test_records_are_written_in_batches_and_flush_and_close_write_every_one(tmp_path: Path) -> None:
    from harness.records import BATCH, RecordsFile, read_records

    path = tmp_path / "requests.jsonl.gz"
    records = RecordsFile(path, {"run_id": "r"})
    for i in range(BATCH + 3):
        records.write(TimingRecord(model="m", prompt="p", mode="stream", start_ns=START, ttft_ms=float(i)))
    assert records.written == BATCH + 3
    records.flush()
    assert [line["ttft_ms"] for line in read_records(path)] == [float(i) for i in range(BATCH + 3)]
    records.write(TimingRecord(model="m", prompt="p", mode="stream", start_ns=START, ttft_ms=-1.0))
    records.close()
    records.close()  # (twice: nothing more)
    assert [line["ttft_ms"] for line in read_records(path)][-2:] == [float(BATCH + 2), -1.0]
