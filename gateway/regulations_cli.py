"""`gateway suppress | unsuppress | delete ID_OR_EMAIL [--wait]` and `gateway regulations`:
the regulation functions on the command line (the same functions as the admin API, no HTTP)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from adapters.textsafe import printable
from gateway.admin_cli import dumps, migrated_engine, table
from gateway.config import Config
from gateway.queries import DEFAULT_LIMIT, QueryError
from gateway.regulations import service
from gateway.regulations.keys import InvalidRequest, make_subject

COMMANDS = ("suppress", "unsuppress", "delete", "regulations")
COLUMNS = ("id", "type", "status", "subject_kind", "created_at", "finished_at", "destinations")
WAIT_SECONDS = 600.0

AddCommand = Callable[[str, str], argparse.ArgumentParser]


def add_commands(add: AddCommand) -> None:
    for name, what in (("suppress", "stop collecting from a person (every linked key)"),
                       ("unsuppress", "collect from a suppressed person again"),
                       ("delete", "delete a person's stored data here and at destinations")):
        command = add(name, what)
        command.add_argument("subject", metavar="ID_OR_EMAIL",
                             help='a userId, or an email when it contains "@"')
        kind = command.add_mutually_exclusive_group()
        kind.add_argument("--user-id", dest="kind", action="store_const", const="user_id",
                          help="the subject is a userId (even with an @ in it)")
        kind.add_argument("--anonymous-id", dest="kind", action="store_const",
                          const="anonymous_id", help="the subject is an anonymousId")
        kind.add_argument("--email", dest="kind", action="store_const", const="email",
                          help="the subject is an email")
        if name == "delete":
            command.add_argument("--suppress", action="store_true",
                                 help="suppress too (suppress_with_delete)")
        command.add_argument("--wait", action="store_true",
                             help="wait until every destination has answered")
        command.add_argument("--json", action="store_true", help="JSON instead of text")
    listing = add("regulations", "list regulations, or show one")
    listing.add_argument("id", nargs="?", type=int, help="one regulation")
    listing.add_argument("--type", choices=service.TYPES)
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    listing.add_argument("--cursor")
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")


def run(args: argparse.Namespace, config: Config) -> int:
    with migrated_engine(config) as engine:
        try:
            if args.command == "regulations":
                return _list(engine, args)
            return _apply(engine, config, args)
        except (InvalidRequest, QueryError) as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 2


def _apply(engine: Any, config: Config, args: argparse.Namespace) -> int:
    kind = args.kind or ("email" if "@" in args.subject else "user_id")
    subject = make_subject(kind, args.subject)
    regulation = args.command
    if regulation == "delete" and args.suppress:
        regulation = "suppress_with_delete"
    found = service.create(engine, config, regulation, subject)
    if args.wait and found["status"] == service.RUNNING:
        print(f"regulation {found['id']}: waiting for the destinations …", file=sys.stderr)
        found = service.wait(engine, found["id"], WAIT_SECONDS) or found
    _show(found, args.json)
    return 1 if found["status"] == service.FAILED else 0


def _list(engine: Any, args: argparse.Namespace) -> int:
    if args.id is not None:
        found = service.get(engine, args.id)
        if found is None:
            print(f"gateway: no regulation {args.id}", file=sys.stderr)
            return 1
        _show(found, args.json)
        return 0
    filters = {k: getattr(args, k) for k in ("type", "status") if getattr(args, k)}
    with engine.connect() as connection:
        page = service.list_page(connection, filters, args.limit, args.cursor)
    if args.json:
        print(dumps(page.as_json()))
        return 0
    rows = [{**r, "destinations": ", ".join(f"{name} {d['status']}" for name, d in
                                            r["destinations"].items())} for r in page.data]
    print(table(rows, COLUMNS, width=60))
    if page.next_cursor:
        print(f"\nmore: --cursor {page.next_cursor}")
    return 0


def _show(regulation: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(regulation))
        return
    print(f"regulation {regulation['id']}: {regulation['type']} "
          f"({regulation['subject_kind']}) {regulation['status']}")
    counts = ", ".join(f"{k} {v}" for k, v in regulation["counts"].items())
    print(f"  counts: {counts}")
    for name, result in regulation["destinations"].items():
        detail = f" ({printable(result['last_error'])})" if result.get("last_error") else ""
        print(f"  {printable(name)}: {result['status']}, {result['attempts']} attempt(s)"
              f"{detail}")
