"""Both transports against the same recorded streams: identical records and outcomes.

tests/support/replay_server.py replays scripted responses (clean streams, thinking, tool use,
mid-stream errors, truncated and dropped streams, HTTP errors, a stall, malformed and
unknown events) and logs when it wrote the first text. Each script is sent through
FastTransport and through SdkTransport; the two TimingRecords must agree field by field,
and their timings must agree with each other and with the server's write times.
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.deadlines import CHECK_S
from harness.scenario import Timeouts
from harness.timing import API_ERROR, CONNECTION_ERROR, OK, OVERLOADED, PROTOCOL_ERROR, RATE_LIMITED, TIMEOUT, TimingRecord
from tests.support import replay_server
from tests.support.processes import ROOT

# every test is bounded, the module's fixtures (run with the first test) included; the file takes ~60 s
pytestmark = pytest.mark.timeout(120)

API_KEY = "test-key"
VERSION = "2023-06-01"
REPS = 5  # every script is sent five times through each transport
TIMEOUT_REPS = 3  # a script that waits for its limit: three times (its timings are checked as coarsely)
TIMEOUT_S = 5.0  # a request that should finish quickly
LIMIT_S = 1.0  # the one limit a timeout script is meant to hit
# the scripts that end in a time limit: which limit, set to LIMIT_S (the others stay far off)
TIMEOUT_SCRIPTS = {
    "stall": Timeouts(idle_s=LIMIT_S, total_s=TIMEOUT_S),  # headers, message_start, a ping, then nothing
    "ping-flood": Timeouts(idle_s=LIMIT_S, total_s=TIMEOUT_S),  # pings every 100 ms: no progress
    "no-headers": Timeouts(first_byte_s=LIMIT_S, total_s=TIMEOUT_S),
    "endless-text": Timeouts(total_s=LIMIT_S),  # progress all along, but never an end
}
OVERRUN_S = 6.0  # how far past its timeout a request may end on a loaded machine; << STALL_LIMIT_S
# Timing a neighbouring write instead of the right one is off by a whole pause the server
# makes (>= DELTA_GAP_MS); a loaded machine delays single samples. So the best of REPS
# samples must be within half a pause.
TRUTH_ERROR_MS = replay_server.DELTA_GAP_MS / 2  # harness time minus the server's write time: 0 <= error < this
TTFT_AGREEMENT_MS = replay_server.DELTA_GAP_MS / 2  # fast vs sdk
EPS_MS = 0.01  # float rounding of start_ns + ms * 1e6

# (record field, server mark): when the harness saw what the server wrote at the mark
TIMED = (
    ("ttfb_ms", "headers"),
    ("message_start_ms", "message_start"),
    ("first_thinking_ms", "first_thinking"),
    ("ttft_ms", "first_text"),
    ("ttft_ms", "first_tool"),
    ("last_token_ms", "last_delta"),
)
# fields that must be equal between the two transports for the same script
IDENTICAL = (
    "outcome",
    "error_type",
    "http_status",
    "first_content",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "stop_reason",
    "request_id",
    "events",
    "mode",
    "retry_after_s",
)
# fields that must be both None or both set
PRESENCE = ("ttfb_ms", "message_start_ms", "first_thinking_ms", "ttft_ms", "last_token_ms", "latency_ms", "max_gap_ms")


@dataclass(frozen=True)
class Expect:
    outcome: str
    error_type: str | None = None  # None: no error; "*": any, but the same from both transports
    http_status: int | None = 200
    stream: bool = True
    first_content: str | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None
    thinking: bool = False
    usage: bool = True  # input/cache tokens known (message_start or the message was seen)


HTTP_ERROR = {"usage": False}
EXPECTED: dict[str, Expect] = {
    "ok-text": Expect(OK, first_content="text", output_tokens=5, stop_reason="end_turn"),
    "thinking-signature-only": Expect(OK, first_content="text", output_tokens=9, stop_reason="end_turn", thinking=True),
    "thinking-deltas": Expect(OK, first_content="text", output_tokens=12, stop_reason="end_turn", thinking=True),
    "tool-use": Expect(OK, first_content="tool_use", output_tokens=7, stop_reason="tool_use"),
    "midstream-overloaded": Expect(OVERLOADED, "overloaded_error", first_content="text", output_tokens=1),
    "midstream-api-error": Expect(API_ERROR, "api_error", first_content="text", output_tokens=1),
    "missing-stop": Expect(CONNECTION_ERROR, "incomplete_stream", first_content="text", output_tokens=1),
    "disconnect": Expect(CONNECTION_ERROR, "*", first_content="text", output_tokens=1),
    "http-429": Expect(RATE_LIMITED, "rate_limit_error", 429, **HTTP_ERROR),
    "http-529": Expect(OVERLOADED, "overloaded_error", 529, **HTTP_ERROR),
    "http-500": Expect(API_ERROR, "api_error", 500, **HTTP_ERROR),
    "http-400": Expect(API_ERROR, "invalid_request_error", 400, **HTTP_ERROR),
    "http-502-html": Expect(API_ERROR, "unparsable_error_body", 502, **HTTP_ERROR),
    "http-302": Expect(API_ERROR, "unparsable_error_body", 302, **HTTP_ERROR),
    "blocking-ok": Expect(OK, stream=False, output_tokens=6, stop_reason="end_turn"),
    "stall": Expect(TIMEOUT, "idle_timeout", output_tokens=1),
    "ping-flood": Expect(TIMEOUT, "idle_timeout", output_tokens=1),
    "no-headers": Expect(TIMEOUT, "first_byte_timeout", http_status=None, usage=False),
    "endless-text": Expect(TIMEOUT, "timeout", first_content="text", output_tokens=1),
    "garbage-event": Expect(PROTOCOL_ERROR, "invalid_event", first_content="text", output_tokens=5, stop_reason="end_turn"),
    "garbage-after-text": Expect(PROTOCOL_ERROR, "invalid_event", first_content="text", output_tokens=5, stop_reason="end_turn"),
    "bad-utf8-after-text": Expect(PROTOCOL_ERROR, "invalid_event", first_content="text", output_tokens=5, stop_reason="end_turn"),
    "html-200-stream": Expect(PROTOCOL_ERROR, "unexpected_content_type", 200, **HTTP_ERROR),
    "gzip-blocking": Expect(OK, stream=False, output_tokens=6, stop_reason="end_turn"),
    "gzip-stream": Expect(OK, first_content="text", output_tokens=5, stop_reason="end_turn"),
    "crlf": Expect(OK, first_content="text", output_tokens=5, stop_reason="end_turn"),
    "unknown-event": Expect(OK, first_content="text", output_tokens=5, stop_reason="end_turn"),
    "unicode-separator": Expect(OK, first_content="text", output_tokens=3, stop_reason="end_turn"),
}
BEDROCK = {"name": "bedrock", "region": "us-east-1"}
BEDROCK_EXPECTED: dict[str, Expect] = {
    "bedrock-ok-text": Expect(OK, first_content="text", output_tokens=5, stop_reason="end_turn"),
    "bedrock-disconnect": Expect(CONNECTION_ERROR, "connection_lost", first_content="text", output_tokens=1),
    "bedrock-bad-checksum": Expect(PROTOCOL_ERROR, "invalid_event", first_content="text", output_tokens=1),
    "bedrock-not-an-event": Expect(PROTOCOL_ERROR, "invalid_event", first_content="text", output_tokens=1),
    "bedrock-cut-message": Expect(PROTOCOL_ERROR, "invalid_event", first_content="text", output_tokens=4, stop_reason="end_turn"),
    "bedrock-throttled": Expect(RATE_LIMITED, "throttlingException", first_content="text", output_tokens=1),
}


# ----------------------------------------------------------------------------------------
# Fixtures


@dataclass
class Replay:
    url: str
    log: Path

    def entry(self, tag: str, wait_s: float = 10.0) -> dict[str, Any]:
        """The server's log line for the request tagged `tag` (it is written after the last byte)."""
        deadline = time.monotonic() + wait_s
        while True:
            for line in self.log.read_bytes().split(b"\n")[:-1]:  # the last piece may be a line being written
                if line.strip() and (entry := json.loads(line))["tag"] == tag:
                    return entry
            if time.monotonic() > deadline:
                raise AssertionError(f"the replay server logged no request tagged {tag}")
            time.sleep(0.005)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    log = tmp_path_factory.mktemp("replay") / "replay.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "support" / "replay_server.py"), "--log", str(log)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 15)
        assert ready, "the replay server did not start within 15 s"
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield Replay(line.split()[-1], log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Transport:
    """One transport of tests/support/transport_child.py (a gevent-patched process, as inside Locust)."""

    def __init__(self, child: subprocess.Popen[str], name: str, url: str, platform: dict[str, str] | None = None) -> None:
        self.child, self.name, self.url, self.platform = child, name, url, platform

    def send(self, body: dict[str, Any], stream: bool, timeouts: Timeouts) -> TimingRecord:
        command = {"url": self.url, "transport": self.name, "body": body, "stream": stream, "timeouts": timeouts.model_dump()}
        if self.platform is not None:
            command["platform"] = self.platform
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps(command) + "\n")
        self.child.stdin.flush()
        ready, _, _ = select.select([self.child.stdout], [], [], timeouts.total_s + OVERRUN_S)
        assert ready, "send() overran its timeout"
        return TimingRecord(**json.loads(self.child.stdout.readline()))


@contextmanager
def transport_child(url: str) -> Iterator[dict[str, Transport]]:
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.support.transport_child"], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        yield {**{name: Transport(child, name, url) for name in ("fast", "sdk")}, "bedrock": Transport(child, "sdk", url, BEDROCK)}
    finally:
        child.kill()
        child.wait(10)


@pytest.fixture(scope="module")
def transports(replay: Replay) -> Iterator[dict[str, Transport]]:
    with transport_child(replay.url) as made:
        for name, transport in made.items():  # warm up: the SDK's first request imports and builds a lot
            record, _ = send(replay, transport, "bedrock-ok-text" if name == "bedrock" else "ok-text")
            assert record.outcome == OK, record
        yield made


def send(replay: Replay, transport: Transport, script: str, stream: bool = True) -> tuple[TimingRecord, dict[str, Any]]:
    tag = uuid.uuid4().hex
    body = {
        "model": script,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": stream,
        "metadata": {"user_id": tag},
    }
    record = transport.send(body, stream, TIMEOUT_SCRIPTS.get(script, Timeouts(total_s=TIMEOUT_S)))
    return record, replay.entry(tag)


def arrival_error_ms(record: TimingRecord, field: str, entry: dict[str, Any], mark: str) -> float:
    """When the harness saw it minus when the server wrote it (both perf_counter_ns)."""
    return (record.start_ns + getattr(record, field) * 1e6 - entry["marks"][mark]) / 1e6


def client_part_ms(record: TimingRecord, field: str, entry: dict[str, Any], mark: str) -> float:
    """The field's value minus the server's own delay (request read to `mark` written)."""
    return getattr(record, field) - (entry["marks"][mark] - entry["t_request_ns"]) / 1e6


# ----------------------------------------------------------------------------------------
# Tests


def test_every_script_has_an_expectation() -> None:
    assert set(EXPECTED) == set(replay_server.SCRIPTS) and set(BEDROCK_EXPECTED) == set(replay_server.BEDROCK_SCRIPTS)


def _check_expected(
    script: str, name: str, record: TimingRecord, entry: dict[str, Any], problems: list[str], expect: Expect, api: bool = True
) -> None:
    """The outcome and fields this script must produce, whatever the transport (`api`: sent to
    the Anthropic API, not to a platform, which takes the version in the body)."""

    def check(what: str, ok: bool, got: Any) -> None:
        if not ok:
            problems.append(f"{name}: {what}: got {got!r}")

    check(f"outcome == {expect.outcome}", record.outcome == expect.outcome, record.outcome)
    if expect.error_type == "*":
        check("an error_type", bool(record.error_type), record.error_type)
    else:
        check(f"error_type == {expect.error_type}", record.error_type == expect.error_type, record.error_type)
    says = {"first_byte_timeout": "no response headers within ", "timeout": "no complete response within "}.get(record.error_type or "")
    if says:  # a limit's message, made when it expired (harness/deadlines.py's Limit)
        check(f"error_message says {says!r}", says in (record.error_message or ""), record.error_message)
    check(f"http_status == {expect.http_status}", record.http_status == expect.http_status, record.http_status)
    request_id = f"req_{script}" if expect.http_status is not None else None  # no headers, no id
    check(f"request_id == {request_id}", record.request_id == request_id, record.request_id)
    check(f"first_content == {expect.first_content}", record.first_content == expect.first_content, record.first_content)
    check(f"output_tokens == {expect.output_tokens}", record.output_tokens == expect.output_tokens, record.output_tokens)
    check(f"stop_reason == {expect.stop_reason}", record.stop_reason == expect.stop_reason, record.stop_reason)
    retry_after = 7.0 if script == "http-429" else None  # the only script with a retry-after header
    check(f"retry_after_s == {retry_after}", record.retry_after_s == retry_after, record.retry_after_s)
    usage = (record.input_tokens, record.cache_read_tokens, record.cache_creation_tokens)
    if expect.usage:
        wanted = (replay_server.INPUT_TOKENS, replay_server.CACHE_READ, replay_server.CACHE_CREATION)
        check(f"input/cache tokens == {wanted}", usage == wanted, usage)
    else:
        check("no usage", usage == (None, None, None) and record.output_tokens is None, usage)
    check(
        f"first_thinking_ms set == {expect.thinking}", (record.first_thinking_ms is not None) == expect.thinking, record.first_thinking_ms
    )
    # every response had headers (but the one meant to have none) and was read to some end
    check("ttfb_ms set", (record.ttfb_ms is not None) == (expect.http_status is not None), record.ttfb_ms)
    check("latency_ms set", record.latency_ms is not None, record.latency_ms)
    if record.ttfb_ms is not None and record.latency_ms is not None:
        check("latency_ms >= ttfb_ms", record.latency_ms >= record.ttfb_ms - EPS_MS, (record.ttfb_ms, record.latency_ms))
    if record.ttft_ms is not None:  # the first text is a content delta: the last one is known too
        check(
            "last_token_ms and max_gap_ms set (ttft_ms is)",
            record.last_token_ms is not None and record.max_gap_ms is not None,
            (record.last_token_ms, record.max_gap_ms),
        )
        if record.last_token_ms is not None:
            check("last_token_ms >= ttft_ms", record.last_token_ms >= record.ttft_ms, (record.ttft_ms, record.last_token_ms))
    if script in TIMEOUT_SCRIPTS:  # given up at its limit: never before it, and not at the server's own limit
        low, high = LIMIT_S * 1000 - 50, (LIMIT_S + CHECK_S + OVERRUN_S) * 1000
        check(f"{low} <= latency_ms < {high}", record.latency_ms is not None and low <= record.latency_ms < high, record.latency_ms)
    if not expect.stream:  # blocking requests have no TTFT, never a copy of the latency
        stream_only = (record.ttft_ms, record.first_content, record.message_start_ms, record.last_token_ms, record.max_gap_ms)
        check("no stream timings", stream_only == (None,) * 5, stream_only)
    # the server got the version the target asked for, and some credential header
    if api:
        check(f"anthropic-version {VERSION} sent", entry["header_values"].get("anthropic-version") == VERSION, entry["header_values"])
    check("a credential header sent", bool({"x-api-key", "authorization"} & set(entry["header_names"])), entry["header_names"])
    check(f"stream={expect.stream} sent", entry["stream"] is expect.stream, entry["stream"])


@pytest.mark.parametrize("script", list(BEDROCK_EXPECTED))
def test_a_bedrock_stream_ends_as_it_broke(replay: Replay, transports: dict[str, Any], script: str) -> None:
    """Bedrock's AWS event-stream framing broken mid-stream (the SDK transport on the platform):
    a bad checksum or a message that is no event is the stream's protocol error, as a malformed
    SSE event is; a cut message at the body's end too; an exception message is the API's error."""
    problems: list[str] = []
    for rep in range(2):
        record, entry = send(replay, transports["bedrock"], script)
        _check_expected(script, f"bedrock rep {rep}", record, entry, problems, BEDROCK_EXPECTED[script], api=False)
        assert entry["request_line"].startswith(f"POST /model/{script}/invoke-with-response-stream "), entry
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("script", list(EXPECTED))
def test_both_transports_give_the_same_record(replay: Replay, transports: dict[str, Any], script: str) -> None:
    expect = EXPECTED[script]
    runs: dict[str, list[tuple[TimingRecord, dict[str, Any]]]] = {"fast": [], "sdk": []}
    reps = TIMEOUT_REPS if script in TIMEOUT_SCRIPTS else REPS
    for rep in range(reps):
        order = ("fast", "sdk") if rep % 2 == 0 else ("sdk", "fast")
        for name in order:
            runs[name].append(send(replay, transports[name], script, expect.stream))

    problems: list[str] = []  # every divergence of this script, reported together
    for name, samples in runs.items():
        for rep, (record, entry) in enumerate(samples):
            _check_expected(script, f"{name} rep {rep}", record, entry, problems, expect)

    # the two transports agree field by field on every repetition
    for rep, ((fast, _), (sdk, _)) in enumerate(zip(runs["fast"], runs["sdk"])):
        for field in IDENTICAL:
            if field == "events" and script in TIMEOUT_SCRIPTS:
                continue  # how many pings or deltas came before the limit depends on the moment it struck
            if getattr(fast, field) != getattr(sdk, field):
                problems.append(f"rep {rep}: {field} differs: fast={getattr(fast, field)!r} sdk={getattr(sdk, field)!r}")
        for field in PRESENCE:
            if (getattr(fast, field) is None) != (getattr(sdk, field) is None):
                problems.append(f"rep {rep}: {field} set in one transport only: fast={getattr(fast, field)!r} sdk={getattr(sdk, field)!r}")

    # timings against the server's write times (both clocks are CLOCK_MONOTONIC). Noise on
    # a shared VM only ever adds delay, while a systematic error (buffering, the wrong event
    # taken as the first token) shows in every sample: so causality is checked on every
    # sample and lateness on the best of the REPS samples, against half the server's pauses.
    client_parts: dict[tuple[str, str], dict[str, float]] = {}
    for field, mark in TIMED:
        if mark == "last_delta" and script in TIMEOUT_SCRIPTS:
            continue  # the server may write one more delta after the client gave up: it was never read
        for name, samples in runs.items():
            pairs = [(r, e) for r, e in samples if mark in e["marks"] and getattr(r, field) is not None]
            if not pairs:
                continue
            errors = [round(arrival_error_ms(r, field, e, mark), 3) for r, e in pairs]
            if min(errors) < -EPS_MS:  # the empty text delta comes FIRST_GAP_MS before first_text
                problems.append(f"{name}: {field} seen before the server wrote {mark}: errors {errors} ms")
            if min(errors) >= TRUTH_ERROR_MS:
                problems.append(f"{name}: {field} late against {mark}: errors {errors} ms, best >= {TRUTH_ERROR_MS}")
            # the part of the value the client is responsible for: from start_ns to the
            # request reaching the server, plus the lateness above (server jitter removed)
            client_parts.setdefault((field, mark), {})[name] = min(client_part_ms(r, field, e, mark) for r, e in pairs)
    for name, samples in runs.items():
        gaps = [(r.max_gap_ms, e["max_delta_gap_ms"]) for r, e in samples if r.max_gap_ms is not None and "max_delta_gap_ms" in e]
        if gaps and min(abs(got - truth) for got, truth in gaps) >= TRUTH_ERROR_MS:
            problems.append(f"{name}: max_gap_ms off the server's largest pause by >= {TRUTH_ERROR_MS} ms: (harness, server) = {gaps}")

    # timings between the transports: the same value within TTFT_AGREEMENT_MS
    for (field, _mark), parts in client_parts.items():
        if len(parts) == 2 and abs(parts["fast"] - parts["sdk"]) >= TTFT_AGREEMENT_MS:
            problems.append(f"{field}: fast and sdk differ by >= {TTFT_AGREEMENT_MS} ms (client part, best of {reps}): {parts}")

    assert not problems, f"{script}:\n  " + "\n  ".join(problems)


def test_both_transports_send_the_version_and_the_key_as_x_api_key(replay: Replay, transports: dict[str, Any]) -> None:
    """The Messages API authenticates with `x-api-key`; send it (and only its name is logged)."""
    sent = {name: send(replay, transports[name], "ok-text")[1] for name in ("fast", "sdk")}
    for name, entry in sent.items():
        assert entry["header_values"].get("anthropic-version") == VERSION, (name, entry["header_values"])
    assert {name: "x-api-key" in entry["header_names"] for name, entry in sent.items()} == {"fast": True, "sdk": True}, {
        name: entry["header_names"] for name, entry in sent.items()
    }


def test_the_api_key_never_reaches_the_log(replay: Replay, transports: dict[str, Any]) -> None:
    for transport in transports.values():
        send(replay, transport, "ok-text")
    text = replay.log.read_text(encoding="utf-8")
    assert text.count("\n") >= 2
    assert API_KEY not in text


def test_a_connection_that_is_never_accepted_ends_at_the_connect_timeout() -> None:
    """A listener whose accept queue is full: the kernel drops further SYNs, connecting hangs."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = []
    try:
        port = listener.getsockname()[1]
        for _ in range(4):  # fill the accept queue: these connect, later ones cannot
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        with transport_child(f"http://127.0.0.1:{port}") as made:
            for name, transport in made.items():
                body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}], "stream": True}
                record = transport.send(body, True, Timeouts(connect_s=LIMIT_S, total_s=TIMEOUT_S))
                assert (record.outcome, record.error_type, record.http_status) == (TIMEOUT, "connect_timeout", None), (name, record)
                assert LIMIT_S * 1000 - 50 <= record.latency_ms < (LIMIT_S + OVERRUN_S) * 1000, (name, record.latency_ms)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
