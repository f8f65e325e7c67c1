"""The whole suite in parallel shards: `python -m tests.support.shards [--shards N] [pytest args]`
(what `make test` runs).

Most tests wait on real processes (an emulator's timed replies, a run's time limit): run one
after the other, the suite kept 15 % of one core busy for 17 minutes. So the test files run in
N pytest processes at once, balanced by their durations as last measured (tests/durations.json;
a file not listed counts as the median), then the CPU-heavy files (HEAVY) alone, so that their
load never disturbs the timings the other tests check. Every file runs in exactly one process.

Each shard has its own temporary folder and its own ports (`TEST_SHARD=i/N`, read by
tests/support/processes.free_port). A `--junitxml` in PYTEST_ADDOPTS (as .ci/test-repeat passes
it) receives every shard's JUnit report merged. Output: a line per finished shard, then each
shard's short summary (and, for a shard that failed, its whole log). Exit status: 0 when every
shard passed (or had no test selected), else the first failing shard's pytest status. `--store-durations` rewrites
tests/durations.json from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
DURATIONS = TESTS / "durations.json"
HEAVY = (
    "tests/test_bench.py",
    "tests/test_memory.py",
    "tests/test_package.py",
    "tests/test_sdk_suite.py",
)  # they load the CPU: alone, last
DEFAULT_SHARDS = 3
NO_TESTS = 5  # pytest's status when a shard's files have no test left to run (-m, -k)


def test_files() -> list[str]:
    return sorted(str(path.relative_to(ROOT)) for path in TESTS.glob("test_*.py"))


def balanced(files: list[str], durations: dict[str, float], count: int) -> list[list[str]]:
    """`files` in `count` groups of about equal total duration (longest first, each to the lightest group)."""
    default = statistics.median(durations.values()) if durations else 1.0
    groups: list[list[str]] = [[] for _ in range(count)]
    totals = [0.0] * count
    for file in sorted(files, key=lambda name: -durations.get(name, default)):
        lightest = totals.index(min(totals))
        groups[lightest].append(file)
        totals[lightest] += durations.get(file, default)
    return [group for group in groups if group]


def junit_target(addopts: str) -> tuple[str | None, str]:
    """The --junitxml path in PYTEST_ADDOPTS (if any), and the options without it."""
    target, rest = None, []
    words = iter(shlex.split(addopts))
    for word in words:
        if word.startswith(("--junitxml=", "--junit-xml=")):
            target = word.split("=", 1)[1]
        elif word in ("--junitxml", "--junit-xml"):
            target = next(words, None)
        else:
            rest.append(word)
    return target, shlex.join(rest)


class Shard:
    """One pytest process over some files, its output in a log file."""

    def __init__(self, name: str, files: list[str], index: int, count: int, work: Path, args: list[str], addopts: str) -> None:
        self.name, self.files = name, files
        self.log, self.junit = work / f"{name}.log", work / f"{name}.xml"
        command = [sys.executable, "-m", "pytest", f"--basetemp={work / name}", f"--junitxml={self.junit}", *args, *files]
        env = {**os.environ, "TEST_SHARD": f"{index}/{count}", "PYTEST_ADDOPTS": addopts}
        with self.log.open("w") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.code: int | None = None

    def wait(self) -> int:
        self.code = self.process.wait()
        lines = self.log.read_text(errors="replace").splitlines()
        print(f"{self.name} ({len(self.files)} files): {lines[-1].strip('= ') if lines else 'no output'}", flush=True)
        return self.code

    def report(self) -> str:
        text = self.log.read_text(errors="replace")
        if self.code not in (0, NO_TESTS, None):
            return text
        start = text.find("short test summary info")
        return text[text.rfind("\n", 0, start) + 1 :] if start >= 0 else ""


def merged_junit(shards: list[Shard], target: Path) -> None:
    root = ET.Element("testsuites")
    for shard in shards:
        if shard.junit.exists():
            parsed = ET.parse(shard.junit).getroot()
            root.extend(parsed.iter("testsuite") if parsed.tag == "testsuites" else [parsed])
    target.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(target, encoding="utf-8", xml_declaration=True)


def file_durations(shards: list[Shard]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for shard in shards:
        if shard.junit.exists():
            for case in ET.parse(shard.junit).getroot().iter("testcase"):
                module = ".".join((case.get("classname") or "").split(".")[:2])
                name = module.replace(".", "/") + ".py"
                totals[name] = totals.get(name, 0.0) + float(case.get("time") or 0)
    return {name: round(seconds, 1) for name, seconds in sorted(totals.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS, help="pytest processes at once (default %(default)s)")
    parser.add_argument("--store-durations", action="store_true", help=f"rewrite {DURATIONS.relative_to(ROOT)} from this run")
    options, pytest_args = parser.parse_known_args()
    if options.shards < 1:
        parser.error("--shards must be at least 1")
    target, addopts = junit_target(os.environ.get("PYTEST_ADDOPTS", ""))
    durations = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    work = Path(tempfile.mkdtemp(prefix="pytest-shards-"))
    files = test_files()
    light = balanced([file for file in files if file not in HEAVY], durations, options.shards)
    print(f"{len(files)} test files: {len(light)} shards at once, then {len(HEAVY)} CPU-heavy files alone; logs in {work}", flush=True)
    started = time.monotonic()
    shards = [Shard(f"shard-{i + 1}", group, i, len(light), work, pytest_args, addopts) for i, group in enumerate(light)]
    try:
        codes = [shard.wait() for shard in shards]
        shards.append(Shard("heavy", [file for file in HEAVY if file in files], 0, 1, work, pytest_args, addopts))
        codes.append(shards[-1].wait())
    except KeyboardInterrupt:  # Ctrl-C: each pytest stops as it would alone (its fixtures stop their processes)
        for shard in shards:
            shard.process.send_signal(signal.SIGINT)
            shard.process.wait()
        raise
    for shard in shards:
        report = shard.report()
        if report:
            print(f"\n----- {shard.name}: {' '.join(Path(file).stem for file in shard.files)}\n{report}", end="")
    if target:
        merged_junit(shards, Path(target))
    if options.store_durations:
        DURATIONS.write_text(json.dumps(file_durations(shards), indent=1) + "\n")
    failed = [code for code in codes if code not in (0, NO_TESTS)]
    print(f"\nall shards: {'passed' if not failed else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return failed[0] if failed else 0


if __name__ == "__main__":
    sys.exit(main())
