"""Locust's own outputs of a run hold every request exactly once (harness/locust_outputs.py).

Real processes against the real emulator: `locust --headless` alone, a headless master with
two workers, and Locust's web UI (alone and as a master). The emulator is slow (TTFT 300 ms,
20 tokens/s: a request takes up to 3.3 s) and the users run a closed loop without think time,
so every user has a request in flight when the run stops; `--stop-timeout` lets them all
finish. A third of the requests go to a model whose streams fail mid-way, so failures end
during that drain too. Locust's final tables must then equal the emulator's log exactly, row
by row: requests and failures per (type, name), and one TTFT row entry per streamed request
that succeeded; in `--csv`'s `_stats.csv`, the last rows of `_stats_history.csv`,
`_failures.csv` and `_exceptions.csv`, `--json`, `--json-file`, `--html`, and the web UI's
CSV downloads and report.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.emulator.process import EmulatorProcess
from harness.records import RECORDS_FILE
from tests.support.processes import LOCUST, ROOT, by_request_id, check_in_child, cluster_env, free_port, read_jsonl, run_locust, write_yaml

pytestmark = pytest.mark.slow

PROFILE = {
    "seed": 5,
    "models": {
        "default": {"ttft_ms": 300, "output_tps": 20, "jitter": 0, "output_tokens": {"mean": 60, "sd": 0}},
        "m-fail": {"faults": {"stream_error": 1.0}},  # streams fail after some text; blocking calls get a late 529
    },
}
SCENARIO = {
    "name": "outputs",
    "models": [{"model": "m-ok", "weight": 2}, {"model": "m-fail", "weight": 1}],
    "prompts": [
        {"name": "short", "weight": 3, "messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 64},
        {"name": "long", "weight": 1, "input_tokens": 2000, "max_tokens": 32},
    ],
    "stream": 0.7,
}
USERS = 8
STOP_TIMEOUT = "15"  # far longer than any request (3.3 s at most): the drain always ends by itself

Table = dict[tuple[str, str], tuple[int, int]]  # (type, name) -> (requests, failures)


# --- what the emulator served, and the harness's records --------------------------------------
def expected_table(truth: list[dict[str, Any]], records: list[dict[str, Any]]) -> Table:
    """Locust's table as it must be: from the emulator's log (the prompt from the record)."""
    by_id = by_request_id(records)
    rows: Counter[tuple[str, str, str]] = Counter()
    for served in truth:
        record = by_id[served["request_id"]]
        name = f"{record['model']} {record['prompt']}"
        method = "STREAM" if served["stream"] else "BLOCK"
        failed = served["outcome"] != "ok"
        rows[(method, name, "requests")] += 1
        rows[(method, name, "failures")] += failed
        if served["stream"] and not failed and served["t_first_text_ns"] is not None:
            rows[("TTFT", name, "requests")] += 1  # a TTFT row entry per streamed request that succeeded
            rows[("TTFT", name, "failures")] += 0
    return {(m, n): (rows[(m, n, "requests")], rows[(m, n, "failures")]) for m, n, _ in rows}


def check_run(truth: list[dict[str, Any]], records: list[dict[str, Any]], stopped_at: float) -> Table:
    """The harness's records are the emulator's requests, none cut off, some of them finishing
    in the drain; returns the table Locust's outputs must hold."""
    assert records and sorted(r["request_id"] for r in records) == sorted(t["request_id"] for t in truth)
    assert not [r for r in records if r["outcome"] == "cancelled"]
    for record, served in zip(sorted(records, key=lambda r: r["request_id"]), sorted(truth, key=lambda t: t["request_id"])):
        assert record["mode"] == ("stream" if served["stream"] else "blocking")
        assert (record["outcome"] == "ok") == (served["outcome"] == "ok"), (record, served)
    # the drain matters: requests that started before the stop ended after it
    in_drain = [r for r in records if r["wall_start_ns"] / 1e9 < stopped_at < r["wall_start_ns"] / 1e9 + r["latency_ms"] / 1000]
    assert in_drain, "no request was in flight at the stop: the scenario does not exercise the drain"
    table = expected_table(truth, records)
    assert any(f for (m, _), (_, f) in table.items() if m != "TTFT"), "the scenario must have failures"
    return table


def totals(table: Table) -> tuple[int, int]:
    requests = sum(n for (m, _), (n, _) in table.items() if m != "TTFT")
    return requests, sum(f for (m, _), (_, f) in table.items() if m != "TTFT")


def failures_by_row(table: Table) -> dict[tuple[str, str], int]:
    return {key: f for key, (_, f) in table.items() if f}


# --- Locust's outputs, read back -----------------------------------------------------------
def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def stats_csv_table(text: str) -> tuple[Table, tuple[int, int]]:
    """`_stats.csv` (or the /stats/requests/csv download): the rows, and the Aggregated row."""
    rows = csv_rows(text)
    aggregated = [r for r in rows if r["Name"] == "Aggregated" and r["Type"] == ""]
    assert len(aggregated) == 1 and rows[-1] is aggregated[0]
    table = {(r["Type"], r["Name"]): (int(r["Request Count"]), int(r["Failure Count"])) for r in rows[:-1]}
    assert len(table) == len(rows) - 1, "one row per (type, name)"
    return table, (int(aggregated[0]["Request Count"]), int(aggregated[0]["Failure Count"]))


def history_last_rows(text: str) -> tuple[Table, tuple[int, int]]:
    """`_stats_history.csv` (--csv-full-history): the last row of each entry, and of Aggregated."""
    last: dict[tuple[str, str], tuple[int, int]] = {}
    for row in csv_rows(text):
        last[(row["Type"], row["Name"])] = (int(row["Total Request Count"]), int(row["Total Failure Count"]))
    aggregated = last.pop(("", "Aggregated"))
    return last, aggregated


def failures_csv(text: str) -> dict[tuple[str, str], int]:
    found: Counter[tuple[str, str]] = Counter()
    for row in csv_rows(text):
        found[(row["Method"], row["Name"])] += int(row["Occurrences"])
    return dict(found)


def json_table(entries: list[dict[str, Any]]) -> Table:
    table = {(e["method"], e["name"]): (e["num_requests"], e["num_failures"]) for e in entries}
    assert len(table) == len(entries)
    return table


def stdout_json(stdout: str) -> list[dict[str, Any]]:
    """`--json` prints a JSON array on stdout (the harness's summary may follow it)."""
    start = stdout.index("[\n")
    value, _ = json.JSONDecoder().raw_decode(stdout[start:])
    return value


def html_tables(text: str) -> tuple[Table, tuple[int, int], dict[tuple[str, str], int]]:
    """Locust's HTML report: its request table, the Aggregated row and its failures table."""
    marker = "window.templateArgs = "
    args, _ = json.JSONDecoder().raw_decode(text[text.index(marker) + len(marker) :])
    rows = args["requests_statistics"]
    aggregated = [r for r in rows if r["name"] == "Aggregated"]
    assert len(aggregated) == 1
    table = json_table([r for r in rows if r["name"] != "Aggregated"])
    failures: Counter[tuple[str, str]] = Counter()
    for row in args["failures_statistics"]:
        failures[(row["method"], row["name"])] += row["occurrences"]
    return table, (aggregated[0]["num_requests"], aggregated[0]["num_failures"]), dict(failures)


def check_csv_files(prefix: Path, table: Table) -> None:
    """The `--csv PREFIX --csv-full-history` files, once the process has exited."""
    stats, aggregated = stats_csv_table(Path(f"{prefix}_stats.csv").read_text())
    assert (stats, aggregated) == (table, totals(table))
    history, history_total = history_last_rows(Path(f"{prefix}_stats_history.csv").read_text())
    assert (history, history_total) == (table, totals(table))
    assert failures_csv(Path(f"{prefix}_failures.csv").read_text()) == failures_by_row(table)
    assert csv_rows(Path(f"{prefix}_exceptions.csv").read_text()) == []  # the users raise nothing


def check_html(text: str, table: Table) -> None:
    html, aggregated, failures = html_tables(text)
    assert (html, aggregated, failures) == (table, totals(table), failures_by_row(table))


# --- processes ---------------------------------------------------------------------------------
def start_emulator(tmp_path: Path) -> EmulatorProcess:
    emulator = EmulatorProcess(profile=write_yaml(tmp_path / "profile.yaml", PROFILE), ground_truth=tmp_path / "truth.jsonl")
    emulator.start()
    return emulator


def served(tmp_path: Path) -> list[dict[str, Any]]:
    """The emulator's log of Messages API requests (read once the emulator has stopped)."""
    return [row for row in read_jsonl(tmp_path / "truth.jsonl") if row["path"] == "/v1/messages"]


def all_records(output_dir: Path) -> list[dict[str, Any]]:
    return [r for path in sorted(output_dir.rglob(RECORDS_FILE)) for r in read_jsonl(path)]


def run_time_limit_reached_at(stderr: str) -> float:
    """When Locust's --run-time stopped the run (its log line, local time, milliseconds)."""
    match = re.search(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] .*--run-time limit reached", stderr, re.M)
    assert match, stderr[-3000:]
    return time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000


def start_workers(tmp_path: Path, master_port: int, count: int = 2) -> list[subprocess.Popen[bytes]]:
    """Workers in a folder with only the locustfile: the scenario comes from the master."""
    folder = tmp_path / "worker-host"
    folder.mkdir()
    shutil.copy(ROOT / "locustfile.py", folder)
    return [
        subprocess.Popen(
            [LOCUST, "-f", "locustfile.py", "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"worker-{i}.log").open("wb"),
            env=cluster_env(),
        )
        for i in range(count)
    ]


def end_processes(*processes: subprocess.Popen[Any], grace_s: float = 30) -> None:
    """Wait for processes that are ending anyway; kill what is left after the grace time."""
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --- headless ----------------------------------------------------------------------------------
def every_output(prefix: Path, html: Path, json_file: Path) -> tuple[str, ...]:
    """Locust's own files, all of them: CSV with history, HTML, JSON on stdout and in a file."""
    return (
        "--stop-timeout",
        STOP_TIMEOUT,
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--html",
        str(html),
        "--json",
        "--json-file",
        str(json_file),
    )


def test_a_headless_run_writes_every_request_to_locusts_files(tmp_path: Path) -> None:
    scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
    prefix, json_file, html = tmp_path / "out" / "locust", tmp_path / "out" / "locust-json", tmp_path / "out" / "report.html"
    emulator = start_emulator(tmp_path)
    try:
        result = run_locust(
            tmp_path,
            scenario,
            "--host",
            emulator.url or "",
            *every_output(prefix, html, json_file),
            users=USERS,
            run_time="4s",
        )
    finally:
        emulator.stop()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode in (0, 1), result.stderr[-3000:]  # 1: Locust's exit code when requests failed
    table = check_run(served(tmp_path), result.records(), run_time_limit_reached_at(result.stderr))

    check_csv_files(prefix, table)
    assert json_table(stdout_json(result.stdout)) == table
    assert json_table(json.loads(Path(f"{json_file}.json").read_text())) == table  # not [] after --json
    check_html(html.read_text(encoding="utf-8"), table)


def test_a_headless_master_with_two_workers_writes_every_request_to_locusts_files(tmp_path: Path) -> None:
    scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
    prefix, json_file, html = tmp_path / "out" / "locust", tmp_path / "out" / "locust-json", tmp_path / "out" / "report.html"
    port = free_port()
    emulator = start_emulator(tmp_path)
    master = workers = None
    try:
        master = subprocess.Popen(
            [
                LOCUST,
                "-f",
                "locustfile.py",
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--headless",
                "--only-summary",
                "--expect-workers",
                "2",
                "-u",
                str(USERS),
                "-r",
                str(USERS),
                "-t",
                "5s",
                "--host",
                emulator.url or "",
                "--scenario",
                str(scenario),
                "--output-dir",
                str(tmp_path / "runs"),
                *every_output(prefix, html, json_file),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cluster_env(),
        )
        workers = start_workers(tmp_path, port)
        stdout, stderr = master.communicate(timeout=150)
        end_processes(*workers)
    finally:
        for process in [master, *(workers or [])]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        emulator.stop()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert master.returncode in (0, 1), stderr[-3000:]
    records = all_records(tmp_path / "runs")
    assert {r["worker"] for r in records} == {"worker-0", "worker-1"}
    table = check_run(served(tmp_path), records, run_time_limit_reached_at(stderr))

    check_csv_files(prefix, table)
    assert json_table(stdout_json(stdout)) == table
    assert json_table(json.loads(Path(f"{json_file}.json").read_text())) == table
    check_html(html.read_text(encoding="utf-8"), table)


# --- the web UI ----------------------------------------------------------------------------------
class WebUI:
    """`locust` with its web UI on loopback (alone, or a master with two workers)."""

    def __init__(self, tmp_path: Path, emulator_url: str, distributed: bool) -> None:
        self.tmp = tmp_path
        self.url = f"http://127.0.0.1:{free_port()}"
        self.prefix = tmp_path / "out" / "locust"
        scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
        command = [
            LOCUST,
            "-f",
            "locustfile.py",
            "--web-host",
            "127.0.0.1",
            "--web-port",
            self.url.rsplit(":", 1)[1],
            "--host",
            emulator_url,
            "--scenario",
            str(scenario),
            "--output-dir",
            str(tmp_path / "runs"),
            "--stop-timeout",
            STOP_TIMEOUT,
            "--csv",
            str(self.prefix),
            "--csv-full-history",
            "--points",
            "off",
        ]
        port = free_port()
        if distributed:
            command += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port)]
        self.log = tmp_path / "locust.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=cluster_env())
        self.workers = start_workers(tmp_path, port) if distributed else []

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.read().decode("utf-8")

    def post(self, path: str, form: dict[str, Any] | None = None) -> dict[str, Any]:
        body = urllib.parse.urlencode(form or {}).encode()
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data=body), timeout=150) as response:
            return json.loads(response.read())

    def wait_for(self, what: str, condition: Any, timeout_s: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.process.poll() is None, f"locust exited:\n{self.output()[-3000:]}"
            try:
                stats = json.loads(self.get("/stats/requests"))
                if condition(stats):
                    return stats
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s:\n{self.output()[-3000:]}"
            time.sleep(0.2)

    def quit(self) -> None:
        """SIGTERM: Locust quits (its CSV files are closed); the workers follow."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        end_processes(self.process, *self.workers)


@pytest.mark.parametrize("distributed", [False, True], ids=["local", "master-2-workers"])
def test_the_web_uis_downloads_hold_every_request_once_the_test_is_stopped(tmp_path: Path, distributed: bool) -> None:
    emulator = start_emulator(tmp_path)
    ui = WebUI(tmp_path, emulator.url or "", distributed)
    try:
        ui.wait_for("web UI with its workers", lambda s: len(s.get("workers", [])) == 2 if distributed else True)
        assert ui.post("/swarm", {"user_count": USERS, "spawn_rate": USERS})["success"]
        # a few rounds of requests (slow ones: each user has one in flight from now on)
        ui.wait_for("requests", lambda s: s["state"] == "running" and s["stats"][-1]["num_requests"] >= 2 * USERS)
        stopped_at = time.time()
        assert ui.post("/stop")["success"]  # returns once the test is stopped: the workers drained
        downloads = {
            "requests": ui.get("/stats/requests/csv"),
            "failures": ui.get("/stats/failures/csv"),
            "history": ui.get("/stats/requests_full_history/csv"),
            "report": ui.get("/stats/report"),
        }
    finally:
        ui.quit()
        emulator.stop()
    assert "Traceback" not in ui.output(), ui.output()[-3000:]
    records = all_records(tmp_path / "runs")
    if distributed:
        assert {r["worker"] for r in records} == {"worker-0", "worker-1"}
    table = check_run(served(tmp_path), records, stopped_at)

    assert stats_csv_table(downloads["requests"]) == (table, totals(table))
    assert failures_csv(downloads["failures"]) == failures_by_row(table)
    assert history_last_rows(downloads["history"]) == (table, totals(table))  # served from the file on disk
    check_html(downloads["report"], table)
    check_csv_files(ui.prefix, table)  # and the files, once Locust has quit


# --- the Locust internals harness/locust_outputs.py relies on -------------------------------------
def check_locust_internals(folder: str) -> None:
    """In a process of its own (importing Locust monkey-patches the interpreter with gevent):
    the CSV writer is found (gc), the final rewrite keeps Locust's file layout on top of its own
    writer's ticks, and --json's serialisation no longer empties the stats."""
    import argparse

    import gevent
    from locust.env import Environment
    from locust.event import Events
    from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter

    from harness import locust_outputs

    prefix = Path(folder) / "unit"
    options = argparse.Namespace(worker=False, csv_prefix=str(prefix))
    environment = Environment(events=Events(), parsed_options=options)
    environment.create_local_runner()
    writer = StatsCSVFileWriter(environment, PERCENTILES_TO_REPORT, str(prefix), full_history=True)
    other = StatsCSVFileWriter(Environment(events=Events()), PERCENTILES_TO_REPORT, str(Path(folder) / "other"))
    assert locust_outputs.find_csv_writer(environment) is writer  # by environment, not just by class

    stats = environment.stats
    stats.log_request("STREAM", "a", 100, 0)
    ticks = gevent.spawn(writer.stats_writer)  # Locust's own periodic writer: header and a first tick
    gevent.sleep(0.05)
    for _ in range(2):
        stats.log_request("STREAM", "a", 200, 0)
    stats.log_request("BLOCK", "b", 300, 0)
    stats.log_error("BLOCK", "b", RuntimeError("boom"))
    stats.get("a", "TTFT").log(50, 0)
    locust_outputs.register(environment)
    environment.events.test_stop.fire(environment=environment)

    expected = {("STREAM", "a"): (3, 0), ("BLOCK", "b"): (1, 1), ("TTFT", "a"): (1, 0)}
    assert stats_csv_table(Path(f"{prefix}_stats.csv").read_text()) == (expected, (4, 1))
    assert history_last_rows(Path(f"{prefix}_stats_history.csv").read_text()) == (expected, (4, 1))
    assert failures_csv(Path(f"{prefix}_failures.csv").read_text()) == {("BLOCK", "b"): 1}

    # --json and --json-file one after the other, then the process's quit: nothing is lost
    first, second = stats.serialize_stats(), stats.serialize_stats()
    assert json_table(first) == json_table(second) == expected
    environment.events.quit.fire(exit_code=0)
    assert stats_csv_table(Path(f"{prefix}_stats.csv").read_text()) == (expected, (4, 1))
    assert history_last_rows(Path(f"{prefix}_stats_history.csv").read_text()) == (expected, (4, 1))
    ticks.kill()
    writer.close_files()
    other.close_files()

    # a worker is left alone: its serialize_stats is its report, a delta that must reset
    worker = Environment(events=Events(), parsed_options=argparse.Namespace(worker=True, csv_prefix=None))
    locust_outputs.register(worker)
    assert "serialize_stats" not in vars(worker.stats)


def test_the_locust_internals_the_fix_relies_on(tmp_path: Path) -> None:
    check_in_child("tests.test_locust_outputs", "check_locust_internals", str(tmp_path))
