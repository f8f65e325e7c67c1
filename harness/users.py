"""Locust user classes that send Claude requests and report each one exactly once."""

from __future__ import annotations

import gevent
from locust import User, constant, task

from harness.run import HarnessRun


class ClaudeUser(User):
    """Picks model and prompt by weight, streams or blocks per the scenario's share.

    A closed loop without think time: each user has one request in flight at a time.
    """

    wait_time = constant(0)

    def on_start(self) -> None:
        self.claude: HarnessRun = self.environment.claude.current_run()
        self.sampler = self.claude.new_sampler()
        self.transport = self.claude.new_transport()
        self.backoff = self.claude.new_backoff()

    @task
    def call_claude(self) -> None:
        if not self.claude.admit():
            gevent.sleep(0.5)  # a limit (or this worker's share) is reached: idle until the run ends or the share grows
            return
        pick = self.sampler.next()
        request = self.claude.prepare(pick)
        record = self.claude.new_record(pick)
        try:
            self.transport.send(record, request)
        finally:  # also when the run stops mid-request: the record says "cancelled"
            self.claude.emit(record)
        wait = self.backoff.wait_after(record)  # identical failures in a row: the user waits
        if wait:
            gevent.sleep(wait)

    def on_stop(self) -> None:
        if hasattr(self, "transport"):  # on_start may have been cut short
            self.claude.release_transport(self.transport)
