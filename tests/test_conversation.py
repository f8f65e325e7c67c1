"""Conversations and tools: sessions whose turns send back the real replies, the canned tool
results, think times; then real runs against the emulator, whose ground truth gives a digest of
every reply and of every assistant message a request carried, alone and on a master with
workers that have no copy of the dataset."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.conversation import MAX_TOOL_ROUNDS, ConversationBook, ConversationSpec, Session, ThinkTime
from harness.emulator.groundtruth import assistant_digest
from harness.replies import SETTLE_EVENTS, Reply
from harness.scenario import ScenarioError, scenario_from_dict
from harness.timing import StreamTimer, TimingRecord
from tests.support.cluster import Cluster
from tests.support.processes import write_lines
from tests.support.runs import recorded_run

RECORDED = "A REPLY THE DATASET RECORDED"
CHATS = [
    {
        "messages": [
            {"role": "user", "content": "Hello there."},
            {"role": "assistant", "content": RECORDED},
            {"role": "user", "content": "Tell me more."},
            {"role": "assistant", "content": RECORDED},
            {"role": "user", "content": "Thanks."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "What is the weather?"},
            {"role": "assistant", "content": RECORDED},
            {"role": "user", "content": "And then?"},
        ]
    },
]
TOOLS = [{"name": "lookup", "description": "Look it up.", "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}}}]


def ok(stop_reason: str = "end_turn") -> TimingRecord:
    return TimingRecord("m", "p", "stream", outcome="ok", stop_reason=stop_reason)


def text(words: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": words}]


def call(tool_id: str) -> list[dict[str, Any]]:
    return [{"type": "tool_use", "id": tool_id, "name": "lookup", "input": {"query": "x"}}]


def session(messages: list[dict[str, Any]], **spec: Any) -> Session:
    return Session({"model": "m", "max_tokens": 9, "messages": messages, "system": "S"}, ConversationSpec(**spec), "42")


# --- sessions ------------------------------------------------------------------------------------
def test_each_turn_sends_the_real_replies_before_it_not_the_recorded_ones() -> None:
    chat = session(CHATS[0]["messages"])
    bodies = []
    while (body := chat.next_body()) is not None:
        bodies.append(body)
        chat.answered(body, ok(), text(f"reply {len(bodies)}"))
    assert [len(body["messages"]) for body in bodies] == [1, 3, 5] and chat.ending == "completed"
    last = bodies[-1]["messages"]
    assert [m["content"] for m in last] == ["Hello there.", text("reply 1"), "Tell me more.", text("reply 2"), "Thanks."]
    assert all(body["system"] == "S" and body["max_tokens"] == 9 for body in bodies)


def test_turns_beyond_the_written_ones_follow_up_and_fewer_cut_the_script() -> None:
    longer = session([{"role": "user", "content": "Hi"}], turns=3, follow_up="More?")
    sent = []
    while (body := longer.next_body()) is not None:
        sent.append(body["messages"][-1]["content"])
        longer.answered(body, ok(), text("r"))
    assert sent == ["Hi", "More?", "More?"]
    shorter = session(CHATS[0]["messages"], turns=1)
    body = shorter.next_body()
    assert body is not None
    shorter.answered(body, ok(), text("r"))
    assert shorter.next_body() is None and shorter.ending == "completed"


@pytest.mark.parametrize(
    ("record", "content", "ending"),
    [
        (TimingRecord("m", "p", "stream", outcome="rate_limited"), [], "failed"),
        (TimingRecord("m", "p", "stream", outcome="cancelled"), [], "stopped"),
        (ok(), [{"type": "text", "text": ""}][:0], "no_reply"),
    ],
)
def test_a_failed_or_empty_answer_ends_the_session(record: TimingRecord, content: list[dict[str, Any]], ending: str) -> None:
    chat = session(CHATS[0]["messages"])
    body = chat.next_body()
    assert body is not None
    chat.answered(body, record, content)
    assert chat.next_body() is None and chat.ending == ending


def test_every_tool_call_is_answered_with_the_canned_result_also_one_cut_short() -> None:
    chat = session([{"role": "user", "content": "Look it up."}])
    first = chat.next_body()
    assert first is not None
    chat.answered(first, ok("max_tokens"), call("toolu_1"))  # cut by max_tokens: still a call to answer
    assert not chat.thinks_next  # a tool result is sent at once
    second = chat.next_body()
    assert second is not None
    assert second["messages"][-2] == {"role": "assistant", "content": call("toolu_1")}
    assert second["messages"][-1] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}]}
    chat.answered(second, ok(), text("the answer"))
    assert chat.next_body() is None and chat.ending == "completed" and chat.turn == 2


def test_a_prompt_with_tools_and_no_conversation_is_sent_as_written_and_its_loop_completed() -> None:
    written = CHATS[1]["messages"]  # user, a recorded assistant reply, user: sent as they are
    chat = Session({"model": "m", "max_tokens": 9, "messages": written}, None, "42")
    first = chat.next_body()
    assert first is not None and first["messages"] == written
    chat.answered(first, ok("tool_use"), call("toolu_1"))
    second = chat.next_body()
    assert second is not None and second["messages"][: len(written)] == written and len(second["messages"]) == len(written) + 2
    chat.answered(second, ok(), text("done"))
    assert chat.next_body() is None and chat.ending == "completed"


def test_a_model_that_only_calls_tools_ends_as_a_tool_loop() -> None:
    chat = session([{"role": "user", "content": "Look it up."}])
    for round_ in range(MAX_TOOL_ROUNDS + 1):
        body = chat.next_body()
        assert body is not None
        chat.answered(body, ok("tool_use"), call(f"toolu_{round_}"))
    assert chat.next_body() is None and chat.ending == "tool_loop"


# --- replies -------------------------------------------------------------------------------------
def sse(*events: dict[str, Any]) -> list[bytes]:
    return [line for event in events for line in (f"event: {event['type']}".encode(), b"data: " + json.dumps(event).encode(), b"")]


def fed(reply: Reply, *reads: list[bytes]) -> Reply:
    """`reply` with the stream's reads given to a stream timer, as the transports do."""
    timer = StreamTimer(TimingRecord(model="m", prompt="p", mode="stream"), 0, reply)
    for t_ns, lines in enumerate(reads):
        timer.feed(t_ns, lines)
    return reply


def test_a_reply_is_rebuilt_from_its_stream_as_the_sdk_accumulates_it() -> None:
    reply = Reply()
    lines = sse(
        {"type": "message_start", "message": {"content": []}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "SIG"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Let me "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "look."}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {}}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": '{"query": "we'}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": 'ather"}'}},
        {"type": "content_block_stop", "index": 2},
        {"type": "message_stop"},
    )
    fed(reply, *([line] for line in lines))
    assert reply.content() == [
        {"type": "thinking", "thinking": "hmm", "signature": "SIG"},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_9", "name": "lookup", "input": {"query": "weather"}},
    ]
    reply.clear()  # a retried attempt starts again
    reply.take_message(json.dumps({"content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]}).encode())
    assert reply.content() == text("hi")  # an empty text block is never sent back


def test_a_long_reply_is_settled_as_it_comes_and_keeps_few_events() -> None:
    reply = fed(Reply(), sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
    for _ in range(1000):
        fed(reply, sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ab"}}))
        assert len(reply.data) <= SETTLE_EVENTS  # some 50 KB at most, not the whole reply's events
    assert reply.content() == text("ab" * 1000)


def test_a_broken_event_leaves_the_rest_of_the_reply() -> None:
    """The lines are parsed in one go after the stream; one that is not JSON is left out alone."""
    lines = sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "kept "}},
    )
    broken = [*lines[4:], b"event: content_block_delta", b'data: {"type":"content_block_delta","index":0,"delta":{"typ', b""]
    odd = sse(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": None}},  # not a string: left out
        {"type": "content_block_delta", "index": 7, "delta": {"type": "text_delta", "text": "x"}},  # no such block
        {"type": "content_block_delta", "index": 0, "delta": "text"},
    )
    too = sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "too"}})
    assert fed(Reply(), lines[:4], broken, odd, too).content() == text("kept too")


def reference_content(events: list[Any]) -> list[dict[str, Any]]:
    """The SDK's accumulation, event by event in order (what a reply must equal)."""
    blocks: dict[Any, dict[str, Any]] = {}
    fields = {"text_delta": "text", "thinking_delta": "thinking", "signature_delta": "signature", "input_json_delta": "partial_json"}
    inputs: dict[Any, str] = {}
    for event in events:
        if not isinstance(event, dict):
            continue
        if event.get("type") == "content_block_start":
            blocks[event["index"]] = dict(event["content_block"])
        elif event.get("type") == "content_block_delta" and event.get("index") in blocks:
            delta, index = event["delta"], event["index"]
            field = fields.get(delta.get("type")) if isinstance(delta, dict) else None
            if field == "partial_json" and blocks[index]["type"] == "tool_use" and isinstance(delta[field], str):
                inputs[index] = inputs.get(index, "") + delta[field]
            elif field and field != "partial_json" and isinstance(delta.get(field), str):
                blocks[index][field] = blocks[index].get(field, "") + delta[field]
        elif event.get("type") == "content_block_stop" and event.get("index") in inputs:
            blocks[event["index"]]["input"] = json.loads(inputs.pop(event["index"]) or "{}")
    return [block for _, block in sorted(blocks.items()) if not (block.get("type") == "text" and not block.get("text"))]


STRINGS = st.text(alphabet=st.sampled_from(list('ab "\\\n\u00e9\u2028\U0001f600')), max_size=6)


@st.composite
def streams(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A stream's events: text blocks (and a thinking one, a tool call) with their deltas,
    some written with spaces, some not strings, some for a block that never started."""
    events: list[dict[str, Any]] = []
    kinds = draw(st.lists(st.sampled_from(["text", "thinking", "tool_use"]), min_size=1, max_size=3))
    for index, kind in enumerate(kinds):
        start = {"text": {"type": "text", "text": ""}, "thinking": {"type": "thinking", "thinking": "", "signature": ""}}
        events.append(
            {
                "type": "content_block_start",
                "index": index,
                "content_block": start.get(kind) or {"type": "tool_use", "id": "t", "name": "n", "input": {}},
            }
        )
        for piece in draw(st.lists(STRINGS, max_size=8)):
            delta = {"text": {"type": "text_delta", "text": piece}, "thinking": {"type": "thinking_delta", "thinking": piece}}
            events.append(
                {
                    "type": "content_block_delta",
                    "index": draw(st.sampled_from([index, index, index, 9])),
                    "delta": delta.get(kind) or {"type": "input_json_delta", "partial_json": ""},
                }
            )
        if kind == "tool_use":
            events.append(
                {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": '{"q": 1}'}}
            )
        if draw(st.booleans()):
            events.append({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": None}})
        events.append({"type": "content_block_stop", "index": index})
    return events


@given(streams(), st.booleans(), st.integers(min_value=1, max_value=7))
def test_a_reply_equals_the_sdks_accumulation_however_its_events_are_written_and_read(
    events: list[dict[str, Any]], spaced: bool, per_read: int
) -> None:
    def payload(event: dict[str, Any]) -> bytes:
        return json.dumps(event).encode() if spaced else json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()

    lines = [line for event in events for line in (f"event: {event['type']}".encode(), b"data: " + payload(event), b"")]
    reads = [lines[i : i + per_read] for i in range(0, len(lines), per_read)]
    assert fed(Reply(), *reads).content() == reference_content(events)


@given(st.lists(st.text(), min_size=1, max_size=12), st.integers(min_value=0, max_value=12), st.booleans())
def test_text_deltas_as_the_api_writes_them_are_taken_in_one_pass(pieces: list[str], index: int, ascii_only: bool) -> None:
    start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    events = [{"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}} for piece in pieces]
    deltas = [b" " + json.dumps(event, separators=(",", ":"), ensure_ascii=ascii_only).encode() for event in events]
    reply = fed(Reply(), sse(start))
    reply.settle()
    assert reply._take_texts(deltas)  # in one pass
    assert reply.content() == reference_content([start, *events])
    assert not Reply()._take_texts(deltas)  # (a block that did not start: left to the general path)


# --- think time and the scenario ----------------------------------------------------------------
def test_think_times_follow_their_distribution() -> None:
    rng = random.Random(1)
    assert ThinkTime(mean_s=0.5).draw(rng) == 0.5
    draws = [ThinkTime(distribution="exponential", mean_s=2).draw(rng) for _ in range(4000)]
    assert 1.9 < statistics.fmean(draws) < 2.1 and min(draws) >= 0
    uniform = [ThinkTime(distribution="uniform", min_s=1, max_s=3).draw(rng) for _ in range(1000)]
    assert min(uniform) >= 1 and max(uniform) <= 3


BASE = {"name": "c", "models": ["m"], "prompts": [{"name": "chat", "max_tokens": 9, "messages": [{"role": "user", "content": "Hi"}]}]}


@pytest.mark.parametrize(
    ("prompt", "field", "problem"),
    [
        ({"conversation": {"turns": 0}}, "prompts[0].conversation.turns", "must be >= 1"),
        (
            {"conversation": {"think_time": {"distribution": "uniform", "min_s": 2, "max_s": 1}}},
            "prompts[0].conversation.think_time.max_s",
            "at least min_s",
        ),
        ({"conversation": {"think_time": {"distribution": "gamma"}}}, "prompts[0].conversation.think_time.distribution", "'constant'"),
        ({"tools": [{"description": "no name"}]}, "prompts[0].tools", "needs a name"),
        ({"tools": [{"name": "t"}]}, "prompts[0].tools", "input_schema"),
        ({"extra": {"tools": []}}, "prompts[0].extra.tools", "use the prompt's 'tools' field"),
    ],
)
def test_a_bad_conversation_or_tool_names_its_field(prompt: dict[str, Any], field: str, problem: str) -> None:
    data = {**BASE, "prompts": [{**BASE["prompts"][0], **prompt}]}
    with pytest.raises(ScenarioError) as error:
        scenario_from_dict(data)
    assert field in str(error.value) and problem in str(error.value)


def test_the_turn_figures_of_workers_merge_exactly() -> None:
    workers = [ConversationBook(), ConversationBook()]
    for index, book in enumerate(workers):
        for turn in (1, 1, 2):
            record = TimingRecord(
                "m", "p", "stream", outcome="ok", ttft_ms=10.0 * turn + index, latency_ms=50.0, first_content="text", turn=turn
            )
            book.add(record)
        chat = session([{"role": "user", "content": "Hi"}])
        chat.ending = "completed"
        book.end(chat)
    master = ConversationBook()
    for book in workers:
        master.merge_encoded(json.loads(json.dumps(book.encode_delta())))
        assert book.figures() is None  # a report empties the worker's book
    figures = master.figures()
    assert figures is not None and figures.sessions == 2 and figures.endings == {"completed": 2}
    assert [(turn.turn, turn.requests) for turn in figures.turns] == [(1, 4), (2, 2)]
    assert figures.turns[1].ttft_ms is not None and figures.turns[1].ttft_ms.min == pytest.approx(20, abs=0.1)


# --- real runs -----------------------------------------------------------------------------------
def conversation_scenario(dataset: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "conv",
        "models": ["claude-haiku-4-5"],
        "stream": 0.5,
        "datasets": [{"path": str(dataset), "format": "messages", "max_tokens": 24, "conversation": {"think_time": {"mean_s": 0.05}}}],
        **extra,
    }


def check_replies_sent_back(truth: list[dict[str, Any]], records: list[dict[str, Any]]) -> Counter[int]:
    """Every request carried, as its assistant messages, replies the server gave before (never the
    recorded ones), one per turn before it; the requests per turn."""
    served = {row["reply_digest"] for row in truth}
    by_id = {row["request_id"]: row for row in truth}
    turns: Counter[int] = Counter()
    for record in records:
        row = by_id[record["request_id"]]
        assert len(row["context_digests"]) == record["turn"] - 1
        assert set(row["context_digests"]) <= served and assistant_digest(RECORDED) not in row["context_digests"]
        turns[record["turn"]] += 1
    return turns


@pytest.mark.slow
def test_a_dataset_of_conversations_runs_headless_each_turn_sending_the_real_replies(tmp_path: Path) -> None:
    _, summary, records, truth = recorded_run(
        tmp_path, conversation_scenario(write_lines(tmp_path / "chats.jsonl", CHATS)), users=3, run_time="4s"
    )
    turns = check_replies_sent_back(truth, records)
    assert set(turns) == {1, 2, 3} and turns[1] >= turns[2] >= turns[3] > 0
    figures = summary["conversations"]
    assert {turn["turn"]: turn["requests"] for turn in figures["turns"]} == dict(turns)
    assert figures["endings"]["completed"] > 0 and sum(figures["endings"].values()) == figures["sessions"] == turns[1]
    growth = [turn["input_tokens"] / turn["requests"] for turn in figures["turns"]]
    assert growth == sorted(growth)  # each turn carries the conversation so far


@pytest.mark.slow
def test_a_tool_loop_completes_and_times_the_first_tool_input(tmp_path: Path) -> None:
    prompt = {
        "name": "tool",
        "max_tokens": 24,
        "messages": [{"role": "user", "content": "Look it up."}],
        "tools": TOOLS,
        "tool_result": "42",
    }
    scenario = {"name": "tools", "models": ["claude-haiku-4-5"], "stream": 0.5, "prompts": [prompt]}
    _, summary, records, served = recorded_run(tmp_path, scenario, users=2, run_time="4s")
    truth = {row["request_id"]: row for row in served}
    assert all(record["outcome"] == "ok" for record in records)
    calls = [record for record in records if record["turn"] == 1]
    answers = [record for record in records if record["turn"] == 2]
    assert calls and len(answers) >= len(calls) - 2  # (sessions the end of the run cut)
    assert {truth[record["request_id"]]["stop_reason"] for record in calls} <= {"tool_use", "max_tokens"}
    streamed = [record for record in calls if record["mode"] == "stream"]
    for record in streamed:  # the first tool input, timed against the server's first write of it
        row = truth[record["request_id"]]
        assert record["first_content"] == "tool_use"
        server_ms = (row["t_first_text_ns"] - row["t_received_ns"]) / 1e6
        assert server_ms - 1 <= record["ttft_ms"] <= server_ms + 25
    check_replies_sent_back(list(truth.values()), records)  # each answer's request carried the call as served
    figures = {turn["turn"]: turn for turn in summary["conversations"]["turns"]}
    assert figures[1]["first_tool_input_ms"]["count"] == len(streamed) and figures[1]["ttft_ms"] is None
    assert figures[2]["ttft_ms"]["count"] == sum(record["mode"] == "stream" for record in answers)


@pytest.mark.slow
def test_conversations_run_on_workers_that_have_no_copy_of_the_dataset(tmp_path: Path) -> None:
    scenario = conversation_scenario(write_lines(tmp_path / "chats.jsonl", CHATS))
    with Cluster(tmp_path, workers=2, run_time="4s", users=4, scenario=scenario) as cluster:
        assert not list(cluster.worker_dir.rglob("*.jsonl"))
        records, truth, summary = cluster.finished()
    assert len({record["worker"] for record in records}) == 2
    turns = check_replies_sent_back(truth, records)
    assert set(turns) == {1, 2, 3}
    figures = summary["conversations"]
    assert {turn["turn"]: turn["requests"] for turn in figures["turns"]} == dict(turns)  # merged exactly
    assert sum(figures["endings"].values()) == figures["sessions"] == turns[1]  # every session counted once, also those the stop cut
