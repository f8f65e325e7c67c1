"""The emulator's wire format: HTTP/1.1 heads, chunked framing, SSE events, JSON bodies.

Everything here parses a request head or returns the exact bytes (or text) the emulator
writes; nothing here knows
about connections, timing or randomness. The per-response events whose values change are
%-templates (`MESSAGE_START`, `MESSAGE_DELTA`): encoding a nested dict per response was a
tenth of the emulator's CPU at 1000 streams. The filler text of the responses is made of
the words in `TEXT_TOKENS` and `THINKING_TOKENS`, one token per word (with its leading space).
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any, NamedTuple
from urllib.parse import parse_qs

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    529: "Overloaded",
}
ERROR_TYPES = {  # the API's error type of each error status
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    411: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}

_TEXT_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "shine",
    "above",
    "quiet",
    "rivers",
    "and",
    "tall",
    "green",
    "mountains",
    "where",
    "patient",
    "travelers",
    "rest",
    "beside",
    "warm",
    "fires",
    "telling",
    "old",
    "stories",
    "about",
    "distant",
    "cities",
    "built",
    "from",
    "stone",
    "glass",
    "and",
    "light",
    "so",
    "every",
    "careful",
    "answer",
    "takes",
    "shape",
    "one",
    "small",
    "token",
    "at",
    "a",
    "time",
]
_THINKING_WORDS = [
    "let",
    "me",
    "think",
    "about",
    "this",
    "step",
    "by",
    "step",
    "first",
    "consider",
    "what",
    "the",
    "user",
    "asks",
    "then",
    "check",
    "each",
    "part",
    "of",
    "the",
    "question",
    "and",
    "weigh",
    "possible",
    "answers",
    "before",
    "writing",
    "a",
    "clear",
    "response",
    "that",
    "is",
    "helpful",
    "accurate",
    "and",
    "concise",
]
TEXT_TOKENS = [" " + w for w in _TEXT_WORDS]
THINKING_TOKENS = [" " + w for w in _THINKING_WORDS]

END_CHUNK = b"0\r\n\r\n"  # the last chunk of a chunked body


def http_chunk(payload: bytes) -> bytes:
    """`payload` framed as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def sse_event(event: str, data: str) -> bytes:
    """One SSE event framed as one HTTP chunk."""
    return http_chunk(b"event: %s\ndata: %s\n\n" % (event.encode(), data.encode()))


compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # one encoder, reused


@functools.lru_cache(maxsize=256)
def json_string(value: str) -> str:
    """A JSON string literal (model names repeat: cached)."""
    return compact_json(value)


@functools.lru_cache(maxsize=4096)
def rfc3339(unix_s: int) -> str:
    """RFC 3339 UTC time of a whole second (cached: the reset headers repeat the same few)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


# ----------------------------------------------------------------------------- HTTP


def parse_request_head(head: bytes) -> tuple[str, str, str, dict[str, str], int]:
    """(method, target, version, headers by lower-case name, content length) of a request head
    without its blank line; ValueError when it is malformed."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    clen = int(headers.get("content-length", "0") or "0")
    if clen < 0:
        raise ValueError("negative content-length")
    return method, target, version, headers, clen


@functools.lru_cache(maxsize=64)
def _head_prefix(status: int, content_type: str, chunked: bool, keep_alive: bool) -> str:
    """The fixed lines of a response head (the same few combinations repeat: cached)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}", f"content-type: {content_type}"]
    if chunked:
        lines.append("transfer-encoding: chunked")
        lines.append("cache-control: no-cache")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    return "\r\n".join(lines) + "\r\n"


def response_head(
    status: int,
    request_id: str,
    content_type: str,
    *,
    length: int | None = None,
    extra: list[tuple[str, str]] | None = None,
    keep_alive: bool = True,
) -> bytes:
    """Status line and headers; chunked transfer encoding when `length` is None."""
    head = _head_prefix(status, content_type, length is None, keep_alive) + f"request-id: {request_id}\r\n"
    if length is not None:
        head += f"content-length: {length}\r\n"
    if extra:
        head += "".join([f"{k}: {v}\r\n" for k, v in extra])
    return (head + "\r\n").encode("latin-1")


def json_response(status: int, request_id: str, obj: Any, extra: list[tuple[str, str]] | None = None, keep_alive: bool = True) -> bytes:
    """A whole response with `obj` as its JSON body."""
    body = compact_json(obj).encode()
    return response_head(status, request_id, "application/json", length=len(body), extra=extra, keep_alive=keep_alive) + body


def error_body(status: int, message: str, request_id: str, error_type: str | None = None) -> dict[str, Any]:
    """The API's error object."""
    return {
        "type": "error",
        "error": {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": request_id,
    }


_KNOWN_MODELS = [  # listed when the profile names no model; their display names
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-5-5", "Claude Haiku 5.5"),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
    ("claude-opus-5-5", "Claude Opus 5.5"),
    ("claude-fable-5-1", "Claude Fable 5.1"),
]


def models_answer(models: list[tuple[str, str | None]], target: str) -> tuple[int, Any]:
    """GET /v1/models[?limit=&after_id=&before_id=] (a page of the list) or /v1/models/{id}, for
    the (name, display name) of the profile's models: (200, the body), or (400/404, why)."""
    path, _, query = target.partition("?")
    names = models or list(_KNOWN_MODELS)
    known = dict(_KNOWN_MODELS)
    data = [
        {
            "type": "model",
            "id": n,
            "display_name": dn or known.get(n) or n,
            "created_at": "2025-10-01T00:00:00Z",
            "lifecycle": "active",
            "deprecated_at": None,
            "retires_at": None,
        }
        for n, dn in names
    ]
    if path not in ("/v1/models", "/v1/models/"):
        model_id = path[len("/v1/models/") :]
        found = [d for d in data if d["id"] == model_id]
        return (200, found[0]) if found else (404, f"model: {model_id}")
    params = {key: values[-1] for key, values in parse_qs(query).items()}
    limit = params.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        return 400, f"limit: Input should be between 1 and 1000 (got {limit!r})"
    ids = [d["id"] for d in data]
    for key in ("after_id", "before_id"):
        if key in params and params[key] not in ids:
            return 400, f"{key}: no model {params[key]!r}"
    if "before_id" in params:
        end = ids.index(params["before_id"])
        page, more = data[max(0, end - int(limit)) : end], end - int(limit) > 0
    else:
        begin = ids.index(params["after_id"]) + 1 if "after_id" in params else 0
        page, more = data[begin : begin + int(limit)], begin + int(limit) < len(data)
    first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
    return 200, {"data": page, "has_more": more, "first_id": first, "last_id": last}


def message_body(
    message_id: str, model: str, content: list[dict[str, Any]], stop_reason: str, usage: InputUsage, output_tokens: int
) -> dict[str, Any]:
    """The Message object of a blocking response."""
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_creation,
            "cache_read_input_tokens": usage.cache_read,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


# ----------------------------------------------------------------------------- SSE events of a stream

# The two per-response events whose values change, as templates.
MESSAGE_START = (
    '{"type":"message_start","message":{"id":"%s","type":"message","role":"assistant","model":%s,'
    '"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":%d,'
    '"cache_creation_input_tokens":%d,"cache_read_input_tokens":%d,"output_tokens":1,"service_tier":"standard"}}}'
)
MESSAGE_DELTA = (
    '{"type":"message_delta","delta":{"stop_reason":"%s","stop_sequence":null},"usage":{"input_tokens":%d,'
    '"cache_creation_input_tokens":%d,"cache_read_input_tokens":%d,"output_tokens":%d}}'
)


class InputUsage(NamedTuple):
    """A response's input tokens: those processed anew, written to the prompt cache, read from it."""

    input_tokens: int
    cache_creation: int = 0
    cache_read: int = 0


PING = sse_event("ping", '{"type":"ping"}')
THINKING_BLOCK_START = sse_event(
    "content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}'
)
TEXT_BLOCK_STARTS = tuple(  # by the text block's index: 1 after a thinking block, else 0
    sse_event("content_block_start", '{"type":"content_block_start","index":%d,"content_block":{"type":"text","text":""}}' % index)
    for index in (0, 1)
)
STREAM_ERROR_END = sse_event("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}') + END_CHUNK


def stream_head(
    request_id: str,
    message_id: str,
    model: str,
    usage: InputUsage,
    rate_limit_headers: list[tuple[str, str]],
    keep_alive: bool,
    ping: bool,
) -> bytes:
    """The first write of a stream: response head, message_start and (`ping`) a ping event."""
    first = response_head(200, request_id, "text/event-stream; charset=utf-8", extra=rate_limit_headers, keep_alive=keep_alive)
    first += sse_event("message_start", MESSAGE_START % (message_id, json_string(model), *usage))
    if ping:
        first += PING
    return first


def text_delta_event(index: int, text: str) -> bytes:
    return sse_event(
        "content_block_delta", compact_json({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
    )


def input_json_delta_event(index: int, partial_json: str) -> bytes:
    return sse_event(
        "content_block_delta",
        compact_json({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial_json}}),
    )


def tool_block_start(index: int, tool_id: str, name: str) -> bytes:
    """The content_block_start of a tool_use block (its input arrives in input_json_delta events)."""
    block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
    return sse_event("content_block_start", compact_json({"type": "content_block_start", "index": index, "content_block": block}))


TOOL_INPUT_OPEN = '{"query":"'  # a tool call's input is {"query": "<filler words>"}
TOOL_INPUT_CLOSE = '"}'


def thinking_delta_event(index: int, text: str) -> bytes:
    return sse_event(
        "content_block_delta",
        compact_json({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": text}}),
    )


def signature_events(signature: str) -> bytes:
    """The signature_delta and content_block_stop that end the thinking block (index 0)."""
    return sse_event(
        "content_block_delta",
        compact_json({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": signature}}),
    ) + sse_event("content_block_stop", '{"type":"content_block_stop","index":0}')


def stream_tail(text_index: int, stop_reason: str, usage: InputUsage, output_tokens: int, tool: bool = False) -> bytes:
    """The end of a complete stream: (a tool call's: the end of its input) the block's stop,
    message_delta (cumulative usage), message_stop, last chunk."""
    return (
        (input_json_delta_event(text_index, TOOL_INPUT_CLOSE) if tool else b"")
        + sse_event("content_block_stop", '{"type":"content_block_stop","index":%d}' % text_index)
        + sse_event("message_delta", MESSAGE_DELTA % (stop_reason, *usage, output_tokens))
        + sse_event("message_stop", '{"type":"message_stop"}')
        + END_CHUNK
    )
