"""Auth styles and a gateway's headers (harness/credentials.py): a bearer token from
ANTHROPIC_AUTH_TOKEN, a scenario's `headers` with values from the environment, each sent only
to the host given at start-up and shown in no output; checked on the emulator's record of what
reached it (a digest of each header, never a value)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from harness.credentials import CredentialsError, checked_headers, header_values, shown_headers
from harness.records import RECORDS_FILE
from harness.scenario import ScenarioError, scenario_from_dict
from tests.support.processes import run_locust, write_yaml
from tests.support.runs import FAST_PROFILE, SCENARIO, messages_truth, start_emulator

TOKEN = "gw-" + "bearer-token-7f3a9c21d4e8"
GATEWAY_SECRET = "gw-" + "header-secret-5b2e8f10c7a6"
HEADERS = {"X-Gateway-Token": "${GATEWAY_TOKEN}", "x-workspace": "team-a-workspace"}


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def test_header_names_and_values_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert checked_headers(HEADERS) == {"x-gateway-token": "${GATEWAY_TOKEN}", "x-workspace": "team-a-workspace"}
    for bad, says in [
        ({"Authorization": "x"}, "set by the harness"),
        ({"x y": "1"}, "not a header name"),
        ({"x": "${open"}, "a value is text"),
    ]:
        with pytest.raises(ScenarioError, match=says):
            scenario_from_dict({**SCENARIO, "headers": bad})
    monkeypatch.setenv("GATEWAY_TOKEN", GATEWAY_SECRET)
    headers = checked_headers(HEADERS)
    assert header_values(headers, to_startup_host=True) == {"x-gateway-token": GATEWAY_SECRET, "x-workspace": "team-a-workspace"}
    assert header_values(headers, to_startup_host=False) == {"x-workspace": "team-a-workspace"}  # the secret goes nowhere else
    assert shown_headers(headers) == {"x-gateway-token": "${GATEWAY_TOKEN}", "x-workspace": "<redacted>"}
    monkeypatch.delenv("GATEWAY_TOKEN")
    with pytest.raises(CredentialsError, match=r"headers.x-gateway-token: \$\{GATEWAY_TOKEN\} is not set"):
        header_values(headers, to_startup_host=True)
    monkeypatch.setenv("GATEWAY_TOKEN", GATEWAY_SECRET + "\r\nx-evil: 1")  # would split the request
    with pytest.raises(CredentialsError, match=r"headers\.x-gateway-token: the environment's value holds a line break") as error:
        header_values(headers, to_startup_host=True)
    assert GATEWAY_SECRET not in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["fast", "sdk"])
def test_a_bearer_token_and_the_gateway_headers_reach_the_server_and_no_output(tmp_path: Path, transport: str) -> None:
    emulator = start_emulator(tmp_path, FAST_PROFILE)
    summary_path, report = tmp_path / "summary.json", tmp_path / "report.html"
    env = {"ANTHROPIC_API_KEY": "", "ANTHROPIC_AUTH_TOKEN": TOKEN, "GATEWAY_TOKEN": GATEWAY_SECRET}
    env |= {"ANTHROPIC_BASE_URL": "http://elsewhere.invalid", "ANTHROPIC_CUSTOM_HEADERS": "x-shell-header: not-for-the-target"}  # the SDK's
    try:
        result = run_locust(
            tmp_path,
            write_yaml(tmp_path / "scenario.yaml", {**SCENARIO, "headers": HEADERS}),
            *("--host", emulator.url or "", "--transport", transport, "--summary-json", str(summary_path), "--report", str(report)),
            users=4,
            run_time="3s",
            env=env,
        )
    finally:
        emulator.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    truth = [json.loads(line) for line in (tmp_path / "truth.jsonl").read_text().splitlines()]
    assert truth and {row["path"] for row in truth} == {"/v1/messages", "/v1/messages/count_tokens"}  # the sizing too
    for row in truth:
        assert row["auth"] == "bearer" and "x-api-key" not in row["header_digests"], row
        assert row["header_digests"]["authorization"] == digest(f"Bearer {TOKEN}")
        assert row["header_digests"]["x-gateway-token"] == digest(GATEWAY_SECRET)
        assert row["header_digests"]["x-workspace"] == digest("team-a-workspace")
        assert "x-shell-header" not in row["header_digests"]  # the target is --host, the headers the scenario's
    assert len(messages_truth(tmp_path / "truth.jsonl")) == json.loads(summary_path.read_text())["accounting"]["recorded"]
    run_dir = result.run_dir
    outputs = result.stdout + result.stderr + summary_path.read_text() + report.read_text()
    for written in (run_dir / RECORDS_FILE, run_dir / "points.lp.gz"):
        with gzip.open(written, "rt") as lines:
            outputs += lines.read()
    for secret in (TOKEN, GATEWAY_SECRET, "team-a-workspace"):
        assert secret not in outputs
    assert json.loads(summary_path.read_text())["run"]["scenario"]["content"]["headers"]["x-gateway-token"] == "${GATEWAY_TOKEN}"


@pytest.mark.slow
def test_a_missing_header_variable_is_a_usage_error(tmp_path: Path) -> None:
    emulator = start_emulator(tmp_path, FAST_PROFILE)
    try:
        result = run_locust(
            tmp_path,
            write_yaml(tmp_path / "s.yaml", {**SCENARIO, "headers": HEADERS}),
            "--host",
            emulator.url or "",
            env={"GATEWAY_TOKEN": ""},
        )
    finally:
        emulator.stop()
    assert result.returncode == 2 and "headers.x-gateway-token: ${GATEWAY_TOKEN} is not set in the environment" in result.stderr
    assert "Traceback" not in result.stderr
