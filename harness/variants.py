"""Variants: the latency levers as an experiment inside one run.

A scenario's `variants:` each change some request settings on top of what the mix picked
(model, system prompt, input size, max_tokens, temperature, streaming, thinking, prompt
caching, `extra` body fields such as `speed` or `service_tier`, beta names, anthropic-version).
Every request is assigned to a variant at random by weight, with its own seeded generator, so
the variants interleave over the whole run (drift in the target hits all alike) and the mix
draws stay what they would be without variants. One variant is the baseline (the one marked
`baseline: true`, else the first) that the others are compared with (harness/experiment.py).

This module owns the schema of a variant, the checks of a scenario's variants, each
(variant, prompt)'s prompt as sent, and the draw.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, field_validator

from harness.fields import StrictModel
from harness.scenario_errors import field_error

if TYPE_CHECKING:
    from harness.scenario import Prompt, Scenario

__all__ = ["Variant", "VariantDraw", "baseline_of", "check_variants", "entry_overrides", "variant_headers", "variant_named"]

MAX_VARIANTS = 16
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:+-]*"  # it labels Locust's rows, records and points
SAMPLING_PARAMS_VERSION = "2023-06-01"  # the last anthropic-version that takes temperature (harness/scenario.py)


class Variant(StrictModel):
    """What a variant changes; a setting left out is the mix's own."""

    name: str = Field(min_length=1, max_length=64)
    baseline: bool = False
    weight: float = Field(default=1.0, gt=0)
    model: str | None = Field(default=None, min_length=1)
    system: Any = None
    input_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=1)
    stream: bool | None = None
    thinking: dict[str, Any] | None = None
    cache: bool | None = None  # the synthetic context marked for prompt caching (a prompt's cache_synthetic)
    extra: dict[str, Any] = Field(default_factory=dict)  # merged over the prompt's extra
    beta: list[str] = Field(default_factory=list)  # beta names added to the scenario's
    anthropic_version: str | None = Field(default=None, pattern=r"^\d{4}-\d{2}-\d{2}$")

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(f"letters, digits and _ . : + - only, starting with a letter or digit (got {value!r})")
        return value

    @field_validator("anthropic_version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        return value.strftime("%Y-%m-%d") if hasattr(value, "strftime") else value  # YAML reads 2023-06-01 as a date

    def prompt_updates(self) -> dict[str, Any]:
        """The prompt fields this variant sets (the names of harness.scenario.Prompt)."""
        updates = {
            name: getattr(self, name)
            for name in ("system", "input_tokens", "max_tokens", "temperature", "thinking")
            if getattr(self, name) is not None
        }
        if self.cache is not None:
            updates["cache_synthetic"] = self.cache
        return updates

    def changes(self) -> dict[str, Any]:
        """What it changes, for the reports (its name, role and weight left out)."""
        return self.model_dump(exclude={"name", "baseline", "weight"}, exclude_defaults=True, mode="json")


def _variant_prompt(prompt: Prompt, variant: Variant) -> Prompt:
    data = prompt.model_dump()
    data.update(variant.prompt_updates())
    data["extra"] = {**prompt.extra, **variant.extra}
    return type(prompt).model_validate(data)


def check_variants(scenario: Scenario) -> dict[tuple[str, str], Prompt]:
    """Each (variant, prompt)'s prompt as sent; a problem raises a field error naming the variant."""
    variants = scenario.variants
    if len(variants) == 1:
        raise field_error("variants", "needs at least two variants to compare (a baseline and another)")
    if len(variants) > MAX_VARIANTS:
        raise field_error("variants", f"at most {MAX_VARIANTS} variants (got {len(variants)})")
    seen: dict[str, int] = {}
    for i, variant in enumerate(variants):
        if variant.name in seen:
            raise field_error(f"variants[{i}].name", f"duplicate variant name {variant.name!r} (also variants[{seen[variant.name]}])")
        seen[variant.name] = i
    marked = [i for i, variant in enumerate(variants) if variant.baseline]
    if len(marked) > 1:
        raise field_error(f"variants[{marked[1]}].baseline", f"only one baseline (also variants[{marked[0]}])")
    prompts: dict[tuple[str, str], Prompt] = {}
    for i, variant in enumerate(variants):
        version = variant.anthropic_version or scenario.effective_anthropic_version
        for prompt in scenario.prompts:
            if variant.cache and variant.input_tokens is None and prompt.input_tokens is None:
                raise field_error(f"variants[{i}].cache", f"marks a synthetic context: prompt {prompt.name!r} has none (give input_tokens)")
            try:
                prompts[(variant.name, prompt.name)] = sent = _variant_prompt(prompt, variant)
            except ValidationError as error:
                first = error.errors()[0]
                where = ".".join(str(part) for part in first["loc"])
                raise field_error(f"variants[{i}]", f"with prompt {prompt.name!r}: {where + ': ' if where else ''}{first['msg']}") from None
            if sent.temperature is not None and version > SAMPLING_PARAMS_VERSION:
                raise field_error(
                    f"variants[{i}].temperature" if variant.temperature is not None else f"variants[{i}].anthropic_version",
                    f"temperature needs anthropic_version: \"{SAMPLING_PARAMS_VERSION}\" (the variant's or the scenario's; "
                    f"{version} rejects it)",
                )
    return prompts


def baseline_of(scenario: Scenario) -> str | None:
    """The variant the others are compared with: the one marked, else the first."""
    marked = [variant.name for variant in scenario.variants if variant.baseline]
    return marked[0] if marked else (scenario.variants[0].name if scenario.variants else None)


def variant_named(scenario: Scenario, name: str | None) -> Variant | None:
    """The scenario's variant of that name (None: none; a scenario has at most MAX_VARIANTS)."""
    return next((variant for variant in scenario.variants if variant.name == name), None)


def entry_overrides(scenario: Scenario, name: str) -> dict[str, Any]:
    """The body fields a variant sets that a dataset entry's own would otherwise give."""
    variant = variant_named(scenario, name)
    assert variant is not None
    return {key: getattr(variant, key) for key in ("max_tokens", "system") if getattr(variant, key) is not None}


def variant_headers(scenario: Scenario, name: str | None) -> dict[str, str]:
    """The headers a variant's requests send in place of the scenario's (none: the same)."""
    variant = variant_named(scenario, name)
    if variant is None or (not variant.beta and variant.anthropic_version is None):
        return {}
    headers = {}
    if variant.anthropic_version is not None:
        headers["anthropic-version"] = variant.anthropic_version
    if variant.beta:
        headers["anthropic-beta"] = ",".join(dict.fromkeys([*scenario.beta, *variant.beta]))
    return headers


class VariantDraw:
    """Each request's variant, by weight, from a generator of its own (`seed`): the mix's draws
    do not change with it."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self._names = [variant.name for variant in scenario.variants]
        self._cumulative = list(itertools.accumulate(variant.weight for variant in scenario.variants))
        self._rng = random.Random(f"variants {seed}")

    def next(self) -> str:
        index = bisect.bisect_right(self._cumulative, self._rng.random() * self._cumulative[-1])
        return self._names[min(index, len(self._names) - 1)]
