"""Each worker's share of the run's limits (the cost budget, `--max-requests`), so that the spend
stays bounded on a worker that is on its own: its master lost, or late with its guard.

The master splits what is left among the workers that are working now: a worker's share is
what it has reported so far plus an equal part of the rest. It sends the shares with the run,
then again every `INTERVAL_S`, so a worker that joins or leaves is accounted for within a
second and a faster worker gets more of what the others leave. A worker admits no new request
once its own spend (or requests sent, in flight included) reaches its share: its users wait
for the master's next split or the end of the run. The sum of the shares is the limit, so the
spend can pass it only by what is in flight, as in a single process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

INTERVAL_S = 1.0


@dataclass(frozen=True)
class Share:
    budget_usd: float | None = None
    max_requests: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"budget_usd": self.budget_usd, "max_requests": self.max_requests}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Share:
        data = data or {}
        return cls(data.get("budget_usd"), data.get("max_requests"))

    def refusal(self, spent_usd: float, admitted: int) -> str | None:
        """Why no more request may start on this worker now (None: it may)."""
        if self.budget_usd is not None and spent_usd >= self.budget_usd:
            return f"its share of the budget, ${self.budget_usd:.4f}, is spent (${spent_usd:.4f})"
        if self.max_requests is not None and admitted >= self.max_requests:
            return f"its share of --max-requests, {self.max_requests}, is sent"
        return None


@dataclass(frozen=True)
class Spent:
    """What a worker has reported: dollars spent and requests recorded."""

    usd: float
    requests: int


def split(budget_usd: float | None, max_requests: int | None, spent: dict[str, Spent], working: Iterable[str]) -> dict[str, Share]:
    """The share of each working worker. `spent` holds every worker of the run, those gone
    included (what they spent is spent)."""
    working = sorted(working)
    if not working or (budget_usd is None and max_requests is None):
        return {worker: Share() for worker in working}
    usd_left = None if budget_usd is None else max(0.0, budget_usd - sum(s.usd for s in spent.values()))
    requests_left = None if max_requests is None else max(0, max_requests - sum(s.requests for s in spent.values()))
    shares = {}
    for index, worker in enumerate(working):
        own = spent.get(worker, Spent(0.0, 0))
        budget = None if usd_left is None else own.usd + usd_left / len(working)
        requests = None
        if requests_left is not None:  # whole requests: the first ones get the remainder
            requests = own.requests + requests_left // len(working) + (1 if index < requests_left % len(working) else 0)
        shares[worker] = Share(budget, requests)
    return shares
