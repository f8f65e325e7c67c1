"""Properties over many generated inputs (hypothesis, derandomized: every run tries the same
examples, so CI is as repeatable as any other test):
- any scenario text gives a valid scenario or one clean ScenarioError naming the file;
- any split of the same stream bytes into reads gives the same lines and the same record.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.scenario import Scenario, ScenarioError, load_scenario
from harness.timing import StreamTimer, TimingRecord
from harness.transport import SdkTransport
from tests.support.sse import block_start, message_end, message_start, text

SETTINGS = settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- scenarios -----------------------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=12)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12
)
models = st.lists(st.fixed_dictionaries({"model": st.text(min_size=1, max_size=10)}, optional={"weight": values}), min_size=1, max_size=3)
messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", ""]), "content": values | st.text(max_size=20)}),
    max_size=3,
)
prompts = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=10), "max_tokens": st.integers(-1, 5000) | values},
        optional={
            "input_tokens": st.integers(-1, 10**5) | values,
            "messages": messages | values,
            "extra": values,
            "stream": values,
            "temperature": values,
            "thinking": values,
            "timeout_s": values,
            "weight": values,
        },
    ),
    min_size=1,
    max_size=4,
)
scenarios = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=10) | values,
        "models": models | values,
        "prompts": prompts | values,
        "stream": values,
        "timeouts": st.dictionaries(st.sampled_from(["connect_s", "first_byte_s", "idle_s", "total_s", "x"]), values, max_size=3),
        "failures": values,
        "load": values,
        "slos": values,
        "prices": values,
        "timeout_s": values,
        "seed": values,
    },
)
texts = (
    scenarios.map(lambda data: yaml.safe_dump(data, allow_unicode=True))
    | st.text(max_size=400)
    | st.binary(max_size=200).map(lambda raw: raw.decode("latin-1"))
)


@SETTINGS
@given(texts)
def test_any_scenario_text_gives_a_scenario_or_one_clean_error(text_: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scenario.yaml"
        path.write_text(text_, encoding="utf-8", errors="surrogateescape")
        try:
            scenario = load_scenario(path)
        except ScenarioError as exc:
            message = str(exc)
            assert message and all(line.startswith(f"{path}: ") for line in message.splitlines()), message
            assert "Traceback" not in message
            return
    assert isinstance(scenario, Scenario) and scenario.models and scenario.prompts


# --- streams -------------------------------------------------------------------------------------
LINES = [*message_start(), *block_start(0, "text"), *text(0, "Hello"), *text(0, " world, é"), *message_end(7)]
STREAM = b"".join(LINES)


class Chunks:
    """What SdkTransport reads: the body's bytes in the pieces the network gave."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def iter_bytes(self) -> Any:
        return iter(self.chunks)


def parse(lines: list[bytes]) -> TimingRecord:
    record = TimingRecord(model="m", prompt="p", mode="stream")
    record.start_ns = 0
    timer = StreamTimer(record, 0)
    timer.feed(1_000_000, lines)
    return timer.finish(2_000_000)


REFERENCE = parse(LINES)


@SETTINGS
@given(st.lists(st.integers(1, len(STREAM) - 1), unique=True, max_size=40).map(sorted))
def test_any_split_of_a_stream_into_reads_gives_the_same_lines_and_record(cuts: list[int]) -> None:
    bounds = [0, *cuts, len(STREAM)]
    chunks = [STREAM[start:end] for start, end in itertools.pairwise(bounds)]
    lines = [line for _, read in SdkTransport._timed_lines(Chunks(chunks)) for line in read]
    assert [line + b"\n" for line in lines] == LINES
    record = parse(lines)
    for field in (
        "outcome",
        "error_type",
        "events",
        "first_content",
        "ttft_ms",
        "input_tokens",
        "output_tokens",
        "stop_reason",
        "request_id",
    ):
        assert getattr(record, field) == getattr(REFERENCE, field), field
    assert REFERENCE.outcome == "ok" and REFERENCE.first_content == "text"
