"""`gateway copy --to URL`: this installation's database into another one (the move from the
embedded SQLite to PostgreSQL), resumable, verified by counts and checksums at the end."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from gateway.cli.admin import migrated_engine
from gateway.config import Config
from gateway.store.copy import (
    DEFAULT_BATCH,
    LIVE_WITHIN_SECONDS,
    TABLES,
    TableReport,
    copy_all,
    live_processes,
    verify,
)
from gateway.store.db import (
    DatabaseProblem,
    describe_database_error,
    make_engine,
    mask_url,
    migrate,
    normalise_url,
)

AddCommand = Callable[[str, str], argparse.ArgumentParser]


def add_command(add: AddCommand) -> None:
    command = add("copy", "copy this database into another one (SQLite to PostgreSQL), "
                          "resumable, verified at the end")
    command.add_argument("--to", required=True, metavar="DATABASE_URL",
                         help="the target, e.g. postgresql://gateway@db.internal/gateway "
                              "(migrated first; run the same command again to resume)")
    command.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                         help=f"rows per transaction (default {DEFAULT_BATCH:,})")


def run(args: argparse.Namespace, config: Config) -> int:
    if normalise_url(args.to) == normalise_url(config.database_url):
        raise DatabaseProblem("copy: --to names the database this config already uses", 2)
    if not 1 <= args.batch <= 100_000:
        raise DatabaseProblem("copy: --batch must be from 1 to 100,000", 2)
    with migrated_engine(config) as source:
        running = live_processes(source, datetime.now(UTC))
        if running:
            raise DatabaseProblem(
                "copy: the source is still in use (" + "; ".join(running[:3]) + "): stop "
                "gateway serve and every gateway worker first, so nothing changes while it "
                f"is copied (one stopped less than {LIVE_WITHIN_SECONDS} s ago still "
                "counts: run this again then)")
        try:
            migrate(args.to)
            target = make_engine(args.to)
        except SQLAlchemyError as exc:  # about the target: name it, not the config's URL
            raise DatabaseProblem(describe_database_error(exc, args.to)) from None
        try:
            _refuse_foreign_target(source, target, args.to)
            print(f"copying {mask_url(config.database_url)} to {mask_url(args.to)}",
                  file=sys.stderr)
            reports = copy_all(source, target, args.batch, progress=_progress)
            problems = verify(source, target, reports)
        finally:
            target.dispose()
    _print(reports)
    if problems:
        for problem in problems:
            print(f"gateway: copy did not verify: {problem}", file=sys.stderr)
        return 1
    print("copied and verified: point database_url at the target and start the gateway")
    return 0


def _refuse_foreign_target(source: Engine, target: Engine, url: str) -> None:
    """A resumed copy finds its own rows in the target; rows past the source's newest mean
    the target belongs to another installation, and copying would mix the two."""
    for table in TABLES[:1]:
        (key,) = table.primary_key.columns
        with source.connect() as connection:
            newest = connection.execute(select(func.max(key))).scalar() or 0
        with target.connect() as connection:
            theirs = connection.execute(select(func.max(key))).scalar() or 0
        if theirs > newest:
            raise DatabaseProblem(
                f"copy: {mask_url(url)} already holds {table.name} this database does not "
                "have (another installation's?): copy into an empty database")


def _progress(table: str, done: int, total: int) -> None:
    print(f"  {table}: {done:,} of {total:,}", file=sys.stderr)


def _print(reports: list[TableReport]) -> None:
    print(f"{'table':<20} {'rows':>12} {'copied now':>12}  verified")
    for report in reports:
        print(f"{report.name:<20} {report.rows:>12,} {report.copied:>12,}  "
              f"{'yes' if report.verified else 'NO'}")
