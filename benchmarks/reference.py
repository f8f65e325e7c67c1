"""The benchmark's capacity floor: the least a Python server can do for the same streams.

    python -m benchmarks.reference --profile PROFILE --ground-truth FILE [--port 0]

`benchmarks.bench` measures the emulator's capacity (streams on one core, first-text
lateness) with a raw client. On a shared or nested-virtualised machine part of that
lateness belongs to the machine (the host taking the core away, costly wake-ups), not to
the emulator. This server is the same-run reference that separates the two: it answers
every request on the same asyncio/uvloop transport, with the same timing mechanism (the
emulator's `Wheel`: one loop timer per millisecond of due writes, writes never early; the
tail in the last chunk's write) and the same schedule as the emulator under the profile's `default` model
(TTFT, tokens per second, jitter, tokens per chunk, output length), but does nothing else:
no parsing beyond Content-Length, no validation, rate limits or usage, one prebuilt delta
event repeated. It follows profiles like the benchmark's only: input-dependent TTFT,
max_tokens, thinking, empty first deltas and faults are ignored. Whatever lateness it
shows in the same run is the floor of the machine.

Ground truth: one JSON line per response with `path`, `scheduled_first_text_ns` and
`t_first_text_ns` (the emulator's names and clock), written when the server stops.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import signal
import sys
import time
from collections.abc import Sequence
from typing import cast

import uvloop

from harness.emulator.planning import chunk_targets
from harness.emulator.profile import ProfileError, load_profile
from harness.emulator.wheel import Wheel
from harness.emulator.wire import TEXT_TOKENS, THINKING_TOKENS, http_chunk

READY = "reference server listening on "
perf_ns = time.perf_counter_ns


# the emulator's writes and events per response: head + message_start + ping, first text
# (block start + delta), one delta per chunk, tail (block stop + message_delta + stop)
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
) + http_chunk(
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_ref","content":[]}}\n\n'
    b'event: ping\ndata: {"type":"ping"}\n\n'
)
FIRST = http_chunk(
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the quick"}}\n\n'
)
DELTA = http_chunk(
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" brown fox"}}\n\n'
)
TAIL = (
    http_chunk(
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    + b"0\r\n\r\n"
)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class Schedule:
    """Chunk target times of one response under a model profile: the emulator's formula and its
    draws (one generator per request, seeded from the request's sequence number, in the same
    order), so both servers serve the same schedule to the same sequence of requests."""

    FAULT_DRAWS = 6  # the emulator draws its fault decisions first

    def __init__(self, profile_path: str, seed: int) -> None:
        mp = load_profile(profile_path).model_for("default")
        self.mp = mp
        self.seed = seed
        self.seq = 0

    def targets(self, arrival_ns: int) -> list[int]:
        self.seq += 1
        mp, rng = self.mp, random.Random(self.seed * 1_000_003 + self.seq)
        for _ in range(self.FAULT_DRAWS):
            rng.random()
        ot = mp.output_tokens
        n = max(ot.min, round(rng.gauss(ot.mean, ot.sd)) if ot.sd > 0 else round(ot.mean))
        n = min(ot.max, n) if ot.max is not None else n
        ttft = mp.ttft_ms * 1e6
        if mp.jitter:
            ttft *= 1.0 + mp.jitter * (2.0 * rng.random() - 1.0)
        rng.randrange(len(TEXT_TOKENS)), rng.randrange(len(THINKING_TOKENS))  # the emulator's words' offsets
        out = chunk_targets(arrival_ns + ttft, 1e9 / mp.output_tps, mp.jitter, rng.random, 0, n, mp.tokens_per_chunk)
        out.append(out[-1])  # the tail goes with the last chunk
        return out


class Server:
    def __init__(self, loop: asyncio.AbstractEventLoop, schedule: Schedule) -> None:
        self.wheel = Wheel(loop, uvloop=True)  # the emulator's own timer wheel
        self.schedule = schedule
        self.rows: list[str] = []


class Conn(asyncio.Protocol):
    """One keep-alive connection; requests are answered one after the other."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.tr: asyncio.Transport  # set by connection_made
        self.buf = b""
        self.active = False
        self.targets: list[int] = []
        self.i = 0
        self.due = 0  # the wheel bucket this connection waits in (the Wheel's Scheduled protocol)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tr = cast(asyncio.Transport, transport)  # a stream transport (uvloop's is no asyncio.Transport subclass)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.active:
            self.next_request()

    def next_request(self) -> None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        length = _content_length(buf[:end])
        if len(buf) < end + 4 + length:
            return
        self.buf = buf[end + 4 + length :]
        self.active = True
        self.targets = self.server.schedule.targets(perf_ns())
        self.i = 0
        self.tr.write(HEAD)
        self.server.wheel.add(self, self.targets[0])

    def _run(self) -> None:
        tr = self.tr
        if tr is None or tr.is_closing():
            return
        i, targets = self.i, self.targets
        data = DELTA
        if i == 0:
            data = FIRST
            self.server.rows.append('{"path":"/v1/messages","scheduled_first_text_ns":%d,"t_first_text_ns":%d}' % (targets[0], perf_ns()))
        if i + 2 == len(targets):  # the tail shares the last chunk's time: one write, as in the emulator
            tr.write(data + TAIL)
            self.active = False
            self.next_request()
            return
        tr.write(data)
        self.i = i + 1
        self.server.wheel.add(self, targets[i + 1])


async def serve(host: str, port: int, schedule: Schedule, ground_truth: str) -> int:
    loop = asyncio.get_running_loop()
    server = Server(loop, schedule)
    listener = await loop.create_server(lambda: Conn(server), host, port, backlog=4096)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)  # as the emulator: no full collection in the measured window
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"{READY}http://{host}:{listener.sockets[0].getsockname()[1]}", flush=True)
    await stop.wait()
    listener.close()
    with open(ground_truth, "w", encoding="utf-8") as f:
        f.write("".join(row + "\n" for row in server.rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--profile", required=True, help="emulator profile YAML; its `default` model gives the schedule")
    p.add_argument("--ground-truth", required=True, metavar="FILE", help="JSON lines written at stop")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    try:
        schedule = Schedule(args.profile, args.seed)
    except ProfileError as err:
        print(f"benchmarks.reference: {err}", file=sys.stderr)
        return 2
    return uvloop.run(serve(args.host, args.port, schedule, args.ground_truth))


if __name__ == "__main__":
    sys.exit(main())
