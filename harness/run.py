"""One load-test run: its configuration, its sinks, and the fan-out of each finished request.

`HarnessRun.emit` is the single place a TimingRecord goes after its request ended: cost,
Locust's request event (plus the TTFT row), the precise stats, the records file and the
time-series points, each exactly once. The run also owns the point writer and the health
monitor, started and stopped with it.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import network, payload
from harness.caching import CacheBook
from harness.calibration import calibrate
from harness.conversation import ConversationBook, Session
from harness.datasets import EntryOrder
from harness.disk import DEFAULT_MIN_FREE_MB, DiskWatch
from harness.experiment import VariantBook
from harness.failures import Backoff, FailFast, Retrying
from harness.headroom import Headroom
from harness.health import Gauges, HealthMonitor, Thresholds
from harness.openloop import Arrival, OpenLoop, TokenDemand
from harness.points import HEALTH_MEASUREMENT, RUN_MEASUREMENT, line, request_line
from harness.pricing import PriceTable
from harness.recording import CLOSE_TIMEOUT_S, DEFAULT_BUFFER, POINTS_FILE, FileSink, InfluxConfig, InfluxSink, PointWriter
from harness.records import RECORDS_FILE, RecordsFile
from harness.replies import Reply
from harness.results import HealthSample, InputSize
from harness.sampler import Pick, Sampler
from harness.scenario import Scenario
from harness.shares import Share
from harness.stamps import READS
from harness.stats import LIVE_WINDOW_S, RecentStats, RunStats
from harness.sweep_steps import StepBook
from harness.timing import CONNECTION_ERROR, TimingRecord
from harness.trace import trace_of
from harness.transport import FastTransport, PreparedRequest, SdkTransport, Target, Transport, receive_stamping
from harness.variants import variant_headers

if TYPE_CHECKING:
    from locust.env import Environment


logger = logging.getLogger("harness")
MAX_CAUSES_TOLD = 10  # distinct connection failures logged per run


class ClaudeFailure(Exception):
    """What Locust shows for a failed request: the outcome class, error type and status.

    Deliberately free of per-request details so that Locust's failure table groups by class.
    """


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class RunConfig:
    scenario: Scenario
    target: Target
    transport: str  # "fast" or "sdk"
    output_dir: Path
    run_id: str
    pool_size: int = 100
    worker: str = "local"  # this process's name in the points' `worker` tag
    role: str = "local"  # local, master or worker
    points: str = "auto"  # "auto": InfluxDB if configured, else a line-protocol file; "off"
    influx: InfluxConfig | None = None
    points_buffer: int = DEFAULT_BUFFER
    points_flush_timeout_s: float = CLOSE_TIMEOUT_S
    thresholds: Thresholds = field(default_factory=Thresholds)
    max_requests: int | None = None  # admitted exactly, in a single process only
    min_free_disk_mb: float = DEFAULT_MIN_FREE_MB  # below it under output_dir, no new request starts


@dataclass
class Ledger:
    """Every request the run recorded, whether or not it is in the figures, and what all of
    them cost: the budget and the request limit count them all.

    Measurement windows are numbered: 0 from the start, then one more at each opening
    (`--reset-stats` when spawning completes, the web UI's "Reset stats"). A request belongs to
    the window it started in; the figures hold the requests of the current window."""

    recorded: int = 0
    before_window: int = 0
    spent_usd: float = 0.0
    base_window: int = 0  # the window this process started in (a worker that joins late)
    openings: list[int] = field(default_factory=list)  # perf_counter_ns of each opening
    window_opened_at: float | None = None  # epoch seconds of the last opening

    @property
    def window(self) -> int:
        return self.base_window + len(self.openings)

    def window_of(self, record: TimingRecord) -> int:
        return self.base_window + bisect.bisect_right(self.openings, record.start_ns)


class HarnessRun:
    def __init__(self, config: RunConfig, environment: Environment) -> None:
        self.config = config
        self.environment = environment
        self.scenario = config.scenario
        self.ledger = Ledger()
        self.stats = RunStats()  # the figures: requests that started inside the measurement window
        self._recent = self._new_recent()
        self.in_flight = 0
        self.admitted = 0
        self.on_limit: Callable[[str], None] | None = None  # told when the request limit (or the share) refuses
        self.share: Share | None = None  # on a worker: its share of the run's limits (harness/shares.py)
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.labels = {"run_id": config.run_id, "scenario": config.scenario.name, "worker": config.worker}
        self.prices = PriceTable(config.scenario.prices)
        # a master sends no requests: its workers keep the records
        self.records = None if config.role == "master" else RecordsFile(config.output_dir / RECORDS_FILE, {**self.labels})
        self.points = self._point_writer(config, self.labels)
        self.health = HealthMonitor(self._gauges(), self._on_health, config.thresholds)
        self.disk = DiskWatch(config.output_dir, config.min_free_disk_mb)
        self._prompts = {prompt.name: prompt for prompt in config.scenario.prompts}  # (a prompt built in code: none)
        self.fail_fast = self._new_fail_fast()
        self._prepared: dict[tuple[str | None, str, str, bool], PreparedRequest] = {}
        self._user_seq = itertools.count()
        self._in_order = {  # a dataset sent in its file's order: one order for the process's users, its share on a worker
            index: EntryOrder(len(config.scenario._datasets[prompt.name]), "sequential", 0, *config.scenario._dataset_split)
            for index, prompt in enumerate(config.scenario.prompts)
            if prompt.dataset is not None and prompt.dataset.order == "sequential"
        }
        self._retry_seq = itertools.count()
        self._told: set[str] = set()  # the connection failures' causes logged so far
        self._think_seq = itertools.count()
        self.conversations = ConversationBook()  # sessions and their turns (in the measurement window)
        self.caching = CacheBook()  # prompt-cache reads and writes per label (in the measurement window)
        self.variants = VariantBook()  # the scenario's variants, each apart (in the measurement window)
        self.input_sizes: dict[tuple[str, str, str | None], InputSize] = {}  # synthetic prompts as sized (a master: its workers')
        self.token_demand = self._new_token_demand()
        self.open_loop = self._new_open_loop(self.token_demand)
        self.headroom = Headroom()  # rate-limit headers and 429s per model, over the whole run
        self.stamping = receive_stamping(config.target, config.transport)  # this process's (a master: a guess for its workers)
        self._reads_at_start = READS.counts()
        self.steps = StepBook() if config.scenario.sweep is not None else None  # a sweep's steps
        if self.open_loop is not None and self.steps is not None:
            self.open_loop.on_arrival = self.steps.arrival
        # the SDK client is shared by all users and built now: building it in a user's
        # on_start would stall the requests of the users already running
        self._shared_transport: Transport | None = (
            SdkTransport(config.target, config.pool_size, config.scenario.timeouts.connect_s) if config.transport == "sdk" else None
        )

    def _new_token_demand(self) -> TokenDemand | None:
        """A token rate's pacing: each arrival's tokens, corrected by the usage that comes back."""
        load = self.scenario.load
        if load is None or not load.open_loop or load.rate_unit == "requests":
            return None
        return TokenDemand(load.rate_unit, lambda pick: len(self.prepare(pick).data))

    def _new_open_loop(self, token_demand: TokenDemand | None) -> OpenLoop | None:
        """An open loop's arrivals (the scenario's `load.arrival`); None: a closed loop."""
        load = self.scenario.load
        if load is None or not load.open_loop or self.config.role == "master":
            return None  # (a master's workers send the arrivals)
        # apart from every user's sampler, and each worker's picks its own
        seed = self.scenario.seed * 1_000_003 - 1 - (zlib.crc32(self.config.worker.encode()) if self.config.role == "worker" else 0)
        return OpenLoop(
            load, Sampler(self.scenario, seed), token_demand or (lambda _pick: 1.0), self.scenario.seed, trace_of(self.scenario)
        )

    def _new_recent(self) -> RecentStats | None:
        if self.config.role == "worker":
            return None  # its requests reach the master's sliding window in its reports
        abort = self.scenario.abort
        return RecentStats(keep_s=max(LIVE_WINDOW_S, abort.window_s if abort is not None else 0.0))

    @property
    def recent(self) -> RecentStats:
        """The figures over a sliding window (web UI, abort rule): a local process's or a master's."""
        assert self._recent is not None, "a worker keeps no sliding window"
        return self._recent

    @staticmethod
    def _point_writer(config: RunConfig, labels: dict[str, str]) -> PointWriter | None:
        """The points' writer: a request's point is its record, rendered when written."""
        if config.points == "off":
            return None
        sink = InfluxSink(config.influx) if config.influx else FileSink(config.output_dir / POINTS_FILE)
        return PointWriter(sink, max_buffer=config.points_buffer, render=lambda record: request_line(record, labels))

    def _gauges(self) -> Gauges:
        points = self.points
        runner = getattr(self.environment, "runner", None)
        return Gauges(
            users=lambda: runner.user_count if runner is not None else 0,
            in_flight=lambda: self.in_flight,
            points_written=lambda: points.written if points else 0,
            points_dropped=lambda: points.dropped if points else 0,
            buffer_size=lambda: points.buffered if points else 0,
        )

    # --- what users call -------------------------------------------------------------
    def _new_fail_fast(self) -> FailFast:
        scenario = self.config.scenario
        return FailFast(
            scenario.failures.fail_fast, time.monotonic(), lambda prompt: scenario.counts_for_fail_fast(self._prompts.get(prompt))
        )

    def new_backoff(self) -> Backoff:
        return Backoff(lambda prompt: self.scenario.backoff_for(self._prompts.get(prompt)))

    def new_retrying(self) -> Retrying:
        rng = random.Random(f"retries {self.scenario.seed} {next(self._retry_seq)}")  # jitter, reproducible per user
        return Retrying(lambda prompt: self.scenario.retries_for(self._prompts.get(prompt)), rng)

    def new_sampler(self) -> Sampler:
        return Sampler(self.scenario, seed=self.scenario.seed * 1_000_003 + next(self._user_seq), shared=self._in_order)

    def new_transport(self) -> Transport:
        return self._shared_transport or FastTransport(self.config.target, self.config.scenario.timeouts.connect_s)

    def release_transport(self, transport: Transport) -> None:
        if transport is not self._shared_transport:
            transport.close()

    def prepare(self, pick: Pick) -> PreparedRequest:
        """The request of a pick: built once per (variant, model, prompt, stream) of the scenario's
        own prompts; a dataset entry's, and a prompt built in code, for each request (a dataset's
        bodies, all kept, would hold it in memory twice; a prompt built in code may change)."""
        key = (pick.variant, pick.model, pick.prompt.name, pick.stream)
        own = (
            self._prompts.get(pick.prompt.name)
            if pick.variant is None
            else self.scenario._variant_prompts.get((pick.variant, pick.prompt.name))
        )
        cached = pick.entry is None and own is pick.prompt
        request = self._prepared.get(key) if cached else None
        if request is None:
            request = self.request_of(pick, payload.build_body(pick, self.scenario))
            if cached:
                self._prepared[key] = request
        return request

    def request_of(self, pick: Pick, body: dict[str, Any], reply: Reply | None = None) -> PreparedRequest:
        """`body` as the pick's request (a conversation's turn collects its `reply`)."""
        timeouts = self.scenario.timeouts
        if pick.prompt.timeout_s:
            timeouts = timeouts.model_copy(update={"total_s": pick.prompt.timeout_s})
        headers = variant_headers(self.scenario, pick.variant) if pick.variant is not None else None
        return PreparedRequest(body, payload.body_bytes(body), pick.stream, timeouts, reply, headers or None)

    def new_session(self, pick: Pick, request: PreparedRequest) -> Session:
        """A conversation of `pick`'s prompt that starts with what `request` would send alone."""
        return Session(request.body, pick.prompt.conversation, pick.prompt.tool_result)

    def end_session(self, session: Session) -> None:
        self.conversations.end(session)

    def new_think_rng(self) -> random.Random:
        """A user's think times between the turns of its conversations, reproducible per user."""
        return random.Random(f"think {self.scenario.seed} {next(self._think_seq)}")

    def admit(self) -> bool:
        """May one more request be sent? (--max-requests in a single process; a worker's share
        of the budget and of the request limit)"""
        refusal = self._refusal()
        if refusal is not None:
            if self.on_limit is not None:
                self.on_limit(refusal)
            return False
        self.admitted += 1
        return True

    def _refusal(self) -> str | None:
        if self.disk.refusal is not None:
            return self.disk.refusal
        limit = self.config.max_requests
        if limit is not None and self.admitted >= limit:
            return f"--max-requests {limit} reached"
        return self.share.refusal(self.ledger.spent_usd, self.admitted) if self.share is not None else None

    def new_record(self, pick: Pick, arrival: Arrival | None = None, previous: TimingRecord | None = None) -> TimingRecord:
        """A record for a request (or a retry's attempt: `previous` is its request's last one) about
        to be sent; it is in flight until `emit`. The transport sets the precise start when it
        sends. In an open loop it keeps the time its request was due (`arrival`)."""
        self.in_flight += 1
        now_ns = time.perf_counter_ns()
        attempt = 1 if previous is None else previous.attempt + 1
        record = TimingRecord(model=pick.model, prompt=pick.prompt.name, mode=pick.mode, start_ns=now_ns, attempt=attempt)
        if pick.entry is not None:
            record.entry = self.scenario._datasets[pick.prompt.name][pick.entry].line
        record.turn, record.variant = pick.turn, pick.variant
        if arrival is not None:
            record.scheduled_ns = arrival.scheduled_ns
            record.scheduled_wall_ns = time.time_ns() - (now_ns - arrival.scheduled_ns)
        if self.steps is not None:
            self.steps.start(record, record.scheduled_wall_ns or time.time_ns(), previous)
        return record

    def abandon(self, record: TimingRecord) -> None:
        """The run stopped while `record`'s request waited to be tried again: the request ends
        there (cancelled, as the application sees it); its attempts are all recorded already."""
        if record.window == self.ledger.window:
            self.stats.abandon(record)
        if self.steps is not None:
            self.steps.abandon(record)

    def open_window(self) -> None:
        """Open the measurement window now (`--reset-stats`): the figures start empty; requests
        that started before stay recorded (records, points, ledger) but out of the figures."""
        ledger = self.ledger
        ledger.before_window = ledger.recorded  # every request so far started before now
        ledger.openings.append(time.perf_counter_ns())
        ledger.window_opened_at = time.time()
        self.stats.reset()
        self.conversations.reset()
        self.caching.reset()
        self.variants.reset()
        self._recent = self._new_recent()

    def emit(self, record: TimingRecord) -> None:
        """Fan one finished request out to every sink, exactly once: the records and points
        always; Locust's stats and the figures when it started inside the measurement window."""
        self.in_flight -= 1
        record.cost_usd = self.prices.cost(
            record.model, record.input_tokens, record.output_tokens, record.cache_read_tokens, record.cache_creation_tokens
        )
        if record.scheduled_ns is not None:
            record.send_lag_ms = (record.start_ns - record.scheduled_ns) / 1e6
            if self.token_demand is not None:
                sent = self.scenario._variant_prompts.get((record.variant or "", record.prompt)) or self._prompts[record.prompt]
                self.token_demand.observe(record, sent.max_tokens)
        ledger = self.ledger
        ledger.recorded += 1
        ledger.spent_usd += record.cost_usd or 0.0
        record.window = ledger.window_of(record)
        self.fail_fast.observe(record, time.monotonic())
        if self.records is not None:
            self.records.write(record)
        if self.points is not None:
            self.points.add(record)
        self.headroom.add(record)
        if record.outcome == CONNECTION_ERROR:
            self._tell_cause(record)
        if self.steps is not None:
            self.steps.add(record)
        if record.window != ledger.window:
            ledger.before_window += 1
            return
        name = f"{record.model} {record.prompt}" if record.variant is None else f"{record.model} {record.prompt} [{record.variant}]"
        exception = None
        if not record.ok:
            status = f" (HTTP {record.http_status})" if record.http_status not in (None, 200) else ""
            exception = ClaudeFailure(f"{record.outcome}: {record.error_type}{status}")
        self.environment.events.request.fire(
            request_type="STREAM" if record.mode == "stream" else "BLOCK",
            name=name,
            response_time=record.latency_ms,
            response_length=record.output_tokens or 0,
            exception=exception,
            context={"outcome": record.outcome},
        )
        if record.ok and record.first_content == "text":
            self.environment.stats.get(name, "TTFT").log(record.ttft_ms, 0)  # type: ignore[arg-type]  # float ms, as in request events (typed int)
        self.stats.add(record)
        self.conversations.add(record)
        self.caching.add(record)
        self.variants.add(record)
        if self._recent is not None:
            self._recent.add(record)

    def _tell_cause(self, record: TimingRecord) -> None:
        """A connection failure's cause (an untrusted certificate, a refused connection) is
        logged once per distinct cause; every such request is counted in the figures."""
        cause = record.error_message or record.error_type or "unknown"
        if cause not in self._told and len(self._told) < MAX_CAUSES_TOLD:
            self._told.add(cause)
            logger.error(
                "connection to %s failed (%s): %s (said once; each such request counts as connection_error)",
                self.config.target.base_url,
                record.error_type,
                cause,
            )

    # --- lifecycle --------------------------------------------------------------------
    def _on_health(self, sample: HealthSample) -> None:
        if self.points is not None:
            self.points.add(line(HEALTH_MEASUREMENT, {**self.labels, "role": self.config.role}, sample.fields(), time.time_ns()))

    def _marker(self, event: str, detail: str) -> None:
        if self.points is not None:
            self.points.add(line(RUN_MEASUREMENT, self.labels, {"event": event, "detail": detail}, time.time_ns()))

    def start(self) -> None:
        """The run begins: the sinks start, then (a process that sends) synthetic prompts are
        sized before any request is sent."""
        self.fail_fast = self._new_fail_fast()
        if self.points is not None:
            self.points.start()
        self.health.start()
        self.disk.start()
        self._marker("start", f"scenario {self.scenario.name} ({self.scenario.digest()[:12]}), transport {self.config.transport}")
        if self.config.role != "master":
            logger.info(network.route(self.config.target.base_url, self.config.target.proxy))
            self.input_sizes = {size.key: size for size in calibrate(self.scenario, self.config.target)}

    def close(self) -> None:
        """End of the run: every request has been emitted; flush and close every sink."""
        self.ended_at = time.time()
        self.end_arrivals()
        self.health.stop()
        self.disk.stop()
        self._marker("stop", f"{self.stats.requests} requests")
        if self.points is not None:
            self.points.close(self.config.points_flush_timeout_s)
        if self._shared_transport is not None:
            self._shared_transport.close()
            self._shared_transport = None
        if self.records is not None:
            self.records.close()

    def end_arrivals(self) -> None:
        """The run stops: nothing more arrives, and the users waiting for an arrival stop."""
        if self.open_loop is not None:
            self.open_loop.close()

    def stamped_reads(self) -> dict[str, int]:
        """This process's reads of the run, by how they were stamped (harness/stamps.py)."""
        return READS.since(self._reads_at_start)

    def report(self) -> dict[str, Any]:
        """A worker's periodic report: the stats added since the last one, health, counters."""
        points = self.points
        if self.records is not None:
            self.records.flush()  # on disk: at least every request this report counts
        return {
            "run_id": self.config.run_id,
            "stats": self.stats.encode_delta(),
            "health": self.health.latest.fields() if self.health.latest else {},
            "saturated_samples": self.health.saturated_samples,
            "unreliable": self.health.unreliable,
            "records": self.records.written if self.records is not None else 0,
            "recorded": self.ledger.recorded,
            "in_flight": self.in_flight,
            "before_window": self.ledger.before_window,
            "window": self.ledger.window,
            "spent_usd": self.ledger.spent_usd,
            "share_seq": self.share.seq if self.share is not None else None,
            "failed_fast": self.fail_fast.verdict(time.monotonic()),
            "points_written": points.written if points else 0,
            "points_dropped": points.dropped if points else 0,
            "arrivals": self.open_loop.counts.as_dict() if self.open_loop is not None else None,
            "steps": self.steps.report() if self.steps is not None else None,
            "headroom": self.headroom.encode_delta(),
            "conversations": self.conversations.encode_delta(),
            "caching": self.caching.encode_delta(),
            "variants": self.variants.encode_delta(),
            "input_sizes": [size.model_dump() for size in self.input_sizes.values()],
            "stamping": self.stamping,
            "stamped_reads": self.stamped_reads(),
        }
