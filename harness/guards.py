"""Guards that end a run early: the cost budget, a request limit, and the abort rule.

- Budget: against a real (non-loopback) target a run needs `--max-cost-usd` or the
  scenario's `budget_usd`. Spend comes from the server's usage and the price table; the
  guard checks it twice a second and stops the run at the budget. Requests already in
  flight then finish (within --stop-timeout), so the spend can pass the budget by at most
  what those cost.
- `--max-requests N`: a single process admits exactly N requests; on a master the limit is
  checked on the workers' reports, so it can be passed by what is in flight.
- The scenario's `abort` rule: the error rate over the last `window_s` seconds above the
  limit (with at least `min_requests` judged) stops the run as failed, like k6's abortOnFail.
- Fail fast (harness/failures.py): every request of the first seconds failed with one cause;
  on a master, once every worker says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import gevent

from harness import locust_env
from harness.pricing import PriceTable
from harness.scenario import AbortRule, Scenario

if TYPE_CHECKING:
    from locust.env import Environment

if TYPE_CHECKING:
    from harness.distributed import WorkerState
    from harness.run import HarnessRun

logger = logging.getLogger("harness.guards")

CHECK_INTERVAL_S = 0.5
BYTES_PER_TOKEN = 4


def max_cost_per_request(scenario: Scenario, prices: PriceTable) -> float | None:
    """An upper bound of one request's cost: the weighted mix, output at max_tokens."""
    model_total = sum(m.weight for m in scenario.models)
    prompt_total = sum(p.weight for p in scenario.prompts)
    cost = 0.0
    for model in scenario.models:
        price = prices.price(model.model)
        if price is None:
            return None
        for prompt in scenario.prompts:
            text: float = len((prompt.system or "") if isinstance(prompt.system, str) else str(prompt.system or ""))
            text += sum(len(str(m.content)) for m in prompt.messages or [])
            entries = scenario._datasets.get(prompt.name) or []  # a dataset: its entries' mean size, their largest max_tokens
            text += sum(len(str(entry.messages)) + len(str(entry.system or "")) for entry in entries) / max(len(entries), 1)
            max_tokens = max([prompt.max_tokens, *(entry.max_tokens or 0 for entry in entries)])
            input_tokens = (prompt.input_tokens or 0) + text / BYTES_PER_TOKEN
            one = (input_tokens * price.input + max_tokens * price.output) / 1_000_000
            cost += model.weight / model_total * prompt.weight / prompt_total * one
    return cost


class Guard:
    def __init__(
        self,
        environment: Environment,
        run: Callable[[], HarnessRun | None],
        budget_usd: float | None,
        max_requests: int | None,
        abort: AbortRule | None,
        workers: Callable[[], Iterable[WorkerState]] | None = None,
    ) -> None:
        self.environment = environment
        self.run = run
        self.budget_usd = budget_usd
        self.max_requests = max_requests
        self.abort = abort
        self.workers = workers  # on a master: what each worker reported
        self.stopped_by: str | None = None  # the budget or request limit ended the run
        self.aborted: str | None = None  # the abort rule ended the run
        self.failed_fast: str | None = None  # the first seconds failed alike: a wrong target
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self.stopped_by = self.aborted = self.failed_fast = None
        self._greenlet = gevent.spawn(self._watch)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _watch(self) -> None:
        while not self.stopped_by and not self.aborted and not self.failed_fast:
            gevent.sleep(CHECK_INTERVAL_S)
            run = self.run()
            if run is not None:
                self.check(run)

    def check(self, run: HarnessRun) -> None:
        spent, sent = self.spent(run)
        failed_fast = self._failed_fast(run)
        if failed_fast:
            self.failed_fast = failed_fast
            self._end(f"{failed_fast} (fail fast: exit code 2)")
        elif self.budget_usd is not None and spent >= self.budget_usd:
            self.trip(f"budget ${self.budget_usd:g} reached (${spent:.4f} spent)")
        elif self.max_requests is not None and sent >= self.max_requests:
            self.trip(f"--max-requests {self.max_requests} reached")
        elif self.abort is not None:
            self._check_abort(run)

    def _failed_fast(self, run: HarnessRun) -> str | None:
        if self.workers is None:
            return run.fail_fast.verdict(time.monotonic())
        workers = [worker for worker in self.workers() if not worker.drained]
        if workers and all(worker.failed_fast for worker in workers):
            return "; ".join(sorted({f"{worker.name}: {worker.failed_fast}" for worker in workers}))
        return None

    def spent(self, run: HarnessRun) -> tuple[float, int]:
        """Dollars spent and requests sent by every request recorded (figures or not), the
        workers' included on a master."""
        spent, sent = run.ledger.spent_usd, run.ledger.recorded
        if self.workers is not None:
            for worker in self.workers():
                spent, sent = spent + worker.spent_usd, sent + worker.recorded
        return spent, sent

    def _check_abort(self, run: HarnessRun) -> None:
        rule = self.abort
        assert rule is not None
        window = run.recent.window(rule.window_s).total().figures()
        rate = window.error_rate
        if window.judged >= rule.min_requests and rate is not None and rate > rule.error_rate:
            self.aborted = f"error rate {rate:.2f} > {rule.error_rate:g} over the last {rule.window_s:g} s ({window.judged} requests)"
            self._end(self.aborted)

    def trip(self, reason: str) -> None:
        if not self.stopped_by:
            self.stopped_by = reason
            self._end(reason)

    def _end(self, reason: str) -> None:
        logger.warning("stopping the run: %s", reason)
        runner = locust_env.runner(self.environment)
        headless = getattr(self.environment.parsed_options, "headless", True)
        gevent.spawn(runner.quit if headless else runner.stop)
