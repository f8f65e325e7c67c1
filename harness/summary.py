"""The end-of-run summary: one dict (the JSON summary, schema in docs/summary.schema.json) built from
the precise stats, and its console rendering, a row per model and per model x prompt."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import __version__
from harness.timing import OK, OUTCOMES

if TYPE_CHECKING:
    from harness.distributed import MasterLink
    from harness.run import HarnessRun

SCHEMA = "claude-harness-summary"
SCHEMA_VERSION = 1


class InputError(Exception):
    """A bad input file: one line for the user."""


def load_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read: {error}") from None
    except json.JSONDecodeError as error:
        raise InputError(f"{path}: not JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(summary, dict) or summary.get("schema") != SCHEMA:
        found = summary.get("schema") if isinstance(summary, dict) else type(summary).__name__
        raise InputError(f"{path}: not a harness summary (schema {found!r}, expected {SCHEMA!r})")
    return summary


def _versions() -> dict[str, str]:
    versions = {"harness": __version__, "python": platform.python_version()}
    for package in ("locust", "anthropic", "gevent", "geventhttpclient"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def build_summary(run: HarnessRun, locust_requests: int, options: Any, link: MasterLink | None = None) -> dict[str, Any]:
    """Everything a person or a CI job needs to judge and reproduce the run; no secrets."""
    stats, scenario, config = run.stats, run.scenario, run.config
    workers = [state.as_dict() for state in link.workers.values()] if link else []
    points = run.points
    points_written = (points.written if points else 0) + sum(w["points_written"] for w in workers)
    points_dropped = (points.dropped if points else 0) + sum(w["points_dropped"] for w in workers)
    records = run.records.written if run.records is not None else sum(w["records"] for w in workers)
    health = run.health.summary()
    # a master times no requests: only the processes that do can make timings unreliable
    own = health["unreliable"] and config.role != "master"
    unreliable = own or any(w["unreliable"] for w in workers)
    ended = run.ended_at or run.started_at
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "run": {
            "run_id": config.run_id,
            "role": config.role,
            "scenario": {
                "name": scenario.name,
                "digest": scenario.digest(),
                "source": scenario.source,
                "content": scenario.model_dump(mode="json"),
            },
            "host": config.target.base_url,
            "transport": config.transport,
            "anthropic_version": scenario.effective_anthropic_version,
            "started_at": run.started_at,
            "ended_at": ended,
            "duration_s": round(ended - run.started_at, 3),
            "users": getattr(options, "num_users", None),
            "spawn_rate": getattr(options, "spawn_rate", None),
            "run_time_s": getattr(options, "run_time", None),
            "seeds": {"scenario": scenario.seed, "emulator": getattr(options, "emulator_seed", None)},
            "versions": _versions(),
        },
        "accounting": {"requests": stats.requests, "locust_requests": locust_requests, "records": records},
        "totals": stats.total().to_summary(with_histograms=True),
        "models": {model: s.to_summary(with_histograms=True) for model, s in stats.by_model().items()},
        "labels": [{"model": m, "prompt": p, **s.to_summary()} for (m, p), s in sorted(stats.labels.items())],
        "health": {**health, "unreliable": unreliable, "timeline": [asdict(sample) for sample in run.health.samples]},
        "slos": [],
        "points": {"sink": points.sink.description if points else "off", "written": points_written, "dropped": points_dropped},
        "workers": workers,
        "lost_workers": [w["name"] for w in workers if w["lost"]],
        "refused_workers": dict(link.refused) if link else {},
        "records_path": str(run.records.path) if run.records is not None else None,
    }


# --- console -----------------------------------------------------------------------------
_COLUMNS = (
    ("label", "<"), ("reqs", ">"), ("fails", ">"), ("failures by class", "<"),
    ("TTFT p50", ">"), ("p95", ">"), ("p99", ">"), ("lat p50", ">"), ("p95 ", ">"),
    ("out tok/s", ">"), ("cost $", ">"),
)  # fmt: skip


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _get(group: dict[str, Any], metric: str, key: str) -> float | None:
    values = group.get(metric)
    return values[key] if values else None


def _row(label: str, group: dict[str, Any]) -> list[str]:
    outcomes = group["outcomes"]
    failures = " ".join(f"{name}={outcomes[name]}" for name in OUTCOMES if name != OK and outcomes.get(name)) or "-"
    tps = _get(group, "output_tps", "p50")
    return [
        label, str(group["requests"]), str(group["failures"]), failures,
        _ms(_get(group, "ttft_ms", "p50")), _ms(_get(group, "ttft_ms", "p95")), _ms(_get(group, "ttft_ms", "p99")),
        _ms(_get(group, "latency_ms", "p50")), _ms(_get(group, "latency_ms", "p95")),
        "-" if tps is None else f"{tps:.1f}", f"{group['cost_usd']:.4f}",
    ]  # fmt: skip


def render_table(summary: dict[str, Any]) -> str:
    rows = [_row(model, group) for model, group in summary["models"].items()]
    rows.append(_row("ALL", summary["totals"]))
    detail = [_row(f"{g['model']} / {g['prompt']}", g) for g in summary["labels"]]
    header = [name for name, _ in _COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows, *detail]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(f"{cell:{align}{width}}" for cell, (_, align), width in zip(cells, _COLUMNS, widths))

    rule = "-" * len(line(header))
    out = ["times in ms (TTFT: streamed requests only; percentiles from HDR histograms)", rule, line(header)]
    out += [rule, *map(line, rows)]
    if len(detail) > 1:
        out += [rule, *map(line, detail)]
    out.append(rule)
    return "\n".join(out)


def render_text(summary: dict[str, Any]) -> str:
    run, accounting, health, points = summary["run"], summary["accounting"], summary["health"], summary["points"]
    lines = [
        f"Claude summary: scenario {run['scenario']['name']}, run {run['run_id']}, {accounting['requests']} requests "
        f"({accounting['locust_requests']} in Locust stats, {accounting['records']} records)",
        render_table(summary),
    ]
    verdict = "UNRELIABLE: the load generator was saturated, timings are late" if health["unreliable"] else "ok"
    lines.append(
        f"load generator: CPU max {health['cpu_percent_max']:.0f}% (mean {health['cpu_percent_mean']:.0f}%), "
        f"event-loop lag p99 max {health['loop_lag_p99_max_ms']:.1f} ms: {verdict}"
    )
    for worker in summary["workers"]:
        last = worker["last_health"]
        state = "LOST (counted up to its last report)" if worker["lost"] else "ok"
        saturated = f", SATURATED in {worker['saturated_samples']} samples" if worker["saturated_samples"] else ""
        lines.append(
            f"  {worker['name']}: {worker['requests']} requests, CPU {last.get('cpu_percent', 0):.0f}%, "
            f"loop lag p99 {last.get('loop_lag_p99_ms', 0):.1f} ms{saturated}: {state}"
        )
    for client_id, reason in summary["refused_workers"].items():
        lines.append(f"  worker {client_id} REFUSED: {reason}")
    if points["sink"] != "off":
        dropped = f", {points['dropped']} DROPPED" if points["dropped"] else ", none dropped"
        lines.append(f"points: {points['written']} written to {points['sink']}{dropped}")
    if summary["records_path"]:
        lines.append(f"records: {summary['records_path']}")
    for result in summary["slos"]:
        op = ">=" if result["name"].startswith("min_") else "<="
        value = "no data" if result["value"] is None else f"{result['value']:.4g}"
        lines.append(f"SLO {'PASS' if result['passed'] else 'FAIL'}  {result['scope']}: {result['name']} = {value} ({op} {result['limit']:g})")
    for item in summary.get("regressions", []):
        lines.append(f"baseline {'REGRESSED' if item['regressed'] else 'ok'}: {item['scope']} {item['metric']} "
                     f"{item['baseline_ms']:.1f} -> {item['current_ms']:.1f} ms ({item['change_pct']:+.1f} %, "
                     f"95 % CI {item['ci_low_pct']:+.1f} .. {item['ci_high_pct']:+.1f} %)")  # fmt: skip
    verdict = summary.get("verdict")
    if verdict:
        lines.append(f"verdict: {verdict['status']}" + "".join(f"\n  - {reason}" for reason in verdict["reasons"]))
    return "\n".join(lines)
