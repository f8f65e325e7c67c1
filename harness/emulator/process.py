"""Start and stop the emulator (`python -m harness.emulator`) as a child process on loopback."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

READY_PREFIX = "emulator listening on "
PR_SET_PDEATHSIG = 1


class EmulatorError(RuntimeError):
    pass


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after timeout_s; the exit code (None if it would not die)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout_s)
    return process.returncode


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's stop() is the only way out
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmulatorProcess:
    """The emulator in its own process; `url` is set once it listens."""

    def __init__(
        self,
        profile: Path | None = None,
        seed: int | None = None,
        ground_truth: Path | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
    ) -> None:
        self.args = [sys.executable, "-m", "harness.emulator", "--host", host, "--port", str(port)]
        if profile is not None:
            self.args += ["--profile", str(profile)]
        if seed is not None:
            self.args += ["--seed", str(seed)]
        if ground_truth is not None:
            self.args += ["--ground-truth", str(ground_truth)]
        self.ground_truth = ground_truth
        self.url: str | None = None
        self._process: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 20.0) -> str:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("ANTHROPIC_API_KEY", None)  # the emulator never needs the real key
        self._process = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=_die_with_parent)
        stdout = self._process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout_s)
        line = stdout.readline() if ready else ""
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise EmulatorError(f"the emulator did not start (exit code {self._process.returncode}): {line.strip()!r}")
        self.url = line[len(READY_PREFIX) :].strip()
        return self.url

    def stop(self, timeout_s: float = 10.0) -> int | None:
        process = self._process
        if process is None:
            return None
        code = stop_process(process, timeout_s)
        if process.stdout is not None:
            process.stdout.close()
        return code

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
