"""Request-body validation and input-token counting for the emulator.

Token counting (used by both ``/v1/messages/count_tokens`` and ``usage.input_tokens``):

* every text counts its words (runs of characters between white space), each word
  ``1 + utf8 bytes // 7`` tokens: the ``system`` prompt (a string, or each ``text`` of its
  blocks), each message's string content, and each ``text`` of a message's ``text`` blocks;
  ``thinking`` blocks count their ``thinking`` text; any other content block (image,
  tool_use, tool_result, ...) counts the words of its compact JSON;
* plus 3 tokens per message;
* plus the words of the compact JSON of ``tools`` when ``tools`` is given;
* at least 1 in total.

It is not Claude's tokenizer, only a deterministic, cheap stand-in, and on purpose not the
harness's own sizing rule (4 bytes per token): English-like text counts about a quarter
fewer tokens here, so a prompt sized by bytes alone misses its target visibly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, TypeGuard

__all__ = ["NEW_VERSION", "RequestError", "cache_prefix", "count_input_tokens", "validate_count_tokens_body", "validate_messages_body"]

#: from this anthropic-version on, temperature/top_p/top_k are rejected
NEW_VERSION = "2026-10-21"


class RequestError(Exception):
    """A 400 invalid_request_error with this message."""


def text_tokens(s: str) -> int:
    words = s.encode("utf-8").split() if not s.isascii() else s.split()
    return len(words) + sum(len(word) // 7 for word in words)


def json_tokens(obj: Any) -> int:
    return text_tokens(json.dumps(obj, separators=(",", ":"), ensure_ascii=False))


def count_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens of an already-validated request body (see the module docstring)."""
    total = 0
    system = body.get("system")
    if isinstance(system, str):
        total += text_tokens(system)
    elif isinstance(system, list):
        for blk in system:
            if isinstance(blk, dict) and isinstance(blk.get("text"), str):
                total += text_tokens(blk["text"])
            else:
                total += json_tokens(blk)
    for msg in body.get("messages") or ():
        total += 3
        content = msg.get("content")
        if isinstance(content, str):
            total += text_tokens(content)
            continue
        for blk in content or ():
            total += _block_tokens(blk)
    tools = body.get("tools")
    if tools:
        total += json_tokens(tools)
    return max(1, total)


def cache_prefix(body: dict[str, Any]) -> tuple[str, int] | None:
    """The prompt-cache prefix of a validated body: everything up to its last `cache_control`
    breakpoint, in the API's order (tools, system, messages), as (a digest with the model,
    its input tokens by `count_input_tokens`' rule); None without a breakpoint."""
    parts: list[Any] = [body["model"]]
    total = 0
    last: tuple[int, int] | None = None  # (parts, tokens) up to the last breakpoint
    tools = body.get("tools") or []
    if tools:
        parts.append(tools)
        total += json_tokens(tools)
        if any(isinstance(tool, dict) and "cache_control" in tool for tool in tools):
            last = (len(parts), total)
    system = body.get("system")
    for block in system if isinstance(system, list) else [system] if system else []:
        parts.append(block)
        total += text_tokens(block["text"]) if isinstance(block, dict) else text_tokens(block)
        if isinstance(block, dict) and "cache_control" in block:
            last = (len(parts), total)
    for message in body["messages"]:
        total += 3
        content = message["content"]
        for block in [content] if isinstance(content, str) else content:
            parts.append([message["role"], block])
            total += _block_tokens(block) if isinstance(block, dict) else text_tokens(block)
            if isinstance(block, dict) and "cache_control" in block:
                last = (len(parts), total)
    if last is None:
        return None
    digest = hashlib.sha256(json.dumps(parts[: last[0]], separators=(",", ":"), sort_keys=True).encode()).hexdigest()
    return digest, last[1]


def _block_tokens(block: dict[str, Any]) -> int:
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return text_tokens(block["text"])
    if kind == "thinking" and isinstance(block.get("thinking"), str):
        return text_tokens(block["thinking"])
    return json_tokens(block)


def _check_tools(body: dict[str, Any]) -> None:
    """`tools` and `tool_choice` in their shape; each tool_use answered by a tool_result in
    the next message, and each tool_result answering one (the API's rules)."""
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise RequestError("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
                raise RequestError(f"tools.{i}.name: Field required")
            if tool.get("type") is None and not isinstance(tool.get("input_schema"), dict):
                raise RequestError(f"tools.{i}.custom.input_schema: Field required")
    choice = body.get("tool_choice")
    if choice is not None and (not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none")):
        raise RequestError("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    calls: set[str] = set()  # the tool_use ids of the message before
    for i, message in enumerate(body["messages"]):
        content = message["content"] if isinstance(message["content"], list) else []
        ids = [str(block.get("id")) for block in content if block.get("type") == "tool_use"]
        results = {str(block.get("tool_use_id")) for block in content if block.get("type") == "tool_result"}
        if results - calls:
            raise RequestError(
                f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: {sorted(results - calls)[0]}. "
                "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
            )
        if calls - results and message["role"] == "user":
            raise RequestError(
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks immediately after: {sorted(calls - results)[0]}"
            )
        calls = set(ids) if message["role"] == "assistant" else set()


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_messages(body: dict[str, Any]) -> None:
    msgs = body.get("messages")
    if msgs is None:
        raise RequestError("messages: Field required")
    if not isinstance(msgs, list):
        raise RequestError("messages: Input should be a valid list")
    if not msgs:
        raise RequestError("messages: at least one message is required")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RequestError(f"messages.{i}: Input should be a valid dictionary")
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise RequestError(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in m:
            raise RequestError(f"messages.{i}.content: Field required")
        c = m["content"]
        if isinstance(c, str):
            continue
        if not isinstance(c, list):
            raise RequestError(f"messages.{i}.content: Input should be a valid string or a list of content blocks")
        for j, blk in enumerate(c):
            if not isinstance(blk, dict) or not isinstance(blk.get("type"), str):
                raise RequestError(f"messages.{i}.content.{j}: Input should be a content block object with a 'type'")
            if blk["type"] == "text" and not isinstance(blk.get("text"), str):
                raise RequestError(f"messages.{i}.content.{j}.text: Field required")
    system = body.get("system")
    if system is not None and not isinstance(system, (str, list)):
        raise RequestError("system: Input should be a valid string or a list of text blocks")
    if isinstance(system, list):
        for j, blk in enumerate(system):
            if not isinstance(blk, dict) or blk.get("type") != "text" or not isinstance(blk.get("text"), str):
                raise RequestError(f"system.{j}: Input should be a text block")


def _check_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise RequestError("model: Field required")
    if not isinstance(model, str) or not model.strip():
        raise RequestError("model: Input should be a non-empty string")


def validate_count_tokens_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError("Request body must be a JSON object")
    _check_model(body)
    _check_messages(body)
    return body


def validate_messages_body(body: Any, version: str) -> dict[str, Any]:
    """Raise RequestError (-> HTTP 400) when the Messages body is invalid."""
    if not isinstance(body, dict):
        raise RequestError("Request body must be a JSON object")
    _check_model(body)
    mt = body.get("max_tokens")
    if mt is None:
        raise RequestError("max_tokens: Field required")
    if not _is_int(mt):
        raise RequestError("max_tokens: Input should be a valid integer")
    if mt < 1:
        raise RequestError("max_tokens: Input should be greater than or equal to 1")
    _check_messages(body)
    _check_tools(body)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise RequestError("stream: Input should be a valid boolean")
    new_api = version >= NEW_VERSION
    for name in ("temperature", "top_p", "top_k"):
        if name not in body:
            continue
        v = body[name]
        if new_api:
            raise RequestError(
                f"{name}: Extra inputs are not permitted with anthropic-version {version}; use anthropic-version 2023-06-01 to set it"
            )
        if name == "top_k":
            if not _is_int(v) or v < 0:
                raise RequestError("top_k: Input should be an integer greater than or equal to 0")
        elif not _is_num(v) or not 0.0 <= v <= 1.0:
            raise RequestError(f"{name}: Input should be a number between 0 and 1")
    th = body.get("thinking")
    if th is not None:
        if not isinstance(th, dict):
            raise RequestError("thinking: Input should be a valid dictionary")
        tt = th.get("type")
        if tt not in ("enabled", "disabled", "adaptive"):
            raise RequestError("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
        if tt == "enabled":
            b = th.get("budget_tokens")
            if not _is_int(b):
                raise RequestError("thinking.enabled.budget_tokens: Field required")
            if b < 1024:
                raise RequestError("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
            if b >= mt:
                raise RequestError("`max_tokens` must be greater than `thinking.budget_tokens`")
        disp = th.get("display")
        if disp is not None and disp not in ("summarized", "omitted"):
            raise RequestError("thinking.display: Input should be 'summarized' or 'omitted'")
    return body
