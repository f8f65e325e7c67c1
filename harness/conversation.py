"""Conversations: a prompt's requests as the sessions of one user, turn after turn.

A prompt with `conversation:` (or with tools) is sent as a session. Its user turns are the user
messages of what the prompt (or its dataset entry) would send, the assistant messages written
there left out: each turn's request carries the conversation so far with the real replies the
service gave. A prompt with tools and no `conversation` is one turn, its messages as written. With `turns` above the written ones, `follow_up` is the user's next message.
Between turns the user thinks (`think_time`, drawn from its distribution); a reply that calls
tools is answered at once with the prompt's canned `tool_result` for each call, in a request of
its own (tool_use -> tool_result -> the next answer), at most `MAX_TOOL_ROUNDS` times a turn.
Each request's `turn` is its place in the session (1, 2, ...): a tool result's request is a
turn of its own. A session ends after its last turn, or at its first failed request (the
conversation cannot go on without the reply); `ConversationBook` counts how sessions end and
keeps the figures of each turn.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from typing import Any, Literal

from pydantic import Field, model_validator

from harness.fields import StrictModel
from harness.histograms import new_histogram, record_ms
from harness.results import Conversations, TurnFigures
from harness.scenario_errors import field_error
from harness.stats import percentiles
from harness.timing import CANCELLED, TimingRecord

__all__ = ["ConversationBook", "ConversationSpec", "Session", "ThinkTime", "checked_tools"]

MAX_TURNS = 100
MAX_TOOL_ROUNDS = 8
DEFAULT_FOLLOW_UP = "Please go on."
DEFAULT_TOOL_RESULT = "ok"

# how a session ended
COMPLETED, FAILED, STOPPED, NO_REPLY, TOOL_LOOP = "completed", "failed", "stopped", "no_reply", "tool_loop"
ENDINGS = (COMPLETED, FAILED, STOPPED, NO_REPLY, TOOL_LOOP)


class ThinkTime(StrictModel):
    """The user's pause between turns: `constant` (`mean_s`), `exponential` (mean `mean_s`)
    or `uniform` (`min_s` to `max_s`)."""

    distribution: Literal["constant", "exponential", "uniform"] = "constant"
    mean_s: float = Field(default=0.0, ge=0, le=3600)
    min_s: float = Field(default=0.0, ge=0, le=3600)
    max_s: float = Field(default=0.0, ge=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> ThinkTime:
        if self.distribution == "uniform" and self.max_s < self.min_s:
            raise field_error("max_s", f"must be at least min_s ({self.min_s:g}) (got {self.max_s:g})")
        if self.distribution != "uniform" and (self.min_s or self.max_s):
            raise field_error("min_s", "only with distribution: uniform (the others take mean_s)")
        return self

    def draw(self, rng: random.Random) -> float:
        if self.distribution == "uniform":
            return rng.uniform(self.min_s, self.max_s)
        if self.distribution == "exponential" and self.mean_s > 0:
            return rng.expovariate(1 / self.mean_s)
        return self.mean_s


class ConversationSpec(StrictModel):
    """A prompt's `conversation:`: how many user turns, what the user says after the written
    ones, and the think time between turns."""

    turns: int | None = Field(default=None, ge=1, le=MAX_TURNS)  # default: the written user turns
    follow_up: str = Field(default=DEFAULT_FOLLOW_UP, min_length=1)
    think_time: ThinkTime = Field(default_factory=ThinkTime)


def checked_tools(value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A prompt's `tools`: each with a name, and a custom tool with its input_schema."""
    for index, tool in enumerate(value or ()):
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise ValueError(f"[{index}].name: every tool needs a name")
        if tool.get("type") is None and not isinstance(tool.get("input_schema"), dict):
            raise ValueError(f"[{index}].input_schema: a custom tool needs an input_schema (a JSON Schema object)")
    return value


class Session:
    """One conversation: the next request's messages, the replies as they come."""

    def __init__(self, body: dict[str, Any], spec: ConversationSpec | None, tool_result: str) -> None:
        """`body`: the request the prompt (or its entry) would send alone; `spec` None: a
        prompt with tools and no conversation, sent as written, its tool loop completed."""
        if spec is None:
            self.user_turns: list[list[dict[str, Any]]] = [body["messages"]]  # one turn: the messages as written
        else:
            written = [message["content"] for message in body["messages"] if message["role"] == "user"]
            count = spec.turns or len(written)
            self.user_turns = [[{"role": "user", "content": content}] for content in (written + [spec.follow_up] * count)[:count]]
        self.think_time = spec.think_time if spec is not None else ThinkTime()
        self.base = {key: value for key, value in body.items() if key != "messages"}
        self.tool_result = tool_result
        self.history: list[dict[str, Any]] = []
        self.turn = 0  # requests answered so far
        self.user_turn = 0  # user turns sent so far
        self.tool_rounds = 0  # in the current user turn
        self.pending_calls: list[dict[str, Any]] = []
        self.ending: str | None = None

    def think_s(self, rng: random.Random) -> float:
        return self.think_time.draw(rng)

    @property
    def thinks_next(self) -> bool:
        """Is the next request a new user turn after an answer (the user thinks first)?"""
        return self.turn > 0 and not self.pending_calls

    def next_body(self) -> dict[str, Any] | None:
        """The next request's body, or None: the session is over."""
        if self.ending is not None:
            return None
        if self.pending_calls:
            results = [{"type": "tool_result", "tool_use_id": call.get("id"), "content": self.tool_result} for call in self.pending_calls]
            added = [{"role": "user", "content": results}]
        elif self.user_turn < len(self.user_turns):
            added = [_copied(message) for message in self.user_turns[self.user_turn]]
        else:
            self.ending = COMPLETED
            return None
        return {**self.base, "messages": [*self.history, *added]}

    def answered(self, body: dict[str, Any], record: TimingRecord, content: list[dict[str, Any]]) -> None:
        """The request of `body` ended with `record` (its last attempt) and this reply."""
        self.turn += 1
        if not record.ok:
            self.ending = STOPPED if record.outcome == CANCELLED else FAILED
            return
        if not content:
            self.ending = NO_REPLY  # nothing to carry on from (an empty answer)
            return
        if not self.pending_calls:
            self.user_turn += 1
            self.tool_rounds = 0
        self.history = [*body["messages"], {"role": "assistant", "content": content}]
        # every call is answered, also one cut short by max_tokens (the API refuses a call left unanswered)
        self.pending_calls = [block for block in content if block.get("type") == "tool_use"]
        if self.pending_calls:
            self.tool_rounds += 1
            if self.tool_rounds > MAX_TOOL_ROUNDS:
                self.ending = TOOL_LOOP

    def stop(self) -> None:
        """The run stopped the session between its requests."""
        if self.ending is None:
            self.ending = STOPPED


def _copied(message: dict[str, Any]) -> dict[str, Any]:
    """A message to send, its own copy (blocks may be marked for the prompt cache): a text
    content needs only a new dict (deepcopy takes microseconds for every turn)."""
    return dict(message) if isinstance(message.get("content"), str) else copy.deepcopy(message)


class TurnStats:
    """The requests at one place of their sessions: counts, input tokens, and histograms of
    TTFT (to the first text), time to the first tool input, and latency."""

    HISTOGRAMS = ("ttft", "tool_input", "latency")

    def __init__(self) -> None:
        self.requests = self.failures = self.input_tokens = 0
        self.ttft, self.tool_input, self.latency = new_histogram(), new_histogram(), new_histogram()

    def add(self, record: TimingRecord) -> None:
        self.requests += 1
        self.input_tokens += record.input_tokens or 0
        if not record.ok:
            self.failures += 1
            return
        record_ms(self.latency, record.latency_ms)
        record_ms(self.ttft if record.first_content == "text" else self.tool_input, record.ttft_ms)

    def merge(self, other: TurnStats) -> None:
        self.requests += other.requests
        self.failures += other.failures
        self.input_tokens += other.input_tokens
        for name in self.HISTOGRAMS:
            getattr(self, name).add(getattr(other, name))

    def encode(self) -> dict[str, Any]:
        histograms = {name: getattr(self, name).encode().decode() for name in self.HISTOGRAMS}
        return {"requests": self.requests, "failures": self.failures, "input_tokens": self.input_tokens, **histograms}

    @classmethod
    def decode(cls, data: dict[str, Any]) -> TurnStats:
        stats = cls()
        stats.requests, stats.failures, stats.input_tokens = data["requests"], data["failures"], data["input_tokens"]
        for name in cls.HISTOGRAMS:
            getattr(stats, name).decode_and_add(data[name].encode())
        return stats

    def figures(self, turn: int) -> TurnFigures:
        return TurnFigures(
            turn=turn,
            requests=self.requests,
            failures=self.failures,
            ttft_ms=percentiles(self.ttft),
            first_tool_input_ms=percentiles(self.tool_input),
            latency_ms=percentiles(self.latency),
            input_tokens=self.input_tokens,
        )


class ConversationBook:
    """How sessions ended, and the figures of each turn (in the measurement window). A worker
    reports what was added since its last report; the master merges the reports."""

    def __init__(self) -> None:
        self.endings: Counter[str] = Counter()
        self.turns: dict[int, TurnStats] = {}

    def add(self, record: TimingRecord) -> None:
        if record.turn is not None:
            stats = self.turns.get(record.turn)
            if stats is None:
                stats = self.turns[record.turn] = TurnStats()
            stats.add(record)

    def end(self, session: Session) -> None:
        self.endings[session.ending or STOPPED] += 1

    def reset(self) -> None:
        self.endings.clear()
        self.turns.clear()

    def encode_delta(self) -> dict[str, Any]:
        """What was added since the last report (then back to nothing)."""
        delta = {"endings": dict(self.endings), "turns": {str(turn): stats.encode() for turn, stats in self.turns.items()}}
        self.reset()
        return delta

    def merge_encoded(self, delta: dict[str, Any]) -> None:
        self.endings.update(delta.get("endings") or {})
        for turn, encoded in (delta.get("turns") or {}).items():
            self.turns.setdefault(int(turn), TurnStats()).merge(TurnStats.decode(encoded))

    def figures(self) -> Conversations | None:
        """None: no prompt was sent as conversations."""
        if not self.endings and not self.turns:
            return None
        return Conversations(
            sessions=sum(self.endings.values()),
            endings={name: self.endings[name] for name in ENDINGS if self.endings[name]},
            turns=[stats.figures(turn) for turn, stats in sorted(self.turns.items())],
        )
