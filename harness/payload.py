"""Request bodies and headers for ``POST /v1/messages``, built from a scenario pick.

Bodies are deterministic for a scenario's (model, prompt, stream): the run
(harness/run.py) serializes each once. Headers never carry the API key: the transport adds it.
"""

from __future__ import annotations

import copy
import functools
import random
from typing import Any

from harness.datasets import Entry
from harness.jsonbytes import json_bytes
from harness.sampler import Pick
from harness.scenario import DEFAULT_ANTHROPIC_VERSION, Prompt, Scenario
from harness.variants import entry_overrides

__all__ = [
    "BYTES_PER_TOKEN",
    "DEFAULT_ANTHROPIC_VERSION",
    "body_bytes",
    "build_body",
    "build_headers",
    "build_messages",
    "synthetic_text",
]

BYTES_PER_TOKEN = 4
"""Heuristic used to size synthetic prompts (ASCII English-like words)."""

# Plain, common ASCII words; sentences are built from them deterministically.
_WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "been",
    "one",
    "all",
    "we",
    "their",
    "has",
    "would",
    "when",
    "if",
    "more",
    "no",
    "out",
    "so",
    "said",
    "what",
    "up",
    "its",
    "about",
    "than",
    "into",
    "them",
    "can",
    "only",
    "other",
    "new",
    "some",
    "could",
    "time",
    "these",
    "two",
    "may",
    "then",
    "do",
    "first",
    "any",
    "my",
    "now",
    "such",
    "like",
    "our",
    "over",
    "man",
    "me",
    "even",
    "most",
    "made",
    "after",
    "also",
    "did",
    "many",
    "before",
    "must",
    "through",
    "back",
    "years",
    "where",
    "much",
    "your",
    "way",
    "well",
    "down",
    "should",
    "because",
    "each",
    "just",
    "those",
    "people",
    "how",
    "too",
    "little",
    "state",
    "good",
    "very",
    "make",
    "world",
    "still",
    "own",
    "see",
    "men",
    "work",
    "long",
    "get",
    "here",
    "between",
    "both",
    "life",
    "being",
    "under",
    "never",
    "day",
    "same",
    "another",
    "know",
    "while",
    "last",
    "might",
    "us",
    "great",
    "old",
    "year",
    "off",
    "come",
    "since",
    "against",
    "go",
    "came",
    "right",
    "used",
    "take",
    "three",
    "system",
    "market",
    "customer",
    "service",
    "report",
    "delivery",
    "quality",
    "support",
    "order",
    "account",
    "product",
    "feature",
    "request",
    "latency",
    "network",
    "window",
    "summary",
    "review",
    "release",
    "update",
    "change",
    "result",
    "value",
    "price",
    "team",
    "data",
    "model",
    "answer",
    "question",
    "problem",
    "option",
    "number",
    "level",
    "group",
    "point",
    "case",
    "fact",
    "hand",
    "place",
    "part",
    "week",
    "company",
]


def synthetic_text(tokens: int, seed: int = 0) -> str:
    """Deterministic English-like filler of about ``tokens`` tokens: ``BYTES_PER_TOKEN * tokens``
    bytes of :func:`synthetic_filler` (before harness/calibration.py sizes it by the API's count)."""
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1 (got {tokens})")
    return synthetic_filler(BYTES_PER_TOKEN * tokens, seed)


@functools.lru_cache(maxsize=128)
def synthetic_filler(size: int, seed: int = 0) -> str:
    """Exactly ``size`` ASCII bytes of sentences of common words, the same text for the same
    arguments (a shorter size gives the start of the same text, its last character aside: the
    count grows with the size); a different seed gives a different text (so prompt caches do
    not collide across seeds)."""
    if size < 1:
        raise ValueError(f"size must be >= 1 (got {size})")
    rng = random.Random(f"synthetic-text:{seed}")
    words = _WORDS
    parts: list[str] = []
    length = 0
    while length < size:
        n = rng.randint(6, 16)
        sentence = " ".join(rng.choice(words) for _ in range(n))
        sentence = sentence[0].upper() + sentence[1:] + ". "
        parts.append(sentence)
        length += len(sentence)
    text = "".join(parts)[:size]
    # never end on a space (some APIs strip trailing whitespace; keep the length exact)
    if text.endswith(" "):
        text = text[:-1] + "."
    return text


def _synthetic_block(prompt: Prompt, scenario: Scenario, model: str | None, variant: str | None, size: int | None) -> dict[str, Any]:
    assert prompt.input_tokens is not None
    if size is None:
        size = scenario._input_bytes.get((model or "", prompt.name, variant or ""), BYTES_PER_TOKEN * prompt.input_tokens)
    block: dict[str, Any] = {"type": "text", "text": synthetic_filler(size, scenario.seed)}
    if prompt.cache_synthetic:
        block["cache_control"] = {"type": "ephemeral"}
    return block


def build_messages(
    prompt: Prompt, scenario: Scenario, model: str | None = None, variant: str | None = None, synthetic_bytes: int | None = None
) -> list[dict[str, Any]]:
    """The ``messages`` array: the prompt's conversation, with the synthetic context (its
    `synthetic_bytes`, or as sized for `model` and `variant` by harness/calibration.py, or at 4
    bytes a token).

    * only ``input_tokens``: one user message whose content is the synthetic text (a string,
      or a single cached text block with ``cache_synthetic``);
    * ``messages`` and ``input_tokens``: the synthetic text is prepended as a text block to
      the first user message;
    * only ``messages``: the conversation as written.
    """
    messages = [{"role": m.role, "content": copy.deepcopy(m.content)} for m in prompt.messages or ()]
    if prompt.input_tokens is None:
        return messages
    block = _synthetic_block(prompt, scenario, model, variant, synthetic_bytes)
    if not messages:
        content: Any = [block] if prompt.cache_synthetic else block["text"]
        return [{"role": "user", "content": content}]
    first = messages[0]  # validated to be a user message
    rest = first["content"]
    rest_blocks = [{"type": "text", "text": rest}] if isinstance(rest, str) else list(rest)
    first["content"] = [block, *rest_blocks]
    return messages


def _entry_messages(entry: Entry, scenario: Scenario) -> list[dict[str, Any]]:
    """A dataset entry's messages: as written, or (a trace's request given by its size) a synthetic prompt."""
    if entry.input_tokens is not None:
        return [{"role": "user", "content": synthetic_text(entry.input_tokens, scenario.seed)}]
    return copy.deepcopy(list(entry.messages))


def build_body(pick: Pick, scenario: Scenario, synthetic_bytes: int | None = None) -> dict[str, Any]:
    """The JSON body for ``POST /v1/messages`` (a fresh dict; safe to modify). A dataset entry's
    messages, system, max_tokens and tools take the place of the prompt's. A variant's pick
    carries its prompt as sent (harness/variants.py)."""
    prompt = pick.prompt
    entry = scenario._datasets[prompt.name][pick.entry] if pick.entry is not None else None
    body: dict[str, Any] = {
        "model": pick.model,
        "max_tokens": (entry.max_tokens if entry is not None else None) or prompt.max_tokens,
        "messages": _entry_messages(entry, scenario)
        if entry is not None
        else build_messages(prompt, scenario, pick.model, pick.variant, synthetic_bytes),
    }
    system = entry.system if entry is not None and entry.system is not None else prompt.system
    if system is not None:
        body["system"] = copy.deepcopy(system)
    tools = entry.tools if entry is not None and entry.tools else prompt.tools
    if tools:
        body["tools"] = copy.deepcopy(list(tools))
    if prompt.temperature is not None:
        body["temperature"] = prompt.temperature
    if prompt.thinking is not None:
        body["thinking"] = prompt.thinking.to_body()
    for key, value in prompt.extra.items():
        body[key] = copy.deepcopy(value)
    if entry is not None and pick.variant is not None:  # a variant's settings win over an entry's own
        body |= entry_overrides(scenario, pick.variant)
    if pick.stream:
        body["stream"] = True
    return body


def body_bytes(body: dict[str, Any]) -> bytes:
    """A body serialized to compact UTF-8 JSON (a conversation's is made anew for each turn)."""
    return json_bytes(body)


def build_headers(scenario: Scenario) -> dict[str, str]:
    """Request headers: version, beta flags and content type. Never the API key."""
    headers = {
        "anthropic-version": scenario.anthropic_version or DEFAULT_ANTHROPIC_VERSION,
        "content-type": "application/json",
    }
    if scenario.beta:
        headers["anthropic-beta"] = ",".join(scenario.beta)
    return headers
