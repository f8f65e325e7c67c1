"""Synthetic prompts of an exact size: `input_tokens: N` sized with the API's own count.

A prompt's `input_tokens` is the request's input tokens as the API counts them (system, messages
and the synthetic text together). Before the run sends anything, each process that sends
(alone, or each worker) asks `POST /v1/messages/count_tokens` of the target, with its own key,
for each (model, synthetic prompt, variant): the synthetic text's length in bytes is searched (secant
steps within a bracket, at most `MAX_CALLS` counts) until the count is the target, or as near as
the text's words allow. The bytes found are kept per (target, model, prompt's body, N) for the
process (a web UI's next run asks again only for what changed), and every body the run builds
uses them. The achieved count is reported (the summary's `input_sizes`). A target that cannot
count (a gateway without the endpoint, an error) leaves the prompt at 4 bytes a token, said
once and reported with the reason; `input_tokens_by: bytes` in the scenario skips the counting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harness.network import tls_context
from harness.payload import BYTES_PER_TOKEN, body_bytes, build_body
from harness.results import InputSize
from harness.sampler import Pick

if TYPE_CHECKING:
    from harness.scenario import Scenario
    from harness.transport import Target

__all__ = ["calibrate", "fit_size"]

logger = logging.getLogger(__name__)

COUNT_PATH = "/v1/messages/count_tokens"
MAX_CALLS = 12
TIMEOUT_S = 5.0  # a count: a target that stalls delays the run's start by this, once
_FOUND: dict[tuple[str, str, str, int], tuple[int, int]] = {}  # (target, model, body digest, N) -> (bytes, count)


class CountError(Exception):
    """The target could not count a request's tokens."""


def fit_size(target: int, count_at: Callable[[int], int], max_calls: int = MAX_CALLS) -> tuple[int, int]:
    """The text size in bytes whose count is `target`, or the nearest found (the smaller on a
    tie): (bytes, count). `count_at` must not decrease as the size grows."""
    size = BYTES_PER_TOKEN * target
    seen: dict[int, int] = {}
    low: tuple[int, int] | None = None  # the largest size counted below the target
    high: tuple[int, int] | None = None  # the smallest size counted above it
    for _ in range(max_calls):
        count = seen[size] = count_at(size)
        if count == target:
            return size, count
        if count < target and (low is None or size > low[0]):
            low = (size, count)
        if count > target and (high is None or size < high[0]):
            high = (size, count)
        size = _next_size(target, low, high)
        if size in seen or size < 1:
            break
    return min(seen.items(), key=lambda item: (abs(item[1] - target), item[0]))


def _next_size(target: int, low: tuple[int, int] | None, high: tuple[int, int] | None) -> int:
    """A secant step between the bracket's ends (from one end: as many bytes per token as it has)."""
    if low is not None and high is not None:
        if high[0] - low[0] <= 1:
            return high[0]  # (seen: the search ends)
        guess = low[0] + (target - low[1]) * (high[0] - low[0]) / (high[1] - low[1])
        return min(max(round(guess), low[0] + 1), high[0] - 1)
    size, count = low or high  # type: ignore[misc]
    return max(1, round(size * target / max(count, 1)))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: the key goes to the target given, nowhere else."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _opener(target: Target) -> urllib.request.OpenerDirector:
    """The run's way to the target (its proxy, its TLS trust), no redirect followed."""
    proxies = {} if target.proxy is None else {"http": target.proxy.url, "https": target.proxy.url}
    return urllib.request.build_opener(
        _NoRedirects, urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=tls_context())
    )


def _count(target: Target, body: dict[str, Any]) -> int:
    """POST count_tokens to the run's target, with its key and headers (no redirect followed)."""
    request = urllib.request.Request(
        target.base_url.rstrip("/") + COUNT_PATH,
        data=body_bytes({key: body[key] for key in ("model", "messages", "system", "tools") if key in body}),
        headers={**target.headers, **target.auth_headers},
        method="POST",
    )
    try:
        with _opener(target).open(request, timeout=TIMEOUT_S) as response:
            if response.status != 200:  # a redirect, not followed
                raise CountError(f"count_tokens answered HTTP {response.status}")
            return int(json.loads(response.read())["input_tokens"])
    except urllib.error.HTTPError as error:
        raise CountError(f"count_tokens answered HTTP {error.code}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CountError(f"count_tokens failed: {type(error).__name__}: {error}"[:200]) from None


def synthetic_picks(scenario: Scenario) -> list[Pick]:
    """Every (model, synthetic prompt, variant) the run may send, once each."""
    models = [entry.model for entry in scenario.models]
    picks = [] if scenario.variants else [Pick(model, prompt, False) for prompt in scenario.prompts for model in models]
    for variant in scenario.variants:
        for prompt in scenario.prompts:
            sent = scenario._variant_prompts[(variant.name, prompt.name)]
            picks += [Pick(model, sent, False, variant=variant.name) for model in ([variant.model] if variant.model else models)]
    return [pick for pick in picks if pick.prompt.input_tokens is not None]


def calibrate(scenario: Scenario, target: Target, count: Callable[[Target, dict[str, Any]], int] = _count) -> list[InputSize]:
    """Size every (model, synthetic prompt, variant) of the scenario on `target`: the bytes go to
    `scenario._input_bytes`; what was reached is returned."""
    sizes = []
    failed = None if target.platform.is_api else f"count_tokens is asked of the Anthropic API only (platform {target.platform.name})"
    for pick in synthetic_picks(scenario):
        key = (pick.model, pick.prompt.name, pick.variant or "")
        tokens = pick.prompt.input_tokens
        assert tokens is not None
        scenario._input_bytes.pop(key, None)
        if scenario.input_tokens_by == "bytes" or failed is not None:
            sizes.append(_by_bytes(pick, tokens, failed))
            continue
        try:
            text_bytes, achieved = _fitted(target, scenario, pick, tokens, count)
        except CountError as error:
            failed = str(error)
            logger.warning("input_tokens: %s; synthetic prompts are sized at %d bytes a token", failed, BYTES_PER_TOKEN)
            sizes.append(_by_bytes(pick, tokens, failed))
            continue
        scenario._input_bytes[key] = text_bytes
        sizes.append(
            InputSize(
                model=pick.model, prompt=pick.prompt.name, variant=pick.variant, target=tokens, achieved=achieved, text_bytes=text_bytes
            )
        )
    return sizes


def _fitted(target: Target, scenario: Scenario, pick: Pick, tokens: int, count: Callable[[Target, dict[str, Any]], int]) -> tuple[int, int]:
    """The synthetic text's bytes that make `pick`'s request `tokens` long, and its count (kept per
    target and body shape)."""
    plain = build_body(pick, scenario, BYTES_PER_TOKEN * tokens)  # the body's shape
    digest = hashlib.sha256(body_bytes(plain)).hexdigest()
    key = (target.base_url, pick.model, digest, tokens)
    if key not in _FOUND:
        _FOUND[key] = fit_size(tokens, lambda size: count(target, build_body(pick, scenario, size)))
    return _FOUND[key]


def _by_bytes(pick: Pick, tokens: int, problem: str | None) -> InputSize:
    return InputSize(
        model=pick.model,
        prompt=pick.prompt.name,
        variant=pick.variant,
        target=tokens,
        achieved=None,
        text_bytes=BYTES_PER_TOKEN * tokens,
        by="bytes",
        problem=problem,
    )
