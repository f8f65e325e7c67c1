"""The disk under a run's output folder: a warning before it fills, and a stop before it is full.

A long run writes records and points (about 0.23 KB per request, compressed). Every
`CHECK_S` the free space of the folder's file system is read (statvfs, a few microseconds).
Below `warn_at` the log says how much is left and, at the rate it is being used, in how long
it is full (once, and again each time the free space halves). Below `--min-free-disk-mb` no
new request starts: a single process ends the run (verdict STOPPED, exit code 3), a worker's
users wait and its master goes on with the others. What is written is never deleted: the
summary, the report and the records stay whole.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import gevent

logger = logging.getLogger("harness.disk")

CHECK_S = 2.0
MB = 1024 * 1024
WARN_FACTOR = 4  # warn when less than 4 x the minimum is free
DEFAULT_MIN_FREE_MB = 500.0


class DiskWatch:
    def __init__(self, folder: Path, min_free_mb: float, free_bytes: Callable[[Path], int] | None = None) -> None:
        self.folder = folder
        self.min_free = int(min_free_mb * MB)
        self.warn_at = self.min_free * WARN_FACTOR
        self._free_bytes = free_bytes or (lambda path: shutil.disk_usage(path).free)
        self.refusal: str | None = None  # why no new request may start (the disk is nearly full)
        self._warned_below: int | None = None
        self._last: tuple[float, int] | None = None  # (monotonic time, free bytes) of the previous check
        self._greenlet: gevent.Greenlet | None = None

    def check(self) -> None:
        free, now = self._free(), time.monotonic()
        rate = None  # bytes used per second since the previous check
        if self._last is not None and now > self._last[0]:
            rate = (self._last[1] - free) / (now - self._last[0])
        self._last = (now, free)
        if free < self.min_free:
            if self.refusal is None:
                self.refusal = (
                    f"the disk is nearly full: {free / MB:.0f} MB free under {self.folder} (--min-free-disk-mb {self.min_free / MB:g})"
                )
                logger.error("%s: no new request starts", self.refusal)
            return
        self.refusal = None
        if free < self.warn_at and (self._warned_below is None or free < self._warned_below // 2):
            self._warned_below = free
            left = f"; at the current rate it is full in about {free / rate / 60:.0f} min" if rate and rate > 0 else ""
            logger.warning(
                "disk filling: %.0f MB free under %s%s; new requests stop at %.0f MB free (--min-free-disk-mb)",
                free / MB,
                self.folder,
                left,
                self.min_free / MB,
            )

    def _free(self) -> int:
        folder = self.folder
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent  # the run's folder is made when its first file is
        return self._free_bytes(folder)

    def start(self) -> None:
        self.check()
        self._greenlet = gevent.spawn(self._loop)

    def _loop(self) -> None:
        while True:
            gevent.sleep(CHECK_S)
            self.check()

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
