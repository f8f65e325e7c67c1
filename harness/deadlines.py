"""A request's time limits (the scenario's `timeouts:`), enforced alike by both transports.

Each limit ends the request with the outcome `timeout` and its own error type:
- `connect_timeout`: the transport's connect timeout (`connect_s`), classified by the transport;
- `first_byte_timeout`: a stream's response headers did not come within `first_byte_s` (a
  blocking request's headers come with the whole answer: only the total bounds it);
- `idle_timeout`: a stream went `idle_s` without an event other than `ping`. Pings keep bytes
  flowing, so no socket timeout sees a stream of pings; a watchdog greenlet (one per process)
  looks at the streams in flight every `CHECK_S` and throws into the one past its limit, the
  way gevent.Timeout does. On the per-line path the stream timer only stores a time;
- `timeout`: the whole request exceeded `total_s`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import gevent
from gevent import getcurrent

if TYPE_CHECKING:
    from harness.scenario import Timeouts
    from harness.timing import StreamTimer

CHECK_S = 0.25
perf_ns = time.perf_counter_ns


class Expired(BaseException):
    """A time limit ended the request. A BaseException, as gevent.Timeout is: the SDK wraps any
    Exception raised while it sends into its own connection error, which would hide which
    limit it was."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


class Limit(gevent.Timeout):
    """A limit as a gevent.Timeout that throws `Expired(error_type, message)` when it expires.
    The error is made then (`message` formatted with the limit's `seconds`), not for each
    request: most never expire, and an exception with its message per limit per request was
    about 3 % of the fast transport's CPU in a profile."""

    def __init__(self, seconds: float, error_type: str, message: str) -> None:
        super().__init__(seconds)
        self.error_type = error_type
        self.message = message

    def _on_expiration(self, prev_greenlet: Any, ex: object) -> None:  # gevent's hook for subclasses
        prev_greenlet.throw(Expired(self.error_type, self.message.format(seconds=self.seconds)))


class _Watched:
    __slots__ = ("idle_ns", "idle_s", "throw", "timer")

    def __init__(self, timer: StreamTimer, idle_s: float) -> None:
        self.timer = timer
        self.idle_s = idle_s
        self.idle_ns = int(idle_s * 1e9)
        self.throw: Any = None  # the scheduled throw, once the limit is passed


class IdleWatchdog:
    """Ends streams that made no progress (an event other than a ping) for their idle limit."""

    def __init__(self, check_s: float = CHECK_S) -> None:
        self.check_s = check_s
        self._watched: dict[Any, _Watched] = {}  # greenlet -> its stream
        self._loop: gevent.Greenlet | None = None

    def watch(self, timer: StreamTimer, idle_s: float) -> _Watched:
        entry = self._watched[getcurrent()] = _Watched(timer, idle_s)
        if self._loop is None or self._loop.dead:
            self._loop = gevent.spawn(self._run)
        return entry

    def forget(self, entry: _Watched | None) -> None:
        """The request is leaving its scope: a throw not delivered yet is cancelled."""
        if entry is None:
            return
        self._watched.pop(getcurrent(), None)
        if entry.throw is not None:
            entry.throw.stop()

    def _run(self) -> None:
        while self._watched:
            gevent.sleep(self.check_s)
            now = perf_ns()
            for greenlet, entry in list(self._watched.items()):
                if entry.throw is None and now - entry.timer.progress_ns > entry.idle_ns:
                    expired = Expired("idle_timeout", f"no event but pings for {entry.idle_s:g} s")
                    entry.throw = gevent.get_hub().loop.run_callback(greenlet.throw, expired)
        self._loop = None


WATCHDOG = IdleWatchdog()


class Deadlines:
    """The limits of one request: a context manager around it (inside the total's)."""

    def __init__(self, timeouts: Timeouts, stream: bool, watchdog: IdleWatchdog = WATCHDOG) -> None:
        self.timeouts = timeouts
        self.stream = stream
        self.watchdog = watchdog
        self._first_byte: Limit | None = None
        self._watched: _Watched | None = None

    def __enter__(self) -> Deadlines:
        if self.stream:
            limit = self.timeouts.first_byte_s
            self._first_byte = Limit(limit, "first_byte_timeout", "no response headers within {seconds:g} s")
            self._first_byte.start()
        return self

    def headers_received(self) -> None:
        if self._first_byte is not None:
            self._first_byte.cancel()
            self._first_byte = None

    def watch(self, timer: StreamTimer) -> None:
        """The stream's events flow from now on: idle time counts from its last progress."""
        self.headers_received()
        self._watched = self.watchdog.watch(timer, self.timeouts.idle_s)

    def __exit__(self, *exc_info: object) -> None:
        self.headers_received()
        self.watchdog.forget(self._watched)
        self._watched = None
