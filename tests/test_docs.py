"""The docs build strictly, and what README.md and the docs point to exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
# These two pages describe the package layout that the code is being moved to; the paths they name
# are checked once the move has landed (then remove them from this set).
TARGET_LAYOUT_PAGES = {"architecture.md", "contributing.md"}

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
TEST_REF = re.compile(r"\b(tests/[\w/]+\.py)(?:::(\w+))?")
FILE_REF = re.compile(r"(?<![\w/])((?:configs|benchmarks)/[\w/.-]+\.(?:yaml|py))\b")


def _pages() -> list[Path]:
    return [README, *(p for p in sorted(DOCS.glob("*.md")) if p.name not in TARGET_LAYOUT_PAGES)]


def test_site_builds_strictly(tmp_path):
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        pytest.fail("mkdocs is missing: it comes with the dev extra (pip install -e '.[dev]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_relative_links_point_to_files():
    targets = LINK.findall(README.read_text())
    assert targets, "README.md has no links"
    missing = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the README itself
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            missing.append(target)
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_starts_with_the_two_commands():
    lines = [line for line in README.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert lines[1:5] == [
        "```bash",
        "make demo   # set up .venv from nothing, then run the main job on the embedded default",
        "make test   # set up .venv with the dev extras from nothing, then run the test suite",
        "```",
    ]


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_named_tests_configs_and_scripts_exist(page):
    text = page.read_text()
    problems = []
    for path, name in TEST_REF.findall(text):
        file = ROOT / path
        if not file.is_file():
            problems.append(f"{path}: no such file")
        elif name and not re.search(rf"^\s*def {name}\(", file.read_text(), re.MULTILINE):
            problems.append(f"{path}::{name}: no such test")
    for path in FILE_REF.findall(text):
        if not (ROOT / path).is_file():
            problems.append(f"{path}: no such file")
    assert not problems, f"{page.name} names what does not exist: {problems}"
