"""Trace replay: an open loop whose arrivals are a trace's requests, each at its own time.

`load: {arrival: trace, trace: {path: traces/day.jsonl, replay_speed: 2.0}}` replays the trace's
lines (harness/datasets.py reads them: a `timestamp` in ms, and `messages` or token counts) at
their times from the first one, divided by `replay_speed`. They are the run's only requests:
the trace is the scenario's one prompt, named after its file. On a master's workers, worker i of
n takes the trace's requests i, i + n, ... in time order (from the moment of a new split on, when
workers join or leave), so the cluster sends each once, at its time; send lag and drops are
counted as in any open loop (harness/openloop.py).
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.fields import StrictModel

if TYPE_CHECKING:
    from harness.scenario import Scenario

__all__ = ["Trace", "TraceArrivals", "TraceSource", "trace_as_prompt", "trace_of"]

TRACE_FORMAT = "trace"
TAIL_S = 1  # a trace's run, when no run time is given: its span (a master's: from its split's start), and this
DEFAULT_TRACE_MAX_TOKENS = 1024  # for a trace line without an output length


class TraceSource(StrictModel):
    """`load.trace`: the file (relative to the scenario) and how much faster than recorded."""

    path: str = Field(min_length=1)
    replay_speed: float = Field(default=1.0, gt=0, le=1000)


def trace_as_prompt(data: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """A scenario's raw data with its trace (`load.trace`) as its one prompt; or the data as it
    is and (field, problem) when it has prompts of its own."""
    load = data.get("load")
    source = load.get("trace") if isinstance(load, dict) else None
    if not isinstance(source, dict) or not isinstance(source.get("path"), str):
        return data, None
    prompts = data.get("prompts") or []
    mine = [prompt for prompt in prompts if isinstance(prompt, dict) and (prompt.get("dataset") or {}).get("format") == TRACE_FORMAT]
    if len(mine) == len(prompts) and (mine or not data.get("datasets")):
        if not mine:
            dataset = {"path": source["path"], "format": TRACE_FORMAT, "order": "sequential"}
            prompts = [{"name": Path(source["path"]).stem or "trace", "max_tokens": DEFAULT_TRACE_MAX_TOKENS, "dataset": dataset}]
        return {**data, "prompts": prompts}, None
    return data, ("prompts", "a trace replay sends the trace's requests only: leave out `prompts` and `datasets`")


class TraceArrivals:
    """One worker's share of a trace: requests index, index + count, ... from `since_s` on."""

    def __init__(self, times_s: list[float], index: int, count: int, since_s: float) -> None:
        if not 0 <= index < count:
            raise ValueError(f"worker index {index} of {count}")
        self.times_s, self.count = times_s, count
        first = bisect.bisect_left(times_s, since_s)
        self._next = first + (index - first) % count  # the first of this worker's from there

    def next_after(self, after_s: float) -> tuple[float, int | None]:
        """The time and index of this share's next request after `after_s` (math.inf, None: none)."""
        while self._next < len(self.times_s):
            position = self._next
            self._next += self.count
            if self.times_s[position] > after_s:
                return self.times_s[position], position
        return math.inf, None


class Trace:
    """A trace's arrival times (seconds since its first request, divided by the replay speed),
    in time order, and the model each line names (None: the scenario's mix picks)."""

    def __init__(self, times_s: list[float], models: list[str | None]) -> None:
        self.times_s, self.models = times_s, models

    def demand_at(self, t: float) -> float:
        """The requests due before `t` (as RateProfile.demand_at gives a rate's)."""
        return float(bisect.bisect_left(self.times_s, t))

    def rate_at(self, t: float) -> float:
        """The trace's rate at `t`: its requests due in the second before (per second)."""
        return self.demand_at(t) - self.demand_at(t - 1.0)

    @property
    def span_s(self) -> float:
        return self.times_s[-1] if self.times_s else 0.0

    def share(self, index: int, count: int, since_s: float) -> TraceArrivals:
        return TraceArrivals(self.times_s, index, count, since_s)


def trace_of(scenario: Scenario) -> Trace | None:
    """The scenario's trace as read (its one prompt's entries), or None: no trace replay."""
    load = scenario.load
    if load is None or load.trace is None:
        return None
    entries = scenario._datasets[scenario.prompts[0].name]
    speed = load.trace.replay_speed
    return Trace([(entry.at_s or 0.0) / speed for entry in entries], [entry.model for entry in entries])
