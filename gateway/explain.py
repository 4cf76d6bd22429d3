""""Why didn't it arrive?": for a messageId, the decision path to every destination in words.

The path, in the order the gateway takes it: refused at ingest (the rejections record), dropped
as a resend of an earlier messageId (which event), not routed (the destination is disabled, its
`sources` list leaves the source out, or the message's `integrations` rule — decided by
gateway/routing.py's own `decision`, so the words cannot drift from what ingest did), then the
delivery's state: skipped (the event's consent, a filter, or the adapter's reason), pending /
delivering / retrying (next attempt, last error), delivered (when, status), dead (last error).
Shared by `GET /admin/v1/explain`, `gateway explain` and the console.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select

# The one place the console and explain take delivery state names from (re-point it when the
# state machine moves, e.g. to gateway/store/outbox.py).
from adapters import DESTINATION_TYPES
from gateway import rejections, routing
from gateway.config import Config, Destination
from gateway.messages import iso_text
from gateway.queries import QueryError, delivery_summary, event_summary
from gateway.store import outbox
from gateway.store.models import deliveries, events
from gateway.transforms import run

__all__ = ["MAX_EVENTS", "explain", "explain_event"]

MAX_EVENTS = 20  # one messageId is stored once per source: a handful at most
MAX_MESSAGE_ID = 255

# verdicts: what a program reads; `words` is what a person reads
NOT_ROUTED, NO_DELIVERY = "not_routed", "no_delivery"
# outcomes of a messageId as a whole
STORED, REJECTED, UNKNOWN = "stored", "rejected", "unknown"


def explain(connection: Connection, config: Config, message_id: str,
            source: str | None = None) -> dict[str, Any]:
    """Everything the gateway knows about one messageId (optionally of one source; else of
    every configured source — events of a source since removed from the config need it named)."""
    if not isinstance(message_id, str) or not message_id.strip():
        raise QueryError("message_id: required")
    if len(message_id) > MAX_MESSAGE_ID:
        raise QueryError(f"message_id: at most {MAX_MESSAGE_ID} characters")
    message_id = message_id.replace("\x00", "")
    # (source, message_id) is the unique index: name the sources so it is used at any size
    sources = [source] if source else [s.name for s in config.sources]
    query = select(events).where(events.c.source.in_(sources), events.c.message_id == message_id)
    rows = connection.execute(query.order_by(events.c.id).limit(MAX_EVENTS)).all()
    refused = rejections.for_message(connection, message_id, source)
    found = [explain_event(connection, config, row, refused) for row in rows]
    outcome = STORED if found else REJECTED if refused else UNKNOWN
    return {"message_id": message_id, "source": source, "outcome": outcome,
            "summary": _summary(found, refused),
            "events": found,
            "rejections": [r for r in refused if r["reason"] != "duplicate"]}


def explain_event(connection: Connection, config: Config, row: Any,
                  refused: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """One stored event: its resends and, per destination, why it did or did not arrive."""
    rows = connection.execute(select(deliveries).where(deliveries.c.event_id == row.id)
                              .order_by(deliveries.c.id)).all()
    by_destination: dict[str, list[Any]] = {}
    for delivery in rows:
        by_destination.setdefault(delivery.destination, []).append(delivery)
    configured = {d.name: d for d in config.destinations}
    names = list(configured) + [n for n in by_destination if n not in configured]
    integrations = row.payload.get("integrations") if isinstance(row.payload, dict) else None
    duplicates = [r for r in refused if r["duplicate_of"] == row.id]
    return {
        **event_summary(row),
        "duplicates": [{"received_at": r["received_at"], "words": r["detail"]}
                       for r in duplicates],
        "destinations": [
            _with_steps(configured.get(name), row.payload, _destination(
                configured.get(name), name, row.source, integrations,
                by_destination.get(name, []), _pruned_after(config)))
            for name in names],
    }


def _with_steps(destination: Destination | None, payload: Any,
                out: dict[str, Any]) -> dict[str, Any]:
    """Each of the destination's transformations' effect on the stored event, run again now
    (a dry run of the current code: nothing is sent)."""
    if destination is None or not destination.transformations or out["verdict"] == NOT_ROUTED \
            or not isinstance(payload, dict):
        return out
    steps: list[run.Step] = []
    with contextlib.suppress(run.Dropped, run.Failed):  # the steps say which one, and why
        run.run_chain(destination.transformations, payload, source=None,
                      destination=destination.name,
                      settings=DESTINATION_TYPES[destination.type].redact(destination.settings),
                      steps=steps)
    return {**out, "transformations": [
        {k: v for k, v in step.as_json().items() if k != "events"} for step in steps]}


def _pruned_after(config: Config) -> str | None:
    """How retention removes finished deliveries while their event stays, in words (None when
    it keeps them as long as the event)."""
    r = config.retention
    rules = [f"{name} = {days}" for name, days in (("delivered_days", r.delivered_days),
                                                   ("dead_days", r.dead_days))
             if days and (not r.events_days or days < r.events_days)]
    return ", ".join(rules) or None


def _destination(destination: Destination | None, name: str, source: str, integrations: Any,
                 rows: list[Any], pruned_after: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": name, "deliveries": len(rows)}
    if rows:
        latest = rows[-1]
        verdict, words = _delivery_words(latest)
        if len(rows) > 1:
            words += f" ({len(rows)} deliveries of this event: the newest is shown)"
        return {**out, "verdict": verdict, "words": words, "delivery": delivery_summary(latest)}
    if destination is None:  # pragma: no cover - a name comes from config or a delivery row
        return {**out, "verdict": NO_DELIVERY, "words": "no such destination", "delivery": None}
    if not destination.enabled:
        return {**out, "verdict": NOT_ROUTED, "delivery": None,
                "words": "not routed: the destination is disabled in the config"}
    if source not in destination.sources:
        linked = ", ".join(destination.sources) or "none"
        return {**out, "verdict": NOT_ROUTED, "delivery": None,
                "words": f"not routed: the destination's sources list ({linked}) does not "
                         f"include source {source!r}"}
    routed, rule = routing.decision(destination, integrations)
    if not routed:
        return {**out, "verdict": NOT_ROUTED, "delivery": None, "words": f"not routed: {rule}"}
    words = ("no delivery: it would be routed now, so the destination was added or linked to "
             "the source after the event arrived (a replay sends it)")
    if pruned_after:
        words += (f", or retention removed its finished delivery ([retention] {pruned_after}) "
                  "while the event stays")
    return {**out, "verdict": NO_DELIVERY, "delivery": None, "words": words}


def _delivery_words(d: Any) -> tuple[str, str]:
    """(state, a sentence) for one delivery row."""
    attempts = f"{d.attempts} attempt" + ("" if d.attempts == 1 else "s")
    last = _last(d)
    if d.state == outbox.DELIVERED:
        status = f"HTTP {d.last_status}" if d.last_status is not None else "no status"
        return d.state, f"delivered at {iso_text(d.updated_at)} ({status}, {attempts})"
    if d.state == outbox.SKIPPED:
        reason = d.last_error or "no reason recorded"
        if reason.startswith("Filtered: "):  # the destination's filters (gateway/filters/)
            return d.state, f"skipped by the destination's filters: {reason[10:]}"
        if reason.startswith("Consent: "):  # the event's consent (gateway/consent.py)
            return d.state, f"skipped for consent: {reason[9:]}"
        if reason.startswith("TransformDropped: "):  # gateway/transforms
            return d.state, f"skipped: {reason[18:]}"
        return d.state, f"skipped by the destination's adapter: {reason}"
    if d.state == outbox.DEAD:
        return d.state, f"dead after {attempts}: {last or 'no error recorded'}"
    if d.state == outbox.RETRYING:
        return d.state, (f"retrying after {attempts}; next attempt at {iso_text(d.next_attempt_at)}"
                         f"; last error: {last or 'none recorded'}")
    if d.state == outbox.DELIVERING:
        return d.state, f"being sent now (attempt {d.attempts + 1})"
    if d.state == outbox.PENDING:
        again = f" (again, after {attempts}; last error: {last})" if d.attempts else ""
        return d.state, f"queued: first attempt due at {iso_text(d.next_attempt_at)}{again}"
    return d.state, f"state {d.state}"


def _last(d: Any) -> str | None:
    if d.last_error and d.last_status is not None \
            and not d.last_error.startswith(f"HTTP {d.last_status}"):
        return f"HTTP {d.last_status} — {d.last_error}"
    return d.last_error or (f"HTTP {d.last_status}" if d.last_status is not None else None)


def _summary(found: list[dict[str, Any]], refused: Sequence[dict[str, Any]]) -> str:
    refusals = [r for r in refused if r["reason"] != "duplicate"]
    if not found and refusals:
        newest = refusals[0]
        return (f"never stored: refused at ingest ({newest['reason']}: {newest['detail']}) at "
                f"{newest['received_at']}")
    if not found:
        return ("no stored event and no recent rejection has this messageId (never sent here, "
                "sent to another source, or removed by retention)")
    parts = []
    for event in found:
        verdicts = [d["verdict"] for d in event["destinations"]]
        counts = ", ".join(f"{verdicts.count(v)} {v}" for v in dict.fromkeys(verdicts))
        extra = f"; {len(event['duplicates'])} resend(s) dropped as duplicates" \
            if event["duplicates"] else ""
        parts.append(f"stored as event {event['id']} from {event['source']}: "
                     f"{counts or 'no destinations configured'}{extra}")
    if refusals:
        parts.append(f"{len(refusals)} refused copy(ies) at ingest, newest: "
                     f"{refusals[0]['reason']}")
    return "; ".join(parts)

