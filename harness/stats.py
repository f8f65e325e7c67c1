"""Precise per-label statistics (HDR histograms, 3 significant digits: harness/histograms.py).

Locust's own percentiles are coarse (about two significant digits); the summary takes its
percentiles from HDR histograms kept per (model, prompt, mode) and merged per model or mode on demand.
Counts are kept by outcome class, sums of tokens and cost alongside. Stats serialize to a
compact dict (histograms HDR-encoded) so that workers can send their deltas to the master,
which merges them: the merged percentiles are exactly those of all requests together.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.histograms import US_MAX, histogram_values, new_histogram, record_ms
from harness.results import Application, FromSchedule, Group, Histograms, Percentiles
from harness.timing import CANCELLED, OK, OUTCOMES, TimingRecord

# Output tokens/s are recorded in milli-tokens/s: up to 1,000,000 tokens/s.
_TPS_SCALE = 1000
PERCENTILES = (50, 90, 95, 99)


def no_pause() -> None:
    """The default `pause` of a merge: none (the web UI passes a yield to the event loop)."""


def percentiles(histogram: HdrHistogram, scale: int = 1000) -> Percentiles | None:
    """A histogram's figures, its values divided by `scale` (microseconds to ms by default)."""
    count = histogram.get_total_count()
    if not count:
        return None
    at, mean = histogram_values(histogram, PERCENTILES)
    return Percentiles(
        count=count,
        min=histogram.get_min_value() / scale,
        max=histogram.get_max_value() / scale,
        mean=mean / scale,
        **{f"p{q:g}": at[q] / scale for q in PERCENTILES},
    )


HISTOGRAMS = ("ttft", "first_thinking", "latency", "output_tps")


@dataclass
class AppStats:
    """Requests as the application sees them when its client retries: one per request, however
    many attempts it took; latency and TTFT from its first attempt's start, waits included."""

    outcomes: Counter[str] = field(default_factory=Counter)  # the last attempt's; cancelled: cut by the stop
    attempts: int = 0
    retried: int = 0  # requests that took more than one attempt
    latency: HdrHistogram = field(default_factory=new_histogram)
    ttft: HdrHistogram = field(default_factory=new_histogram)

    def add(self, record: TimingRecord) -> None:
        """`record` is its request's last attempt."""
        self.outcomes[record.outcome] += 1
        self.attempts += record.attempt
        self.retried += record.attempt > 1
        if record.outcome == OK:
            record_ms(self.latency, record.app_latency_ms)
            record_ms(self.ttft, record.app_ttft_ms)

    def abandon(self, record: TimingRecord) -> None:
        """The run stopped while `record`'s request waited to be tried again."""
        self.outcomes[CANCELLED] += 1
        self.attempts += record.attempt
        self.retried += 1

    def merge(self, other: AppStats) -> None:
        self.outcomes.update(other.outcomes)
        self.attempts += other.attempts
        self.retried += other.retried
        self.latency.add(other.latency)
        self.ttft.add(other.ttft)

    def clear(self) -> None:
        self.outcomes.clear()
        self.attempts = self.retried = 0
        self.latency.reset()
        self.ttft.reset()

    def figures(self) -> Application:
        requests = sum(self.outcomes.values())
        return Application(
            requests=requests,
            failures=requests - self.outcomes[OK],
            attempts=self.attempts,
            retried=self.retried,
            outcomes={name: self.outcomes[name] for name in OUTCOMES if self.outcomes[name]},
            latency_ms=percentiles(self.latency),
            ttft_ms=percentiles(self.ttft),
        )

    def encode(self) -> dict[str, Any]:
        return {
            "outcomes": dict(self.outcomes),
            "attempts": self.attempts,
            "retried": self.retried,
            "latency": self.latency.encode().decode(),
            "ttft": self.ttft.encode().decode(),
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> AppStats:
        stats = cls(outcomes=Counter(data["outcomes"]), attempts=data["attempts"], retried=data["retried"])
        stats.latency.decode_and_add(data["latency"].encode())
        stats.ttft.decode_and_add(data["ttft"].encode())
        return stats


@dataclass
class ScheduledStats:
    """In an open loop: how late requests were sent (first attempts), and latency and TTFT from
    the time each request was due (on its last attempt, successful ones)."""

    send_lag: HdrHistogram = field(default_factory=new_histogram)
    latency: HdrHistogram = field(default_factory=new_histogram)
    ttft: HdrHistogram = field(default_factory=new_histogram)

    NAMES = ("send_lag", "latency", "ttft")

    def add(self, record: TimingRecord) -> None:
        if record.attempt == 1:
            record_ms(self.send_lag, record.send_lag_ms)
        if record.outcome == OK and not record.retried:
            record_ms(self.latency, record.latency_from_schedule_ms)
            record_ms(self.ttft, record.ttft_from_schedule_ms)

    def _histograms(self) -> list[HdrHistogram]:
        return [self.send_lag, self.latency, self.ttft]

    def merge(self, other: ScheduledStats) -> None:
        for mine, theirs in zip(self._histograms(), other._histograms(), strict=True):
            mine.add(theirs)

    def clear(self) -> None:
        for histogram in self._histograms():
            histogram.reset()

    def figures(self) -> FromSchedule:
        return FromSchedule(send_lag_ms=percentiles(self.send_lag), latency_ms=percentiles(self.latency), ttft_ms=percentiles(self.ttft))

    def encode(self) -> dict[str, str]:
        return {name: histogram.encode().decode() for name, histogram in zip(self.NAMES, self._histograms(), strict=True)}

    @classmethod
    def decode(cls, data: dict[str, str]) -> ScheduledStats:
        stats = cls()
        for name, histogram in zip(cls.NAMES, stats._histograms(), strict=True):
            histogram.decode_and_add(data[name].encode())
        return stats


@dataclass
class LabelStats:
    """Everything the summary needs about one label (or a merge of labels)."""

    outcomes: Counter[str] = field(default_factory=Counter)
    ttft: HdrHistogram = field(default_factory=new_histogram)
    first_thinking: HdrHistogram = field(default_factory=new_histogram)
    latency: HdrHistogram = field(default_factory=new_histogram)
    output_tps: HdrHistogram = field(default_factory=new_histogram)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    unpriced: int = 0  # requests whose model has no price
    application: AppStats | None = None  # with retries: the requests as the application sees them
    scheduled: ScheduledStats | None = None  # in an open loop: the times from when requests were due

    def _application(self) -> AppStats:
        if self.application is None:
            self.application = AppStats()
        return self.application

    def add(self, record: TimingRecord) -> None:
        if record.app_latency_ms is not None:  # the last attempt of a request whose client retries
            self._application().add(record)
        if record.send_lag_ms is not None:
            if self.scheduled is None:
                self.scheduled = ScheduledStats()
            self.scheduled.add(record)
        self.outcomes[record.outcome] += 1
        self.input_tokens += record.input_tokens or 0
        self.output_tokens += record.output_tokens or 0
        if record.cost_usd is None:
            self.unpriced += 1
        else:
            self.cost_usd += record.cost_usd
        if record.outcome != OK:
            return
        record_ms(self.latency, record.latency_ms)
        record_ms(self.first_thinking, record.first_thinking_ms)
        if record.first_content == "text":
            record_ms(self.ttft, record.ttft_ms)
        tps = record.output_tps
        if tps is not None:
            self.output_tps.record_value(min(max(int(tps * _TPS_SCALE), 1), US_MAX))

    def merge(self, other: LabelStats) -> None:
        self.outcomes.update(other.outcomes)
        for name in HISTOGRAMS:
            getattr(self, name).add(getattr(other, name))
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd
        self.unpriced += other.unpriced
        if other.application is not None:
            self._application().merge(other.application)
        if other.scheduled is not None:
            if self.scheduled is None:
                self.scheduled = ScheduledStats()
            self.scheduled.merge(other.scheduled)

    def clear(self) -> None:
        """Back to no requests, keeping the histograms' memory."""
        self.outcomes.clear()
        for name in HISTOGRAMS:
            getattr(self, name).reset()
        self.input_tokens = self.output_tokens = self.unpriced = 0
        self.cost_usd = 0.0
        if self.application is not None:
            self.application.clear()
        if self.scheduled is not None:
            self.scheduled.clear()

    @property
    def empty(self) -> bool:
        return not self.outcomes and (self.application is None or not self.application.outcomes)

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failures(self) -> int:
        return self.requests - self.outcomes[OK]

    def percentiles(self, name: str) -> Percentiles | None:
        """p50.. of one histogram (times in ms; "output_tps" in tokens/s)."""
        return percentiles(getattr(self, name), _TPS_SCALE if name == "output_tps" else 1000)

    def figures(self, with_histograms: bool = False) -> Group:
        """The summary's figures of this group; optionally the HDR histograms themselves
        (encoded), which a later run's `--baseline` comparison needs."""
        hdr = Histograms(ttft=self.ttft.encode().decode(), latency=self.latency.encode().decode()) if with_histograms else None
        return Group(
            requests=self.requests,
            failures=self.failures,
            outcomes={name: self.outcomes[name] for name in OUTCOMES if self.outcomes[name]},
            ttft_ms=self.percentiles("ttft"),
            first_thinking_ms=self.percentiles("first_thinking"),
            latency_ms=self.percentiles("latency"),
            output_tps=self.percentiles("output_tps"),
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=round(self.cost_usd, 6),
            unpriced_requests=self.unpriced,
            hdr=hdr,
            application=self.application.figures() if self.application is not None else None,
            from_schedule=self.scheduled.figures() if self.scheduled is not None else None,
        )

    def encode(self) -> dict[str, Any]:
        return {
            "outcomes": dict(self.outcomes),
            **{name: getattr(self, name).encode().decode() for name in HISTOGRAMS},
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "unpriced": self.unpriced,
            **({"application": self.application.encode()} if self.application is not None else {}),
            **({"scheduled": self.scheduled.encode()} if self.scheduled is not None else {}),
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> LabelStats:
        stats = cls(outcomes=Counter(data["outcomes"]))
        for name in HISTOGRAMS:
            getattr(stats, name).decode_and_add(data[name].encode())
        stats.input_tokens, stats.output_tokens = data["input_tokens"], data["output_tokens"]
        stats.cost_usd, stats.unpriced = data["cost_usd"], data["unpriced"]
        if "application" in data:
            stats.application = AppStats.decode(data["application"])
        if "scheduled" in data:
            stats.scheduled = ScheduledStats.decode(data["scheduled"])
        return stats


Label = tuple[str, str, str]  # (model, prompt, mode)


class RunStats:
    """Per-(model, prompt, mode) statistics of one run."""

    def __init__(self) -> None:
        self.labels: dict[Label, LabelStats] = {}

    def _label(self, record: TimingRecord, key: Label | None = None) -> LabelStats:
        key = key or (record.model, record.prompt, record.mode)
        stats = self.labels.get(key)
        if stats is None:
            stats = self.labels[key] = LabelStats()
        return stats

    def add(self, record: TimingRecord, key: Label | None = None) -> None:
        """Add a finished request to its label's figures (or to those of `key`)."""
        self._label(record, key).add(record)

    def abandon(self, record: TimingRecord) -> None:
        """The run stopped while `record`'s request waited for a retry: that request ends so."""
        self._label(record)._application().abandon(record)

    def reset(self) -> None:
        self.labels.clear()

    def merge(self, other: RunStats, pause: Callable[[], None] = no_pause) -> None:
        """Add `other`'s labels (new ones in its order), calling `pause` after each."""
        for key, stats in list(other.labels.items()):
            mine = self.labels.get(key)
            if mine is None:
                mine = self.labels[key] = LabelStats()
            mine.merge(stats)
            pause()

    @classmethod
    def combined(cls, parts: Iterable[RunStats], pause: Callable[[], None] = no_pause) -> RunStats:
        """A new sum of `parts` (a copy: what is added to them later does not change it)."""
        result = cls()
        for part in parts:
            result.merge(part, pause)
        return result

    def copy(self, pause: Callable[[], None] = no_pause) -> RunStats:
        return RunStats.combined([self], pause)

    def encode(self) -> list[dict[str, Any]]:
        return [self._encode_label(label, stats) for label, stats in self.labels.items()]

    @classmethod
    def decode(cls, items: list[dict[str, Any]]) -> RunStats:
        run_stats = cls()
        for item in items:
            run_stats.labels[(item["model"], item["prompt"], item["mode"])] = LabelStats.decode(item)
        return run_stats

    def encode_delta(self) -> list[dict[str, Any]]:
        """A worker's report delta: the labels with requests since the last one, encoded; then
        every label back to zero. The histograms are kept and zeroed, not made anew: a worker
        reports every few seconds, and new ones each time would churn megabytes through the
        allocator, whose fragments stay in the process (its memory would creep up for hours)."""
        delta = [self._encode_label(label, stats) for label, stats in self.labels.items() if not stats.empty]
        for stats in self.labels.values():
            stats.clear()
        return delta

    @staticmethod
    def _encode_label(label: Label, stats: LabelStats) -> dict[str, Any]:
        model, prompt, mode = label
        return {"model": model, "prompt": prompt, "mode": mode, **stats.encode()}

    @property
    def requests(self) -> int:
        return sum(stats.requests for stats in self.labels.values())

    @property
    def cost_usd(self) -> float:
        return sum(stats.cost_usd for stats in self.labels.values())

    def by_model(self, pause: Callable[[], None] = no_pause) -> dict[str, LabelStats]:
        """The labels merged per model (models in sorted order); `pause` runs after each label."""
        return self._grouped(lambda label: label[0], pause)

    def by_mode(self, pause: Callable[[], None] = no_pause) -> dict[str, LabelStats]:
        return self._grouped(lambda label: label[2], pause)

    def _grouped(self, key: Callable[[Label], str], pause: Callable[[], None]) -> dict[str, LabelStats]:
        merged: dict[str, LabelStats] = {}
        for label, stats in sorted(self.labels.items()):
            merged.setdefault(key(label), LabelStats()).merge(stats)
            pause()
        return merged

    def total(self, pause: Callable[[], None] = no_pause) -> LabelStats:
        """All labels merged (in their order); `pause` runs after each label."""
        return _merge(list(self.labels.values()), pause)

    def sorted_labels(self) -> list[tuple[Label, LabelStats]]:
        """The labels in (model, prompt, mode) order."""
        return sorted(self.labels.items())


def _merge(items: Iterable[LabelStats], pause: Callable[[], None] = no_pause) -> LabelStats:
    total = LabelStats()
    for stats in items:
        total.merge(stats)
        pause()
    return total


LIVE_WINDOW_S = 30  # the web UI's "last 30 s" figures


class RecentStats:
    """Stats of the last seconds in time buckets, for live figures over a sliding window (the
    web UI's, the abort rule's).

    Requests (or, on a master, workers' report deltas) are added to the bucket of the
    moment they arrive; `window(seconds)` merges the buckets that cover the last seconds, up to
    `keep_s`. Only what a window needs is kept: a bucket holds full histograms per label (about
    0.75 MB each), so each kept bucket costs that much per label.
    """

    def __init__(self, bucket_s: float = 5.0, keep_s: float = LIVE_WINDOW_S, clock: Any = None) -> None:
        import time

        self.bucket_s = bucket_s
        self.keep = int(keep_s / bucket_s) + 1
        self._clock = clock or time.monotonic
        self._buckets: dict[int, RunStats] = {}

    def _bucket(self) -> RunStats:
        index = int(self._clock() / self.bucket_s)
        bucket = self._buckets.get(index)
        if bucket is None:
            bucket = self._buckets[index] = RunStats()
            for old in [i for i in self._buckets if i <= index - self.keep]:
                del self._buckets[old]
        return bucket

    def add(self, record: TimingRecord) -> None:
        self._bucket().add(record)

    def merge(self, delta: RunStats) -> None:
        self._bucket().merge(delta)

    def window_parts(self, seconds: float) -> list[RunStats]:
        """The time buckets that cover the last `seconds` (up to `keep_s`), oldest first: the
        live buckets themselves, which later requests are added to (`window` sums a copy)."""
        now = self._clock()
        first = max(int((now - seconds) / self.bucket_s) + 1, int(now / self.bucket_s) - self.keep + 1)
        return [bucket for index, bucket in list(self._buckets.items()) if index >= first]

    def window(self, seconds: float, pause: Callable[[], None] = no_pause) -> RunStats:
        """The sum of the last `seconds`; `pause` runs after each label of each bucket."""
        return RunStats.combined(self.window_parts(seconds), pause)
