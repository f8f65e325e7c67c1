"""What every section of a scenario file shares: the strict model base (unknown fields,
wrong types and non-finite numbers are errors; a scenario is immutable once loaded) and
Locust-style time spans."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel", "parse_timespan"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


_TIMESPAN_RE = re.compile(r"^(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s)?$")


def parse_timespan(value: str | int | float, allow_zero: bool = False) -> int:
    """Seconds in a Locust-style time span: ``30``, ``"30s"``, ``"5m"``, ``"1h30m"`` (``0``
    and ``"0s"`` only with `allow_zero`)."""
    if isinstance(value, bool):
        raise ValueError("must be a time span like 30s, 5m or 1h30m")
    if isinstance(value, (int, float)):
        seconds = int(value)
    else:
        text = str(value).strip().lower()
        if text.isdigit():
            seconds = int(text)
        else:
            m = _TIMESPAN_RE.match(text)
            if not text or not m or not any(m.groups()):
                raise ValueError(f"must be a time span like 30s, 5m or 1h30m (got {value!r})")
            h, mi, s = (int(g) if g else 0 for g in m.groups())
            seconds = h * 3600 + mi * 60 + s
    if (isinstance(value, (int, float)) and value < 0) or seconds < 0:
        raise ValueError(f"must be >= 0 seconds (got {value!r})")
    if seconds == 0 and not allow_zero:
        raise ValueError(f"must be at least 1 second (got {value!r})")
    return seconds
