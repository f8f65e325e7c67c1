"""Claude on Vertex AI and Bedrock (harness/platforms.py): the SDK's AnthropicVertex and
AnthropicBedrock against the emulator serving each platform's paths and wire format (Bedrock's
AWS event-stream framing), with the same records, TTFT and prices as the Anthropic API."""

from __future__ import annotations

import base64
import hashlib
import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from harness.emulator.platforms import event_stream_message
from harness.platforms import Platform, base_model, platform_problem
from harness.pricing import PriceTable
from harness.records import RECORDS_FILE, read_records
from harness.scenario import ScenarioError, scenario_from_dict
from tests.support.processes import LocustResult, run_locust, write_yaml
from tests.support.runs import SCENARIO, messages_truth, start_emulator

VERTEX = {"name": "vertex", "region": "us-east5", "project": "load-test-project"}
MODEL = "claude-sonnet-4-5@20250929"
TOKEN = "ya29." + "vertex-access-token-4c1d"
BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
AWS_SECRET = "aws-" + "secret-access-key-for-the-emulator-0"
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
    assert "needs region" in (platform_problem(Platform(name="bedrock"), "sdk") or "")
    with pytest.raises(ScenarioError, match=r"platform.name: .*'anthropic', 'vertex' or 'bedrock'"):
        scenario_from_dict({**SCENARIO, "platform": {"name": "azure"}})


def test_the_emulators_bedrock_frames_are_aws_event_stream_messages() -> None:
    from botocore.eventstream import EventStreamBuffer

    frames = EventStreamBuffer()
    payload = json.dumps({"bytes": base64.b64encode(b'{"type":"ping"}').decode()}).encode()
    frames.add_data(event_stream_message(((":event-type", "chunk"), (":message-type", "event")), payload) * 2)
    messages = list(frames)  # botocore checks both checksums of each
    assert len(messages) == 2 and messages[0].headers == {":event-type": "chunk", ":message-type": "event"}
    assert messages[0].payload == payload


def run(tmp_path: Path, name: str, url: str, scenario: dict[str, Any], *args: str, env: dict[str, str] | None = None) -> LocustResult:
    folder = tmp_path / name
    folder.mkdir()
    return run_locust(folder, write_yaml(folder / "scenario.yaml", scenario), "--host", url, *args, users=4, run_time="4s", env=env)


PLATFORMS: dict[str, dict[str, Any]] = {
    "vertex": {  # given on the command line
        "platform": {},
        "args": ("--platform", "vertex", "--platform-region", VERTEX["region"], "--platform-project", VERTEX["project"]),
        "model": MODEL,
        "env": {"GOOGLE_OAUTH_ACCESS_TOKEN": TOKEN},
        "paths": {
            f"/v1/projects/{VERTEX['project']}/locations/{VERTEX['region']}/publishers/anthropic/models/{MODEL}:{end}"
            for end in ("streamRawPredict", "rawPredict")
        },
        "auth": "bearer",
    },
    "bedrock": {  # given in the scenario
        "platform": {"name": "bedrock", "region": "us-east-1"},
        "args": (),
        "model": BEDROCK_MODEL,
        "env": {"AWS_ACCESS_KEY_ID": "AKIA" + "LOADTESTEXAMPLE", "AWS_SECRET_ACCESS_KEY": AWS_SECRET},
        "paths": {f"/model/{BEDROCK_MODEL}/{end}" for end in ("invoke-with-response-stream", "invoke")},
        "auth": "sigv4",
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PLATFORMS))
def test_a_platform_run_against_the_emulator_times_like_the_api_and_never_sends_the_api_key(tmp_path: Path, name: str) -> None:
    spec = PLATFORMS[name]
    emulator = start_emulator(tmp_path, PROFILE)
    key = "sk-ant-" + "api03-never-to-a-platform-0000"
    on_platform = {**PLAIN, "models": [spec["model"]], "platform": spec["platform"]}
    try:
        direct = run(tmp_path, "api", emulator.url or "", PLAIN, "--transport", "sdk")
        platform = run(
            tmp_path,
            name,
            emulator.url or "",
            on_platform,
            "--transport",
            "sdk",
            *spec["args"],
            env={**spec["env"], "ANTHROPIC_API_KEY": key},
        )
        refused = run(tmp_path, "fast", emulator.url or "", on_platform, *spec["args"])
    finally:
        emulator.stop()
    assert direct.returncode == 0 and platform.returncode == 0, platform.stderr[-3000:]
    assert refused.returncode == 2 and f"platform {name}: the fast transport speaks the Anthropic API only" in refused.stderr

    served = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]

    def client_part_ms(result: LocustResult, form: str) -> float:
        """The run's median TTFT less the server's own median (request received to first text
        written): what the client's path adds, apart from how late a busy server was."""
        records = list(read_records(next(result.output_dir.rglob(RECORDS_FILE))))
        assert records and all(r["outcome"] == "ok" for r in records) and all(r["cost_usd"] for r in records)
        rows = [row for row in served if row["form"] == form and row["t_first_text_ns"] is not None]
        server_ms = statistics.median((row["t_first_text_ns"] - row["t_received_ns"]) / 1e6 for row in rows)
        return statistics.median(r["ttft_ms"] for r in records if r["ttft_ms"] is not None) - server_ms

    assert abs(client_part_ms(platform, name) - client_part_ms(direct, "api")) <= 5.0
    messages = [row for row in served if row["form"] == name]
    assert len(messages) == len(list(read_records(next(platform.output_dir.rglob(RECORDS_FILE)))))
    assert {row["path"] for row in messages} == spec["paths"] and {row["model"] for row in messages} == {spec["model"]}
    direct_records = list(read_records(next(direct.output_dir.rglob(RECORDS_FILE))))
    assert len(messages_truth(tmp_path / "truth.jsonl")) == len(direct_records)  # (the API's path: the direct run's)
    for row in messages:
        assert row["auth"] == spec["auth"] and "x-api-key" not in row["header_digests"]  # the API key goes to the API only
    if name == "vertex":
        assert {row["header_digests"]["authorization"] for row in messages} == {hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()[:16]}
    for secret in (key, TOKEN, AWS_SECRET):
        assert secret not in platform.stdout + platform.stderr
    assert any(line.startswith(spec["model"]) for line in platform.stdout.splitlines())  # the console's table names the platform's model id
