"""Response planning: what a Messages response contains and when each of its writes is due.

A response is planned completely when its request arrives. All random draws of request
number *n* come from `request_rng(seed, n)`, always in the same order (the seeded profile
must give the same lengths, timings and faults): the six fault draws (`FaultDraws`), the
output length, the TTFT jitter, the stall and fault positions, the filler words' offsets,
each text chunk's jitter, then (streams with visible thinking) each thinking chunk's jitter.

A plan is a list of items `(target_ns, kind, bytes, tokens)` in write order (`PlanItem`,
kinds `ITEM_*`), written by the connection when due. Timeline of a streamed response
(T(p) = arrival + ttft + p * 1/output_tps, plus jitter of +-jitter*gap on each chunk, not
accumulated; ttft = (ttft_ms + ttft_ms_per_1k_input * input/1000) * (1 +- jitter), plus
standard_only_ttft_ms before the jitter for `service_tier: standard_only`, and arrival + ttft
moved to the next multiple of first_output_grid_ms on the monotonic clock when it is set;
output_tps times fast_output_factor for `speed: fast`):
  arrival      -> headers + message_start (+ ping)
  T(0)         -> thinking block start + first thinking_delta   (thinking on)
  T(p)         -> thinking_delta chunks
  T(th)        -> signature_delta + content_block_stop of the thinking block
  T(th)        -> text content_block_start + first text_delta   (= the first text)
  T(th+q)      -> further text_delta chunks (tokens_per_chunk tokens each)
  last chunk   -> content_block_stop, message_delta (cumulative usage), message_stop
A blocking response is written in one piece at the time the stream would have ended.

A request with `tools` whose last message carries no tool_result (and whose tool_choice is not
`none`) is answered with a call of its first tool (or the one tool_choice names) in place of
the text: a tool_use block whose input, {"query": "<filler words>"}, arrives in
input_json_delta chunks on the text's timeline (its first chunk is the "first text" of the
ground truth), stop_reason `tool_use`. The answer to a tool_result is text.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from itertools import repeat
from typing import Any, NamedTuple

from harness.emulator.profile import Faults, ModelProfile, OutputTokens
from harness.emulator.wire import (
    STREAM_ERROR_END,
    TEXT_BLOCK_STARTS,
    TEXT_TOKENS,
    THINKING_BLOCK_START,
    THINKING_TOKENS,
    TOOL_INPUT_OPEN,
    InputUsage,
    error_body,
    input_json_delta_event,
    json_response,
    message_body,
    signature_events,
    stream_tail,
    text_delta_event,
    thinking_delta_event,
    tool_block_start,
)

# item kinds of a response plan
ITEM_THINK, ITEM_SIGNATURE, ITEM_EMPTY, ITEM_TEXT, ITEM_TAIL, ITEM_ERROR, ITEM_DROP, ITEM_BLOCK = range(8)
DELTA_TOOL = ITEM_BLOCK + 1  # DeltaEvents' kind of a tool call's input chunks (their items are ITEM_TEXT)
PlanItem = tuple[int, int, bytes, int]  # (target_ns, kind, bytes written, output tokens they carry)


def chunk_targets(base: float, gap: float, j: float, rnd: Callable[[], float], p0: int, n: int, k: int) -> list[int]:
    """Target times of the chunks starting at token positions p0, p0+k, ... (< p0+n).

    Token p is due at base + p*gap; each chunk but the very first output chunk gets a
    uniform +-j*gap jitter that does not accumulate.
    """
    if not j:
        return [int(base + p * gap) for p in range(p0, p0 + n, k)]
    jg = j * gap
    out = [int(base + p * gap + jg * (2.0 * rnd() - 1.0)) for p in range(p0, p0 + n, k)]
    if p0 == 0 and out:
        out[0] = int(base)
    return out


def chunk_token_counts(n: int, k: int) -> list[int]:
    """Tokens of each chunk of n tokens sent k at a time."""
    out = [k] * ((n + k - 1) // k)
    if n % k:
        out[-1] = n % k
    return out


def filler_text(tokens: list[str], off: int, n: int, start: int = 0) -> str:
    """n filler tokens from word `off + start` on (the word lists wrap around)."""
    L = len(tokens)
    return "".join(tokens[(off + start + x) % L] for x in range(n))


class DeltaEvents:
    """Framed content_block_delta events of filler text, cached: a load test repeats the same few."""

    def __init__(self) -> None:
        self._events: dict[tuple[int, int, str], bytes] = {}
        self._tables: dict[tuple[int, int, int], list[bytes]] = {}

    def filler(self, kind: int, index: int, off: int, n: int, k: int) -> list[bytes]:
        """Delta events (ITEM_TEXT, ITEM_THINK or DELTA_TOOL) of block `index` for n filler tokens from word `off`, k tokens each."""
        tok = THINKING_TOKENS if kind == ITEM_THINK else TEXT_TOKENS
        W = len(tok)
        key = (kind, index, k)
        table = self._tables.get(key)
        if table is None:
            table = [self.event(kind, index, filler_text(tok, w, k)) for w in range(W)]
            self._tables[key] = table
        out = [table[(off + q) % W] for q in range(0, n, k)]
        rem = n % k
        if rem:
            out[-1] = self.event(kind, index, filler_text(tok, off, rem, n - rem))
        return out

    def event(self, kind: int, index: int, text: str) -> bytes:
        """One text_delta (ITEM_TEXT), thinking_delta (ITEM_THINK) or input_json_delta (DELTA_TOOL) event."""
        key = (kind, index, text)
        b = self._events.get(key)
        if b is None:
            builder = text_delta_event if kind == ITEM_TEXT else input_json_delta_event if kind == DELTA_TOOL else thinking_delta_event
            b = builder(index, text)
            if len(self._events) < 100_000:
                self._events[key] = b
        return b


# ----------------------------------------------------------------------------- decisions


def request_rng(seed: int, seq: int) -> random.Random:
    """The generator of every random draw of Messages request number `seq`."""
    return random.Random(seed * 1_000_003 + seq)


class FaultDraws(NamedTuple):
    """The first six draws of a request, one per fault (compared with the fault's probability)."""

    rate_limited: float
    overloaded: float
    server_error: float
    stream_error: float
    disconnect: float
    stall: float

    @classmethod
    def draw(cls, rng: random.Random) -> FaultDraws:
        return cls(*[rng.random() for _ in range(6)])


def injected_error(faults: Faults, draws: FaultDraws) -> int | None:
    """The status of the error the faults answer instead of a response (429, 529, 500), or None."""
    if draws.rate_limited < faults.rate_limited:
        return 429
    if draws.overloaded < faults.overloaded:
        return 529
    if draws.server_error < faults.server_error:
        return 500
    return None


def thinking_of(body: dict[str, Any], mp: ModelProfile, max_tokens: int) -> tuple[bool, bool, int]:
    """(thinking on, thinking text omitted, thinking tokens) of a validated request body."""
    config = body.get("thinking")
    if not (isinstance(config, dict) and config.get("type") in ("enabled", "adaptive")):
        return False, False, 0
    tokens = mp.thinking_tokens
    if config.get("type") == "enabled":
        tokens = min(tokens, config["budget_tokens"])
    return True, config.get("display") == "omitted", max(0, min(tokens, max_tokens - 1))


def tool_call_of(body: dict[str, Any]) -> str | None:
    """The tool a request is answered with a call of (see the module docstring), or None."""
    tools = body.get("tools")
    choice = body.get("tool_choice") or {}
    if not tools or choice.get("type") == "none":
        return None
    content = body["messages"][-1]["content"]
    if isinstance(content, list) and any(block.get("type") == "tool_result" for block in content):
        return None
    name = choice.get("name") if choice.get("type") == "tool" else None
    return str(name or tools[0]["name"])


def drawn_output_tokens(ot: OutputTokens, rng: random.Random) -> int:
    """The response length the model wants (before max_tokens): a clipped normal draw."""
    want = round(rng.gauss(ot.mean, ot.sd)) if ot.sd > 0 else round(ot.mean)
    want = max(ot.min, want)
    if ot.max is not None:
        want = min(ot.max, want)
    return want


@dataclass(slots=True)
class ResponsePlan:
    """The decisions of one Messages response; times are ns, perf_counter domain."""

    thinking: bool
    thinking_omitted: bool
    thinking_tokens: int
    text_tokens: int
    stop_reason: str
    base_ns: float  # arrival + ttft: token p is due at base_ns + p * gap_ns
    gap_ns: float
    jitter: float
    tokens_per_chunk: int
    fault: int | None  # ITEM_ERROR (stream error / 529) or ITEM_DROP (disconnect)
    fault_at: int  # text chunks written before the fault (all of them without one)
    text_word_offset: int
    thinking_word_offset: int
    text_targets: list[int]  # each text chunk's target, then the tail's (= the last chunk's)
    rng: random.Random  # draws the thinking chunks' jitter, last
    tool: str | None = None  # the tool called in place of the text

    @property
    def output_tokens(self) -> int:
        return self.thinking_tokens + self.text_tokens


def plan_response(
    mp: ModelProfile,
    faults: Faults,
    draws: FaultDraws,
    rng: random.Random,
    body: dict[str, Any],
    input_tokens: int,
    arrival_ns: int,
) -> ResponsePlan:
    """Lengths, timings and fault of a response (the draws after the fault draws, in order)."""
    max_tokens: int = body["max_tokens"]
    thinking, omitted, thinking_tokens = thinking_of(body, mp, max_tokens)
    tool = tool_call_of(body)
    want = drawn_output_tokens(mp.output_tokens, rng)
    available = max_tokens - thinking_tokens
    text_tokens = min(want, available)

    j = mp.jitter
    ttft = (mp.ttft_ms + mp.ttft_ms_per_1k_input * input_tokens / 1000.0) * 1e6
    if body.get("service_tier") == "standard_only":
        ttft += mp.standard_only_ttft_ms * 1e6
    if j:
        ttft *= 1.0 + j * (2.0 * rng.random() - 1.0)
    base = arrival_ns + ttft
    if mp.first_output_grid_ms:  # a burst: every stream of one grid step starts its output together
        step = mp.first_output_grid_ms * 1e6
        base = math.ceil(base / step) * step
    gap = 1e9 / (mp.output_tps * (mp.fast_output_factor if body.get("speed") == "fast" else 1.0))
    k = mp.tokens_per_chunk
    n_chunks = (text_tokens + k - 1) // k
    stall_from = None
    if faults.stall_ms > 0 and draws.stall < faults.stall:
        stall_from = rng.randint(1, n_chunks)  # text chunk index (n_chunks = the tail)
    fault = None
    if draws.stream_error < faults.stream_error:
        fault = ITEM_ERROR
    elif draws.disconnect < faults.disconnect:
        fault = ITEM_DROP
    fault_at = n_chunks
    if fault is not None:
        fault_at = min(n_chunks, rng.randint(1, max(1, (n_chunks + 1) // 2)))
    text_word_offset = rng.randrange(len(TEXT_TOKENS))
    thinking_word_offset = rng.randrange(len(THINKING_TOKENS))

    # With jitter <= 0.5 the targets are increasing, so no sorting is needed.
    targets = chunk_targets(base, gap, j, rng.random, thinking_tokens, text_tokens, k)
    targets.append(targets[-1])
    if stall_from is not None:
        stall_ns = int(faults.stall_ms * 1e6)
        targets[stall_from:] = [t + stall_ns for t in targets[stall_from:]]
    return ResponsePlan(
        thinking=thinking,
        thinking_omitted=omitted,
        thinking_tokens=thinking_tokens,
        text_tokens=text_tokens,
        stop_reason="max_tokens" if want > available else "tool_use" if tool else "end_turn",
        base_ns=base,
        gap_ns=gap,
        jitter=j,
        tokens_per_chunk=k,
        fault=fault,
        fault_at=fault_at,
        text_word_offset=text_word_offset,
        thinking_word_offset=thinking_word_offset,
        text_targets=targets,
        rng=rng,
        tool=tool,
    )


# ----------------------------------------------------------------------------- plans


def reply_content(plan: ResponsePlan, tool_id: str = "") -> list[dict[str, Any]]:
    """The reply's text block, or its tool call (without thinking)."""
    words = filler_text(TEXT_TOKENS, plan.text_word_offset, plan.text_tokens)
    if plan.tool:
        return [{"type": "tool_use", "id": tool_id, "name": plan.tool, "input": {"query": words}}]
    return [{"type": "text", "text": words.lstrip()}]


def blocking_items(
    plan: ResponsePlan,
    *,
    request_id: str,
    message_id: str,
    model: str,
    signature: str,
    usage: InputUsage,
    keep_alive: bool,
    rate_limit_headers: list[tuple[str, str]],
    retry_headers: list[tuple[str, str]],
) -> list[PlanItem]:
    """A blocking response: one write at the time the stream would have ended (or its fault)."""
    if plan.fault is not None:
        fault_t = plan.text_targets[plan.fault_at]
        if plan.fault == ITEM_ERROR:
            error = error_body(529, "Overloaded", request_id)
            return [(fault_t, ITEM_ERROR, json_response(529, request_id, error, extra=retry_headers, keep_alive=keep_alive), 0)]
        return [(fault_t, ITEM_DROP, b"", 0)]
    content: list[dict[str, Any]] = []
    if plan.thinking:
        text = "" if plan.thinking_omitted else filler_text(THINKING_TOKENS, plan.thinking_word_offset, plan.thinking_tokens).lstrip()
        content.append({"type": "thinking", "thinking": text, "signature": signature})
    content.extend(reply_content(plan, f"toolu_{message_id}"))
    out = plan.output_tokens
    msg = message_body(message_id, model, content, plan.stop_reason, usage, out)
    return [(plan.text_targets[-1], ITEM_BLOCK, json_response(200, request_id, msg, extra=rate_limit_headers, keep_alive=keep_alive), out)]


def stream_items(
    plan: ResponsePlan, deltas: DeltaEvents, *, message_id: str, signature: str, usage: InputUsage, empty_first_delta: bool
) -> list[PlanItem]:
    """The writes of a stream after its head, in order (draws the thinking chunks' jitter):
    thinking block, optional empty text delta, text (or tool input) chunks, then the tail or the fault."""
    items: list[PlanItem] = []
    targets = plan.text_targets
    gap, k = plan.gap_ns, plan.tokens_per_chunk
    th = plan.thinking_tokens
    if plan.thinking:
        sig = signature_events(signature)
        if plan.thinking_omitted or th == 0:
            items.append((targets[0], ITEM_SIGNATURE, THINKING_BLOCK_START + sig, th))
        else:
            th_t = chunk_targets(plan.base_ns, gap, plan.jitter, plan.rng.random, 0, th, k)
            th_c = deltas.filler(ITEM_THINK, 0, plan.thinking_word_offset, th, k)
            th_c[0] = THINKING_BLOCK_START + th_c[0]
            items.extend(zip(th_t, repeat(ITEM_THINK), th_c, chunk_token_counts(th, k)))
            items.append((max(th_t[-1], targets[0]), ITEM_SIGNATURE, sig, 0))
    text_index = 1 if plan.thinking else 0
    kind = DELTA_TOOL if plan.tool else ITEM_TEXT
    text_start = tool_block_start(text_index, f"toolu_{message_id}", plan.tool) if plan.tool else TEXT_BLOCK_STARTS[text_index]
    if empty_first_delta:
        et = max(items[-1][0] if items else 0, targets[0] - int(gap / 2))
        items.append((et, ITEM_EMPTY, text_start + deltas.event(kind, text_index, ""), 0))
        text_start = b""
    tx_c = deltas.filler(kind, text_index, plan.text_word_offset, plan.text_tokens, k)
    if plan.tool:  # the input's JSON opens in its first chunk (and closes in the tail)
        tx_c[0] = deltas.event(
            kind, text_index, TOOL_INPUT_OPEN + filler_text(TEXT_TOKENS, plan.text_word_offset, min(k, plan.text_tokens))
        )
    tx_c[0] = text_start + tx_c[0]
    n_send = plan.fault_at
    items.extend(zip(targets[:n_send], repeat(ITEM_TEXT), tx_c[:n_send], chunk_token_counts(plan.text_tokens, k)))
    if plan.fault == ITEM_ERROR:
        items.append((targets[n_send], ITEM_ERROR, STREAM_ERROR_END, 0))
    elif plan.fault == ITEM_DROP:
        items.append((targets[n_send], ITEM_DROP, b"", 0))
    else:
        items.append((targets[-1], ITEM_TAIL, stream_tail(text_index, plan.stop_reason, usage, plan.output_tokens, bool(plan.tool)), 0))
    return items
