"""The maps stay true: every module of the package is named in the README's "Layout", every
file docs/architecture.md names exists, and no product module grows past 600 lines."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness"
MAX_LINES = 600


def modules() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if path.name not in ("__init__.py", "__main__.py"))


def test_the_readme_layout_names_every_module() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z_/.]+)`", layout))
    missing = [str(path.relative_to(PACKAGE)) for path in modules() if path.stem not in named]
    assert not missing, f"README's Layout does not name: {missing}"


def test_every_file_the_architecture_page_names_exists() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`((?:harness|tests|benchmarks|docs)/[\w/.]+?)(?::[^`]*)?`", page))
    assert len(paths) > 30
    assert [path for path in sorted(paths) if not (ROOT / path).exists()] == []


def test_no_product_module_is_over_600_lines() -> None:
    sizes = {str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines()) for path in modules()}
    assert {path: n for path, n in sizes.items() if n > MAX_LINES} == {}
