"""The test suite's own layout: no test module imports another (shared fixtures live in
tests/conftest.py, shared helpers in tests/helpers.py), so each module can move, be run alone
or be deleted without breaking a neighbour."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another() -> None:
    modules = sorted(p for p in TESTS.rglob("test_*.py") if ".node" not in p.parts)
    assert len(modules) > 50
    test_modules = {".".join(p.relative_to(TESTS.parent).with_suffix("").parts) for p in modules}
    found = {
        str(path.relative_to(TESTS.parent)): sorted(imported_modules(path) & test_modules)
        for path in modules
    }
    assert {path: names for path, names in found.items() if names} == {}
