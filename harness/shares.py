"""Each worker's share of the run's limits (the cost budget, `--max-requests`), so that the spend
stays bounded on a worker that is on its own: its master lost, or late with its guard.

The master splits what is left among the workers that are working now: a worker's fair share
is what it has reported so far plus an equal part of the rest. It sends the shares with the
run, then again every `INTERVAL_S`, so a worker that joins or leaves is accounted for within a
few seconds and a faster worker gets more of what the others leave. A worker admits no new
request once its own spend (or requests sent, in flight included) reaches its share: its users
wait for the master's next split or the end of the run.

Reports come late (every few seconds), so a worker may have spent more than the master knows,
up to the share it holds. The master therefore hands out only what no worker may still spend
(`ShareBook`): a worker *holds* the largest share sent to it since the one its last report
applied (each share has a number, each report says which one the worker applies), or what it
reported if more. A share that grows takes from what nobody holds; one that shrinks frees its
difference only once the worker's report shows it applied. A worker gone missing keeps what it
holds until it has surely stopped on its own (`--master-lost-timeout` after its last heartbeat)
or comes back. What all workers hold never passes the limit, so the spend passes it only by
what is in flight, as in a single process.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

INTERVAL_S = 1.0


@dataclass(frozen=True)
class Share:
    budget_usd: float | None = None
    max_requests: int | None = None
    seq: int = 0  # which of the master's splits (a report says which one it applies)

    def as_dict(self) -> dict[str, Any]:
        return {"budget_usd": self.budget_usd, "max_requests": self.max_requests, "seq": self.seq}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Share:
        data = data or {}
        return cls(data.get("budget_usd"), data.get("max_requests"), data.get("seq") or 0)

    def refusal(self, spent_usd: float, admitted: int) -> str | None:
        """Why no more request may start on this worker now (None: it may)."""
        if self.budget_usd is not None and spent_usd >= self.budget_usd:
            return f"its share of the budget, ${self.budget_usd:.4f}, is spent (${spent_usd:.4f})"
        if self.max_requests is not None and admitted >= self.max_requests:
            return f"its share of --max-requests, {self.max_requests}, is sent"
        return None


@dataclass(frozen=True)
class Spent:
    """What a worker has reported: dollars spent, requests recorded, and the share it applied."""

    usd: float
    requests: int
    share_seq: int | None = None


class ShareBook:
    """The master's side: the shares sent to each worker and not yet known to be replaced."""

    def __init__(self, budget_usd: float | None, max_requests: int | None) -> None:
        self.budget_usd = budget_usd
        self.max_requests = max_requests
        self._sent: dict[str, list[Share]] = {}  # per working worker, oldest first
        self._seqs = itertools.count(1)

    def split(self, spent: dict[str, Spent], working: Iterable[str], holding: Iterable[str] = ()) -> dict[str, Share]:
        """The next share of each working worker, recorded as sent to it. `spent` holds every
        worker of the run, those gone included (what they spent is spent); `holding`: workers
        that get no share but may still spend what they hold (missing for a moment: they may
        come back, or be on their own until they give their master up)."""
        working = sorted(working)
        if not working or (self.budget_usd is None and self.max_requests is None):
            return {worker: Share() for worker in working}
        counted = [*working, *(worker for worker in holding if worker in self._sent and worker not in working)]
        self._sent = {worker: self._sent.get(worker, []) for worker in counted}  # one gone for good: what it spent is known
        for worker in counted:
            self._applied(worker, spent.get(worker, Spent(0.0, 0)).share_seq)
        usd = self._limit(self.budget_usd, {w: s.usd for w, s in spent.items()}, working, counted, lambda s: s.budget_usd, whole=False)
        requests = self._limit(
            self.max_requests, {w: s.requests for w, s in spent.items()}, working, counted, lambda s: s.max_requests, whole=True
        )
        seq = next(self._seqs)
        shares = {}
        for worker in working:
            share = Share(None if usd is None else usd[worker], None if requests is None else int(requests[worker]), seq)
            self._sent[worker] = [*(old for old in self._sent[worker] if not _covers(share, old)), share]
            shares[worker] = share
        return shares

    def _applied(self, worker: str, seq: int | None) -> None:
        """The worker's report applied share `seq`: those sent before it no longer count."""
        if seq is not None:
            self._sent[worker] = [share for share in self._sent[worker] if share.seq >= seq]

    def _limit(
        self,
        limit: float | None,
        spent: dict[str, float],
        working: list[str],
        counted: list[str],
        of: Callable[[Share], float | None],
        whole: bool,
    ) -> dict[str, float] | None:
        """Each working worker's share of one limit: its fair share when it shrinks, or as much
        of its fair share as what no worker holds allows when it grows."""
        if limit is None:
            return None
        left = max(0.0, limit - sum(spent.values()))
        fair = {w: spent.get(w, 0) + _part(left, len(working), i, whole) for i, w in enumerate(working)}
        held = {w: max([spent.get(w, 0.0), *_values(self._sent[w], of)]) for w in counted}
        free = limit - sum(v for w, v in spent.items() if w not in held) - sum(held.values())
        wants = {w: fair[w] - held[w] for w in working if fair[w] > held[w]}  # (a holding worker wants nothing)
        scale = min(1.0, max(0.0, free) / sum(wants.values())) if wants else 0.0
        grown = {w: held[w] + (math.floor(want * scale) if whole else want * scale) for w, want in wants.items()}
        return {w: grown.get(w, fair[w]) for w in working}


def _part(left: float, count: int, index: int, whole: bool) -> float:
    """Worker `index`'s equal part of `left` among `count` (whole: the first ones get the remainder)."""
    if not whole:
        return left / count
    whole_left = int(left)
    return whole_left // count + (1 if index < whole_left % count else 0)


def _values(shares: list[Share], of: Callable[[Share], float | None]) -> list[float]:
    return [value for value in map(of, shares) if value is not None]


def _covers(new: Share, old: Share) -> bool:
    """A later share at least as large in both limits: the older one can never be the larger held."""
    return all(n is None or o is None or n >= o for n, o in ((new.budget_usd, old.budget_usd), (new.max_requests, old.max_requests)))
