"""Prices: the built-in table, a scenario's overrides (cache prices included) and unpriced models."""

from __future__ import annotations

import pytest

from harness.pricing import Price, PriceTable
from harness.scenario import scenario_from_dict


def test_cost_from_usage_with_cache_factors_and_overrides() -> None:
    table = PriceTable({"custom": Price(input=2.0, output=8.0)})
    assert table.cost("claude-haiku-4-5", 1_000_000, 0) == pytest.approx(1.0)
    assert table.cost("claude-sonnet-4-5", 0, 1_000_000) == pytest.approx(15.0)
    # unset cache prices: reads 0.1x, writes 1.25x the input price
    assert table.cost("custom", 1_000_000, 1_000_000, 1_000_000, 1_000_000) == pytest.approx(2 + 8 + 0.2 + 2.5)
    assert table.cost("unknown-model", 10, 10) is None
    assert table.unpriced(["custom", "unknown-model", "claude-haiku-4-5"]) == ["unknown-model"]


def test_a_scenarios_cache_prices_are_billed_as_given_a_zero_included() -> None:
    scenario = scenario_from_dict(
        {
            "name": "cache",
            "models": ["m"],
            "prompts": [{"name": "p", "input_tokens": 10, "max_tokens": 10}],
            "prices": {"m": {"input": 3.0, "output": 15.0, "cache_read": 0, "cache_write": 6.0}},
        }
    )
    table = PriceTable(scenario.prices)
    assert table.cost("m", 0, 0, cache_read_tokens=1_000_000) == 0.0
    assert table.cost("m", 0, 0, cache_creation_tokens=1_000_000) == pytest.approx(6.0)
    assert table.cost("m", 1_000_000, 1_000_000) == pytest.approx(18.0)
