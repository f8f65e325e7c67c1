"""Point recording: every request (and health sample) as a line-protocol point, written to
InfluxDB or, when none is configured, to a file in the run's folder.

The request path only appends to a bounded in-memory buffer: a line, or a finished request
whose line is rendered when its batch is written (many lines in one go cost less each than
one at each request's end: `make bench` measures it). One background greenlet flushes the
buffer at least every second; a failed write is retried with backoff (or the
server's Retry-After) and the points stay buffered. A full buffer drops new points and
counts them; an unreachable InfluxDB is reported once, not per point, and again when it
recovers. At the end, what is buffered is flushed within a bounded time; whatever cannot
be written is counted as dropped and reported in the summary.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gevent
import gevent.event

from harness.compressed import open_lines

logger = logging.getLogger("harness.recording")

ENV = {"url": "INFLUXDB_V2_URL", "token": "INFLUXDB_V2_TOKEN", "org": "INFLUXDB_V2_ORG", "bucket": "INFLUXDB_V2_BUCKET"}
FLUSH_INTERVAL_S = 1.0
MAX_BATCH = 5_000
DEFAULT_BUFFER = 200_000
MAX_BACKOFF_S = 30.0
CLOSE_TIMEOUT_S = 10.0
POINTS_FILE = "points.lp.gz"  # when no InfluxDB is configured
WRITE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class InfluxConfig:
    url: str
    token: str
    org: str
    bucket: str
    timeout_s: float = WRITE_TIMEOUT_S  # one write's time limit; a write that times out is retried

    def __repr__(self) -> str:  # the token is a secret
        return f"InfluxConfig(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r}, token=<hidden>)"

    @classmethod
    def resolve(cls, timeout_s: float = WRITE_TIMEOUT_S, **options: str | None) -> InfluxConfig | None:
        """Command-line values win over the standard influxdb-client environment variables."""
        values = {key: options.get(key) or os.environ.get(env, "") for key, env in ENV.items()}
        if not values["url"]:
            return None
        return cls(values["url"], values["token"], values["org"], values["bucket"] or "loadtest", timeout_s)


class Sink(Protocol):
    description: str

    def write(self, lines: list[str]) -> None:
        """Write all lines or raise."""

    def close(self) -> None: ...


class FileSink:
    """Line protocol in a file, gzip-compressed (harness/compressed.py): `influx write --bucket B
    --file points.lp.gz` imports it later."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"file {path}"
        self._file = open_lines(path)

    def write(self, lines: list[str]) -> None:
        self._file.write(("\n".join(lines) + "\n").encode())
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class InfluxSink:
    """InfluxDB 2.x (or 3.x's v2-compatible API) through influxdb-client's synchronous write."""

    def __init__(self, config: InfluxConfig) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        logging.getLogger("influxdb_client").setLevel(logging.ERROR)
        self.config = config
        self.description = f"InfluxDB {config.url} bucket {config.bucket}"
        self._client = InfluxDBClient(url=config.url, token=config.token, org=config.org, timeout=round(config.timeout_s * 1000))
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: list[str]) -> None:
        self._api.write(bucket=self.config.bucket, org=self.config.org, record="\n".join(lines))

    def close(self) -> None:
        self._client.close()


def _retry_after_s(exc: Exception) -> float | None:
    value = getattr(exc, "retry_after", None)
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


class PointWriter:
    """A bounded buffer of points and the greenlet that flushes it to a sink. A point is a line,
    or any other object, which `render` turns into its line when it is written."""

    def __init__(
        self,
        sink: Sink,
        max_buffer: int = DEFAULT_BUFFER,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        render: Callable[[Any], str] = str,
    ) -> None:
        self.sink = sink
        self._render = render
        self.max_buffer = max_buffer
        self.flush_interval_s = flush_interval_s
        self.written = 0
        self.dropped = 0
        self.failed_writes = 0
        self._buffer: deque[Any] = deque()
        self._failing = False
        self._backoff_s = flush_interval_s
        self._greenlet: gevent.Greenlet | None = None
        self._stop = gevent.event.Event()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def add(self, point: Any) -> None:
        """The hot path: never blocks, never raises (a point that is not a line is rendered when
        written)."""
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1
        else:
            self._buffer.append(point)

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while not self._stop.wait(self._backoff_s if self._failing else self.flush_interval_s):
            while self._buffer and self.flush_once() and len(self._buffer) >= MAX_BATCH:
                pass  # a backlog: keep writing full batches

    def flush_once(self) -> bool:
        """Write one batch; on failure keep it buffered. Returns whether the write succeeded."""
        buffer = self._buffer
        batch = self._lines([buffer.popleft() for _ in range(min(MAX_BATCH, len(buffer)))])
        if not batch:
            return True
        try:
            self.sink.write(batch)
        except BaseException as exc:  # any failure of the sink: keep the points, back off
            self._buffer.extendleft(reversed(batch))
            if not isinstance(exc, Exception):
                raise  # killed while writing (close timed out): the batch is counted at close
            self._on_failure(exc)
            return False
        self.written += len(batch)
        if self._failing:
            self._failing = False
            logger.warning("points: %s is writable again; %d points buffered", self.sink.description, self.buffered)
        self._backoff_s = self.flush_interval_s
        return True

    def _lines(self, points: list[Any]) -> list[str]:
        """The points' lines; one that cannot be rendered (a defect) is counted as dropped."""
        render, lines = self._render, []
        for point in points:
            try:
                lines.append(point if type(point) is str else render(point))
            except Exception:
                self.dropped += 1
                logger.exception("points: a point could not be rendered; it is counted as dropped")
        return lines

    def _on_failure(self, exc: Exception) -> None:
        self.failed_writes += 1
        if not self._failing:
            self._failing = True
            logger.warning(
                "points: cannot write to %s (%s); the load test goes on, points are buffered (at most %d)",
                self.sink.description,
                type(exc).__name__,
                self.max_buffer,
            )
        retry_after = _retry_after_s(exc)
        self._backoff_s = retry_after or min(self._backoff_s * 2, MAX_BACKOFF_S)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop the greenlet, flush what is buffered within timeout_s, count the rest as dropped."""
        deadline = time.monotonic() + timeout_s
        if self._greenlet is not None:
            self._stop.set()  # never killed mid-write: a batch is written once or kept
            self._greenlet.join(timeout_s)
            self._greenlet.kill()
            self._greenlet = None
        while self._buffer and time.monotonic() < deadline:
            if not self.flush_once():
                gevent.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        if self._buffer:
            self.dropped += len(self._buffer)
            logger.warning("points: %d points could not be written to %s", len(self._buffer), self.sink.description)
            self._buffer.clear()
        self.sink.close()
