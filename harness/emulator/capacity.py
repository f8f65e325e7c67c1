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

from harness.emulator.profile import Capacity


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
