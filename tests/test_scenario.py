"""Unit tests for harness.scenario: loading, validation messages, sampling."""

from __future__ import annotations

import copy
import json
import math
import pickle
from collections import Counter
from pathlib import Path

import pydantic
import pytest
import yaml

from harness.sampler import Pick, Sampler
from harness.scenario import (
    DEFAULT_ANTHROPIC_VERSION,
    Prompt,
    Scenario,
    ScenarioError,
    Slos,
    load_scenario,
    parse_timespan,
    scenario_from_dict,
)

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"

MINIMAL = """\
name: t
models:
  - model: claude-haiku-4-5
    weight: 3
  - model: claude-sonnet-4-5
    weight: 1
prompts:
  - name: summarize
    weight: 2
    system: "You are terse."
    messages: [{role: user, content: "Summarize: it works."}]
    max_tokens: 100
  - name: long-context
    input_tokens: 4000
    max_tokens: 300
stream: 0.8
"""


def base() -> dict:
    return yaml.safe_load(MINIMAL)


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, data_or_text) -> str:
    text = data_or_text if isinstance(data_or_text, str) else yaml.safe_dump(data_or_text, sort_keys=False)
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert "Traceback" not in msg and "pydantic" not in msg and "http" not in msg, msg
    assert "errors.pydantic.dev" not in msg
    return msg


def mutated(fn) -> dict:
    d = base()
    fn(d)
    return d


# ----------------------------------------------------------------- good files


@pytest.mark.parametrize("name", ["demo.yaml", "latency-levers.yaml"])
def test_shipped_scenarios_load(name):
    s = load_scenario(SCENARIOS / name)
    assert isinstance(s, Scenario)
    assert s.models and s.prompts
    assert s.source == str(SCENARIOS / name)
    # every prompt can be sampled and every sampled body is buildable
    sampler = Sampler(s, seed=0)
    for _ in range(50):
        pick = sampler.next()
        assert pick.model in {m.model for m in s.models} | {v.model for v in s.variants}


def test_demo_shape():
    s = load_scenario(SCENARIOS / "demo.yaml")
    assert {m.model: m.weight for m in s.models} == {"claude-haiku-4-5": 3, "claude-sonnet-4-5": 1}
    assert len(s.prompts) == 3
    assert any(p.input_tokens == 4000 for p in s.prompts)
    assert min(p.max_tokens for p in s.prompts) <= 10
    assert s.stream == pytest.approx(0.8)
    assert s.load.users == 20 and s.load.spawn_rate == 10 and s.load.run_time_s == 30
    assert s.anthropic_version is None
    assert s.effective_anthropic_version == DEFAULT_ANTHROPIC_VERSION


def test_latency_levers_turns_every_lever_of_the_guide_into_a_variant():
    s = load_scenario(SCENARIOS / "latency-levers.yaml")
    changed = {variant.name: variant.changes() for variant in s.variants}
    assert changed["base"] == {} and [v.name for v in s.variants if v.baseline] == ["base"]
    levers = {key for changes in changed.values() for key in changes}
    assert {"model", "input_tokens", "max_tokens", "temperature", "stream", "cache", "extra", "beta", "anthropic_version"} <= levers
    assert any(c.get("temperature") == 0 and c["anthropic_version"] == "2023-06-01" for c in changed.values())
    assert {"speed", "service_tier"} <= {key for changes in changed.values() for key in changes.get("extra", {})}


def test_minimal_defaults(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL))
    assert s.timeouts.total_s == 600 and s.seed == 0 and s.beta == [] and s.slos == Slos() and s.load is None and s.budget_usd is None
    assert s.prompts[1].weight == 1
    assert s.prompt("summarize").system == "You are terse."


def test_full_featured_scenario(tmp_path):
    d = base()
    d.update(
        description="everything",
        anthropic_version="2023-06-01",
        beta=["fast-mode-2026-02-01"],
        seed=7,
        timeout_s=30,
        prices={"claude-haiku-4-5": {"input": 1, "output": 5}},
        load={"users": 5, "spawn_rate": 2.5, "run_time": "1h30m"},
        slos={"ttft_p99_ms": 2000, "error_rate": 0.01},
    )
    d["prompts"].append(
        {
            "name": "chat",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Tell me a joke."},
            ],
            "max_tokens": 2048,
            "temperature": 1,
            "thinking": {"type": "enabled", "budget_tokens": 1024, "display": "omitted"},
            "stream": True,
            "extra": {"speed": "fast", "service_tier": "auto", "metadata": {"user_id": "u1"}},
            "timeout_s": 10,
        }
    )
    s = load_scenario(write(tmp_path, yaml.safe_dump(d)))
    chat = s.prompt("chat")
    assert chat.thinking.to_body() == {"type": "enabled", "budget_tokens": 1024, "display": "omitted"}
    assert chat.stream is True and chat.extra["speed"] == "fast"
    assert s.load.run_time_s == 5400


def test_unquoted_version_date_is_accepted(tmp_path):
    s = load_scenario(write(tmp_path, MINIMAL + "anthropic_version: 2023-06-01\n"))
    assert s.anthropic_version == "2023-06-01"


def test_models_shorthand():
    s = scenario_from_dict(mutated(lambda d: d.update(models=["claude-haiku-4-5"])))
    assert s.models[0].model == "claude-haiku-4-5" and s.models[0].weight == 1


def test_messages_and_input_tokens_together_allowed():
    d = mutated(lambda d: d["prompts"][0].update(input_tokens=100))
    assert scenario_from_dict(d).prompts[0].input_tokens == 100


# ----------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: file not found"


def test_directory(tmp_path):
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path)
    assert str(tmp_path) in str(info.value) and "directory" in str(info.value)


@pytest.mark.parametrize("text", ["", "   \n# only a comment\n"])
def test_empty_file(tmp_path, text):
    assert "empty" in error_of(tmp_path, text)


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    msg = error_of(tmp_path, "name: t\nmodels: [a\nprompts: x\n")
    assert "invalid YAML" in msg and "line " in msg and "column " in msg


def test_yaml_bad_indentation(tmp_path):
    msg = error_of(tmp_path, "name: t\n  models: x\n foo: 1\n")
    assert "invalid YAML" in msg and "line 2" in msg


def test_duplicate_key(tmp_path):
    msg = error_of(tmp_path, MINIMAL + "stream: 0.5\n")
    assert "duplicate key 'stream'" in msg and "line" in msg


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_not_mapping(tmp_path, text):
    assert "top level must be a mapping" in error_of(tmp_path, text)


def test_not_utf8(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "UTF-8" in str(info.value)


# ----------------------------------------------------------------- field errors


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda d: d.update(strem=1), ["strem: unknown field", "allowed: ", "stream", "did you mean 'stream'?"]),
        (lambda d: d["prompts"][0].update(max_tokns=5), ["prompts[0].max_tokns: unknown field", "did you mean 'max_tokens'?"]),
        (lambda d: d["models"][1].update(wieght=1), ["models[1].wieght: unknown field", "allowed: model, weight"]),
        (lambda d: d["prompts"][0]["messages"][0].update(name="x"), ["prompts[0].messages[0].name: unknown field"]),
        (lambda d: d["models"][0].update(weight=0), ["models[0].weight: must be > 0 (got 0)"]),
        (lambda d: d["models"][0].update(weight=-2), ["models[0].weight: must be > 0 (got -2)"]),
        (lambda d: d["prompts"][1].update(weight=0), ["prompts[1].weight: must be > 0 (got 0)"]),
        (lambda d: d.update(stream=1.5), ["stream: must be a share between 0 and 1", "(got 1.5)"]),
        (lambda d: d.update(stream=-0.1), ["stream: must be a share between 0 and 1"]),
        (lambda d: d["prompts"][0].update(stream=2), ["prompts[0].stream: must be a share between 0 and 1"]),
        (lambda d: d["prompts"][1].update(max_tokens=0), ["prompts[1].max_tokens: must be >= 1 (got 0)"]),
        (lambda d: d["prompts"][1].update(max_tokens="100"), ["prompts[1].max_tokens: must be an integer (got '100')"]),
        (lambda d: d["prompts"][1].pop("max_tokens"), ["prompts[1].max_tokens: missing required field"]),
        (lambda d: d.pop("name"), ["name: missing required field"]),
        (lambda d: d.pop("models"), ["models: missing required field"]),
        (lambda d: d.update(models=[]), ["models: must not be empty"]),
        (lambda d: d.update(prompts=[]), ["prompts: must not be empty"]),
        (
            lambda d: d["prompts"][0]["messages"][0].update(role="system"),
            ["prompts[0].messages[0].role: must be one of 'user' or 'assistant' (got 'system')"],
        ),
        (
            lambda d: d["prompts"][0].update(messages=[{"role": "assistant", "content": "x"}]),
            ["prompts[0].messages[0].role: the first message must be 'user'"],
        ),
        (lambda d: d["prompts"][0].update(messages=[]), ["prompts[0].messages: must not be empty"]),
        (lambda d: d["prompts"][0]["messages"][0].update(content=""), ["prompts[0].messages[0].content: must not be empty"]),
        (
            lambda d: d["prompts"][0]["messages"][0].update(content=[{"text": "x"}]),
            ["prompts[0].messages[0].content[0].type: a content block needs a 'type'"],
        ),
        (lambda d: d["prompts"][1].pop("input_tokens"), ["prompts[1]: needs 'messages'", "'input_tokens'"]),
        (lambda d: d["prompts"][1].update(input_tokens=0), ["prompts[1].input_tokens: must be >= 1 (got 0)"]),
        (lambda d: d["prompts"][1].update(name="summarize"), ["prompts[1].name: duplicate prompt name 'summarize' (also prompts[0])"]),
        (lambda d: d["models"][1].update(model="claude-haiku-4-5"), ["models[1].model: duplicate model"]),
        (lambda d: d["prompts"][0].update(temperature=0.5), ['prompts[0].temperature: needs anthropic_version: "2023-06-01"']),
        (lambda d: d["prompts"][0].update(extra={"top_p": 0.9}), ["prompts[0].extra.top_p: needs anthropic_version"]),
        (
            lambda d: (d.update(anthropic_version="2023-06-01"), d["prompts"][0].update(temperature=1.5)),
            ["prompts[0].temperature: must be <= 1 (got 1.5)"],
        ),
        (
            lambda d: d["prompts"][0].update(thinking={"type": "on"}),
            ["prompts[0].thinking.type: must be one of 'enabled', 'adaptive' or 'disabled'"],
        ),
        (
            lambda d: d["prompts"][1].update(thinking={"type": "enabled"}),
            ["prompts[1].thinking.budget_tokens: required when thinking type is 'enabled'"],
        ),
        (
            lambda d: d["prompts"][1].update(thinking={"type": "enabled", "budget_tokens": 5000}),
            ["prompts[1].thinking.budget_tokens: must be < max_tokens (300)"],
        ),
        (lambda d: d["prompts"][1].update(extra={"model": "x"}), ["prompts[1].extra.model: not allowed in extra"]),
        (lambda d: d["prompts"][1].update(cache_synthetic="yes"), ["prompts[1].cache_synthetic: must be true or false"]),
        (lambda d: d["prompts"].append("oops"), ["prompts[2]: must be a mapping (got 'oops')"]),
        (lambda d: d.update(anthropic_version="latest"), ['anthropic_version: must be a date like "2023-06-01"']),
        (lambda d: d.update(load={"users": 0}), ["load.users: must be >= 1 (got 0)"]),
        (lambda d: d.update(load={"run_time": "soon"}), ["load.run_time: must be a time span like 30s"]),
        (lambda d: d.update(prices={"m": {"input": 1}}), ["prices.m.output: missing required field"]),
        (lambda d: d.update(slos={"ttft_p99_ms": "fast"}), ["slos.ttft_p99_ms: must be a number (got 'fast')"]),
        (lambda d: d.update(beta=["a,b"]), ["beta[0]: one beta name per item"]),
        (lambda d: d.update(timeout_s=0), ["timeouts.total_s: must be > 0 (got 0)"]),
    ],
)
def test_field_errors(tmp_path, mutate, expected):
    msg = error_of(tmp_path, mutated(mutate))
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"
    assert msg.startswith(str(tmp_path / "x.yaml") + ": ")


def test_several_errors_one_per_line(tmp_path):
    def mutate(d):
        d["prompts"][1]["max_tokens"] = 0
        d["models"][0]["weight"] = -1
        d["strem"] = 1

    msg = error_of(tmp_path, mutated(mutate))
    lines = msg.splitlines()
    assert len(lines) == 3
    path = str(tmp_path / "x.yaml")
    assert all(line.startswith(path + ": ") for line in lines)
    assert any("prompts[1].max_tokens" in line for line in lines)
    assert any("models[0].weight" in line for line in lines)
    assert any("strem: unknown field" in line for line in lines)


def test_error_exposes_problems(tmp_path):
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict(mutated(lambda d: d["prompts"][1].update(max_tokens=0)), source="shipped")
    err = info.value
    assert err.source == "shipped"
    assert err.problems == [("prompts[1].max_tokens", "must be >= 1 (got 0)")]
    assert str(err) == "shipped: prompts[1].max_tokens: must be >= 1 (got 0)"


def test_scenario_from_dict_rejects_non_mapping():
    with pytest.raises(ScenarioError, match="worker: the top level must be a mapping"):
        scenario_from_dict(["a"], source="worker")  # type: ignore[arg-type]


def test_fixture_files_under_tests_data():
    bad = sorted((ROOT / "tests" / "data" / "scenarios").glob("bad_*.yaml"))
    assert len(bad) >= 5
    for path in bad:
        expected = path.read_text().splitlines()[0].removeprefix("# expect:").strip()
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        assert str(path) in str(info.value)
        assert expected in str(info.value), (path.name, str(info.value))


# ----------------------------------------------------------------- round trip, digest


@pytest.mark.parametrize("name", ["demo.yaml", "latency-levers.yaml"])
def test_round_trip_through_json(name):
    s = load_scenario(SCENARIOS / name)
    shipped = json.loads(json.dumps(s.model_dump(mode="json")))
    again = scenario_from_dict(shipped, source="from-master")
    assert again == s
    assert again.digest() == s.digest()
    assert again.source == "from-master"


def test_pickle_round_trip():
    s = load_scenario(SCENARIOS / "demo.yaml")
    assert pickle.loads(pickle.dumps(s)) == s


def test_digest_stable_and_sensitive(tmp_path):
    a = load_scenario(write(tmp_path, MINIMAL, "a.yaml"))
    # same content, different layout and key order
    b = scenario_from_dict(json.loads(json.dumps(base())))
    assert a.digest() == b.digest()
    assert len(a.digest()) == 64 and int(a.digest(), 16) >= 0
    assert a.digest() == load_scenario(write(tmp_path, MINIMAL, "a.yaml")).digest()
    c = scenario_from_dict(mutated(lambda d: d.update(stream=0.5)))
    assert c.digest() != a.digest()


def test_scenario_is_immutable():
    s = scenario_from_dict(base())
    with pytest.raises(pydantic.ValidationError):
        s.stream = 0.1  # type: ignore[misc]


def test_parse_timespan():
    assert parse_timespan("30s") == 30
    assert parse_timespan("2m") == 120
    assert parse_timespan("1h30m") == 5400
    assert parse_timespan("45") == 45
    assert parse_timespan(10) == 10
    for bad in ("", "abc", "0s", "-5", True):
        with pytest.raises(ValueError):
            parse_timespan(bad)


# ----------------------------------------------------------------- sampling


def five_sigma(p: float, n: int) -> float:
    """Five standard deviations of a share p among n draws: a correct sampler strays further
    less than once in a million runs, whatever the seed."""
    return 5 * math.sqrt(p * (1 - p) / n)


def test_sampler_weights_hold():
    s = scenario_from_dict(base())
    sampler = Sampler(s, seed=123)
    n = 10_000
    picks = [sampler.next() for _ in range(n)]
    models = Counter(p.model for p in picks)
    prompts = Counter(p.prompt.name for p in picks)
    streams = sum(p.stream for p in picks)
    assert models["claude-haiku-4-5"] / n == pytest.approx(0.75, abs=five_sigma(0.75, n))
    assert prompts["summarize"] / n == pytest.approx(2 / 3, abs=five_sigma(2 / 3, n))
    assert streams / n == pytest.approx(0.8, abs=five_sigma(0.8, n))
    assert all(isinstance(p, Pick) and isinstance(p.prompt, Prompt) for p in picks)


def test_sampler_deterministic_per_seed():
    s = scenario_from_dict(base())
    s1, s2, s3 = Sampler(s, 42), Sampler(s, 42), Sampler(s, 43)
    run1 = [(p.model, p.prompt.name, p.stream) for p in (s1.next() for _ in range(500))]
    run2 = [(p.model, p.prompt.name, p.stream) for p in (s2.next() for _ in range(500))]
    run3 = [(p.model, p.prompt.name, p.stream) for p in (s3.next() for _ in range(500))]
    assert run1 == run2
    assert run1 != run3


@pytest.mark.parametrize("share, expected", [(0, False), (1, True), (False, False), (True, True)])
def test_stream_share_extremes_exact(share, expected):
    s = scenario_from_dict(mutated(lambda d: d.update(stream=share)))
    sampler = Sampler(s, seed=1)
    assert all(sampler.next().stream is expected for _ in range(2000))


def test_prompt_stream_override_wins():
    def mutate(d):
        d["stream"] = 1
        d["prompts"][0]["stream"] = False  # summarize never streams
        d["prompts"][1]["stream"] = 0.5

    s = scenario_from_dict(mutated(mutate))
    sampler = Sampler(s, 9)
    picks = [sampler.next() for _ in range(5000)]
    assert not any(p.stream for p in picks if p.prompt.name == "summarize")
    long = [p.stream for p in picks if p.prompt.name == "long-context"]
    assert sum(long) / len(long) == pytest.approx(0.5, abs=five_sigma(0.5, len(long)))


def test_pick_is_frozen_and_has_mode():
    s = scenario_from_dict(base())
    pick = Sampler(s, 0).next()
    with pytest.raises(AttributeError):
        pick.model = "x"  # type: ignore[misc]
    assert pick.mode in ("stream", "blocking")
    assert pick == Pick(pick.model, pick.prompt, pick.stream)


def test_sampler_is_an_iterator():
    s = scenario_from_dict(base())
    it = iter(Sampler(s, 0))
    assert isinstance(next(it), Pick)


def test_dict_input_not_mutated():
    d = base()
    before = copy.deepcopy(d)
    scenario_from_dict(d)
    assert d == before
