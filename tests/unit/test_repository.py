"""The repository stands alone (docs/design.md §8): a fresh clone with nothing beside it runs the
README's commands and its tests. Nothing tracked may point outside the repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # `git ls-files` in a subprocess

REPO = Path(__file__).resolve().parents[2]
SHARED = "sha" + "red"  # spelt in two so this file does not name the folder it looks for
OUTSIDE = (f"../{SHARED}", f"{SHARED}/fixtures", f"{SHARED}/reference")


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                            check=False)
    if listed.returncode != 0:  # an sdist or an unpacked copy: walk the tree instead
        return [p for p in REPO.rglob("*") if p.is_file() and ".venv" not in p.parts
                and ".git" not in p.parts and "node_modules" not in p.parts]
    return [REPO / name for name in listed.stdout.splitlines()]


def test_nothing_tracked_reads_outside_the_repository() -> None:
    offenders = []
    for path in tracked_files():
        if path.suffix not in (".py", ".md", ".cfg", ".toml", ".json", ".txt", "") \
                or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{path.relative_to(REPO)}: {needle}" for needle in OUTSIDE
                      if needle in text]
    assert not offenders, offenders


def test_what_the_readme_and_setup_cfg_name_is_here() -> None:
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert "license = Apache-2.0" in (REPO / "setup.cfg").read_text()
    assert (REPO / "docs" / "tracking-api.md").is_file()
    cases = list((REPO / "tests" / "fixtures" / "destinations").glob("*/*.json"))
    assert len(cases) >= 8
