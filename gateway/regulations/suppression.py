"""Suppression: messages from a suppressed person are answered 200 (SDKs must not retry them)
but neither stored nor routed.

The check runs inside ingest's transaction (the same round trip as the identity lookup), so a
suppression committed by any process holds for the next request of every process: one indexed
lookup of the messages' key hashes per group commit. A suppressed message that names a new key
(an identify linking a new anonymousId or email to the person) suppresses that key too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import ARRAY, Connection, String, any_, bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from gateway import metrics
from gateway.config import Config
from gateway.identity import Key
from gateway.messages import Message
from gateway.regulations.keys import hashes, key_hash, message_keys
from gateway.store.models import suppressed_keys


class _Request(Protocol):
    source: str
    messages: list[Message]
    config: Config


_FIND = select(suppressed_keys.c.key_hash, suppressed_keys.c.regulation_id).where(
    suppressed_keys.c.key_hash.in_(bindparam("hashes", expanding=True)))
# PostgreSQL: one array parameter instead of one per key (an expanding IN is rendered anew for
# every list length: 0.97 → 0.63 ms of CPU for a 100-message check, README "Regulations")
_FIND_PG = select(suppressed_keys.c.key_hash, suppressed_keys.c.regulation_id).where(
    suppressed_keys.c.key_hash == any_(bindparam("hashes", type_=ARRAY(String))))
_ADD = {name: dialect.insert(suppressed_keys).on_conflict_do_nothing(index_elements=["key_hash"])
        for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}


# PostgreSQL: every ingest transaction holds this advisory lock shared from its suppression
# check to its commit, and a regulation that suppresses or deletes takes it exclusively first:
# it waits for the writes already past the check (and then sees their events to delete), and
# writes that start meanwhile wait for it (and then see the suppression).
_INGEST_LOCK = 0x6761746577617952  # a constant no identity key hash is expected to hit
_SHARED = text("SELECT pg_advisory_xact_lock_shared(:k)")
_EXCLUSIVE = text("SELECT pg_advisory_xact_lock(:k)")


def hold_back_ingest(connection: Connection) -> None:
    """A regulation's transaction, before it reads the profile (PostgreSQL; SQLite has one
    writer): no ingest transaction is between its suppression check and its commit."""
    if connection.dialect.name == "postgresql":
        connection.execute(_EXCLUSIVE, {"k": _INGEST_LOCK})


def suppressed_messages(connection: Connection, requests: Sequence[_Request]) -> set[int]:
    """`id()` of every message to drop because it names a suppressed key; counted in
    gateway_events_suppressed_total. The message's other keys become suppressed too."""
    if connection.dialect.name == "postgresql":
        connection.execute(_SHARED, {"k": _INGEST_LOCK})
    named: list[tuple[_Request, Message, dict[str, Key]]] = []
    wanted: set[str] = set()
    for request in requests:
        for message in request.messages:
            keys = {key_hash(key): key
                    for key in message_keys(message, request.config.identity)}
            named.append((request, message, keys))
            wanted.update(keys)
    if not wanted:
        return set()
    find = _FIND_PG if connection.dialect.name == "postgresql" else _FIND
    found = {row.key_hash: row.regulation_id
             for row in connection.execute(find, {"hashes": sorted(wanted)})}
    if not found:
        return set()
    dropped: set[int] = set()
    spread: dict[str, int] = {}  # new key hash → the regulation that suppresses it
    counts: dict[tuple[str, str], int] = {}
    for request, message, keys in named:
        regulation = next((found[h] for h in sorted(keys) if h in found), None)
        if regulation is None:
            continue
        dropped.add(id(message))
        counts[(request.source, message.type)] = counts.get((request.source, message.type),
                                                            0) + 1
        for h in keys:
            if h not in found:
                spread.setdefault(h, regulation)
    if spread:
        now = datetime.now(UTC)
        connection.execute(_ADD[connection.dialect.name], [
            {"key_hash": h, "regulation_id": r, "created_at": now} for h, r in spread.items()])
    for (source, kind), count in counts.items():
        metrics.EVENTS_SUPPRESSED.labels(source, kind).inc(count)
    return dropped


def suppress(connection: Connection, regulation_id: int, keys: Iterable[Key]) -> int:
    """Suppress every key (kept as hashes); a key already suppressed stays with its first
    regulation. Returns how many keys were newly suppressed."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [{"key_hash": h, "regulation_id": regulation_id,
                                   "created_at": now} for h in sorted(hashes(keys))]
    if not rows:
        return 0
    before = _count(connection, [r["key_hash"] for r in rows])
    connection.execute(_ADD[connection.dialect.name], rows)
    return len(rows) - before


def unsuppress(connection: Connection, keys: Iterable[Key]) -> int:
    """Lift every suppression that covers one of the keys: the whole person's, including keys
    the suppression spread to. Returns how many suppressed keys were removed."""
    wanted = sorted(hashes(keys))
    regulations = {row.regulation_id for row in connection.execute(_FIND, {"hashes": wanted})}
    removed = connection.execute(delete(suppressed_keys).where(
        suppressed_keys.c.key_hash.in_(wanted)
        | suppressed_keys.c.regulation_id.in_(sorted(regulations)))).rowcount
    return removed or 0


def would_suppress(connection: Connection, keys: Iterable[Key]) -> int:
    """How many of the keys `suppress` would newly suppress (a dry run: nothing written)."""
    wanted = sorted(hashes(keys))
    return len(wanted) - _count(connection, wanted) if wanted else 0


def would_unsuppress(connection: Connection, keys: Iterable[Key]) -> int:
    """How many suppressed keys `unsuppress` would remove (a dry run: nothing written)."""
    wanted = sorted(hashes(keys))
    regulations = {row.regulation_id for row in connection.execute(_FIND, {"hashes": wanted})}
    return connection.execute(select(func.count()).select_from(suppressed_keys).where(
        suppressed_keys.c.key_hash.in_(wanted)
        | suppressed_keys.c.regulation_id.in_(sorted(regulations)))).scalar() or 0


def _count(connection: Connection, key_hashes: list[str]) -> int:
    return len(connection.execute(_FIND, {"hashes": key_hashes}).all())
