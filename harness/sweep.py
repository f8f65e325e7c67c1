"""The scenario's `sweep` section and the search it drives: which load each step offers, up to
the highest load that meets every SLO.

    sweep:
      rates: [2/s, 4/s, 8/s, 16/s]   # open-loop steps (or token rates: 100000 input_tokens/min, ...)
      users: [5, 10, 20]             # or closed-loop steps
      step_time: 60s                 # measured per step, after the step's warm-up (load.warmup)
      stop_after_breach: true        # no listed step after the first that breaches an SLO
      resolution: 5%                 # then bisection between the last good and the first bad step

The listed steps run in their (ascending) order. The sustainable value lies below the lowest
step that breached (the first bad) and at or above the highest step under it that met every
SLO (the last good); bisection halves that interval until it is within `resolution` of the
last good. No good step: no sustainable value. No bad step: the last listed one (the limit is
above it).
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from harness.fields import StrictModel, parse_timespan
from harness.load import Load, Rate

SweepKind = Literal["rates", "users"]
_PERCENT_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*%$")
DEFAULT_RESOLUTION = "5%"


def parse_share(value: Any) -> float:
    """A share as `5%` or 0.05."""
    if isinstance(value, str):
        match = _PERCENT_RE.match(value.strip())
        if not match:
            raise ValueError(f"must be a percentage like 5% (got {value!r})")
        return float(match.group(1)) / 100
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"must be a percentage like 5% (got {value!r})")


class Sweep(StrictModel):
    """A capacity sweep: steps of rising load, each judged on the scenario's SLOs."""

    rates: list[Rate] | None = Field(default=None, min_length=1)
    users: list[int] | None = Field(default=None, min_length=1)
    step_time: str
    stop_after_breach: bool = True
    resolution: str | float = DEFAULT_RESOLUTION

    @field_validator("step_time", mode="before")
    @classmethod
    def _step_time(cls, value: Any) -> Any:
        parse_timespan(value)
        return value.strip() if isinstance(value, str) else str(value)

    @field_validator("users")
    @classmethod
    def _users(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(users < 1 for users in value):
            raise ValueError("every step needs at least 1 user")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str | float) -> str | float:
        share = parse_share(value)
        if not 0 < share < 1:
            raise ValueError(f"must lie between 0% and 100% (got {value!r})")
        return value

    @model_validator(mode="after")
    def _steps(self) -> Sweep:
        if (self.rates is None) == (self.users is None):
            raise ValueError("give the steps as `rates` (open loop) or as `users` (closed loop), one of them")
        if self.rates is not None and len({rate.unit for rate in self.rates}) > 1:
            raise ValueError("one unit for every rate of `rates`")
        values = self.values
        if any(later <= earlier for earlier, later in itertools.pairwise(values)):
            raise ValueError(f"the steps must rise (got {', '.join(self.describe(v) for v in values)})")
        return self

    @property
    def kind(self) -> SweepKind:
        return "rates" if self.rates is not None else "users"

    @property
    def unit(self) -> str:
        """What a step's value counts: requests or tokens per second, or users."""
        return self.rates[0].unit if self.rates is not None else "users"

    @property
    def values(self) -> list[float]:
        """The listed steps: rates per second, or users."""
        if self.rates is not None:
            return [rate.per_s for rate in self.rates]
        return [float(users) for users in self.users or ()]

    @property
    def step_s(self) -> int:
        return parse_timespan(self.step_time)

    @property
    def resolution_share(self) -> float:
        return parse_share(self.resolution)

    def describe(self, value: float) -> str:
        """A step's value as the scenario writes it (`4/s`, `100000 input_tokens/min`, `8 users`)."""
        if self.rates is None:
            return f"{value:g} users"
        return str(Rate(per_s=value, unit=self.rates[0].unit))


class SweepSearch:
    """Which value the next step offers, from the results so far (step values and verdicts)."""

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.results: list[tuple[float, bool]] = []

    def record(self, value: float, passed: bool) -> None:
        self.results.append((value, passed))

    @property
    def first_bad(self) -> float | None:
        """The lowest value that breached an SLO."""
        return min((value for value, passed in self.results if not passed), default=None)

    @property
    def last_good(self) -> float | None:
        """The highest value below the first bad that met every SLO: the sustainable value."""
        bad = self.first_bad
        return max((value for value, passed in self.results if passed and (bad is None or value < bad)), default=None)

    def next_value(self) -> float | None:
        """The next step's value; None: the sweep is over."""
        done = {value for value, _ in self.results}
        if self.first_bad is None or not self.sweep.stop_after_breach:
            listed = [value for value in self.sweep.values if value not in done]
            if listed:
                return listed[0]
        return self._bisection()

    def _bisection(self) -> float | None:
        good, bad = self.last_good, self.first_bad
        if good is None or bad is None or (bad - good) <= self.sweep.resolution_share * good:
            return None
        middle = (good + bad) / 2
        if self.sweep.kind == "users":
            middle = float(round(middle))
            if middle in (good, bad):
                return None
        return middle

    def is_bisection(self, value: float) -> bool:
        return value not in self.sweep.values


def with_first_rate(data: dict[str, Any]) -> dict[str, Any]:
    """A scenario's raw data in which an open loop without a `rate` starts at the sweep's first
    rate (the sweep's rates are its load)."""
    sweep, load = data.get("sweep"), data.get("load")
    if not (isinstance(sweep, dict) and isinstance(load, dict) and isinstance(sweep.get("rates"), list) and sweep["rates"]):
        return data
    if load.get("arrival") is None or "rate" in load or load.get("stages"):
        return data
    return {**data, "load": {**load, "rate": sweep["rates"][0]}}


def sweep_problem(sweep: Sweep, load: Load, slos: bool) -> tuple[str, str] | None:
    """What in the scenario's load (and SLOs) does not fit its sweep: (field, problem), or None."""
    if not slos:
        return "sweep", "a sweep judges each step on the scenario's SLOs: give `slos` (e.g. ttft_p95_ms, error_rate)"
    if sweep.rates is not None and load.rate is not None and load.rate != sweep.rates[0]:
        return "load.rate", f"a rate sweep's load starts at its first step ({sweep.rates[0]}): leave out `rate`"
    return _load_problem(sweep, load.open_loop, bool(load.stages), load.run_time is not None)


def _load_problem(sweep: Sweep, open_loop: bool, stages: bool, run_time: bool) -> tuple[str, str] | None:
    if stages:
        return "load.stages", "a sweep sets the load step by step: leave out `stages`"
    if run_time:
        return "load.run_time", "a sweep's steps set the run time: leave out `run_time`"
    if sweep.kind == "rates" and not open_loop:
        return "sweep.rates", "rate steps need an open loop: `arrival: poisson` or `arrival: constant` in `load` (or --arrival)"
    if sweep.kind == "users" and open_loop:
        return "sweep.users", "user steps are for a closed loop: leave out `load.arrival` (or sweep `rates`)"
    return None
