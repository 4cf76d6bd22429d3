"""A source's tracking plan applied to its accepted messages before they are stored (README
"Tracking plans"): flag (`context.violationErrors`, RudderStack's shape), drop the offending
properties (and flag), or drop the event; unplanned track events are allowed or dropped. A
dropped message is answered 200 like every accepted one (the SDK must not send it again)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from gateway import rejections
from gateway.plans import record
from gateway.plans.settings import SourcePlan
from gateway.plans.validate import MAX_REPORTED, VALID, Outcome, Violation, unplanned

VIOLATION_ERRORS = "violationErrors"


def apply(engine: Engine, source: str, settings: SourcePlan | None, messages: list[Any],
          received_at: datetime) -> list[Any]:
    """The messages to store, changed as the source's plan settings say; every violation is
    counted in the violations record, and a dropped message left in the rejections record (so
    `gateway explain` answers why it never arrived)."""
    if settings is None:
        return messages
    kept: list[Any] = []
    seen: list[record.Seen] = []
    dropped: list[rejections.Entry] = []
    for message in messages:
        outcome, keep = judge(settings, message.payload)
        if outcome.violations:
            seen.extend(_seen(source, message, outcome.violations, received_at))
        if keep:
            kept.append(message)
        else:
            dropped.append(rejections.Entry(
                received_at, source, message.message_id, message.type, "tracking_plan",
                _why(settings, outcome.violations)))
    record.record(engine, seen)
    rejections.record(engine, dropped)
    return kept


def _why(settings: SourcePlan, found: Sequence[Violation]) -> str:
    """One line for the rejections record: the plan, the setting, the first failure."""
    first = found[0]
    setting = "unplanned_events = drop" if first.type == "Unplanned-Event" \
        else "violations = drop_event"
    more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
    where = first.as_json()["meta"]["instancePath"] or "/"
    return (f"accepted and dropped by tracking plan {settings.plan.name!r} ({setting}): "
            f"{first.type} at {where}: {first.message}{more}")


def judge(settings: SourcePlan, payload: dict[str, Any]) -> tuple[Outcome, bool]:
    """What the plan found in one payload, and whether it is kept. The payload is changed in
    place: violationErrors set (or a sender's own removed: only the gateway writes it), and
    the offending properties removed under drop_properties."""
    context = payload.get("context")
    if isinstance(context, dict):
        context.pop(VIOLATION_ERRORS, None)
    outcome = settings.plan.check(payload)
    if outcome is None:  # a track event the plan does not name
        return Outcome((unplanned(payload),), ()), settings.unplanned_events == "allow"
    if outcome is VALID:
        return outcome, True
    if settings.violations == "drop_event":
        return outcome, False
    if settings.violations == "drop_properties":
        remove(payload, outcome.removals)
    if not isinstance(context, dict):
        context = payload["context"] = {}
    context[VIOLATION_ERRORS] = [v.as_json() for v in outcome.violations[:MAX_REPORTED]]
    return outcome, True


def remove(payload: dict[str, Any], paths: Sequence[tuple[str | int, ...]]) -> None:
    """Remove each path's last element (array indexes from the last, so earlier ones hold)."""
    def order(path: tuple[str | int, ...]) -> list[tuple[int, Any]]:
        return [(1, p) if isinstance(p, int) else (0, p) for p in path]

    for path in sorted(set(paths), key=order, reverse=True):
        node: Any = payload
        for part in path[:-1]:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        last = path[-1]
        if isinstance(node, dict) and isinstance(last, str):
            node.pop(last, None)
        elif isinstance(node, list) and isinstance(last, int) and 0 <= last < len(node):
            del node[last]


def _seen(source: str, message: Any, found: Sequence[Violation],
          received_at: datetime) -> list[record.Seen]:
    payload = message.payload
    kind = str(payload.get("type") or message.type)
    name = payload.get("event" if kind == "track" else "name")
    event = name if isinstance(name, str) else None
    return [record.Seen(received_at, source, kind, event, v.rule, v.type, v.message,
                        message.message_id) for v in found[:MAX_REPORTED]]
