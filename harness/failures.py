"""The failure policy (the scenario's `failures:`): a wrong target is not hammered.

- Backoff, per user: after `after` identical failures in a row (same outcome class, error type
  and HTTP status) a user waits before its next request, 0.5 s at first, doubling up to
  `max_s`; any other outcome resets it. A waiting user is idle: no request hides a wait. A
  prompt may give its own rule (or none).
- Retries, per user (off by default): a production client's retries. A failed attempt whose
  outcome the rule names is tried again after a wait (the server's retry-after, or a doubling
  backoff with jitter, as the SDK does). A waiting user is idle. Every attempt is recorded as
  the request it is; the last one also says what the application saw.
- Fail fast, per process: when every request that ended in the run's first `within_s` seconds
  failed with one cause, the target is wrong (a refused port, a bad key, an unknown model): the
  run stops with one line naming the cause and exit code 2. A target that answers once within
  the window is never stopped for it. On a master the run stops when every worker has failed
  fast (each says so in its reports). A prompt may opt out (its failures are expected).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.timing import CANCELLED, CONNECTION_ERROR, OK, TIMEOUT

if TYPE_CHECKING:
    from harness import scenario
    from harness.timing import TimingRecord

FIRST_WAIT_S = 0.5
Cause = tuple[str, str | None, int | None]  # outcome, error type, HTTP status


def cause_of(record: TimingRecord) -> Cause | None:
    """What makes two failures identical; None for a success (or a request the stop cut)."""
    if record.outcome in (OK, CANCELLED):
        return None
    return record.outcome, record.error_type, record.http_status


class Backoff:
    """One user's wait after identical failures in a row; the rule is the one of the prompt of
    the request that just ended (a prompt may give its own)."""

    def __init__(self, rule_for: Callable[[str], scenario.Backoff | None]) -> None:
        self.rule_for = rule_for
        self.cause: Cause | None = None
        self.in_a_row = 0

    def wait_after(self, record: TimingRecord) -> float:
        """Seconds to wait before the next request, now that `record` has ended."""
        rule = self.rule_for(record.prompt)
        if rule is None or record.outcome == CANCELLED:
            return 0.0
        cause = cause_of(record)
        if cause is None or cause != self.cause:
            self.cause, self.in_a_row = cause, (0 if cause is None else 1)
        else:
            self.in_a_row += 1
        if self.cause is None or self.in_a_row < rule.after:
            return 0.0
        return min(rule.max_s, FIRST_WAIT_S * 2 ** (self.in_a_row - rule.after))


RETRY_AFTER_MAX_S = 60.0  # a longer retry-after is not waited for (the SDK's rule): the backoff is


class Retrying:
    """One user's retries; the rule is the one of the prompt of the attempt that just ended."""

    def __init__(self, rule_for: Callable[[str], scenario.Retries | None], rng: random.Random) -> None:
        self.rule_for = rule_for
        self.rng = rng

    def on(self, prompt: str) -> bool:
        """Does this prompt's client retry? (its last attempts then say what the application saw)"""
        return self.rule_for(prompt) is not None

    def wait_before_retry(self, record: TimingRecord) -> float | None:
        """Seconds to wait before trying `record`'s request again; None: no retry."""
        rule = self.rule_for(record.prompt)
        if rule is None or record.outcome not in rule.on or record.attempt > rule.max:
            return None
        after = record.retry_after_s
        if rule.wait_retry_after and after is not None and after <= RETRY_AFTER_MAX_S:
            return after
        wait = min(rule.first_wait_s * 2 ** (record.attempt - 1), rule.max_wait_s)
        return wait * (1 - 0.25 * self.rng.random())


# what a team should look at first, by cause
HINTS = {
    401: "the API key was not accepted: check ANTHROPIC_API_KEY",
    403: "the key may not do this: check its permissions, the organization and the model",
    404: "not found: check the models and the path of --host",
    "connection_failed": "nothing answers there: check --host (scheme, name, port) and the network",
    "connect_timeout": "no connection was made in time: check --host and the network (a firewall, a proxy)",
    "first_byte_timeout": "the server accepted the requests but never answered",
}


def describe(cause: Cause, count: int, within_s: float, example: str | None) -> str:
    outcome, error_type, status = cause
    what = f"{outcome} ({error_type}{f', HTTP {status}' if status not in (None, 200) else ''})"
    hint = (
        HINTS.get(status)
        or HINTS.get(error_type or "")
        or ("the server redirects: give the final URL with --host" if status and 300 <= status < 400 else "")
    )
    detail = f": {example}" if example and outcome in (CONNECTION_ERROR, TIMEOUT) else ""
    return f"all {count} requests of the first {within_s:g} s failed with one cause, {what}{detail}" + (f"; {hint}" if hint else "")


class FailFast:
    """Watches the requests that end in a process's first `within_s` seconds."""

    def __init__(self, rule: scenario.FailFast | None, started: float, counts: Callable[[str], bool] = lambda _prompt: True) -> None:
        self.rule = rule
        self.counts = counts  # a prompt may opt out: its failures then say nothing of the target
        self.until = started + (rule.within_s if rule else 0.0)
        self.cause: Cause | None = None
        self.example: str | None = None
        self.count = 0
        self.answered = rule is None  # a success (or another cause) in the window: never fail fast

    def observe(self, record: TimingRecord, now: float) -> None:
        if self.answered or now > self.until or record.outcome == CANCELLED or not self.counts(record.prompt):
            return
        cause = cause_of(record)
        if cause is None or (self.cause is not None and cause != self.cause):
            self.answered = True
            return
        self.cause, self.example = cause, self.example or record.error_message
        self.count += 1

    def verdict(self, now: float) -> str | None:
        """Why the run must stop, once its window is over and every request in it failed alike."""
        if self.answered or now <= self.until or self.cause is None or self.rule is None:
            return None
        return describe(self.cause, self.count, self.rule.within_s, self.example)
