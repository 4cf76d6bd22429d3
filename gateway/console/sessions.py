"""Console sign-in sessions, kept in the database so that every gateway process and node accepts
them and a sign-out ends them everywhere.

The cookie holds only a random id (256 bits); the `console_sessions` row holds its keyed hash,
the session's CSRF token, a keyed fingerprint of the admin token it was opened with, and its
created / last-seen / revoked times. The key is random, generated on first use and kept in
`gateway_secrets`: nothing a visitor sees is derived from the admin token, so no cookie is an
offline oracle for it. A session ends when it is revoked (sign-out, "sign out everywhere"),
after `[console] idle_timeout_seconds` without a request, after `session_lifetime_seconds` in
any case, and when the admin token changes (its fingerprint no longer matches).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from gateway.config import ConsoleSettings
from gateway.store.db import write_transaction
from gateway.store.models import console_sessions, gateway_secrets

KEY_NAME = "console_session_key"
ID_SHAPE = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
TOUCHES_PER_IDLE = 30  # last_seen_at is written at most this often per idle timeout

_keys: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()
_keys_lock = threading.Lock()


@dataclass(frozen=True)
class Session:
    id_hash: str
    csrf: str
    created_at: datetime
    last_seen_at: datetime


def session_key(engine: Engine) -> bytes:
    """The database's random session key: read once per process, created by whichever process
    needs it first (the others read the row it wrote)."""
    with _keys_lock:
        key = _keys.get(engine)
    if key is None:
        key = _read_key(engine) or _create_key(engine)
        with _keys_lock:
            _keys[engine] = key
    return key


def _read_key(engine: Engine) -> bytes | None:
    with engine.connect() as connection:
        value = connection.execute(
            select(gateway_secrets.c.value).where(gateway_secrets.c.name == KEY_NAME)
        ).scalar()
    return bytes.fromhex(value) if value else None


def _create_key(engine: Engine) -> bytes:
    try:
        with write_transaction(engine) as connection:
            connection.execute(
                insert(gateway_secrets).values(
                    name=KEY_NAME, value=secrets.token_hex(32), created_at=datetime.now(UTC)
                )
            )
    except IntegrityError:
        pass  # another process wrote it first: theirs is the one
    key = _read_key(engine)
    assert key is not None
    return key


def _keyed(engine: Engine, purpose: bytes, value: str) -> str:
    return hmac.new(
        session_key(engine), purpose + b"\x00" + value.encode(), hashlib.sha256
    ).hexdigest()


def token_fingerprint(engine: Engine, admin_token: str) -> str:
    return _keyed(engine, b"admin token", admin_token)


def _id_hash(engine: Engine, session_id: str) -> str:
    return _keyed(engine, b"console session", session_id)


def open_session(
    engine: Engine, admin_token: str, settings: ConsoleSettings, now: datetime | None = None
) -> tuple[str, Session]:
    """A new session for someone who just gave the admin token: (the cookie's id, the session).
    Sessions past their lifetime are deleted here, so the table holds about a day of sign-ins."""
    now = now or datetime.now(UTC)
    session_id = secrets.token_urlsafe(32)
    session = Session(_id_hash(engine, session_id), secrets.token_urlsafe(24), now, now)
    with write_transaction(engine) as connection:
        connection.execute(
            delete(console_sessions).where(
                console_sessions.c.created_at
                < now - timedelta(seconds=settings.session_lifetime_seconds)
            )
        )
        connection.execute(
            insert(console_sessions).values(
                id_hash=session.id_hash,
                csrf=session.csrf,
                token_fingerprint=token_fingerprint(engine, admin_token),
                created_at=now,
                last_seen_at=now,
            )
        )
    return session_id, session


def find(
    engine: Engine,
    session_id: str,
    admin_token: str,
    settings: ConsoleSettings,
    touch: bool = True,
    now: datetime | None = None,
) -> Session | None:
    """The live session this cookie id names, or None (unknown, revoked, idle too long, past
    its lifetime, or opened with another admin token). `touch` counts this request as
    activity (the live feed's automatic reconnects do not)."""
    if not ID_SHAPE.fullmatch(session_id):
        return None
    now = now or datetime.now(UTC)
    id_hash = _id_hash(engine, session_id)
    with engine.connect() as connection:
        row = connection.execute(
            select(console_sessions).where(console_sessions.c.id_hash == id_hash)
        ).first()
    if (
        row is None
        or row.revoked_at is not None
        or now - row.created_at >= timedelta(seconds=settings.session_lifetime_seconds)
        or now - row.last_seen_at >= timedelta(seconds=settings.idle_timeout_seconds)
        or not hmac.compare_digest(row.token_fingerprint, token_fingerprint(engine, admin_token))
    ):
        return None
    last_seen = row.last_seen_at
    if touch and now - last_seen >= timedelta(
        seconds=settings.idle_timeout_seconds / TOUCHES_PER_IDLE
    ):
        with write_transaction(engine) as connection:
            connection.execute(
                update(console_sessions)
                .where(console_sessions.c.id_hash == id_hash)
                .values(last_seen_at=now)
            )
        last_seen = now
    return Session(id_hash, row.csrf, row.created_at, last_seen)


def revoke(engine: Engine, session: Session) -> None:
    """Sign-out: this session ends on every process at once."""
    with write_transaction(engine) as connection:
        connection.execute(
            update(console_sessions)
            .where(
                console_sessions.c.id_hash == session.id_hash,
                console_sessions.c.revoked_at.is_(None),
            )
            .values(revoked_at=datetime.now(UTC))
        )


def revoke_all(engine: Engine) -> int:
    """ "Sign out everywhere": every open session ends; returns how many there were."""
    with write_transaction(engine) as connection:
        return connection.execute(
            update(console_sessions)
            .where(console_sessions.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        ).rowcount
