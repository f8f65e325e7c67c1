"""What a response said: its content blocks, kept for a conversation's next request.

Only a conversation's requests collect their reply (`PreparedRequest.reply`); every other
request keeps the cheap per-event path of harness/timing.py. A stream's blocks are built from
its events as the SDK's accumulator builds them (content_block_start, then text, thinking,
signature and input_json deltas, a tool call's input parsed at its content_block_stop); a
blocking response's come from its message.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["Reply"]

SETTLE_LINES = 600  # about 200 events (some 50 KB) kept at most before they are parsed


class Reply:
    """The content blocks of one response (of its last attempt: the transport clears it first).

    A stream's lines are only kept as they come (one list extension per read, off the per-event
    path); they are parsed in one go when the content is asked for, after the stream."""

    __slots__ = ("_inputs", "_lines", "blocks")

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}  # by the block's index in the response
        self._inputs: dict[int, str] = {}  # a tool call's input JSON as it streams
        self._lines: list[bytes] = []  # a stream's lines not parsed yet

    def clear(self) -> None:
        self.blocks.clear()
        self._inputs.clear()
        self._lines.clear()

    def feed(self, lines: list[bytes]) -> None:
        """SSE lines of the stream, those one read brought (a long reply is settled as it goes:
        what is kept stays under SETTLE_LINES lines)."""
        self._lines += lines
        if len(self._lines) > SETTLE_LINES:
            self._settle()

    def _settle(self) -> None:
        """The kept lines' events into blocks (only data lines matter: each carries its event's
        type). All in one parse; where that fails, event by event, the broken ones left out
        (the timer counts them as protocol errors)."""
        if not self._lines:
            return
        data = [line[5:] for line in self._lines if line.startswith(b"data:")]
        self._lines.clear()
        try:
            events = orjson.loads(b"[" + b",".join(data) + b"]")
        except ValueError:
            events = [_loaded(one) for one in data]
        for event in events:
            if isinstance(event, dict):
                self._event(event)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "content_block_delta":
            self._delta(event.get("index"), event.get("delta") or {})
        elif kind == "content_block_start":
            index = event.get("index", len(self.blocks))
            block = self.blocks[index] = dict(event.get("content_block") or {})
            if block.get("type") == "tool_use":
                self._inputs[index] = ""
        elif kind == "content_block_stop":
            index = event.get("index")
            if index in self._inputs:
                self.blocks[index]["input"] = _parsed_input(self._inputs.pop(index))

    def _delta(self, index: Any, delta: dict[str, Any]) -> None:
        block = self.blocks.get(index)
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = block.get("signature", "") + delta.get("signature", "")
        elif kind == "input_json_delta" and index in self._inputs:
            self._inputs[index] += delta.get("partial_json", "")

    def take_message(self, body: bytes) -> None:
        """A blocking response's message (its content, as sent)."""
        self.clear()
        try:
            message = json.loads(body)
        except ValueError:
            return
        content = message.get("content") if isinstance(message, dict) else None
        self.blocks = {index: block for index, block in enumerate(content or []) if isinstance(block, dict)}

    def content(self) -> list[dict[str, Any]]:
        """The blocks to send back as the assistant's message: in order, empty text left out
        (the API refuses an empty text block)."""
        self._settle()
        return [block for _, block in sorted(self.blocks.items()) if not (block.get("type") == "text" and not block.get("text"))]

    def tool_calls(self) -> list[dict[str, Any]]:
        return [block for block in self.content() if block.get("type") == "tool_use"]


def _loaded(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except ValueError:
        return None


def _parsed_input(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}  # cut short (max_tokens): sent back as an empty input
