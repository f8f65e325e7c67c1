"""The official SDK's own tests of the API's resources (the sdist's tests/api_resources), run
against the emulator: Messages (create, streams, count_tokens) and Models, with the SDK's sync,
async and aiohttp clients. The only failures allowed are the tests that use a placeholder that
only a Prism mock server accepts (a model named "model_id", a page after "after_id"): listed by
name here, and each must fail (the list stays exact)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import anthropic
import pytest

from tests.support.runs import start_emulator

pytestmark = pytest.mark.slow

SDK_VERSION = anthropic.__version__  # the SDK the harness runs (constraints.txt pins it)
SUITE_DEPENDENCIES = [  # what the SDK's tests import (its dev dependency group), pinned
    "respx==0.23.1",
    "pytest==9.2.0",
    "pytest-asyncio==1.5.0",
    "time-machine==3.6.0",
    "dirty-equals==0.11",
    "inline-snapshot==0.36.1",
    "http-snapshot[httpx]==0.1.9",
    "hypothesis==6.170.17",
    "opentelemetry-sdk==1.45.2",
    "rich==15.0.0",
]
SUITES = ["tests/api_resources/test_messages.py", "tests/api_resources/test_models.py"]
PRISM_ONLY = {
    f"tests.api_resources.test_models.{kind}::{test}[{client}]"
    for kind, clients in (("TestModels", ("loose", "strict")), ("TestAsyncModels", ("loose", "strict", "aiohttp")))
    for client in clients
    for test in (
        "test_method_retrieve",  # model_id="model_id"
        "test_method_retrieve_with_all_params",
        "test_raw_response_retrieve",
        "test_streaming_response_retrieve",
        "test_method_list_with_all_params",  # after_id="after_id" and before_id="before_id" at once
    )
}
FAST = {"seed": 1, "models": {"default": {"ttft_ms": 5, "output_tps": 20000, "jitter": 0, "output_tokens": {"mean": 20, "sd": 0}}}}


def test_the_sdks_own_api_resource_tests_pass_against_the_emulator(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip"]
    got = subprocess.run(
        [*pip, "download", f"anthropic=={SDK_VERSION}", "--no-binary", ":all:", "--no-deps", "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert got.returncode == 0, got.stderr[-2000:]
    (sdist,) = tmp_path.glob("anthropic-*.tar.gz")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    source = tmp_path / f"anthropic-{SDK_VERSION}"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", f"anthropic[aiohttp]=={SDK_VERSION}", *SUITE_DEPENDENCIES],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    emulator = start_emulator(tmp_path, FAST)
    junit = tmp_path / "suite.xml"
    try:
        suite = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "addopts=",
                "-p",
                "tests._alias_httpx",
                f"--junitxml={junit}",
                *SUITES,
            ],
            cwd=source,
            env={"PATH": "/usr/bin:/bin", "TEST_API_BASE_URL": emulator.url or ""},
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        emulator.stop()
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    failed = {
        f"{case.get('classname')}::{case.get('name')}"
        for case in cases
        if case.find("failure") is not None or case.find("error") is not None
    }
    skipped = [case.get("name") for case in cases if case.find("skipped") is not None]
    assert failed == PRISM_ONLY, (sorted(failed ^ PRISM_ONLY), suite.stdout[-3000:])
    assert not skipped and len(cases) - len(failed) >= 80, (len(cases), skipped)
