"""Claude on Vertex AI (harness/platforms.py): the SDK's AnthropicVertex against the emulator
serving Vertex's paths, with the same records, TTFT and prices as the Anthropic API."""

from __future__ import annotations

import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness.platforms import Platform, base_model, platform_problem
from harness.pricing import PriceTable
from harness.records import RECORDS_FILE, read_records
from harness.scenario import ScenarioError, scenario_from_dict
from tests.support.processes import LocustResult, run_locust, write_yaml
from tests.support.runs import SCENARIO, messages_truth, start_emulator

VERTEX = {"name": "vertex", "region": "us-east5", "project": "load-test-project"}
MODEL = "claude-sonnet-4-5@20250929"
TOKEN = "ya29." + "vertex-access-token-4c1d"
PROFILE = {
    "seed": 3,
    "models": {
        "default": {"ttft_ms": 150, "ttft_ms_per_1k_input": 0, "output_tps": 400, "jitter": 0, "output_tokens": {"mean": 20, "sd": 0}}
    },
}
PLAIN = {
    "name": "vx",
    "models": [MODEL],
    "prompts": [{"name": "q", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}],
    "stream": 0.8,
}


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("us.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("claude-haiku-4-5", "claude-haiku-4-5"),
        ("my-fine-tune", "my-fine-tune"),
    ],
)
def test_a_platforms_model_id_is_priced_as_the_model_it_names(model: str, named: str) -> None:
    assert base_model(model) == named
    assert PriceTable().price(model) == PriceTable().price(named)


def test_a_platform_needs_its_region_project_and_the_sdk_transport() -> None:
    assert platform_problem(Platform(), "fast") is None
    assert "needs region and project" in (platform_problem(Platform(name="vertex", region="us-east5"), "sdk") or "")
    assert "use --transport sdk" in (platform_problem(Platform.model_validate(VERTEX), "fast") or "")
    with pytest.raises(ScenarioError, match=r"platform.name: .*'anthropic' or 'vertex'"):
        scenario_from_dict({**SCENARIO, "platform": {"name": "azure"}})


def run(tmp_path: Path, name: str, url: str, scenario: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> LocustResult:
    folder = tmp_path / name
    folder.mkdir()
    return run_locust(folder, write_yaml(folder / "scenario.yaml", scenario), "--host", url, *args, users=4, run_time="4s", env=env)


@pytest.mark.slow
def test_vertex_runs_against_the_emulator_time_like_the_api_and_never_send_the_api_key(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, PROFILE)
    key = "sk-ant-" + "api03-never-to-vertex-0000"
    try:
        direct = run(tmp_path, "api", emulator.url or "", PLAIN, "--transport", "sdk")
        vertex = run(
            tmp_path,
            "vertex",
            emulator.url or "",
            {**PLAIN, "platform": VERTEX},
            *("--transport", "sdk"),
            env={"GOOGLE_OAUTH_ACCESS_TOKEN": TOKEN, "ANTHROPIC_API_KEY": key},
        )
        refused = run(tmp_path, "fast", emulator.url or "", {**PLAIN, "platform": VERTEX})
    finally:
        emulator.stop()
    assert direct.returncode == 0 and vertex.returncode == 0, vertex.stderr[-3000:]
    assert refused.returncode == 2 and "platform vertex: the fast transport speaks the Anthropic API only" in refused.stderr

    def ttft_median(result: LocustResult) -> float:
        records = list(read_records(next(result.output_dir.rglob(RECORDS_FILE))))
        assert records and all(r["outcome"] == "ok" for r in records) and all(r["cost_usd"] for r in records)
        return statistics.median(r["ttft_ms"] for r in records if r["ttft_ms"] is not None)

    assert abs(ttft_median(vertex) - ttft_median(direct)) <= 5.0
    served = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    messages = [row for row in served if row["path"].startswith("/v1/projects/")]
    assert len(messages_truth(tmp_path / "truth.jsonl")) == len(list(read_records(next(direct.output_dir.rglob(RECORDS_FILE)))))
    vertex_records = list(read_records(next(vertex.output_dir.rglob(RECORDS_FILE))))
    assert len(messages) == len(vertex_records) and {row["model"] for row in messages} == {MODEL}
    prefix = f"/v1/projects/{VERTEX['project']}/locations/{VERTEX['region']}/publishers/anthropic/models/{MODEL}:"
    assert {row["path"].removeprefix(prefix) for row in messages} == {"streamRawPredict", "rawPredict"}
    for row in messages:
        assert row["header_digests"]["authorization"] == hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()[:16]
        assert "x-api-key" not in row["header_digests"]  # the API key goes to the Anthropic API only
    assert key not in vertex.stdout + vertex.stderr and TOKEN not in vertex.stdout + vertex.stderr
    assert any(line.startswith(MODEL) for line in vertex.stdout.splitlines())  # the console's table names the platform's model id
