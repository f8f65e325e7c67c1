"""The emulator's HTTP server: a raw asyncio Protocol (uvloop when importable).

One `_Conn` per TCP connection parses HTTP/1.1 requests (keep-alive, pipelined requests
answered in order, partial reads) and runs at most one response at a time.  A Messages
request is planned completely when it arrives: every write gets an absolute target time
(`perf_counter_ns` domain) computed from the arrival time, so timer jitter never
accumulates; the writes are then driven by `loop.call_later` and each timestamp recorded
in the ground truth is taken immediately before the corresponding `transport.write`.

Timeline of a streamed response (T(p) = arrival + ttft + p * 1/output_tps, plus jitter
of +-jitter*gap on each chunk; ttft = (ttft_ms + ttft_ms_per_1k_input * input/1000) *
(1 +- jitter)):
  arrival      -> headers + message_start (+ ping)
  T(0)         -> thinking block start + first thinking_delta   (thinking on)
  T(p)         -> thinking_delta chunks
  T(th)        -> signature_delta + content_block_stop of the thinking block
  T(th)        -> text content_block_start + first text_delta   (= the first text)
  T(th+q)      -> further text_delta chunks (tokens_per_chunk tokens each)
  last chunk   -> content_block_stop, message_delta (cumulative usage), message_stop
A blocking response is written in one piece at the time the stream would have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import random
import signal
import socket
import sys
import threading
import time
from itertools import repeat
from pathlib import Path
from typing import Any

from harness.compressed import open_lines

from .profile import ModelProfile, Profile
from .validate import RequestError, count_input_tokens, validate_count_tokens_body, validate_messages_body

log = logging.getLogger("harness.emulator")
perf_ns = time.perf_counter_ns

MAX_BODY = 32 * 1024 * 1024
VALID_BODIES = 256  # validated Messages bodies kept (emptied when full)
VALID_BODY_MAX_BYTES = 64 * 1024  # larger bodies are validated every time
MAX_HEAD = 64 * 1024

_STATUS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    529: "Overloaded",
}
_ERR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    411: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OUTCOME = {
    400: "invalid_request",
    401: "unauthorized",
    404: "not_found",
    405: "invalid_request",
    411: "invalid_request",
    413: "invalid_request",
    429: "rate_limited",
    500: "api_error",
    529: "overloaded",
}

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "bright",
    "stars",
    "shine",
    "above",
    "quiet",
    "rivers",
    "and",
    "tall",
    "green",
    "mountains",
    "where",
    "patient",
    "travelers",
    "rest",
    "beside",
    "warm",
    "fires",
    "telling",
    "old",
    "stories",
    "about",
    "distant",
    "cities",
    "built",
    "from",
    "stone",
    "glass",
    "and",
    "light",
    "so",
    "every",
    "careful",
    "answer",
    "takes",
    "shape",
    "one",
    "small",
    "token",
    "at",
    "a",
    "time",
]
_THINK_WORDS = [
    "let",
    "me",
    "think",
    "about",
    "this",
    "step",
    "by",
    "step",
    "first",
    "consider",
    "what",
    "the",
    "user",
    "asks",
    "then",
    "check",
    "each",
    "part",
    "of",
    "the",
    "question",
    "and",
    "weigh",
    "possible",
    "answers",
    "before",
    "writing",
    "a",
    "clear",
    "response",
    "that",
    "is",
    "helpful",
    "accurate",
    "and",
    "concise",
]
_TEXT_TOK = [" " + w for w in _WORDS]
_THINK_TOK = [" " + w for w in _THINK_WORDS]

# item kinds of a response plan
_THINK, _SIG, _EMPTY, _TEXT, _TAIL, _ERR, _DROP, _BLOCK = range(8)

_KNOWN_MODELS = [
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-5-5", "Claude Haiku 5.5"),
    ("claude-sonnet-5-5", "Claude Sonnet 5.5"),
    ("claude-opus-5-5", "Claude Opus 5.5"),
    ("claude-fable-5-1", "Claude Fable 5.1"),
]


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def _sse(event: str, data: str) -> bytes:
    """One SSE event framed as one HTTP chunk."""
    return _chunk(b"event: %s\ndata: %s\n\n" % (event.encode(), data.encode()))


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # one encoder, reused


@functools.lru_cache(maxsize=256)
def _json_str(value: str) -> str:
    """A JSON string literal (model names repeat: cached)."""
    return _dumps(value)


# The two per-response events whose values change, as templates (json.dumps of a nested
# dict per response was a tenth of the emulator's CPU at 1000 streams).
_MESSAGE_START = (
    '{"type":"message_start","message":{"id":"%s","type":"message","role":"assistant","model":%s,'
    '"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":%d,'
    '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}'
)
_MESSAGE_DELTA = (
    '{"type":"message_delta","delta":{"stop_reason":"%s","stop_sequence":null},"usage":{"input_tokens":%d,'
    '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":%d}}'
)


@functools.lru_cache(maxsize=4096)
def _rfc3339(unix_s: int) -> str:
    """RFC 3339 UTC time of a whole second (cached: the reset headers repeat the same few)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix_s))


def _targets(base: float, gap: float, j: float, rnd: Any, p0: int, n: int, k: int) -> list[int]:
    """Target times of the chunks starting at token positions p0, p0+k, ... (< p0+n).

    Token p is due at base + p*gap; each chunk but the very first output chunk gets a
    uniform +-j*gap jitter that does not accumulate.
    """
    if not j:
        return [int(base + p * gap) for p in range(p0, p0 + n, k)]
    jg = j * gap
    out = [int(base + p * gap + jg * (2.0 * rnd() - 1.0)) for p in range(p0, p0 + n, k)]
    if p0 == 0 and out:
        out[0] = int(base)
    return out


def _counts(n: int, k: int) -> list[int]:
    out = [k] * ((n + k - 1) // k)
    if n % k:
        out[-1] = n % k
    return out


def _words(tok: list[str], off: int, n: int, start: int = 0) -> str:
    L = len(tok)
    return "".join(tok[(off + start + x) % L] for x in range(n))


# ----------------------------------------------------------------------------- ground truth


class GroundTruth:
    """Buffered JSON-lines writer (gzip-compressed when the name ends in .gz); flushed by the
    server every 0.5 s and at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = open_lines(Path(path))
        self._buf: list[str] = []

    def add(self, rec: dict[str, Any]) -> None:
        self._buf.append(_dumps(rec))

    def flush(self) -> None:
        if self._buf:
            data = "\n".join(self._buf) + "\n"
            self._buf.clear()
            self._f.write(data.encode())
            self._f.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._f.close()


# ----------------------------------------------------------------------------- rate limits


class _Bucket:
    __slots__ = ("cap", "enforce", "level", "rate", "t")

    def __init__(self, per_minute: int, enforce: bool, now: int) -> None:
        self.cap = float(per_minute)
        self.level = float(per_minute)
        self.rate = per_minute / 60e9  # per ns
        self.t = now
        self.enforce = enforce

    def refill(self, now: int) -> None:
        if now > self.t:
            self.level = min(self.cap, self.level + (now - self.t) * self.rate)
            self.t = now

    def wait_s(self, n: float) -> float:
        if not self.enforce or self.level >= n:
            return 0.0
        if n > self.cap:
            return 60.0
        return (n - self.level) / (self.rate * 1e9)

    def take(self, n: float) -> None:
        self.level = max(0.0, self.level - n)

    def reset_s(self) -> float:
        return (self.cap - self.level) / (self.rate * 1e9)


class RateLimiter:
    """Token buckets for requests, input tokens and output tokens (charged from max_tokens).

    Limits set in the profile's `rate_limits` are enforced; the others only feed the
    `anthropic-ratelimit-*` headers with plausible values.
    """

    DEFAULTS = (4000, 2_000_000, 400_000)

    def __init__(self, profile: Profile) -> None:
        rl = profile.rate_limits
        now = perf_ns()
        vals = (
            (rl.requests_per_minute if rl else None),
            (rl.input_tokens_per_minute if rl else None),
            (rl.output_tokens_per_minute if rl else None),
        )
        self.req, self.inp, self.out = (_Bucket(v if v is not None else d, v is not None, now) for v, d in zip(vals, self.DEFAULTS))

    def admit(self, input_tokens: int, max_tokens: int) -> tuple[float, list[tuple[str, str]]]:
        """Return (retry_after_s, headers); retry_after_s > 0 means answer 429."""
        now = perf_ns()
        for b in (self.req, self.inp, self.out):
            b.refill(now)
        wait = max(self.req.wait_s(1), self.inp.wait_s(input_tokens), self.out.wait_s(max_tokens))
        if wait <= 0:
            self.req.take(1)
            self.inp.take(input_tokens)
            self.out.take(max_tokens)
        return wait, self.headers()

    def headers(self) -> list[tuple[str, str]]:
        wall = time.time()
        inp, out = self.inp, self.out
        h: list[tuple[str, str]] = []
        for (limit, remaining, reset), b in zip(_RL_HEADER_NAMES, (self.req, inp, out)):
            h.append((limit, str(int(b.cap))))
            h.append((remaining, str(int(b.level))))
            h.append((reset, _rfc3339(int(wall + b.reset_s()))))
        h.append(("anthropic-ratelimit-tokens-limit", str(int(inp.cap + out.cap))))
        h.append(("anthropic-ratelimit-tokens-remaining", str(int(inp.level + out.level))))
        h.append(("anthropic-ratelimit-tokens-reset", _rfc3339(int(wall + max(inp.reset_s(), out.reset_s())))))
        return h


_RL_HEADER_NAMES = tuple(
    (f"anthropic-ratelimit-{name}-limit", f"anthropic-ratelimit-{name}-remaining", f"anthropic-ratelimit-{name}-reset")
    for name in ("requests", "input-tokens", "output-tokens")
)


# ----------------------------------------------------------------------------- timer wheel


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
        self.buckets: dict[int, list[_Conn]] = {}

    def add(self, conn: _Conn, target_ns: int) -> None:
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


# ----------------------------------------------------------------------------- server state


class State:
    def __init__(self, profile: Profile, seed: int, gt: GroundTruth | None, uvloop: bool) -> None:
        self.wheel = Wheel(asyncio.get_running_loop(), uvloop)
        self.profile = profile
        self.seed = seed
        self.gt = gt
        self.uvloop = uvloop
        self.limiter = RateLimiter(profile)
        self.conns: set[_Conn] = set()
        self.seq = 0  # Messages requests, drives the per-request random draws
        self.rid = 0  # all requests, for request ids
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        n = int.from_bytes(os.urandom(8), "big")
        pref = []
        for _ in range(10):
            n, r = divmod(n, 62)
            pref.append(alphabet[r])
        self.id_prefix = "".join(pref)
        self._cache: dict[tuple[int, int, str], bytes] = {}
        self._tables: dict[tuple[int, int, int], list[bytes]] = {}
        self.valid_bodies: dict[tuple[str, bytes], tuple[dict[str, Any], int]] = {}
        self.accepting = True

    def new_request_id(self) -> str:
        self.rid += 1
        return f"req_emu{self.id_prefix}{self.rid:08d}"

    def chunks(self, kind: int, index: int, off: int, n: int, k: int) -> list[bytes]:
        """Framed delta events for n filler tokens starting at word `off`, k tokens each."""
        tok = _TEXT_TOK if kind == _TEXT else _THINK_TOK
        W = len(tok)
        key = (kind, index, k)
        table = self._tables.get(key)
        if table is None:
            table = [self.delta_chunk(kind, index, _words(tok, w, k)) for w in range(W)]
            self._tables[key] = table
        out = [table[(off + q) % W] for q in range(0, n, k)]
        rem = n % k
        if rem:
            out[-1] = self.delta_chunk(kind, index, _words(tok, off, rem, n - rem))
        return out

    def delta_chunk(self, kind: int, index: int, text: str) -> bytes:
        key = (kind, index, text)
        b = self._cache.get(key)
        if b is None:
            if kind == _TEXT:
                d = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}
            else:
                d = {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": text}}
            b = _sse("content_block_delta", _dumps(d))
            if len(self._cache) < 100_000:
                self._cache[key] = b
        return b


@functools.lru_cache(maxsize=64)
def _head_prefix(status: int, ctype: str, chunked: bool, keep_alive: bool) -> str:
    """The fixed lines of a response head (the same few combinations repeat: cached)."""
    lines = [f"HTTP/1.1 {status} {_STATUS.get(status, 'Unknown')}", f"content-type: {ctype}"]
    if chunked:
        lines.append("transfer-encoding: chunked")
        lines.append("cache-control: no-cache")
    lines.append("connection: keep-alive" if keep_alive else "connection: close")
    return "\r\n".join(lines) + "\r\n"


def _head(
    status: int,
    rid: str,
    ctype: str,
    *,
    length: int | None = None,
    extra: list[tuple[str, str]] | None = None,
    keep_alive: bool = True,
) -> bytes:
    head = _head_prefix(status, ctype, length is None, keep_alive) + f"request-id: {rid}\r\n"
    if length is not None:
        head += f"content-length: {length}\r\n"
    if extra:
        head += "".join([f"{k}: {v}\r\n" for k, v in extra])
    return (head + "\r\n").encode("latin-1")


def _json_response(status: int, rid: str, obj: Any, extra=None, keep_alive: bool = True) -> bytes:
    body = _dumps(obj).encode()
    return _head(status, rid, "application/json", length=len(body), extra=extra, keep_alive=keep_alive) + body


def _error_obj(status: int, message: str, rid: str, etype: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype or _ERR_TYPE.get(status, "api_error"), "message": message}, "request_id": rid}


class _Req:
    """Everything the ground truth records about one request."""

    __slots__ = (
        "error_type",
        "input_tokens",
        "keep_alive",
        "model",
        "outcome",
        "output_tokens",
        "path",
        "request_id",
        "scheduled_end_ns",
        "scheduled_first_text_ns",
        "seq",
        "status",
        "stop_reason",
        "stream",
        "t_end_ns",
        "t_first_text_ns",
        "t_first_thinking_ns",
        "t_headers_ns",
        "t_last_token_ns",
        "t_received_ns",
    )

    def __init__(self, rid: str, path: str, t_received: int, keep_alive: bool) -> None:
        self.request_id = rid
        self.path = path
        self.model: str | None = None
        self.stream = False
        self.status = 0
        self.outcome = ""
        self.error_type: str | None = None
        self.seq: int | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.t_received_ns = t_received
        self.t_headers_ns: int | None = None
        self.t_first_thinking_ns: int | None = None
        self.t_first_text_ns: int | None = None
        self.t_last_token_ns: int | None = None
        self.t_end_ns: int | None = None
        self.scheduled_first_text_ns: int | None = None
        self.scheduled_end_ns: int | None = None
        self.keep_alive = keep_alive

    def record(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "path": self.path,
            "model": self.model,
            "stream": self.stream,
            "status": self.status or None,  # None: no response was sent
            "outcome": self.outcome,
            "error_type": self.error_type,
            "seq": self.seq,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "stop_reason": self.stop_reason,
            "t_received_ns": self.t_received_ns,
            "t_headers_ns": self.t_headers_ns,
            "t_first_thinking_ns": self.t_first_thinking_ns,
            "t_first_text_ns": self.t_first_text_ns,
            "t_last_token_ns": self.t_last_token_ns,
            "t_end_ns": self.t_end_ns,
            "scheduled_first_text_ns": self.scheduled_first_text_ns,
            "scheduled_end_ns": self.scheduled_end_ns,
        }


# ----------------------------------------------------------------------------- connection


class _Conn(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.st = state
        self.loop = asyncio.get_running_loop()
        self.tr: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False
        self.in_process = False
        self.closed = False
        self.paused = False
        self._continued = False  # 100 Continue sent for the pending request
        # active response
        self.req: _Req | None = None
        self.items: list[tuple[int, int, bytes, int]] = []
        self.i = 0
        self.due = 0  # the wheel bucket (ms) this connection waits in; 0: none

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.st.conns.add(self)

    def data_received(self, data: bytes) -> None:
        now = perf_ns()
        self.buf += data
        if not self.busy:
            self._process(now)
        elif len(self.buf) > 4 * MAX_HEAD and not self.paused:
            self.paused = True
            self.tr.pause_reading()  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.st.conns.discard(self)
        if self.req is not None:
            self._abort_active("client_closed")

    # -- request parsing
    def _process(self, now: int) -> None:
        if self.in_process:
            return
        self.in_process = True
        try:
            while not self.busy and not self.closed and self.st.accepting:
                buf = self.buf
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self._bad_request(now, "request head too large")
                    return
                try:
                    head = bytes(buf[:end]).decode("latin-1")
                    lines = head.split("\r\n")
                    method, target, version = lines[0].split(" ", 2)
                    headers: dict[str, str] = {}
                    for ln in lines[1:]:
                        k, _, v = ln.partition(":")
                        headers[k.strip().lower()] = v.strip()
                    clen = int(headers.get("content-length", "0") or "0")
                    if clen < 0:
                        raise ValueError
                except ValueError:
                    self._bad_request(now, "malformed HTTP request")
                    return
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self._simple_close(now, 411, "chunked request bodies are not supported; send Content-Length")
                    return
                if clen > MAX_BODY:
                    self._simple_close(now, 413, "Request exceeds the maximum allowed number of bytes.")
                    return
                if len(buf) < end + 4 + clen:
                    if headers.get("expect", "").lower() == "100-continue" and not self._continued:
                        self._continued = True
                        self.tr.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # type: ignore[union-attr]
                    return
                self._continued = False
                body = bytes(buf[end + 4 : end + 4 + clen])
                del buf[: end + 4 + clen]
                conn_h = headers.get("connection", "").lower()
                keep = ("close" not in conn_h) if version == "HTTP/1.1" else ("keep-alive" in conn_h)
                self.busy = True
                try:
                    self._dispatch(method, target, headers, body, now, keep)
                except Exception:  # never let one request kill the connection silently
                    log.exception("internal error handling %s %s", method, target.split("?", 1)[0])
                    req = self.req
                    if req is not None:
                        if req.t_headers_ns is None:
                            self._send_error(req, 500, "Internal server error")
                        else:
                            req.error_type = "api_error"
                            self._abort_active("api_error")
                            if not self.closed:
                                self.closed = True
                                self.tr.abort()  # type: ignore[union-attr]
                now = perf_ns()
        finally:
            self.in_process = False

    def _bad_request(self, now: int, msg: str) -> None:
        self._simple_close(now, 400, msg)

    def _simple_close(self, now: int, status: int, msg: str) -> None:
        req = _Req(self.st.new_request_id(), "", now, False)
        self.busy = True
        self.req = req
        self._send_error(req, status, msg)

    # -- response helpers
    def _finish(self, req: _Req) -> None:
        """The active response is complete (or abandoned): record it, go on with the next."""
        self.due = 0
        self.items = []
        self.req = None
        gt = self.st.gt
        if gt is not None:
            gt.add(req.record())
        self.busy = False
        if self.closed:
            return
        if not req.keep_alive:
            self.closed = True
            self.tr.close()  # type: ignore[union-attr]
            return
        if self.paused:
            self.paused = False
            self.tr.resume_reading()  # type: ignore[union-attr]
        if self.buf and not self.in_process:
            self._process(perf_ns())

    def _send_now(self, req: _Req, status: int, data: bytes, outcome: str, error_type: str | None = None) -> None:
        req.status = status
        req.outcome = outcome
        req.error_type = error_type
        t = perf_ns()
        req.t_headers_ns = t
        req.t_end_ns = t
        self.tr.write(data)  # type: ignore[union-attr]
        self._finish(req)

    def _send_error(self, req: _Req, status: int, msg: str, extra=None, etype: str | None = None) -> None:
        etype = etype or _ERR_TYPE.get(status, "api_error")
        data = _json_response(status, req.request_id, _error_obj(status, msg, req.request_id, etype), extra, req.keep_alive)
        self._send_now(req, status, data, _OUTCOME.get(status, "api_error"), etype)

    def _abort_active(self, outcome: str) -> None:
        req = self.req
        if req is None:
            return
        req.outcome = outcome
        req.output_tokens = self._sent_tokens() if req.stream else None
        req.stop_reason = None
        req.t_end_ns = perf_ns()
        req.keep_alive = False
        self._finish(req)

    def shutdown(self) -> None:
        if self.req is not None:
            self._abort_active("shutdown")
        if not self.closed:
            self.closed = True
            self.tr.abort()  # type: ignore[union-attr]

    # -- routing
    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes, now: int, keep: bool) -> None:
        st = self.st
        path = target.split("?", 1)[0]
        req = _Req(st.new_request_id(), path, now, keep)
        self.req = req
        if path in ("/v1/messages", "/v1/messages/count_tokens"):
            allowed = "POST"
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            allowed = "GET"
        else:
            self._send_error(req, 404, f"Not found: {path}")
            return
        if method != allowed:
            self._send_error(req, 405, f"Method {method} not allowed for {path}")
            return
        key = headers.get("x-api-key", "")
        if not key:
            auth = headers.get("authorization", "")
            if auth[:7].lower() == "bearer " and auth[7:].strip():
                key = "bearer"
        if not key:
            self._send_error(req, 401, "x-api-key header is required")
            return
        version = headers.get("anthropic-version", "")
        if not version:
            self._send_error(req, 400, "anthropic-version: header is required")
            return
        if allowed == "GET":
            self._models(req, path)
            return
        known = st.valid_bodies.get((version, body)) if path == "/v1/messages" else None
        if known is not None:  # a load test repeats its prompts: parse and validate each once
            req.model = known[0]["model"]
            self._messages(req, *known)
            return
        try:
            parsed = json.loads(body) if body else None
        except (ValueError, UnicodeDecodeError):
            self._send_error(req, 400, "There was an error parsing the body of your request: invalid JSON")
            return
        if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
            req.model = parsed["model"]
        try:
            if path == "/v1/messages/count_tokens":
                n = count_input_tokens(validate_count_tokens_body(parsed))
                req.input_tokens = n
                data = _json_response(200, req.request_id, {"input_tokens": n}, keep_alive=keep)
                self._send_now(req, 200, data, "ok")
                return
            body_dict = validate_messages_body(parsed, version)
        except RequestError as err:
            if isinstance(parsed, dict):
                req.stream = parsed.get("stream") is True
            self._send_error(req, 400, str(err))
            return
        valid = (body_dict, count_input_tokens(body_dict))
        if len(body) <= VALID_BODY_MAX_BYTES:
            if len(st.valid_bodies) >= VALID_BODIES:
                st.valid_bodies.clear()
            st.valid_bodies[(version, body)] = valid
        self._messages(req, *valid)

    def _models(self, req: _Req, path: str) -> None:
        names = [(n, m.display_name) for n, m in self.st.profile.models.items() if n != "default"]
        if not names:
            names = list(_KNOWN_MODELS)
        known = dict(_KNOWN_MODELS)
        data = [
            {
                "type": "model",
                "id": n,
                "display_name": dn or known.get(n) or n,
                "created_at": "2025-10-01T00:00:00Z",
            }
            for n, dn in names
        ]
        if path == "/v1/models" or path == "/v1/models/":
            obj: Any = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        else:
            mid = path[len("/v1/models/") :]
            found = [d for d in data if d["id"] == mid]
            if not found:
                self._send_error(req, 404, f"model: {mid}")
                return
            obj = found[0]
        self._send_now(req, 200, _json_response(200, req.request_id, obj, keep_alive=req.keep_alive), "ok")

    # -- the Messages endpoint
    def _messages(self, req: _Req, body: dict[str, Any], in_tok: int) -> None:
        """Plan and start a Messages response; `body` is validated (and never modified: it is cached)."""
        st = self.st
        st.seq += 1
        seq = st.seq
        req.seq = seq
        model: str = body["model"]
        stream = body.get("stream") is True
        req.stream = stream
        max_tokens: int = body["max_tokens"]
        req.input_tokens = in_tok
        mp: ModelProfile = st.profile.model_for(model)
        f = mp.faults or st.profile.faults
        rng = random.Random(st.seed * 1_000_003 + seq)
        # fixed order of draws: faults first, then lengths and timings
        r_rl, r_ov, r_se, r_str, r_dc, r_stall = (rng.random() for _ in range(6))

        retry_hdr = [("retry-after", str(f.retry_after_s))]
        if r_rl < f.rate_limited:
            self._send_error(
                req,
                429,
                "This request would exceed the rate limit for your organization. (emulated)",
                extra=retry_hdr + st.limiter.headers(),
            )
            return
        if r_ov < f.overloaded:
            self._send_error(req, 529, "Overloaded", extra=retry_hdr)
            return
        if r_se < f.server_error:
            self._send_error(req, 500, "Internal server error")
            return
        wait, rl_headers = st.limiter.admit(in_tok, max_tokens)
        if wait > 0:
            self._send_error(
                req,
                429,
                "This request would exceed your organization's rate limit. (emulated)",
                extra=[("retry-after", str(max(1, int(wait + 0.999)))), *rl_headers],
            )
            return

        # --- lengths
        th_cfg = body.get("thinking")
        thinking = isinstance(th_cfg, dict) and th_cfg.get("type") in ("enabled", "adaptive")
        omitted = thinking and th_cfg.get("display") == "omitted"  # type: ignore[union-attr]
        th = 0
        if thinking:
            th = mp.thinking_tokens
            if th_cfg.get("type") == "enabled":  # type: ignore[union-attr]
                th = min(th, th_cfg["budget_tokens"])  # type: ignore[index]
            th = max(0, min(th, max_tokens - 1))
        ot = mp.output_tokens
        want = round(rng.gauss(ot.mean, ot.sd)) if ot.sd > 0 else round(ot.mean)
        want = max(ot.min, want)
        if ot.max is not None:
            want = min(ot.max, want)
        avail = max_tokens - th
        n_text = min(want, avail)
        stop_reason = "max_tokens" if want > avail else "end_turn"
        total_out = th + n_text
        req.stop_reason = stop_reason
        req.output_tokens = total_out

        # --- times (ns, perf_counter domain, absolute from arrival)
        j = mp.jitter
        t0 = req.t_received_ns
        ttft = (mp.ttft_ms + mp.ttft_ms_per_1k_input * in_tok / 1000.0) * 1e6
        if j:
            ttft *= 1.0 + j * (2.0 * rng.random() - 1.0)
        base = t0 + ttft
        gap = 1e9 / mp.output_tps
        k = mp.tokens_per_chunk
        n_chunks = (n_text + k - 1) // k
        stall_from = None
        if f.stall_ms > 0 and r_stall < f.stall:
            stall_from = rng.randint(1, n_chunks)  # text chunk index (n_chunks = the tail)
        fault_at = None
        fault_kind = None
        if r_str < f.stream_error:
            fault_kind = _ERR
        elif r_dc < f.disconnect:
            fault_kind = _DROP
        if fault_kind is not None:
            fault_at = rng.randint(1, max(1, (n_chunks + 1) // 2))  # text chunks sent before the fault
        woff = rng.randrange(len(_TEXT_TOK))
        toff = rng.randrange(len(_THINK_TOK))

        # text chunk targets; index n_chunks is the tail (message end). With jitter <= 0.5
        # the targets are increasing, so no sorting is needed.
        tx_t = _targets(base, gap, j, rng.random, th, n_text, k)
        tx_t.append(tx_t[-1])
        if stall_from is not None:
            stall_ns = int(f.stall_ms * 1e6)
            tx_t[stall_from:] = [t + stall_ns for t in tx_t[stall_from:]]
        req.scheduled_first_text_ns = tx_t[0] if stream else None

        rid = req.request_id
        msg_id = f"msg_emu{st.id_prefix}{seq:08d}"
        text_index = 1 if thinking else 0
        signature = f"EmuSig{st.seed}x{seq}" + "A" * 24

        if not stream:
            end_t = tx_t[-1]
            req.scheduled_end_ns = end_t
            if fault_kind is not None:
                assert fault_at is not None  # drawn with the fault's kind
                ft = tx_t[min(fault_at, n_chunks)]
                if fault_kind == _ERR:
                    data = _json_response(529, rid, _error_obj(529, "Overloaded", rid), extra=retry_hdr, keep_alive=req.keep_alive)
                    self.items = [(ft, _ERR, data, 0)]
                else:
                    self.items = [(ft, _DROP, b"", 0)]
            else:
                content: list[dict[str, Any]] = []
                if thinking:
                    th_text = "" if omitted else _words(_THINK_TOK, toff, th).lstrip()
                    content.append({"type": "thinking", "thinking": th_text, "signature": signature})
                content.append({"type": "text", "text": _words(_TEXT_TOK, woff, n_text).lstrip()})
                msg = {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": in_tok,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "output_tokens": total_out,
                        "service_tier": "standard",
                    },
                }
                data = _json_response(200, rid, msg, extra=rl_headers, keep_alive=req.keep_alive)
                self.items = [(end_t, _BLOCK, data, total_out)]
            self.i = 0
            self._schedule(self.items[0][0])
            return

        # --- streaming plan: (target_ns, kind, bytes, tokens) in write order
        items: list[tuple[int, int, bytes, int]] = []
        th_start = (
            _sse(
                "content_block_start",
                '{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}',
            )
            if thinking
            else b""
        )
        if thinking:
            sig = _sse(
                "content_block_delta",
                _dumps({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": signature}}),
            ) + _sse("content_block_stop", '{"type":"content_block_stop","index":0}')
            if omitted or th == 0:
                items.append((tx_t[0], _SIG, th_start + sig, th))
            else:
                th_t = _targets(base, gap, j, rng.random, 0, th, k)
                th_c = st.chunks(_THINK, 0, toff, th, k)
                th_c[0] = th_start + th_c[0]
                items.extend(zip(th_t, repeat(_THINK), th_c, _counts(th, k)))
                items.append((max(th_t[-1], tx_t[0]), _SIG, sig, 0))
        tstart = _sse(
            "content_block_start", '{"type":"content_block_start","index":%d,"content_block":{"type":"text","text":""}}' % text_index
        )
        if mp.empty_first_delta:
            et = max(items[-1][0] if items else 0, tx_t[0] - int(gap / 2))
            items.append((et, _EMPTY, tstart + st.delta_chunk(_TEXT, text_index, ""), 0))
            tstart = b""
        tx_c = st.chunks(_TEXT, text_index, woff, n_text, k)
        tx_c[0] = tstart + tx_c[0]
        n_send = n_chunks if fault_at is None else min(fault_at, n_chunks)
        items.extend(zip(tx_t[:n_send], repeat(_TEXT), tx_c[:n_send], _counts(n_text, k)))
        if fault_kind is not None:
            ft = tx_t[n_send]
            if fault_kind == _ERR:
                data = _sse("error", '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}') + b"0\r\n\r\n"
                items.append((ft, _ERR, data, 0))
            else:
                items.append((ft, _DROP, b"", 0))
            req.scheduled_end_ns = ft
        else:
            tail = (
                _sse("content_block_stop", '{"type":"content_block_stop","index":%d}' % text_index)
                + _sse("message_delta", _MESSAGE_DELTA % (stop_reason, in_tok, total_out))
                + _sse("message_stop", '{"type":"message_stop"}')
                + b"0\r\n\r\n"
            )
            items.append((tx_t[-1], _TAIL, tail, 0))
            req.scheduled_end_ns = tx_t[-1]

        first = _head(200, rid, "text/event-stream; charset=utf-8", extra=rl_headers, keep_alive=req.keep_alive)
        first += _sse("message_start", _MESSAGE_START % (msg_id, _json_str(model), in_tok))
        if st.profile.ping:
            first += _sse("ping", '{"type":"ping"}')
        self.items = items
        self.i = 0
        req.status = 200
        t = perf_ns()
        req.t_headers_ns = t
        self.tr.write(first)  # type: ignore[union-attr]
        self._schedule(items[0][0])

    # -- timed writes
    def _schedule(self, target: int) -> None:
        self.st.wheel.add(self, target)

    def _sent_tokens(self) -> int:
        """Tokens in the items written so far."""
        return sum(item[3] for item in self.items[: self.i])

    def _run(self) -> None:
        """Write every item that is due, as one transport.write, and reschedule."""
        req = self.req
        if req is None or self.closed:
            return
        tr = self.tr
        if tr.is_closing():  # type: ignore[union-attr]
            self._abort_active("client_closed")
            return
        items = self.items
        n = len(items)
        i = self.i
        now = perf_ns()
        # fast path, most writes of a long stream: one text chunk after the first is due
        # and the next item is not
        target, kind, data, _ = items[i]
        if kind == _TEXT and i + 1 < n and req.t_first_text_ns is not None:
            following = items[i + 1][0]
            if following > now >= target:
                self.i = i + 1
                t = perf_ns()
                tr.write(data)  # type: ignore[union-attr]
                req.t_last_token_ns = t
                self.st.wheel.add(self, following)
                return
        parts: list[bytes] = []
        text = thinking = done = False
        special = -1
        while i < n:
            target, kind, data, _ = items[i]
            if target > now:
                break
            i += 1
            if kind == _TEXT:
                text = True
            elif kind in (_THINK, _SIG):
                thinking = True
            elif kind == _TAIL:
                done = True
            elif kind != _EMPTY:  # _ERR, _DROP, _BLOCK: end of the response
                special = kind
                if kind == _ERR and req.stream:
                    parts.append(data)
                break
            parts.append(data)
        self.i = i
        if parts:
            t = perf_ns()
            tr.write(parts[0] if len(parts) == 1 else b"".join(parts))  # type: ignore[union-attr]
            if text:
                if req.t_first_text_ns is None:
                    req.t_first_text_ns = t
                req.t_last_token_ns = t
            if thinking and req.t_first_thinking_ns is None:
                req.t_first_thinking_ns = t
            if done:
                req.t_end_ns = t
                req.outcome = "ok"
                self._finish(req)
                return
        if special < 0:
            if i < n:
                self._schedule(items[i][0])
            return
        data = items[i - 1][2]
        if special == _BLOCK:
            self._send_now(req, 200, data, "ok")
        elif special == _ERR:
            req.stop_reason = None
            if req.stream:
                req.t_end_ns = t
                req.outcome = "stream_error"
                req.error_type = "overloaded_error"
                req.output_tokens = self._sent_tokens()
                self._finish(req)
            else:
                req.output_tokens = None
                self._send_now(req, 529, data, "overloaded", "overloaded_error")
        else:  # _DROP
            req.outcome = "disconnect"
            req.status = 200 if req.stream else 0
            req.output_tokens = self._sent_tokens() if req.stream else None
            req.stop_reason = None
            req.keep_alive = False
            req.t_end_ns = perf_ns()
            self.closed = True
            self.st.conns.discard(self)
            tr.abort()  # type: ignore[union-attr]
            self._finish(req)


# ----------------------------------------------------------------------------- main loop


async def serve(host: str, port: int, profile: Profile, seed: int, gt: GroundTruth | None, uvloop: bool) -> int:
    loop = asyncio.get_running_loop()
    state = State(profile, seed, gt, uvloop)
    try:
        server = await loop.create_server(lambda: _Conn(state), host, port, backlog=4096, reuse_address=True)
    except OSError as err:
        print(f"emulator: cannot listen on {host}:{port}: {err.strerror or err}", file=sys.stderr)
        return 1
    bound = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    flusher: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal flusher
        try:
            if gt is not None:
                gt.flush()
        except OSError as err:  # pragma: no cover
            log.error("cannot write ground truth: %s", err)
        flusher = loop.call_later(0.5, tick)

    if gt is not None:
        flusher = loop.call_later(0.5, tick)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)  # rare full collections: they pause every stream
    print(f"emulator listening on http://{host}:{bound}", flush=True)
    log.info("emulator ready (uvloop=%s, seed=%s)", uvloop, seed)
    await stop.wait()

    # shutdown: never hang; a watchdog ends the process if anything below blocks
    watchdog = threading.Timer(5.0, lambda: os._exit(0))
    watchdog.daemon = True
    watchdog.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, lambda: os._exit(0))
    state.accepting = False
    server.close()
    for c in list(state.conns):
        c.shutdown()
    if flusher is not None:
        flusher.cancel()
    if gt is not None:
        gt.close()
    await asyncio.sleep(0)
    return 0
