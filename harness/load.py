"""The scenario's `load` section: how much traffic, in a closed or an open loop.

Closed loop (no `arrival`): `users` each send one request after another, as Locust runs them;
when the service slows down, so does the sending.

Open loop (`arrival: poisson` or `constant`, or `trace`: harness/trace.py replays a trace's
requests at their own times): requests arrive at `rate` for the whole cluster
whether or not earlier ones have answered. At most `max_in_flight` requests (for the whole
cluster) are under way; an arrival that finds them all busy is dropped, and counted. `warmup`
and `cooldown` lie inside `run_time`: requests started in the warm-up are recorded but not in
the figures; in the cool-down nothing new arrives and the requests in flight finish. A run
whose achieved rate falls below `min_achieved` of its target is marked.

A rate is ``N/s`` or ``N/min`` requests, or a token rate for planning against token limits:
``N input_tokens/min`` (paced by each prompt's input tokens) or ``N output_tokens/min`` (by
max_tokens, corrected by the usage that comes back). `stages` change the rate (or, in a closed
loop, the users) over time: each stage ramps linearly, over its `duration`, from the value
before it (the section's `rate` or `users`, else 0) to its own; the run lasts their total.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.fields import StrictModel, parse_timespan
from harness.trace import TraceSource

__all__ = ["Load", "Rate", "Stage"]

RateUnit = Literal["requests", "input_tokens", "output_tokens"]
_RATE_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(requests|input_tokens|output_tokens)?\s*/\s*(s|min)$")
DEFAULT_MAX_IN_FLIGHT = 100
DEFAULT_MIN_ACHIEVED = 0.95
RATE_FORMS = "N/s or N/min (requests), N input_tokens/min or N output_tokens/min (also per s)"


class Rate(StrictModel):
    """A target rate: `per_s` units per second, the units requests or tokens."""

    per_s: float = Field(gt=0)
    unit: RateUnit = "requests"

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_rate(value)
        if isinstance(value, dict):
            return value
        raise ValueError(f"must be a rate: {RATE_FORMS} (got {value!r})")

    def __str__(self) -> str:
        per_min = self.unit != "requests" and self.per_s * 60 >= 1
        amount = self.per_s * 60 if per_min else self.per_s
        unit = "" if self.unit == "requests" else f" {self.unit}"
        return f"{amount:g}{unit}/{'min' if per_min else 's'}"


def parse_rate(text: str) -> dict[str, Any]:
    match = _RATE_RE.match(text.strip())
    if not match:
        raise ValueError(f"must be a rate: {RATE_FORMS} (got {text!r})")
    amount, unit, per = match.groups()
    per_s = float(amount) / (60 if per == "min" else 1)
    if per_s <= 0:
        raise ValueError(f"must be a rate above 0 (got {text!r})")
    return {"per_s": per_s, "unit": unit or "requests"}


def _timespan(value: Any, allow_zero: bool) -> Any:
    if value is None:
        return None
    parse_timespan(value, allow_zero)
    return value.strip() if isinstance(value, str) else str(value)


class Stage(StrictModel):
    """One stage: over `duration`, ramp linearly to `rate` (open loop) or to `users` (closed)."""

    duration: str
    rate: Rate | None = None
    users: int | None = Field(default=None, ge=0)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _timespan(value, allow_zero=False)

    @model_validator(mode="after")
    def _one_target(self) -> Stage:
        if (self.rate is None) == (self.users is None):
            raise ValueError("give a stage either `rate` (open loop) or `users` (closed loop)")
        return self

    @property
    def duration_s(self) -> int:
        return parse_timespan(self.duration)


class Load(StrictModel):
    """Default load settings (Locust's ``-u``, ``-r``, ``-t``; the command line wins), or an open loop."""

    users: int | None = Field(default=None, ge=1)
    spawn_rate: float | None = Field(default=None, gt=0)
    run_time: str | None = None
    arrival: Literal["poisson", "constant", "trace"] | None = None
    trace: TraceSource | None = None  # arrival: trace (harness/trace.py)
    rate: Rate | None = None
    max_in_flight: int | None = Field(default=None, ge=1)  # in_flight_limit: 100 when not given
    warmup: str | None = None
    cooldown: str | None = None
    min_achieved: float | None = Field(default=None, gt=0, le=1)  # achieved_floor: 0.95 when not given
    stages: list[Stage] | None = Field(default=None, min_length=1)

    @field_validator("run_time", mode="before")
    @classmethod
    def _run_time(cls, value: Any) -> Any:
        return _timespan(value, allow_zero=False)

    @field_validator("warmup", "cooldown", mode="before")
    @classmethod
    def _inside(cls, value: Any) -> Any:
        return _timespan(value, allow_zero=True)

    @model_validator(mode="after")
    def _consistent(self) -> Load:
        open_loop = self.arrival is not None
        if open_loop:
            self._check_open_loop()
        else:
            for name in ("rate", "trace", "cooldown", "max_in_flight", "min_achieved"):  # (warmup: a sweep's steps have one)
                if getattr(self, name) is not None:
                    raise ValueError(f"`{name}` needs `arrival: poisson` or `arrival: constant` (an open loop)")
            if any(stage.rate is not None for stage in self.stages or ()):
                raise ValueError("stages with `rate` need `arrival: poisson` or `arrival: constant` (an open loop)")
        if self.stages and self.run_time is not None:
            raise ValueError(f"`run_time` comes from the stages ({self.stages_s} s in all): leave it out")
        total = self.run_time_s
        inside = self.warmup_s + self.cooldown_s
        if total is not None and inside and inside >= total:
            raise ValueError(f"warmup + cooldown ({inside} s) must leave time to measure in the run's {total} s")
        return self

    def _check_open_loop(self) -> None:
        if self.users is not None or self.spawn_rate is not None:
            raise ValueError("`users` and `spawn_rate` are for a closed loop; an open loop has `rate` and `max_in_flight`")
        if (self.arrival == "trace") != (self.trace is not None):
            raise ValueError("`arrival: trace` and `trace: {path, replay_speed}` go together")
        if self.trace is not None:
            if self.rate is not None or self.stages:
                raise ValueError("a trace sets its own times: leave out `rate` and `stages`")
            return
        if self.rate is None and not self.stages:
            raise ValueError("an open loop (`arrival`) needs `rate` or `stages` with rates")
        stages = self.stages or []
        if any(stage.users is not None for stage in stages):
            raise ValueError("an open loop's stages give `rate`, not `users`")
        units = {rate.unit for rate in [self.rate, *(stage.rate for stage in stages)] if rate is not None}
        if len(units) > 1:
            raise ValueError(f"one unit for the rate and every stage (got {', '.join(sorted(units))})")

    @property
    def open_loop(self) -> bool:
        return self.arrival is not None

    @property
    def in_flight_limit(self) -> int:
        return DEFAULT_MAX_IN_FLIGHT if self.max_in_flight is None else self.max_in_flight

    @property
    def achieved_floor(self) -> float:
        return DEFAULT_MIN_ACHIEVED if self.min_achieved is None else self.min_achieved

    @property
    def rate_unit(self) -> RateUnit:
        rates = [self.rate, *(stage.rate for stage in self.stages or ())]
        return next((rate.unit for rate in rates if rate is not None), "requests")

    @property
    def stages_s(self) -> int:
        return sum(stage.duration_s for stage in self.stages or ())

    @property
    def run_time_s(self) -> int | None:
        if self.stages:
            return self.stages_s
        return None if self.run_time is None else parse_timespan(self.run_time)

    @property
    def warmup_s(self) -> int:
        return 0 if self.warmup is None else parse_timespan(self.warmup, allow_zero=True)

    @property
    def cooldown_s(self) -> int:
        return 0 if self.cooldown is None else parse_timespan(self.cooldown, allow_zero=True)
