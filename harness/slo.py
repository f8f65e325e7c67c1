"""Pass/fail judgements on a finished run: the scenario's SLOs and the regression check
against a baseline summary, plus their JUnit and Markdown renderings for CI systems.

SLOs are evaluated on the summary's precise figures (HDR percentiles). A regression is a
percentile that got worse than the baseline's by more than the threshold, with the change's
confidence interval: a distribution-free interval for each quantile (the order statistics
around rank n*q, +-1.96 standard deviations of the binomial), so that noise is not
mistaken for a regression. The check fails only when the change exceeds the threshold and
the whole interval lies above zero.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

from harness.scenario import Regression, SloLimits, Slos
from harness.stats import new_histogram

Z_95 = 1.96
_MAXIMA = {"min_output_tps", "min_requests"}  # these are lower bounds; all others upper bounds


@dataclass
class SloResult:
    name: str  # e.g. "ttft_p95_ms"
    scope: str  # "all" or a model name
    limit: float
    value: float | None  # None: no data to judge (counts as a breach)
    passed: bool

    @property
    def label(self) -> str:
        op = ">=" if self.name in _MAXIMA else "<="
        return f"{self.scope}: {self.name} {op} {self.limit:g}"

    def describe(self) -> str:
        value = "no data" if self.value is None else f"{self.value:.4g}"
        return f"{'PASS' if self.passed else 'FAIL'}  {self.label}  (value {value})"


def metric_value(group: dict[str, Any], name: str) -> float | None:
    """One SLO metric of a summary group (totals or a model)."""
    outcomes, requests = group["outcomes"], group["requests"]
    judged = requests - outcomes.get("cancelled", 0)  # requests cut off by the stop say nothing
    if name.startswith(("ttft_p", "latency_p")):
        metric, quantile = name.rsplit("_", 1)[0].split("_p")
        values = group[f"{metric}_ms"]
        return values[f"p{quantile}"] if values else None
    if name == "error_rate":
        return (group["failures"] - outcomes.get("cancelled", 0)) / judged if judged else None
    if name in ("rate_limited_share", "overloaded_share"):
        return outcomes.get(name.removesuffix("_share"), 0) / judged if judged else None
    if name == "min_output_tps":
        return group["output_tps"]["p50"] if group["output_tps"] else None
    if name == "min_requests":
        return float(requests)
    raise ValueError(f"unknown SLO metric {name}")


def _judge(limits: SloLimits, group: dict[str, Any] | None, scope: str) -> list[SloResult]:
    results = []
    for name, limit in limits.model_dump(exclude={"models"}, exclude_none=True).items():
        value = metric_value(group, name) if group else None
        passed = value is not None and (value >= limit if name in _MAXIMA else value <= limit)
        results.append(SloResult(name, scope, float(limit), value, passed))
    return results


def evaluate(slos: Slos, summary: dict[str, Any]) -> list[SloResult]:
    results = _judge(slos, summary["totals"], "all")
    for model, limits in slos.models.items():
        results += _judge(limits, summary["models"].get(model), model)
    return results


# --- regression against a baseline ---------------------------------------------------------
def _histogram(group: dict[str, Any], metric: str) -> HdrHistogram | None:
    encoded = group.get("hdr", {}).get(metric)
    if not encoded:
        return None
    histogram = new_histogram()
    histogram.decode_and_add(encoded.encode())
    return histogram


def quantile_interval(histogram: HdrHistogram, quantile: float) -> tuple[float, float, float]:
    """(low, estimate, high) in ms of a quantile (0..100), 95 % distribution-free interval."""
    n, q = histogram.get_total_count(), quantile / 100
    spread = Z_95 * math.sqrt(n * q * (1 - q))
    low_q = max(0.0, (n * q - spread) / n) * 100
    high_q = min(1.0, (n * q + spread + 1) / n) * 100

    def at(p: float) -> float:
        return histogram.get_value_at_percentile(p) / 1000

    return at(low_q), at(quantile), at(high_q)


@dataclass
class RegressionResult:
    scope: str
    metric: str
    baseline_ms: float
    current_ms: float
    change_pct: float
    ci_low_pct: float
    ci_high_pct: float
    threshold_pct: float
    regressed: bool

    def describe(self) -> str:
        verdict = "REGRESSED" if self.regressed else "ok"
        return (
            f"{verdict:9} {self.scope}: {self.metric} {self.baseline_ms:.1f} -> {self.current_ms:.1f} ms "
            f"({self.change_pct:+.1f} %, 95 % CI {self.ci_low_pct:+.1f} .. {self.ci_high_pct:+.1f} %; limit +{self.threshold_pct:g} %)"
        )


def compare(current: dict[str, Any], baseline: dict[str, Any], rule: Regression) -> list[RegressionResult]:
    results = []
    groups = [("all", current["totals"], baseline["totals"])]
    groups += [(m, g, baseline["models"][m]) for m, g in current["models"].items() if m in baseline["models"]]
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
            regressed = change > rule.threshold_pct and ci_low > 0
            results.append(
                RegressionResult(scope, name, old_value, new_value, change, ci_low, ci_high, rule.threshold_pct, regressed)
            )
    return results


# --- renderings for CI systems -------------------------------------------------------------
def junit_xml(summary: dict[str, Any]) -> str:
    """One test case per SLO (and per regression check), so CI systems show them natively."""
    cases = [(f"slo.{r['scope']}", f"{r['name']} {'>=' if r['name'] in _MAXIMA else '<='} {r['limit']:g}", r["passed"],
              f"value {r['value']}, limit {r['limit']:g}") for r in summary["slos"]]  # fmt: skip
    cases += [(f"regression.{r['scope']}", r["metric"], not r["regressed"], RegressionResult(**r).describe())
              for r in summary.get("regressions", [])]  # fmt: skip
    failures = sum(1 for case in cases if not case[2])
    root = ET.Element("testsuites", name="claude-harness")
    suite = ET.SubElement(
        root, "testsuite", name=f"claude-harness {summary['run']['scenario']['name']}",
        tests=str(len(cases)), failures=str(failures), errors="0", time=f"{summary['run']['duration_s']:.3f}",
    )  # fmt: skip
    for classname, name, passed, message in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")
        if not passed:
            ET.SubElement(case, "failure", message=message, type="breach").text = message
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def markdown(summary: dict[str, Any]) -> str:
    """A CI job summary: verdict, SLOs, per-model figures."""
    run, verdict = summary["run"], summary["verdict"]
    lines = [
        f"## Claude load test: {run['scenario']['name']} — {verdict['status']}",
        "",
        f"Run `{run['run_id']}` against `{run['host']}`, {run['duration_s']:.0f} s, "
        f"{summary['accounting']['requests']} requests, transport `{run['transport']}`.",
    ]
    if verdict["reasons"]:
        lines += ["", *[f"- {reason}" for reason in verdict["reasons"]]]
    if summary["slos"]:
        lines += ["", "| SLO | scope | value | limit | result |", "|---|---|---:|---:|---|"]
        for r in summary["slos"]:
            value = "no data" if r["value"] is None else f"{r['value']:.4g}"
            lines.append(f"| {r['name']} | {r['scope']} | {value} | {r['limit']:g} | {'✅ pass' if r['passed'] else '❌ fail'} |")
    lines += ["", "| model | requests | failures | TTFT p50 | TTFT p95 | latency p95 | out tok/s | cost $ |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for model, g in [*summary["models"].items(), ("all", summary["totals"])]:
        ttft, latency, tps = g["ttft_ms"] or {}, g["latency_ms"] or {}, g["output_tps"] or {}
        lines.append(
            f"| {model} | {g['requests']} | {g['failures']} | {_fmt(ttft.get('p50'))} | {_fmt(ttft.get('p95'))} | "
            f"{_fmt(latency.get('p95'))} | {_fmt(tps.get('p50'))} | {g['cost_usd']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def as_dicts(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]


def verdict(summary: dict[str, Any], stopped_by: str | None, aborted: str | None, fail_on_unreliable: bool) -> dict[str, Any]:
    """The run's status, its exit code and the reasons (codes in harness/exitcodes.py)."""
    from harness import exitcodes

    reasons = [f"SLO breached: {SloResult(**r).label} (value {r['value']})" for r in summary["slos"] if not r["passed"]]
    reasons += [RegressionResult(**r).describe() for r in summary.get("regressions", []) if r["regressed"]]
    if aborted:
        reasons.insert(0, f"aborted early: {aborted}")
    if stopped_by:
        return {"status": "STOPPED", "exit_code": exitcodes.COST_GUARD, "reasons": [f"stopped by the cost guard: {stopped_by}", *reasons]}
    if summary["health"]["unreliable"]:
        reasons.append("the load generator was saturated: timings are late (UNRELIABLE)")
        if fail_on_unreliable:
            return {"status": "UNRELIABLE", "exit_code": exitcodes.UNRELIABLE, "reasons": reasons}
    failed = aborted or any(not r["passed"] for r in summary["slos"]) or any(r["regressed"] for r in summary.get("regressions", []))
    if failed:
        return {"status": "ABORTED" if aborted else "FAIL", "exit_code": exitcodes.FAILED, "reasons": reasons}
    judged = bool(summary["slos"] or summary.get("regressions"))
    return {"status": "PASS" if judged else "DONE", "exit_code": exitcodes.OK if judged else None, "reasons": reasons}
