"""Prices per million tokens and the cost of one request, from the server's usage.

The table is DESIGN.md's; a scenario's `prices` mapping overrides or extends it. Cache
reads are billed at 0.1x and 5-minute cache writes at 1.25x the input price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

CACHE_READ_FACTOR = 0.1
CACHE_WRITE_FACTOR = 1.25


@dataclass(frozen=True, slots=True)
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens


DEFAULT_PRICES: dict[str, Price] = {
    "claude-haiku-4-5": Price(1.0, 5.0),
    "claude-sonnet-4-5": Price(3.0, 15.0),
    "claude-haiku-5-5": Price(0.10, 0.50),
    "claude-sonnet-5-5": Price(2.0, 10.0),
    "claude-opus-5-5": Price(4.0, 20.0),
    "claude-fable-5-1": Price(10.0, 50.0),
}


class PriceTable:
    """Looks up a model's price; unknown models cost nothing and are reported as unpriced."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}

    def price(self, model: str) -> Price | None:
        return self._prices.get(model)

    def cost(
        self,
        model: str,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
    ) -> float | None:
        price = self._prices.get(model)
        if price is None:
            return None
        input_cost = price.input * (
            (input_tokens or 0)
            + CACHE_READ_FACTOR * (cache_read_tokens or 0)
            + CACHE_WRITE_FACTOR * (cache_creation_tokens or 0)
        )
        return (input_cost + price.output * (output_tokens or 0)) / 1_000_000
