"""Vertex AI's form of the Messages API, served by the emulator as Google serves it.

`POST /v1/projects/{project}/locations/{region}/publishers/anthropic/models/{model}:streamRawPredict`
(`:rawPredict` when blocking) carries the body without `model` and with `anthropic_version:
vertex-2023-10-16` (or, as newer SDKs send, an API version date); `.../models/count-tokens:rawPredict` counts tokens. Authentication is a
bearer token. The answer is the API's. `vertex_request` turns such a request into the API's
(`/v1/messages` with the model in the body), or says why it is not one.
"""

from __future__ import annotations

import json
import re
from urllib.parse import unquote

__all__ = ["VERTEX_VERSION", "vertex_request"]

VERTEX_VERSION = "vertex-2023-10-16"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")  # the SDK's own version, which Vertex AI takes too
_PATH = re.compile(r"^/v1/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/([^/:]+):(streamRawPredict|rawPredict)$")


def vertex_request(path: str, body: bytes) -> tuple[str, bytes] | str | None:
    """The API's path and body of a Vertex request; a str: why it is refused (400); None: not a Vertex path."""
    match = _PATH.match(path)
    if match is None:
        return None
    model, specifier = unquote(match.group(1)), match.group(2)
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "There was an error parsing the body of your request: invalid JSON"
    version = parsed.pop("anthropic_version", None) if isinstance(parsed, dict) else None
    if not isinstance(version, str) or not (version == VERTEX_VERSION or _DATE.match(version)):
        return f"anthropic_version: {VERTEX_VERSION} (or an API version date) is required in the body"
    if model == "count-tokens":
        return "/v1/messages/count_tokens", json.dumps(parsed).encode()
    if "model" in parsed:
        return "model: the model is given in the URL on Vertex AI"
    parsed["model"] = model
    if specifier == "streamRawPredict":
        parsed["stream"] = True
    else:
        parsed.pop("stream", None)
    return "/v1/messages", json.dumps(parsed, separators=(",", ":")).encode()
