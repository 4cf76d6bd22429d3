"""One owner per rule: each rule below is written once, and the copies that were removed do
not come back (read from the source, by AST)."""

from __future__ import annotations

import ast
import errno
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

import adapters
import gateway
from adapters.status import is_success
from gateway.delivery import client, retry
from gateway.messages import SCHEMAS, iso_text
from gateway.store.models import MESSAGE_TYPES

ROOTS = (Path(gateway.__file__).parent, Path(adapters.__file__).parent)


def modules() -> dict[str, ast.Module]:
    """Every production module of `gateway` and `adapters`, by path (gateway/store/outbox.py)."""
    return {str(path.relative_to(root.parent)): ast.parse(path.read_text(), str(path))
            for root in ROOTS for path in sorted(root.rglob("*.py"))}


def test_the_2xx_check_is_adapters_status_only() -> None:
    inline = [f"{path}:{node.lineno}" for path, tree in modules().items()
              if path != "adapters/status.py" for node in ast.walk(tree)
              if isinstance(node, ast.Compare)
              and {200, 299} & {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)}
              and {299, 300} & {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)}]
    assert inline == []
    assert [is_success(s) for s in (None, 199, 200, 299, 300)] == [False, False, True, True, False]


def test_unused_copies_of_the_status_rule_are_gone() -> None:
    assert not hasattr(retry, "Verdict") and not hasattr(retry, "classify_status")
    assert not hasattr(client, "retry_after_seconds")


def test_one_timestamp_to_text_helper() -> None:
    """`messages.iso_text` only: no module turns a time into text by `.isoformat().replace`."""
    copies = [f"{path}:{node.lineno}" for path, tree in modules().items()
              if path != "gateway/messages.py" for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "replace" and isinstance(node.func.value, ast.Call)
              and isinstance(node.func.value.func, ast.Attribute)
              and node.func.value.func.attr == "isoformat"]
    assert copies == []
    assert iso_text(datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC)) \
        == "2026-01-02T03:04:05.000600Z"
    assert iso_text(None) is None


def test_the_message_types_are_listed_once() -> None:
    """`models.MESSAGE_TYPES`: ingest, filters, the tracking paths and the console read it
    (ingest's schema per type is keyed by the same names)."""
    every = set(MESSAGE_TYPES)
    lists = [path for path, tree in modules().items() if path.startswith("gateway/")
             for node in ast.walk(tree)
             if isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict)
             and every <= {c.value for c in ast.walk(node) if isinstance(c, ast.Constant)}]
    assert lists == ["gateway/messages.py", "gateway/store/models.py"]  # SCHEMAS, the list
    assert tuple(SCHEMAS) == MESSAGE_TYPES


def test_a_database_outage_is_decided_in_one_place() -> None:
    """`storage_state.is_outage`: ingest's group commit and the worker's recorder both ask it."""
    from gateway import ingest
    from gateway.delivery import record
    from gateway.store import storage_state

    assert ingest.is_outage is record.is_outage is storage_state.is_outage
    assert not hasattr(ingest, "_is_outage")
    cause = Exception("server closed the connection")
    invalidated = DBAPIError("SELECT 1", {}, cause, connection_invalidated=True)
    outages = [OperationalError("SELECT 1", {}, cause), InterfaceError("SELECT 1", {}, cause),
               invalidated, OSError(errno.EROFS, "read-only file system")]
    refusals = [IntegrityError("INSERT", {}, cause), DBAPIError("SELECT 1", {}, cause),
                OSError(errno.ENOENT, "gone"), ValueError("bad value")]
    assert [storage_state.is_outage(e) for e in outages] == [True] * 4
    assert [storage_state.is_outage(e) for e in refusals] == [False] * 4


def test_the_circuit_vocabulary_is_mapped_once() -> None:
    """lanes' states → the gauge's numbers → the console's words, through metrics' one map."""
    from gateway import metrics
    from gateway.console import data
    from gateway.delivery import lanes

    assert set(metrics.CIRCUIT_VALUE) == {lanes.CLOSED, lanes.HALF_OPEN, lanes.OPEN}
    assert not hasattr(data, "_CIRCUIT_WORDS")
    for state in (lanes.CLOSED, lanes.HALF_OPEN, lanes.OPEN):
        metrics.publish_lane("one-owner-test", {"circuit": state, "in_flight": 0, "tokens": 2})
        said = data._lane_words(metrics.destination_status()["one-owner-test"])
        assert said == f"{state}, 2 tokens"


def test_the_console_reads_circuits_without_probing_modules_by_name() -> None:
    from gateway import metrics
    from gateway.console import data

    source = (ROOTS[0] / "console" / "data.py").read_text()
    assert "importlib" not in source and not hasattr(data, "circuit_status")
    metrics.publish_lane("probe-test", {"circuit": "half-open", "in_flight": 1, "tokens": 0.5})
    assert data.circuit_words(["probe-test", "never-published"]) \
        == {"probe-test": "half-open, 0.5 tokens", "never-published": None}


def test_one_meaning_per_name() -> None:
    """A class or constant name is defined at the top of one module of the gateway only (the
    adapters' own `ConfigError` and `MISSING` are theirs; the gateway names none of its own so).
    """
    defined: dict[str, list[str]] = {}
    for path, tree in modules().items():
        for node in tree.body:
            names = [node.name] if isinstance(node, ast.ClassDef) else [
                t.id for t in node.targets if isinstance(t, ast.Name)] \
                if isinstance(node, ast.Assign) else []
            for name in names:
                defined.setdefault(name, []).append(path)
    for name in ("Verdict", "Limits", "ConfigError", "Profile", "MISSING"):
        assert len(defined.get(name, [])) <= 1, (name, defined[name])


def test_the_app_objects_are_spelled_once() -> None:
    """`gateway/http/context.py` names the config, engine and storage keys; no module reaches
    for them by key or keeps a local `_config()`/`_engine()` of its own."""
    keys = {"gateway.config", "gateway.engine", "gateway.storage"}
    spelled = sorted({path for path, tree in modules().items()
                      if path != "gateway/http/context.py" for node in ast.walk(tree)
                      if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                      and node.slice.value in keys})
    local = sorted({path for path, tree in modules().items() for node in ast.walk(tree)
                    if isinstance(node, ast.FunctionDef) and node.name in ("_config", "_engine")})
    assert (spelled, local) == ([], [])
