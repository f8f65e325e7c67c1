"""What the next request sends: the per-request choice of model, prompt and streaming.

:class:`Sampler` picks model and prompt by weight and streaming by share with its own
``random.Random(seed)``; a prompt's ``stream`` (bool or share) overrides the scenario's.
The schema it samples from lives in :mod:`harness.scenario`.
"""

from __future__ import annotations

import bisect
import random
from typing import NamedTuple

from harness.datasets import EntryOrder
from harness.scenario import Prompt, Scenario
from harness.variants import VariantDraw, variant_named

__all__ = ["Pick", "Sampler"]


class Pick(NamedTuple):
    """One sampled request: which model, which prompt, streaming or not (and for a dataset
    prompt, which of its entries)."""

    model: str
    prompt: Prompt
    stream: bool
    entry: int | None = None
    turn: int | None = None  # a conversation's request: its place in the session
    variant: str | None = None  # the scenario's variant it was assigned to (harness/variants.py): its prompt as sent

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "blocking"


def assigned(pick: Pick, scenario: Scenario, name: str) -> Pick:
    """`pick` as variant `name` sends it: its model, streaming and prompt as sent."""
    variant = variant_named(scenario, name)
    assert variant is not None
    return pick._replace(
        model=variant.model or pick.model,
        stream=pick.stream if variant.stream is None else variant.stream,
        prompt=scenario._variant_prompts[(name, pick.prompt.name)],
        variant=name,
    )


class Sampler:
    """Weighted, deterministic choice of (model, prompt, stream) for each request.

    Every ``next()`` draws exactly three numbers from its own ``random.Random(seed)``, so a
    sequence of picks depends only on the scenario and the seed (a variant is drawn apart). A stream share of 0 never
    streams and 1 always does. A dataset prompt's entry comes from its own order (seeded apart:
    the other picks do not change with it).
    """

    def __init__(self, scenario: Scenario, seed: int = 0, shared: dict[int, EntryOrder] | None = None):
        """`shared`: entry orders the process's samplers share (a file sent in order), by prompt index."""
        self.scenario = scenario
        self.seed = seed
        self._rng = random.Random(seed)
        self._models = [m.model for m in scenario.models]
        self._model_cum = self._cumulative([m.weight for m in scenario.models])
        self._prompts = list(scenario.prompts)
        self._prompt_cum = self._cumulative([p.weight for p in scenario.prompts])
        self._shares = [scenario.stream if p.stream is None else float(p.stream) for p in scenario.prompts]
        self._orders = {
            index: EntryOrder(len(scenario._datasets[p.name]), p.dataset.order, seed * 7_919 + index)
            for index, p in enumerate(scenario.prompts)
            if p.dataset is not None
        } | (shared or {})
        self._variants = VariantDraw(scenario, seed) if scenario.variants else None

    @staticmethod
    def _cumulative(weights: list[float]) -> list[float]:
        total = 0.0
        out = []
        for w in weights:
            total += w
            out.append(total)
        return out

    def _index(self, cum: list[float]) -> int:
        i = bisect.bisect_right(cum, self._rng.random() * cum[-1])
        return min(i, len(cum) - 1)

    def next(self) -> Pick:
        model = self._models[self._index(self._model_cum)]
        pi = self._index(self._prompt_cum)
        stream = self._rng.random() < self._shares[pi]
        order = self._orders.get(pi)
        pick = Pick(model, self._prompts[pi], stream, order.next() if order is not None else None)
        return assigned(pick, self.scenario, self._variants.next()) if self._variants is not None else pick

    def __iter__(self) -> Sampler:
        return self

    def __next__(self) -> Pick:
        return self.next()
