"""A model's capacity in the emulator: `concurrency` requests served at once, the others queued
first come first served, and past `queue` waiting requests a 529 overloaded_error.

A queued request's service starts when the first of the servers frees up: its whole response
(time to first token included) moves by that wait. Its end is known when it is planned, so the
waits follow from the requests before it alone: the same arrivals meet the same queue, and a
profile fixes exactly where the load it can serve ends (concurrency / service time). A request
the client gives up keeps its server until its planned end, as a server would not notice.
"""

from __future__ import annotations

import heapq

from harness.emulator.profile import Capacity, Profile
from harness.emulator.ratelimits import RateLimiter


class Servers:
    """The servers of one model: when each is next free, and the planned ends of the requests in."""

    def __init__(self, capacity: Capacity) -> None:
        self.free_at = [0] * capacity.concurrency  # a heap: each server's next free time (ns)
        self.limit = None if capacity.queue is None else capacity.concurrency + capacity.queue
        self._ends: list[int] = []  # a heap: the planned ends of the requests served or queued

    def in_system(self, now_ns: int) -> int:
        """Requests served or queued at `now_ns`."""
        ends = self._ends
        while ends and ends[0] <= now_ns:
            heapq.heappop(ends)
        return len(ends)

    def start_at(self, now_ns: int) -> int | None:
        """When a request arriving now is served (now, or when a server frees); None: refused."""
        if self.limit is not None and self.in_system(now_ns) >= self.limit:
            return None
        return max(now_ns, self.free_at[0])

    def occupy(self, end_ns: int) -> None:
        """The request just admitted (at `start_at`) holds the first free server until `end_ns`."""
        heapq.heapreplace(self.free_at, end_ns)
        heapq.heappush(self._ends, end_ns)


class PerModel:
    """Each model's rate-limit buckets and servers (the API's limits are per model), made when
    first asked for, one per profile entry (a model listed, or `default` for the others)."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._limiters: dict[str, RateLimiter] = {}
        self._servers: dict[str, Servers | None] = {}

    def limiter(self, model: str) -> RateLimiter:
        entry = self.profile.entry_of(model)
        if entry not in self._limiters:
            self._limiters[entry] = RateLimiter(self.profile.model_for(model).rate_limits)
        return self._limiters[entry]

    def servers(self, model: str) -> Servers | None:
        """None: the model has no capacity (it serves every request at once)."""
        entry = self.profile.entry_of(model)
        if entry not in self._servers:
            capacity = self.profile.model_for(model).capacity
            self._servers[entry] = Servers(capacity) if capacity is not None else None
        return self._servers[entry]
