"""`gateway plan check FILE`, `gateway plan test FILE --events sample.ndjson` and
`gateway violations`: a tracking plan checked before it is deployed, its effect on sample
events seen without a gateway, and the violations record read (README "Tracking plans")."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from adapters.textsafe import printable
from gateway.cli.admin import AddCommand, dumps, migrated_engine, table
from gateway.config import Config, Limits
from gateway.messages import MessageError, RequestInfo, normalise
from gateway.plans import enforce, record
from gateway.plans.load import PlanError, read
from gateway.plans.settings import UNPLANNED_CHOICES, VIOLATION_CHOICES, SourcePlan
from gateway.plans.validate import Plan

COMMANDS = ("plan", "violations")
VIOLATION_COLUMNS = ("count", "source", "type", "event", "violation_type", "rule", "message",
                     "example_message_id", "last_seen")
MAX_LINE_BYTES = 4 * 1024 * 1024


def add_commands(add: AddCommand) -> None:
    planning = add("plan", "check a tracking plan file, or test sample events against it")
    actions = planning.add_subparsers(dest="plan_command", required=True, metavar="ACTION")
    checking = actions.add_parser("check", help="read and compile every rule of a plan file")
    checking.add_argument("file", type=Path)
    testing = actions.add_parser("test", help="what a plan would flag, trim or drop in sample "
                                              "events (one JSON message per line)")
    testing.add_argument("file", type=Path)
    testing.add_argument("--events", type=Path, required=True, help="an .ndjson file")
    testing.add_argument("--unplanned-events", choices=UNPLANNED_CHOICES, default="allow")
    testing.add_argument("--violations", choices=VIOLATION_CHOICES, default="flag")
    testing.add_argument("--json", action="store_true", help="one JSON object per message")
    listing = add("violations", "tracking-plan violations counted per source, event and rule")
    listing.add_argument("--source")
    listing.add_argument("--event")
    listing.add_argument("--since", help="ISO-8601 time (default: the last --hours)")
    listing.add_argument("--hours", type=int, default=24)
    listing.add_argument("--limit", type=int, default=200)
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")


def run_plan(args: argparse.Namespace) -> int:
    """`plan check` / `plan test`: no config, no database. 0 fits, 1 violations, 2 bad plan."""
    try:
        plan = Plan(str(args.file), read(args.file))
    except PlanError as exc:
        print(f"gateway: plan {exc}", file=sys.stderr)
        return 2
    if args.plan_command == "check":
        kinds = Counter(c.rule.kind for c in plan.compiled)
        print(f"{args.file}: {len(plan.compiled)} rules compiled ("
              + ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) + ")")
        for name in plan.events:
            print(f"  track {printable(name)}")
        return 0
    return _test(plan, args)


def _test(plan: Plan, args: argparse.Namespace) -> int:
    settings = SourcePlan(plan, args.unplanned_events, args.violations)
    totals: Counter[str] = Counter()
    info = RequestInfo(received_at=datetime.now(UTC))
    try:
        lines = args.events.open("rb")
    except OSError as exc:
        print(f"gateway: {args.events}: cannot read it: {exc.strerror or exc}", file=sys.stderr)
        return 2
    with lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            verdict = _one(settings, info, line)
            totals[verdict["verdict"]] += 1
            verdict["line"] = number
            if args.json:
                print(dumps(verdict, indent=False))
            else:
                _show(verdict)
    if not args.json:
        print(", ".join(f"{n} {what}" for what, n in sorted(totals.items())) or "no events")
    return 1 if set(totals) - {"fits"} else 0


def _one(settings: SourcePlan, info: RequestInfo, line: bytes) -> dict[str, Any]:
    if len(line) > MAX_LINE_BYTES:
        return {"verdict": "invalid", "error": f"longer than {MAX_LINE_BYTES} bytes"}
    try:
        message = normalise(orjson.loads(line), info, Limits())
    except orjson.JSONDecodeError as exc:
        return {"verdict": "invalid", "error": f"not JSON: {exc}"}
    except MessageError as exc:  # the gateway would refuse it before any plan
        return {"verdict": "invalid", "error": exc.message}
    payload = message.payload
    outcome, keep = enforce.judge(settings, payload)
    verdict = ("fits" if not outcome.violations else "dropped" if not keep
               else "trimmed" if settings.violations == "drop_properties" and outcome.removals
               else "allowed" if outcome.violations[0].type == "Unplanned-Event" else "flagged")
    return {"verdict": verdict, "messageId": message.message_id, "type": message.type,
            "event": payload.get("event") or payload.get("name"),
            "violations": [v.as_json() for v in outcome.violations]}


def _show(verdict: dict[str, Any]) -> None:
    what = verdict.get("event") or ""
    head = f"line {verdict['line']}: {verdict['verdict']}"
    if verdict.get("error"):
        print(f"{head}: {printable(verdict['error'])}")
        return
    print(f"{head}: {printable(verdict.get('type'))} {printable(what)} "
          f"({printable(verdict.get('messageId'))})")
    for v in verdict["violations"]:
        print(f"    {v['type']}: {printable(v['meta']['instancePath'] or '/')} "
              f"{printable(v['message'])}")


def run_violations(args: argparse.Namespace, config: Config) -> int:
    given = {"source": args.source, "event": args.event, "since": args.since,
             "hours": str(args.hours), "limit": str(args.limit)}
    with migrated_engine(config) as engine:
        try:
            with engine.connect() as connection:
                found = record.from_filters(connection, {k: v for k, v in given.items() if v})
        except record.FilterError as exc:
            print(f"gateway: {exc}", file=sys.stderr)
            return 2
    if args.json:
        print(dumps(found))
    else:
        print(table(found["violations"], VIOLATION_COLUMNS))
        print(f"\n{found['total']} violations since {found['since']}")
    return 0
