"""Variants in a scenario (harness/variants.py): their checks, what each changes in the request
sent, and the draw: interleaved at random, apart from the mix."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from harness.payload import build_body
from harness.sampler import Sampler
from harness.scenario import ScenarioError, scenario_from_dict
from harness.variants import variant_headers

BASE: dict[str, Any] = {
    "name": "levers",
    "models": ["claude-sonnet-4-5"],
    "prompts": [{"name": "q", "max_tokens": 300, "input_tokens": 500, "messages": [{"role": "user", "content": "Why stream?"}]}],
    "beta": ["one-2025-01-01"],
}
VARIANTS = [
    {"name": "base", "baseline": True},
    {"name": "haiku", "model": "claude-haiku-4-5"},
    {"name": "short", "max_tokens": 64, "stream": False},
    {"name": "cold", "temperature": 0, "anthropic_version": "2023-06-01"},
    {"name": "fast", "extra": {"speed": "fast"}, "beta": ["fast-mode-2026-02-01"]},
    {"name": "cached", "cache": True, "input_tokens": 2000, "system": "Be brief."},
]


def scenario(variants: list[dict[str, Any]] = VARIANTS, **fields: Any):  # type: ignore[no-untyped-def]
    return scenario_from_dict({**BASE, **fields, "variants": variants})


def test_each_variant_changes_only_its_own_settings_in_the_body_and_headers() -> None:
    s = scenario()
    picks = {}
    sampler = Sampler(s, seed=3)
    while len(picks) < len(VARIANTS):
        pick = sampler.next()
        picks.setdefault(pick.variant, pick)
    bodies = {name: build_body(pick, s) for name, pick in picks.items()}
    base = bodies["base"]
    assert base["model"] == "claude-sonnet-4-5" and base["max_tokens"] == 300 and base["stream"] is True
    assert bodies["haiku"] | {"model": "claude-sonnet-4-5"} == base
    assert bodies["short"]["max_tokens"] == 64 and "stream" not in bodies["short"] and picks["short"].mode == "blocking"
    assert bodies["cold"] == base | {"temperature": 0}
    assert bodies["fast"] == base | {"speed": "fast"}
    cached = bodies["cached"]
    assert cached["system"] == "Be brief." and cached["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert len(cached["messages"][0]["content"][0]["text"]) == 4 * 2000  # not sized yet: 4 bytes a token
    assert variant_headers(s, "cold") == {"anthropic-version": "2023-06-01"}
    assert variant_headers(s, "fast") == {"anthropic-beta": "one-2025-01-01,fast-mode-2026-02-01"}
    assert variant_headers(s, "base") == {}


def test_the_mix_draws_the_same_picks_with_and_without_variants() -> None:
    mix = {**BASE, "models": ["a", "b"], "prompts": [*BASE["prompts"], {"name": "r", "max_tokens": 9, "input_tokens": 9}], "stream": 0.5}
    plain, varied = Sampler(scenario_from_dict(mix), seed=5), Sampler(scenario(**mix), seed=5)
    for _ in range(500):
        a, b = plain.next(), varied.next()
        assert (a.prompt.name, a.model if b.variant != "haiku" else "claude-haiku-4-5") == (b.prompt.name, b.model)
        assert b.variant is not None


def runs_z(sequence: list[bool]) -> float:
    """Wald-Wolfowitz runs test: how far the number of runs is from a random order's, in sd."""
    n1, n2 = sum(sequence), len(sequence) - sum(sequence)
    runs = 1 + sum(a != b for a, b in itertools.pairwise(sequence))
    mean = 2 * n1 * n2 / (n1 + n2) + 1
    variance = (mean - 1) * (mean - 2) / (n1 + n2 - 1)
    return (runs - mean) / math.sqrt(variance)


def test_variants_are_drawn_by_weight_and_interleaved_at_random() -> None:
    weighted = [{"name": "a"}, {"name": "b", "weight": 3}]
    sampler = Sampler(scenario(weighted), seed=11)
    names = [sampler.next().variant for _ in range(4000)]
    assert 0.72 < names.count("b") / len(names) < 0.78
    assert abs(runs_z([name == "a" for name in names])) < 3  # neither in blocks nor alternating
    again = Sampler(scenario(weighted), seed=11)
    assert [again.next().variant for _ in range(50)] == names[:50]  # seeded


@pytest.mark.parametrize(
    ("variants", "where", "says"),
    [
        ([{"name": "only"}], "variants", "at least two"),
        ([{"name": "a"}, {"name": "a"}], "variants[1].name", "duplicate variant name 'a'"),
        ([{"name": "a", "baseline": True}, {"name": "b", "baseline": True}], "variants[1].baseline", "only one baseline"),
        ([{"name": "a"}, {"name": "b c"}], "variants[1].name", "letters, digits"),
        ([{"name": "a"}, {"name": "b", "temperature": 0}], "variants[1].temperature", 'anthropic_version: "2023-06-01"'),
        ([{"name": "a"}, {"name": "b", "extra": {"stream": True}}], "variants[1]", "extra.stream: not allowed"),
        ([{"name": "a"}, {"name": "b", "max_tokens": 0}], "variants[1].max_tokens", ">= 1"),
        ([{"name": "a"}, {"name": "b", "thinking": {"type": "enabled", "budget_tokens": 5000}}], "variants[1]", "must be < max_tokens"),
        ([{"name": "a"}, {"name": "b", "speed": "fast"}], "variants[1].speed", "unknown field"),
    ],
)
def test_a_bad_variant_is_named_with_what_is_allowed(variants: list[dict[str, Any]], where: str, says: str) -> None:
    with pytest.raises(ScenarioError) as error:
        scenario(variants)
    assert f"<scenario>: {where}: " in str(error.value) and says in str(error.value)


def test_caching_needs_a_synthetic_context() -> None:
    plain = {**BASE, "prompts": [{"name": "q", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}]}
    with pytest.raises(ScenarioError, match=r"variants\[1\]\.cache: marks a synthetic context: prompt 'q' has none"):
        scenario_from_dict({**plain, "variants": [{"name": "a"}, {"name": "b", "cache": True}]})
