"""The identity graph: userId / anonymousId / email keys → one profile with merged traits.

Updated inside the ingest transaction (docs/design.md §2.1), one request at a time: the keys every
message of the request mentions are read in one query (keys and profile ids only), the graph is
changed in memory, and only what changed is written back. A profile's row (its JSON traits) is
read only when the batch changes its traits or merges it, and key counts only when a profile
would grow: a track of a known user costs one key read and one last-seen update.

Guardrails (README "Identity"): a blocked value (`undefined`, `null`, …) never becomes a key; a
merge or a new key that would give a profile more keys of a kind than `[identity] limits`
allows (one userId by default: two identified people are never merged) is refused — the
message's event is stored and routed as usual, attached to the profile of its own userId (else
anonymousId), the key stays where it was, and the refusal is kept in `identity_conflicts` and
counted. Every key records when, by which message and from which source it was linked.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from gateway import metrics
from gateway.config.identity import DEFAULT_SETTINGS, KINDS, IdentitySettings
from gateway.messages import Message
from gateway.store.models import (
    UTCDateTime,
    identities,
    identity_conflicts,
    identity_keys,
    key_value,
)

Key = tuple[str, str]
LIMIT = "limit"  # a refused merge's reason: the profile would hold too many keys of a kind
IDENTIFIED = "alias_identified"  # …or an alias of two profiles that both hold a userId
UNLINKED = "unlinked"  # not a refusal: an operator split the key off (`unlink`)
MAX_CONFLICTS_SHOWN = 100


@dataclass
class Profile:
    """A profile this transaction touches. `loaded`: its row was read (traits, seen range);
    otherwise first/last seen are only this batch's range, applied by a min/max UPDATE."""

    id: int
    traits: dict[str, Any]
    traits_updated_at: datetime | None
    first_seen: datetime | None
    last_seen: datetime | None
    loaded: bool = True
    dirty: bool = False  # traits changed (or merged): the whole row is written
    seen_changed: bool = False  # only first/last seen moved: a narrower UPDATE

    def seen(self, when: datetime | None) -> None:
        if when is None:
            return
        if self.first_seen is None or when < self.first_seen:
            self.first_seen, self.seen_changed = when, True
        if self.last_seen is None or when > self.last_seen:
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

    keys: tuple[Key, ...]  # userId, anonymousId, email: in that order (the message's home first)
    traits: dict[str, Any]
    previous_id: str | None = None  # alias: the profile to absorb into userId's
    blocked: tuple[str, ...] = ()  # kinds whose value was a blocked value (not a key)


def links_of(message: Message, settings: IdentitySettings = DEFAULT_SETTINGS) -> Links:
    """The message's keys, its user traits and an alias's previousId; blocked values (trimmed,
    case-insensitive: `undefined`, `null`, …) are left out."""
    payload = message.payload
    keys: list[Key] = []
    blocked: list[str] = []
    for kind, value in (("userId", message.user_id), ("anonymousId", message.anonymous_id)):
        if value:
            if settings.is_blocked(value):
                blocked.append(kind)
            else:
                keys.append((kind, key_value(value)))
    traits: dict[str, Any] = {}
    if message.type == "identify":
        traits = user_traits(payload)
        email = traits.get("email")
        if isinstance(email, str) and email.strip():
            if settings.is_blocked(email):
                blocked.append("email")
            else:
                keys.append(("email", key_value(email.strip().lower())))
    previous = payload.get("previousId") if message.type == "alias" else None
    if previous and settings.is_blocked(str(previous)):
        blocked.append("previousId")
        previous = None
    return Links(tuple(keys), traits, key_value(str(previous)) if previous else None,
                 tuple(blocked))


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

    def __init__(self, connection: Connection,
                 settings: IdentitySettings = DEFAULT_SETTINGS) -> None:
        self.connection = connection
        self.settings = settings
        self.owner: dict[Key, int] = {}  # key → profile id (real, or temporary when < 0)
        self.profiles: dict[int, Profile] = {}
        self.counts: dict[int, dict[str, int]] = {}  # keys per kind, of profiles that may grow
        self.new_keys: list[tuple[Key, str, str | None]] = []  # key, messageId, source
        self.merged: list[tuple[int, int]] = []  # (absorbed real id, surviving real id)
        self.moved: dict[int, int] = {}  # absorbed id → surviving id (temporary ids too)
        self.conflicts: dict[tuple[int, Key], dict[str, Any]] = {}
        self.refused: dict[tuple[str, str], int] = {}  # (key kind, reason) → merges refused
        self.blocked: dict[str, int] = {}  # kind → blocked values left out
        self.now = datetime.now(UTC)
        self._next_temporary = -1

    def apply(self, messages: Iterable[Message],
              sources: Sequence[str | None] | None = None) -> None:
        """Record every message's links, then write the changes. `sources[i]` is the source of
        the i-th message (kept with the keys it links)."""
        batch = [(m, links_of(m, self.settings), sources[i] if sources else None)
                 for i, m in enumerate(messages)]
        wanted: set[Key] = set()
        for _, links, _ in batch:
            wanted.update(links.keys)
            if links.previous_id:
                wanted.update((kind, links.previous_id) for kind in ("userId", "anonymousId"))
            for kind in links.blocked:
                self.blocked[kind] = self.blocked.get(kind, 0) + 1
        if wanted:
            if self.connection.dialect.name == "postgresql":
                self._lock_keys(wanted)
            self._load(wanted)
            self._prepare(batch)
            for message, links, source in batch:
                if links.keys or links.previous_id:
                    self._observe(message, links, source)
            self._flush()
        self._count()

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
        """Keys first: who owns each key (the profile rows locked on PostgreSQL, not read)."""
        by_kind: dict[str, list[str]] = {}
        for kind, value in keys:
            by_kind.setdefault(kind, []).append(value)
        statement = _load_statement(tuple(kind for kind in KINDS if kind in by_kind))
        for row in self.connection.execute(statement, by_kind):
            self.owner[(row.kind, row.value)] = row.id
            if row.id not in self.profiles:
                self.profiles[row.id] = Profile(row.id, {}, None, None, None, loaded=False)

    def _prepare(self, batch: list[tuple[Message, Links, str | None]]) -> None:
        """Read, in one query each, the rows of the stored profiles whose traits this batch
        changes or that it may merge, and the key counts of those that may grow."""
        rows: set[int] = set()
        counts: set[int] = set()
        for _, links, _ in batch:
            keys = list(links.keys)
            if links.previous_id:
                keys += [("userId", links.previous_id), ("anonymousId", links.previous_id)]
            owners = {self.owner.get(key) for key in keys}
            stored = {owner for owner in owners if owner is not None}
            if len(owners) > 1:
                counts |= stored
            if links.traits or len(stored) > 1:
                rows |= stored
        if counts:
            self._read_counts(sorted(counts))
        if rows:
            self._read_rows(sorted(rows))

    def _read_counts(self, profile_ids: list[int]) -> None:
        for profile_id in profile_ids:
            self.counts[profile_id] = dict.fromkeys(KINDS, 0)
        for row in self.connection.execute(_COUNT_KEYS, {"ids": profile_ids}):
            self.counts[row.identity_id][row.kind] = row.keys

    def _read_rows(self, profile_ids: list[int]) -> None:
        for row in self.connection.execute(_READ_PROFILES, {"ids": profile_ids}):
            profile = self.profiles[row.id]
            first, last = profile.first_seen, profile.last_seen
            profile.traits, profile.traits_updated_at = row.traits, row.traits_updated_at
            profile.first_seen, profile.last_seen = row.first_seen, row.last_seen
            profile.loaded = True
            profile.seen(first)
            profile.seen(last)

    def _counts_of(self, profile_id: int) -> dict[str, int]:
        if profile_id not in self.counts:
            self._read_counts([profile_id])
        return self.counts[profile_id]

    def _row(self, profile: Profile) -> Profile:
        if not profile.loaded:
            self._read_rows([profile.id])
        return profile

    def _observe(self, message: Message, links: Links, source: str | None) -> None:
        """Link the message's keys to one profile, as far as the limits allow: keys in order
        (userId, anonymousId, email), each joining what the earlier ones gathered unless the
        profile would then hold too many keys of a kind."""
        if not links.previous_id:  # the common case: every key is one stored profile's
            owner = self.owner.get(links.keys[0])
            if owner is not None and all(self.owner.get(k) == owner for k in links.keys[1:]):
                profile = self.profiles[owner]
                profile.seen(message.timestamp)
                if links.traits:
                    self._row(profile).merge_traits(links.traits, message.timestamp)
                return
        keys = list(links.keys)
        absorbed: int | None = None
        if links.previous_id:
            absorbed = self.owner.get(("userId", links.previous_id))
            if absorbed is None:
                absorbed = self.owner.get(("anonymousId", links.previous_id))
            if absorbed is None:
                # an unknown previousId is most often the visitor's earlier anonymousId
                keys.append(("anonymousId", links.previous_id))
        members: list[int] = []  # profiles to merge, in key order
        fresh: list[Key] = []  # keys no profile holds yet
        refusals: list[tuple[Key, int | None, str]] = []
        alias = links.previous_id is not None
        for key in keys:
            owner = self.owner.get(key)
            if owner is not None and owner in members:
                continue
            if members or fresh:
                adding = self._counts_of(owner) if owner is not None else _one(key[0])
                if self._too_many(members, fresh, adding, ()):
                    refusals.append((key, owner, LIMIT))
                    continue
            if owner is None:
                fresh.append(key)
            else:
                members.append(owner)
        if absorbed is not None and absorbed not in members:
            previous = next(k for k in (("userId", links.previous_id),
                                        ("anonymousId", links.previous_id)) if k in self.owner)
            adding = self._counts_of(absorbed)
            identified = adding["userId"] > 0 and any(
                self._counts_of(m)["userId"] > 0 for m in members)
            if identified and not self.settings.alias_merges_identified:
                refusals.append((previous, absorbed, IDENTIFIED))
            elif self._too_many(members, fresh, adding, ("userId",)):
                refusals.append((previous, absorbed, LIMIT))
            else:
                members.append(absorbed)
        profile = self._gather(members, fresh, message, alias)
        for key in fresh:
            self.owner[key] = profile.id
            self.new_keys.append((key, message.message_id, source))
        profile.seen(message.timestamp)
        if links.traits:
            self._row(profile).merge_traits(links.traits, message.timestamp)
        for key, other, reason in refusals:
            self._refuse(profile.id, key, other, reason, message, source)

    def _too_many(self, members: list[int], fresh: list[Key], adding: dict[str, int],
                  relax: tuple[str, ...]) -> bool:
        """Would `adding` (a profile's key counts, or one new key) put the gathered profile
        over a limit? Only a kind both sides hold counts: a profile already over a limit (keys
        linked before the limits, or an alias) can still gain keys of other kinds."""
        total = dict.fromkeys(KINDS, 0)
        for member in members:
            for kind, count in self._counts_of(member).items():
                total[kind] += count
        for kind, _ in fresh:
            total[kind] += 1
        return any(total[kind] and adding[kind] and
                   total[kind] + adding[kind] > self.settings.limits[kind]
                   for kind in KINDS if kind not in relax)

    def _gather(self, members: list[int], fresh: list[Key], message: Message,
                alias: bool) -> Profile:
        """The one profile the message ends on: a new one, or the oldest stored member (for an
        alias, userId's stored profile) with the other members merged into it."""
        if not members:
            profile = self._create(message.timestamp)
            self.counts[profile.id] = _counted(fresh)
            return profile
        target: int | None = None
        if alias and message.user_id:
            target = self.owner.get(("userId", key_value(message.user_id)))
            if target not in members or target is None or target < 0:
                target = None
        if target is None:
            target = min(members, key=_age_order)
        profile = self.profiles[target]
        if len(members) > 1 or fresh:
            known = all(m in self.counts for m in members)
            total = _counted(fresh)
            for member in members:
                for kind, count in self.counts.get(member, {}).items():
                    total[kind] += count
            for member in members:
                if member != target:
                    self._merge(self.profiles[member], into=profile)
            if known:
                self.counts[target] = total
            else:
                self.counts.pop(target, None)
        return profile

    def _refuse(self, profile_id: int, key: Key, other: int | None, reason: str,
                message: Message, source: str | None) -> None:
        self.refused[(key[0], reason)] = self.refused.get((key[0], reason), 0) + 1
        self.conflicts.setdefault((profile_id, key), {
            "identity_id": profile_id, "other_identity_id": other, "kind": key[0],
            "value": key[1], "reason": reason, "message_id": message.message_id,
            "source": source, "created_at": self.now})

    def _create(self, when: datetime) -> Profile:
        profile = Profile(self._next_temporary, {}, None, when, when, dirty=True)
        self._next_temporary -= 1
        self.profiles[profile.id] = profile
        return profile

    def _merge(self, loser: Profile, into: Profile) -> None:
        """Move every key of `loser` to `into`; newer traits win; keep the widest seen range."""
        self._row(loser)
        self._row(into)
        if loser.id > 0:
            self.merged.append((loser.id, into.id))  # `into` is real too: see _age_order
        self.moved[loser.id] = into.id
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
        self.counts.pop(loser.id, None)

    def _flush(self) -> None:
        real_id = self._insert_new_profiles()
        if self.merged:
            moves = [{"b_loser": loser, "b_into": into} for loser, into in self.merged]
            self.connection.execute(_MOVE_KEYS, moves)
            self.connection.execute(_DROP_REPEATED_CONFLICTS, moves)
            self.connection.execute(_MOVE_CONFLICTS, moves)
            self.connection.execute(_MOVE_CONFLICT_OTHERS, moves)
            self.connection.execute(
                _DELETE_PROFILE, [{"b_loser": loser} for loser, _ in self.merged])
        if self.new_keys:
            self.connection.execute(_INSERT_KEYS, [
                {"kind": kind, "value": value, "identity_id": real_id(self.owner[(kind, value)]),
                 "linked_at": self.now, "linked_by": message_id, "linked_source": source}
                for (kind, value), message_id, source in self.new_keys])
        stored = [p for p in self.profiles.values() if p.id > 0]
        changed = [p for p in stored if p.dirty]
        seen_only = [p for p in stored if p.seen_changed and not p.dirty]
        if seen_only:
            self.connection.execute(
                _UPDATE_SEEN[self.connection.dialect.name],
                [{"b_id": p.id, "b_first": p.first_seen, "b_last": p.last_seen}
                 for p in seen_only])
        if changed:
            self.connection.execute(
                _UPDATE_PROFILE,
                [{"b_id": p.id, "b_traits": p.traits, "b_updated": p.traits_updated_at,
                  "b_first": p.first_seen, "b_last": p.last_seen} for p in changed])
        if self.conflicts:
            rows: dict[tuple[int, Key], dict[str, Any]] = {}
            for row in self.conflicts.values():
                mine = real_id(self._survivor(row["identity_id"]))
                other = row["other_identity_id"]
                other = None if other is None else real_id(self._survivor(other))
                rows.setdefault((mine, (row["kind"], row["value"])),
                                {**row, "identity_id": mine, "other_identity_id": other})
            self.connection.execute(_INSERT_CONFLICTS[self.connection.dialect.name],
                                    list(rows.values()))

    def _survivor(self, profile_id: int) -> int:
        while profile_id in self.moved:
            profile_id = self.moved[profile_id]
        return profile_id

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

    def _count(self) -> None:
        """The refusals and blocked values of this batch, in /metrics."""
        for (kind, reason), count in self.refused.items():
            metrics.IDENTITY_MERGES_REFUSED.labels(kind, reason).inc(count)
        for kind, count in self.blocked.items():
            metrics.IDENTITY_BLOCKED_VALUES.labels(kind).inc(count)


def _one(kind: str) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    counts[kind] = 1
    return counts


def _counted(keys: Iterable[Key]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for kind, _ in keys:
        counts[kind] += 1
    return counts


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
    """The owner (profile id) of each of the keys, the profile rows locked (PostgreSQL) for
    this transaction but not read: their JSON traits are decoded only when needed. One
    statement per combination of kinds (seven at most), built once: building SQL per request
    cost more CPU than running it."""
    return (select(identity_keys.c.kind, identity_keys.c.value, identities.c.id)
            .join(identities, identities.c.id == identity_keys.c.identity_id)
            .where(keys_condition(kinds))
            .order_by(identity_keys.c.identity_id).with_for_update(of=identities))


# The graph's reads and writes, built once per process (SQLAlchemy then reuses their compiled
# form).
_COUNT_KEYS = (select(identity_keys.c.identity_id, identity_keys.c.kind,
                      func.count().label("keys"))
               .where(identity_keys.c.identity_id.in_(bindparam("ids", expanding=True)))
               .group_by(identity_keys.c.identity_id, identity_keys.c.kind))
_READ_PROFILES = select(identities).where(identities.c.id.in_(bindparam("ids", expanding=True)))
_MOVE_KEYS = (update(identity_keys).where(identity_keys.c.identity_id == bindparam("b_loser"))
              .values(identity_id=bindparam("b_into")))
_OTHER_CONFLICT = identity_conflicts.alias("kept")
_DROP_REPEATED_CONFLICTS = delete(identity_conflicts).where(
    identity_conflicts.c.identity_id == bindparam("b_loser"),
    exists().where(_OTHER_CONFLICT.c.identity_id == bindparam("b_into"),
                   _OTHER_CONFLICT.c.kind == identity_conflicts.c.kind,
                   _OTHER_CONFLICT.c.value == identity_conflicts.c.value))
_MOVE_CONFLICTS = (update(identity_conflicts)
                   .where(identity_conflicts.c.identity_id == bindparam("b_loser"))
                   .values(identity_id=bindparam("b_into")))
_MOVE_CONFLICT_OTHERS = (update(identity_conflicts)
                         .where(identity_conflicts.c.other_identity_id == bindparam("b_loser"))
                         .values(other_identity_id=bindparam("b_into")))
_INSERT_CONFLICTS = {
    name: dialect.insert(identity_conflicts).on_conflict_do_nothing(
        index_elements=["identity_id", "kind", "value"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
_DELETE_PROFILE = delete(identities).where(identities.c.id == bindparam("b_loser"))
_INSERT_KEYS = insert(identity_keys)
# first/last seen widened in SQL (the earlier / later of what is stored and the batch's), so a
# profile that is only seen needs no read; each value is bound once (a datetime parameter's
# conversion is most of an executemany's CPU): SQLite's two-argument min() / max(),
# PostgreSQL's LEAST / GREATEST
_UPDATE_SEEN = {
    name: (update(identities).where(identities.c.id == bindparam("b_id")).values(
        first_seen=earliest(identities.c.first_seen, bindparam("b_first", type_=UTCDateTime())),
        last_seen=latest(identities.c.last_seen, bindparam("b_last", type_=UTCDateTime()))))
    for name, earliest, latest in (("sqlite", func.min, func.max),
                                   ("postgresql", func.least, func.greatest))}
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
                           {"h": _key_hash((kind, value))})
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
