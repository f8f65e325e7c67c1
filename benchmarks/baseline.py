"""The benchmark's baseline: the hand-written AsyncAnthropic loop a user would write.

    python -m benchmarks.baseline --url URL --concurrency N --run-time S --out FILE

N asyncio tasks (started evenly over `--ramp` seconds) each loop
``await client.messages.create(..., stream=True)`` and iterate the events, taking
``time.perf_counter_ns()`` at the first non-empty text_delta, keeping the request id from
the stream's response headers and counting the events. The client is what the SDK's
docs suggest for many concurrent requests: ``max_retries=0`` and a connection pool of at
least N (``DefaultAsyncHttpxClient(limits=...)``); everything else is the SDK default.
Runs on uvloop when it is installed.

Prints ``all tasks started`` to stdout once the last task has begun (so `benchmarks.bench`
can start its measured window), stops starting requests after `--run-time` seconds,
waits for the requests in flight (bounded), then writes one JSON line per request to
`--out`: request_id, start_ns, first_text_ns, end_ns, events, outcome, error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

READY_LINE = "all tasks started"

perf_ns = time.perf_counter_ns


def build_parser() -> argparse.ArgumentParser:
    """The options of a load loop of the benchmark (this one's and benchmarks/floor.py's)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.baseline", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="base URL of the Messages API (the emulator)")
    p.add_argument("--concurrency", type=int, required=True, help="concurrent streams (tasks)")
    p.add_argument("--ramp", type=float, default=1.0, help="seconds over which the tasks start")
    p.add_argument("--run-time", type=float, required=True, help="seconds after the first start to stop sending")
    p.add_argument("--drain-timeout", type=float, default=15.0, help="seconds to wait for requests in flight")
    p.add_argument("--out", required=True, help="JSON-lines file for the per-request records")
    p.add_argument("--model", default="claude-haiku-4-5")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--prompt", default="Write a haiku about load tests.")
    return p


async def _one_request(client: Any, args: argparse.Namespace, messages: list[dict[str, str]]) -> dict[str, Any]:
    start = perf_ns()
    first_text = None
    events = 0
    request_id = None
    outcome, error = "ok", None
    try:
        stream = await client.messages.create(model=args.model, max_tokens=args.max_tokens, messages=messages, stream=True)
        request_id = stream.response.headers.get("request-id")
        async for event in stream:
            events += 1
            if first_text is None and event.type == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    first_text = perf_ns()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        outcome, error = "error", f"{type(exc).__name__}: {str(exc)[:200]}"
    return {
        "request_id": request_id,
        "start_ns": start,
        "first_text_ns": first_text,
        "end_ns": perf_ns(),
        "events": events,
        "outcome": outcome,
        "error": error,
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import anthropic
    import httpx2

    limits = httpx2.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    client = anthropic.AsyncAnthropic(
        base_url=args.url,
        api_key="bench",
        max_retries=0,
        http_client=anthropic.DefaultAsyncHttpxClient(limits=limits),
    )
    messages = [{"role": "user", "content": args.prompt}]
    records: list[dict[str, Any]] = []
    begin = perf_ns()
    stop_at = begin + int(args.run_time * 1e9)

    async def task(index: int) -> None:
        await asyncio.sleep(args.ramp * index / max(1, args.concurrency))
        while perf_ns() < stop_at:
            records.append(await _one_request(client, args, messages))

    tasks = [asyncio.create_task(task(i)) for i in range(args.concurrency)]
    await asyncio.sleep(args.ramp)
    print(READY_LINE, flush=True)
    remaining = (stop_at - perf_ns()) / 1e9 + args.drain_timeout
    _done, pending = await asyncio.wait(tasks, timeout=max(0.0, remaining))
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    await client.close()
    return records


def write_records(path: str, records: list[dict[str, Any]]) -> None:
    """One JSON line per request (`benchmarks.bench` reads them)."""
    with open(path, "w", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record, separators=(",", ":")) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop")
    args = parser.parse_args(argv)
    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        records = runner.run(run(args))
    write_records(args.out, records)
    print(f"baseline done: {len(records)} requests (uvloop={loop_factory is not None})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
