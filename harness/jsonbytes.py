"""Compact UTF-8 JSON for the per-request paths (records, request bodies): orjson, about ten
times faster than the json module; what orjson refuses (a lone surrogate in a string, an
integer beyond 64 bits) goes through the json module instead, so that no value a server or a
scenario can produce stops a record from being written."""

from __future__ import annotations

import json
from typing import Any

import orjson


def json_bytes(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()  # ASCII: a lone surrogate as its \u escape
