"""The identity graph's SQL, built once per process (SQLAlchemy then reuses the compiled
form): the key lookup, counts, profile reads and every write the graph makes."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from gateway.identity.model import Key
from gateway.store.models import (
    UTCDateTime,
    identities,
    identity_conflicts,
    identity_keys,
)


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
def load_statement(kinds: tuple[str, ...]) -> Select:
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
COUNT_KEYS = (select(identity_keys.c.identity_id, identity_keys.c.kind,
                      func.count().label("keys"))
               .where(identity_keys.c.identity_id.in_(bindparam("ids", expanding=True)))
               .group_by(identity_keys.c.identity_id, identity_keys.c.kind))
READ_PROFILES = select(identities).where(identities.c.id.in_(bindparam("ids", expanding=True)))
MOVE_KEYS = (update(identity_keys).where(identity_keys.c.identity_id == bindparam("b_loser"))
              .values(identity_id=bindparam("b_into")))
OTHER_CONFLICT = identity_conflicts.alias("kept")
DROP_REPEATED_CONFLICTS = delete(identity_conflicts).where(
    identity_conflicts.c.identity_id == bindparam("b_loser"),
    exists().where(OTHER_CONFLICT.c.identity_id == bindparam("b_into"),
                   OTHER_CONFLICT.c.kind == identity_conflicts.c.kind,
                   OTHER_CONFLICT.c.value == identity_conflicts.c.value))
MOVE_CONFLICTS = (update(identity_conflicts)
                   .where(identity_conflicts.c.identity_id == bindparam("b_loser"))
                   .values(identity_id=bindparam("b_into")))
MOVE_CONFLICT_OTHERS = (update(identity_conflicts)
                         .where(identity_conflicts.c.other_identity_id == bindparam("b_loser"))
                         .values(other_identity_id=bindparam("b_into")))
INSERT_CONFLICTS = {
    name: dialect.insert(identity_conflicts).on_conflict_do_nothing(
        index_elements=["identity_id", "kind", "value"])
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
DELETE_PROFILE = delete(identities).where(identities.c.id == bindparam("b_loser"))
INSERT_KEYS = insert(identity_keys)
# first/last seen widened in SQL (the earlier / later of what is stored and the batch's), so a
# profile that is only seen needs no read; each value is bound once (a datetime parameter's
# conversion is most of an executemany's CPU): SQLite's two-argument min() / max(),
# PostgreSQL's LEAST / GREATEST
UPDATE_SEEN = {
    name: (update(identities).where(identities.c.id == bindparam("b_id")).values(
        first_seen=earliest(identities.c.first_seen, bindparam("b_first", type_=UTCDateTime())),
        last_seen=latest(identities.c.last_seen, bindparam("b_last", type_=UTCDateTime()))))
    for name, earliest, latest in (("sqlite", func.min, func.max),
                                   ("postgresql", func.least, func.greatest))}
UPDATE_PROFILE = (update(identities).where(identities.c.id == bindparam("b_id")).values(
    traits=bindparam("b_traits"), traits_updated_at=bindparam("b_updated"),
    first_seen=bindparam("b_first"), last_seen=bindparam("b_last")))
INSERT_PROFILES = insert(identities).returning(identities.c.id, sort_by_parameter_order=True)



def key_hash(key: Key) -> int:
    digest = hashlib.blake2b(f"{key[0]}\0{key[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
