"""`python -m benchmarks.bench --quick`: the benchmark runs end to end and writes its JSON.

Only the structure is checked. Timings are judged from the benchmark's own numbers
(`make bench`), never asserted here: they depend on the machine and its neighbours.
"""

from __future__ import annotations

import json
import subprocess
import sys
from numbers import Number
from pathlib import Path

import pytest

from benchmarks.bench import DEFAULT_CONFIGS

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

NUMERIC = ("window_s", "requests", "events", "cpu_s", "cpu_pct", "req_per_s", "cpu_ms_per_req", "cpu_us_per_event")


def _is_number(value: object) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool)


@pytest.mark.timeout(300)
def test_quick_bench_writes_every_configuration_and_the_capacity_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--duration", "2", "--warmup", "0.5", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=270,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "ratio" in completed.stdout.lower()  # the header says what to read
    report = json.loads(out.read_text(encoding="utf-8"))

    machine = report["machine"]
    assert machine["cpu_count"] >= 1 and machine["python"] and machine["packages"]["locust"]
    assert report["profile"]["models"]["default"]["ttft_ms"] > 0
    assert report["settings"]["levels"] == [10] and report["settings"]["quick"] is True

    results = {(r["config"], r["level"]): r for r in report["results"]}
    assert set(results) == {(config, 10) for config in DEFAULT_CONFIGS}
    for (config, _level), result in results.items():
        assert result["status"] == "ok", result
        for key in NUMERIC:
            assert _is_number(result[key]), (config, key, result[key])
        assert result["requests"] > 0 and result["events"] > 0
        if config == "floor":  # the body not parsed: no first text
            assert result["ttft_err_ms"]["n"] == 0 and result["unmatched_ground_truth"] == 0
        else:
            for key in ("p50", "p99", "max"):
                assert _is_number(result["ttft_err_ms"][key]), (config, key)
        assert _is_number(result["emulator_lateness_ms"]["p99"])
        assert _is_number(result["cpu_per_req_vs_baseline"])
    assert results[("baseline", 10)]["cpu_per_req_vs_baseline"] == 1.0

    capacity = {(c["server"], c["streams"]): c for c in report["capacity"]}
    assert set(capacity) == {("reference", 100), ("emulator", 100)}  # the machine's floor beside the emulator
    for c in capacity.values():
        assert c["status"] == "ok", c
        assert c["connected"] == 100 and c["http_errors"] == 0
        for key in ("server_cpu_pct", "events_per_s", "responses_per_s", "client_cpu_pct"):
            assert _is_number(c[key]) and c[key] > 0, key
        assert c["lateness_ms"]["n"] > 0 and _is_number(c["lateness_ms"]["p99"])
        assert c["lateness_ms"]["p50"] >= 0  # never early
    # the same schedule: responses and events per response within 10 % of each other
    ref, emu = capacity[("reference", 100)], capacity[("emulator", 100)]
    assert abs(ref["responses_per_s"] - emu["responses_per_s"]) <= 0.1 * emu["responses_per_s"]
    per_ref, per_emu = ref["events_per_s"] / ref["responses_per_s"], emu["events_per_s"] / emu["responses_per_s"]
    assert abs(per_ref - per_emu) <= 0.1 * per_emu
    assert ref["cpu_vs_reference"] == 1.0 and _is_number(emu["cpu_vs_reference"])
    assert "reference" in completed.stdout and "steal%" in completed.stdout

    bursts = {(b["config"], b["level"]): b for b in report["bursts"]}
    assert set(bursts) == {("fast", 20), ("fast-user-stamps", 20)}  # kernel stamps and their control
    for b in bursts.values():
        assert b["status"] == "ok" and b["requests"] > 0 and b["errors"] == 0, b
        assert b["ttft_err_ms"]["n"] == b["requests"] and _is_number(b["ttft_err_ms"]["p99"])
    assert report["burst_profile"]["models"]["default"]["first_output_grid_ms"] > 0
    (streams,) = report["realistic"]
    # a 2 s window is shorter than a realistic stream (~4 s): the smoke run checks the run, not its figures
    assert streams["status"] == "ok" and streams["level"] == 20 and streams["exit_code"] == 0 and streams["errors"] == 0, streams
    assert "realistic streams" in completed.stdout
    (master,) = report["cluster"]  # a real master and 5 simulated workers, started and stopped from its web UI
    assert master["status"] == "ok" and master["workers"] == 5 and master["drained"] == 5 and not master["denied"], master
    assert master["sent"] > 0 and master["exact"] and master["merged"]["harness"] == master["sent"], master
    assert master["reports"] > 0 and master["report_bytes"]["mean"] > 0 and master["web_stats_ms"]["n"] > 0

    assert {t["status"] for t in report["targets"]} <= {"PASS", "MISS", "n/a"}
    names = [t["target"] for t in report["targets"]]
    assert len(names) == 8 and any(n.startswith("burst of 20:") for n in names) and any(n.startswith("realistic streams") for n in names)
    assert any(n.startswith("fast-conversation CPU/request") for n in names)  # the target with conversations on
    assert any(n.startswith("master: 5 workers") for n in names)


def _cap(server: str, streams: int, p99: float, cpu: float) -> dict[str, object]:
    return {
        "status": "ok",
        "server": server,
        "streams": streams,
        "server_cpu_pct": cpu,
        "server_core_steal_pct": 2.0,
        "lateness_ms": {"n": 10, "p50": 1.0, "p99": p99, "max": p99},
    }


def test_capacity_target_names_the_machines_floor_and_takes_the_first_run_at_1000_or_more() -> None:
    from benchmarks.bench import add_capacity_ratios, targets

    caps = [
        _cap("reference", 500, 2.0, 30.0),
        _cap("emulator", 500, 3.0, 45.0),
        _cap("reference", 1200, 9.0, 60.0),
        _cap("emulator", 1200, 12.0, 75.0),
    ]
    add_capacity_ratios(caps)
    assert [c["cpu_vs_reference"] for c in caps] == [1.0, 1.5, 1.0, 1.25]
    (target,) = [t for t in targets([], caps, [], []) if t["target"].startswith("emulator")]
    assert target["status"] == "MISS" and target["value"] == 12.0 and "1200 streams" in target["target"]
    assert target["floor"]["reference_p99_ms"] == 9.0 and "floor misses it too" in target["reason"]

    caps[2] = _cap("reference", 1200, 4.0, 60.0)  # the floor meets it: the miss is the emulator's own
    (target,) = [t for t in targets([], caps, [], []) if t["target"].startswith("emulator")]
    assert target["status"] == "MISS" and "reason" not in target

    caps[3] = {"status": "error", "reason": "x", "server": "emulator", "streams": 1200}
    (target,) = [t for t in targets([], caps, [], []) if t["target"].startswith("emulator")]
    assert target["status"] == "n/a" and target["reason"] == "no capacity run at 1000+ streams"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cluster-duration", "0"], "--cluster-duration > 0"),  # 0 once fell back to the default (a full run)
        (["--cluster-duration", "nan"], "--cluster-duration > 0"),
        (["--duration", "nan"], "--duration must be > 0"),
        (["--warmup", "inf"], "--warmup >= 0"),
        (["--realistic", "abc"], "--realistic: not a list of integers"),
        (["--configs", "fast,bogus"], "unknown ['bogus']"),
        (["--rounds", "0"], "--rounds must be >= 1"),
        (["--rounds", "abc"], "--rounds"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.bench import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(args)
    assert exit_info.value.code == 2 and says in capsys.readouterr().err
