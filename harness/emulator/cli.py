"""Command line of the emulator (see `python -m harness.emulator --help`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Sequence

from harness.emulator.profile import ProfileError, default_profile, load_profile


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m harness.emulator",
        description="A stand-in Claude Messages API server with latency profiles, faults and ground truth.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind; 0 picks a free one (default 8080)")
    p.add_argument("--profile", help="YAML latency/fault profile (default: the built-in profile)")
    p.add_argument("--seed", type=int, help="random seed (overrides the profile's seed)")
    p.add_argument("--ground-truth", metavar="FILE", help="append one JSON line per request to FILE")
    p.add_argument("--no-uvloop", action="store_true", help="use the stdlib asyncio loop even if uvloop is installed")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log to stderr (-v info, -vv debug)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s emulator %(levelname)s %(message)s")
    try:
        profile = load_profile(args.profile) if args.profile else default_profile()
    except ProfileError as err:
        print(f"emulator: {err}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else profile.seed

    from harness.emulator.groundtruth import GroundTruth
    from harness.emulator.server import serve

    gt = None
    if args.ground_truth:
        try:
            gt = GroundTruth(args.ground_truth)
        except OSError as err:
            print(f"emulator: cannot open ground-truth file {args.ground_truth}: {err.strerror or err}", file=sys.stderr)
            return 2

    loop_factory = None
    use_uvloop = False
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
            use_uvloop = True
        except ImportError:
            pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve(args.host, args.port, profile, seed, gt, use_uvloop))
    except KeyboardInterrupt:  # a signal before the handlers were installed
        return 0
    finally:
        if gt is not None:
            with contextlib.suppress(OSError, ValueError):
                gt.close()
