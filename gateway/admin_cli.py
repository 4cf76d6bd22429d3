"""`gateway events | deliveries | identities | replay | retry`: the admin functions on the
command line, as tables or `--json` (DESIGN.md §6: the same functions as the API, no HTTP)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from gateway import queries
from gateway.config import Config
from gateway.db import make_engine
from gateway.replay import Conflict, NotFound, replay, retry_dead

EVENT_COLUMNS = ("id", "received_at", "source", "type", "event", "user_id", "anonymous_id",
                 "message_id")
DELIVERY_COLUMNS = ("id", "event_id", "destination", "state", "attempts", "last_status",
                    "next_attempt_at", "last_error")


def add_commands(commands: Any) -> None:
    events = commands.add_parser("events", help="list stored events, or show one")
    events.add_argument("id", nargs="?", type=int, help="one event with its deliveries")
    _filters(events, queries.EVENT_FILTERS)
    deliveries = commands.add_parser("deliveries", help="list deliveries")
    _filters(deliveries, queries.DELIVERY_FILTERS)
    identities = commands.add_parser("identities", help="the merged profile owning a key")
    for name in ("user_id", "anonymous_id", "email"):
        identities.add_argument(f"--{name.replace('_', '-')}", dest=name)
    identities.add_argument("--json", action="store_true")
    replaying = commands.add_parser("replay", help="send matching events to a destination")
    replaying.add_argument("destination")
    replaying.add_argument("--dry-run", action="store_true")
    _filters(replaying, queries.EVENT_FILTERS, paging=False)
    retrying = commands.add_parser("retry", help="move a dead delivery back to pending")
    retrying.add_argument("delivery_id", type=int)
    retrying.add_argument("--json", action="store_true")


def _filters(parser: argparse.ArgumentParser, names: Sequence[str], paging: bool = True) -> None:
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name)
    if paging:
        parser.add_argument("--limit", type=int, default=queries.DEFAULT_LIMIT)
        parser.add_argument("--cursor")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")


def run(args: argparse.Namespace, config: Config) -> int:
    engine = make_engine(config.database_url)
    try:
        return _dispatch(args, config, engine)
    except (queries.QueryError, NotFound, Conflict) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, NotFound | Conflict) else 2
    finally:
        engine.dispose()


def _dispatch(args: argparse.Namespace, config: Config, engine: Any) -> int:
    command = args.command
    if command == "retry":
        retry_dead(engine, args.delivery_id)
        with engine.connect() as connection:
            _print(queries.get_delivery(connection, args.delivery_id), args.json)
        return 0
    if command == "replay":
        filters = _given(args, queries.EVENT_FILTERS)
        bar = None if args.json or args.dry_run else _progress
        result = replay(engine, config, args.destination, filters, args.dry_run, bar)
        _print(result, args.json)
        return 0
    with engine.connect() as connection:
        if command == "identities":
            found = queries.get_identity(connection, _given(args, ("user_id", "anonymous_id",
                                                                   "email")))
            if found is None:
                raise NotFound("no identity has that key")
            _print(found, args.json)
        elif command == "events" and args.id is not None:
            found = queries.get_event(connection, args.id)
            if found is None:
                raise NotFound(f"no event {args.id}")
            _print(found, args.json)
        elif command == "events":
            page = queries.list_events(connection, _given(args, queries.EVENT_FILTERS),
                                       args.limit, args.cursor)
            _print_page(page, EVENT_COLUMNS, args.json)
        else:
            page = queries.list_deliveries(connection, _given(args, queries.DELIVERY_FILTERS),
                                           args.limit, args.cursor)
            _print_page(page, DELIVERY_COLUMNS, args.json)
    return 0


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, str]:
    return {n: str(getattr(args, n)) for n in names if getattr(args, n, None) is not None}


def _print(value: Any, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
        return
    for key, item in value.items():
        if isinstance(item, dict | list):
            item = orjson.dumps(item).decode()
        print(f"{key:<16} {item}")


def _print_page(page: queries.Page, columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(page.as_json(), option=orjson.OPT_INDENT_2).decode())
        return
    print(table(page.data, columns))
    if page.next_cursor:
        print(f"\nmore: --cursor {page.next_cursor}")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], width: int = 40) -> str:
    cells = [[_cell(row.get(c), width) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def _cell(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _progress(done: int, total: int) -> None:
    filled = int(30 * done / total) if total else 30
    sys.stderr.write(f"\rreplaying [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
