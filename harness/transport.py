"""HTTP transports for the Messages API; each fills a TimingRecord for one request.

- `FastTransport` (default): geventhttpclient, one keep-alive connection per Locust user,
  the SSE stream split into lines as it arrives and each line timestamped: on plain HTTP the
  event loop's callback reads it (harness/loop_reader.py) with the kernel's receive stamp
  (harness/stamps.py); on TLS the request's greenlet reads it and stamps when read.
- `SdkTransport`: the official anthropic SDK, configured for load testing (no retries,
  a connection pool as large as the users, telemetry and request logging off); the raw
  SSE lines of its response feed the same StreamTimer, so both give the same records.

Both classify every failure into an outcome class and never retry. A request cut off by
the end of the run (the user's greenlet is killed) is recorded as `cancelled` before the
kill goes on, so that it is still counted.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from gevent import GreenletExit, getcurrent

from harness.bedrock_frames import BrokenFrame, bedrock_lines
from harness.deadlines import Deadlines, Expired, Limit
from harness.fast_http import EVENT_STREAM, RequestHead, content_kind, read_head, response_of
from harness.headroom import read_rate_limits
from harness.loop_reader import LineSplitter, LoopReader, OnLines, closed_early
from harness.network import Proxy, tls_context
from harness.platforms import Platform, access_token
from harness.replies import Reply
from harness.stamps import KERNEL, USER, ReceiveClock, StampedSocket, kernel_stamps_supported
from harness.timing import CANCELLED, CONNECTION_ERROR, PROTOCOL_ERROR, TIMEOUT, StreamTimer, TimingRecord, retry_after_s

if TYPE_CHECKING:
    from harness.scenario import Timeouts

MESSAGES_PATH = "/v1/messages"
CONNECT_TIMEOUT_S = 10.0  # the scenario's timeouts.connect_s by default
READ_BLOCK = 64 * 1024

perf_ns = time.perf_counter_ns
logger = logging.getLogger("harness.transport")


@dataclass(frozen=True, slots=True)
class Target:
    """Where requests go and how they authenticate. The key is never printed (repr hides it)."""

    base_url: str
    api_key: str
    headers: dict[str, str]  # anthropic-version, anthropic-beta, content-type
    proxy: Proxy | None = None  # the forward proxy requests go through (harness/network.py)
    auth_token: str | None = None  # a bearer token (ANTHROPIC_AUTH_TOKEN) for gateways that want Authorization
    platform: Platform = field(default_factory=Platform)  # where Claude is served (harness/platforms.py)

    def __repr__(self) -> str:
        return f"Target(base_url={self.base_url!r}, api_key=<hidden>, auth_token=<hidden>, proxy={self.proxy!r})"

    @property
    def auth_headers(self) -> dict[str, str]:
        """x-api-key with the key; Authorization with the bearer token (both when both are given)."""
        headers = {"x-api-key": self.api_key} if self.api_key or not self.auth_token else {}
        return headers | ({"authorization": f"Bearer {self.auth_token}"} if self.auth_token else {})


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    body: dict[str, Any]
    data: bytes  # the body serialized once
    stream: bool
    timeouts: Timeouts
    reply: Reply | None = None  # a conversation's request: what the response said is kept
    headers: dict[str, str] | None = None  # a variant's own anthropic-version or anthropic-beta (harness/variants.py)


class Transport(Protocol):
    def send(self, record: TimingRecord, request: PreparedRequest) -> None:
        """Send one request, filling `record` (timings, usage, outcome). Never raises,
        except GreenletExit, after recording the request as cancelled."""

    def close(self) -> None: ...


def _sdk_environment_headers() -> list[str]:
    """The header names the SDK would add from ANTHROPIC_CUSTOM_HEADERS (parsed as it does)."""
    lines = os.environ.get("ANTHROPIC_CUSTOM_HEADERS", "").split("\n")
    return [line[: line.find(":")].strip() for line in lines if line.find(":") >= 0]


def _sdk_client(anthropic: Any, target: Target, http_client: Any) -> Any:
    """The SDK's client for the target's platform: the Anthropic API with the run's credential,
    or Vertex AI with a Google access token (harness/platforms.py); never a retry of its own."""
    headers: dict[str, Any] = {  # str values, and the SDK's `omit` that removes a header
        **dict.fromkeys(_sdk_environment_headers(), anthropic.omit),  # ANTHROPIC_CUSTOM_HEADERS: not ours to send
        **{k: v for k, v in target.headers.items() if k != "content-type"},
        "x-api-key": anthropic.omit,
    }
    common = {"max_retries": 0, "http_client": http_client, "open_telemetry": False}
    if target.platform.name == "bedrock":
        return anthropic.AnthropicBedrock(aws_region=target.platform.region, base_url=target.base_url, default_headers=headers, **common)
    if target.platform.name == "vertex":
        return anthropic.AnthropicVertex(
            region=target.platform.region,
            project_id=target.platform.project,
            access_token=access_token(),
            base_url=target.base_url.rstrip("/") + "/v1",
            default_headers=headers,
            **common,
        )
    # one credential, always given: the SDK would otherwise read the environment's, for any host
    bearer_only = bool(target.auth_token) and not target.api_key
    return anthropic.Anthropic(
        api_key=None if bearer_only else target.api_key,
        auth_token=target.auth_token if bearer_only else None,
        base_url=target.base_url,
        default_headers={**headers, "authorization": anthropic.omit, **target.auth_headers},
        **common,
    )


AWS_EVENT_STREAM = "application/vnd.amazon.eventstream"
TimedLines = Iterator[tuple[int, list[bytes]]]  # a stream's lines, those of one read with its stamp


def connection_per_request(target: Target) -> bool:
    """An http target through a forward proxy gets a new connection per request: many proxies
    (tinyproxy among them) serve one request per client connection and close it without saying
    so, and a POST sent on a connection being closed fails and must not be sent again. (An https
    target's CONNECT tunnel stays open: the connection inside it is the target's.)"""
    return target.proxy is not None and target.base_url.startswith("http:")


def _proxy_arguments(proxy: Proxy | None) -> dict[str, Any]:
    """geventhttpclient's proxy arguments (a CONNECT tunnel for an https target)."""
    if proxy is None:
        return {}
    return {"proxy_host": proxy.host, "proxy_port": proxy.port, "proxy_user": proxy.user, "proxy_password": proxy.password}


def _start(record: TimingRecord) -> None:
    record.wall_start_ns = time.time_ns()
    record.start_ns = perf_ns()


def _root_cause(exc: BaseException) -> BaseException:
    """What really failed under the wrappers (the SDK's "Connection error." over httpx's over a
    certificate that was not trusted): the same cause from both transports."""
    seen = {id(exc)}
    while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        exc = inner
    return exc


def _connection_error_type(record: TimingRecord) -> str:
    """The same error_type from both transports: lost after the response began, or never made."""
    return "connection_lost" if record.http_status is not None else "connection_failed"


def _not_a_stream(record: TimingRecord, content_type: str | None, read_body: Callable[[], bytes], expected: str = EVENT_STREAM) -> bool:
    """A 200 to a streamed request whose body is no event stream (an HTML page from a proxy, a
    JSON message from a gateway that ignored `stream`): a protocol error that says what came."""
    kind = content_kind(content_type)
    if kind == expected:
        return False
    snippet = read_body()[:120].decode("utf-8", "replace").replace("\n", " ")
    record.fail(PROTOCOL_ERROR, "unexpected_content_type", f"a {kind or 'untyped'} body, not an event stream: {snippet!r}")
    record.latency_ms = _elapsed_ms(record)
    return True


def _parse(response: Any, rest: bytes) -> None:
    """The body's bytes read with the head into the response's parser (and the connection back
    to its pool if they end the response), as geventhttpclient does with them itself."""
    try:
        response.feed(rest)
    except BaseException:
        response.release()
        raise
    if response.message_complete:
        response.release()


def _decoded(body: bytes, content_encoding: str | None) -> bytes:
    """A body as sent before a gzip or deflate content encoding (the SDK's httpx does the same)."""
    encoding = (content_encoding or "").strip().lower()
    if encoding == "gzip":
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _compressed(content_encoding: str | None) -> bool:
    return (content_encoding or "").strip().lower() in ("gzip", "deflate")


class _Inflating:
    """A compressed stream's lines as they can be decoded (a gateway may gzip a stream even
    unasked; httpx decodes it for the SDK). Each line is stamped when its bytes were inflated."""

    def __init__(self, response: Any) -> None:
        self.response = response
        gzip = (response.get("content-encoding") or "").strip().lower() == "gzip"
        self.inflate = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self.buffer = b""

    def readline(self, sep: bytes) -> bytes:
        while sep not in self.buffer:
            data = self.response.read(1)  # waits for the next bytes; the rest of them is buffered
            if not data:
                rest, self.buffer = self.buffer + self.inflate.flush(), b""
                return rest
            self.buffer += self.inflate.decompress(data + self.response.read(len(self.response._body_buffer)))
        line, _, self.buffer = self.buffer.partition(sep)
        return line + sep


def _receive(response: Any) -> None:
    """The next bytes of a geventhttpclient response into its parser (as its readline reads them)."""
    sock = response._sock
    if sock is None:
        raise closed_early()
    try:
        response.feed(sock.recv(response.block_size))
    except BaseException:
        response.release()
        raise


def _elapsed_ms(record: TimingRecord) -> float:
    return (perf_ns() - record.start_ns) / 1_000_000


class LineSource(Protocol):
    """A stream's lines as they arrive: `run` hands those of each read, with its stamp, to `on_lines`."""

    def run(self, on_lines: OnLines) -> None: ...


class _Reading:
    """A stream read in the request's greenlet (TLS, compressed bodies, the SDK)."""

    __slots__ = ("timed_lines",)

    def __init__(self, timed_lines: TimedLines) -> None:
        self.timed_lines = timed_lines

    def run(self, on_lines: OnLines) -> None:
        for t_ns, lines in self.timed_lines:
            on_lines(t_ns, lines)


def _time_stream(record: TimingRecord, source: LineSource, deadlines: Deadlines, reply: Reply | None) -> None:
    """Feed a stream's timed lines to a StreamTimer (and a conversation's to its reply); settle
    the record however it ends (when the stream breaks, the caller's handler then overrides the
    outcome)."""
    if reply is not None:
        reply.clear()
    timer = StreamTimer(record, perf_ns(), reply)
    deadlines.watch(timer)
    try:
        source.run(timer.feed)
    finally:
        timer.finish(perf_ns())


def _take_message(record: TimingRecord, body: bytes, reply: Reply | None) -> None:
    """A blocking response's message: the record's usage and outcome (and a conversation's reply)."""
    record.apply_message(body, perf_ns())
    if reply is not None:
        reply.take_message(body)


@contextmanager
def _request_scope(record: TimingRecord, request: PreparedRequest) -> Iterator[Deadlines]:
    """What both transports do around one request: start the clock, bound the request in time
    (harness/deadlines.py), classify what escaped, record a cancellation before the kill goes
    on, and always leave a latency."""
    _start(record)
    total = request.timeouts.total_s
    try:
        with (
            Limit(total, "timeout", "no complete response within {seconds:g} s"),
            Deadlines(request.timeouts, request.stream) as deadlines,
        ):
            yield deadlines
    except Expired as exc:
        record.fail(TIMEOUT, exc.error_type, exc.message)
    except GreenletExit:
        record.fail(CANCELLED, "cancelled", "the run stopped while the request was in flight")
        raise
    except BrokenFrame as exc:  # a Bedrock stream's framing (harness/bedrock_frames.py)
        record.fail(PROTOCOL_ERROR, "invalid_event", str(exc))
    except zlib.error as exc:
        record.fail(PROTOCOL_ERROR, "invalid_encoding", f"the body does not decode as its content-encoding says: {exc}"[:200])
    except TimeoutError as exc:  # the only socket timeout set: the connect timeout
        record.fail(TIMEOUT, "connect_timeout", f"no connection within {request.timeouts.connect_s:g} s ({exc})"[:200])
    except Exception as exc:  # socket errors, HTTP parse errors, a dropped connection
        cause = _root_cause(exc)
        record.fail(CONNECTION_ERROR, _connection_error_type(record), f"{type(cause).__name__}: {cause}"[:200])
    finally:
        if record.latency_ms is None:
            record.latency_ms = _elapsed_ms(record)


def receive_stamping(target: Target, transport: str) -> str:
    """How a run's receive times are taken: the kernel's stamps (the fast transport over plain
    HTTP, where the kernel has them), else when the harness read the bytes."""
    plain = urlsplit(target.base_url).scheme == "http"
    return KERNEL if transport == "fast" and plain and kernel_stamps_supported() else USER


class FastTransport:
    """geventhttpclient with a hand-rolled SSE line loop: the cheap, accurate path."""

    def __init__(self, target: Target, connect_s: float = CONNECT_TIMEOUT_S) -> None:
        url = urlsplit(target.base_url)
        # plain HTTP: connections of StampedSocket (TLS reads the socket in the ssl module)
        self._clock = ReceiveClock() if url.scheme == "http" else None
        self._make_client = lambda: self._new_client(target, connect_s)
        self._client = self._make_client()
        self._connection_per_request = connection_per_request(target)
        self._path = url.path.rstrip("/") + MESSAGES_PATH
        self._headers = {**target.headers, **target.auth_headers}
        # straight to the target: the request's head built once (through a proxy, geventhttpclient
        # builds each request: a plain HTTP proxy wants the absolute URI and its credentials)
        client = self._client
        default_headers = dict(client.default_headers.items())  # its User-Agent
        self._head = None if target.proxy else RequestHead(client.host, client.port, self._path, {**default_headers, **self._headers})

    def _new_client(self, target: Target, connect_s: float) -> Any:
        from geventhttpclient import HTTPClient

        url = urlsplit(target.base_url)
        client = HTTPClient(
            url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 80),
            ssl=url.scheme == "https",
            concurrency=1,
            connection_timeout=connect_s,
            network_timeout=None,  # type: ignore[arg-type]  # no socket timeout (typed float, None accepted): the deadlines bound reads
            block_size=READ_BLOCK,
            ssl_context_factory=lambda **_: tls_context(),
            **_proxy_arguments(target.proxy),
        )
        clock = self._clock
        if clock is not None:  # geventhttpclient's socket factory (checked in tests/test_stamps.py)
            client._connection_pool._create_tcp_socket = lambda family, kind, proto: StampedSocket(family, kind, proto, clock)  # type: ignore[method-assign,assignment]
        return client

    def send(self, record: TimingRecord, request: PreparedRequest) -> None:
        with _request_scope(record, request) as deadlines:
            try:
                self._read(record, *self._post(request), request, deadlines)
            except BaseException:
                self._reset()  # the response was not read to its end: the connection is unusable
                raise
            if self._connection_per_request:
                self._reset()

    def _post(self, request: PreparedRequest) -> tuple[Any, bytes | None]:
        """Send the request; its response once the head is read, and the body's bytes read with
        the head that its parser has not taken (None: it took them all)."""
        client = self._client
        if self._head is None:
            headers = self._headers if request.headers is None else {**self._headers, **request.headers}
            return client.request("POST", self._path, body=request.data, headers=headers), None
        pool = client._connection_pool
        sock = pool.get_socket()
        try:
            sock.sendall(self._head.of(request.data, request.headers))
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                pool.release_socket(sock)
                raise
            # the server may have answered before it read the body, then closed: its answer, if any
        try:
            head, rest = read_head(sock, client.block_size)
        except BaseException:
            pool.release_socket(sock)
            raise
        stream = request.stream and rest is not None and isinstance(sock, StampedSocket)  # a LoopReader's, if it went well
        return response_of(sock, pool, head, client.block_size, stream), rest

    def _read(self, record: TimingRecord, response: Any, rest: bytes | None, request: PreparedRequest, deadlines: Deadlines) -> None:
        t_headers = self._clock.arrived_ns if self._clock is not None else perf_ns()
        record.ttfb_ms = (t_headers - record.start_ns) / 1_000_000
        record.http_status = status = response.status_code
        record.request_id = response.get("request-id")
        record.rate_limits = read_rate_limits(response.get)
        encoding = response.get("content-encoding")
        reader = self._loop_reader(response, rest, request, encoding)
        if reader is not None:
            _time_stream(record, reader, deadlines, request.reply)
            return
        if rest:
            _parse(response, rest)
        if status != 200:
            record.retry_after_s = retry_after_s(response.get)
            record.apply_error_body(status, _decoded(response.read(), encoding))
            record.latency_ms = _elapsed_ms(record)
        elif request.stream:
            if not _not_a_stream(record, response.get("content-type"), lambda: _decoded(response.read(), encoding)):
                _time_stream(record, self._line_source(response, encoding), deadlines, request.reply)
        else:
            _take_message(record, _decoded(response.read(), encoding), request.reply)

    @staticmethod
    def _loop_reader(response: Any, rest: bytes | None, request: PreparedRequest, encoding: str | None) -> LoopReader | None:
        """A stream's reader in the event loop's callback (no greenlet switch per event:
        harness/loop_reader.py), on plain HTTP for an event stream sent as is; it takes the
        body's bytes read with the head. None for any other response."""
        sock = response._sock
        if not (request.stream and response.status_code == 200 and isinstance(sock, StampedSocket)) or _compressed(encoding):
            return None
        if content_kind(response.get("content-type")) != EVENT_STREAM:
            return None
        return LoopReader(response, sock, rest)

    @staticmethod
    def _line_source(response: Any, encoding: str | None) -> LineSource:
        """How a stream's lines are read in the request's greenlet (over TLS, or when the body is
        compressed)."""
        if _compressed(encoding):
            return _Reading(FastTransport._inflated_lines(_Inflating(response)))
        return _Reading(FastTransport._timed_lines(response))

    @staticmethod
    def _timed_lines(response: Any) -> TimedLines:
        """The SSE lines (without their \\n: SSE lines end in \\n alone) of each read, with the
        time it was read (TLS: Python's ssl module reads the socket)."""
        body, splitter, stamp = response._body_buffer, LineSplitter(), 0
        while True:
            if body:
                stamp = perf_ns()
                lines = splitter.split(body)
                del body[:]
                if lines:
                    yield stamp, lines
            if response.message_complete:
                if splitter.partial:
                    yield stamp, [splitter.partial]
                return
            _receive(response)

    @staticmethod
    def _inflated_lines(inflating: _Inflating) -> TimedLines:
        """A compressed stream's lines, each stamped when it was inflated."""
        readline = inflating.readline
        while line := readline(b"\n"):
            yield perf_ns(), [line.removesuffix(b"\n")]

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

    def __init__(self, target: Target, pool_size: int, connect_s: float = CONNECT_TIMEOUT_S) -> None:
        import anthropic
        import httpx2

        for name in ("anthropic", "httpx2", "httpcore2"):
            logging.getLogger(name).setLevel(logging.WARNING)
        limits = httpx2.Limits(max_connections=pool_size, max_keepalive_connections=0 if connection_per_request(target) else pool_size)
        self._anthropic = anthropic
        self._connect_s = connect_s
        self._timeout = httpx2.Timeout(None, connect=connect_s)
        self._httpx = httpx2
        self._sending: dict[Any, TimingRecord] = {}  # greenlet -> the record it is sending
        http_client = httpx2.Client(
            proxy=target.proxy.url if target.proxy is not None else None,
            verify=tls_context(),
            trust_env=False,  # the proxy and the trust are the run's (harness/network.py), as for the fast transport
            limits=limits,
            timeout=self._timeout,  # the deadlines (harness/deadlines.py) bound the rest
            event_hooks={"request": [self._on_request]},
        )
        self._client = _sdk_client(anthropic, target, http_client)
        self._bedrock = target.platform.name == "bedrock"

    def send(self, record: TimingRecord, request: PreparedRequest) -> None:
        body = dict(request.body)
        required = {key: body.pop(key) for key in ("model", "max_tokens", "messages")}
        body.pop("stream", None)
        api, current = self._anthropic, getcurrent()
        self._sending[current] = record
        with _request_scope(record, request) as deadlines:
            try:
                with self._client.messages.with_streaming_response.create(
                    **required, stream=request.stream, extra_body=body, extra_headers=request.headers, timeout=self._timeout
                ) as response:
                    self._read(record, response, request, deadlines)
            except api.APIStatusError as exc:
                record.request_id = exc.request_id
                record.rate_limits = read_rate_limits(exc.response.headers.get)
                record.retry_after_s = retry_after_s(exc.response.headers.get)
                if record.ttfb_ms is None:
                    record.ttfb_ms = _elapsed_ms(record)
                record.apply_error_body(exc.status_code, exc.response.content)
            except (api.APITimeoutError, self._httpx.TimeoutException) as exc:  # only connecting has a timeout here
                record.fail(TIMEOUT, "connect_timeout", f"no connection within {self._connect_s:g} s ({type(exc).__name__})")
            finally:
                self._sending.pop(current, None)

    def _on_request(self, _request: Any) -> None:
        """httpx event hook: the SDK has built the request and is about to send it. The
        clock restarts here so that SDK and fast timings share the same origin."""
        record = self._sending.get(getcurrent())
        if record is not None:
            _start(record)

    def _read(self, record: TimingRecord, response: Any, request: PreparedRequest, deadlines: Deadlines) -> None:
        record.ttfb_ms = _elapsed_ms(record)
        record.http_status = response.status_code
        record.request_id = response.headers.get("request-id")
        record.rate_limits = read_rate_limits(response.headers.get)
        if request.stream:
            framed = self._bedrock  # AWS event-stream messages, each an API event
            if not _not_a_stream(record, response.headers.get("content-type"), response.read, AWS_EVENT_STREAM if framed else EVENT_STREAM):
                lines = bedrock_lines(response.iter_bytes(), perf_ns) if framed else SdkTransport._timed_lines(response)
                _time_stream(record, _Reading(lines), deadlines, request.reply)
        else:
            _take_message(record, response.read(), request.reply)

    @staticmethod
    def _timed_lines(response: Any) -> TimedLines:
        """Each SSE line with the time its bytes arrived. Split on b"\\n" only, like the SSE
        framing: httpx's iter_lines() also splits on U+2028, U+0085, ... inside JSON strings
        and holds back a trailing \\r."""
        splitter = LineSplitter()
        for data in response.iter_bytes():
            now = perf_ns()
            if lines := splitter.split(data):
                yield now, lines
        if splitter.partial:
            yield perf_ns(), [splitter.partial]

    def close(self) -> None:
        self._client.close()


TRANSPORTS = ("fast", "sdk")
