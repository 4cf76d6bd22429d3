"""A regulation's subject: which key was given, the profile it resolves to, and key hashes.

Suppression keeps no key in clear: a key is kept as SHA-256 of "kind\\0value", the value as the
identity graph stores it (gateway/identity/model.py: emails lower-cased, long ids clipped), so
ingest can recognise it again and nothing else can read it back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from adapters.known import unknown_key
from gateway.config import Config
from gateway.config.identity import DEFAULT_SETTINGS, IdentitySettings
from gateway.filters import hash_value
from gateway.identity import Key, links_of
from gateway.messages import Message, iso_text
from gateway.store.models import identities, identity_keys, key_value
from gateway.store.outbox import user_key_of

TYPES = ("suppress", "unsuppress", "delete", "suppress_with_delete")
SUBJECT_KINDS = {"user_id": "userId", "anonymous_id": "anonymousId", "email": "email"}
MAX_SUBJECT_LENGTH = 1000  # a longer id is no id an SDK sends (messages bound them too)


class InvalidRequest(ValueError):
    """A regulation request the caller got wrong (answered 400, or exit 2 on the CLI)."""


@dataclass(frozen=True)
class Subject:
    kind: str  # identity kind: userId | anonymousId | email
    value: str  # as the identity graph stores it
    given: str = field(default="", compare=False)  # as the caller wrote it, trimmed (hashing)

    @property
    def key(self) -> Key:
        return (self.kind, self.value)


def parse_request(body: Any) -> tuple[str, Subject]:
    """`{"type": …, "subject": {"user_id" | "anonymous_id" | "email": "…"}, "dry_run": bool}`
    → (type, subject), or InvalidRequest saying exactly what is wrong (the caller reads
    `dry_run`, checked here)."""
    if not isinstance(body, Mapping):
        raise InvalidRequest('expected {"type": "suppress"|"unsuppress"|"delete"|'
                             '"suppress_with_delete", "subject": {"user_id"|"anonymous_id"|'
                             '"email": "…"}}')
    problem = unknown_key(body, ("type", "subject", "dry_run"))
    if problem:
        raise InvalidRequest(problem)
    if not isinstance(body.get("dry_run", False), bool):
        raise InvalidRequest("dry_run: true or false")
    kind = body.get("type")
    if not isinstance(kind, str) or kind.lower() not in TYPES:
        raise InvalidRequest(f"type: one of {', '.join(TYPES)} (got {kind!r:.60})")
    subject = body.get("subject")
    if not isinstance(subject, Mapping) or len(subject) != 1:
        raise InvalidRequest("subject: an object with exactly one of user_id, anonymous_id, "
                             "email")
    (name, value), = subject.items()
    return kind.lower(), make_subject(name, value)


def make_subject(name: str, value: Any) -> Subject:
    if name not in SUBJECT_KINDS:
        raise InvalidRequest(f"subject: unknown key {str(name)[:60]!r} (use user_id, "
                             "anonymous_id or email)")
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"subject.{name}: a non-empty string")
    if len(value) > MAX_SUBJECT_LENGTH:
        raise InvalidRequest(f"subject.{name}: at most {MAX_SUBJECT_LENGTH} characters")
    value = given = value.replace("\x00", "").strip()  # as ingest stores ids
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"subject.{name}: not valid Unicode") from None
    kind = SUBJECT_KINDS[name]
    if kind == "email":
        if "@" not in value:
            raise InvalidRequest(f"subject.email: {value[:60]!r} is not an email address")
        value = value.lower()
    return Subject(kind, key_value(value), given)


def key_hash(key: Key) -> str:
    return hashlib.sha256(f"{key[0]}\0{key[1]}".encode("utf-8", "surrogatepass")).hexdigest()


def message_keys(message: Message, settings: IdentitySettings = DEFAULT_SETTINGS) -> set[Key]:
    """Every key a message names: its ids, an identify's email, an alias's previousId — not a
    blocked value (`undefined`, …), which would otherwise spread a suppression to everyone
    whose SDK sends it."""
    links = links_of(message, settings)
    keys = set(links.keys)
    if links.previous_id:
        keys.update((kind, links.previous_id) for kind in ("userId", "anonymousId"))
    return keys


# Where a source's `hash_fields` puts each kind of key the identity graph reads: a source that
# hashes one of these stores (and links) the hash, not the value.
HASHED_PATHS = {"userId": (("userId",), ("previousId",)),
                "anonymousId": (("anonymousId",), ("previousId",)),
                "email": (("traits", "email"), ("context", "traits", "email"))}


def subject_forms(subject: Subject, config: Config | None) -> list[Subject]:
    """The subject as the graph may hold it: as given, and as each source whose `hash_fields`
    hashes that kind of key stores it (`filters.hash_value` of the value as given and, for an
    email, lower-cased), so a regulation finds the person either way."""
    forms = [subject]
    if config is None:
        return forms
    raw = {subject.given or subject.value}
    if subject.kind == "email":
        raw |= {value.lower() for value in raw}
    for source in config.sources:
        hashed = source.filters.hash_fields
        if any(path in hashed for path in HASHED_PATHS[subject.kind]):
            for value in sorted(raw):
                form = Subject(subject.kind, key_value(
                    str(hash_value(value, source.filters.hash_salt)).strip().lower()))
                if form not in forms:
                    forms.append(form)
    return forms


@dataclass(frozen=True)
class SubjectProfile:
    """The subject's whole identity profile (every linked key), or the subject alone. `ids`:
    every stored profile holding a form of the subject (the plain key and a hashed one may be
    two profiles); `id` the first."""

    id: int | None
    keys: frozenset[Key]
    ids: tuple[int, ...] = ()

    def values(self, kind: str) -> list[str]:
        return sorted(value for k, value in self.keys if k == kind)

    @property
    def user_key(self) -> str:
        """The deliveries' per-user key (`outbox.user_key_of`, the events' rule): deletion
        requests queue behind what was sent for this person before, and ahead of what comes
        after."""
        return user_key_of(next(iter(self.values("userId")), None),
                           next(iter(self.values("anonymousId")), None))


def resolve(connection: Connection, subject: Subject, lock: bool = False,
            config: Config | None = None) -> SubjectProfile:
    """The profiles owning the subject's key in any of its forms (`subject_forms`), with all
    their keys. `lock` takes the profile rows FOR UPDATE (PostgreSQL), as ingest's identity
    load does, so no request links a key to them meanwhile."""
    forms = subject_forms(subject, config)
    owner = select(identity_keys.c.identity_id).where(or_(*(
        and_(identity_keys.c.kind == form.kind, identity_keys.c.value == form.value)
        for form in forms)))
    ids = sorted(set(connection.execute(owner).scalars()))
    own = {form.key for form in forms}
    if not ids:
        return SubjectProfile(None, frozenset(own))
    if lock:
        connection.execute(select(identities.c.id).where(identities.c.id.in_(ids))
                           .with_for_update())
    rows = connection.execute(select(identity_keys.c.kind, identity_keys.c.value)
                              .where(identity_keys.c.identity_id.in_(ids))).all()
    return SubjectProfile(ids[0], frozenset({*own, *((r.kind, r.value) for r in rows)}),
                          tuple(ids))


def links(connection: Connection, profile: SubjectProfile) -> list[dict[str, Any]]:
    """Every key of the profile with when, by which message and from which source it was
    linked: why a key someone else sent is part of this person (a regulation's dry run)."""
    if not profile.ids:
        return []
    rows = connection.execute(
        select(identity_keys.c.kind, identity_keys.c.value, identity_keys.c.linked_at,
               identity_keys.c.linked_by, identity_keys.c.linked_source)
        .where(identity_keys.c.identity_id.in_(profile.ids)).order_by(identity_keys.c.id)).all()
    return [{"kind": r.kind, "value": r.value, "linked_at": iso_text(r.linked_at),
             "linked_by": r.linked_by, "source": r.linked_source} for r in rows]


def hashes(keys: Iterable[Key]) -> set[str]:
    return {key_hash(key) for key in keys}
