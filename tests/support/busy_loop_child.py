"""Streams read by a busy event loop, in a process of its own patched by gevent as inside Locust,
for tests/test_stamps.py: N streams through FastTransport (one per greenlet) whose first text the
emulator sends on a grid line, while another greenlet holds the loop (a CPU-bound spin) from
`before_ms` before that line to `after_ms` after it. Every first text then arrives while nobody
can read it.

    python -m tests.support.busy_loop_child URL N GRID_MS BEFORE_MS AFTER_MS kernel|user
    -> one JSON object: each record's request_id, start_ns and ttft_ms, and the receive counters
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

from harness import stamps  # noqa: E402
from harness.scenario import Timeouts  # noqa: E402
from harness.timing import TimingRecord  # noqa: E402
from harness.transport import FastTransport, PreparedRequest, Target  # noqa: E402

TTFT_MS = 200  # the profile's (tests/test_stamps.py): the first text is due on the first grid line after send + this


def hog(until_ns: int) -> None:
    """Hold the event loop: no other greenlet runs, no socket is read."""
    while time.perf_counter_ns() < until_ns:
        pass


def main(url: str, n: int, grid_ms: float, before_ms: float, after_ms: float, stamping: str) -> None:
    if stamping == stamps.USER:
        stamps.enable_stamps = lambda sock: None  # the control: connections stamped when read
    target = Target(url, api_key="test-key", headers={"anthropic-version": "2023-06-01", "content-type": "application/json"})
    body = {"model": "m", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    request = PreparedRequest(body=body, data=json.dumps(body).encode(), stream=True, timeouts=Timeouts(total_s=20))
    transports = [FastTransport(target) for _ in range(n)]
    records = [TimingRecord(model="m", prompt="p", mode="stream") for _ in range(n)]
    grid_ns = grid_ms * 1e6
    # far enough from the next grid line that every request arrives before its TTFT would cross it
    while (math.ceil(time.perf_counter_ns() / grid_ns) * grid_ns - time.perf_counter_ns()) / 1e6 < TTFT_MS + 100:
        gevent.sleep(0.01)
    due_ns = math.ceil((time.perf_counter_ns() + TTFT_MS * 1e6) / grid_ns) * grid_ns
    senders = [gevent.spawn(t.send, r, request) for t, r in zip(transports, records)]
    gevent.sleep(max(0.0, (due_ns - before_ms * 1e6 - time.perf_counter_ns()) / 1e9))
    hog(int(due_ns + after_ms * 1e6))
    gevent.joinall(senders, timeout=30)
    print(
        json.dumps(
            {
                "due_ns": due_ns,
                "records": [
                    {"request_id": r.request_id, "start_ns": r.start_ns, "ttft_ms": r.ttft_ms, "outcome": r.outcome} for r in records
                ],
                "reads": stamps.READS.counts(),
            }
        ),
        flush=True,
    )
    for t in transports:
        t.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6])
