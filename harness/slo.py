"""Pass/fail judgements on a finished run: the scenario's SLOs, the regression check against a
baseline summary, and the verdict (status and exit code) they add up to.

Each SLO metric is defined once below: what it measures, whether its limit is a ceiling or a
floor, and how its value is read from a group's figures. Values come from the summary's
precise figures (HDR percentiles; shares over judged requests, see harness.results.Group).

A regression is a percentile that got worse than the baseline's by more than the threshold,
with the change's confidence interval: a distribution-free interval for each quantile (the
order statistics around rank n*q, +-1.96 standard deviations of the binomial), so that noise
is not mistaken for a regression. The check fails only when the change exceeds the threshold
and the whole interval lies above zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from hdrh.histogram import HdrHistogram

from harness import exitcodes
from harness.histograms import new_histogram
from harness.intervals import quantile_intervals
from harness.results import FromSchedule, Group, Percentiles, RegressionResult, SloResult, Summary, SweepResult, Verdict
from harness.scenario import Regression, SloLimits, Slos
from harness.summary import sweep_conclusion
from harness.timing import OVERLOADED, RATE_LIMITED


@dataclass(frozen=True)
class SloMetric:
    metric: str  # in words
    bound: Literal["max", "min"]  # the limit is a ceiling (max) or a floor (min)
    value: Callable[[Group], float | None]


def _percentile(field: str, key: str) -> Callable[[Group | FromSchedule], float | None]:
    def read(figures: Group | FromSchedule) -> float | None:
        values: Percentiles | None = getattr(figures, field)
        return getattr(values, key) if values else None

    return read


def _felt(field: str, key: str) -> Callable[[Group], float | None]:
    """A TTFT or latency percentile as a user of the service felt it: in an open loop, from
    the time each request was due (a late send is part of the wait); else from the send."""
    read = _percentile(field, key)
    return lambda group: read(group.from_schedule if group.from_schedule is not None else group)


def _slo_metrics() -> dict[str, SloMetric]:
    metrics = {}
    for field, words in (("ttft", "TTFT"), ("latency", "latency")):
        for q in (50, 90, 95, 99):
            metrics[f"{field}_p{q}_ms"] = SloMetric(f"{words} p{q} (ms)", "max", _felt(f"{field}_ms", f"p{q}"))
    metrics["error_rate"] = SloMetric("share of judged requests that failed", "max", lambda g: g.error_rate)
    metrics["rate_limited_share"] = SloMetric("share of judged requests rate limited (429)", "max", lambda g: g.share(RATE_LIMITED))
    metrics["overloaded_share"] = SloMetric("share of judged requests overloaded (529)", "max", lambda g: g.share(OVERLOADED))
    metrics["min_output_tps"] = SloMetric("output tokens/s p50", "min", _percentile("output_tps", "p50"))
    metrics["min_requests"] = SloMetric("requests in the window", "min", lambda g: float(g.requests))
    return metrics


SLO_METRICS = _slo_metrics()


def judge(name: str, limit: float, group: Group | None, scope: str) -> SloResult:
    definition = SLO_METRICS[name]
    value = definition.value(group) if group is not None else None
    passed = value is not None and (value <= limit if definition.bound == "max" else value >= limit)
    metric = definition.metric
    if group is not None and group.from_schedule is not None and name.startswith(("ttft_", "latency_")):
        metric += " from the scheduled time"
    return SloResult(name=name, metric=metric, scope=scope, bound=definition.bound, limit=limit, value=value, passed=passed)


def _judge_all(limits: SloLimits, group: Group | None, scope: str) -> list[SloResult]:
    return [judge(name, float(limit), group, scope) for name, limit in limits.model_dump(exclude={"models"}, exclude_none=True).items()]


def evaluate(slos: Slos, summary: Summary) -> list[SloResult]:
    return evaluate_groups(slos, summary.totals, summary.models)


def evaluate_groups(slos: Slos, totals: Group, models: dict[str, Group]) -> list[SloResult]:
    """The SLOs judged on a group of requests (a run's, a sweep step's) and its models."""
    results = _judge_all(slos, totals, "all")
    for model, limits in slos.models.items():
        results += _judge_all(limits, models.get(model), model)
    return results


# --- regression against a baseline ---------------------------------------------------------
def _histogram(group: Group, metric: str) -> HdrHistogram | None:
    encoded = getattr(group.hdr, metric, None) if group.hdr else None
    if not encoded:
        return None
    histogram = new_histogram()
    histogram.decode_and_add(encoded.encode())
    return histogram


def quantile_interval(histogram: HdrHistogram, quantile: float) -> tuple[float, float, float]:
    """(low, estimate, high) in ms of a quantile (0..100), 95 % distribution-free interval."""
    return quantile_intervals(histogram, [quantile])[quantile]


def compare(current: Summary, baseline: Summary, rule: Regression) -> list[RegressionResult]:
    results = []
    groups = [("all", current.totals, baseline.totals)]
    groups += [(m, g, baseline.models[m]) for m, g in current.models.items() if m in baseline.models]
    for scope, now, before in groups:
        for name in rule.metrics:
            metric, quantile = name.rsplit("_", 1)[0].split("_p")
            new, old = _histogram(now, metric), _histogram(before, metric)
            if new is None or old is None or not new.get_total_count() or not old.get_total_count():
                continue
            new_low, new_value, new_high = quantile_interval(new, float(quantile))
            old_low, old_value, old_high = quantile_interval(old, float(quantile))
            change = 100 * (new_value - old_value) / old_value
            ci_low = 100 * (new_low - old_high) / old_high
            ci_high = 100 * (new_high - old_low) / old_low
            results.append(
                RegressionResult(
                    scope=scope,
                    metric=name,
                    baseline_ms=old_value,
                    current_ms=new_value,
                    change_pct=change,
                    ci_low_pct=ci_low,
                    ci_high_pct=ci_high,
                    threshold_pct=rule.threshold_pct,
                    regressed=change > rule.threshold_pct and ci_low > 0,
                )
            )
    return results


# --- the verdict ----------------------------------------------------------------------------
def judge_run(
    summary: Summary,
    slos: Slos,
    baseline: Summary | None,
    rule: Regression,
    *,
    stopped_by: str | None = None,
    aborted: str | None = None,
    failed_fast: str | None = None,
    fail_on_unreliable: bool = False,
    exit_code_on_error: int = exitcodes.FAILED,
    crashes: Crashes | None = None,
) -> Summary:
    """The summary with its judgements: SLO results, the regression check, the verdict."""
    # a sweep's steps are judged one by one (harness/sweep_run.py); the run as a whole, past the
    # knee on purpose, is not
    judged_slos = evaluate(slos, summary) if summary.sweep is None else []
    judged = summary.model_copy(update={"slos": judged_slos, "regressions": compare(summary, baseline, rule) if baseline else []})
    if failed_fast:  # a wrong target: nothing else was measured
        run_verdict = Verdict(status="FAILED_FAST", exit_code=exitcodes.USAGE, reasons=[f"failed fast: {failed_fast}"])
    else:
        run_verdict = verdict(judged, stopped_by, aborted, fail_on_unreliable, exit_code_on_error, crashes or Crashes())
    return judged.model_copy(update={"verdict": run_verdict})


def _sweep_verdict(summary: Summary, sweep: SweepResult, reasons: list[str]) -> Verdict:
    """A sweep passes when its search is over and found a sustainable load (a step that met every
    SLO), and no regression against the baseline came up."""
    conclusion = f"sweep: {sweep_conclusion(sweep)}"
    if sweep.sustainable_label is None or sweep.state != "done" or any(r.regressed for r in summary.regressions):
        return Verdict(status="FAIL", exit_code=exitcodes.FAILED, reasons=[conclusion, *reasons])
    return Verdict(status="PASS", exit_code=exitcodes.OK, reasons=[conclusion, *reasons])


@dataclass(frozen=True)
class Crashes:
    """Errors of the harness or Locust themselves during the run (not of the service)."""

    user_exceptions: int = 0  # exceptions raised in users' tasks (Locust's exceptions table)
    unhandled: bool = False  # an event listener or greenlet raised (Locust logged a traceback)


def verdict(
    summary: Summary,
    stopped_by: str | None,
    aborted: str | None,
    fail_on_unreliable: bool,
    exit_code_on_error: int = exitcodes.FAILED,
    crashes: Crashes = Crashes(),
) -> Verdict:
    """The run's status, its exit code and the reasons (codes in harness/exitcodes.py).

    With SLOs or a baseline, they decide; without, a run whose judged requests failed ends
    with Locust's `--exit-code-on-error` (ERRORS). Requests cut by the stop are no error. A run
    in which the harness or Locust crashed never passes: its figures may be incomplete."""
    judged = _judge(summary, stopped_by, aborted, fail_on_unreliable, exit_code_on_error)
    if judged.exit_code != exitcodes.OK or not (crashes.unhandled or crashes.user_exceptions):
        return judged
    if crashes.unhandled:
        reason = "an unhandled error in the harness or Locust (a bug: see the traceback in the log)"
        return Verdict(status="ERRORS", exit_code=exitcodes.CRASHED, reasons=[reason, *judged.reasons])
    reason = f"{crashes.user_exceptions} exception(s) raised in users (Locust's exceptions table)"
    return Verdict(status="ERRORS", exit_code=exit_code_on_error, reasons=[reason, *judged.reasons])


def _judge(summary: Summary, stopped_by: str | None, aborted: str | None, fail_on_unreliable: bool, exit_code_on_error: int) -> Verdict:
    reasons = [f"SLO breached: {r.label} (value {r.value})" for r in summary.slos if not r.passed]
    reasons += [r.describe() for r in summary.regressions if r.regressed]
    if aborted:
        reasons.insert(0, f"aborted early: {aborted}")
    arrivals = summary.arrivals if summary.sweep is None else None  # (a sweep judges each step's arrivals)
    if arrivals is not None and arrivals.behind_schedule:
        reasons.append(
            f"scheduled {arrivals.scheduled_per_s:.4g}/s of a target {arrivals.target_per_s:.4g}/s ({arrivals.unit}): "
            f"the load generator fell behind its schedule (below min_achieved {arrivals.min_achieved:g})"
        )
    elif arrivals is not None and arrivals.below_target:
        reasons.append(
            f"achieved {arrivals.achieved_per_s:.4g}/s of {arrivals.scheduled_per_s:.4g}/s scheduled ({arrivals.unit}): "
            f"below min_achieved {arrivals.min_achieved:g} ({arrivals.dropped} dropped, {arrivals.refused} refused)"
        )
    if not summary.totals.cost_known:
        reasons.append(f"cost unknown: {summary.totals.unpriced_requests} requests of models without a price")
    if stopped_by:
        return Verdict(status="STOPPED", exit_code=exitcodes.COST_GUARD, reasons=[f"stopped by the cost guard: {stopped_by}", *reasons])
    if summary.health.unreliable:
        reasons.append("the load generator was saturated: timings are late (UNRELIABLE)")
        if fail_on_unreliable:
            return Verdict(status="UNRELIABLE", exit_code=exitcodes.UNRELIABLE, reasons=reasons)
    if aborted:
        return Verdict(status="ABORTED", exit_code=exitcodes.FAILED, reasons=reasons)
    if summary.sweep is not None:
        return _sweep_verdict(summary, summary.sweep, reasons)
    below_target = summary.slos and arrivals is not None and arrivals.below_target
    if any(not r.passed for r in summary.slos) or any(r.regressed for r in summary.regressions) or below_target:
        return Verdict(status="FAIL", exit_code=exitcodes.FAILED, reasons=reasons)
    if summary.slos or summary.regressions:
        return Verdict(status="PASS", exit_code=exitcodes.OK, reasons=reasons)
    if summary.totals.errors:
        app = summary.totals.application
        seen = f"; as the application saw them: {app.failures} of {app.requests} requests" if app is not None else ""
        reasons.insert(0, f"{summary.totals.errors} of {summary.totals.judged} judged requests failed{seen} (no SLOs set)")
        return Verdict(status="ERRORS", exit_code=exit_code_on_error, reasons=reasons)
    return Verdict(status="DONE", exit_code=exitcodes.OK, reasons=reasons)
