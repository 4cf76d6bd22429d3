"""The import graph the delivery design relies on: adapters are pure and import
nothing of the gateway; ingest knows the outbox row, not the delivery machinery."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_adapter_imports_the_gateway() -> None:
    files = sorted((ROOT / "adapters").rglob("*.py"))
    assert len(files) > 10
    offending = {str(f.relative_to(ROOT)): sorted(m for m in imported_modules(f)
                                                  if m == "gateway" or m.startswith("gateway."))
                 for f in files}
    assert {f: m for f, m in offending.items() if m} == {}


def test_ingest_imports_nothing_of_delivery() -> None:
    modules = imported_modules(ROOT / "gateway" / "ingest.py")
    assert "gateway.outbox" in modules
    assert sorted(m for m in modules if m.startswith("gateway.delivery")) == []


def test_only_the_outbox_writes_delivery_states() -> None:
    """Inserting and updating delivery rows is gateway/outbox.py's alone (its guarded
    `transition` is the only way the state column changes)."""
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if path.name == "outbox.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "update(deliveries)" not in text, f"{path.relative_to(ROOT)} updates deliveries"
        assert "insert(deliveries)" not in text, f"{path.relative_to(ROOT)} inserts deliveries"
