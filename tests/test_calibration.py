"""Synthetic prompts of an exact size: the search for the text's length, a target that cannot
count, and a real run whose server (the emulator, counting by a rule that is not the harness's
4 bytes a token) counts every synthetic request at its target."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from harness.calibration import CountError, calibrate, fit_size
from harness.emulator.validate import count_input_tokens
from harness.payload import build_body
from harness.sampler import Pick
from harness.scenario import scenario_from_dict
from harness.transport import Target
from tests.support.runs import recorded_run

TARGET = Target("http://127.0.0.1:9", "key", {"anthropic-version": "2023-06-01"})
SIZED = {
    "name": "sized",
    "models": ["claude-haiku-4-5", "claude-sonnet-4-5"],
    "prompts": [
        {"name": "long", "input_tokens": 2000, "max_tokens": 8},
        {
            "name": "ctx",
            "input_tokens": 300,
            "max_tokens": 8,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "What is it?"}],
        },
        {"name": "plain", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
    ],
}


def emulator_count(_target: Target, body: dict[str, Any]) -> int:
    return count_input_tokens(body)


@pytest.mark.parametrize("target", [1, 7, 300, 2000, 30_000])
def test_the_search_reaches_the_target_in_a_few_counts_or_the_nearest(target: int) -> None:
    calls = []

    def words(size: int) -> int:  # a message's 3, then about 5.3 bytes a word
        calls.append(size)
        return 3 + size * 10 // 53

    size, count = fit_size(target, words)
    assert len(calls) <= 10
    if target < 3:  # below what any text counts: the smallest text
        assert (size, count) == (min(calls), 3)
    else:
        assert count == target


def test_every_synthetic_prompt_is_sized_per_model_and_its_body_counts_its_target() -> None:
    scenario = scenario_from_dict(SIZED)
    sizes = calibrate(scenario, TARGET, emulator_count)
    assert [(size.model, size.prompt, size.target, size.achieved, size.by) for size in sizes] == [
        ("claude-haiku-4-5", "long", 2000, 2000, "count_tokens"),
        ("claude-sonnet-4-5", "long", 2000, 2000, "count_tokens"),
        ("claude-haiku-4-5", "ctx", 300, 300, "count_tokens"),
        ("claude-sonnet-4-5", "ctx", 300, 300, "count_tokens"),
    ]
    for prompt in scenario.prompts[:2]:
        body = build_body(Pick("claude-haiku-4-5", prompt, True), scenario)
        assert count_input_tokens(body) == prompt.input_tokens
    uncalibrated = scenario_from_dict(SIZED)  # at 4 bytes a token the emulator counts far fewer
    assert count_input_tokens(build_body(Pick("claude-haiku-4-5", uncalibrated.prompts[0], True), uncalibrated)) < 0.9 * 2000


def test_a_target_that_cannot_count_leaves_the_bytes_rule_said_once(caplog: pytest.LogCaptureFixture) -> None:
    calls = []

    def refuses(_target: Target, _body: dict[str, Any]) -> int:
        calls.append(1)
        raise CountError("count_tokens answered HTTP 404")

    scenario = scenario_from_dict(SIZED)
    gateway = Target("http://127.0.0.1:10", "key", {})  # (sizes found for another target are kept per target)
    with caplog.at_level(logging.WARNING):
        sizes = calibrate(scenario, gateway, refuses)
    assert len(calls) == 1 and [record.message.count("HTTP 404") for record in caplog.records] == [1]
    assert {(size.by, size.achieved, size.problem) for size in sizes} == {("bytes", None, "count_tokens answered HTTP 404")}
    assert sizes[0].text_bytes == 4 * 2000 and not scenario._input_bytes
    skipped = scenario_from_dict({**SIZED, "input_tokens_by": "bytes"})
    assert {size.by for size in calibrate(skipped, gateway, refuses)} == {"bytes"} and len(calls) == 1


@pytest.mark.slow
def test_calibrated_prompts_reach_the_server_at_their_target(tmp_path: Path) -> None:
    _, summary, records, truth = recorded_run(tmp_path, {**SIZED, "stream": 0.5}, users=2, run_time="3s")
    targets = {prompt["name"]: prompt.get("input_tokens") for prompt in SIZED["prompts"]}
    served = {row["request_id"]: row["input_tokens"] for row in truth}
    synthetic = [record for record in records if targets[record["prompt"]] is not None]
    assert {record["model"] for record in synthetic} == {"claude-haiku-4-5", "claude-sonnet-4-5"}
    for record in synthetic:  # within 2 % by the server's own count (here: exact)
        assert abs(served[record["request_id"]] - targets[record["prompt"]]) <= 0.02 * targets[record["prompt"]]
        assert record["input_tokens"] == served[record["request_id"]]
    assert {(size["prompt"], size["achieved"]) for size in summary["input_sizes"]} == {("long", 2000), ("ctx", 300)}


def test_a_redirect_is_not_followed_the_key_goes_nowhere_else() -> None:
    """count_tokens answered by a 302 to another server: that server gets nothing."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from harness.calibration import _count

    hits: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.headers.get("x-api-key", ""))
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

    elsewhere = HTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirects(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(302)
            self.send_header("location", f"http://127.0.0.1:{elsewhere.server_port}/v1/messages/count_tokens")
            self.send_header("content-length", "0")
            self.end_headers()

    target = HTTPServer(("127.0.0.1", 0), Redirects)
    for server in (elsewhere, target):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CountError, match="HTTP 302"):
            _count(Target(f"http://127.0.0.1:{target.server_port}", "sk-secret", {}), {"model": "m", "messages": []})
    finally:
        for server in (elsewhere, target):
            server.shutdown()
            server.server_close()
    assert hits == []
