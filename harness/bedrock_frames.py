"""Bedrock's streams: AWS event-stream messages read as the API's SSE lines, as they arrive.

A Bedrock stream (`application/vnd.amazon.eventstream`) is a sequence of binary messages,
each with its own length and two CRC32 checksums (botocore's `EventStreamBuffer` checks
them). A `chunk` message holds one API event, its JSON in base64; an `exception` message
(`:exception-type` throttlingException, modelStreamErrorException, ...) is the API's `error`
event with that type. Each event becomes the SSE lines the stream timer reads, with the
time its message's bytes arrived.

A stream whose framing breaks ends there with `BrokenFrame`, the request's protocol error
(`invalid_event`, as a malformed SSE event is): a checksum or a length that does not hold, a
`chunk` that holds no API event, or a body that ends inside a message.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

__all__ = ["BrokenFrame", "bedrock_lines"]

TimedLines = Iterator[tuple[int, list[bytes]]]


class BrokenFrame(ValueError):
    """The stream's event-stream framing broke: no later event can be read."""


def bedrock_lines(chunks: Iterator[bytes], clock: Any) -> TimedLines:
    """The SSE lines of each API event in the stream's `chunks` (the body as it arrives), with
    the time (`clock()`, ns) its message's last bytes arrived."""
    from botocore.eventstream import EventStreamBuffer, ParserError

    frames = EventStreamBuffer()
    pending = 0  # bytes received and not yet read as a whole message
    for data in chunks:
        now = clock()
        frames.add_data(data)
        pending += len(data)
        try:
            for message in frames:
                pending -= message.prelude.total_length
                event_type, event = _event(message)
                yield now, [b"event: " + event_type, b"data: " + event, b""]
        except ParserError as exc:
            raise BrokenFrame(f"an event-stream message that does not hold: {exc}") from exc
    if pending:
        raise BrokenFrame(f"the body ended inside an event-stream message ({pending} bytes of it)")


def _event(message: Any) -> tuple[bytes, bytes]:
    """A message's API event (its type and JSON): a chunk's own, or an exception's (or an
    error's) as the API's `error` event."""
    headers = message.headers
    try:
        if headers.get(":message-type") == "event":
            data = base64.b64decode(json.loads(message.payload)["bytes"], validate=True)
            event = json.loads(data)
            if not (isinstance(event, dict) and isinstance(event.get("type"), str)):
                raise ValueError("no event type")
            return event["type"].encode(), data
        payload = json.loads(message.payload) if message.payload else {}
        kind = headers.get(":exception-type") or headers.get(":error-code") or "api_error"
        error = {"type": kind, "message": payload.get("message") or headers.get(":error-message", "")}
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise BrokenFrame(f"an event-stream message that holds no API event ({type(exc).__name__}: {exc})"[:200]) from exc
    return b"error", json.dumps({"type": "error", "error": error}).encode()
