"""`gateway events | deliveries | identities | replay | retry | explain`: the admin functions on
the command line, as tables or `--json` (docs/design.md §6: the same functions as the API, no
HTTP)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Engine

from adapters.textsafe import json_safe, printable
from gateway import queries
from gateway.config import Config
from gateway.replay import Conflict, NotFound, replay, retry_dead
from gateway.store.db import make_engine, require_current_schema, require_existing

EVENT_COLUMNS = ("id", "received_at", "source", "type", "event", "user_id", "anonymous_id",
                 "message_id")
DELIVERY_COLUMNS = ("id", "event_id", "destination", "state", "attempts", "last_status",
                    "next_attempt_at", "last_error")


AddCommand = Callable[[str, str], argparse.ArgumentParser]


def add_commands(add: AddCommand) -> None:
    """The admin subcommands; `add(name, help)` makes a subparser (with the common options)."""
    events = add("events", "list stored events, or show one with its deliveries")
    events.add_argument("id", nargs="?", type=int, help="one event with its deliveries")
    _filters(events, queries.EVENT_FILTERS)
    deliveries = add("deliveries", "list deliveries, or show one with its attempts")
    deliveries.add_argument("id", nargs="?", type=int, help="one delivery with its attempts")
    _filters(deliveries, queries.DELIVERY_FILTERS)
    identities = add("identities", "the merged profile owning a key (or with an id); "
                                   "`identities unlink ID --kind K --value V` splits a key off")
    identities.add_argument("words", nargs="*", metavar="[unlink] ID",
                            help="a profile id; `unlink ID` splits --kind/--value off it")
    for name in ("user_id", "anonymous_id", "email"):
        identities.add_argument(f"--{name.replace('_', '-')}", dest=name)
    identities.add_argument("--kind", choices=("userId", "anonymousId", "email"),
                            help="unlink: the kind of key to split off")
    identities.add_argument("--value", help="unlink: the key's value")
    identities.add_argument("--json", action="store_true")
    replaying = add("replay", "send matching events to a destination")
    replaying.add_argument("destination")
    replaying.add_argument("--dry-run", action="store_true",
                           help="count what would be queued, queue nothing")
    _filters(replaying, queries.EVENT_FILTERS, paging=False)
    retrying = add("retry", "move a dead delivery back to pending")
    retrying.add_argument("delivery_id", type=int)
    retrying.add_argument("--json", action="store_true")
    explaining = add("explain", "why a messageId did or did not reach each destination")
    explaining.add_argument("message_id")
    explaining.add_argument("--source", help="only this source's message")
    explaining.add_argument("--json", action="store_true", help="JSON instead of a table")


def _filters(parser: argparse.ArgumentParser, names: Sequence[str], paging: bool = True) -> None:
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name)
    if paging:
        parser.add_argument("--limit", type=int, default=queries.DEFAULT_LIMIT)
        parser.add_argument("--cursor")
    parser.add_argument("--json", action="store_true", help="JSON instead of a table")


@contextmanager
def migrated_engine(config: Config) -> Iterator[Engine]:
    """The database of an admin command: never created by one, and migrated already."""
    require_existing(config.database_url)
    engine = make_engine(config.database_url)
    try:
        require_current_schema(engine)
        yield engine
    finally:
        engine.dispose()


def run(args: argparse.Namespace, config: Config) -> int:
    """Run one admin command. These never create a database, and need a migrated one."""
    with migrated_engine(config) as engine:
        try:
            return _dispatch(args, config, engine)
        except (queries.QueryError, NotFound, Conflict) as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 1 if isinstance(exc, NotFound | Conflict) else 2


def _dispatch(args: argparse.Namespace, config: Config, engine: Any) -> int:
    command = args.command
    if command == "retry":
        retry_dead(engine, args.delivery_id)
        with engine.connect() as connection:
            _print(queries.get_delivery(connection, args.delivery_id), args.json)
        return 0
    if command == "identities" and args.words[:1] == ["unlink"]:
        return _unlink(engine, args)
    if command == "replay":
        filters = _given(args, queries.EVENT_FILTERS)
        bar = None if args.json or args.dry_run else _progress
        result = replay(engine, config, args.destination, filters, args.dry_run, bar)
        if args.json:
            _print(result, True)
        else:
            print(replay_summary(result, args.destination, args.dry_run))
        return 0
    with engine.connect() as connection:
        if command == "explain":
            from gateway.explain import explain

            found = explain(connection, config, args.message_id, args.source)
            if args.json:
                _print(found, True)
            else:
                print("\n".join(explain_lines(found)))
            return 0
        if command == "identities":
            found = _identity(connection, args)
            if args.json:
                _print(found, True)
            else:
                print("\n".join(identity_lines(found)))
        elif command == "events" and args.id is not None:
            found = queries.get_event(connection, args.id)
            if found is None:
                raise NotFound(f"no event {args.id}")
            _print_tree(found, event_tree, args.json)
        elif command == "deliveries" and args.id is not None:
            found = queries.get_delivery(connection, args.id)
            if found is None:
                raise NotFound(f"no delivery {args.id}")
            _print_tree(found, delivery_tree, args.json)
        elif command == "events":
            page = queries.list_events(connection, _given(args, queries.EVENT_FILTERS),
                                       args.limit, args.cursor)
            _print_page(page, EVENT_COLUMNS, args.json)
        else:
            page = queries.list_deliveries(connection, _given(args, queries.DELIVERY_FILTERS),
                                           args.limit, args.cursor)
            _print_page(page, DELIVERY_COLUMNS, args.json)
    return 0


def _identity(connection: Any, args: argparse.Namespace) -> dict[str, Any]:
    """`identities ID` or `identities --user-id|--anonymous-id|--email …`."""
    given = _given(args, ("user_id", "anonymous_id", "email"))
    if args.words:
        if given or len(args.words) != 1:
            raise queries.QueryError("give a profile id, or one of --user-id, --anonymous-id, "
                                     "--email")
        profile_id = _profile_id(args.words[0])
        found = queries.get_identity_by_id(connection, profile_id)
        if found is None:
            raise NotFound(f"no identity {profile_id}")
        return found
    found = queries.get_identity(connection, given)
    if found is None:
        raise NotFound("no identity has that key")
    return found


def _profile_id(text: str) -> int:
    profile_id = queries.parse_id(text) if text.isdigit() else None
    if profile_id is None:
        raise queries.QueryError(f"{printable(text[:40])!s}: a profile id is a whole number from "
                                 f"1 to {queries.MAX_ID}")
    return profile_id


def _unlink(engine: Any, args: argparse.Namespace) -> int:
    """`identities unlink ID --kind K --value V`: the key onto a profile of its own."""
    from gateway.identity import UnlinkError, unlink
    from gateway.store.db import write_transaction

    if len(args.words) != 2 or args.kind is None or args.value is None:
        raise queries.QueryError("usage: gateway identities unlink ID --kind userId|anonymousId|"
                                 "email --value VALUE")
    profile_id = _profile_id(args.words[1])
    try:
        with write_transaction(engine) as connection:
            result = unlink(connection, profile_id, args.kind, args.value)
    except UnlinkError as exc:
        if exc.status == 400:
            raise queries.QueryError(str(exc)) from None
        raise NotFound(str(exc)) if exc.status == 404 else Conflict(str(exc)) from None
    if args.json:
        _print(result, True)
    else:
        print(f"{result['key']['kind']} {printable(result['key']['value'])} moved from profile "
              f"{result['from_profile']} to new profile {result['to_profile']}")
    return 0


def identity_lines(found: dict[str, Any]) -> list[str]:
    """A profile for people: its keys with when and by which message each was linked, then
    the merges refused around it."""
    lines = [f"profile {found['id']}: first seen {found['first_seen']}, last seen "
             f"{found['last_seen']}", f"  traits: {dumps(found['traits'], indent=False)}",
             f"  keys: {len(found['keys'])}"]
    for key in found["keys"]:
        how = (f"linked {key['linked_at']} by message {printable(key['linked_by'] or '-')} "
               f"(source {printable(key['source'] or '-')})") if key["linked_at"] else \
            "linked before links were recorded"
        lines.append(f"    {key['kind']:<12} {printable(key['value'])}  {how}")
    lines.append(f"  conflicts: {len(found['conflicts']) or 'none'}")
    for conflict in found["conflicts"]:
        key = conflict["key"]
        other = conflict["other_profile"]
        where = ("held here, wanted by profile" if conflict["held_here"] else
                 "held by profile") + f" {other}" if other else "new key, profile full"
        message = printable(conflict["message_id"] or "-")
        lines.append(f"    {key['kind']:<12} {printable(key['value'])}  {conflict['reason']}: "
                     f"message {message} (source {printable(conflict['source'] or '-')}) "
                     f"at {conflict['at']}; {where}")
    return lines


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict[str, str]:
    return {n: str(getattr(args, n)) for n in names if getattr(args, n, None) is not None}


def dumps(value: Any, indent: bool = True) -> str:
    """JSON output: C0 controls are escaped by JSON itself, DEL, C1 and bidi controls here."""
    return json_safe(orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode())


def _print(value: Any, as_json: bool) -> None:
    if as_json:
        print(dumps(value))
        return
    for key, item in value.items():
        item = dumps(item, indent=False) if isinstance(item, dict | list) else printable(item)
        print(f"{key:<16} {item}")


def _print_tree(value: dict[str, Any], render: Callable[[dict[str, Any]], list[str]],
                as_json: bool) -> None:
    if as_json:
        _print(value, True)
    else:
        print("\n".join(render(value)))


def replay_summary(result: dict[str, Any], destination: str, dry_run: bool) -> str:
    if dry_run:
        return (f"would queue {_count(result['matched'])} to {destination} "
                "(dry run; nothing queued)")
    return (f"queued {_count(result['queued'])} to {destination} "
            f"(replay {result['replay_id']})")


def _count(n: int) -> str:
    return f"{n} delivery" if n == 1 else f"{n} deliveries"


def event_tree(event: dict[str, Any]) -> list[str]:
    """One event for people: its fields, its payload as indented JSON, then each delivery with
    its attempts, indented under it."""
    name = f" {printable(repr(event['event']))}" if event.get("event") else ""
    lines = [f"event {event['id']}: {printable(event['type'])}{name} from source "
             f"{printable(event['source'])}"]
    lines += _fields(event, ("message_id", "user_id", "anonymous_id", "timestamp",
                             "received_at"))
    lines.append("  payload:")
    lines += ["    " + line for line in dumps(event["payload"]).split("\n")]
    lines.append(f"  deliveries: {len(event['deliveries']) or 'none'}")
    for delivery in event["deliveries"]:
        lines += ["    " + line for line in delivery_tree(delivery, with_event=False)]
    return lines


def delivery_tree(delivery: dict[str, Any], with_event: bool = True) -> list[str]:
    """One delivery and its attempts, one line each, the response excerpt under its attempt."""
    lines = [f"delivery {delivery['id']} to {printable(delivery['destination'])}: "
             f"{delivery['state']}"]
    names = ("user_key", "last_status", "last_error", "next_attempt_at", "replay_id",
             "regulation_id", "created_at", "updated_at")
    lines += _fields(delivery, ("event_id", *names) if with_event else names)
    attempts = delivery["attempts"]
    lines.append(f"  attempts: {len(attempts) or 'none'}")
    for attempt in attempts:
        status = attempt["status"] if attempt["status"] is not None else "no response"
        error = f"  {printable(attempt['error_class'])}" if attempt.get("error_class") else ""
        lines.append(f"    #{attempt['number']}  {attempt['started_at']}  {status}  "
                     f"{attempt['duration_ms']} ms{error}")
        if attempt.get("excerpt"):
            excerpt = printable(" ".join(attempt["excerpt"].split()))
            lines.append(f"        response: {_cell(excerpt, 96)}")
    return lines


def explain_lines(found: dict[str, Any]) -> list[str]:
    """`gateway explain` for people: the summary, refusals, then per event a table of
    destinations with the verdict and its reason."""
    lines = [f"message {printable(found['message_id'])}: {printable(found['summary'])}"]
    for r in found["rejections"]:
        source = printable(r["source"]) or "unknown source"
        lines.append(f"  refused {r['received_at']} ({source}): {printable(r['reason'])} — "
                     f"{printable(r['detail'])}")
    for event in found["events"]:
        name = f" {printable(repr(event['event']))}" if event.get("event") else ""
        lines.append(f"\nevent {event['id']}: {printable(event['type'])}{name} from source "
                     f"{printable(event['source'])}, received {event['received_at']}")
        for dup in event["duplicates"]:
            lines.append(f"  resend {dup['received_at']}: {printable(dup['words'])}")
        rows = [{"destination": d["destination"], "verdict": d["verdict"],
                 "delivery": (d["delivery"] or {}).get("id"), "why": d["words"]}
                for d in event["destinations"]]
        lines.append(table(rows, ("destination", "verdict", "delivery", "why"), width=120))
        for d in event["destinations"]:  # each transformation's effect, run again now
            steps = [f"{s['transformation']}: {s['effect']}"
                     + (f" ({s['error']})" if s["error"] else "")
                     for s in d.get("transformations", [])]
            if steps:
                lines.append(printable(f"  {d['destination']} transformations: "
                                       + "; ".join(steps)))
    return lines


def _fields(value: dict[str, Any], names: Sequence[str]) -> list[str]:
    width = max(len(n) for n in names) + 2
    return [f"  {n:<{width}}{printable(value[n])}" for n in names
            if value.get(n) not in (None, "")]


def _print_page(page: queries.Page, columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(dumps(page.as_json()))
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
    text = printable(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def _progress(done: int, total: int) -> None:
    filled = int(30 * done / total) if total else 30
    sys.stderr.write(f"\rreplaying [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
