"""Typed access to what Locust's `Environment` holds for the harness.

Locust types `parsed_options`, `runner` and `web_ui` as optional (an `Environment` can be
made without them); in a run the harness takes part in, they are set before its `init`
listener runs. These accessors say so once, and hold the one attribute the harness adds to
the environment: its session (`environment.claude`, the per-process state the users and the
web UI reach it by).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from locust.env import Environment
    from locust.runners import MasterRunner, Runner, WorkerRunner
    from locust.web import WebUI

    from harness.run import HarnessRun

SESSION_ATTRIBUTE = "claude"


class HarnessSession(Protocol):
    """What the users need of a process's session (plugin's `Session` or `WorkerSession`)."""

    def current_run(self) -> HarnessRun: ...


def options(environment: Environment) -> argparse.Namespace:
    assert environment.parsed_options is not None, "Locust parses the options before init"
    return environment.parsed_options


def runner(environment: Environment) -> Runner:
    assert environment.runner is not None, "Locust creates the runner before init"
    return environment.runner


def master(environment: Environment) -> MasterRunner:
    from locust.runners import MasterRunner

    found = runner(environment)
    assert isinstance(found, MasterRunner), "only a master process has workers"
    return found


def worker(environment: Environment) -> WorkerRunner:
    from locust.runners import WorkerRunner

    found = runner(environment)
    assert isinstance(found, WorkerRunner), "only a worker process has a master"
    return found


def web_ui(environment: Environment) -> WebUI:
    assert environment.web_ui is not None, "the web UI exists (not --headless)"
    return environment.web_ui


def attach_session(environment: Environment, session: HarnessSession) -> None:
    setattr(environment, SESSION_ATTRIBUTE, session)


def session(environment: Environment) -> HarnessSession:
    found: HarnessSession = getattr(environment, SESSION_ATTRIBUTE)
    return found
