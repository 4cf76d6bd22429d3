"""A regulation's subject: which key was given, the profile it resolves to, and key hashes.

Suppression keeps no key in clear: a key is kept as SHA-256 of "kind\\0value", the value as the
identity graph stores it (gateway/identity.py: emails lower-cased, long ids clipped), so ingest
can recognise it again and nothing else can read it back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from adapters.known import unknown_key
from gateway.identity import Key, links_of
from gateway.identity_settings import DEFAULT_SETTINGS, IdentitySettings
from gateway.messages import Message
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
    value = value.replace("\x00", "").strip()  # as ingest stores ids
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"subject.{name}: not valid Unicode") from None
    kind = SUBJECT_KINDS[name]
    if kind == "email":
        if "@" not in value:
            raise InvalidRequest(f"subject.email: {value[:60]!r} is not an email address")
        value = value.lower()
    return Subject(kind, key_value(value))


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


@dataclass(frozen=True)
class SubjectProfile:
    """The subject's whole identity profile (every linked key), or the subject alone."""

    id: int | None
    keys: frozenset[Key]

    def values(self, kind: str) -> list[str]:
        return sorted(value for k, value in self.keys if k == kind)

    @property
    def user_key(self) -> str:
        """The deliveries' per-user key (`outbox.user_key_of`, the events' rule): deletion
        requests queue behind what was sent for this person before, and ahead of what comes
        after."""
        return user_key_of(next(iter(self.values("userId")), None),
                           next(iter(self.values("anonymousId")), None))


def resolve(connection: Connection, subject: Subject, lock: bool = False) -> SubjectProfile:
    """The profile owning the subject's key, with all its keys. `lock` takes the profile row
    FOR UPDATE (PostgreSQL), as ingest's identity load does, so no request links a key to it
    meanwhile."""
    owner = select(identity_keys.c.identity_id).where(identity_keys.c.kind == subject.kind,
                                                      identity_keys.c.value == subject.value)
    profile_id = connection.execute(owner).scalar_one_or_none()
    if profile_id is None:
        return SubjectProfile(None, frozenset({subject.key}))
    if lock:
        connection.execute(select(identities.c.id).where(identities.c.id == profile_id)
                           .with_for_update())
    rows = connection.execute(select(identity_keys.c.kind, identity_keys.c.value)
                              .where(identity_keys.c.identity_id == profile_id)).all()
    return SubjectProfile(profile_id, frozenset({subject.key, *((r.kind, r.value) for r in rows)}))


def hashes(keys: Iterable[Key]) -> set[str]:
    return {key_hash(key) for key in keys}
