"""Prompt datasets from files: each format read as specified, bad files refused with the file,
line and field, entries drawn at random (seeded) or in order and sent as written; then real runs
against the emulator, alone and on a master whose workers have no copy of the file."""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from harness.datasets import DatasetError, Entry, EntryOrder, Shipment, entries_digest, load_entries, received_datasets, shipment
from harness.load_options import with_overrides
from harness.payload import build_body
from harness.records import RECORDS_FILE, read_records
from harness.sampler import Sampler
from harness.scenario import Scenario, ScenarioError, load_scenario
from tests.support.cluster import Cluster
from tests.support.processes import write_lines, write_yaml
from tests.support.runs import FAST_PROFILE, run_against_emulator

CHATS = [
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 7, "system": "Be brief."},
    {
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "again " * 40},
        ],
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "metadata": {"source": "support"},
    },
]


def dataset_scenario(tmp_path: Path, dataset: dict[str, Any], **prompt: Any) -> Path:
    return write_yaml(
        tmp_path / "scenario.yaml",
        {"name": "ds", "models": ["claude-haiku-4-5"], "prompts": [{"name": "chats", "max_tokens": 16, "dataset": dataset, **prompt}]},
    )


# --- the formats ---------------------------------------------------------------------------------
def test_a_messages_file_gives_each_lines_conversation_system_max_tokens_and_tools(tmp_path: Path) -> None:
    entries = load_entries(write_lines(tmp_path / "chats.jsonl", CHATS), "messages")
    assert [entry.line for entry in entries] == [1, 2, 3]
    assert entries[0] == Entry(1, ({"role": "user", "content": "hi"},))
    assert (entries[1].system, entries[1].max_tokens) == ("Be brief.", 7)
    assert len(entries[2].messages) == 3 and entries[2].tools == ({"name": "lookup", "input_schema": {"type": "object"}},)


def test_sharegpt_conversations_end_at_their_last_human_turn(tmp_path: Path) -> None:
    conversations = [
        {
            "conversations": [
                {"from": "human", "value": "a"},
                {"from": "gpt", "value": "b"},
                {"from": "human", "value": "c"},
                {"from": "gpt", "value": "d"},
            ]
        },
        {"conversations": [{"from": "gpt", "value": "starts with the model"}]},  # skipped
        {"id": "x", "conversations": [{"from": "human", "value": "only"}]},
    ]
    array = tmp_path / "share.json"
    array.write_text(json.dumps(conversations), encoding="utf-8")
    for path in (array, write_lines(tmp_path / "share.jsonl", conversations)):
        entries = load_entries(path, "sharegpt")
        assert [[m["content"] for m in entry.messages] for entry in entries] == [["a", "b", "c"], ["only"]]
        assert [m["role"] for m in entries[0].messages] == ["user", "assistant", "user"] and [e.line for e in entries] == [1, 3]


def test_text_and_csv_give_one_user_prompt_per_line_or_row(tmp_path: Path) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("first prompt\n\n  second prompt  \n", encoding="utf-8")
    assert [(e.line, e.messages[0]["content"]) for e in load_entries(text, "text")] == [(1, "first prompt"), (3, "second prompt")]
    table = tmp_path / "prompts.csv"
    table.write_text('id,question\n1,"What is 2+2, roughly?"\n2,\n3,Why?\n', encoding="utf-8")
    assert [e.messages[0]["content"] for e in load_entries(table, "csv", column="question")] == ["What is 2+2, roughly?", "Why?"]


@pytest.mark.parametrize(
    ("kind", "content", "problem"),
    [
        ("messages", '{"messages": [{"role": "user", "content": "ok"}]}\n{not json\n', ": line 2: not JSON"),
        ("messages", '["a list"]\n', ": line 1: a JSON object with `messages` expected (got list)"),
        ("messages", '{"messages": [{"role": "user", "content": "ok"}], "model": "x"}\n', ": line 1: model: not a field of an entry"),
        ("messages", '{"system": "s"}\n', ": line 1: messages: a non-empty list of messages"),
        (
            "messages",
            '{"messages": [{"role": "assistant", "content": "x"}]}\n',
            ": line 1: messages[0].role: the first message must be 'user'",
        ),
        ("messages", '{"messages": [{"role": "user", "content": ""}]}\n', ": line 1: messages[0].content: a non-empty string"),
        ("messages", '{"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}\n', ": line 1: max_tokens: a whole number >= 1"),
        ("messages", '{"messages": [{"role": "user", "content": "x"}], "tools": [{}]}\n', ": line 1: tools: a list of tool definitions"),
        ("sharegpt", '{"conversations": [{"from": "robot", "value": "x"}]}\n', ": line 1: conversations[0]: `from` human or gpt"),
        ("csv", "a,b\n1,2\n", ": no column 'prompt' in the header (columns: a, b)"),
        ("text", "\n\n", ": no entries (format text)"),
    ],
)
def test_a_bad_dataset_names_the_file_the_line_and_the_field(tmp_path: Path, kind: str, content: str, problem: str) -> None:
    path = tmp_path / "bad.data"
    path.write_text(content, encoding="utf-8")
    scenario = dataset_scenario(tmp_path, {"path": "bad.data", "format": kind})
    with pytest.raises(ScenarioError) as caught:
        load_scenario(scenario)
    assert str(caught.value).startswith(f"{scenario}: prompts[0].dataset.path: {path}{problem}")


def test_a_missing_or_binary_dataset_file_is_one_clear_error(tmp_path: Path) -> None:
    scenario = dataset_scenario(tmp_path, {"path": "nowhere.jsonl", "format": "messages"})
    with pytest.raises(ScenarioError, match=r"prompts\[0\]\.dataset\.path: .*nowhere\.jsonl: cannot read the dataset"):
        load_scenario(scenario)
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioError, match=r"binary\.txt: not UTF-8 text"):
        load_scenario(dataset_scenario(tmp_path, {"path": "binary.txt", "format": "text"}))


def test_a_dataset_prompt_has_no_messages_of_its_own_and_a_known_format(tmp_path: Path) -> None:
    write_lines(tmp_path / "chats.jsonl", CHATS)
    with pytest.raises(ScenarioError, match=r"prompts\[0\]\.dataset: a dataset's entries are the conversations"):
        load_scenario(
            dataset_scenario(tmp_path, {"path": "chats.jsonl", "format": "messages"}, messages=[{"role": "user", "content": "x"}])
        )
    with pytest.raises(ScenarioError, match=r"prompts\[0\]\.dataset\.format"):
        load_scenario(dataset_scenario(tmp_path, {"path": "chats.jsonl", "format": "parquet"}))


def test_the_top_level_datasets_are_prompts_named_after_their_files(tmp_path: Path) -> None:
    write_lines(tmp_path / "chats.jsonl", CHATS)
    (tmp_path / "prompts.txt").write_text("one\ntwo\n", encoding="utf-8")
    path = write_yaml(
        tmp_path / "scenario.yaml",
        {
            "name": "ds",
            "models": ["claude-haiku-4-5"],
            "datasets": [
                {"path": "chats.jsonl", "format": "messages", "weight": 3, "order": "sequential"},
                {"path": "prompts.txt", "format": "text", "name": "plain", "max_tokens": 50},
            ],
        },
    )
    scenario = load_scenario(path)
    assert [(p.name, p.weight, p.max_tokens) for p in scenario.prompts] == [("chats", 3.0, 1024), ("plain", 1.0, 50)]
    assert len(scenario._datasets["chats"]) == 3 and len(scenario._datasets["plain"]) == 2


@pytest.mark.parametrize(
    ("datasets", "problem"),
    [
        (
            [{"path": "chats.jsonl", "format": "parquet"}],
            "datasets[0].format: Input should be 'messages', 'sharegpt', 'text', 'csv' or 'trace'",
        ),
        ([{"path": "chats.jsonl", "format": "text", "colour": 1}], "datasets[0].colour: Extra inputs are not permitted"),
        ("chats.jsonl", "datasets: a list of datasets"),
        ([{"path": "missing.jsonl", "format": "text"}], "datasets[0].path: "),
    ],
)
def test_a_bad_top_level_dataset_names_its_own_field(tmp_path: Path, datasets: Any, problem: str) -> None:
    write_lines(tmp_path / "chats.jsonl", CHATS)
    path = write_yaml(
        tmp_path / "scenario.yaml",
        {"name": "ds", "models": ["m"], "prompts": [{"name": "p", "max_tokens": 5, "input_tokens": 3}], "datasets": datasets},
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(f"{path}: {problem}")


# --- drawing and sending -------------------------------------------------------------------------
def loaded(tmp_path: Path, order: str = "random") -> Scenario:
    write_lines(tmp_path / "chats.jsonl", CHATS)
    return load_scenario(dataset_scenario(tmp_path, {"path": "chats.jsonl", "format": "messages", "order": order}))


def test_entries_are_drawn_at_random_reproducibly_or_in_order(tmp_path: Path) -> None:
    scenario = loaded(tmp_path)
    draws = [pick.entry for pick, _ in zip(Sampler(scenario, seed=5), range(300), strict=False)]
    assert draws == [pick.entry for pick, _ in zip(Sampler(scenario, seed=5), range(300), strict=False)]
    assert set(Counter(draws)) == {0, 1, 2} and min(Counter(draws).values()) > 60
    in_order = loaded(tmp_path, "sequential")
    assert [pick.entry for pick, _ in zip(Sampler(in_order, seed=5), range(7), strict=False)] == [0, 1, 2, 0, 1, 2, 0]
    worker = EntryOrder(10, "sequential", 0, index=1, count=3)  # worker 1 of 3: its share of the order
    assert [worker.next() for _ in range(5)] == [1, 4, 7, 0, 3]


def test_a_request_sends_its_entry_as_written(tmp_path: Path) -> None:
    scenario = loaded(tmp_path, "sequential")
    sampler = Sampler(scenario, seed=0)
    first, second, third = (build_body(sampler.next(), scenario) for _ in range(3))
    assert first["messages"] == CHATS[0]["messages"] and first["max_tokens"] == 16 and "system" not in first
    assert (second["max_tokens"], second["system"]) == (7, "Be brief.")
    assert third["tools"] == CHATS[2]["tools"] and len(third["messages"]) == 3 and "metadata" not in third


def received(sent: Shipment) -> dict[str, list[Entry]]:
    """What a worker makes of a shipment, its messages through JSON as on the wire."""
    chunks: dict[str, dict[int, str]] = {}
    for name, index, piece in json.loads(json.dumps(sent.chunks)):
        chunks.setdefault(name, {})[index] = piece
    return received_datasets(json.loads(json.dumps(sent.manifest)), chunks)


def test_the_entries_travel_to_workers_and_survive_the_command_lines_overrides(tmp_path: Path) -> None:
    scenario = loaded(tmp_path)
    assert received(shipment(scenario, 1024 * 1024)) == scenario._datasets
    assert with_overrides(scenario, {"arrival": "constant", "rate": "2/s"})._datasets == scenario._datasets


def big_scenario(tmp_path: Path) -> Scenario:
    """A dataset that compresses to about 2 MB (letters: 6 bits of 8): two chunks."""
    rng = random.Random(5)
    lines = [{"messages": [{"role": "user", "content": "".join(rng.choices(string.ascii_letters, k=2000))}]} for _ in range(1000)]
    write_lines(tmp_path / "big.jsonl", lines)
    return load_scenario(dataset_scenario(tmp_path, {"path": "big.jsonl", "format": "messages"}))


def test_a_large_dataset_travels_in_chunks_and_a_lost_one_is_refused(tmp_path: Path) -> None:
    scenario = big_scenario(tmp_path)
    sent = shipment(scenario, 64 * 1024 * 1024)
    assert [index for _name, index, _piece in sent.chunks] == [0, 1] and sent.manifest["chats"]["chunks"] == 2
    assert received(sent) == scenario._datasets
    with pytest.raises(DatasetError, match="dataset 'chats': 1 of its 2 chunks came"):
        received(Shipment(sent.manifest, sent.chunks[:1]))


def test_above_the_limit_every_worker_reads_the_same_path_checked_by_its_digest(tmp_path: Path) -> None:
    scenario = big_scenario(tmp_path)
    sent = shipment(scenario, 1024 * 1024)
    assert sent.chunks == [] and sent.manifest["chats"]["path"] == str(tmp_path / "big.jsonl")
    assert received(sent) == scenario._datasets
    with (tmp_path / "big.jsonl").open("a") as file:
        file.write(json.dumps(CHATS[0]) + "\n")  # a worker whose copy is not the master's
    with pytest.raises(DatasetError, match="this worker's copy of dataset 'chats' differs from the master's"):
        received(sent)


# --- real runs -----------------------------------------------------------------------------------
def first_turns(records: list[dict[str, Any]], truth: list[dict[str, Any]]) -> list[int]:
    """The input tokens the server counted for each entry's request, in the order they were sent
    (an entry with tools is a session: the requests that answer its tool calls are left out)."""
    served = {row["request_id"]: row["input_tokens"] for row in truth if row["status"] == 200}
    ordered = sorted(records, key=lambda record: record["start_ns"])
    return [served[record["request_id"]] for record in ordered if record["turn"] in (None, 1) and record["request_id"] in served]


@pytest.mark.slow
def test_a_dataset_runs_headless_each_entry_reaching_the_server(tmp_path: Path) -> None:
    scenario = loaded(tmp_path, "sequential")
    summary_path = tmp_path / "summary.json"
    result, truth = run_against_emulator(
        tmp_path, Path(scenario.source), FAST_PROFILE, "--summary-json", str(summary_path), users=1, run_time="3s"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [record for record in read_records(next((tmp_path / "runs").rglob(RECORDS_FILE))) if record["turn"] in (None, 1)]
    records.sort(key=lambda record: record["start_ns"])
    sizes = first_turns(records, truth)
    assert len(set(sizes)) == 3 and len(sizes) >= 6
    assert sizes[:3] * (len(sizes) // 3) == sizes[: 3 * (len(sizes) // 3)]  # in the file's order, round and round
    assert [record["entry"] for record in records] == [1, 2, 3] * (len(records) // 3) + [1, 2, 3][: len(records) % 3]
    info = json.loads(summary_path.read_text())["run"]["datasets"]
    assert info == {"chats": {"entries": 3, "sha256": entries_digest(scenario._datasets["chats"])}}


@pytest.mark.slow
@pytest.mark.parametrize("limit_mb", ["64", "1"])
def test_datasets_run_on_workers_shipped_in_chunks_or_read_from_the_same_path(tmp_path: Path, limit_mb: str) -> None:
    """A small dataset and one of about 2 MB compressed: both shipped (the large in two chunks)
    to workers that have no copy, or (limit 1 MB) the large one read by every worker from the
    master's path, checked against the master's digest."""
    write_lines(tmp_path / "chats.jsonl", CHATS)
    big = big_scenario(tmp_path)
    scenario = {
        "name": "ds",
        "models": ["claude-haiku-4-5"],
        "prompts": [
            {"name": "chats", "max_tokens": 16, "dataset": {"path": str(tmp_path / "chats.jsonl"), "format": "messages"}},
            {"name": "big", "max_tokens": 16, "dataset": {"path": str(tmp_path / "big.jsonl"), "format": "messages"}},
        ],
    }
    with Cluster(
        tmp_path, workers=2, run_time="3s", users=4, scenario=scenario, master_args=("--dataset-ship-limit-mb", limit_mb)
    ) as cluster:
        assert not list(cluster.worker_dir.rglob("*.jsonl"))  # the workers' folder has no copy
        records, truth, summary = cluster.finished()
    assert len({record["worker"] for record in records}) == 2 and {record["prompt"] for record in records} == {"chats", "big"}
    assert len(set(first_turns([record for record in records if record["prompt"] == "chats"], truth))) == 3
    assert summary["run"]["datasets"]["big"]["sha256"] == entries_digest(big._datasets["chats"])
