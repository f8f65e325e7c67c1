"""YAML the operator writes is read within bounds: aliases cannot expand without limit, a
recursive anchor or a duplicate key is an error, and a scenario with too many stats groups is
refused with the limit named."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from harness import exitcodes, yamlfile
from harness.emulator.profile import ProfileError, load_profile
from harness.scenario import MAX_STATS_GROUPS, ScenarioError, load_scenario
from tests.support.processes import run_locust, write_yaml
from tests.support.runs import SCENARIO


def laughs(levels: int, width: int = 9) -> str:
    """A "billion laughs": each level lists the one before `width` times (width ** levels values)."""
    lines = ['l0: &l0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_expanded_size_counts_every_alias_in_linear_time() -> None:
    loader = yaml.SafeLoader("a: &a [1, 2, 3]\nb: [*a, *a]\n")
    root = loader.get_single_node()
    # mapping 1 + keys 2 + a (1 + 3) + b (1 + 2 * 4)
    assert yamlfile.expanded_size(root) == 1 + 2 + 4 + 9
    started = time.perf_counter()
    with pytest.raises(yamlfile.TooLarge, match="more than 1,000,000 values"):
        yamlfile.load(laughs(levels=30))  # 9 ** 30 values: counted, never built
    assert time.perf_counter() - started < 5  # generous: it takes milliseconds


def test_a_document_just_under_the_bound_loads() -> None:
    data = yamlfile.load(laughs(levels=5))  # 9 ** 5 = 59,049 strings
    assert len(data["l5"]) == 9 and data["l5"][0][0][0][0][0] == "lol"


def test_recursive_anchors_and_duplicate_keys_are_errors() -> None:
    with pytest.raises(yamlfile.Recursive):
        yamlfile.load("a: &a [1, *a]\n")
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
        yamlfile.load("a: 1\na: 2\n")
    assert yamlfile.load("") is None


def test_a_bomb_in_a_scenario_or_a_profile_is_refused_with_the_file_named(tmp_path: Path) -> None:
    bomb = laughs(levels=12).replace("\n", "\n  ").rstrip() + "\n"
    scenario = tmp_path / "bomb.yaml"
    scenario.write_text(
        "anchors:\n  " + bomb + "name: bomb\nmodels: [{model: m}]\nprompts: [{name: p, input_tokens: 5, extra: {payload: *l12}}]\n"
    )
    with pytest.raises(ScenarioError, match=f"{scenario}: invalid YAML: the document expands to more than"):
        load_scenario(scenario)
    profile = tmp_path / "profile.yaml"
    profile.write_text("anchors:\n  " + bomb + "models: {}\n")
    with pytest.raises(ProfileError, match="expands to more than"):
        load_profile(profile)


def test_too_many_stats_groups_are_refused_with_the_limit_named(tmp_path: Path) -> None:
    prompts = [{"name": f"p{i}", "input_tokens": 10, "max_tokens": 8} for i in range(MAX_STATS_GROUPS // 2 + 1)]
    path = write_yaml(tmp_path / "many.yaml", {"name": "many", "models": [{"model": "m"}], "prompts": prompts, "stream": 0.5})
    with pytest.raises(
        ScenarioError,
        match=rf"1 model\(s\) x {len(prompts)} prompt\(s\) x 2 mode\(s\) = {len(prompts) * 2} stats groups; at most {MAX_STATS_GROUPS}",
    ):
        load_scenario(path)
    write_yaml(path, {"name": "many", "models": [{"model": "m"}], "prompts": prompts, "stream": 1})
    assert len(load_scenario(path).prompts) == len(prompts)  # one mode: within the bound


@pytest.mark.slow
def test_a_run_with_a_bomb_or_ten_thousand_prompts_exits_2_at_once(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    anchors = "anchors:\n  " + laughs(30).replace("\n", "\n  ").rstrip() + "\n"
    bomb.write_text(anchors + "name: bomb\nmodels: [{model: m}]\nprompts: [{name: p, input_tokens: 5, extra: {x: *l30}}]\n")
    many = write_yaml(
        tmp_path / "many.yaml", {**SCENARIO, "prompts": [{"name": f"p{i}", "input_tokens": 10, "max_tokens": 8} for i in range(10_000)]}
    )
    for path, message in [(bomb, "expands to more than 1,000,000 values"), (many, "stats groups; at most")]:
        started = time.monotonic()
        result = run_locust(tmp_path, path, users=1, run_time="2s", timeout_s=60)
        assert result.returncode == exitcodes.USAGE and message in result.stderr, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and time.monotonic() - started < 50
