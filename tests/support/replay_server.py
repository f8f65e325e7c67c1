"""A scripted Messages API stand-in that replays recorded streams, faults included.

Independent of the emulator and of the harness (stdlib only). Each POST picks a script by
the request body's `model` field; a script is a list of steps run in order on the socket:

    ("write", bytes, mark)  write raw bytes; if mark is set, log its perf_counter_ns write time
    ("sleep", ms)           pause: the next step is due ms after the previous one was due
    ("close",)              close the socket abruptly (no terminating chunk, no more bytes)
    ("stall",)              send nothing more until the client gives up (closes the socket)

After a script ends normally the connection is kept alive for the next request. One JSON
line per request goes to the --log file: the script, the `metadata.user_id` tag of the
request body (so a test can find its request), the names of the request headers it got
(values only for anthropic-version and anthropic-beta: never the API key), when the body
was read (`t_request_ns`) and the write time of each mark (`first_text` = the first
non-empty text delta, `empty_text`, `message_start`, `first_thinking`, `first_tool`, `body`;
always `headers` = the status line, and `last_delta` = the last content_block_delta), and
`max_delta_gap_ms`, the largest pause between two content_block_delta writes.

Bedrock's streams (`POST /model/{script}/invoke-with-response-stream`, the script named in
the path as Bedrock names the model there) come from BEDROCK_SCRIPTS: the same events in AWS
event-stream framing, one message per event, and messages broken in the ways a stream can
break (a bad checksum, a payload that is not an event, a message cut short, an exception).

    python tests/support/replay_server.py --log FILE     # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from typing import Any
from urllib.parse import unquote

Step = tuple[Any, ...]

LOGGED_HEADER_VALUES = ("anthropic-version", "anthropic-beta")
# Every pause between two writes that the tests tell apart is at least DELTA_GAP_MS, large
# next to the delays of a loaded machine: a client that times the wrong write is off by a
# whole gap. The pause after an empty delta is twice that, so it is the largest pause
# between two content deltas (what `max_delta_gap_ms` reports).
DELTA_GAP_MS = 50
FIRST_GAP_MS = 2 * DELTA_GAP_MS
STALL_LIMIT_S = 60.0  # a stalled response gives up by itself after this, whatever the client does


# ----------------------------------------------------------------------------------------
# Framing


def chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


LAST_CHUNK = b"0\r\n\r\n"


def sse(kind: str, data: Any, newline: str = "\n") -> bytes:
    """One SSE event as one chunked-encoding chunk. `data` may be a dict or a raw string."""
    text = data if isinstance(data, str) else json.dumps(data)
    return chunk(f"event: {kind}{newline}data: {text}{newline}{newline}".encode())


def stream_head(script: str) -> bytes:
    return (
        "HTTP/1.1 200 OK\r\n"
        "content-type: text/event-stream; charset=utf-8\r\n"
        "cache-control: no-cache\r\n"
        "transfer-encoding: chunked\r\n"
        f"request-id: req_{script}\r\n"
        "\r\n"
    ).encode()


def json_response(script: str, status: int, reason: str, body: bytes, content_type: str = "application/json", extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"content-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        f"request-id: req_{script}\r\n"
        f"{extra}"
        "\r\n"
    ).encode() + body


def error_body(script: str, error_type: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}, "request_id": f"req_{script}"}).encode()


# ----------------------------------------------------------------------------------------
# Events

INPUT_TOKENS = 17
CACHE_READ = 3
CACHE_CREATION = 2


def message_start(script: str) -> dict:
    usage = {
        "input_tokens": INPUT_TOKENS,
        "output_tokens": 1,
        "cache_read_input_tokens": CACHE_READ,
        "cache_creation_input_tokens": CACHE_CREATION,
    }
    message = {
        "id": f"msg_{script}",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": script,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return {"type": "message_start", "message": message}


def block_start(index: int, block: dict) -> dict:
    return {"type": "content_block_start", "index": index, "content_block": block}


def delta(index: int, body: dict) -> dict:
    return {"type": "content_block_delta", "index": index, "delta": body}


def text_delta(index: int, text: str) -> dict:
    return delta(index, {"type": "text_delta", "text": text})


def block_stop(index: int) -> dict:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, output_tokens: int) -> dict:
    usage = {
        "input_tokens": INPUT_TOKENS,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": CACHE_READ,
        "cache_creation_input_tokens": CACHE_CREATION,
    }
    return {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": usage}


MESSAGE_STOP = {"type": "message_stop"}
PING = {"type": "ping"}


def w(data: bytes, mark: str | None = None) -> Step:
    return ("write", data, mark)


def sleep(ms: float) -> Step:
    return ("sleep", ms)


def text_block(index: int, count: int = 5, newline: str = "\n", first_mark: str = "first_text") -> list[Step]:
    """A text block: start, an EMPTY text delta, FIRST_GAP_MS, then `count` deltas DELTA_GAP_MS apart."""
    steps: list[Step] = [
        w(sse("content_block_start", block_start(index, {"type": "text", "text": ""}), newline)),
        w(sse("content_block_delta", text_delta(index, ""), newline), "empty_text"),
        sleep(FIRST_GAP_MS),
    ]
    for i in range(count):
        if i:
            steps.append(sleep(DELTA_GAP_MS))
        steps.append(w(sse("content_block_delta", text_delta(index, f" word{i}"), newline), first_mark if i == 0 else None))
    steps.append(w(sse("content_block_stop", block_stop(index), newline)))
    return steps


def opening(script: str, newline: str = "\n") -> list[Step]:
    """Headers, then message_start and a ping DELTA_GAP_MS later."""
    return [
        w(stream_head(script)),
        sleep(DELTA_GAP_MS),
        w(sse("message_start", message_start(script), newline) + sse("ping", PING, newline), "message_start"),
    ]


def ending(stop_reason: str = "end_turn", output_tokens: int = 5, newline: str = "\n") -> list[Step]:
    return [
        sleep(DELTA_GAP_MS),
        w(sse("message_delta", message_delta(stop_reason, output_tokens), newline)),
        w(sse("message_stop", MESSAGE_STOP, newline) + LAST_CHUNK),
    ]


def thinking_block(index: int, deltas: int) -> list[Step]:
    steps: list[Step] = [w(sse("content_block_start", block_start(index, {"type": "thinking", "thinking": "", "signature": ""})))]
    for i in range(deltas):
        steps += [
            sleep(DELTA_GAP_MS),
            w(
                sse("content_block_delta", delta(index, {"type": "thinking_delta", "thinking": f" step{i}"})),
                "first_thinking" if i == 0 else None,
            ),
        ]
    steps += [
        sleep(DELTA_GAP_MS),
        w(
            sse("content_block_delta", delta(index, {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"})),
            None if deltas else "first_thinking",
        ),
        w(sse("content_block_stop", block_stop(index))),
    ]
    return steps


def midstream_error(script: str, error_type: str, message: str) -> list[Step]:
    return [
        *opening(script),
        *text_block(0, count=3)[:-1],  # no content_block_stop: the error cuts the block
        sleep(DELTA_GAP_MS),
        w(sse("error", {"type": "error", "error": {"type": error_type, "message": message}}) + LAST_CHUNK),
    ]


def blocking_body(script: str) -> bytes:
    return json.dumps(
        {
            "id": f"msg_{script}",
            "type": "message",
            "role": "assistant",
            "model": script,
            "content": [{"type": "text", "text": "Hello there, friend."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": INPUT_TOKENS,
                "output_tokens": 6,
                "cache_read_input_tokens": CACHE_READ,
                "cache_creation_input_tokens": CACHE_CREATION,
            },
        }
    ).encode()


def plain_events(chunked: bytes) -> bytes:
    """The SSE bytes inside chunked-encoding chunks (to compress them as one body)."""
    out, rest = b"", chunked
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        out, rest = out + rest[:size], rest[size + 2 :]
    return out


def _scripts() -> dict[str, list[Step]]:
    s: dict[str, list[Step]] = {}
    s["ok-text"] = [*opening("ok-text"), *text_block(0), *ending()]
    s["thinking-signature-only"] = [
        *opening("thinking-signature-only"),
        *thinking_block(0, 0),
        sleep(10),
        *text_block(1),
        *ending(output_tokens=9),
    ]
    s["thinking-deltas"] = [*opening("thinking-deltas"), *thinking_block(0, 3), sleep(10), *text_block(1), *ending(output_tokens=12)]
    tool = {"type": "tool_use", "id": "toolu_replay", "name": "get_weather", "input": {}}
    parts = ['{"city": ', '"Par', 'is"}']
    s["tool-use"] = [
        *opening("tool-use"),
        w(sse("content_block_start", block_start(0, tool))),
        w(sse("content_block_delta", delta(0, {"type": "input_json_delta", "partial_json": ""}))),
        sleep(FIRST_GAP_MS),
        *[
            step
            for i, part in enumerate(parts)
            for step in (
                *([sleep(DELTA_GAP_MS)] if i else []),
                w(
                    sse("content_block_delta", delta(0, {"type": "input_json_delta", "partial_json": part})),
                    "first_tool" if i == 0 else None,
                ),
            )
        ],
        w(sse("content_block_stop", block_stop(0))),
        *ending("tool_use", output_tokens=7),
    ]
    s["midstream-overloaded"] = midstream_error("midstream-overloaded", "overloaded_error", "Overloaded")
    s["midstream-api-error"] = midstream_error("midstream-api-error", "api_error", "Internal server error")
    s["missing-stop"] = [*opening("missing-stop"), *text_block(0), sleep(DELTA_GAP_MS), w(LAST_CHUNK)]
    s["disconnect"] = [*opening("disconnect"), *text_block(0, count=3)[:-1], sleep(DELTA_GAP_MS), ("close",)]
    s["http-429"] = [
        sleep(5),
        w(
            json_response(
                "http-429",
                429,
                "Too Many Requests",
                error_body("http-429", "rate_limit_error", "Number of request tokens has exceeded your rate limit"),
                extra="retry-after: 7\r\nanthropic-ratelimit-requests-remaining: 0\r\n",
            )
        ),
    ]
    s["http-529"] = [
        sleep(5),
        w(json_response("http-529", 529, "Site Overloaded", error_body("http-529", "overloaded_error", "Overloaded"))),
    ]
    s["http-500"] = [
        sleep(5),
        w(json_response("http-500", 500, "Internal Server Error", error_body("http-500", "api_error", "Internal server error"))),
    ]
    s["http-400"] = [
        sleep(5),
        w(json_response("http-400", 400, "Bad Request", error_body("http-400", "invalid_request_error", "max_tokens: field required"))),
    ]
    moved = b"<html><body>Moved</body></html>\n"
    s["http-302"] = [
        sleep(5),
        w(
            json_response(
                "http-302", 302, "Found", moved, content_type="text/html", extra="location: https://elsewhere.example/v1/messages\r\n"
            )
        ),
    ]
    html = b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>\n"
    s["http-502-html"] = [sleep(5), w(json_response("http-502-html", 502, "Bad Gateway", html, content_type="text/html"))]
    body = blocking_body("blocking-ok")
    s["blocking-ok"] = [sleep(50), w(json_response("blocking-ok", 200, "OK", body), "body")]
    s["stall"] = [*opening("stall"), ("stall",)]  # headers, then nothing
    s["no-headers"] = [("stall",)]  # the request read, nothing sent
    ping = sse("ping", {"type": "ping"})
    s["ping-flood"] = [*opening("ping-flood"), *[step for _ in range(600) for step in (sleep(100), w(ping))], ("stall",)]
    s["endless-text"] = [
        *opening("endless-text"),
        w(sse("content_block_start", block_start(0, {"type": "text", "text": ""}))),
        *[
            step
            for i in range(600)
            for step in (sleep(100), w(sse("content_block_delta", text_delta(0, "word ")), "first_text" if i == 0 else None))
        ],
        ("stall",),
    ]
    s["garbage-event"] = [
        *opening("garbage-event"),
        w(sse("content_block_start", block_start(0, {"type": "text", "text": ""}))),
        w(sse("content_block_delta", '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_')),  # cut JSON
        *text_block(0)[1:],
        *ending(),
    ]
    cut = '{"type": "content_block_delta", "index": 0, "delta": {"type": "text_'
    s["garbage-after-text"] = [
        *opening("garbage-after-text"),
        *text_block(0)[:5],
        w(sse("content_block_delta", cut)),
        *text_block(0)[5:],
        *ending(),
    ]
    broken = b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "\xff\xfe"}}\n\n'
    s["bad-utf8-after-text"] = [*opening("bad-utf8-after-text"), *text_block(0)[:5], w(chunk(broken)), *text_block(0)[5:], *ending()]
    html_page = b"<html><body><h1>Welcome to our proxy</h1></body></html>\n"
    s["html-200-stream"] = [sleep(5), w(json_response("html-200-stream", 200, "OK", html_page, content_type="text/html; charset=utf-8"))]
    s["gzip-blocking"] = [
        sleep(50),
        w(
            json_response("gzip-blocking", 200, "OK", gzip.compress(blocking_body("gzip-blocking")), extra="content-encoding: gzip\r\n"),
            "body",
        ),
    ]
    plain = b"".join(step[1] for step in [*opening("gzip-stream"), *text_block(0), *ending()][1:] if step[0] == "write")
    events = plain_events(plain)
    head = stream_head("gzip-stream").replace(b"transfer-encoding: chunked", b"content-encoding: gzip\r\ntransfer-encoding: chunked")
    s["gzip-stream"] = [w(head + chunk(gzip.compress(events)) + LAST_CHUNK)]
    s["crlf"] = [*opening("crlf", "\r\n"), *text_block(0, newline="\r\n"), *ending(newline="\r\n")]
    s["unknown-event"] = [
        *opening("unknown-event"),
        *text_block(0)[:5],  # start, empty delta, pause, first text, pause
        w(sse("future_event_kind", {"type": "future_event_kind", "detail": {"novel": True}})),
        *text_block(0)[5:],
        *ending(),
    ]
    # A raw U+2028 (LINE SEPARATOR) in the first text: valid JSON, no line break for SSE.
    s["unicode-separator"] = [
        *opening("unicode-separator"),
        w(sse("content_block_start", block_start(0, {"type": "text", "text": ""}))),
        sleep(FIRST_GAP_MS),
        w(sse("content_block_delta", json.dumps(text_delta(0, "line\u2028separator"), ensure_ascii=False)), "first_text"),
        sleep(DELTA_GAP_MS),
        w(sse("content_block_delta", text_delta(0, " end"))),
        w(sse("content_block_stop", block_stop(0))),
        *ending(output_tokens=3),
    ]
    return s


SCRIPTS = _scripts()


# ----------------------------------------------------------------------------------------
# Bedrock: AWS event-stream framing

BEDROCK_STREAM = re.compile(r"^POST /model/([^/ ]+)/invoke-with-response-stream ")
CHUNK_HEADERS = ((":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event"))


def aws_message(headers: tuple[tuple[str, str], ...], payload: bytes) -> bytes:
    """One AWS event-stream message, written here from the format (not the emulator's code:
    botocore's decoder checks both): total and headers lengths, their CRC32, the headers
    (name length, name, type 7 = string, value length, value), the payload, the CRC32 of all."""

    def u(n: int, size: int = 4) -> bytes:
        return n.to_bytes(size, "big")

    fields = b"".join(u(len(k), 1) + k.encode() + b"\x07" + u(len(v.encode()), 2) + v.encode() for k, v in headers)
    lengths = u(16 + len(fields) + len(payload)) + u(len(fields))
    body = lengths + u(zlib.crc32(lengths)) + fields + payload
    return body + u(zlib.crc32(body))


def event_message(event: bytes) -> bytes:
    """An API event's JSON as Bedrock sends it: a `chunk` message with the JSON in base64."""
    return aws_message(CHUNK_HEADERS, json.dumps({"bytes": base64.b64encode(event).decode()}).encode())


def on_bedrock(steps: list[Step]) -> list[Step]:
    """A script's writes as Bedrock frames them: its head's content type, each SSE event a message."""
    out: list[Step] = []
    for step in steps:
        if step[0] == "write":
            data = step[1]
            if data.startswith(b"HTTP/"):
                data = data.replace(b"text/event-stream; charset=utf-8", b"application/vnd.amazon.eventstream")
            else:
                events = [line[6:] for line in plain_events(data).split(b"\n") if line.startswith(b"data: ")]
                data = (chunk(b"".join(map(event_message, events))) if events else b"") + (LAST_CHUNK if data.endswith(LAST_CHUNK) else b"")
            step = ("write", data, step[2])
        out.append(step)
    return out


def _bedrock_scripts() -> dict[str, list[Step]]:
    def started(script: str) -> list[Step]:  # the head, message_start, a text block's first deltas
        return on_bedrock([*opening(script), *text_block(0, count=3)[:-1]])

    last_delta = event_message(json.dumps(text_delta(0, " last")).encode())
    stop = event_message(json.dumps(MESSAGE_STOP).encode())
    rest = on_bedrock([w(sse("content_block_stop", block_stop(0))), *ending(output_tokens=4)])
    exception = ((":exception-type", "throttlingException"), (":content-type", "application/json"), (":message-type", "exception"))
    s: dict[str, list[Step]] = {}
    s["bedrock-ok-text"] = on_bedrock([*opening("bedrock-ok-text"), *text_block(0), *ending()])
    s["bedrock-disconnect"] = [*started("bedrock-disconnect"), sleep(DELTA_GAP_MS), ("close",)]
    # a message whose last byte (its CRC's) is wrong, then the rest of a clean stream
    s["bedrock-bad-checksum"] = [*started("bedrock-bad-checksum"), w(chunk(last_delta[:-1] + bytes([last_delta[-1] ^ 1]))), *rest]
    s["bedrock-not-an-event"] = [*started("bedrock-not-an-event"), w(chunk(aws_message(CHUNK_HEADERS, b"not json"))), *rest]
    # the stream's last message cut short, then the body's end
    s["bedrock-cut-message"] = [*started("bedrock-cut-message"), *rest[:-1], w(chunk(stop[: len(stop) // 2]) + LAST_CHUNK)]
    s["bedrock-throttled"] = [
        *started("bedrock-throttled"),
        w(chunk(aws_message(exception, b'{"message":"Too many requests, please wait before trying again."}')) + LAST_CHUNK),
    ]
    return s


BEDROCK_SCRIPTS = _bedrock_scripts()


# ----------------------------------------------------------------------------------------
# Server


class Handler(socketserver.StreamRequestHandler):
    log_file: Any = None
    log_lock = threading.Lock()

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while self._one_request():
                pass
        except (ConnectionError, OSError):
            pass  # the client went away

    def _one_request(self) -> bool:
        request_line = self.rfile.readline()
        if not request_line:
            return False
        headers: dict[str, str] = {}
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = self.rfile.read(int(headers.get("content-length") or 0))
        t_request_ns = time.perf_counter_ns()
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        bedrock = BEDROCK_STREAM.match(request_line.decode("latin-1"))
        script = unquote(bedrock.group(1)) if bedrock else str(request.get("model", ""))
        entry: dict[str, Any] = {
            "script": script,
            "tag": (request.get("metadata") or {}).get("user_id"),
            "stream": bool(request.get("stream")) or bedrock is not None,  # (Bedrock: the path says it)
            "request_line": request_line.decode("latin-1").strip(),
            "header_names": sorted(headers),
            "header_values": {k: headers[k] for k in LOGGED_HEADER_VALUES if k in headers},
            "t_request_ns": t_request_ns,
            "marks": {},
        }
        steps = BEDROCK_SCRIPTS.get(script) if bedrock else SCRIPTS.get(script)
        if steps is None:
            steps = [
                w(json_response(script or "unknown", 404, "Not Found", error_body(script, "not_found_error", f"no script {script!r}")))
            ]
        due_ns = t_request_ns
        for step in steps:
            kind = step[0]
            if kind == "write":
                now = time.perf_counter_ns()
                try:
                    self.wfile.write(step[1])
                    self.wfile.flush()
                except OSError:  # the client gave up (a timeout of its own): what was sent is logged
                    entry["end"] = "client left"
                    self._log(entry)
                    return False
                self._mark(entry, now, step[1], step[2])
            elif kind == "sleep":  # on a schedule from the request's arrival: no drift builds up
                due_ns += int(step[1] * 1_000_000)
                if (delay_ns := due_ns - time.perf_counter_ns()) > 0:
                    time.sleep(delay_ns / 1e9)
            elif kind == "close":
                entry["end"] = "closed"
                self._log(entry)
                self.connection.shutdown(socket.SHUT_RDWR)
                return False
            elif kind == "stall":
                entry["end"] = "stalled"
                self._log(entry)
                self._wait_for_client_to_leave()
                return False
        entry["end"] = "complete"
        self._log(entry)
        return True

    @staticmethod
    def _mark(entry: dict[str, Any], now: int, data: bytes, mark: str | None) -> None:
        marks = entry["marks"]
        if not marks:
            marks["headers"] = now  # every script's first write starts with the status line
        if mark and mark not in marks:
            marks[mark] = now
        if b"event: content_block_delta" in data:  # what the harness counts as content
            if "last_delta" in marks:
                gap_ms = (now - marks["last_delta"]) / 1e6
                entry["max_delta_gap_ms"] = max(entry.get("max_delta_gap_ms", 0.0), gap_ms)
            marks["last_delta"] = now

    def _wait_for_client_to_leave(self) -> None:
        self.connection.settimeout(STALL_LIMIT_S)
        try:
            while self.connection.recv(65536):
                pass
        except OSError:
            pass

    def _log(self, entry: dict[str, Any]) -> None:
        with self.log_lock:
            self.log_file.write(json.dumps(entry) + "\n")
            self.log_file.flush()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", required=True, help="JSON lines, one per request")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with open(args.log, "a", encoding="utf-8") as Handler.log_file:
        server = Server(("127.0.0.1", args.port), Handler)
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
