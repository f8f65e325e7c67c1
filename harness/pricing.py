"""Prices per million tokens and the cost of one request, from the server's usage.

One `Price` type serves the built-in table and a scenario's `prices:` (which overrides or
extends the table). Cache reads are billed at `cache_read` per million tokens and 5-minute
cache writes at `cache_write`; left unset, they are 0.1x and 1.25x the input price (the
API's published multipliers). A model without a price has no cost (None), never $0: the
summary counts such requests apart and the cost guard refuses to run them against a real API.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from harness.platforms import base_model

CACHE_READ_FACTOR = 0.1
CACHE_WRITE_FACTOR = 1.25


class Price(BaseModel):
    """Dollars per million tokens."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)

    def cost(self, input_tokens: int, output_tokens: int, cache_read_tokens: int = 0, cache_creation_tokens: int = 0) -> float:
        cache_read = self.input * CACHE_READ_FACTOR if self.cache_read is None else self.cache_read
        cache_write = self.input * CACHE_WRITE_FACTOR if self.cache_write is None else self.cache_write
        dollars_per_million = (
            self.input * input_tokens + self.output * output_tokens + cache_read * cache_read_tokens + cache_write * cache_creation_tokens
        )
        return dollars_per_million / 1_000_000


DEFAULT_PRICES: dict[str, Price] = {
    "claude-haiku-4-5": Price(input=1.0, output=5.0),
    "claude-sonnet-4-5": Price(input=3.0, output=15.0),
    "claude-haiku-5-5": Price(input=0.10, output=0.50),
    "claude-sonnet-5-5": Price(input=2.0, output=10.0),
    "claude-opus-5-5": Price(input=4.0, output=20.0),
    "claude-fable-5-1": Price(input=10.0, output=50.0),
}


class PriceTable:
    """Looks up a model's price: the scenario's first, then the built-in table."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}

    def price(self, model: str) -> Price | None:
        """The model's price, or that of the model a platform's id names (harness/platforms.py)."""
        return self._prices.get(model) or self._prices.get(base_model(model))

    def unpriced(self, models: list[str]) -> list[str]:
        return [model for model in models if self.price(model) is None]

    def cost(
        self,
        model: str,
        input_tokens: int | None,
        output_tokens: int | None,
        cache_read_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
    ) -> float | None:
        price = self.price(model)
        if price is None:
            return None
        return price.cost(input_tokens or 0, output_tokens or 0, cache_read_tokens or 0, cache_creation_tokens or 0)
