"""Profiles read and split for the admin API, the CLI and the console: the profile that owns a
key, one profile with its keys and conflicts, and `unlink` (one key onto a profile of its own)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from gateway.config.identity import KINDS
from gateway.identity.graph import MAX_CONFLICTS_SHOWN, UNLINKED
from gateway.identity.statements import key_hash
from gateway.store.models import (
    identities,
    identity_conflicts,
    identity_keys,
    key_value,
)


def lookup(connection: Connection, kind: str, value: str) -> dict[str, Any] | None:
    """The merged profile that owns a key, with all its keys (for the admin API and tests)."""
    if kind == "email":
        value = value.strip().lower()
    value = key_value(value)
    profile_id = connection.execute(
        select(identity_keys.c.identity_id)
        .where(identity_keys.c.kind == kind, identity_keys.c.value == value)
    ).scalar_one_or_none()
    return None if profile_id is None else profile(connection, profile_id)


def profile(connection: Connection, profile_id: int) -> dict[str, Any] | None:
    """A profile by id: its traits, every key with when and by which message it was linked,
    and the merges refused around it (newest first, at most MAX_CONFLICTS_SHOWN)."""
    row = connection.execute(select(identities).where(identities.c.id == profile_id)).first()
    if row is None:
        return None
    keys = connection.execute(
        select(identity_keys.c.kind, identity_keys.c.value, identity_keys.c.linked_at,
               identity_keys.c.linked_by, identity_keys.c.linked_source)
        .where(identity_keys.c.identity_id == profile_id).order_by(identity_keys.c.id)
    ).all()
    refused = connection.execute(
        select(identity_conflicts)
        .where(or_(identity_conflicts.c.identity_id == profile_id,
                   identity_conflicts.c.other_identity_id == profile_id))
        .order_by(identity_conflicts.c.id.desc()).limit(MAX_CONFLICTS_SHOWN)).all()
    return {
        "id": row.id,
        "traits": row.traits,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "keys": [{"kind": k.kind, "value": k.value, "linked_at": k.linked_at,
                  "linked_by": k.linked_by, "source": k.linked_source} for k in keys],
        "conflicts": [_conflict(c, profile_id) for c in refused],
    }


def _conflict(row: Any, profile_id: int) -> dict[str, Any]:
    """One refused merge as a profile shows it: `held_here` says whether this profile holds
    the key (another profile's message tried to take it) or its message was refused it."""
    held_here = row.other_identity_id == profile_id and row.identity_id != profile_id
    return {"key": {"kind": row.kind, "value": row.value}, "reason": row.reason,
            "message_id": row.message_id, "source": row.source, "at": row.created_at,
            "other_profile": row.identity_id if held_here else row.other_identity_id,
            "held_here": held_here}


class UnlinkError(Exception):
    """An unlink the caller got wrong; `status` is the HTTP answer (404, 409 or 400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def unlink(connection: Connection, profile_id: int, kind: Any, value: Any) -> dict[str, Any]:
    """Split one key off a profile onto a new profile of its own (in the caller's writing
    transaction): the key's later messages link from there, and the profile keeps the rest.
    The split is kept as an `unlinked` conflict on the new profile. A later message naming the
    key beside one of the old profile's keys links them again, as any message would, unless
    the limits refuse it."""
    if kind not in KINDS:
        raise UnlinkError(400, f"kind: one of {', '.join(KINDS)}")
    if not isinstance(value, str) or not value.strip() or len(value) > 1000:
        raise UnlinkError(400, "value: a non-empty string of at most 1000 characters")
    value = value.strip()
    value = key_value(value.lower() if kind == "email" else value)
    if connection.dialect.name == "postgresql":  # as ingest: one writer per key and profile
        connection.execute(text("SELECT pg_advisory_xact_lock(:h)"),
                           {"h": key_hash((kind, value))})
        connection.execute(select(identities.c.id).where(identities.c.id == profile_id)
                           .with_for_update())
    key = connection.execute(select(identity_keys.c.id, identity_keys.c.identity_id).where(
        identity_keys.c.kind == kind, identity_keys.c.value == value)).first()
    if key is None or key.identity_id != profile_id:
        raise UnlinkError(404, f"profile {profile_id} holds no {kind} {value[:60]!r}")
    held = connection.execute(select(func.count()).select_from(identity_keys).where(
        identity_keys.c.identity_id == profile_id)).scalar_one()
    if held < 2:
        raise UnlinkError(409, f"profile {profile_id} holds only this key: nothing to split")
    now = datetime.now(UTC)
    new_id = connection.execute(insert(identities).values(
        traits={}, traits_updated_at=None, first_seen=now, last_seen=now)
        .returning(identities.c.id)).scalar_one()
    connection.execute(update(identity_keys).where(identity_keys.c.id == key.id).values(
        identity_id=new_id, linked_at=now, linked_by=None, linked_source=None))
    connection.execute(insert(identity_conflicts).values(
        identity_id=new_id, other_identity_id=profile_id, kind=kind, value=value,
        reason=UNLINKED, message_id=None, source=None, created_at=now))
    return {"key": {"kind": kind, "value": value}, "from_profile": profile_id,
            "to_profile": new_id}
