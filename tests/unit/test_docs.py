"""The documents match the code: what the code cites exists, the README's architecture table
names every module, no issue number stands in for an explanation, and every third-party package
the shipped code imports is declared in setup.cfg."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE_DIRS = ("gateway", "adapters", "migrations", "tests", "bench")
SKIPPED_PARTS = {".venv", ".node", "node_modules", "fixtures", "__pycache__"}
SHIPPED = ("gateway", "adapters", "migrations")
LOCAL = {"gateway", "adapters", "migrations", "tests", "bench"}


def files(*suffixes: str) -> list[Path]:
    """Our own .py / .md files (not the virtualenv, npm packages or recorded fixtures)."""
    found = [REPO / "README.md", REPO / "SECURITY.md", *sorted((REPO / "docs").rglob("*.md"))]
    for folder in CODE_DIRS:
        found += sorted(
            p
            for p in (REPO / folder).rglob("*")
            if p.is_file() and not SKIPPED_PARTS & set(p.parts)
        )
    return [p for p in found if p.suffix in suffixes]


def design_sections() -> set[str]:
    """ "2", "2.3", … for every numbered heading and numbered item of docs/design.md."""
    sections: set[str] = set()
    current = ""
    for line in (REPO / "docs" / "design.md").read_text().splitlines():
        heading = re.match(r"## (\d+)\. ", line)
        if heading:
            current = heading.group(1)
            sections.add(current)
        item = re.match(r"(\d+)\. ", line)
        if item and current:
            sections.add(f"{current}.{item.group(1)}")
    return sections


def test_the_design_notes_cited_by_the_code_are_in_the_repository() -> None:
    assert (REPO / "docs" / "design.md").is_file()
    sections = design_sections()
    missing = []
    for path in files(".py", ".md"):
        text = path.read_text(encoding="utf-8", errors="replace")
        where = path.relative_to(REPO)
        if re.search(r"(?<![\w/])DESIGN\.md", text):
            missing.append(f"{where}: cites a design file the repository does not have")
        for cited in re.findall(r"docs/design\.md,? ((?:§[\d.]+(?:[–,] ?)?)+)", text):
            missing += [
                f"{where}: docs/design.md §{number}"
                for number in re.findall(r"§([\d.]*\d)", cited)
                if number not in sections
            ]
    assert not missing, missing


def test_no_issue_numbers_in_code_or_docs() -> None:
    """An issue number explains nothing to a reader without the tracker: say what it does."""
    pattern = re.compile(r"\bissues? (?:#?\d+|[HML]\d+)|\(issue\)|\*issue\*", re.IGNORECASE)
    found = []
    for path in files(".py", ".md"):
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, found


def test_the_architecture_table_names_every_module() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## Architecture") : readme.index("\n## Performance")]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows, "no architecture table"
    named = [name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])]
    assert not {name for name in named if named.count(name) > 1}, "a module has two rows"
    table = "\n".join(rows)
    missing = []
    for folder in ("gateway", "adapters", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "__init__.py" and path.parent.name in ("gateway", "bench"):
                continue
            if path.name == "__init__.py" or (folder == "adapters" and path.parent.name != folder):
                # a package's __init__ and a destination's own files: its folder names them
                wanted = f"{path.parent.relative_to(REPO)}/"
                if wanted not in table or (
                    path.name != "__init__.py" and f"`{path.name}`" not in table
                ):
                    missing.append(str(path.relative_to(REPO)))
                continue
            if path.name not in table:
                missing.append(str(path.relative_to(REPO)))
    for folder in sorted(
        p for p in (REPO / "tests").iterdir() if p.is_dir() and (p / "__init__.py").is_file()
    ):
        if f"tests/{folder.name}/" not in table:
            missing.append(f"tests/{folder.name}/")
    for path in sorted((REPO / "tests").glob("*.py")):
        if path.name != "__init__.py" and path.name not in table:
            missing.append(str(path.relative_to(REPO)))
    assert not missing, missing


def declared_distributions() -> set[str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = parser["options"]["install_requires"].splitlines()
    lines += parser["options.extras_require"]["postgres"].splitlines()
    return {
        normal(re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0])
        for line in lines
        if line.strip()
    }


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_package_the_shipped_code_imports_is_declared() -> None:
    """A package imported directly must be declared, not arrive only as another's dependency."""
    providers = importlib.metadata.packages_distributions()
    declared = declared_distributions()
    undeclared = set()
    for folder in SHIPPED:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in sys.stdlib_module_names or top in LOCAL:
                        continue
                    dists = {normal(d) for d in providers.get(top, [top])}
                    if not dists & declared:
                        undeclared.add(f"{path.relative_to(REPO)}: {top} ({', '.join(dists)})")
    assert not undeclared, sorted(undeclared)
