"""Unit tests for harness.payload: request bodies, synthetic text, headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.payload import (
    BYTES_PER_TOKEN,
    DEFAULT_ANTHROPIC_VERSION,
    body_bytes,
    build_body,
    build_headers,
    synthetic_filler,
    synthetic_text,
)
from harness.sampler import Pick, Sampler
from harness.scenario import load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]

SCENARIO = {
    "name": "p",
    "seed": 3,
    "models": [{"model": "claude-haiku-4-5"}],
    "prompts": [
        {"name": "plain", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50},
        {"name": "system", "system": "You are terse.", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10},
        {"name": "synthetic", "input_tokens": 500, "max_tokens": 300},
        {"name": "synthetic-cached", "input_tokens": 300, "cache_synthetic": True, "max_tokens": 30},
        {
            "name": "context-and-question",
            "input_tokens": 200,
            "messages": [{"role": "user", "content": "What is this about?"}],
            "max_tokens": 30,
        },
        {
            "name": "multi-turn",
            "system": [{"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": "Hi! How can I help?"},
                {"role": "user", "content": "Tell me a joke."},
            ],
            "max_tokens": 4096,
            "thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"},
            "extra": {"speed": "fast", "service_tier": "auto", "metadata": {"user_id": "u-1"}},
        },
        {"name": "adaptive", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10, "thinking": {"type": "adaptive"}},
    ],
}


@pytest.fixture
def scenario():
    return scenario_from_dict(json.loads(json.dumps(SCENARIO)))


def pick(scenario, name, stream=False, model="claude-haiku-4-5"):
    return Pick(model, scenario.prompt(name), stream)


# ----------------------------------------------------------------- synthetic text


@pytest.mark.parametrize("tokens", [1, 7, 100, 4000])
def test_synthetic_text_length(tokens):
    text = synthetic_text(tokens)
    data = text.encode("utf-8")
    assert len(data) == BYTES_PER_TOKEN * tokens == 4 * tokens
    assert text.isascii()
    assert not text.endswith(" ") and not text.startswith(" ")


def test_synthetic_text_deterministic_and_seeded():
    a = synthetic_text(1000, seed=1)
    synthetic_filler.cache_clear()
    assert synthetic_text(1000, seed=1) == a
    assert synthetic_text(1000, seed=2) != a
    assert synthetic_text(1000) == synthetic_text(1000, seed=0)
    # words, not one repeated character
    words = a.split()
    assert len(words) > 100 and len(set(words)) > 30


def test_synthetic_text_is_cached_and_a_shorter_one_is_its_start():
    synthetic_filler.cache_clear()
    synthetic_text(321, 0)
    synthetic_text(321, 0)
    assert synthetic_filler.cache_info().hits >= 1
    assert all(synthetic_filler(size)[:-1] == synthetic_filler(2000)[: size - 1] for size in (1, 57, 999))


def test_synthetic_text_rejects_zero():
    with pytest.raises(ValueError):
        synthetic_text(0)


# ----------------------------------------------------------------- bodies


def test_plain_body(scenario):
    body = build_body(pick(scenario, "plain"), scenario)
    assert body == {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
    assert "stream" not in body and "system" not in body and "temperature" not in body


def test_stream_flag(scenario):
    assert build_body(pick(scenario, "plain", stream=True), scenario)["stream"] is True
    assert build_body(pick(scenario, "plain", stream=False), scenario).get("stream", False) is False


def test_system(scenario):
    assert build_body(pick(scenario, "system"), scenario)["system"] == "You are terse."


def test_synthetic_prompt_is_first_user_message(scenario):
    body = build_body(pick(scenario, "synthetic", model="claude-sonnet-4-5"), scenario)
    assert body["model"] == "claude-sonnet-4-5"
    assert body["max_tokens"] == 300
    assert body["messages"] == [{"role": "user", "content": synthetic_text(500, scenario.seed)}]


def test_synthetic_cached_block(scenario):
    body = build_body(pick(scenario, "synthetic-cached"), scenario)
    (msg,) = body["messages"]
    assert msg["role"] == "user"
    assert msg["content"] == [{"type": "text", "text": synthetic_text(300, scenario.seed), "cache_control": {"type": "ephemeral"}}]


def test_synthetic_context_prepended_to_messages(scenario):
    body = build_body(pick(scenario, "context-and-question"), scenario)
    (msg,) = body["messages"]
    assert msg["role"] == "user"
    assert msg["content"] == [
        {"type": "text", "text": synthetic_text(200, scenario.seed)},
        {"type": "text", "text": "What is this about?"},
    ]


def test_multi_turn_thinking_and_extra(scenario):
    body = build_body(pick(scenario, "multi-turn", stream=True), scenario)
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048, "display": "omitted"}
    assert body["speed"] == "fast" and body["service_tier"] == "auto"
    assert body["metadata"] == {"user_id": "u-1"}
    assert body["stream"] is True


def test_adaptive_thinking_has_no_null_fields(scenario):
    assert build_body(pick(scenario, "adaptive"), scenario)["thinking"] == {"type": "adaptive"}


def test_temperature_passed_through():
    data = json.loads(json.dumps(SCENARIO))
    data["anthropic_version"] = "2023-06-01"
    data["prompts"][0]["temperature"] = 0
    data["prompts"][1]["temperature"] = 0.7
    data["prompts"][1]["extra"] = {"top_p": 0.9}
    s = scenario_from_dict(data)
    assert build_body(pick(s, "plain"), s)["temperature"] == 0
    body = build_body(pick(s, "system"), s)
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9
    assert "temperature" not in build_body(pick(s, "synthetic"), s)


def test_body_is_a_fresh_copy(scenario):
    p = pick(scenario, "multi-turn")
    body = build_body(p, scenario)
    body["messages"][0]["content"][0]["text"] = "changed"
    body["metadata"]["user_id"] = "changed"
    again = build_body(p, scenario)
    assert again["messages"][0]["content"][0]["text"] == "Hello"
    assert again["metadata"]["user_id"] == "u-1"


# ----------------------------------------------------------------- bytes


def test_every_sampled_body_of_shipped_scenarios_is_valid_json():
    for name in ("demo.yaml", "latency-levers.yaml"):
        s = load_scenario(ROOT / "scenarios" / name)
        sampler = Sampler(s, 0)
        for _ in range(200):
            p = sampler.next()
            body = json.loads(body_bytes(build_body(p, s)))
            assert body["model"] == p.model and body["max_tokens"] == p.prompt.max_tokens
            assert body["messages"][0]["role"] == "user"
            assert body.get("stream", False) is p.stream


# ----------------------------------------------------------------- headers


def test_headers_default_version_no_beta(scenario):
    assert DEFAULT_ANTHROPIC_VERSION == "2026-10-21"
    assert build_headers(scenario) == {"anthropic-version": "2026-10-21", "content-type": "application/json"}


def test_headers_with_version_and_beta():
    data = json.loads(json.dumps(SCENARIO))
    data["anthropic_version"] = "2023-06-01"
    data["beta"] = ["fast-mode-2026-02-01", "context-1m-2025-08-07"]
    s = scenario_from_dict(data)
    assert build_headers(s) == {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "fast-mode-2026-02-01,context-1m-2025-08-07",
        "content-type": "application/json",
    }


def test_no_api_key_anywhere(scenario, monkeypatch):
    secret = "sk-ant-test-SECRET-123"
    monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
    headers = build_headers(scenario)
    lowered = {k.lower() for k in headers}
    assert not lowered & {"x-api-key", "authorization"}
    assert secret not in json.dumps(headers)
    for p in scenario.prompts:
        for stream in (False, True):
            data = body_bytes(build_body(Pick("claude-haiku-4-5", p, stream), scenario))
            assert secret.encode() not in data and b"api_key" not in data and b"x-api-key" not in data


# ----------------------------------------------------------------- requests built in code

GROWING_USER = '''
from locust import task
from locust.exception import StopUser

from harness import ClaudeUser
from harness.sampler import Pick
from harness.scenario import Prompt


class GrowingPrompts(ClaudeUser):
    """Eleven requests, each a longer prompt built in code under the scenario prompt's name (its
    own task replaces the scenario's; ClaudeUser itself, abstract, runs no user)."""

    @task
    def grow(self) -> None:
        self.sent = getattr(self, "sent", 0) + 1
        if self.sent > 11 or not self.claude.admit():
            raise StopUser()
        prompt = Prompt(name="plain", messages=[{"role": "user", "content": "word " * (10 * self.sent)}], max_tokens=8)
        pick = Pick("claude-haiku-4-5", prompt, self.sent % 2 == 0)
        self.send(pick, self.claude.prepare(pick), None)
'''


@pytest.mark.slow
def test_requests_built_in_code_are_each_sent_and_measured_as_built(tmp_path: Path) -> None:
    from harness.records import RECORDS_FILE, read_records
    from tests.support.processes import write_yaml
    from tests.support.runs import FAST_PROFILE, run_against_emulator

    locustfile = tmp_path / "growing.py"
    locustfile.write_text(GROWING_USER, encoding="utf-8")
    scenario = write_yaml(tmp_path / "scenario.yaml", {**SCENARIO, "prompts": SCENARIO["prompts"][:1]})
    result, truth = run_against_emulator(tmp_path, scenario, FAST_PROFILE, "-f", str(locustfile), users=1, run_time="3s")
    assert result.returncode == 0, result.stderr[-3000:]
    records = sorted(read_records(next((tmp_path / "runs").rglob(RECORDS_FILE))), key=lambda record: record["start_ns"])
    # the emulator counts each "word" a token, and 3 for the message: every body as it was built
    assert [record["input_tokens"] for record in records] == [3 + 10 * n for n in range(1, 12)]
    assert sorted(row["input_tokens"] for row in truth) == [3 + 10 * n for n in range(1, 12)]


@pytest.mark.slow
def test_the_readmes_own_locustfile_runs_only_its_user(tmp_path: Path) -> None:
    from harness.records import RECORDS_FILE, read_records
    from tests.support.processes import write_yaml
    from tests.support.runs import FAST_PROFILE, run_against_emulator

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = readme[readme.index("```python\nfrom locust import task\nfrom harness import ClaudeUser") + len("```python\n") :]
    locustfile = tmp_path / "mine.py"
    locustfile.write_text(code[: code.index("```")], encoding="utf-8")
    scenario = write_yaml(tmp_path / "scenario.yaml", SCENARIO)
    result, truth = run_against_emulator(tmp_path, scenario, FAST_PROFILE, "-f", str(locustfile), users=2, run_time="3s")
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"MyUser": 2' in result.stderr and "ClaudeUser" not in result.stderr.replace("from harness import ClaudeUser", "")
    records = list(read_records(next((tmp_path / "runs").rglob(RECORDS_FILE))))
    first = SCENARIO["prompts"][0]["name"]
    assert records and {(r["model"], r["prompt"], r["mode"]) for r in records} == {("claude-haiku-4-5", first, "stream")}
    assert len(truth) == len(records)
