"""A message's content: its blocks checked, and images and documents read from files.

A prompt's content block `{type: image, file: chart.png}`
(or `document`, a PDF or plain text) is read when the scenario is loaded and sent as the API's
base64 block. The path is relative to the scenario file; the media type comes from the file's
extension (or the block's `media_type`). The scenario then holds the data itself, so a master's
workers need no copy of the file. A block keeps its other fields (`cache_control`, a
document's `title`, ...).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from harness.scenario_errors import short

__all__ = ["MEDIA_TYPES", "AttachmentError", "check_content", "file_block", "files_read"]

MEDIA_TYPES = {
    "image": {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"},
    "document": {".pdf": "application/pdf", ".txt": "text/plain"},
}
MAX_BYTES = {"image": 5 * 1024 * 1024, "document": 32 * 1024 * 1024}  # the API's limits


def check_content(value: Any) -> Any:
    """A message's (or system's) content: a non-empty string or list of typed blocks."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return value
    if isinstance(value, list):
        if not value:
            raise ValueError("must be a non-empty string or a non-empty list of content blocks")
        for i, block in enumerate(value):
            if not isinstance(block, dict):
                raise ValueError(f"[{i}]: a content block must be a mapping like {{type: text, text: ...}} (got {short(block)})")
            btype = block.get("type")
            if not isinstance(btype, str) or not btype:
                raise ValueError(f"[{i}].type: a content block needs a 'type' (e.g. text)")
            if btype == "text" and not (isinstance(block.get("text"), str) and block["text"].strip()):
                raise ValueError(f"[{i}].text: a text block needs a non-empty 'text' string")
        return value
    raise ValueError(f"must be a string or a list of content blocks (got {short(value)})")


class AttachmentError(Exception):
    """A file block that cannot be sent: (the field, what is wrong in words)."""


def files_read(data: Any, base: Path) -> Any:
    """A scenario's raw data with every prompt message's file blocks read (data of another
    shape as it is: the schema then says what is wrong with it)."""
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list):
        return data
    return {**data, "prompts": [_prompt_read(prompt, index, base) for index, prompt in enumerate(prompts)]}


def _prompt_read(prompt: Any, index: int, base: Path) -> Any:
    messages = prompt.get("messages") if isinstance(prompt, dict) else None
    if not isinstance(messages, list):
        return prompt
    read = []
    for number, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            try:
                message = {**message, "content": [file_block(block, base) if isinstance(block, dict) else block for block in content]}
            except ValueError as error:
                raise AttachmentError(f"prompts[{index}].messages[{number}].content", str(error)) from None
        read.append(message)
    return {**prompt, "messages": read}


def file_block(block: dict[str, Any], base: Path) -> dict[str, Any]:
    """`block` with its `file` read into a base64 `source` (blocks without a file as they are);
    ValueError says what is wrong."""
    if "file" not in block:
        return block
    kind, name = block.get("type"), block["file"]
    if kind not in MEDIA_TYPES:
        raise ValueError(f"a file goes in an image or document block (got type {kind!r})")
    if not isinstance(name, str) or not name:
        raise ValueError("a path to the file, relative to the scenario")
    path = base / name
    media_type = block.get("media_type") or MEDIA_TYPES[kind].get(path.suffix.lower())
    if media_type is None:
        raise ValueError(f"{name}: an {kind} is one of {', '.join(MEDIA_TYPES[kind])} (or give media_type)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"{name}: cannot read the file: {error.strerror or error}") from None
    if not data or len(data) > MAX_BYTES[kind]:
        raise ValueError(f"{name}: {len(data):,} bytes; an {kind} has 1 to {MAX_BYTES[kind]:,}")
    source = {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode()}
    return {key: value for key, value in block.items() if key not in ("file", "media_type")} | {"source": source}
