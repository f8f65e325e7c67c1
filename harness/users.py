"""Locust user classes that send Claude requests and report each one exactly once."""

from __future__ import annotations

from typing import Any

import gevent
from locust import User, constant, task
from locust.exception import StopUser
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

from harness import locust_env
from harness.openloop import Arrival
from harness.replies import Reply
from harness.run import HarnessRun
from harness.sampler import Pick
from harness.timing import TimingRecord
from harness.transport import PreparedRequest


class ClaudeUser(User):
    """Picks model and prompt by weight, streams or blocks per the scenario's share.

    Abstract (Locust runs none of it): a locustfile runs `ScenarioUser`, the scenario's requests,
    or a subclass of its own, whose own `@task`s replace the scenario's task (requests built in
    code with `send`, measured and recorded like the scenario's).

    A closed loop without think time: each user has one request in flight at a time. In an
    open loop (the scenario's `load.arrival`) the users are the slots of `max_in_flight`: each
    waits for an arrival, whose model and prompt were picked when it was scheduled, and sends
    it. With retries, a request is one or more attempts, each sent, recorded and counted as such.
    """

    abstract = True
    wait_time = constant(0)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass with tasks of its own runs only those (Locust would add this class's
        `call_claude` to them); one without runs the scenario's requests."""
        super().__init_subclass__(**kwargs)
        own = [value for value in vars(cls).values() if callable(value) and hasattr(value, "locust_task_weight")]
        if own:
            cls.tasks = [function for function in own for _ in range(function.locust_task_weight)]

    def on_start(self) -> None:
        self.claude: HarnessRun = locust_env.session(self.environment).current_run()
        self.sampler = self.claude.new_sampler()
        self.transport = self.claude.new_transport()
        self.backoff = self.claude.new_backoff()
        self.retrying = self.claude.new_retrying()
        self.think_rng = self.claude.new_think_rng()

    @task
    def call_claude(self) -> None:
        open_loop = self.claude.open_loop
        arrival = None
        if open_loop is not None:  # an open loop: wait for the next arrival
            arrival = open_loop.take()
            if arrival is None:
                raise StopUser()  # the run stops: nothing more arrives
        if not self.claude.admit():
            if open_loop is not None and arrival is not None:
                open_loop.refuse(arrival)
            gevent.sleep(0.5)  # a limit (or this worker's share) is reached: idle until the run ends or the share grows
            return
        pick = arrival.pick if arrival is not None else self.sampler.next()
        request = self.claude.prepare(pick)
        if pick.prompt.conversation is not None or "tools" in request.body:
            self.converse(pick, request, arrival)
        else:
            self.send(pick, request, arrival)

    def send(self, pick: Pick, request: PreparedRequest, arrival: Arrival | None) -> TimingRecord:
        """One request, with its retries (each attempt recorded); its last attempt."""
        record, retry_in = self.attempt(pick, request, None, None, arrival)
        first_start_ns = record.start_ns
        while retry_in is not None:
            try:
                gevent.sleep(max(retry_in, self.backoff.wait_after(record)))  # a waiting user is idle
            except gevent.GreenletExit:  # the run stopped during the wait: the request ends there
                self.claude.abandon(record)
                raise
            record, retry_in = self.attempt(pick, request, record, first_start_ns, arrival)
        wait = self.backoff.wait_after(record)  # identical failures in a row: the user waits
        if wait and self.claude.open_loop is None:  # (an open loop's arrivals do not wait for the service)
            gevent.sleep(wait)
        return record

    def converse(self, pick: Pick, first: PreparedRequest, arrival: Arrival | None) -> None:
        """A session (harness/conversation.py): turn after turn, each request with the real
        replies before it, the user thinking between turns. In an open loop the arrival starts
        the session and its later turns follow from the same slot."""
        session = self.claude.new_session(pick, first)
        try:
            while (body := session.next_body()) is not None:
                if session.turn:  # (the first request was admitted with its pick)
                    if session.thinks_next:
                        self.think(session.think_s(self.think_rng))
                    if self._state == LOCUST_STATE_STOPPING or not self.claude.admit():
                        break  # the run's stop or a limit ends the conversation
                turn = pick._replace(turn=session.turn + 1)
                request = self.claude.request_of(turn, body, Reply())
                record = self.send(turn, request, arrival if session.turn == 0 else None)
                session.answered(body, record, request.reply.content() if request.reply is not None else [])
        finally:  # also when the run stops it
            session.stop()
            self.claude.end_session(session)

    def think(self, seconds: float) -> None:
        """The user's pause between turns: idle, as in Locust's wait (the stop ends it at once);
        none when it is zero (the next turn's send gives the other users their turn)."""
        if seconds <= 0 or self._state == LOCUST_STATE_STOPPING:
            return
        self._state = LOCUST_STATE_WAITING
        try:
            gevent.sleep(seconds)
        finally:
            if self._state == LOCUST_STATE_WAITING:
                self._state = LOCUST_STATE_RUNNING

    def attempt(
        self, pick: Pick, request: PreparedRequest, previous: TimingRecord | None, first_start_ns: int | None, arrival: Arrival | None
    ) -> tuple[TimingRecord, float | None]:
        """Send one attempt (after `previous`, a retry's) and record it; the wait before the next
        one, if it is retried."""
        record = self.claude.new_record(pick, arrival, previous)
        retry_in = None
        try:
            self.transport.send(record, request)
        finally:  # also when the run stops mid-request: the record says "cancelled"
            retry_in = self.retrying.wait_before_retry(record)
            if retry_in is not None and not self.claude.admit():
                retry_in = None  # a limit refuses the retry: this attempt is the last
            record.retried = retry_in is not None
            if not record.retried and self.retrying.on(pick.prompt.name):
                record.settle_request(first_start_ns or record.start_ns)
            self.claude.emit(record)
        return record, retry_in

    def on_stop(self) -> None:
        if hasattr(self, "transport"):  # on_start may have been cut short
            self.claude.release_transport(self.transport)


class ScenarioUser(ClaudeUser):
    """The scenario's requests (locustfile.py's user): ClaudeUser's task, as the scenario says."""
