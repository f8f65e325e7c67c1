"""The command line: the harness's options, the Locust defaults it changes, and the checks that
refuse a bad value before anything runs.

A bad value is a usage error: argparse's own message (`locust: error: argument --max-requests:
-1 must be a whole number >= 1`) and exit code 2, for the harness's options and for the Locust
options whose bad values Locust itself would accept (`-u -3`, `--web-port 99999`). Output files
are checked at start-up too (`output_paths_problem`): an unwritable `--summary-json` is refused
before the run, not reported by a traceback after it.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import credentials, exitcodes, webui
from harness.datasets import DEFAULT_SHIP_LIMIT_MB
from harness.disk import DEFAULT_MIN_FREE_MB
from harness.health import DEFAULT_MAX_CPU_PERCENT, DEFAULT_MAX_LOOP_LAG_MS
from harness.load import parse_rate
from harness.platforms import PLATFORMS
from harness.recording import CLOSE_TIMEOUT_S, DEFAULT_BUFFER, WRITE_TIMEOUT_S
from harness.transport import TRANSPORTS

DEFAULT_SCENARIO = "scenarios/demo.yaml"
DEFAULT_OUTPUT_DIR = "runs"
DEFAULT_STOP_TIMEOUT = "30s"
LOOPBACK = "127.0.0.1"
OUTPUT_FILES = ("summary_json", "junit", "markdown", "report")


# --- argparse types (argparse turns their errors into exit 2) -----------------------------
def number(kind: Callable[[str], float], minimum: float, strict: bool, what: str) -> Callable[[str], Any]:
    """A type for numbers of `kind` above `minimum` (or at least it, if not `strict`)."""
    bound = f"> {minimum:g}" if strict else f">= {minimum:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} must be {what} {bound}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_seconds = number(float, 0, True, "a number of seconds")
non_negative_seconds = number(float, 0, False, "a number of seconds")
positive_usd = number(float, 0, True, "an amount of USD")
positive_count = number(int, 1, False, "a whole number")
non_negative_count = number(int, 0, False, "a whole number")
positive_ms = number(float, 0, True, "a number of milliseconds")
positive_percent = number(float, 0, True, "a percentage")
non_negative_mb = number(float, 0, False, "a number of megabytes")


SCENARIO_SWEEP = "scenario"  # `--sweep` without steps: the scenario's own


def rate(text: str) -> str:
    """A rate as a scenario's load.rate takes it (checked here so that a typo is a usage error)."""
    try:
        parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text.strip()


def sweep_steps(text: str) -> str:
    """`--sweep`'s steps: rates (2/s,4/s,8/s) or users (5,10,20), checked with the scenario."""
    steps = [step.strip() for step in text.split(",")]
    if not all(steps):
        raise argparse.ArgumentTypeError(f"{text!r}: give steps as rates (2/s,4/s,8/s) or users (5,10,20), comma-separated")
    return ",".join(steps)


def load_overrides(options: Any) -> dict[str, str]:
    """The scenario's load settings the command line gives."""
    return {name: value for name in ("arrival", "rate") if (value := getattr(options, name, None))}


def tcp_port(text: str) -> int:
    value = number(int, 1, False, "a TCP port")(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text} must be a TCP port <= 65535")
    return int(value)


def cpu_percent(text: str) -> float:
    value = number(float, 0, True, "a percentage")(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{text} must be a percentage <= 100 (the harness uses one core)")
    return float(value)


# Locust's options whose default the harness changes, with the help that says so
HARNESS_DEFAULTS = {
    # requests in flight at the stop finish within this (then they are cancelled), instead of
    # Locust's default of cutting them all: a cut request measures nothing
    "stop_timeout": (
        DEFAULT_STOP_TIMEOUT,
        f"seconds requests in flight may take to finish at the stop; then they are cancelled (harness default {DEFAULT_STOP_TIMEOUT})",
    ),
    # nothing is reachable from another machine unless the operator says so
    "web_host": (LOOPBACK, f"interface the web UI listens on (harness default {LOOPBACK}); any other needs --web-login"),
    "master_bind_host": (
        LOOPBACK,
        f"interface the master's worker port listens on (harness default {LOOPBACK}); workers join with ${credentials.WORKER_SECRET_ENV}",
    ),
}
# Locust's options whose bad values Locust accepts, and the type that refuses them
LOCUST_TYPES = {"num_users": non_negative_count, "web_port": tcp_port, "master_port": tcp_port, "master_bind_port": tcp_port}


def add_arguments(parser: Any) -> None:
    parser.set_defaults(**{dest: default for dest, (default, _) in HARNESS_DEFAULTS.items()})
    for action in parser._actions:  # argparse keeps no public handle on an action
        if action.dest in HARNESS_DEFAULTS:
            action.help = HARNESS_DEFAULTS[action.dest][1]
        if action.dest in LOCUST_TYPES:
            action.type = LOCUST_TYPES[action.dest]
    group = parser.add_argument_group("Claude harness")
    webui.add_scenario_argument(group, DEFAULT_SCENARIO)  # a select of scenarios/ in the web UI
    group.add_argument("--transport", choices=TRANSPORTS, default="fast", help="HTTP transport (default: fast)")
    group.add_argument(
        "--output-dir",
        default=DEFAULT_OUTPUT_DIR,
        help=f"folder for run outputs (default: {DEFAULT_OUTPUT_DIR}/; a worker without one writes below the master's)",
    )
    group.add_argument(
        "--host-is-emulator",
        action="store_true",
        default=False,
        help="the --host is an emulator of the API (another machine's or container's): requests carry a placeholder "
        "key, never ANTHROPIC_API_KEY, and no budget or price is needed",
    )
    group.add_argument(
        "--platform", choices=PLATFORMS, default=None, help="where Claude is served (default: the scenario's platform, else anthropic)"
    )
    group.add_argument("--platform-region", default=None, help="the platform's region (vertex, bedrock), over the scenario's")
    group.add_argument("--platform-project", default=None, help="the Google Cloud project (vertex), over the scenario's")
    group.add_argument("--emulator-profile", default=None, help="latency profile for the built-in emulator")
    group.add_argument("--emulator-seed", type=int, default=None, help="seed for the built-in emulator")
    group.add_argument("--summary-json", default=None, help="write the run's summary as JSON to this path")
    group.add_argument("--junit", default=None, help="write one JUnit test case per SLO to this path")
    group.add_argument("--markdown", default=None, help="write a Markdown summary (for a CI job summary) to this path")
    group.add_argument("--report", default=None, help="write a self-contained HTML report to this path")
    group.add_argument("--baseline", default=None, help="a previous run's --summary-json: fail on percentile regressions")
    group.add_argument(
        "--regression-threshold",
        type=positive_percent,
        default=None,
        help="percent a percentile may grow over the baseline (default: the scenario's regression.threshold_pct, 10)",
    )
    group.add_argument(
        "--arrival",
        choices=("poisson", "constant"),
        default=None,
        help="an open loop: requests arrive at --rate whatever the answers (the scenario's load.arrival, overridden)",
    )
    group.add_argument(
        "--rate",
        type=rate,
        default=None,
        help="an open loop's rate for the whole run, e.g. 20/s, 600/min, 400000 input_tokens/min (load.rate, overridden)",
    )
    group.add_argument(
        "--sweep",
        nargs="?",
        const=SCENARIO_SWEEP,
        type=sweep_steps,
        default=None,
        help="run the scenario's sweep (a scenario with `sweep:` runs it anyway), or sweep these steps: "
        "rates 2/s,4/s,8/s (an open loop) or users 5,10,20; exit 0 when a step met every SLO, 1 when none did",
    )
    group.add_argument("--max-cost-usd", type=positive_usd, default=None, help="stop the run when it has spent this much")
    group.add_argument(
        "--allow-unpriced",
        action="store_true",
        default=False,
        help="run models without a price against a real API (their cost is unknown and not in the budget)",
    )
    group.add_argument("--max-requests", type=positive_count, default=None, help="stop the run after this many requests")
    group.add_argument(
        "--min-free-disk-mb",
        type=non_negative_mb,
        default=DEFAULT_MIN_FREE_MB,
        help=f"no new request starts while less is free under --output-dir: a run stops with exit code 3, a worker's "
        f"users wait (default {DEFAULT_MIN_FREE_MB:g}; a warning comes at 4 times as much)",
    )
    group.add_argument(
        "--dataset-ship-limit-mb",
        type=non_negative_mb,
        default=DEFAULT_SHIP_LIMIT_MB,
        help=f"a master ships a dataset up to this size (compressed) to its workers; a larger one every worker reads from "
        f"the same path, checked against the master's digest (default {DEFAULT_SHIP_LIMIT_MB:g})",
    )
    group.add_argument(
        "--master-lost-timeout",
        type=positive_seconds,
        default=10.0,
        help=f"a worker whose master is silent this many seconds stops its users and exits {exitcodes.MASTER_LOST} (default 10)",
    )
    # Locust's own add_argument (not argparse groups) knows is_secret and include_in_web_ui
    points = health = parser
    points.add_argument(
        "--points",
        choices=("auto", "off"),
        default="auto",
        help="per-request points: to InfluxDB when configured, else to points.lp in the run folder (auto); or off",
    )
    points.add_argument("--influx-url", default=None, help="InfluxDB URL (default: $INFLUXDB_V2_URL)")
    points.add_argument("--influx-token", default=None, is_secret=True, help="InfluxDB token (default: $INFLUXDB_V2_TOKEN)")
    points.add_argument("--influx-org", default=None, help="InfluxDB org (default: $INFLUXDB_V2_ORG)")
    points.add_argument("--influx-bucket", default=None, help="InfluxDB bucket (default: $INFLUXDB_V2_BUCKET or loadtest)")
    points.add_argument(
        "--influx-timeout",
        type=positive_seconds,
        default=WRITE_TIMEOUT_S,
        help=f"seconds one write to InfluxDB may take before it is retried (default {WRITE_TIMEOUT_S:g})",
    )
    points.add_argument("--influx-buffer", type=positive_count, default=DEFAULT_BUFFER, help="points buffered at most before dropping")
    points.add_argument(
        "--points-flush-timeout",
        type=non_negative_seconds,
        default=CLOSE_TIMEOUT_S,
        help="seconds to flush buffered points at the end; what is left is counted as dropped",
    )
    health.add_argument(
        "--max-cpu-percent", type=cpu_percent, default=DEFAULT_MAX_CPU_PERCENT, help="CPU use above which the run is unreliable"
    )
    health.add_argument(
        "--max-loop-lag-ms", type=positive_ms, default=DEFAULT_MAX_LOOP_LAG_MS, help="event-loop lag p99 above which the run is unreliable"
    )
    health.add_argument(
        "--fail-on-unreliable",
        action="store_true",
        default=False,
        help=f"exit with code {exitcodes.UNRELIABLE} when the load generator was saturated",
    )


# --- output paths -----------------------------------------------------------------------------
def _unwritable_folder(folder: Path) -> str | None:
    """Why files cannot be created in `folder` (made if missing), if they cannot: tried, not guessed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot write in the folder {folder}: {exc.strerror or exc}"
    return None


def _unwritable_file(path: Path) -> str | None:
    """Why `path` cannot be written, if it cannot (a file that did not exist is removed again)."""
    if path.is_dir():
        return "is a folder, not a file"
    problem = _unwritable_folder(path.parent)
    if problem:
        return problem
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        return f"cannot write the file: {exc.strerror or exc}"
    if not existed:
        path.unlink()
    return None


def output_paths_problem(options: Any) -> str | None:
    """Why the run could not write one of its outputs, checked before it starts."""
    problem = _unwritable_folder(Path(options.output_dir))
    if problem:
        return f"--output-dir {options.output_dir}: {problem}"
    for dest in OUTPUT_FILES:
        value = getattr(options, dest, None)
        problem = _unwritable_file(Path(value)) if value else None
        if problem:
            return f"--{dest.replace('_', '-')} {value}: {problem}"
    return None


def main() -> None:
    """`python -m harness.options`: Locust's options with the harness's, and their defaults here
    (Locust prints `--help` before it loads a locustfile, so `locust -f locustfile.py --help`
    cannot list the harness's)."""
    from locust.argument_parser import get_parser

    parser = get_parser()
    add_arguments(parser)
    parser.prog = "locust -f locustfile.py"
    parser.print_help()


if __name__ == "__main__":
    main()
