"""The emulator's HTTP server: a raw asyncio Protocol (uvloop when importable).

This module owns the server state, the connections and the main loop. One connection
object per TCP connection parses HTTP/1.1 requests (keep-alive, pipelined requests
answered in order, partial reads) and runs at most one response at a time
(`HttpConnection`); the API's endpoints answer them (`ApiConnection`), as the platforms
serve them too (`platforms`: Vertex AI, Bedrock). A Messages request is planned completely when it arrives (`planning`): every
write gets an absolute target time (`perf_counter_ns` domain) computed from the arrival time,
so timer jitter never accumulates; the timer wheel (`wheel`) drives the writes and each ground
truth timestamp (`groundtruth`) is taken immediately before its `transport.write`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, cast

from harness.emulator.caching import PromptCache
from harness.emulator.capacity import PerModel
from harness.emulator.groundtruth import OUTCOMES, GroundTruth, RequestRecord, assistant_digest, authentication
from harness.emulator.planning import (
    ITEM_BLOCK,
    ITEM_EMPTY,
    ITEM_ERROR,
    ITEM_SIGNATURE,
    ITEM_TAIL,
    ITEM_TEXT,
    ITEM_THINK,
    DeltaEvents,
    FaultDraws,
    PlanItem,
    blocking_items,
    injected_error,
    plan_response,
    reply_content,
    request_rng,
    stream_items,
)
from harness.emulator.platforms import api_form, bedrock_stream
from harness.emulator.profile import Profile
from harness.emulator.ratelimits import RateLimiter
from harness.emulator.validate import RequestError, cache_prefix, count_input_tokens, validate_count_tokens_body, validate_messages_body
from harness.emulator.wheel import Wheel
from harness.emulator.wire import ERROR_TYPES, error_body, json_response, models_answer, parse_request_head, stream_head

log = logging.getLogger("harness.emulator")
perf_ns = time.perf_counter_ns

MAX_BODY = 32 * 1024 * 1024
VALID_BODIES = 256  # validated Messages bodies kept (emptied when full)
VALID_BODY_MAX_BYTES = 64 * 1024  # larger bodies are validated every time
MAX_HEAD = 64 * 1024

_INJECTED_ERRORS = {  # the message of each error a profile's faults inject
    429: "This request would exceed the rate limit for your organization. (emulated)",
    529: "Overloaded",
    500: "Internal server error",
}


# ----------------------------------------------------------------------------- server state


class State:
    """What the connections share: profile, seed, rate limits, timer wheel, caches, ground truth."""

    def __init__(self, profile: Profile, seed: int, gt: GroundTruth | None, uvloop: bool) -> None:
        self.wheel = Wheel(asyncio.get_running_loop(), uvloop)
        self.profile = profile
        self.seed = seed
        self.gt = gt
        self.uvloop = uvloop
        self.per_model = PerModel(profile)  # each model's rate limits and capacity
        self.conns: set[HttpConnection] = set()
        self.seq = 0  # Messages requests, drives the per-request random draws
        self.rid = 0  # all requests, for request ids
        alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        n = int.from_bytes(os.urandom(8), "big")
        pref = []
        for _ in range(10):
            n, r = divmod(n, 62)
            pref.append(alphabet[r])
        self.id_prefix = "".join(pref)
        self.deltas = DeltaEvents()
        self.valid_bodies: dict[tuple[str, bytes], tuple[dict[str, Any], int, tuple[str, int] | None]] = {}
        self.prompt_cache = PromptCache()
        self.accepting = True

    def new_request_id(self) -> str:
        self.rid += 1
        return f"req_emu{self.id_prefix}{self.rid:08d}"


# ----------------------------------------------------------------------------- connection


class HttpConnection(asyncio.Protocol):
    """One TCP connection: HTTP/1.1 parsing, responses, and the timed writes of the active one."""

    tr: asyncio.Transport  # set by connection_made, before any other callback

    def __init__(self, state: State) -> None:
        self.st = state
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.busy = False
        self.in_process = False
        self.closed = False
        self.paused = False
        self._continued = False  # 100 Continue sent for the pending request
        # active response
        self.req: RequestRecord | None = None
        self.items: list[PlanItem] = []
        self.i = 0
        self.due = 0  # the wheel bucket (ms) this connection waits in; 0: none

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not an asyncio.Transport subclass: no isinstance check)
        self.tr = cast(asyncio.Transport, transport)
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
            self.tr.pause_reading()

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
                    method, target, version, headers, clen = parse_request_head(bytes(buf[:end]))
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
                        self.tr.write(b"HTTP/1.1 100 Continue\r\n\r\n")
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
                                self.tr.abort()
                now = perf_ns()
        finally:
            self.in_process = False

    def _bad_request(self, now: int, msg: str) -> None:
        self._simple_close(now, 400, msg)

    def _simple_close(self, now: int, status: int, msg: str) -> None:
        req = RequestRecord(self.st.new_request_id(), "", now, False)
        self.busy = True
        self.req = req
        self._send_error(req, status, msg)

    # -- response helpers
    def _finish(self, req: RequestRecord) -> None:
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
            self.tr.close()
            return
        if self.paused:
            self.paused = False
            self.tr.resume_reading()
        if self.buf and not self.in_process:
            self._process(perf_ns())

    def _send_now(self, req: RequestRecord, status: int, data: bytes, outcome: str, error_type: str | None = None) -> None:
        req.status = status
        req.outcome = outcome
        req.error_type = error_type
        t = perf_ns()
        req.t_headers_ns = t
        req.t_end_ns = t
        self.tr.write(data)
        self._finish(req)

    def _send_error(
        self, req: RequestRecord, status: int, msg: str, extra: list[tuple[str, str]] | None = None, etype: str | None = None
    ) -> None:
        etype = etype or ERROR_TYPES.get(status, "api_error")
        data = json_response(status, req.request_id, error_body(status, msg, req.request_id, etype), extra, req.keep_alive)
        self._send_now(req, status, data, OUTCOMES.get(status, "api_error"), etype)

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
            self.tr.abort()

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes, now: int, keep: bool) -> None:
        """Answer one complete request (sets `self.req`); the subclass's endpoints."""
        raise NotImplementedError

    # -- timed writes
    def _start_stream(self, req: RequestRecord, items: list[PlanItem], head: bytes) -> None:
        """Write the stream's head (message_start) now, the items when due."""
        if req.form == "bedrock":
            head, items = bedrock_stream(head, items)
        self.items, self.i, req.status = items, 0, 200
        t = perf_ns()
        req.t_headers_ns = t
        self.tr.write(head)
        self._schedule(items[0][0])

    def _start_blocking(self, items: list[PlanItem]) -> None:
        """Write the items (one) when due."""
        self.items = items
        self.i = 0
        self._schedule(items[0][0])

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
        if tr.is_closing():
            self._abort_active("client_closed")
            return
        items = self.items
        n = len(items)
        i = self.i
        now = perf_ns()
        # fast path, most writes of a long stream: one text chunk after the first is due
        # and the next item is not
        target, kind, data, _ = items[i]
        if kind == ITEM_TEXT and i + 1 < n and req.t_first_text_ns is not None:
            following = items[i + 1][0]
            if following > now >= target:
                self.i = i + 1
                t = perf_ns()
                tr.write(data)
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
            if kind == ITEM_TEXT:
                text = True
            elif kind in (ITEM_THINK, ITEM_SIGNATURE):
                thinking = True
            elif kind == ITEM_TAIL:
                done = True
            elif kind != ITEM_EMPTY:  # ITEM_ERROR, ITEM_DROP, ITEM_BLOCK: end of the response
                special = kind
                if kind == ITEM_ERROR and req.stream:
                    parts.append(data)
                break
            parts.append(data)
        self.i = i
        if parts:
            t = perf_ns()
            tr.write(parts[0] if len(parts) == 1 else b"".join(parts))
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
        if special == ITEM_BLOCK:
            self._send_now(req, 200, data, "ok")
        elif special == ITEM_ERROR:
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
        else:  # ITEM_DROP
            req.outcome = "disconnect"
            req.status = 200 if req.stream else 0
            req.output_tokens = self._sent_tokens() if req.stream else None
            req.stop_reason = None
            req.keep_alive = False
            req.t_end_ns = perf_ns()
            self.closed = True
            self.st.conns.discard(self)
            tr.abort()
            self._finish(req)


class ApiConnection(HttpConnection):
    """The API's endpoints on a connection: routing, authentication, models, count_tokens and Messages."""

    def _dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes, now: int, keep: bool) -> None:
        st = self.st
        path = target.split("?", 1)[0]
        req = RequestRecord(st.new_request_id(), path, now, keep)
        self.req = req
        if isinstance(api := api_form(method, path, body), str):
            return self._send_error(req, 400, api)
        path, body, req.form = api
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
        req.auth, req.header_digests = authentication(headers)
        if req.auth is None:
            self._send_error(req, 401, "x-api-key header is required")
            return
        version = headers.get("anthropic-version", "")
        if not version:
            self._send_error(req, 400, "anthropic-version: header is required")
            return
        if allowed == "GET":
            self._models(req, target)
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
                data = json_response(200, req.request_id, {"input_tokens": n}, keep_alive=keep)
                self._send_now(req, 200, data, "ok")
                return
            body_dict = validate_messages_body(parsed, version)
        except RequestError as err:
            if isinstance(parsed, dict):
                req.stream = parsed.get("stream") is True
            self._send_error(req, 400, str(err))
            return
        valid = (body_dict, count_input_tokens(body_dict), cache_prefix(body_dict))
        if len(body) <= VALID_BODY_MAX_BYTES:
            if len(st.valid_bodies) >= VALID_BODIES:
                st.valid_bodies.clear()
            st.valid_bodies[(version, body)] = valid
        self._messages(req, *valid)

    def _models(self, req: RequestRecord, target: str) -> None:
        status, obj = models_answer([(n, m.display_name) for n, m in self.st.profile.models.items() if n != "default"], target)
        if status != 200:
            return self._send_error(req, status, obj)
        self._send_now(req, 200, json_response(200, req.request_id, obj, keep_alive=req.keep_alive), "ok")

    # -- the Messages endpoint
    def _messages(self, req: RequestRecord, body: dict[str, Any], in_tok: int, prefix: tuple[str, int] | None) -> None:
        """Plan and start a Messages response; `body` is validated (and never modified: it is
        cached); `prefix`: its prompt-cache prefix (validate.cache_prefix)."""
        st = self.st
        st.seq += 1
        req.seq = seq = st.seq
        model: str = body["model"]
        req.stream = stream = body.get("stream") is True
        req.input_tokens = in_tok
        mp = st.profile.model_for(model)
        faults = mp.faults or st.profile.faults
        rng = request_rng(st.seed, seq)
        draws = FaultDraws.draw(rng)  # fixed order of draws: faults first, then lengths and timings

        # --- errors instead of a response: injected, then the rate limits
        retry_headers = [("retry-after", str(faults.retry_after_s))]
        limiter = st.per_model.limiter(model)
        injected = injected_error(faults, draws)
        if injected is not None:
            self._send_injected_error(req, injected, retry_headers, limiter)
            return
        wait, rl_headers = limiter.admit(in_tok, body["max_tokens"])
        if wait > 0:
            self._send_error(
                req,
                429,
                "This request would exceed your organization's rate limit. (emulated)",
                extra=[("retry-after", str(max(1, int(wait + 0.999)))), *rl_headers],
            )
            return

        # --- the model's capacity: served now, queued (the response starts later), or 529
        servers = st.per_model.servers(model)
        start_ns = req.t_received_ns if servers is None else servers.start_at(req.t_received_ns)
        if start_ns is None:
            self._send_injected_error(req, 529, retry_headers, limiter)
            return
        req.queued_ns = start_ns - req.t_received_ns

        # --- the prompt cache (read: processed at once), then lengths, times and fault of the response
        usage = st.prompt_cache.usage(model, in_tok, prefix, req.t_received_ns)
        req.input_tokens, req.cache_creation_tokens, req.cache_read_tokens = usage
        plan = plan_response(mp, faults, draws, rng, body, in_tok - usage.cache_read, start_ns)
        if st.gt is not None:
            req.reply_digest = assistant_digest(reply_content(plan))
            req.context_digests = [assistant_digest(m["content"]) for m in body["messages"] if m["role"] == "assistant"]
        req.stop_reason, req.output_tokens = plan.stop_reason, plan.output_tokens
        req.scheduled_first_text_ns = plan.text_targets[0] if stream else None
        message_id = f"msg_emu{st.id_prefix}{seq:08d}"
        signature = f"EmuSig{st.seed}x{seq}" + "A" * 24
        if not stream:
            req.scheduled_end_ns = plan.text_targets[-1]
            if servers is not None:
                servers.occupy(int(req.scheduled_end_ns))
            items = blocking_items(
                plan,
                request_id=req.request_id,
                message_id=message_id,
                model=model,
                signature=signature,
                usage=usage,
                keep_alive=req.keep_alive,
                rate_limit_headers=rl_headers,
                retry_headers=retry_headers,
            )
            self._start_blocking(items)
            return
        items = stream_items(
            plan, st.deltas, message_id=message_id, signature=signature, usage=usage, empty_first_delta=mp.empty_first_delta
        )
        req.scheduled_end_ns = items[-1][0]  # the tail or the fault
        if servers is not None:
            servers.occupy(int(req.scheduled_end_ns))
        self._start_stream(req, items, stream_head(req.request_id, message_id, model, usage, rl_headers, req.keep_alive, st.profile.ping))

    def _send_injected_error(self, req: RequestRecord, status: int, retry_headers: list[tuple[str, str]], limiter: RateLimiter) -> None:
        extra = None
        if status == 429:
            extra = retry_headers + limiter.headers()
        elif status == 529:
            extra = retry_headers
        self._send_error(req, status, _INJECTED_ERRORS[status], extra=extra)


# ----------------------------------------------------------------------------- main loop


async def serve(host: str, port: int, profile: Profile, seed: int, gt: GroundTruth | None, uvloop: bool) -> int:
    loop = asyncio.get_running_loop()
    state = State(profile, seed, gt, uvloop)
    try:
        server = await loop.create_server(lambda: ApiConnection(state), host, port, backlog=4096, reuse_address=True)
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
    print(f"emulator listening on http://{f'[{host}]' if ':' in host else host}:{bound}", flush=True)  # an IPv6 host in brackets
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
