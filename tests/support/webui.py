"""Locust with its web UI as a real process (and the built-in emulator), and a browser page to
look at it with: what the web UI and security tests share."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.processes import LOCUST, ROOT, free_port, write_yaml

ARTIFACTS = ROOT / "test-artifacts"
PROFILE = {
    "seed": 3,
    "models": {
        "default": {
            "ttft_ms": 50,
            "ttft_ms_per_1k_input": 5,
            "output_tps": 300,
            "jitter": 0.2,
            "output_tokens": {"mean": 30, "sd": 8, "min": 5},
        },
    },
}
API_KEY = "sk-ant-" + "api03-WEBUI-TEST-KEY-never-shown-0123456789"  # split: no key-like literal in the repo
WAIT_S = 90.0  # for one piece of evidence: a process may be held up for seconds on this VM


def poll(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """The first true value of `condition()`, polled every 0.2 s for at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.2)
    return value


# --- the Locust process --------------------------------------------------------------------
class LocustUI:
    """`locust` with its web UI on a free loopback port; killed (with the emulator) at the end."""

    def __init__(
        self,
        tmp_path: Path,
        scenario: str | Path,
        *args: str,
        web_host: str | None = "127.0.0.1",
        env: dict[str, str] | None = None,
        launcher: tuple[str, ...] = (LOCUST, "-f", "locustfile.py", "--scenario"),
        cwd: Path = ROOT,
    ) -> None:
        """`web_host` None: the harness's default; `launcher`: what precedes the scenario (from `cwd`)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / "locust.log"
        profile = write_yaml(tmp_path / "profile.yaml", PROFILE)
        command = [
            *launcher,
            str(scenario),
            *(["--web-host", web_host] if web_host else []),
            "--web-port",
            str(self.port),
            "--emulator-profile",
            str(profile),
            "--output-dir",
            str(tmp_path / "runs"),
            "--points",
            "off",
            *args,
        ]
        env = {**os.environ, "ANTHROPIC_API_KEY": API_KEY, **(env or {})}
        with self.log.open("wb") as log:
            # its own session: the emulator it starts is in the same process group
            self.process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_ready(self, timeout_s: float = WAIT_S) -> LocustUI:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"locust exited early:\n{self.output()}"
            try:
                with urllib.request.urlopen(self.url + "/claude/stats", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"the web UI did not come up:\n{self.output()}")

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=20) as response:
            return json.loads(response.read())

    def get_text(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return response.read().decode("utf-8", "replace")

    def post(self, path: str, form: dict[str, Any] | None = None) -> bytes:
        """A form posted as the page posts it (`/swarm`, `/stop`, `/stats/reset`): the raw answer."""
        body = urllib.parse.urlencode(form or {}).encode()
        with urllib.request.urlopen(urllib.request.Request(self.url + path, data=body, method="POST"), timeout=30) as response:
            return response.read()

    def template_args(self) -> dict[str, Any]:
        """What Locust's page is built from (`window.templateArgs`): the start form's options among them."""
        found = re.search(r"window\.templateArgs = (.*)", self.get_text("/"))
        assert found, "no templateArgs in Locust's page"
        return json.loads(found.group(1))

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # locust quits and stops its emulator
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # whatever is left of its group
        self.process.wait(10)


def new_page(browser: Any) -> Any:
    context = browser.new_context(viewport={"width": 1920, "height": 1080}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_S * 1000)
    return page
