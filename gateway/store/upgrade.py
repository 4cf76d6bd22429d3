"""Rolling upgrades: which schema revisions are pending, and whether each is safe to run while
nodes of the previous release are still live (`gateway migrate --check`).

Migrations are expand-then-contract (docs/design.md §5): a release adds what its code needs
(tables, nullable columns, indexes) in a revision that the previous release's code keeps working
on, so an operator migrates while old nodes serve, then starts new nodes and stops old ones.
What would break old code (dropping or renaming what it reads or writes, a new NOT NULL
column it does not fill) waits for a later release, in a revision that says so. Every revision
declares `safe_while_older_nodes_run`; tests/unit/test_migrations.py checks the declarations
against what each revision does.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from gateway.store.db import alembic_config


@dataclass(frozen=True)
class Revision:
    id: str
    title: str  # the first line of its docstring
    safe_while_older_nodes_run: bool
    # a contract step this release's code runs before and after: run once every node runs
    # this release (`gateway migrate --expand-only` stops before the first one)
    runs_after_rollout: bool = False


@dataclass(frozen=True)
class Plan:
    current: str | None  # the database's revision (None: not migrated)
    head: str  # the newest this gateway knows
    pending: tuple[Revision, ...]  # oldest first
    unknown: bool  # the database is at a revision this gateway does not know (it is newer)

    @property
    def safe_while_older_nodes_run(self) -> bool:
        return all(r.safe_while_older_nodes_run for r in self.pending)

    @property
    def expand(self) -> tuple[Revision, ...]:
        """The pending revisions before the first that waits for the rollout."""
        for index, revision in enumerate(self.pending):
            if revision.runs_after_rollout:
                return self.pending[:index]
        return self.pending

    @property
    def after_rollout(self) -> tuple[Revision, ...]:
        return self.pending[len(self.expand):]


def plan(engine: Engine) -> Plan:
    """What `gateway migrate` would run on this database, read without changing anything."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util.exc import CommandError

    url = engine.url.render_as_string(hide_password=False)
    scripts = ScriptDirectory.from_config(alembic_config(url))
    head = scripts.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    try:
        steps = list(scripts.iterate_revisions(head, current))
    except CommandError:
        return Plan(current, head, (), unknown=True)
    pending = tuple(_revision(script) for script in reversed(steps))
    return Plan(current, head, pending, unknown=False)


def _revision(script) -> Revision:
    title = (script.doc or "").strip().splitlines()[0] if script.doc else script.revision
    return Revision(script.revision, title,
                    bool(getattr(script.module, "safe_while_older_nodes_run", False)),
                    bool(getattr(script.module, "runs_after_rollout", False)))


def describe(plan_: Plan) -> tuple[list[str], int]:
    """The lines `gateway migrate --check` prints and its exit code: 0 nothing to run, 1 a
    migration is pending (the last line says whether older nodes may stay live), 2 the
    database is newer than this gateway."""
    if plan_.unknown:
        return [f"the schema ({plan_.current}) is newer than this gateway knows "
                f"(newest {plan_.head}): upgrade the gateway"], 2
    if not plan_.pending:
        return [f"the schema is up to date ({plan_.head})"], 0
    lines = [f"pending {r.id}: {r.title} — " + (
             "after the rollout: once every node runs this release" if r.runs_after_rollout
             else "safe while older nodes run" if r.safe_while_older_nodes_run
             else "NOT safe while older nodes run")
             for r in plan_.pending]
    expand = Plan(plan_.current, plan_.head, plan_.expand, False)
    if plan_.current is None:
        lines.append("the database is not migrated: run gateway migrate")
    elif plan_.after_rollout and expand.safe_while_older_nodes_run:
        lines.append("run gateway migrate --expand-only now: nodes of the previous release keep "
                     "working on the new schema; then start the new release and stop the old "
                     "one; once every node runs this release, gateway migrate runs the rest "
                     "(this release works before and after it)")
    elif plan_.safe_while_older_nodes_run:
        lines.append("run gateway migrate now: nodes of the previous release keep working "
                     "on the new schema; then start the new release and stop the old one")
    else:
        lines.append("stop every node of the previous release before gateway migrate (a "
                     "pending revision removes or changes what their code uses)")
    return lines, 1
