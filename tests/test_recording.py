"""Points: the line protocol, the writer's buffering, and whole runs against a real metrics
server (Debian's victoria-metrics, which accepts influxdb-client's /api/v2/write)."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from harness.compressed import read_lines
from harness.points import line, request_line
from harness.recording import POINTS_FILE, FileSink, InfluxConfig, PointWriter
from harness.records import RECORDS_FILE
from harness.timing import TimingRecord
from tests.support.processes import INFLUX_ENV, Background, FaultProxy, LocustResult, VictoriaMetrics, free_port, read_jsonl, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, run_against_emulator


# --- line protocol -------------------------------------------------------------------------
def test_line_protocol_escapes_and_types() -> None:
    text = line("m", {"model": "a b,c=d", "empty": ""}, {"x": 1.5, "n": 3, "ok": True, "request_id": 'r"1', "none": None}, 7)
    assert text == r'm,model=a\ b\,c\=d x=1.5,n=3i,ok=true,request_id="r\"1" 7'
    # an integer field's float, a float field's integer, a string field's number; tags alike of each type
    fields = {"input_tokens": 5.0, "latency_ms": 10, "request_id": 1.5, "error_type": 2, "retried": False}
    text = line("m", {"turn": 1, "step": True, "variant": 1.0}, fields, 7)
    assert text == 'm,step=True,turn=1,variant=1.0 input_tokens=5i,latency_ms=10i,request_id="1.5",error_type="2",retried=false 7'


def test_request_point_fields_and_no_ttft_for_blocking() -> None:
    record = TimingRecord(model="m", prompt="p", mode="blocking", wall_start_ns=123, latency_ms=10.0, outcome="ok")
    record.input_tokens, record.output_tokens, record.http_status = 5, 7, 200
    text = request_line(record, {"run_id": "r", "worker": "local"})
    assert text.startswith("claude_request,mode=blocking,model=m,outcome=ok,prompt=p,run_id=r,worker=local ")
    assert "ttft_ms" not in text and "latency_ms=10.0" in text and "output_tokens=7i" in text
    assert text.endswith(" 123")


def test_influx_config_from_environment_hides_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFLUXDB_V2_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("INFLUXDB_V2_TOKEN", "s3cret-token")
    config = InfluxConfig.resolve(org="o")
    assert config is not None and config.org == "o" and config.bucket == "loadtest"
    assert "s3cret" not in repr(config)
    monkeypatch.delenv("INFLUXDB_V2_URL")
    assert InfluxConfig.resolve() is None


# --- the writer ----------------------------------------------------------------------------
class FlakySink:
    """A sink that fails its first `failures` writes: drives the writer's retry logic."""

    description = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.lines: list[str] = []

    def write(self, lines: list[str]) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("down")
        self.lines.extend(lines)

    def close(self) -> None:
        pass


def test_writer_keeps_points_while_the_sink_fails_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    sink = FlakySink(failures=3)
    writer = PointWriter(sink, max_buffer=100, flush_interval_s=0.01)
    for i in range(10):
        writer.add(f"p{i}")
    for _ in range(3):
        assert not writer.flush_once()
    assert writer.buffered == 10 and writer.failed_writes == 3
    assert writer.flush_once()
    assert sink.lines == [f"p{i}" for i in range(10)]
    warnings = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(warnings) == 1
    assert any("writable again" in r.getMessage() for r in caplog.records)


def test_a_full_buffer_drops_and_counts_and_close_counts_the_rest() -> None:
    writer = PointWriter(FlakySink(failures=10**6), max_buffer=5)
    for i in range(8):
        writer.add(f"p{i}")
    assert (writer.buffered, writer.dropped) == (5, 3)
    writer.close(timeout_s=0.2)
    assert (writer.buffered, writer.dropped, writer.written) == (0, 8, 0)


def test_file_sink_gets_every_point_through_the_greenlet(tmp_path: Path) -> None:
    writer = PointWriter(FileSink(tmp_path / "points.lp.gz"), flush_interval_s=0.01)
    writer.start()
    for i in range(2500):
        writer.add(f"m x={i} {i}")
    writer.close()
    assert [line.decode() for line in read_lines(tmp_path / "points.lp.gz")] == [f"m x={i} {i}" for i in range(2500)]
    assert (writer.written, writer.dropped) == (2500, 0)


def test_a_requests_point_is_rendered_when_written_and_one_that_cannot_be_is_counted_dropped(caplog: pytest.LogCaptureFixture) -> None:
    sink = FlakySink(failures=1)
    labels = {"run_id": "r", "scenario": "s", "worker": "local"}
    writer = PointWriter(sink, render=lambda record: request_line(record, labels))
    records = [TimingRecord("m", "p", "stream", outcome="ok", ttft_ms=float(i), wall_start_ns=i) for i in range(3)]
    writer.add(records[0])
    writer.add("health x=1 5")
    writer.add(records[1])
    writer.add(object())  # not a record: its render fails
    writer.add(records[2])
    assert not writer.flush_once()  # the sink is down: the lines stay buffered
    assert (writer.buffered, writer.dropped) == (4, 1)
    assert writer.flush_once()
    expected = [request_line(records[0], labels), "health x=1 5", request_line(records[1], labels), request_line(records[2], labels)]
    assert sink.lines == expected and (writer.written, writer.dropped) == (4, 1)
    assert sum("could not be rendered" in r.getMessage() for r in caplog.records) == 1


# --- whole runs against a real metrics server ----------------------------------------------
def series_values(vm: VictoriaMetrics, field: str) -> dict[tuple[str, str, str, str], list[float]]:
    values: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for series in vm.export(f"claude_request_{field}"):
        labels = series["metric"]
        values[(labels["model"], labels["prompt"], labels["mode"], labels["outcome"])] += series["values"]
    return values


def record_values(records: list[dict], field: str) -> dict[tuple[str, str, str, str], list[float]]:
    values: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for r in records:
        value = r[field] if field != "ttft_ms" or r["first_content"] == "text" else None
        if value is not None:
            values[(r["model"], r["prompt"], r["mode"], r["outcome"])].append(value)
    return values


def request_points(vm: VictoriaMetrics) -> int:
    return sum(len(v) for v in series_values(vm, "latency_ms").values())


def run_writing_to(url: str, tmp_path: Path, scenario: Path, *args: str, **kwargs: Any) -> tuple[LocustResult, list[dict]]:
    """A headless run against the emulator whose points go to the InfluxDB API at `url`."""
    return run_against_emulator(
        tmp_path, scenario, FAST_PROFILE, "--stop-timeout", "10", *args, env={**INFLUX_ENV, "INFLUXDB_V2_URL": url}, **kwargs
    )


@pytest.fixture
def scenario(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "scenario.yaml", SCENARIO)


@pytest.mark.slow
def test_every_request_is_one_point_with_the_record_values(tmp_path: Path, scenario: Path) -> None:
    vm = VictoriaMetrics(tmp_path / "vm").start()
    try:
        result, truth = run_writing_to(vm.url, tmp_path, scenario, users=8, run_time="4s")
        assert result.returncode == 0, result.stderr[-3000:]
        records = result.records()
        assert len(records) == len(truth) > 0
        for field in ("latency_ms", "ttft_ms", "output_tokens", "input_tokens", "ttfb_ms", "http_status"):
            stored = {key: sorted(v) for key, v in series_values(vm, field).items()}
            expected = {key: sorted(v) for key, v in record_values(records, field).items()}
            assert stored.keys() == expected.keys(), field
            for key in expected:
                assert stored[key] == pytest.approx(expected[key], rel=1e-9), (field, key)
        assert request_points(vm) == len(records)
        health = vm.export("harness_health_cpu_percent")
        assert health and {s["metric"]["run_id"] for s in health} == {records[0]["run_id"]}
        assert f"points: {len(records) + 2 + sum(len(s['values']) for s in health)} written to InfluxDB" in result.stdout
    finally:
        vm.stop()
    assert "none dropped" in result.stdout


@pytest.mark.slow
def test_influxdb_unreachable_at_start_then_up_gets_everything_and_warns_once(tmp_path: Path, scenario: Path) -> None:
    vm = VictoriaMetrics(tmp_path / "vm", port=free_port())
    refused = threading.Event()
    starter = Background(lambda: vm.start() if refused.wait(60) else None)  # up once a write has failed
    starter.start()

    def watch(line: str) -> None:
        if "cannot write to InfluxDB" in line:
            refused.set()

    try:
        result, truth = run_writing_to(vm.url, tmp_path, scenario, users=6, run_time="6s", on_stderr_line=watch)
        starter.finish()
        assert result.returncode == 0, result.stderr[-3000:]
        records = result.records()
        assert request_points(vm) == len(records) == len(truth)
    finally:
        refused.set()
        vm.stop()
    assert result.stderr.count("cannot write to InfluxDB") == 1
    assert result.stderr.count("is writable again") == 1
    assert "Traceback" not in result.stderr


def wait_for_points(vm: VictoriaMetrics, timeout_s: float = 60) -> None:
    """Until the run has written its first request points (the outage must hit a running writer)."""
    deadline = time.monotonic() + timeout_s
    while request_points(vm) == 0:
        assert time.monotonic() < deadline, "no points arrived"
        time.sleep(0.2)


def distinct_request_points(vm: VictoriaMetrics) -> tuple[int, int]:
    """(points stored, distinct points): a batch the client resent after a timeout may be stored twice,
    which is legitimate; a point is identified by its series, timestamp and latency value."""
    samples = [
        (tuple(sorted(series["metric"].items())), stamp, value)
        for series in vm.export("claude_request_latency_ms")
        for stamp, value in zip(series["timestamps"], series["values"])
    ]
    return len(samples), len(set(samples))


def run_through_outage(
    tmp_path: Path, scenario: Path, mode: str, outage_s: float, *args: str
) -> tuple[LocustResult, list[dict], VictoriaMetrics]:
    """A run writing through a fault proxy that switches to `mode` for outage_s once points flow.
    The database stays up throughout and keeps everything it acknowledged."""
    vm = VictoriaMetrics(tmp_path / "vm").start()
    proxy = FaultProxy(vm.port)

    def outage() -> None:
        wait_for_points(vm)
        proxy.set(mode)
        time.sleep(outage_s)
        proxy.set("pass")

    fault = Background(outage)
    fault.start()
    try:
        result, truth = run_writing_to(proxy.url, tmp_path, scenario, *args, users=6, run_time="8s")
        fault.finish()
    finally:
        proxy.stop()
    return result, truth, vm


@pytest.mark.slow
def test_influxdb_refusing_connections_mid_run_loses_nothing(tmp_path: Path, scenario: Path) -> None:
    result, truth, vm = run_through_outage(tmp_path, scenario, "refuse", 2.5)
    try:
        records = result.records()
        assert request_points(vm) == len(records) == len(truth)  # refused writes are never stored: exact
    finally:
        vm.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("cannot write to InfluxDB") == 1
    assert result.stderr.count("is writable again") == 1
    assert "none dropped" in result.stdout


@pytest.mark.slow
def test_influxdb_stalling_mid_run_loses_nothing(tmp_path: Path, scenario: Path) -> None:
    # writes time out after 1 s and are retried; the stalled ones still reach the database afterwards
    result, truth, vm = run_through_outage(tmp_path, scenario, "stall", 3.0, "--influx-timeout", "1")
    try:
        records = result.records()
        stored, distinct = distinct_request_points(vm)
        assert distinct == len(records) == len(truth)
        assert stored >= distinct
    finally:
        vm.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    (warning,) = [line for line in result.stderr.splitlines() if "cannot write to InfluxDB" in line]
    assert "(ReadTimeoutError)" in warning
    assert "none dropped" in result.stdout


@pytest.mark.slow
def test_influxdb_never_reachable_the_run_goes_on_and_drops_are_reported(tmp_path: Path, scenario: Path) -> None:
    result, truth = run_writing_to(
        f"http://127.0.0.1:{free_port()}",
        tmp_path,
        scenario,
        "--influx-buffer",
        "20",
        "--points-flush-timeout",
        "1",
        users=6,
        run_time="3s",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = result.records()
    assert len(records) == len(truth) > 0
    assert result.stderr.count("cannot write to InfluxDB") == 1
    dropped_line = next(line for line in result.stdout.splitlines() if line.startswith("points: "))
    written, dropped = int(dropped_line.split()[1]), int(dropped_line.split(", ")[1].split()[0])
    assert written == 0 and dropped >= len(records)  # every request point (and health/markers) counted


@pytest.mark.slow
def test_without_influxdb_the_points_go_to_a_line_protocol_file(tmp_path: Path, scenario: Path) -> None:
    result, truth = run_against_emulator(tmp_path, scenario, FAST_PROFILE, "--stop-timeout", "10", users=4, run_time="2s")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.decode() for line in read_lines(result.run_dir / POINTS_FILE)]
    requests = [ln for ln in lines if ln.startswith("claude_request,")]
    assert len(requests) == len(result.records()) == len(truth)
    assert Counter(ln.split(",")[0] for ln in lines)["harness_run"] == 2
    ids = {r["request_id"] for r in read_jsonl(result.run_dir / RECORDS_FILE)}
    assert {ln.split('request_id="')[1].split('"')[0] for ln in requests} == ids
