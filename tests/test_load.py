"""The scenario's `load` section: rates and their units, open and closed loops, stages, and a
clear message for every inconsistent combination."""

from __future__ import annotations

import argparse
import json

import pytest

from harness.load import Load, Rate
from harness.load_options import with_overrides
from harness.options import rate
from harness.scenario import ScenarioError, scenario_from_dict

BASE = {"name": "t", "models": ["m"], "prompts": [{"name": "p", "max_tokens": 5, "input_tokens": 10}]}


def load(section: dict) -> Load:
    scenario = scenario_from_dict({**BASE, "load": section}, source="x.yaml")
    assert scenario.load is not None
    return scenario.load


def problem(section: dict) -> str:
    with pytest.raises(ScenarioError) as caught:
        scenario_from_dict({**BASE, "load": section}, source="x.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    ("text", "per_s", "unit", "shown"),
    [
        ("20/s", 20, "requests", "20/s"),
        ("90/min", 1.5, "requests", "1.5/s"),
        ("0.5 / s", 0.5, "requests", "0.5/s"),
        ("400000 input_tokens/min", 400000 / 60, "input_tokens", "400000 input_tokens/min"),
        ("80000 output_tokens/min", 80000 / 60, "output_tokens", "80000 output_tokens/min"),
        ("12 requests/s", 12, "requests", "12/s"),
    ],
)
def test_rates_in_their_units(text: str, per_s: float, unit: str, shown: str) -> None:
    rate = Rate.model_validate(text)
    assert rate.per_s == pytest.approx(per_s) and rate.unit == unit and str(rate) == shown


def test_the_open_loop_of_the_issue() -> None:
    section = load(
        {
            "arrival": "poisson",
            "rate": "20/s",
            "max_in_flight": 300,
            "warmup": "10s",
            "cooldown": "5s",
            "min_achieved": 0.95,
            "run_time": "2m",
        }
    )
    assert section.open_loop and section.rate is not None and section.rate.per_s == 20
    assert (section.max_in_flight, section.warmup_s, section.cooldown_s, section.run_time_s) == (300, 10, 5, 120)


def test_stages_ramp_and_set_the_run_time() -> None:
    section = load(
        {"arrival": "constant", "rate": "2/s", "stages": [{"duration": "30s", "rate": "10/s"}, {"duration": "1m", "rate": "10/s"}]}
    )
    assert section.run_time_s == 90 and [stage.duration_s for stage in section.stages or []] == [30, 60]
    closed = load({"users": 5, "stages": [{"duration": "10s", "users": 20}]})
    assert not closed.open_loop and closed.run_time_s == 10


def test_a_closed_loop_is_as_before() -> None:
    section = load({"users": 10, "spawn_rate": 2, "run_time": "30s"})
    assert not section.open_loop and section.run_time_s == 30 and section.warmup_s == section.cooldown_s == 0


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"arrival": "poisson", "rate": "20 per s"}, "load.rate: must be a rate: N/s or N/min"),
        ({"arrival": "poisson", "rate": 20}, "load.rate: must be a rate"),
        ({"arrival": "poisson", "rate": "0/s"}, "load.rate: must be a rate above 0"),
        ({"arrival": "poison", "rate": "20/s"}, "load.arrival: must be one of 'poisson', 'constant' or 'trace'"),
        ({"rate": "20/s"}, "load: `rate` needs `arrival: poisson` or `arrival: constant`"),
        ({"users": 5, "max_in_flight": 10}, "load: `max_in_flight` needs `arrival"),
        ({"arrival": "constant"}, "load: an open loop (`arrival`) needs `rate` or `stages`"),
        ({"arrival": "constant", "rate": "5/s", "users": 3}, "load: `users` and `spawn_rate` are for a closed loop"),
        ({"arrival": "constant", "rate": "5/s", "max_in_flight": 0}, "load.max_in_flight: must be >= 1"),
        ({"arrival": "constant", "rate": "5/s", "min_achieved": 1.5}, "load.min_achieved: must be <= 1"),
        ({"arrival": "constant", "rate": "5/s", "warmup": "-1s"}, "load.warmup: must be a time span"),
        ({"arrival": "constant", "rate": "5/s", "warmup": "10s", "cooldown": "5s", "run_time": "15s"}, "must leave time to measure"),
        ({"arrival": "constant", "stages": [{"duration": "10s"}]}, "load.stages[0]: give a stage either `rate`"),
        ({"arrival": "constant", "stages": [{"duration": "10s", "users": 4}]}, "an open loop's stages give `rate`, not `users`"),
        ({"users": 2, "stages": [{"duration": "10s", "rate": "4/s"}]}, "stages with `rate` need `arrival"),
        ({"users": 2, "stages": [{"duration": "10s", "users": 4}], "run_time": "1m"}, "`run_time` comes from the stages (10 s in all)"),
        (
            {"arrival": "constant", "rate": "5/s", "stages": [{"duration": "10s", "rate": "100 output_tokens/s"}]},
            "one unit for the rate and every stage (got output_tokens, requests)",
        ),
    ],
)
def test_every_inconsistency_is_named(section: dict, message: str) -> None:
    text = problem(section)
    assert text.startswith("x.yaml: load") and message in text, text


@pytest.mark.parametrize(
    "section",
    [
        {"arrival": "poisson", "rate": "20/s", "warmup": "10s", "run_time": "2m"},
        {"arrival": "constant", "stages": [{"duration": "10s", "rate": "400000 input_tokens/min"}], "max_in_flight": 5},
        {"users": 3, "spawn_rate": 1, "run_time": "30s"},
    ],
)
def test_a_load_section_survives_the_trip_to_the_workers(section: dict) -> None:
    """The master ships the scenario as JSON (every field, defaults included)."""
    scenario = scenario_from_dict({**BASE, "load": section}, source="x.yaml")
    shipped = json.loads(json.dumps(scenario.model_dump(mode="json")))
    assert scenario_from_dict(shipped, source="from the master") == scenario


def test_the_command_line_overrides_the_load_and_names_itself_in_a_problem() -> None:
    closed = scenario_from_dict({**BASE, "load": {"users": 5, "run_time": "1m"}}, source="x.yaml")
    opened = with_overrides(closed, {"arrival": "constant", "rate": "90/min"})
    assert opened.load is not None and opened.load.arrival == "constant" and opened.load.rate == Rate(per_s=1.5)
    assert opened.source == "x.yaml" and opened.load.run_time_s == 60  # the rest of the file stays
    assert with_overrides(closed, {}) is closed
    with pytest.raises(ScenarioError) as caught:
        with_overrides(closed, {"rate": "5/s"})  # a rate without an arrival
    assert str(caught.value).startswith("x.yaml with --rate 5/s: load: ") and "needs `arrival: poisson`" in str(caught.value)


@pytest.mark.parametrize("text", ["5", "5/h", "-2/s", "0/s", "fast"])
def test_a_bad_rate_on_the_command_line_is_a_usage_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be a rate"):
        rate(text)
