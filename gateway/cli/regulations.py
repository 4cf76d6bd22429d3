"""`gateway suppress | unsuppress | delete ID_OR_EMAIL [--wait]` and `gateway regulations`:
the regulation functions on the command line (the same functions as the admin API, no HTTP)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

from adapters.textsafe import printable
from gateway.cli.admin import dumps, migrated_engine, table
from gateway.config import Config
from gateway.queries import DEFAULT_LIMIT, QueryError
from gateway.regulations import service
from gateway.regulations.keys import InvalidRequest, make_subject

COMMANDS = ("suppress", "unsuppress", "delete", "regulations")
CONFIRMED = ("suppress", "delete")  # show what they cover and ask first (unless --yes)
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
        command.add_argument("--dry-run", action="store_true",
                             help="show the profile's keys and what would be affected; change "
                                  "nothing")
        if name in CONFIRMED:
            command.add_argument("--yes", action="store_true",
                                 help="do not ask for confirmation (needed without a terminal)")
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
    if args.dry_run or args.command in CONFIRMED:
        plan = service.preview(engine, config, regulation, subject)
        if args.dry_run:
            _show_preview(plan, sys.stdout, args.json)
            return 0
        # the keys go where a person reads them: stdout stays one JSON document with --json
        _show_preview(plan, sys.stderr if args.json else sys.stdout, False)
        if not args.yes:
            answer = _confirm(regulation)
            if answer is not None:
                return answer
    found = service.create(engine, config, regulation, subject)
    if args.wait and found["status"] == service.RUNNING:
        print(f"regulation {found['id']}: waiting for the destinations …", file=sys.stderr)
        found = service.wait(engine, found["id"], WAIT_SECONDS) or found
    _show(found, args.json)
    return 1 if found["status"] == service.FAILED else 0


def _confirm(regulation: str) -> int | None:
    """None to go ahead, else the exit code: y/N on a terminal; without one, refuse (a script
    must say --yes) rather than wait for an answer that never comes."""
    if not sys.stdin or not sys.stdin.isatty():
        print(f"gateway: {regulation} needs confirmation and stdin is not a terminal: check the "
              "keys above and pass --yes", file=sys.stderr)
        return 2
    print(f"Apply this {regulation} regulation? [y/N] ", end="", file=sys.stderr, flush=True)
    try:  # the question on stderr: with --json, stdout stays one JSON document
        answer = input()
    except EOFError:
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return None
    print("gateway: cancelled, nothing changed", file=sys.stderr)
    return 1


def _show_preview(plan: dict[str, Any], out: TextIO, as_json: bool) -> None:
    if as_json:
        print(dumps(plan), file=out)
        return
    profile = plan["profile"]
    found = f"profile {profile['id']}" if profile["id"] is not None else "no stored profile"
    (name, value), = plan["subject"].items()
    print(f"{plan['type']} {name} {printable(repr(value))}: {found}, covering every linked key:",
          file=out)
    for kind, values in profile["keys"].items():
        for one in values:  # event data: escaped for the terminal
            print(f"  {kind[:-1]}: {printable(one)}", file=out)
    if profile.get("links"):
        print("  linked by:", file=out)  # why each key is this person's
    for link in profile.get("links", []):
        how = (f"message {printable(link['linked_by'] or '-')} (source "
               f"{printable(link['source'] or '-')}) at {link['linked_at']}"
               if link["linked_at"] else "before links were recorded")
        print(f"    {link['kind']} {printable(link['value'])}: {how}", file=out)
    print("  would affect: " + ", ".join(f"{k} {v}" for k, v in plan["counts"].items()),
          file=out)
    for destination, detail in plan["destinations"].items():
        print(f"  {destination} ({detail['type']}): deletion {detail['deletion']}", file=out)


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
