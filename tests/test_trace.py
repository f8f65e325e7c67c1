"""Trace replay: a trace file's requests read in time order with clear errors, each worker's share
of them, the scenario's rules; then real replays against the emulator, whose ground truth tells
when each request reached it: alone, and on a master with two workers that have no copy."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness.datasets import DatasetError, load_entries
from harness.payload import build_body
from harness.scenario import ScenarioError, load_scenario, scenario_from_dict
from harness.trace import TraceArrivals, trace_of
from tests.support.cluster import Cluster
from tests.support.processes import write_lines, write_yaml
from tests.support.runs import recorded_run

SPEED = 2.0


def write_trace(path: Path, lines: int = 40, seed: int = 3) -> list[dict[str, Any]]:
    """A trace with irregular gaps (20 ms to 300 ms), half given by size and half by messages."""
    rng, at, items = random.Random(seed), 1_000_000, []
    for index in range(lines):
        at += rng.choice([20, 50, 100, 300])
        size = {"input_length": rng.randint(50, 400)} if index % 2 else {"messages": [{"role": "user", "content": f"hi {index}"}]}
        items.append({"timestamp": at, **size, "output_length": 8})
    write_lines(path, items)
    return items


def trace_scenario(path: Path, **load: Any) -> dict[str, Any]:
    return {
        "name": "replay",
        "models": ["claude-haiku-4-5"],
        "stream": 0.5,
        "load": {"arrival": "trace", "trace": {"path": str(path), "replay_speed": SPEED}, "max_in_flight": 20, **load},
    }


# --- the file ------------------------------------------------------------------------------------
def test_a_trace_is_read_in_time_order_from_its_first_request(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    lines = [
        {"timestamp": 5000, "input_length": 10, "output_length": 3, "model": "claude-x"},
        {"timestamp": 4000, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "hash_ids": [1, 2]},
        {"timestamp": 4500.5, "input_tokens": 7},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines), encoding="utf-8")
    entries = load_entries(path, "trace")
    assert [(entry.line, entry.at_s) for entry in entries] == [(2, 0.0), (3, 0.5005), (1, 1.0)]
    assert (entries[2].input_tokens, entries[2].max_tokens, entries[2].model, entries[2].messages) == (10, 3, "claude-x", ())
    assert entries[0].messages == ({"role": "user", "content": "hi"},) and entries[0].max_tokens == 4


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"input_length": 5}, "line 1: timestamp: the request's time in ms"),
        ({"timestamp": -1, "input_length": 5}, "timestamp: the request's time in ms, a number >= 0 (got -1)"),
        ({"timestamp": 1}, "messages: give the request's `messages` or its size"),
        ({"timestamp": 1, "input_length": 5, "messages": [{"role": "user", "content": "x"}]}, "one of them"),
        ({"timestamp": 1, "input_length": 0}, "input_length: a whole number >= 1 (got 0)"),
        ({"timestamp": 1, "input_length": 5, "output_length": "many"}, "output_length: a whole number >= 1"),
        ({"timestamp": 1, "input_length": 5, "model": ""}, "model: a model name"),
        ({"timestamp": 1, "input_length": 5, "when": 3}, "when: not a field of an entry"),
    ],
)
def test_a_bad_trace_line_names_the_file_the_line_and_the_field(tmp_path: Path, line: dict[str, Any], problem: str) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    with pytest.raises(DatasetError) as error:
        load_entries(path, "trace")
    assert str(path) in str(error.value) and problem in str(error.value)


def test_a_missing_trace_file_names_the_loads_field(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as error:
        load_scenario(write_yaml(tmp_path / "s.yaml", trace_scenario(tmp_path / "nope.jsonl")))
    assert "s.yaml: load.trace.path: " in str(error.value) and "nope.jsonl: cannot read the dataset" in str(error.value)


# --- shares --------------------------------------------------------------------------------------
def drain(share: TraceArrivals) -> list[int]:
    taken, last = [], -1.0
    while (nxt := share.next_after(last))[1] is not None:
        last = nxt[0]
        taken.append(nxt[1])
    return taken


def test_each_worker_takes_every_nth_request_and_a_new_split_goes_on_from_its_moment() -> None:
    times = [0.1 * index for index in range(10)]
    shares = [drain(TraceArrivals(times, index, 3, 0.0)) for index in range(3)]
    assert shares == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    later = [drain(TraceArrivals(times, index, 2, 0.45)) for index in range(2)]  # from request 5 on
    assert sorted(later[0] + later[1]) == [5, 6, 7, 8, 9] and later[1] == [5, 7, 9]


# --- the scenario --------------------------------------------------------------------------------
def test_the_trace_is_the_scenarios_one_prompt_and_sets_the_run_time(tmp_path: Path) -> None:
    items = write_trace(tmp_path / "day.jsonl")
    scenario = load_scenario(write_yaml(tmp_path / "s.yaml", trace_scenario(tmp_path / "day.jsonl")))
    assert [prompt.name for prompt in scenario.prompts] == ["day"] and len(scenario._datasets["day"]) == len(items)
    trace = trace_of(scenario)
    assert trace is not None and trace.span_s == pytest.approx((items[-1]["timestamp"] - items[0]["timestamp"]) / 1000 / SPEED)
    again = scenario_from_dict(scenario.model_dump(mode="json"))  # the workers' copy: no second trace prompt
    assert [prompt.name for prompt in again.prompts] == ["day"]
    from harness.sampler import Pick

    sized = build_body(Pick("m", scenario.prompts[0], False, 1), scenario)
    assert sized["max_tokens"] == 8 and len(sized["messages"][0]["content"]) == 4 * items[1]["input_length"]


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"load": {"arrival": "trace", "max_in_flight": 2}}, "load", "go together"),
        ({"load": {"arrival": "poisson", "rate": "1/s", "trace": {"path": "t.jsonl"}}}, "load", "go together"),
        ({"load": {"arrival": "trace", "trace": {"path": "t.jsonl"}, "rate": "2/s"}}, "load", "leave out `rate` and `stages`"),
        ({"load": {"arrival": "trace", "trace": {"path": "t.jsonl", "replay_speed": 0}}}, "load.trace.replay_speed", "> 0"),
        ({"prompts": [{"name": "p", "max_tokens": 5, "input_tokens": 5}]}, "prompts", "leave out `prompts` and `datasets`"),
        ({"sweep": {"users": [1, 2], "step_time": "5s"}}, "sweep", "a trace replay sets its own times"),
    ],
)
def test_a_bad_trace_replay_names_its_field(change: dict[str, Any], field: str, problem: str) -> None:
    data = {**trace_scenario(Path("t.jsonl")), **change}
    with pytest.raises(ScenarioError) as error:
        scenario_from_dict(data)
    assert f"{field}:" in str(error.value) and problem in str(error.value)


# --- real replays --------------------------------------------------------------------------------
def spacing_errors_ms(items: list[dict[str, Any]], records: list[dict[str, Any]], truth: list[dict[str, Any]]) -> list[float]:
    """For each request, how far from the trace's spacing (scaled) it reached the server: its
    arrival there less its due time, against the median of that over all (a constant offset,
    the time from the harness's send to the server's read, is no spacing error)."""
    received = {row["request_id"]: row["t_received_ns"] for row in truth}
    due_ms = {line: (item["timestamp"] - items[0]["timestamp"]) / SPEED for line, item in enumerate(items, 1)}
    offsets = [received[record["request_id"]] / 1e6 - due_ms[record["entry"]] for record in records]
    middle = statistics.median(offsets)
    return [abs(offset - middle) for offset in offsets]


@pytest.mark.slow
def test_a_replayed_trace_keeps_its_spacing(tmp_path: Path) -> None:
    items = write_trace(tmp_path / "day.jsonl")
    _, summary, records, truth = recorded_run(tmp_path, trace_scenario(tmp_path / "day.jsonl"), users=None, run_time=None)
    assert sorted(record["entry"] for record in records) == list(range(1, len(items) + 1))  # each once, by itself it ended
    errors = spacing_errors_ms(items, records, truth)
    assert statistics.median(errors) < 2 and max(errors) < 50, sorted(errors)[-5:]
    arrivals = summary["arrivals"]
    assert (arrivals["arrival"], arrivals["scheduled"], arrivals["sent"], arrivals["dropped"]) == ("trace", len(items), len(items), 0)
    assert arrivals["unscheduled"] == 0


@pytest.mark.slow
def test_a_run_shorter_than_its_trace_says_how_many_requests_it_never_scheduled(tmp_path: Path) -> None:
    items = write_trace(tmp_path / "day.jsonl", lines=80)  # about 5 s at replay speed 2
    result, summary, records, _ = recorded_run(tmp_path, trace_scenario(tmp_path / "day.jsonl"), users=None, run_time="2s")
    arrivals = summary["arrivals"]
    assert 0 < arrivals["scheduled"] < len(items) and arrivals["unscheduled"] == len(items) - arrivals["scheduled"]
    assert arrivals["scheduled"] == arrivals["sent"] + arrivals["dropped"] + arrivals["refused"] and len(records) == arrivals["sent"]
    assert f"{arrivals['unscheduled']} of the trace's requests not scheduled: the run ended first" in result.stdout


@pytest.mark.slow
def test_a_trace_replays_across_workers_each_request_once_on_time(tmp_path: Path) -> None:
    items = write_trace(tmp_path / "day.jsonl")
    with Cluster(tmp_path, workers=2, run_time=None, users=None, scenario=trace_scenario(tmp_path / "day.jsonl")) as cluster:
        assert not list(cluster.worker_dir.rglob("*.jsonl"))
        records, truth, summary = cluster.finished()
    assert sorted(record["entry"] for record in records) == list(range(1, len(items) + 1))
    assert len({record["worker"] for record in records}) == 2
    errors = spacing_errors_ms(items, records, truth)
    assert statistics.median(errors) < 5 and max(errors) < 100, sorted(errors)[-5:]
    assert summary["arrivals"]["scheduled"] == summary["arrivals"]["sent"] == len(items)
