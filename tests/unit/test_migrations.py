"""Every schema revision says whether the previous release's code keeps working after it, and
the declaration is checked against what the revision does (by syntax tree)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

VERSIONS = Path(__file__).resolve().parents[2] / "migrations" / "versions"
REVISIONS = sorted(VERSIONS.glob("[0-9]*.py"))
# what breaks code that reads or writes the old shape
CONTRACTING = {"drop_table", "drop_column", "rename_table", "drop_constraint", "execute"}


def declared(tree: ast.Module) -> bool | None:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "safe_while_older_nodes_run"
                for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def contracting_calls(tree: ast.Module) -> list[str]:
    """Calls in upgrade() that drop, rename or tighten what older code may use."""
    upgrade = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade")
    found = []
    for node in ast.walk(upgrade):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        keywords = {k.arg: k.value for k in node.keywords}
        tightened = name == "alter_column" and (
            "new_column_name" in keywords or "type_" in keywords
            or (isinstance(keywords.get("nullable"), ast.Constant)
                and keywords["nullable"].value is False))
        added_required = name == "add_column" and any(
            _required(column) for column in node.args if isinstance(column, ast.Call))
        if name in CONTRACTING or tightened or added_required:
            found.append(name)
    return found


def _required(column: ast.Call) -> bool:
    """A new NOT NULL column without a server default: older code's inserts would fail."""
    keywords = {k.arg: k.value for k in column.keywords}
    nullable = keywords.get("nullable")
    return (isinstance(nullable, ast.Constant) and nullable.value is False
            and "server_default" not in keywords)


def test_there_are_revisions() -> None:
    assert len(REVISIONS) >= 8


@pytest.mark.parametrize("path", REVISIONS, ids=lambda p: p.name)
def test_each_revision_declares_whether_older_nodes_survive_it(path: Path) -> None:
    tree = ast.parse(path.read_text())
    safe = declared(tree)
    assert safe is not None, f"{path.name}: declare safe_while_older_nodes_run"
    if safe:
        assert not contracting_calls(tree), (
            f"{path.name} says older nodes survive it but calls {contracting_calls(tree)}")


def test_the_check_catches_a_contracting_revision() -> None:
    tree = ast.parse(
        "def upgrade():\n"
        "    op.drop_column('events', 'user_id')\n"
        "    op.alter_column('events', 'event', nullable=False)\n"
        "    op.add_column('events', sa.Column('x', sa.Text(), nullable=False))\n")
    assert contracting_calls(tree) == ["drop_column", "alter_column", "add_column"]
    relaxed = ast.parse(
        "def upgrade():\n"
        "    op.add_column('events', sa.Column('x', sa.Text(), nullable=True))\n"
        "    op.add_column('events', sa.Column('y', sa.Text(), nullable=False,\n"
        "                                      server_default=''))\n"
        "    op.alter_column('events', 'event', nullable=True)\n")
    assert contracting_calls(relaxed) == []


def test_a_revision_that_waits_for_the_rollout_says_older_nodes_do_not_survive_it() -> None:
    waiting = [p for p in REVISIONS if "runs_after_rollout = True" in p.read_text()]
    assert waiting, "0014 waits for the rollout"
    for path in waiting:
        assert declared(ast.parse(path.read_text())) is False, path.name


def test_migrate_check_sends_a_rolling_upgrade_to_expand_only() -> None:
    from gateway.store.upgrade import Plan, Revision, describe

    plan = Plan("0012", "0014", (Revision("0013", "message_ids", True),
                                 Revision("0014", "partitions", False, True)), False)
    assert [r.id for r in plan.expand] == ["0013"]
    assert [r.id for r in plan.after_rollout] == ["0014"]
    lines, code = describe(plan)
    assert code == 1
    assert "after the rollout" in lines[1] and "--expand-only" in lines[-1]
    unsafe_first = Plan("0012", "0014", (Revision("0013", "drops a column", False),
                                         Revision("0014", "partitions", False, True)), False)
    assert "stop every node of the previous release" in describe(unsafe_first)[0][-1]
