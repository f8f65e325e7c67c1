"""An open loop in one process: requests arrive at their scheduled times (harness/arrivals.py),
each handed to an idle user, or dropped when every user is busy, and all of it counted.

The process's users are its share of the load's `max_in_flight`: each waits for an arrival,
sends it (with its retries) and waits again, so at most that many requests are under way. An
arrival keeps its scheduled time: the record's send lag is the time from it to the actual send,
and the figures "from the scheduled time" are what a user of the service would feel.

Counts: scheduled = sent + dropped (no idle user) + refused (handed to a user and not sent: a
limit such as the budget, the request limit or the disk came first, or the run stopped). With
a token rate each arrival asks for its prompt's tokens: input tokens as the last response of
that prompt reported them (before any, the request's size at 4 bytes a token), or
output tokens as max_tokens times the share of it the prompt's responses have used so far.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import gevent
from gevent.event import AsyncResult, Event

from harness.arrivals import RateProfile, WorkerArrivals, span_between
from harness.load import Load
from harness.sampler import Pick, Sampler
from harness.timing import TimingRecord
from harness.trace import Trace, TraceArrivals

NS = 1_000_000_000
BYTES_PER_TOKEN = 4
Rates = Iterable[Sequence[float]]  # a sweep's rate changes: (from s, per s) each


@dataclass(frozen=True)
class Arrival:
    scheduled_ns: int  # perf_counter_ns: when it was due
    pick: Pick
    demand: float  # its units: 1 request, or its tokens


@dataclass
class ArrivalCounts:
    scheduled: int = 0
    sent: int = 0  # handed to an idle user
    dropped: int = 0  # every user was busy
    refused: int = 0  # handed over and not sent: a limit, or the run's stop (sent counts it no more)
    scheduled_demand: float = 0.0  # the units (requests or tokens) of the arrivals scheduled
    sent_demand: float = 0.0  # of those sent

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def total(cls, each: Iterable[dict[str, float]]) -> ArrivalCounts:
        """The sum of processes' counts (their `as_dict()`), e.g. a master's of its workers'."""
        total = cls()
        for counts in each:
            for name in total.as_dict():
                setattr(total, name, getattr(total, name) + counts[name])
        return total


@dataclass
class TokenDemand:
    """Each arrival's tokens, for a token rate, corrected by the usage that comes back."""

    unit: str
    request_bytes: Callable[[Pick], int]
    _input: dict[str, int] = field(default_factory=dict)  # prompt -> input tokens last reported
    _output_share: dict[str, tuple[int, int]] = field(default_factory=dict)  # prompt -> (output tokens, max_tokens) summed

    def __call__(self, pick: Pick) -> float:
        name = pick.prompt.name
        if self.unit == "input_tokens":
            return float(self._input.get(name) or max(1, self.request_bytes(pick) // BYTES_PER_TOKEN))
        used, allowed = self._output_share.get(name, (0, 0))
        return pick.prompt.max_tokens * (used / allowed if allowed else 1.0) or 1.0

    def observe(self, record: TimingRecord, max_tokens: int) -> None:
        if record.input_tokens:
            self._input[record.prompt] = record.input_tokens
        if record.output_tokens is not None and record.ok:
            used, allowed = self._output_share.get(record.prompt, (0, 0))
            self._output_share[record.prompt] = (used + record.output_tokens, allowed + max_tokens)


@dataclass(frozen=True)
class Switch:
    """A new share of the arrivals from `since_s` on (a worker joined or was lost); None: none."""

    since_s: float
    schedule: WorkerArrivals | TraceArrivals | None


class OpenLoop:
    """This process's arrivals: started at a common start, stopped at the cool-down, its share
    of the cluster's arrivals changed when the master splits them anew."""

    def __init__(self, load: Load, sampler: Sampler, demand: Callable[[Pick], float], seed: int, trace: Trace | None = None) -> None:
        """`trace`: a trace replay's times (harness/trace.py), in place of the load's rate."""
        assert load.arrival is not None
        self.load = load
        self.arrival = load.arrival
        self.trace = trace
        self.profile: RateProfile | Trace = trace or RateProfile.of(load)
        self.sampler = sampler
        self.demand = demand
        self.seed = seed
        self.counts = ArrivalCounts()
        self.start_ns: int | None = None  # the schedule's time 0 (perf_counter_ns)
        self.start_wall: float | None = None  # the same on the wall clock (epoch s)
        self.on_arrival: Callable[[int, bool], None] | None = None  # told of each arrival: when due, dropped or not (a sweep's steps)
        self.until_s = math.inf  # no arrival from then on (the cool-down)
        self.ended_ns: int | None = None  # when the loop stopped
        self.closed = False
        self._idle: deque[AsyncResult[Arrival | None]] = deque()  # the users waiting for an arrival
        self._schedule: WorkerArrivals | TraceArrivals | None = None
        self._switches: list[Switch] = []  # in the order of their times
        self._rates: list[tuple[float, float]] = []  # a sweep's rate changes, in a process alone
        self._changed = Event()  # a switch came: the time of the next arrival may change
        self._greenlet: gevent.Greenlet | None = None

    @property
    def started(self) -> bool:
        return self.start_ns is not None

    def start(self, start_ns: int, until_s: float | None, index: int = 0, count: int = 1, since_s: float = 0.0, rates: Rates = ()) -> None:
        """Arrivals from `start_ns` on (the schedule's time 0), as worker `index` of `count` from
        `since_s` on (count 0: none), none from `until_s` on; `rates`: a sweep's changes so far."""
        if self.closed or self.started:
            return
        self.profile = self.trace or RateProfile.of(self.load, list(rates))
        self.start_ns, self.until_s = start_ns, math.inf if until_s is None else until_s
        self.start_wall = time.time() + (start_ns - time.perf_counter_ns()) / NS
        self._schedule = self._share(index, count, since_s)
        self._greenlet = gevent.spawn(self._run)

    def rearrange(self, index: int, count: int, since_s: float, rates: Rates = ()) -> None:
        """From `since_s` on (seconds since the start), this process is worker `index` of `count`
        (count 0: it sends none); `rates`: a sweep's rate changes so far."""
        if self.closed:
            return
        self.profile = self.trace or RateProfile.of(self.load, list(rates))
        self._switches.append(Switch(since_s, self._share(index, count, since_s)))
        self._switches.sort(key=lambda switch: switch.since_s)
        self._changed.set()

    def change_rate(self, since_s: float, per_s: float) -> None:
        """A sweep's next step in a process alone: the target rate is `per_s` from `since_s` on."""
        self._rates.append((since_s, per_s))
        self.rearrange(0, 1, since_s, self._rates)

    def _share(self, index: int, count: int, since_s: float) -> WorkerArrivals | TraceArrivals | None:
        if count == 0:
            return None
        if self.trace is not None:
            return self.trace.share(index, count, since_s)
        assert isinstance(self.profile, RateProfile) and self.arrival != "trace"
        rng = random.Random(f"{self.seed}:{index}:{count}:{since_s}")
        return WorkerArrivals(self.profile, self.arrival, index, count, rng, since_s)

    def close(self) -> None:
        """No more arrivals (the run stops): the users waiting for one are let go."""
        self.closed = True
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self.ended_ns = self.ended_ns or time.perf_counter_ns()
        while self._idle:
            self._idle.popleft().set(None)

    def take(self) -> Arrival | None:
        """For a user: wait for the next arrival (None: there will be none)."""
        if self.closed:
            return None
        slot: AsyncResult[Arrival | None] = AsyncResult()
        self._idle.append(slot)
        try:
            return slot.get()
        except BaseException:  # the user is stopped while it waits
            if not slot.ready():
                self._idle.remove(slot)
            elif (arrival := slot.get()) is not None:
                self.refuse(arrival)  # handed over, and the stop came before its send
            raise

    def refuse(self, arrival: Arrival) -> None:
        """An arrival a user took was not sent (a limit, or the run's stop)."""
        self.counts.sent -= 1
        self.counts.sent_demand = max(0.0, self.counts.sent_demand - arrival.demand)  # (no float residue below 0)
        self.counts.refused += 1

    def _next(self, after_s: float, pick: Pick | None = None) -> tuple[float, Pick, float]:
        """The next arrival in this process's share after `after_s` (a split that came late
        starts where the old share left off: no time is sent twice): its time, pick and demand.
        A rate's arrival keeps `pick` (drawn before its time, which its demand sets); a trace's
        is the trace's next request in this share."""
        schedule = self._schedule
        if isinstance(schedule, TraceArrivals):
            at_s, position = schedule.next_after(after_s)
            drawn = self.sampler.next()  # the mix's model and streaming, for a line without its own model
            model = (self.trace.models[position] if self.trace is not None and position is not None else None) or drawn.model
            return at_s, drawn._replace(model=model, entry=position), 1.0
        pick = pick or self.sampler.next()
        demand = self.demand(pick)
        if schedule is None:
            return math.inf, pick, demand  # this process's share is none
        at_s = schedule.next(demand)
        while at_s <= after_s:
            at_s = schedule.next(demand)
        return at_s, pick, demand

    def _run(self) -> None:
        assert self.start_ns is not None
        last_s = -math.inf  # the time of the last arrival handed over
        at_s, pick, demand = self._next(last_s)
        while not self.closed:
            if self._switches and at_s >= self._switches[0].since_s:  # the next share holds from here
                self._schedule = self._switches.pop(0).schedule
                at_s, pick, demand = self._next(last_s, pick if self.trace is None else None)
                continue
            due_s = min(at_s, self.until_s)
            wait_s = None if due_s == math.inf else max(0.0, (self._at_ns(due_s) - time.perf_counter_ns()) / NS)
            if self._wait(wait_s):  # a switch came: the next arrival's time may change
                self._changed.clear()
                continue
            if self.closed or at_s >= self.until_s:
                break
            self._hand_over(Arrival(self._at_ns(at_s), pick, demand))
            last_s = at_s
            at_s, pick, demand = self._next(last_s)
        now_ns = time.perf_counter_ns()
        self.ended_ns = self.ended_ns or (min(now_ns, self._at_ns(self.until_s)) if self.until_s != math.inf else now_ns)

    def _wait(self, wait_s: float | None) -> bool:
        """Wait `wait_s` seconds (None: until a switch); True when a switch came."""
        if wait_s == 0.0:
            # a scheduler behind its times still yields at each arrival: at a rate beyond what
            # the process can send it must not starve the users, the timers and the stop
            gevent.sleep(0)
            return self._changed.is_set()
        return self._changed.wait(wait_s)

    def _at_ns(self, at_s: float) -> int:
        assert self.start_ns is not None
        return self.start_ns + int(at_s * NS)

    def _hand_over(self, arrival: Arrival) -> None:
        """To an idle user, or dropped: no switch from here to the counts, whatever stops the run."""
        counts = self.counts
        counts.scheduled += 1
        counts.scheduled_demand += arrival.demand
        dropped = not self._idle
        if dropped:
            counts.dropped += 1
        else:
            self._idle.popleft().set(arrival)  # wakes its user later, never now
            counts.sent += 1
            counts.sent_demand += arrival.demand
        if self.on_arrival is not None:
            self.on_arrival(arrival.scheduled_ns, dropped)

    def span_s(self) -> float:
        """The time arrivals were scheduled: from the start to the cool-down or the stop."""
        assert self.start_ns is not None
        return span_between(self.start_ns, self.ended_ns or time.perf_counter_ns(), self.until_s, unit=NS)
