"""An open loop across a cluster: the master splits the arrivals among its workers, and every
worker schedules its own share.

Worker i of n takes the demand D/n (harness/arrivals.py): Poisson shares sum to one Poisson
process at the cluster's rate, constant ones interleave into evenly spaced arrivals. Each
worker's slots (max_in_flight) are its users, which Locust splits among the workers as evenly
as it splits any users (they differ by one at most); a worker with no user gets no arrivals.

All schedules run from one start in wall-clock time, sent by the master: the clocks of master
and workers are taken to be synchronized (NTP keeps a real cluster within milliseconds; a
worker whose clock is off by d sends its share d early or late).

    master -> worker  claude_arrivals  {run_id, start_wall, until_s, since_s, index, count, rates}

the worker's share from `since_s` on (seconds since `start_wall`; count 0: none), none from
`until_s` on (the cool-down); `rates`: a sweep's changes of the target rate so far, each a
new split from its time on (harness/sweep_run.py). Sent to every working worker once spawning is complete (since 0, the start
MARGIN_S ahead, time for the message to arrive), and again whenever the set of working
workers changes (one joined, quit or was lost): the new split holds from MARGIN_S ahead (a
worker that gets it late starts its new share where its old one left off). The
arrivals a lost worker would have sent between its loss and the new split are sent by nobody:
the achieved rate shows them. Workers report their arrival counts in every report; the master
sums them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent

from harness.arrivals import span_between

logger = logging.getLogger("harness.distributed")

ARRIVALS_MESSAGE = "claude_arrivals"
MARGIN_S = 1.0  # from the master's split to the time it holds on every worker
WATCH_S = 0.25  # how often the master looks at the set of working workers


@dataclass(frozen=True)
class ArrivalShare:
    """One worker's share of the cluster's arrivals, from `since_s` on."""

    run_id: str
    start_wall: float  # time.time() of the schedules' time 0, on every process
    until_s: float | None  # no arrival from then on (None: until the run stops)
    since_s: float
    index: int
    count: int
    rates: list[tuple[float, float]] = field(default_factory=list)  # a sweep's rate changes so far: (from s, per s)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArrivalShare:
        return cls(**data)

    def start_ns(self) -> int:
        """The start on this process's perf_counter clock (the wall clocks being synchronized)."""
        return time.perf_counter_ns() + int((self.start_wall - time.time()) * 1e9)


class ClusterArrivals:
    """The master's side: the start, the split, and a new split when the working workers change."""

    def __init__(self, run_id: str, working: Callable[[], list[str]], send: Callable[[str, dict[str, Any]], None]) -> None:
        self.run_id = run_id
        self.working = working  # the ids of the workers that can send (running, with users), in a stable order
        self.send = send
        self.start_wall: float | None = None
        self.until_s: float | None = None
        self.ended_wall: float | None = None
        self.members: list[str] = []
        self.rates: list[tuple[float, float]] = []  # a sweep's rate changes: (from s, per s)
        self._watching: gevent.Greenlet | None = None

    @property
    def started(self) -> bool:
        return self.start_wall is not None

    def start(self, until_s: float | None) -> float:
        """Arrivals from MARGIN_S ahead on, until `until_s` after that; returns the start (wall clock)."""
        self.start_wall, self.until_s = time.time() + MARGIN_S, until_s
        self._split(self.working(), 0.0)
        self._watching = gevent.spawn(self._watch)
        return self.start_wall

    def change_rate(self, from_wall: float, per_s: float) -> None:
        """A sweep's next step: the cluster's target rate is `per_s` from `from_wall` (epoch s) on,
        for the same workers."""
        assert self.start_wall is not None
        since_s = max(0.0, from_wall - self.start_wall)
        self.rates.append((since_s, per_s))
        self._split(self.members, since_s)

    def stop(self) -> None:
        if self._watching is not None:
            self._watching.kill(block=False)
            self._watching = None
        if self.started and self.ended_wall is None:
            self.ended_wall = time.time()

    def span_s(self) -> float:
        """The time arrivals were scheduled: from the start to the cool-down or the stop."""
        assert self.start_wall is not None
        until_s = math.inf if self.until_s is None else self.until_s
        return span_between(self.start_wall, self.ended_wall or time.time(), until_s)

    def _watch(self) -> None:
        assert self.start_wall is not None
        while True:
            gevent.sleep(WATCH_S)
            working = self.working()
            since_s = time.time() + MARGIN_S - self.start_wall
            if working != self.members and (self.until_s is None or since_s < self.until_s):
                self._split(working, max(0.0, since_s))

    def _split(self, working: list[str], since_s: float) -> None:
        """Each working worker's share; a worker left out (missing but maybe alive, or without
        users now) gets none from then on."""
        assert self.start_wall is not None
        left_out = [client_id for client_id in self.members if client_id not in working]
        self.members = working
        shares = [(client_id, index, len(working)) for index, client_id in enumerate(working)]
        for client_id, index, count in shares + [(client_id, 0, 0) for client_id in left_out]:
            share = ArrivalShare(self.run_id, self.start_wall, self.until_s, since_s, index, count, list(self.rates))
            self.send(client_id, share.as_dict())
        logger.info("arrivals split among %d workers from %.1f s after the start", len(working), since_s)
