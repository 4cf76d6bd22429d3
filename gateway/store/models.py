"""The tables (docs/design.md §5), as SQLAlchemy Core metadata shared by the app and Alembic.

Core, not the ORM: ingest writes hundreds of rows per request and the ORM's unit of work would
cost more than the inserts themselves.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zone type)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JSONText(TypeDecorator):
    """JSON stored as text, encoded with orjson (several times faster than the stdlib)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, bytes | str):  # already encoded by the caller
            return value.decode() if isinstance(value, bytes) else value
        return orjson.dumps(value).decode()

    def process_result_value(self, value: str | None, dialect: Any) -> Any:
        return None if value is None else orjson.loads(value)

# The message types an events row holds (`type`): the one list ingest accepts, filters name and
# the console offers. Here, at the bottom of the imports, so every side can read it.
MESSAGE_TYPES = ("identify", "track", "page", "screen", "group", "alias")

events = Table(
    "events", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("source", String(200), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("type", String(20), nullable=False),
    Column("event", String(500)),
    Column("user_id", String(500)),
    Column("anonymous_id", String(500)),
    Column("timestamp", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("payload", JSONText(), nullable=False),
    UniqueConstraint("source", "message_id"),
    Index(None, "user_id", "id"),
    Index(None, "anonymous_id", "id"),
    # the admin lists (newest first under one filter; migration 0003)
    Index(None, "type", "id"),
    Index(None, "event", "id"),
    Index(None, "received_at"),
)

# PostgreSQL only (migration 0013): the (source, messageId) of every stored event, the one
# unique index deduplication needs once `events` is partitioned by time (migration 0014: a
# partitioned table's unique indexes must include its time column). Ingest claims a key here
# before it stores the event; retention deletes the keys of the weeks it dropped. SQLite keeps
# UNIQUE (source, message_id) on `events` and has no such table.
message_ids = Table(
    "message_ids", metadata,
    Column("source", String(200), primary_key=True),
    Column("message_id", String(255), primary_key=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Index(None, "received_at"),
)

deliveries = Table(
    "deliveries", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # NULL for a regulation's deletion request (regulation_id says which; migration 0007)
    Column("event_id", Id, ForeignKey("events.id", ondelete="CASCADE")),
    Column("destination", String(200), nullable=False),
    Column("user_key", String(500), nullable=False),
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_expires_at", UTCDateTime()),
    Column("first_attempt_at", UTCDateTime()),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("replay_id", String(64)),
    Column("regulation_id", Id),  # a user deletion sent to the destination (gateway.regulations)
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # the per-user barrier: oldest unfinished delivery of one (destination, user key)
    Index(None, "destination", "user_key", "state", "id"),
    # the worker's "what is due" scan, per destination (migration 0008)
    Index(None, "destination", "state", "next_attempt_at"),
    Index(None, "event_id"),
    # the admin lists (newest first by state or by destination; migration 0003)
    Index(None, "state", "id"),
    Index(None, "destination", "id"),
    # retention: the oldest delivered / dead rows first (migration 0006)
    Index(None, "state", "updated_at"),
    Index(None, "regulation_id"),
)

delivery_attempts = Table(
    "delivery_attempts", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status", Integer),
    Column("error_class", String(100)),
    Column("excerpt", Text),
    Index(None, "delivery_id", "number"),
    Index(None, "started_at"),  # retention (migration 0006)
)

identities = Table(
    "identities", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("traits", JSONText(), nullable=False),
    Column("traits_updated_at", UTCDateTime()),
    Column("first_seen", UTCDateTime(), nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
)

identity_keys = Table(
    "identity_keys", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", String(20), nullable=False),  # userId | anonymousId | email
    Column("value", String(500), nullable=False),
    Column("identity_id", Id, ForeignKey("identities.id", ondelete="CASCADE"), nullable=False),
    # when and by which message the key joined the graph (NULL: linked before migration 0010)
    Column("linked_at", UTCDateTime()),
    Column("linked_by", String(255)),  # the messageId
    Column("linked_source", String(200)),
    UniqueConstraint("kind", "value"),
    Index(None, "identity_id"),
)

# Merges the identity graph refused (gateway/identity/graph.py: blocked by a limit, or an alias
# of two identified profiles): the profile the message was attached to, the key it did not move and
# the profile that holds it. One row per (profile, key): a key refused again is not re-recorded.
identity_conflicts = Table(
    "identity_conflicts", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("identity_id", Id, ForeignKey("identities.id", ondelete="CASCADE"), nullable=False),
    Column("other_identity_id", Id),  # NULL: the key was new, the profile was full
    Column("kind", String(20), nullable=False),
    Column("value", String(500), nullable=False),
    Column("reason", String(100), nullable=False),  # limit | alias_identified | unlinked
    Column("message_id", String(255)),  # NULL: an operator's unlink
    Column("source", String(200)),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("identity_id", "kind", "value"),
    Index(None, "other_identity_id"),
)

# One row per live delivery worker (role "worker") and per HTTP process (role "http", written by
# /health's write probe): liveness any process on any machine can read.
heartbeats = Table(
    "heartbeats", metadata,
    Column("id", String(200), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("beat_at", UTCDateTime(), nullable=False),
    Index(None, "role", "beat_at"),
)

# Recent messages the tracking API refused, and resent messageIds it dropped as duplicates:
# the trace `gateway explain` reads. Bounded by count (gateway/rejections.py); migration 0005.
rejections = Table(
    "rejections", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(200)),  # None: refused before the write key was known
    Column("message_id", String(255)),
    Column("message_type", String(20)),
    Column("reason", String(100), nullable=False),  # the error code the caller got
    Column("detail", String(500), nullable=False),
    Column("duplicate_of", Id),  # the stored event a dropped duplicate repeated (no FK: retention)
    Index(None, "message_id", "id"),
)

# Tracking-plan violations, counted per hour, source, event and rule (gateway/plans/record.py
# aggregates them and keeps the table to its newest rows); migration 0012. `key` is a hash of
# (hour, source, type, event, rule): the one unique index, short whatever the names' lengths.
violations = Table(
    "violations", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("hour", UTCDateTime(), nullable=False),
    Column("source", String(200), nullable=False),
    Column("message_type", String(20), nullable=False),
    Column("event", String(200)),  # the track event's (page's, screen's) name
    Column("rule", String(300), nullable=False),  # schemaPath (+ the property it names)
    Column("violation_type", String(40), nullable=False),  # Required-Missing, …
    Column("message", String(300), nullable=False),
    Column("example_message_id", String(255)),
    Column("count", BigInteger, nullable=False),
    Column("last_seen", UTCDateTime(), nullable=False),
    Index(None, "hour"),
)

# Regulations (gateway/regulations): what was asked and what came of it. Never the
# subject's keys: `subject_kind` says which kind of key was given, not its value.
regulations = Table(
    "regulations", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("type", String(30), nullable=False),
    Column("status", String(20), nullable=False),
    Column("subject_kind", String(20), nullable=False),
    Column("counts", JSONText(), nullable=False),  # rows removed / keys (un)suppressed per table
    Column("destinations", JSONText()),  # per destination, written once the deletion is finished
    Column("created_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
)

# The keys a deletion request needs at the destinations, kept only until every destination has
# answered (then erased: the regulation row alone remains).
regulation_subjects = Table(
    "regulation_subjects", metadata,
    Column("regulation_id", Id, primary_key=True),
    Column("payload", JSONText(), nullable=False),
)

# Suppressed identity keys as SHA-256 of "kind\0value": ingest hashes a message's keys and asks
# for them in one indexed lookup; the keys themselves are not kept.
suppressed_keys = Table(
    "suppressed_keys", metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("regulation_id", Id, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Index(None, "regulation_id"),
)

# Console sign-in sessions (gateway/console/sessions.py, migration 0009). The cookie holds a
# random id and this table only its keyed hash, so every process and node accepts a session and
# a sign-out ends it everywhere. `token_fingerprint` (keyed) ties it to the admin token it was
# opened with: rotating the token signs everyone out.
console_sessions = Table(
    "console_sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("csrf", String(64), nullable=False),
    Column("token_fingerprint", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Index(None, "created_at"),
)

# Keys the gateway generates for itself on first use, shared by every process through the
# database; never derived from the config (a key derived from the admin token made every
# console cookie an offline oracle for it).
gateway_secrets = Table(
    "gateway_secrets", metadata,
    Column("name", String(100), primary_key=True),
    Column("value", String(200), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)


# --- values as the 500-character key and index columns hold them (identity, ingest, reads) ---

MAX_KEY_LENGTH = 500  # identity_keys.value, events.event/user_id/anonymous_id


def key_value(value: str) -> str:
    """A key as stored: up to MAX_KEY_LENGTH characters as it is; a longer one (a 600-character
    userId, a 1000-character email) as its prefix and a SHA-256 of the whole, so it still fits
    the column on every database and two long ids sharing a prefix stay two keys."""
    if len(value) <= MAX_KEY_LENGTH:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return value[:MAX_KEY_LENGTH - len(digest) - 1] + "#" + digest


def clip_indexed(value: str | None) -> str | None:
    """Index columns hold 500 characters: a longer value is stored as its prefix and a hash of
    the whole (key_value), so it finds exactly its own events; the payload keeps the
    full value. The admin API's filters go through this too."""
    return None if value is None else key_value(value)
