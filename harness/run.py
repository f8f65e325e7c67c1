"""One load-test run: its configuration, its sinks, and the fan-out of each finished request.

`HarnessRun.emit` is the single place a TimingRecord goes after its request ended: cost,
Locust's request event (plus the TTFT row), the precise stats and the records file, each
exactly once.
"""

from __future__ import annotations

import ipaddress
import itertools
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import payload
from harness.pricing import Price, PriceTable
from harness.records import RecordsFile
from harness.scenario import Pick, Sampler, Scenario
from harness.stats import RunStats
from harness.timing import TimingRecord
from harness.transport import FastTransport, PreparedRequest, SdkTransport, Target, Transport

EMULATOR_API_KEY = "emulator-key"  # the emulator accepts any key; never a real one


class ClaudeFailure(Exception):
    """What Locust shows for a failed request: the outcome class, error type and status.

    Deliberately free of per-request details so that Locust's failure table groups by class.
    """


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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


class HarnessRun:
    def __init__(self, config: RunConfig, environment: Any) -> None:
        self.config = config
        self.environment = environment
        self.scenario = config.scenario
        self.stats = RunStats()
        self.prices = PriceTable(
            {model: Price(p.input, p.output) for model, p in (config.scenario.prices or {}).items()}
        )
        self.records = RecordsFile(
            config.output_dir / "requests.jsonl", {"run_id": config.run_id, "scenario": config.scenario.name}
        )
        self._prepared: dict[tuple[str, str, bool], PreparedRequest] = {}
        self._user_seq = itertools.count()
        # the SDK client is shared by all users and built now: importing the SDK takes
        # seconds, which must not happen while other users' requests are in flight
        self._shared_transport: Transport | None = (
            SdkTransport(config.target, config.pool_size) if config.transport == "sdk" else None
        )

    # --- what users call -------------------------------------------------------------
    def new_sampler(self) -> Sampler:
        return Sampler(self.scenario, seed=self.scenario.seed * 1_000_003 + next(self._user_seq))

    def new_transport(self) -> Transport:
        return self._shared_transport or FastTransport(self.config.target)

    def release_transport(self, transport: Transport) -> None:
        if transport is not self._shared_transport:
            transport.close()

    def prepare(self, pick: Pick) -> PreparedRequest:
        key = (pick.model, pick.prompt.name, pick.stream)
        request = self._prepared.get(key)
        if request is None:
            body = payload.build_body(pick, self.scenario)
            timeout_s = pick.prompt.timeout_s or self.scenario.timeout_s
            request = self._prepared[key] = PreparedRequest(body, payload.build_body_bytes(pick, self.scenario), pick.stream, timeout_s)
        return request

    def emit(self, record: TimingRecord) -> None:
        """Fan one finished request out to every sink, exactly once."""
        record.cost_usd = self.prices.cost(
            record.model, record.input_tokens, record.output_tokens, record.cache_read_tokens, record.cache_creation_tokens
        )
        name = f"{record.model} {record.prompt}"
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
            self.environment.stats.get(name, "TTFT").log(record.ttft_ms, 0)
        self.stats.add(record)
        self.records.write(record)

    # --- lifecycle --------------------------------------------------------------------
    def close(self) -> None:
        if self._shared_transport is not None:
            self._shared_transport.close()
            self._shared_transport = None
        self.records.close()
