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

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    text,
)

from gateway import metrics
from gateway.config.identity import DEFAULT_SETTINGS, KINDS, IdentitySettings
from gateway.identity.model import Key, Links, Profile, links_of, traits_age
from gateway.identity.statements import (
    COUNT_KEYS,
    DELETE_PROFILE,
    DROP_REPEATED_CONFLICTS,
    INSERT_CONFLICTS,
    INSERT_KEYS,
    INSERT_PROFILES,
    MOVE_CONFLICT_OTHERS,
    MOVE_CONFLICTS,
    MOVE_KEYS,
    READ_PROFILES,
    UPDATE_PROFILE,
    UPDATE_SEEN,
    key_hash,
    load_statement,
)
from gateway.messages import Message
from gateway.store.models import (
    key_value,
)

LIMIT = "limit"  # a refused merge's reason: the profile would hold too many keys of a kind
IDENTIFIED = "alias_identified"  # …or an alias of two profiles that both hold a userId
UNLINKED = "unlinked"  # not a refusal: an operator split the key off (`unlink`)
MAX_CONFLICTS_SHOWN = 100



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
        hashes = sorted({key_hash(key) for key in keys})
        self.connection.execute(
            text("SELECT pg_advisory_xact_lock(h) FROM "
                 "(SELECT unnest(CAST(:hashes AS bigint[])) AS h ORDER BY 1) AS ordered"),
            {"hashes": hashes})

    def _load(self, keys: set[Key]) -> None:
        """Keys first: who owns each key (the profile rows locked on PostgreSQL, not read)."""
        by_kind: dict[str, list[str]] = {}
        for kind, value in keys:
            by_kind.setdefault(kind, []).append(value)
        statement = load_statement(tuple(kind for kind in KINDS if kind in by_kind))
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
        for row in self.connection.execute(COUNT_KEYS, {"ids": profile_ids}):
            self.counts[row.identity_id][row.kind] = row.keys

    def _read_rows(self, profile_ids: list[int]) -> None:
        for row in self.connection.execute(READ_PROFILES, {"ids": profile_ids}):
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
            if absorbed is None and ("anonymousId", links.previous_id) not in keys:
                # an unknown previousId is most often the visitor's earlier anonymousId (the
                # message's own anonymousId too, when a fresh visitor signs up: listed once)
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
        older, newer = sorted((loser, into), key=traits_age)
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
            self.connection.execute(MOVE_KEYS, moves)
            for move in moves:
                # one merge after the other: in a chain (A into B, then B into C) the conflicts
                # A gave B must be checked against C's before they move on
                self.connection.execute(DROP_REPEATED_CONFLICTS, move)
                self.connection.execute(MOVE_CONFLICTS, move)
            self.connection.execute(MOVE_CONFLICT_OTHERS, moves)
            self.connection.execute(
                DELETE_PROFILE, [{"b_loser": loser} for loser, _ in self.merged])
        if self.new_keys:
            self.connection.execute(INSERT_KEYS, [
                {"kind": kind, "value": value, "identity_id": real_id(self.owner[(kind, value)]),
                 "linked_at": self.now, "linked_by": message_id, "linked_source": source}
                for (kind, value), message_id, source in self.new_keys])
        stored = [p for p in self.profiles.values() if p.id > 0]
        changed = [p for p in stored if p.dirty]
        seen_only = [p for p in stored if p.seen_changed and not p.dirty]
        if seen_only:
            self.connection.execute(
                UPDATE_SEEN[self.connection.dialect.name],
                [{"b_id": p.id, "b_first": p.first_seen, "b_last": p.last_seen}
                 for p in seen_only])
        if changed:
            self.connection.execute(
                UPDATE_PROFILE,
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
            self.connection.execute(INSERT_CONFLICTS[self.connection.dialect.name],
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
                INSERT_PROFILES, [{"traits": p.traits, "traits_updated_at": p.traits_updated_at,
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



def _age_order(profile_id: int) -> tuple[bool, int]:
    """Stored profiles (positive ids, oldest first) before ones made in this transaction."""
    return (profile_id < 0, abs(profile_id))
