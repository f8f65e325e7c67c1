"""The emulator's ground truth: one record per request and the JSON-lines file they go to.

A `RequestRecord` is filled by the connection as the request is answered (timestamps are
`perf_counter_ns` readings taken immediately before the corresponding socket write) and
written by `GroundTruth` when the request is finished; the fields are listed in the
package docstring (`harness.emulator`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from harness.compressed import open_lines
from harness.emulator.wire import compact_json

OUTCOMES = {  # the recorded outcome of each error status
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


def assistant_digest(content: Any) -> str:
    """A short digest of what an assistant message says: its text (stripped) and its tool
    calls' inputs (compact JSON); thinking is left out. The ground truth gives it for each
    response and for each assistant message a request carries, so that a test can tell that a
    conversation's next request sent back the real reply."""
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
    parts = [
        block.get("text", "").strip() if block.get("type") == "text" else compact_json(block.get("input"))
        for block in blocks
        if isinstance(block, dict) and block.get("type") in ("text", "tool_use")
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


_PLAIN_HEADERS = frozenset(("host", "content-length", "content-type", "accept", "accept-encoding", "user-agent", "connection"))


def authentication(headers: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """How a request authenticated ("x-api-key", "bearer", or None: it did not) and a digest of
    each header it carried beyond the plain ones (credentials included: never their values), so
    that a test can tell which headers reached the server with which values."""
    auth = "x-api-key" if headers.get("x-api-key") else None
    bearer = headers.get("authorization", "")
    if auth is None and bearer[:7].lower() == "bearer " and bearer[7:].strip():
        auth = "bearer"
    elif auth is None and bearer.startswith("AWS4-HMAC-SHA256 Credential="):  # Bedrock's SigV4 (the signature is not checked)
        auth = "sigv4"
    digests = {name: hashlib.sha256(value.encode()).hexdigest()[:16] for name, value in headers.items() if name not in _PLAIN_HEADERS}
    return auth, digests


class RequestRecord:
    """Everything the ground truth records about one request (and whether its connection stays open)."""

    __slots__ = (
        "auth",
        "cache_creation_tokens",
        "cache_read_tokens",
        "context_digests",
        "error_type",
        "form",
        "header_digests",
        "input_tokens",
        "keep_alive",
        "model",
        "outcome",
        "output_tokens",
        "path",
        "queued_ns",
        "reply_digest",
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
        self.input_tokens: int | None = None  # (a Messages request's: those not read from or written to the prompt cache)
        self.cache_read_tokens = 0
        self.cache_creation_tokens = 0
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
        self.queued_ns = 0  # the wait for a server of the model's capacity
        self.reply_digest: str | None = None  # assistant_digest of the planned reply
        self.context_digests: list[str] | None = None  # assistant_digest of each assistant message sent
        self.keep_alive = keep_alive
        self.form = "api"  # the request's form: api, vertex or bedrock (platforms.api_form)
        self.auth: str | None = None  # x-api-key, bearer or sigv4
        self.header_digests: dict[str, str] = {}  # authentication(): each header beyond the plain ones

    def record(self) -> dict[str, Any]:
        """The ground-truth line (every field but keep_alive)."""
        return {
            "request_id": self.request_id,
            "path": self.path,
            "form": self.form,
            "auth": self.auth,
            "header_digests": self.header_digests,
            "model": self.model,
            "stream": self.stream,
            "status": self.status or None,  # None: no response was sent
            "outcome": self.outcome,
            "error_type": self.error_type,
            "seq": self.seq,
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
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
            "queued_ns": self.queued_ns,
            "reply_digest": self.reply_digest,
            "context_digests": self.context_digests,
        }


class GroundTruth:
    """Buffered JSON-lines writer (gzip-compressed when the name ends in .gz); flushed by the
    server every 0.5 s and at shutdown."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._f = open_lines(Path(path))
        self._buf: list[str] = []

    def add(self, rec: dict[str, Any]) -> None:
        self._buf.append(compact_json(rec))

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
