"""Prompt datasets from files: the requests of a dataset are read, checked and kept in memory at
start-up, then drawn at random (seeded) or in order.

Formats (one entry per request):
- `messages`: JSON lines, each a Messages request's content: `messages` (required, the first
  a user message), optional `system`, `max_tokens`, `tools`, `metadata` (kept, not sent);
- `sharegpt`: a JSON array or JSON lines of ShareGPT conversations
  (`{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}, ...]}`): the turns
  up to the last human one, as user and assistant messages;
- `text`: one prompt per line (blank lines skipped);
- `csv`: one prompt per row, from the column `column` (a header row names the columns);
- `trace` (a trace replay's, harness/trace.py): JSON lines, each a request with its `timestamp`
  (ms) and either `messages` (as above, with `system`, `tools`) or its size, `input_length` (or
  `input_tokens`) for a synthetic prompt; the output length `output_length` (or
  `output_tokens`, `max_tokens`) is its max_tokens, and `model` may name its model; the lines
  are kept in time order.

A bad file is one clear error: the file, the line (or entry) and the field. Entries keep their
line numbers for the messages that name them later.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import json
import random
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from harness.conversation import ConversationSpec
from harness.fields import StrictModel

DatasetFormat = Literal["messages", "sharegpt", "text", "csv", "trace"]
FORMATS: tuple[DatasetFormat, ...] = ("messages", "sharegpt", "text", "csv", "trace")
MAX_DATASET_BYTES = 256 * 1024 * 1024  # read into memory: a larger file is refused
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant"}


class DatasetRef(StrictModel):
    """A prompt's requests from a file (`prompts[].dataset`), its path relative to the scenario's."""

    path: str = Field(min_length=1)
    format: DatasetFormat
    order: Literal["random", "sequential"] = "random"
    column: str = Field(default="prompt", min_length=1)  # csv: the prompts' column


DEFAULT_MAX_TOKENS = 1024  # a top-level dataset's max_tokens, for entries without their own


class DatasetPrompt(DatasetRef):
    """An entry of the scenario's top-level `datasets:` (a prompt of its own, named after its file)."""

    name: str | None = Field(default=None, min_length=1)
    weight: float = Field(default=1.0, gt=0)
    max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, ge=1)
    conversation: ConversationSpec | None = None  # its entries sent as conversations (harness/conversation.py)

    def as_prompt(self) -> dict[str, Any]:
        ref = self.model_dump(include={"path", "format", "order", "column"})
        prompt = {"name": self.name or Path(self.path).stem, "weight": self.weight, "max_tokens": self.max_tokens, "dataset": ref}
        return prompt | ({"conversation": self.conversation.model_dump()} if self.conversation is not None else {})


def datasets_as_prompts(data: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """A scenario's raw data with its top-level `datasets:` as prompts after its own; or, for a
    bad entry, the data as it is and (field, problem) of the first problem."""
    datasets = data.get("datasets")
    if datasets is None:
        return data, None
    if not isinstance(datasets, list):
        return data, ("datasets", "a list of datasets ({path, format, weight, order, name, max_tokens, column, conversation})")
    prompts = list(data.get("prompts") or [])
    for index, item in enumerate(datasets):
        try:
            prompts.append(DatasetPrompt.model_validate(item).as_prompt())
        except ValidationError as error:
            first = error.errors()[0]
            return data, (".".join(str(part) for part in (f"datasets[{index}]", *first["loc"])), first["msg"])
    return {key: value for key, value in data.items() if key != "datasets"} | {"prompts": prompts}, None


class DatasetError(Exception):
    """A dataset that cannot be used: one line naming the file, the line and the field."""


@dataclass(frozen=True)
class Entry:
    """One request of a dataset."""

    line: int  # its line (or, in a JSON array, its position) in the file, from 1
    messages: tuple[dict[str, Any], ...]  # (none: a synthetic prompt of `input_tokens`)
    system: Any = None
    max_tokens: int | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    at_s: float | None = None  # a trace's request: when it arrives, from the trace's first
    input_tokens: int | None = None  # a trace's request given by its size
    model: str | None = None  # a trace's request's own model


def load_entries(path: Path, kind: DatasetFormat, column: str = "prompt") -> list[Entry]:
    """Every entry of the file; DatasetError names the first problem."""
    try:
        size = path.stat().st_size
    except OSError as error:
        raise DatasetError(f"{path}: cannot read the dataset: {error.strerror or error}") from None
    if size > MAX_DATASET_BYTES:
        raise DatasetError(f"{path}: {size:,} bytes; a dataset is read into memory, at most {MAX_DATASET_BYTES:,}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(f"{path}: not UTF-8 text (byte {error.start})") from None
    entries = list(_PARSERS[kind](path, text, column))
    if not entries:
        raise DatasetError(f"{path}: no entries (format {kind})")
    return entries


def _json_lines(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: line {number}: not JSON ({error.msg}, column {error.colno})") from None


_ENTRY_FIELDS = ("messages", "system", "max_tokens", "tools", "metadata")
_TRACE_FIELDS = (*_ENTRY_FIELDS, "timestamp", "input_length", "input_tokens", "output_length", "output_tokens", "model", "hash_ids")


def _messages_entries(path: Path, text: str, _column: str) -> Iterator[Entry]:
    for number, data in _json_lines(path, text):
        where = f"{path}: line {number}"
        _check_fields(where, data, _ENTRY_FIELDS)
        yield Entry(number, _checked_messages(where, data.get("messages")), data.get("system"), *_size_and_tools(where, data))


def _check_fields(where: str, data: Any, known: tuple[str, ...]) -> None:
    if not isinstance(data, dict):
        raise DatasetError(f"{where}: a JSON object with `{known[0]}` expected (got {type(data).__name__})")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise DatasetError(f"{where}: {unknown[0]}: not a field of an entry ({', '.join(known)})")


def _whole(where: str, data: dict[str, Any], *names: str) -> int | None:
    """The first of `names` the line gives, a whole number >= 1."""
    name = next((name for name in names if data.get(name) is not None), None)
    if name is None:
        return None
    value = data[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DatasetError(f"{where}: {name}: a whole number >= 1 (got {value!r})")
    return value


def _size_and_tools(where: str, data: dict[str, Any], *max_tokens_names: str) -> tuple[int | None, tuple[dict[str, Any], ...] | None]:
    max_tokens = _whole(where, data, "max_tokens", *max_tokens_names)
    tools = data.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(tool, dict) and tool.get("name") for tool in tools)):
        raise DatasetError(f"{where}: tools: a list of tool definitions, each with a `name`")
    return max_tokens, tuple(tools) if tools else None


def _trace_entries(path: Path, text: str, _column: str) -> Iterator[Entry]:
    entries = []
    for number, data in _json_lines(path, text):
        where = f"{path}: line {number}"
        _check_fields(where, data, _TRACE_FIELDS)
        timestamp = data.get("timestamp")
        if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool) or not 0 <= timestamp < 1e15:
            raise DatasetError(f"{where}: timestamp: the request's time in ms, a number >= 0 (got {timestamp!r})")
        size = _whole(where, data, "input_length", "input_tokens")
        if (size is None) == (data.get("messages") is None):
            raise DatasetError(f"{where}: messages: give the request's `messages` or its size (`input_length`), one of them")
        messages = _checked_messages(where, data["messages"]) if size is None else ()
        model = data.get("model")
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise DatasetError(f"{where}: model: a model name (got {model!r})")
        max_tokens, tools = _size_and_tools(where, data, "output_length", "output_tokens")
        entries.append(Entry(number, messages, data.get("system"), max_tokens, tools, timestamp, size, model))  # (at_s in ms here)
    entries.sort(key=lambda entry: entry.at_s or 0.0)  # (stable: lines with one time keep their order)
    first = (entries[0].at_s or 0.0) if entries else 0.0
    yield from (dataclasses.replace(entry, at_s=((entry.at_s or 0.0) - first) / 1000) for entry in entries)


def _checked_messages(where: str, messages: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(messages, list) or not messages:
        raise DatasetError(f"{where}: messages: a non-empty list of messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise DatasetError(f"{where}: messages[{index}].role: 'user' or 'assistant'")
        content = message.get("content")
        if not (isinstance(content, str) and content) and not (isinstance(content, list) and content):
            raise DatasetError(f"{where}: messages[{index}].content: a non-empty string or list of content blocks")
    if messages[0]["role"] != "user":
        raise DatasetError(f"{where}: messages[0].role: the first message must be 'user'")
    return tuple(messages)


def _sharegpt_entries(path: Path, text: str, _column: str) -> Iterator[Entry]:
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = list(enumerate(json.loads(text), 1))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
        label = "entry"
    else:
        items, label = list(_json_lines(path, text)), "line"
    for number, data in items:
        where = f"{path}: {label} {number}"
        turns = data.get("conversations") if isinstance(data, dict) else None
        if not isinstance(turns, list):
            raise DatasetError(f"{where}: conversations: a list of turns ({{from, value}}) expected")
        messages = []
        for index, turn in enumerate(turns):
            role = _ROLES.get(str(turn.get("from", "")).lower()) if isinstance(turn, dict) else None
            if role is None or not isinstance(turn.get("value"), str):
                raise DatasetError(f"{where}: conversations[{index}]: `from` human or gpt, and a string `value`")
            messages.append({"role": role, "content": turn["value"]})
        while messages and messages[-1]["role"] != "user":  # up to the last human turn: what the model answers
            messages.pop()
        if messages and messages[0]["role"] == "user" and all(message["content"] for message in messages):
            yield Entry(number, tuple(messages))
        # conversations that do not start with a human turn, or have empty turns, are skipped


def _text_entries(path: Path, text: str, _column: str) -> Iterator[Entry]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield Entry(number, ({"role": "user", "content": line.strip()},))


def _csv_entries(path: Path, text: str, column: str) -> Iterator[Entry]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or column not in reader.fieldnames:
        raise DatasetError(f"{path}: no column {column!r} in the header (columns: {', '.join(reader.fieldnames or [])})")
    for row in reader:
        prompt = (row.get(column) or "").strip()
        if prompt:
            yield Entry(reader.line_num, ({"role": "user", "content": prompt},))


_PARSERS = {
    "messages": _messages_entries,
    "sharegpt": _sharegpt_entries,
    "text": _text_entries,
    "csv": _csv_entries,
    "trace": _trace_entries,
}


class EntryOrder:
    """Which entry each request of a process sends: drawn at random (seeded), or in the file's
    order from this process's place (worker `index` of `count` takes entries index, index +
    count, ...), round and round."""

    def __init__(self, size: int, order: Literal["random", "sequential"], seed: int, index: int = 0, count: int = 1) -> None:
        self.size, self.order = size, order
        self._rng = random.Random(seed)
        self._next = index % size
        self._step = count

    def next(self) -> int:
        if self.order == "random":
            return self._rng.randrange(self.size)
        current = self._next
        self._next = (self._next + self._step) % self.size
        return current


SHIP_CHUNK_BYTES = 1024 * 1024  # one message of a shipped dataset
DEFAULT_SHIP_LIMIT_MB = 64.0  # a larger dataset (compressed) is read by every worker from the same path


@dataclass(frozen=True)
class Shipment:
    """How a master's workers get a scenario's datasets: a manifest in the run message, per
    dataset prompt either the chunks that precede it (`{chunks, sha256}`: the entries as JSON,
    zlib, base64, in SHIP_CHUNK_BYTES pieces) or, above the limit, the file every worker reads
    (`{path, format, column, entries_sha256}`: the same path, checked against the master's
    digest of its entries)."""

    manifest: dict[str, dict[str, Any]]
    chunks: list[tuple[str, int, str]]  # (dataset prompt, index, piece), in order


def shipment(scenario: Any, limit_bytes: float) -> Shipment:
    """The shipment of a scenario's datasets (compressed once for every worker)."""
    manifest: dict[str, dict[str, Any]] = {}
    chunks: list[tuple[str, int, str]] = []
    base = Path(scenario.source).resolve().parent
    refs = {prompt.name: prompt.dataset for prompt in scenario.prompts if prompt.dataset is not None}
    for name, entries in scenario._datasets.items():
        packed = base64.b64encode(zlib.compress(json.dumps([asdict(entry) for entry in entries]).encode(), 6)).decode()
        ref = refs[name]
        if len(packed) > limit_bytes and ref is not None:
            manifest[name] = {
                "path": str(base / ref.path),
                "format": ref.format,
                "column": ref.column,
                "entries_sha256": entries_digest(entries),
            }
            continue
        pieces = [packed[at : at + SHIP_CHUNK_BYTES] for at in range(0, len(packed), SHIP_CHUNK_BYTES)] or [""]
        chunks.extend((name, index, piece) for index, piece in enumerate(pieces))
        manifest[name] = {"chunks": len(pieces), "sha256": hashlib.sha256(packed.encode()).hexdigest()}
    return Shipment(manifest, chunks)


def received_datasets(manifest: dict[str, dict[str, Any]], chunks: dict[str, dict[int, str]]) -> dict[str, list[Entry]]:
    """The entries a worker got from its master (`shipment`): joined from their chunks, or read
    from the same path; DatasetError when a piece is missing or the digest differs."""
    received = {}
    for name, sent in manifest.items():
        if "path" in sent:
            entries = load_entries(Path(sent["path"]), sent["format"], sent["column"])
            if entries_digest(entries) != sent["entries_sha256"]:
                raise DatasetError(
                    f"{sent['path']}: this worker's copy of dataset {name!r} differs from the master's (sha256 of the entries)"
                )
        else:
            pieces = chunks.get(name, {})
            packed = "".join(pieces.get(index, "") for index in range(sent["chunks"]))
            if len(pieces) != sent["chunks"] or hashlib.sha256(packed.encode()).hexdigest() != sent["sha256"]:
                raise DatasetError(
                    f"dataset {name!r}: {len(pieces)} of its {sent['chunks']} chunks came, or they differ from what was sent"
                )
            entries = [_entry(item) for item in json.loads(zlib.decompress(base64.b64decode(packed)))]
        received[name] = entries
    return received


def _entry(item: dict[str, Any]) -> Entry:
    tools = item.get("tools")
    return Entry(**{**item, "messages": tuple(item["messages"]), "tools": tuple(tools) if tools else None})


def entries_digest(entries: list[Entry]) -> str:
    """A digest of the entries as read (their canonical JSON): the run's summary names it."""
    canonical = json.dumps([asdict(entry) for entry in entries], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
