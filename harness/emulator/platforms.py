"""The Messages API as the cloud platforms serve it, by the emulator.

- Vertex AI: `POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:streamRawPredict`
  (`:rawPredict` when blocking) carries the body without `model` and with `anthropic_version:
  vertex-2023-10-16` (or, as newer SDKs send, an API version date); `.../models/count-tokens:rawPredict`
  counts tokens. Authentication: a bearer token. The answer is the API's.
  (Newer SDKs send an API version date as `anthropic_version` to both platforms: taken too.)
- Amazon Bedrock: `POST /model/{model}/invoke-with-response-stream` (`/invoke` when blocking)
  carries the body without `model` and with `anthropic_version: bedrock-2023-05-31`, signed with
  AWS SigV4 (not checked). A stream is AWS event-stream framed (`application/vnd.amazon.eventstream`):
  each API event is a `chunk` message whose JSON payload holds the event's JSON in base64
  (`{"bytes": ...}`); a blocking answer is the API's message.

`api_form` turns such a request into the API's (`/v1/messages`, the model in the body) and
names its form; `bedrock_stream` frames a planned stream (its head and items) for Bedrock.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from typing import Any
from urllib.parse import unquote

__all__ = ["BEDROCK_VERSION", "VERTEX_VERSION", "api_form", "bedrock_stream", "event_stream_message"]

VERTEX_VERSION = "vertex-2023-10-16"
BEDROCK_VERSION = "bedrock-2023-05-31"
EVENT_STREAM_TYPE = b"application/vnd.amazon.eventstream"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # the SDK's own version, which Vertex AI takes too
_VERTEX = re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/([^/:]+):(streamRawPredict|rawPredict)$")
_BEDROCK = re.compile(r"^/model/([^/]+)/(invoke-with-response-stream|invoke)$")
_CHUNK_HEADERS = ((":event-type", "chunk"), (":content-type", "application/json"), (":message-type", "event"))


def api_form(method: str, path: str, body: bytes) -> tuple[str, bytes, str] | str:
    """The API's path and body of a request, and its form (api, vertex, bedrock); a str: why it is refused (400)."""
    vertex, bedrock = _VERTEX.match(path), _BEDROCK.match(path)
    if method != "POST" or (vertex is None and bedrock is None):
        return path, body, "api"
    match, form = (vertex, "vertex") if vertex is not None else (bedrock, "bedrock")
    assert match is not None
    model, streamed = unquote(match.group(1)), match.group(2) in ("streamRawPredict", "invoke-with-response-stream")
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "There was an error parsing the body of your request: invalid JSON"
    version = parsed.pop("anthropic_version", None) if isinstance(parsed, dict) else None
    named = VERTEX_VERSION if form == "vertex" else BEDROCK_VERSION
    if not (version == named or (isinstance(version, str) and _DATE.match(version))):
        return f"anthropic_version: {named} (or an API version date) is required in the body"
    if model == "count-tokens" and form == "vertex":
        return "/v1/messages/count_tokens", json.dumps(parsed).encode(), form
    if "model" in parsed:
        return f"model: the model is given in the URL on {form}"
    parsed["model"] = model
    if streamed:
        parsed["stream"] = True
    else:
        parsed.pop("stream", None)
    return "/v1/messages", json.dumps(parsed, separators=(",", ":")).encode(), form


def event_stream_message(headers: tuple[tuple[str, str], ...], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (lengths and their CRC32), string headers, payload, CRC32."""
    encoded = b"".join(
        struct.pack(">B", len(name)) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode())) + value.encode()
        for name, value in headers
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _framed(data: bytes) -> bytes:
    """HTTP chunks of SSE events, as HTTP chunks of event-stream messages (the last chunk kept)."""
    out, at = [], 0
    while at < len(data):
        size_end = data.index(b"\r\n", at)
        size = int(data[at:size_end], 16)
        payload = data[size_end + 2 : size_end + 2 + size]
        at = size_end + 2 + size + 2
        if size == 0:
            out.append(b"0\r\n\r\n")
            continue
        messages = b"".join(
            event_stream_message(_CHUNK_HEADERS, json.dumps({"bytes": base64.b64encode(line[6:]).decode()}).encode())
            for event in payload.split(b"\n\n")
            for line in event.split(b"\n")
            if line.startswith(b"data: ")
        )
        out.append(b"%x\r\n%s\r\n" % (len(messages), messages))
    return b"".join(out)


def bedrock_stream(head: bytes, items: list[Any]) -> tuple[bytes, list[Any]]:
    """A planned stream's first write and timed items, framed for Bedrock (timing unchanged)."""
    http_head, _, rest = head.partition(b"\r\n\r\n")
    http_head = re.sub(rb"(?im)^content-type: [^\r\n]*", b"content-type: " + EVENT_STREAM_TYPE, http_head)
    framed = [(target, kind, _framed(data) if data else data, tokens) for target, kind, data, tokens in items]
    return http_head + b"\r\n\r\n" + _framed(rest), framed
