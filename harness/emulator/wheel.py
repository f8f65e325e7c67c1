"""The emulator's timer wheel: millisecond buckets of connections with a write due.

Shared by the emulator's connections and the benchmark's reference server
(`benchmarks/reference.py`), so both time their writes the same way.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Scheduled(Protocol):
    """What the wheel needs of a connection: the bucket it waits in and the call made when it is due."""

    due: int  # the bucket (ms) the connection waits in; 0: none

    def _run(self) -> None: ...


class Wheel:
    """Millisecond buckets of due connections, one loop timer per non-empty bucket.

    A connection with a write due at `target_ns` goes into bucket ceil(target_ns / 1 ms);
    the bucket's timer fires when the loop clock (CLOCK_MONOTONIC, the perf_counter clock)
    reaches that millisecond, so no write is early and none is more than ~1-2 ms late when
    the loop is idle.  Far fewer timer handles than one per event at high stream counts.
    A connection remembers the bucket it waits in (`due`, 0 when none), so stale entries
    (connection rescheduled or done) are skipped.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, uvloop: bool) -> None:
        self.loop = loop
        self.uvloop = uvloop
        self.buckets: dict[int, list[Scheduled]] = {}

    def add(self, conn: Scheduled, target_ns: int) -> None:
        due = -(-target_ns // 1_000_000)
        conn.due = due
        b = self.buckets.get(due)
        if b is not None:
            b.append(conn)
            return
        self.buckets[due] = [conn]
        loop = self.loop
        if self.uvloop:
            # uvloop: timers are whole ms, due at (loop ms now, floored) + round(delay)
            delay_ms = due - int(loop.time() * 1000.0 + 0.5)
            if delay_ms <= 0:
                loop.call_soon(self._fire, due)
            else:
                loop.call_later(delay_ms / 1000.0, self._fire, due)
        else:
            loop.call_at(due / 1000.0, self._fire, due)

    def _fire(self, due: int) -> None:
        lst = self.buckets.pop(due, None)
        if not lst:
            return
        for conn in lst:
            if conn.due == due:
                conn.due = 0
                conn._run()
