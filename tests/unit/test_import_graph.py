"""The import graph the delivery design relies on: adapters are pure and import
nothing of the gateway; ingest knows the outbox row, not the delivery machinery.

What a module's own `import` lines say is not what importing it loads (config.py once pulled
gateway.delivery into every ingest process), so the layering checks below import each side
in a fresh interpreter and read `sys.modules`."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    offending = {
        str(f.relative_to(ROOT)): sorted(
            m for m in imported_modules(f) if m == "gateway" or m.startswith("gateway.")
        )
        for f in files
    }
    assert {f: m for f, m in offending.items() if m} == {}


def test_ingest_imports_nothing_of_delivery() -> None:
    modules = imported_modules(ROOT / "gateway" / "ingest.py")
    assert "gateway.store.outbox" in modules
    assert sorted(m for m in modules if m.startswith("gateway.delivery")) == []


def test_only_the_outbox_writes_delivery_states() -> None:
    """Inserting and updating delivery rows is gateway/store/outbox.py's alone (its guarded
    `transition` is the only way the state column changes)."""
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        if path.name == "outbox.py":
            continue
        text = path.read_text(encoding="utf-8")
        assert "update(deliveries)" not in text, f"{path.relative_to(ROOT)} updates deliveries"
        assert "insert(deliveries)" not in text, f"{path.relative_to(ROOT)} inserts deliveries"


# --- what importing a side actually loads (a fresh interpreter each) ---------------------------


def loaded_by(module: str) -> list[str]:
    """The modules `import module` loads in a new interpreter started at the repository root."""
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def of_package(modules: list[str], package: str) -> list[str]:
    return [m for m in modules if m == package or m.startswith(package + ".")]


@pytest.mark.parametrize("side", ["gateway.ingest", "gateway.http.tracking"])
def test_the_ingest_side_loads_nothing_of_delivery(side: str) -> None:
    modules = loaded_by(side)
    assert side in modules and "gateway.store.outbox" in modules  # it did load the ingest side
    assert of_package(modules, "gateway.delivery") == []


def adapter_packages() -> list[str]:
    """`adapters` and each destination's package under it."""
    found = sorted(p.parent.name for p in (ROOT / "adapters").glob("*/__init__.py"))
    assert len(found) >= 5
    return ["adapters", *(f"adapters.{name}" for name in found)]


@pytest.mark.parametrize("package", adapter_packages())
def test_importing_adapters_loads_nothing_of_the_gateway(package: str) -> None:
    modules = loaded_by(package)
    assert package in modules
    assert of_package(modules, "gateway") == []


@pytest.mark.parametrize("reader", ["gateway.queries", "gateway.console.data"])
def test_the_read_side_does_not_load_ingest(reader: str) -> None:
    """The index-column clipping it filters by lives with the columns (models.py)."""
    modules = loaded_by(reader)
    assert reader in modules and "gateway.store.models" in modules
    assert "gateway.ingest" not in modules


def test_sending_does_not_load_regulations() -> None:
    """A deletion is sent like any delivery: send.py asks the adapter itself."""
    modules = loaded_by("gateway.delivery.send")
    assert "gateway.delivery.send" in modules
    assert of_package(modules, "gateway.regulations") == []


def test_filters_use_nothing_of_adapters_but_the_key_check() -> None:
    """gateway/filters/ is pure over a payload; the worker's hooks (a drop is the contract's
    `Unsupported`) live in delivery/send.py. Its key check comes through the config's table
    checker. Importing `adapters.known` loads the registry too, so this is read from the
    files' imports."""
    files = [*sorted((ROOT / "gateway" / "filters").glob("*.py")),
             ROOT / "gateway" / "config" / "tables.py"]
    modules = set().union(*(imported_modules(path) for path in files))
    assert "adapters.known" in modules
    assert (
        sorted(
            m
            for m in modules
            if m.split(".")[0] == "adapters" and not m.startswith("adapters.known")
        )
        == []
    )


# --- who writes `deliveries` (by the syntax tree, not by substring) ----------------------------

_RAW_WRITE = re.compile(r"\b(?:insert\s+into|update)\s+[\"`]?deliveries\b", re.IGNORECASE)


def delivery_writes(source: str) -> list[str]:
    """Each place in `source` that inserts into or updates `deliveries`: `insert(deliveries)`,
    `update(deliveries)` (any dialect's, `sqlalchemy.` or not), `deliveries.insert()`,
    `deliveries.update()` (also through `models.deliveries` or an `import … as` alias), and
    string constants (`text()`, f-string parts) holding `INSERT INTO deliveries` or
    `UPDATE deliveries`."""
    tree = ast.parse(source)
    names = {"deliveries"} | {
        alias.asname
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name == "deliveries" and alias.asname
    }

    def is_table(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in names) or (
            isinstance(node, ast.Attribute) and node.attr == "deliveries"
        )

    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else (func.attr if isinstance(func, ast.Attribute) else None)
            )
            if called in ("insert", "update"):
                if isinstance(func, ast.Attribute) and is_table(func.value):
                    found.append(f"line {node.lineno}: deliveries.{called}()")
                elif node.args and is_table(node.args[0]):
                    found.append(f"line {node.lineno}: {called}(deliveries)")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _RAW_WRITE.search(node.value)
            if match:
                found.append(f"line {node.lineno}: {match.group(0)!r}")
    return found


def test_the_write_detector_sees_every_spelling() -> None:
    """The check below can fail: each spelling it must catch is caught, reads are not."""
    writes = [
        "insert(deliveries).values(state='pending')",
        "sqlalchemy.update(deliveries).where(deliveries.c.id == 1)",
        "postgresql.insert(deliveries).on_conflict_do_nothing()",
        "deliveries.insert()",
        "models.deliveries.update().values(state='dead')",
        "connection.execute(text('UPDATE deliveries SET state = 1'))",
        "connection.execute(text(f'insert into  \"deliveries\" (id) values ({n})'))",
        "from gateway.store.models import deliveries as d\nupdate(d)",
    ]
    for source in writes:
        assert len(delivery_writes(source)) == 1, source
    reads = [
        "select(deliveries).where(deliveries.c.state == 'pending')",
        "delete(deliveries).where(deliveries.c.event_id == 1)",
        "insert(delivery_attempts)",
        "counts.update(deletion.count_profile(connection, profile))",
        "'the deliveries table', 'UPDATE delivery_attempts SET'",
    ]
    for source in reads:
        assert delivery_writes(source) == [], source


def test_only_the_outbox_inserts_or_updates_deliveries() -> None:
    """gateway/store/outbox.py builds every statement that writes the table — including the
    recorder's prepared UPDATE (`outbox._each_statement`, run by delivery/record.py through
    `outbox.transition_each`, as is claim.py's lease renewal); gateway/store/prepared.py only
    compiles and runs what it is given. So the allow-list is outbox.py alone."""
    files = sorted((ROOT / "gateway").rglob("*.py"))
    found = {
        str(f.relative_to(ROOT)): delivery_writes(f.read_text(encoding="utf-8")) for f in files
    }
    assert found["gateway/store/outbox.py"]  # the detector does see the outbox's own writes
    assert {f: w for f, w in found.items() if w and f != "gateway/store/outbox.py"} == {}
