"""Server-sent event lines of the Messages API's streams, as a transport reads them off the wire."""

from __future__ import annotations

import json


def sse(event: str, data: dict) -> list[bytes]:
    return [f"event: {event}\n".encode(), f"data: {json.dumps(data)}\n".encode(), b"\n"]


def message_start(input_tokens: int = 12) -> list[bytes]:
    usage = {"input_tokens": input_tokens, "output_tokens": 1, "cache_read_input_tokens": 0}
    return sse("message_start", {"type": "message_start", "message": {"id": "msg_1", "usage": usage}})


def block_start(index: int, kind: str) -> list[bytes]:
    block = {"type": kind, **({"text": ""} if kind == "text" else {"thinking": ""} if kind == "thinking" else {})}
    return sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def delta(index: int, kind: str, **fields: str) -> list[bytes]:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}})


def text(index: int, value: str) -> list[bytes]:
    return delta(index, "text_delta", text=value)


def block_stop(index: int) -> list[bytes]:
    return sse("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(output_tokens: int, stop_reason: str = "end_turn") -> list[bytes]:
    return sse(
        "message_delta",
        {"type": "message_delta", "delta": {"stop_reason": stop_reason}, "usage": {"output_tokens": output_tokens}},
    ) + sse("message_stop", {"type": "message_stop"})
