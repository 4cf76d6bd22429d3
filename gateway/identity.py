"""The identity graph: userId / anonymousId / email keys → one profile with merged traits.

Updated inside the ingest transaction (docs/design.md §2.1), one request at a time: the keys every
message of the request mentions are read in one query, the graph is changed in memory, and only
what changed is written back. Links are never undone, so merges are transitive by construction:
merging re-points every key of the absorbed profile, and no key is ever deleted.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)

from gateway.messages import Message
from gateway.store.models import identities, identity_keys, key_value

KINDS = ("userId", "anonymousId", "email")
Key = tuple[str, str]


@dataclass
class Profile:
    id: int
    traits: dict[str, Any]
    traits_updated_at: datetime | None
    first_seen: datetime
    last_seen: datetime
    dirty: bool = False  # traits changed (or merged): the whole row is written
    seen_changed: bool = False  # only first/last seen moved: a narrower UPDATE
    keys: set[Key] = field(default_factory=set)

    def seen(self, when: datetime) -> None:
        if when < self.first_seen:
            self.first_seen, self.seen_changed = when, True
        if when > self.last_seen:
            self.last_seen, self.seen_changed = when, True

    def merge_traits(self, traits: dict[str, Any], when: datetime | None) -> None:
        """Latest wins by event time; older traits only fill keys the profile lacks."""
        if not traits:
            return
        if self.traits_updated_at is None or (when is not None and when >= self.traits_updated_at):
            self.traits = {**self.traits, **traits}
            self.traits_updated_at = when
        else:
            self.traits = {**traits, **self.traits}
        self.dirty = True


@dataclass(frozen=True)
class Links:
    """What one message says about identity."""

    keys: tuple[Key, ...]
    traits: dict[str, Any]
    previous_id: str | None = None  # alias: the profile to absorb into userId's


def links_of(message: Message) -> Links:
    payload = message.payload
    keys: list[Key] = []
    if message.user_id:
        keys.append(("userId", key_value(message.user_id)))
    if message.anonymous_id:
        keys.append(("anonymousId", key_value(message.anonymous_id)))
    traits: dict[str, Any] = {}
    if message.type == "identify":
        traits = user_traits(payload)
        email = traits.get("email")
        if isinstance(email, str) and email.strip():
            keys.append(("email", key_value(email.strip().lower())))
    previous = payload.get("previousId") if message.type == "alias" else None
    return Links(tuple(keys), traits, key_value(previous) if previous else None)


def user_traits(payload: dict[str, Any]) -> dict[str, Any]:
    """identify's user traits: context.traits overlaid by top-level traits (§6.4)."""
    context_traits = (payload.get("context") or {}).get("traits")
    merged = dict(context_traits) if isinstance(context_traits, dict) else {}
    top = payload.get("traits")
    if isinstance(top, dict):
        merged.update(top)
    return merged


class IdentityGraph:
    """The identity changes of one transaction.

    Profiles created in this transaction get temporary negative ids until `_flush` inserts them
    all at once; every other write is one executemany, so a 100-message batch costs a handful
    of statements, not hundreds.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.owner: dict[Key, int] = {}  # key → profile id (real, or temporary when < 0)
        self.profiles: dict[int, Profile] = {}
        self.new_keys: list[Key] = []
        self.merged: list[tuple[int, int]] = []  # (absorbed real id, surviving real id)
        self._next_temporary = -1

    def apply(self, messages: Iterable[Message]) -> None:
        """Record every message's links, then write the changes."""
        batch = [(m, links_of(m)) for m in messages]
        wanted: set[Key] = set()
        for _, links in batch:
            wanted.update(links.keys)
            if links.previous_id:
                wanted.update((kind, links.previous_id) for kind in ("userId", "anonymousId"))
        if not wanted:
            return
        if self.connection.dialect.name == "postgresql":
            self._lock_keys(wanted)
        self._load(wanted)
        for message, links in batch:
            self._observe(message, links)
        self._flush()

    def _lock_keys(self, keys: set[Key]) -> None:
        """Serialise transactions that touch the same keys (PostgreSQL; SQLite has one writer).

        Without this, two requests introducing the same new userId both insert it and one fails
        on the unique constraint. Locks are taken in sorted order, so they cannot deadlock.
        """
        hashes = sorted({_key_hash(key) for key in keys})
        self.connection.execute(
            text("SELECT pg_advisory_xact_lock(h) FROM "
                 "(SELECT unnest(CAST(:hashes AS bigint[])) AS h ORDER BY 1) AS ordered"),
            {"hashes": hashes})

    def _load(self, keys: set[Key]) -> None:
        by_kind: dict[str, list[str]] = {}
        for kind, value in keys:
            by_kind.setdefault(kind, []).append(value)
        statement = _load_statement(tuple(kind for kind in KINDS if kind in by_kind))
        for row in self.connection.execute(statement, by_kind):
            self.owner[(row.kind, row.value)] = row.id
            if row.id not in self.profiles:
                self.profiles[row.id] = Profile(row.id, row.traits, row.traits_updated_at,
                                                row.first_seen, row.last_seen)

    def _observe(self, message: Message, links: Links) -> None:
        keys = list(links.keys)
        absorbed: Profile | None = None
        if links.previous_id:
            absorbed = self._profile_of(("userId", links.previous_id)) or self._profile_of(
                ("anonymousId", links.previous_id))
            if absorbed is None:
                # an unknown previousId is most often the visitor's earlier anonymousId
                keys.append(("anonymousId", links.previous_id))
        owners = {p.id: p for p in (self._profile_of(k) for k in keys) if p is not None}
        if absorbed is not None:
            owners.setdefault(absorbed.id, absorbed)
        if not owners:
            profile = self._create(message.timestamp)
        else:
            # alias: userId's stored profile absorbs previousId's. Otherwise the oldest stored
            # row survives (a row made in this transaction only when none is stored yet).
            target = self._profile_of(("userId", key_value(message.user_id or ""))
                                      ) if absorbed else None
            if target is None or target.id < 0:
                target = owners[min(owners, key=_age_order)]
            profile = target
            for other in owners.values():
                if other.id != profile.id:
                    self._merge(other, into=profile)
        for key in keys:
            if key not in self.owner:
                self.owner[key] = profile.id
                self.new_keys.append(key)
        profile.seen(message.timestamp)
        profile.merge_traits(links.traits, message.timestamp)

    def _profile_of(self, key: Key) -> Profile | None:
        profile_id = self.owner.get(key)
        return None if profile_id is None else self.profiles[profile_id]

    def _create(self, when: datetime) -> Profile:
        profile = Profile(self._next_temporary, {}, None, when, when, dirty=True)
        self._next_temporary -= 1
        self.profiles[profile.id] = profile
        return profile

    def _merge(self, loser: Profile, into: Profile) -> None:
        """Move every key of `loser` to `into`; newer traits win; keep the widest seen range."""
        if loser.id > 0:
            self.merged.append((loser.id, into.id))  # `into` is real too: see _age_order
        for key, owner in self.owner.items():
            if owner == loser.id:
                self.owner[key] = into.id
        older, newer = sorted((loser, into), key=_traits_age)
        into.traits = {**older.traits, **newer.traits}
        into.traits_updated_at = newer.traits_updated_at or older.traits_updated_at
        into.seen(loser.first_seen)
        into.seen(loser.last_seen)
        into.dirty = True
        del self.profiles[loser.id]

    def _flush(self) -> None:
        real_id = self._insert_new_profiles()
        if self.merged:
            self.connection.execute(
                _MOVE_KEYS, [{"b_loser": loser, "b_into": into} for loser, into in self.merged])
            self.connection.execute(
                _DELETE_PROFILE, [{"b_loser": loser} for loser, _ in self.merged])
        if self.new_keys:
            self.connection.execute(_INSERT_KEYS, [
                {"kind": kind, "value": value, "identity_id": real_id(self.owner[(kind, value)])}
                for kind, value in self.new_keys])
        stored = [p for p in self.profiles.values() if p.id > 0]
        changed = [p for p in stored if p.dirty]
        seen_only = [p for p in stored if p.seen_changed and not p.dirty]
        if seen_only:
            self.connection.execute(
                _UPDATE_SEEN, [{"b_id": p.id, "b_first": p.first_seen, "b_last": p.last_seen}
                 for p in seen_only])
        if changed:
            self.connection.execute(
                _UPDATE_PROFILE,
                [{"b_id": p.id, "b_traits": p.traits, "b_updated": p.traits_updated_at,
                  "b_first": p.first_seen, "b_last": p.last_seen} for p in changed])

    def _insert_new_profiles(self) -> Callable[[int], int]:
        """Insert the profiles made in this transaction; return temporary id → stored id."""
        new = [p for p in self.profiles.values() if p.id < 0]
        assigned: dict[int, int] = {}
        if new:
            rows = self.connection.execute(
                _INSERT_PROFILES, [{"traits": p.traits, "traits_updated_at": p.traits_updated_at,
                  "first_seen": p.first_seen, "last_seen": p.last_seen} for p in new]).all()
            assigned = {p.id: row.id for p, row in zip(new, rows, strict=True)}
        return lambda profile_id: assigned.get(profile_id, profile_id)


def keys_condition(kinds: Iterable[str]) -> ColumnElement[bool]:
    """`(kind = 'userId' AND value IN (…)) OR …`, one term per kind, the values an expanding
    parameter named after the kind: both databases answer it from the (kind, value) unique index
    (SQLite: MULTI-INDEX OR; PostgreSQL: a BitmapOr of index scans), so a lookup costs the same at
    a hundred profiles and at millions. A row-value `(kind, value) IN (VALUES …)` does not: SQLite
    reads the whole table for it."""
    return or_(*(and_(identity_keys.c.kind == kind,
                      identity_keys.c.value.in_(bindparam(kind, expanding=True)))
                 for kind in kinds))


@functools.cache
def _load_statement(kinds: tuple[str, ...]) -> Select:
    """The profiles owning any of the keys, locked (PostgreSQL) for this transaction. One
    statement per combination of kinds (seven at most), built once: building SQL per request
    cost more CPU than running it."""
    return (select(identity_keys.c.kind, identity_keys.c.value, identities)
            .join(identities, identities.c.id == identity_keys.c.identity_id)
            .where(keys_condition(kinds))
            .order_by(identity_keys.c.identity_id).with_for_update(of=identities))


# The graph's writes, built once per process (SQLAlchemy then reuses their compiled form).
_MOVE_KEYS = (update(identity_keys).where(identity_keys.c.identity_id == bindparam("b_loser"))
              .values(identity_id=bindparam("b_into")))
_DELETE_PROFILE = delete(identities).where(identities.c.id == bindparam("b_loser"))
_INSERT_KEYS = insert(identity_keys)
_UPDATE_SEEN = (update(identities).where(identities.c.id == bindparam("b_id"))
                .values(first_seen=bindparam("b_first"), last_seen=bindparam("b_last")))
_UPDATE_PROFILE = (update(identities).where(identities.c.id == bindparam("b_id")).values(
    traits=bindparam("b_traits"), traits_updated_at=bindparam("b_updated"),
    first_seen=bindparam("b_first"), last_seen=bindparam("b_last")))
_INSERT_PROFILES = insert(identities).returning(identities.c.id, sort_by_parameter_order=True)


def _age_order(profile_id: int) -> tuple[bool, int]:
    """Stored profiles (positive ids, oldest first) before ones made in this transaction."""
    return (profile_id < 0, abs(profile_id))


def _key_hash(key: Key) -> int:
    digest = hashlib.blake2b(f"{key[0]}\0{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _traits_age(profile: Profile) -> tuple[bool, datetime | None]:
    return (profile.traits_updated_at is not None, profile.traits_updated_at)


def lookup(connection: Connection, kind: str, value: str) -> dict[str, Any] | None:
    """The merged profile that owns a key, with all its keys (for the admin API and tests)."""
    if kind == "email":
        value = value.strip().lower()
    value = key_value(value)
    profile_id = connection.execute(
        select(identity_keys.c.identity_id)
        .where(identity_keys.c.kind == kind, identity_keys.c.value == value)
    ).scalar_one_or_none()
    if profile_id is None:
        return None
    row = connection.execute(select(identities).where(identities.c.id == profile_id)).one()
    keys = connection.execute(
        select(identity_keys.c.kind, identity_keys.c.value)
        .where(identity_keys.c.identity_id == profile_id).order_by(identity_keys.c.id)
    ).all()
    return {
        "id": row.id,
        "traits": row.traits,
        "first_seen": row.first_seen,
        "last_seen": row.last_seen,
        "keys": [{"kind": k.kind, "value": k.value} for k in keys],
    }
