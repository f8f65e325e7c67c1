"""HTTP transports for the Messages API; each fills a TimingRecord for one request.

- `FastTransport` (default): geventhttpclient, one keep-alive connection per Locust user,
  the SSE stream read line by line from the socket and timestamped as each line arrives.
- `SdkTransport`: the official anthropic SDK, configured for load testing (no retries,
  a connection pool as large as the users, telemetry and request logging off); the raw
  SSE lines of its response feed the same StreamTimer, so both give the same records.

Both classify every failure into an outcome class and never retry. A request cut off by
the end of the run (the user's greenlet is killed) is recorded as `cancelled` before the
kill goes on, so that it is still counted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import gevent
from gevent import GreenletExit

from harness.timing import CANCELLED, CONNECTION_ERROR, TIMEOUT, StreamTimer, TimingRecord

MESSAGES_PATH = "/v1/messages"
CONNECT_TIMEOUT_S = 10.0
READ_BLOCK = 64 * 1024

perf_ns = time.perf_counter_ns


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go and how they authenticate. The key is never printed (repr hides it)."""

    base_url: str
    api_key: str
    headers: dict[str, str]  # anthropic-version, anthropic-beta, content-type

    def __repr__(self) -> str:
        return f"Target(base_url={self.base_url!r}, api_key=<hidden>)"


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    body: dict[str, Any]
    data: bytes  # the body serialized once
    stream: bool
    timeout_s: float


class Transport(Protocol):
    def send(self, record: TimingRecord, request: PreparedRequest) -> None:
        """Send one request, filling `record` (timings, usage, outcome). Never raises,
        except GreenletExit, after recording the request as cancelled."""

    def close(self) -> None: ...


class _RequestTimeout(Exception):
    """Raised by gevent.Timeout when a whole request exceeds its time limit."""


def _start(record: TimingRecord) -> None:
    record.wall_start_ns = time.time_ns()
    record.start_ns = perf_ns()


def _elapsed_ms(record: TimingRecord) -> float:
    return (perf_ns() - record.start_ns) / 1_000_000


class FastTransport:
    """geventhttpclient with a hand-rolled SSE line loop: the cheap, accurate path."""

    def __init__(self, target: Target) -> None:
        from geventhttpclient import HTTPClient

        url = urlsplit(target.base_url)
        self._make_client = lambda: HTTPClient(
            url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 80),
            ssl=url.scheme == "https",
            concurrency=1,
            connection_timeout=CONNECT_TIMEOUT_S,
            network_timeout=None,
            block_size=READ_BLOCK,
        )
        self._client = self._make_client()
        self._path = url.path.rstrip("/") + MESSAGES_PATH
        self._headers = {**target.headers, "x-api-key": target.api_key}

    def send(self, record: TimingRecord, request: PreparedRequest) -> None:
        response = None
        _start(record)
        try:
            with gevent.Timeout(request.timeout_s, _RequestTimeout):
                response = self._client.request("POST", self._path, body=request.data, headers=self._headers)
                self._read(record, response, request.stream)
                response = None  # fully read: the connection went back to the pool
        except _RequestTimeout:
            record.fail(TIMEOUT, "timeout", f"no complete response within {request.timeout_s:g} s")
        except GreenletExit:
            record.fail(CANCELLED, "cancelled", "the run stopped while the request was in flight")
            raise
        except Exception as exc:  # socket errors, HTTP parse errors, a closed connection
            record.fail(CONNECTION_ERROR, type(exc).__name__, str(exc)[:200])
        finally:
            if record.latency_ms is None:
                record.latency_ms = _elapsed_ms(record)
            if response is not None or not record.ok:
                self._reset()

    def _read(self, record: TimingRecord, response: Any, stream: bool) -> None:
        t_headers = perf_ns()
        record.ttfb_ms = (t_headers - record.start_ns) / 1_000_000
        record.http_status = status = response.status_code
        record.request_id = response.get("request-id")
        if status != 200:
            record.apply_error_body(status, response.read())
            record.latency_ms = _elapsed_ms(record)
        elif stream:
            timer = StreamTimer(record)
            feed, readline = timer.feed, response.readline
            while line := readline(b"\n"):
                feed(perf_ns(), line)
            timer.finish(perf_ns())
        else:
            body = response.read()
            record.apply_message(body, perf_ns())

    def _reset(self) -> None:
        """Drop the connection after an incomplete response; the next request opens a new one."""
        self._client.close()
        self._client = self._make_client()

    def close(self) -> None:
        self._client.close()


def preload_sdk() -> None:
    """Import the SDK ahead of the run: it takes seconds, which must not count as run time."""
    import anthropic  # noqa: F401


class SdkTransport:
    """The official anthropic SDK, shared by all users of a process (one pooled client)."""

    def __init__(self, target: Target, pool_size: int) -> None:
        import anthropic
        import httpx2

        for name in ("anthropic", "httpx2", "httpcore2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        limits = httpx2.Limits(max_connections=pool_size, max_keepalive_connections=pool_size)
        self._anthropic = anthropic
        self._httpx = httpx2
        self._client = anthropic.Anthropic(
            api_key=target.api_key,
            base_url=target.base_url,
            max_retries=0,
            default_headers={k: v for k, v in target.headers.items() if k != "content-type"},
            http_client=httpx2.Client(limits=limits, timeout=httpx2.Timeout(600.0, connect=CONNECT_TIMEOUT_S)),
            open_telemetry=False,
        )

    def send(self, record: TimingRecord, request: PreparedRequest) -> None:
        body = dict(request.body)
        required = {key: body.pop(key) for key in ("model", "max_tokens", "messages")}
        body.pop("stream", None)
        api = self._anthropic
        _start(record)
        try:
            with gevent.Timeout(request.timeout_s, _RequestTimeout):
                with self._client.messages.with_streaming_response.create(
                    **required, stream=request.stream, extra_body=body, timeout=request.timeout_s
                ) as response:
                    self._read(record, response, request.stream)
        except _RequestTimeout:
            record.fail(TIMEOUT, "timeout", f"no complete response within {request.timeout_s:g} s")
        except GreenletExit:
            record.fail(CANCELLED, "cancelled", "the run stopped while the request was in flight")
            raise
        except api.APIStatusError as exc:
            record.request_id = exc.request_id
            record.apply_error_body(exc.status_code, exc.response.content)
        except (api.APITimeoutError, self._httpx.TimeoutException) as exc:
            record.fail(TIMEOUT, type(exc).__name__, str(exc)[:200])
        except Exception as exc:  # APIConnectionError, a dropped stream (httpx2 errors)
            record.fail(CONNECTION_ERROR, type(exc).__name__, str(exc)[:200])
        finally:
            if record.latency_ms is None:
                record.latency_ms = _elapsed_ms(record)

    @staticmethod
    def _read(record: TimingRecord, response: Any, stream: bool) -> None:
        record.ttfb_ms = _elapsed_ms(record)
        record.http_status = response.status_code
        record.request_id = response.headers.get("request-id")
        if stream:
            timer = StreamTimer(record)
            for line in response.iter_lines():
                timer.feed(perf_ns(), line.encode())
            timer.finish(perf_ns())
        else:
            body = response.read()
            record.apply_message(body, perf_ns())

    def close(self) -> None:
        self._client.close()


TRANSPORTS = ("fast", "sdk")
