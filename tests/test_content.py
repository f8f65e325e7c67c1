"""Images and documents from files: read into the API's base64 blocks when the scenario loads,
with one clear error for a file that cannot be sent; then a real request that carries them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from harness.emulator.validate import count_input_tokens
from harness.payload import build_body
from harness.sampler import Pick
from harness.scenario import ScenarioError, load_scenario, scenario_from_dict
from tests.support.processes import write_yaml
from tests.support.runs import recorded_run

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def scenario_with(tmp_path: Path, *blocks: dict[str, Any]) -> dict[str, Any]:
    (tmp_path / "files").mkdir(exist_ok=True)
    (tmp_path / "files" / "dot.png").write_bytes(PNG)
    (tmp_path / "files" / "report.pdf").write_bytes(PDF)
    content = [*blocks, {"type": "text", "text": "What do these show?"}]
    return {
        "name": "files",
        "models": ["claude-haiku-4-5"],
        "prompts": [{"name": "look", "max_tokens": 8, "messages": [{"role": "user", "content": content}]}],
    }


def test_images_and_documents_are_read_into_base64_blocks_that_travel_with_the_scenario(tmp_path: Path) -> None:
    data = scenario_with(
        tmp_path,
        {"type": "image", "file": "files/dot.png"},
        {"type": "document", "file": "files/report.pdf", "title": "Report", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "file": "files/dot.png", "media_type": "image/webp"},
    )
    scenario = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    image, document, typed, _text = build_body(Pick("claude-haiku-4-5", scenario.prompts[0], True), scenario)["messages"][0]["content"]
    assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()}}
    assert document["source"]["media_type"] == "application/pdf" and base64.b64decode(document["source"]["data"]) == PDF
    assert (document["title"], document["cache_control"]) == ("Report", {"type": "ephemeral"})
    assert typed["source"]["media_type"] == "image/webp"
    assert scenario_from_dict(scenario.model_dump(mode="json")) == scenario  # a worker's copy holds the data: no file needed


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ({"type": "image", "file": "files/missing.png"}, "files/missing.png: cannot read the file: No such file or directory"),
        (
            {"type": "image", "file": "files/report.pdf"},
            "files/report.pdf: an image is one of .png, .jpg, .jpeg, .gif, .webp (or give media_type)",
        ),
        ({"type": "text", "file": "files/dot.png"}, "a file goes in an image or document block (got type 'text')"),
        ({"type": "image", "file": "files/big.png"}, "files/big.png: 5,242,881 bytes; an image has 1 to 5,242,880"),
    ],
)
def test_a_file_that_cannot_be_sent_names_the_field_and_why(tmp_path: Path, block: dict[str, Any], problem: str) -> None:
    data = scenario_with(tmp_path, block)
    (tmp_path / "files" / "big.png").write_bytes(b"\0" * (5 * 1024 * 1024 + 1))
    with pytest.raises(ScenarioError) as error:
        load_scenario(write_yaml(tmp_path / "s.yaml", data))
    assert str(error.value) == f"{tmp_path / 's.yaml'}: prompts[0].messages[0].content: {problem}"


@pytest.mark.slow
def test_a_request_with_an_image_and_a_document_reaches_the_server_whole(tmp_path: Path) -> None:
    data = scenario_with(
        tmp_path,
        {"type": "image", "file": str(tmp_path / "files/dot.png")},
        {"type": "document", "file": str(tmp_path / "files/report.pdf")},
    )
    scenario = load_scenario(write_yaml(tmp_path / "s.yaml", data))
    expected = count_input_tokens(build_body(Pick("claude-haiku-4-5", scenario.prompts[0], True), scenario))
    _, _, records, truth = recorded_run(tmp_path, data, users=1, run_time="2s")
    assert records and all(record["outcome"] == "ok" for record in records)
    assert {row["input_tokens"] for row in truth} == {expected}  # the server counted the blocks as built
