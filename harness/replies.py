"""What a response said: its content blocks, kept for a conversation's next request.

Only a conversation's requests collect their reply (`PreparedRequest.reply`); every other
request keeps the cheap per-event path of harness/timing.py, whose stream timer hands a
conversation's data payloads to its reply as it reads them: its content deltas to
`Reply.deltas`, every other event to `Reply.data`. A stream's blocks are built from its events
as the SDK's accumulator builds them (content_block_start, then text, thinking, signature and
input_json deltas, a tool call's input parsed once its content_block_stop came); a blocking
response's come from its message. Most deltas are text in the API's compact form: those of a
reply's one text block have their strings cut out of all of them at once (`_TEXT_DELTA`) and
decoded in one JSON parse; any other delta is parsed on its own.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["Reply"]

SETTLE_EVENTS = 200  # events (some 50 KB) kept at most before they are parsed
# the text deltas of a block as the API writes them: this, the text (a JSON string), then "}}"
_TEXT_DELTA = b'{"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
INPUT_JSON = "partial_json"
_DELTA_FIELDS: dict[Any, str] = {
    "text_delta": "text",
    "thinking_delta": "thinking",
    "signature_delta": "signature",
    "input_json_delta": INPUT_JSON,
}


class Reply:
    """The content blocks of one response (of its last attempt: the transport clears it first).

    A stream's events are only kept as they come (the stream timer appends each data payload to
    `deltas` or `data`, and calls `settle` once more than SETTLE_EVENTS wait: memory stays
    bounded); they are parsed in one go when the content is asked for, after the stream."""

    __slots__ = ("_pieces", "_stopped", "_tools", "blocks", "data", "deltas")

    def __init__(self) -> None:
        self.blocks: dict[int, dict[str, Any]] = {}  # by the block's index in the response
        self._tools: set[int] = set()  # the tool calls' blocks: their input JSON streams
        self._stopped: set[int] = set()  # the tool calls whose block ended: their input is whole
        self._pieces: dict[tuple[int, str], list[str]] = {}  # a block's streamed strings, joined once asked for
        self.data: list[bytes] = []  # a stream's data payloads (each an event's JSON) not parsed yet, but content deltas
        self.deltas: list[bytes] = []  # the content deltas' payloads not parsed yet

    def clear(self) -> None:
        self.blocks.clear()
        self._tools.clear()
        self._stopped.clear()
        self._pieces.clear()
        self.data.clear()
        self.deltas.clear()

    def settle(self) -> None:
        """The kept events into blocks: the blocks first, then their deltas (a delta adds to a
        block that started, whatever came between). All in one parse; where that fails, event
        by event, the broken ones left out (the timer counts them as protocol errors)."""
        data, deltas = self.data, self.deltas
        if data:
            self.data = []
            self._apply(_parsed(data))
        if deltas:
            self.deltas = []
            if not self._take_texts(deltas):
                self._apply(_parsed(deltas))

    def _take_texts(self, deltas: list[bytes]) -> bool:
        """Deltas that are all text of one started block, as the API writes them (`_TEXT_DELTA`):
        their strings cut out of the joined deltas at once and decoded in one parse. False
        (nothing taken) for any other: a line of another form leaves a part that is not one
        JSON string, or fewer parts than lines."""
        first = _loaded(deltas[0])
        index = first.get("index") if type(first) is dict else None
        if type(index) is not int or index not in self.blocks:
            return False
        prefix = (b" " if deltas[0][:1] == b" " else b"") + _TEXT_DELTA % index
        joined = b"\n".join(deltas)
        if not (joined.startswith(prefix) and joined.endswith(b"}}")):
            return False
        # each line this prefix, one JSON string (which holds no line break), "}}": one part each
        parts = joined[len(prefix) : -2].split(b"}}\n" + prefix)
        if len(parts) != len(deltas):
            return False
        try:
            strings = orjson.loads(b"[" + b",".join(parts) + b"]")
            text = "".join(strings)  # (TypeError: not all strings)
        except (ValueError, TypeError):
            return False
        if len(strings) != len(parts):
            return False
        self._pieces.setdefault((index, "text"), []).append(text)
        return True

    def _apply(self, events: list[Any]) -> None:
        for event in events:
            if type(event) is not dict:
                continue
            kind = event.get("type")
            if kind == "content_block_delta":  # most events: a string to add to a block
                delta = event.get("delta")
                if isinstance(delta, dict) and (field := _DELTA_FIELDS.get(delta.get("type"))) is not None:
                    self._add(event.get("index"), field, delta.get(field))
            elif kind == "content_block_start":
                index = event.get("index", len(self.blocks))
                block = self.blocks[index] = dict(event.get("content_block") or {})
                if block.get("type") == "tool_use":
                    self._tools.add(index)
            elif kind == "content_block_stop":
                index = event.get("index")
                if index in self._tools:
                    self._stopped.add(index)

    def _add(self, index: Any, field: str, piece: Any) -> None:
        if index in self.blocks and isinstance(piece, str) and (field != INPUT_JSON or index in self._tools):
            pieces = self._pieces.get((index, field))
            if pieces is None:
                pieces = self._pieces[index, field] = []
            pieces.append(piece)

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
        (the API refuses an empty text block); a tool call's input parsed once its block ended
        (one cut short keeps the input its block started with)."""
        self.settle()
        for index in self._stopped:
            self._tools.discard(index)
            self.blocks[index]["input"] = _parsed_input("".join(self._pieces.pop((index, INPUT_JSON), [])))
        self._stopped.clear()
        for (index, field), pieces in list(self._pieces.items()):
            if field != INPUT_JSON:  # (a tool call's input is parsed once its block ended)
                block = self.blocks[index]
                block[field] = block.get(field, "") + "".join(pieces)
                del self._pieces[index, field]
        return [block for _, block in sorted(self.blocks.items()) if not (block.get("type") == "text" and not block.get("text"))]

    def tool_calls(self) -> list[dict[str, Any]]:
        return [block for block in self.content() if block.get("type") == "tool_use"]


def _parsed(data: list[bytes]) -> list[Any]:
    """The payloads' JSON values, in one parse; one by one (None for a broken one) if that fails."""
    try:
        return orjson.loads(b"[" + b",".join(data) + b"]")
    except ValueError:
        return [_loaded(one) for one in data]


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
