"""Deletion: remove every stored row of a profile, and ask each destination to delete the person.

The rows go in the regulation's transaction (events, deliveries — pending ones are cancelled by
going — their attempts, identity keys and the profile), so replay can no longer send them. The
request to each destination is an ordinary delivery row carrying `regulation_id` instead of an
`event_id`: the worker claims, retries, records attempts and dead-letters it like any other,
and asks the adapter for the deletion (`Adapter.delete_users`) instead of a transform. The keys
it needs wait in `regulation_subjects` and are erased once every destination has answered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, tuple_

from adapters import DESTINATION_TYPES
from adapters.base import Adapter
from gateway.config import Config
from gateway.regulations.keys import SubjectProfile
from gateway.store import outbox
from gateway.store.models import (
    deliveries,
    delivery_attempts,
    events,
    identities,
    identity_conflicts,
    identity_keys,
    message_ids,
    regulation_subjects,
)

# the longest one request of a send may take once started (delivery/client.py: connect + read)
SEND_MARGIN = timedelta(seconds=35)


def in_flight_until(connection: Connection, profile: SubjectProfile) -> datetime | None:
    """When the sends of the profile's events that a worker holds right now are surely over
    (their latest lease, plus one request's time), or None. delete_profile removes those rows
    but not the sends: the deletion requests wait until then, so no event of the person
    reaches a destination after its deletion and recreates the person there."""
    users, anonymous = profile.values("userId"), profile.values("anonymousId")
    conditions = ([events.c.user_id.in_(users)] if users else []) + (
        [events.c.anonymous_id.in_(anonymous)] if anonymous else [])
    if not conditions:
        return None
    lease = connection.execute(select(func.max(deliveries.c.lease_expires_at)).where(
        deliveries.c.event_id.in_(select(events.c.id).where(or_(*conditions))),
        deliveries.c.state == outbox.DELIVERING)).scalar()
    return None if lease is None else lease + SEND_MARGIN


COUNTED = ("events", "deliveries", "deliveries_cancelled", "delivery_attempts",
           "identity_keys", "identity_conflicts", "identities")


def _conflicts_of(profile: SubjectProfile) -> Any:
    """The refused merges that name the profile on either side."""
    return or_(identity_conflicts.c.identity_id.in_(profile.ids),
               identity_conflicts.c.other_identity_id.in_(profile.ids))


def _event_conditions(profile: SubjectProfile) -> list[Any]:
    """The events of the profile: by any of its userIds or anonymousIds."""
    users, anonymous = profile.values("userId"), profile.values("anonymousId")
    return ([events.c.user_id.in_(users)] if users else []) + (
        [events.c.anonymous_id.in_(anonymous)] if anonymous else [])


def count_profile(connection: Connection, profile: SubjectProfile) -> dict[str, int]:
    """What `delete_profile` would delete, per table, without deleting (a dry run)."""
    counts = dict.fromkeys(COUNTED, 0)
    conditions = _event_conditions(profile)
    if conditions:
        event_ids = select(events.c.id).where(or_(*conditions)).scalar_subquery()
        delivery_ids = select(deliveries.c.id).where(
            deliveries.c.event_id.in_(event_ids)).scalar_subquery()
        counts["events"] = _count(connection, events, or_(*conditions))
        counts["deliveries"] = _count(connection, deliveries,
                                      deliveries.c.event_id.in_(event_ids))
        counts["deliveries_cancelled"] = _count(
            connection, deliveries, deliveries.c.event_id.in_(event_ids),
            deliveries.c.state.in_(outbox.UNFINISHED))
        counts["delivery_attempts"] = _count(connection, delivery_attempts,
                                             delivery_attempts.c.delivery_id.in_(delivery_ids))
    if profile.ids:
        counts["identity_keys"] = _count(connection, identity_keys,
                                         identity_keys.c.identity_id.in_(profile.ids))
        counts["identity_conflicts"] = _count(connection, identity_conflicts,
                                              _conflicts_of(profile))
        counts["identities"] = _count(connection, identities, identities.c.id.in_(profile.ids))
    return counts


def _count(connection: Connection, table: Any, *where: Any) -> int:
    return connection.execute(select(func.count()).select_from(table).where(*where)).scalar() \
        or 0


def delete_profile(connection: Connection, profile: SubjectProfile) -> dict[str, int]:
    """Delete every row of the profile; returns the count per table (and how many of the
    deliveries were still unfinished: cancelled)."""
    conditions = _event_conditions(profile)
    counts = dict.fromkeys(COUNTED, 0)
    if conditions:
        event_ids = select(events.c.id).where(or_(*conditions)).scalar_subquery()
        delivery_ids = select(deliveries.c.id).where(
            deliveries.c.event_id.in_(event_ids)).scalar_subquery()
        counts["deliveries_cancelled"] = len(connection.execute(
            select(deliveries.c.id).where(deliveries.c.event_id.in_(event_ids),
                                          deliveries.c.state.in_(outbox.UNFINISHED))).all())
        counts["delivery_attempts"] = _deleted(connection, delete(delivery_attempts).where(
            delivery_attempts.c.delivery_id.in_(delivery_ids)))
        counts["deliveries"] = _deleted(connection, delete(deliveries).where(
            deliveries.c.event_id.in_(event_ids)))
        if connection.dialect.name == "postgresql":  # their deduplication keys too (0013)
            connection.execute(delete(message_ids).where(
                tuple_(message_ids.c.source, message_ids.c.message_id).in_(
                    select(events.c.source, events.c.message_id).where(or_(*conditions)))))
        counts["events"] = _deleted(connection, delete(events).where(or_(*conditions)))
    if profile.ids:
        counts["identity_keys"] = _deleted(connection, delete(identity_keys).where(
            identity_keys.c.identity_id.in_(profile.ids)))
        # refused merges name the person's keys, on their profile or on the other one
        counts["identity_conflicts"] = _deleted(connection, delete(identity_conflicts).where(
            _conflicts_of(profile)))
        counts["identities"] = _deleted(connection, delete(identities).where(
            identities.c.id.in_(profile.ids)))
    return counts


def queue_requests(connection: Connection, config: Config, regulation_id: int,
                   profile: SubjectProfile, not_before: datetime | None = None) -> list[str]:
    """One deletion delivery per enabled destination (each adapter decides whether it can
    delete: those that cannot end `skipped`, reported `unsupported`). Returns their names."""
    names = [d.name for d in config.destinations if d.enabled]
    if not names:
        return []
    connection.execute(insert(regulation_subjects).values(
        regulation_id=regulation_id, payload=subject_payload(profile)))
    outbox.queue_deletion(connection, regulation_id, names, profile.user_key, not_before)
    return names


def destinations_asked(config: Config) -> dict[str, dict[str, str]]:
    """Each destination `queue_requests` would ask, by name: its type and whether its adapter
    has a deletion API (`requested`) or will report the deletion `unsupported`."""
    return {d.name: {"type": d.type, "deletion": "requested" if deletes(DESTINATION_TYPES[d.type])
                     else "unsupported"} for d in config.destinations if d.enabled}


def deletes(adapter: Adapter) -> bool:
    """Does the adapter declare a deletion API (else its `delete_users` is Unsupported)?"""
    return adapter.deletes


def subject_payload(profile: SubjectProfile) -> dict[str, list[str]]:
    return {"userIds": profile.values("userId"), "anonymousIds": profile.values("anonymousId"),
            "emails": profile.values("email")}


def _deleted(connection: Connection, statement: Any) -> int:
    return connection.execute(statement).rowcount or 0
