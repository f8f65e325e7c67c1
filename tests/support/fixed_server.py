"""An independent Messages API stand-in with a fixed, known script (not the emulator's code).

Each POST /v1/messages gets the same response: for streams, headers after 40 ms, an empty
text delta, the first real text at 150 ms and nine more deltas 20 ms apart; blocking
requests get the whole message after 200 ms. Every write time is logged (perf_counter_ns,
CLOCK_MONOTONIC) so tests can check the harness's timings against it.

    python tests/support/fixed_server.py --log FILE      # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import socket
import socketserver
import sys
import threading
import time

HEADERS_AT_S = 0.040
FIRST_TEXT_AT_S = 0.150
DELTA_GAP_S = 0.020
TEXT_DELTAS = 10
BLOCKING_AT_S = 0.200

_ids = itertools.count(1)
_log_lock = threading.Lock()


def _event(kind: str, data: dict) -> bytes:
    payload = f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


class Handler(socketserver.StreamRequestHandler):
    log_file = None

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while self._one_request():
            pass

    def _one_request(self) -> bool:
        request_line = self.rfile.readline()
        if not request_line:
            return False
        length = 0
        while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = json.loads(self.rfile.read(length) or b"{}")
        t0 = time.perf_counter()
        request_id = f"req_fixed_{next(_ids)}"
        entry = {"request_id": request_id, "stream": bool(body.get("stream"))}
        if entry["stream"]:
            self._stream(t0, request_id, entry)
        else:
            self._blocking(t0, request_id, entry)
        with _log_lock:
            self.log_file.write(json.dumps(entry) + "\n")
            self.log_file.flush()
        return True

    def _at(self, t0: float, offset_s: float) -> None:
        delay = t0 + offset_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    def _write(self, data: bytes) -> int:
        now = time.perf_counter_ns()
        self.wfile.write(data)
        return now

    def _stream(self, t0: float, request_id: str, entry: dict) -> None:
        self._at(t0, HEADERS_AT_S)
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nrequest-id: {request_id}\r\n\r\n"
        ).encode()
        usage = {"input_tokens": 21, "output_tokens": 1, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}
        message = {
            "id": "msg_fixed",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": "fixed",
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        entry["t_headers_ns"] = self._write(
            head
            + _event("message_start", {"type": "message_start", "message": message})
            + _event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            + _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ""}})
        )
        writes = []
        for i in range(TEXT_DELTAS):
            self._at(t0, FIRST_TEXT_AT_S + i * DELTA_GAP_S)
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" w{i}"}}
            writes.append(self._write(_event("content_block_delta", delta)))
        end = (
            _event("content_block_stop", {"type": "content_block_stop", "index": 0})
            + _event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": TEXT_DELTAS},
                },
            )
            + _event("message_stop", {"type": "message_stop"})
            + b"0\r\n\r\n"
        )
        entry["t_end_ns"] = self._write(end)
        entry.update(t_first_text_ns=writes[0], t_last_token_ns=writes[-1], output_tokens=TEXT_DELTAS)

    def _blocking(self, t0: float, request_id: str, entry: dict) -> None:
        self._at(t0, BLOCKING_AT_S)
        usage = {"input_tokens": 21, "output_tokens": TEXT_DELTAS}
        body = json.dumps(
            {
                "id": "msg_fixed",
                "type": "message",
                "role": "assistant",
                "model": "fixed",
                "content": [{"type": "text", "text": "fixed"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
        ).encode()
        head = (
            f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nrequest-id: {request_id}\r\n\r\n"
        ).encode()
        entry["t_end_ns"] = self._write(head + body)
        entry["output_tokens"] = TEXT_DELTAS


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    with open(args.log, "a", encoding="utf-8") as Handler.log_file:
        server = Server(("127.0.0.1", 0), Handler)
        signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
        print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
