"""The benchmark's floor: the event loop reading the same streams and doing nothing else.

    python -m benchmarks.floor --url URL --concurrency N --run-time S --out FILE

N greenlets (started evenly over `--ramp` seconds) each send the benchmark's request over a
kept-alive connection, the same bytes every time, and read the response as the fast transport
does (harness/loop_reader.py): in the event loop's own callback when the socket is readable,
with the kernel's receive stamp (recvmsg), until the chunked body's last chunk. Nothing is
decoded, timed, counted in statistics or recorded while it runs: the events are counted by
their `data:` lines (a line cut between two reads is missed), the request id is found in the
head, and one record per request is written at the end. So this process's CPU per request is about the least a gevent load
generator can pay for these streams on this machine (the system calls, the loop's wake-ups
and its callbacks); the harness's CPU above it is its own work: the HTTP exchange, decoding
and timing every event, and Locust's statistics and the other sinks per request.

Takes `benchmarks.baseline`'s options (but `--no-uvloop`) and writes its records (the request id is found in the
head, matched to the emulator's ground truth for its lateness; first_text_ns is null: the
body is not parsed); prints the same line once the last greenlet has begun.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.socket
from gevent.hub import Waiter

from benchmarks.baseline import READY_LINE, build_parser, write_records
from harness.fast_http import RequestHead
from harness.stamps import ANCILLARY_SIZE, enable_stamps

perf_ns = time.perf_counter_ns
READ_BLOCK = 64 * 1024  # as the fast transport reads
LAST_CHUNK = b"\r\n0\r\n\r\n"  # the end of a chunked body without trailers (the emulator's)
REQUEST_ID = re.compile(rb"\r\nrequest-id: *([^\r]+)\r\n", re.IGNORECASE)  # matched to the emulator's ground truth


def request_bytes(url: str, model: str, max_tokens: int, prompt: str) -> bytes:
    """The streamed Messages API request, as one HTTP/1.1 message (its head as the fast transport's)."""
    parts = urlsplit(url)
    body = json.dumps({"model": model, "max_tokens": max_tokens, "stream": True, "messages": [{"role": "user", "content": prompt}]})
    headers = {"x-api-key": "bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}
    head = RequestHead(parts.hostname or "127.0.0.1", parts.port or 80, f"{parts.path.rstrip('/')}/v1/messages", headers)
    return head.of(body.encode())


class Connection:
    """One kept-alive connection whose responses are read by the event loop's callback."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = gevent.socket.create_connection(address)
        enable_stamps(self.sock)  # as the fast transport's connections
        self._raw = self.sock._sock  # type: ignore[attr-defined]  # gevent's socket wraps a non-blocking one of the standard library
        self._watcher = self.sock._read_event  # type: ignore[attr-defined]  # gevent's own read watcher of the socket
        self._waiter: Any = None
        self._tail = b""
        self._events = 0
        self._status_ok: bool | None = None
        self._request_id: str | None = None

    def exchange(self, request: bytes) -> dict[str, Any]:
        """Send the request, read its whole response; its record."""
        start = perf_ns()
        self._tail, self._events, self._status_ok, self._request_id = b"", 0, None, None
        self.sock.sendall(request)
        self._waiter = Waiter()
        self._watcher.start(self._readable)
        try:
            error = self._waiter.get()
        finally:
            self._watcher.stop()
        outcome = "ok" if error is None and self._status_ok else "error"
        return {
            "request_id": self._request_id,
            "start_ns": start,
            "first_text_ns": None,
            "end_ns": perf_ns(),
            "events": self._events,
            "outcome": outcome,
            "error": error if error is not None else (None if self._status_ok else "not HTTP 200"),
        }

    def _readable(self) -> None:
        try:
            data, _ancillary, _flags, _address = self._raw.recvmsg(READ_BLOCK, ANCILLARY_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._waiter.switch(f"{type(exc).__name__}: {exc}")
            return
        if not data:
            self._waiter.switch("connection closed")
            return
        if self._status_ok is None:  # the first read: the head (the emulator sends it in one piece)
            self._status_ok = data.startswith(b"HTTP/1.1 200 ")
            found = REQUEST_ID.search(data)
            self._request_id = found.group(1).decode() if found else None
        self._events += data.count(b"\ndata:")
        tail = self._tail + data
        if tail.endswith(LAST_CHUNK):
            self._waiter.switch(None)
        else:
            self._tail = tail[-len(LAST_CHUNK) :]

    def close(self) -> None:
        self.sock.close()


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    parts = urlsplit(args.url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    request = request_bytes(args.url, args.model, args.max_tokens, args.prompt)
    records: list[dict[str, Any]] = []
    stop_at = perf_ns() + int(args.run_time * 1e9)

    def user(index: int) -> None:
        gevent.sleep(args.ramp * index / max(1, args.concurrency))
        connection = Connection(address)
        while perf_ns() < stop_at:
            record = connection.exchange(request)
            records.append(record)
            if record["outcome"] != "ok":  # a broken connection is not reused
                connection.close()
                connection = Connection(address)
        connection.close()

    users = [gevent.spawn(user, i) for i in range(args.concurrency)]
    gevent.sleep(args.ramp)
    print(READY_LINE, flush=True)
    gevent.joinall(users, timeout=max(0.0, (stop_at - perf_ns()) / 1e9 + args.drain_timeout))
    gevent.killall(users, timeout=5)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.prog, parser.description = "python -m benchmarks.floor", __doc__.split("\n\n")[0]
    args = parser.parse_args(argv)
    records = run(args)
    write_records(args.out, records)
    print(f"floor done: {len(records)} requests", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
