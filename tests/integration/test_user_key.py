"""The per-user key has one rule (`outbox.user_key_of`): the deliveries' SQL, a sample's
decision and a regulation's deletion all give the same key for the same ids."""

from __future__ import annotations

from sqlalchemy import select

from gateway.regulations.keys import SubjectProfile
from gateway.store import outbox
from gateway.store.models import events
from tests.conftest import WRITE_KEY
from tests.helpers import basic


def test_the_rule_prefers_user_id_then_anonymous_id_and_never_email() -> None:
    assert outbox.user_key_of("u", "a") == "u"
    assert outbox.user_key_of(None, "a") == "a"
    assert outbox.user_key_of("", "a") == "a"
    assert outbox.user_key_of(7, None) == "7"
    assert outbox.user_key_of(None, None) == ""


def test_a_profile_keys_its_deletions_as_its_events_are_keyed() -> None:
    both = SubjectProfile(1, frozenset({("userId", "u"), ("anonymousId", "a"),
                                        ("email", "e@x.io")}))
    anon = SubjectProfile(2, frozenset({("anonymousId", "a"), ("email", "e@x.io")}))
    email_only = SubjectProfile(None, frozenset({("email", "e@x.io")}))
    assert (both.user_key, anon.user_key, email_only.user_key) == ("u", "a", "")


def test_the_sql_rule_agrees_with_the_python_rule(client, engine) -> None:
    batch = [{"type": "track", "event": "e", "userId": "u1", "anonymousId": "a1"},
             {"type": "track", "event": "e", "anonymousId": "a2"},
             {"type": "track", "event": "e", "userId": 42, "anonymousId": "  "}]
    answer = client.post("/v1/batch", json={"batch": batch}, headers=basic(WRITE_KEY))
    assert answer.status_code == 200
    with engine.connect() as connection:
        rows = connection.execute(select(events.c.user_id, events.c.anonymous_id,
                                         outbox.user_key()).order_by(events.c.id)).all()
    assert [key for *_, key in rows] == ["u1", "a2", "42"]
    assert [outbox.user_key_of(user_id, anonymous_id) for user_id, anonymous_id, _ in rows] \
        == ["u1", "a2", "42"]
