"""The identity graph, through the tracking API, on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import create_app
from gateway.config import from_mapping
from gateway.identity import lookup
from tests.conftest import WRITE_KEY, base_config
from tests.helpers import basic


def send(client, *messages: dict[str, Any]) -> None:
    response = client.post("/v1/batch", json={"batch": list(messages)}, headers=basic(WRITE_KEY))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "rejected" not in response.get_json()


def profile(engine, kind: str, value: str) -> dict[str, Any] | None:
    with engine.connect() as connection:
        return lookup(connection, kind, value)


def keys(found: dict[str, Any]) -> set[tuple[str, str]]:
    return {(k["kind"], k["value"]) for k in found["keys"]}


def test_identify_links_user_anonymous_and_email(client, engine) -> None:
    send(client, {"type": "identify", "userId": "u1", "anonymousId": "a1",
                  "traits": {"email": "Ann@Example.com ", "plan": "pro"}})
    found = profile(engine, "userId", "u1")
    assert keys(found) == {("userId", "u1"), ("anonymousId", "a1"),
                           ("email", "ann@example.com")}
    assert found["traits"] == {"email": "Ann@Example.com ", "plan": "pro"}
    assert profile(engine, "email", "ANN@example.com")["id"] == found["id"]


def test_rudder_style_context_traits_count_for_identify(client, engine) -> None:
    send(client, {"type": "identify", "userId": "u1",
                  "context": {"traits": {"email": "b@example.com", "plan": "free"}},
                  "traits": {"plan": "pro"}})
    found = profile(engine, "email", "b@example.com")
    assert found["traits"] == {"email": "b@example.com", "plan": "pro"}


def test_any_message_with_both_ids_links_them(client, engine) -> None:
    send(client, {"type": "track", "event": "Viewed", "anonymousId": "a1"})
    send(client, {"type": "identify", "userId": "u1", "traits": {"name": "Ann"}})
    assert profile(engine, "anonymousId", "a1")["id"] != profile(engine, "userId", "u1")["id"]
    send(client, {"type": "page", "userId": "u1", "anonymousId": "a1"})
    merged = profile(engine, "anonymousId", "a1")
    assert merged == profile(engine, "userId", "u1")
    assert keys(merged) == {("userId", "u1"), ("anonymousId", "a1")}
    assert merged["traits"] == {"name": "Ann"}


def test_alias_merges_previous_profile_into_the_user_profile(client, engine) -> None:
    send(client, {"type": "identify", "anonymousId": "a1", "traits": {"utm": "ad"}},
         {"type": "identify", "userId": "u2", "traits": {"name": "Bo"}})
    target = profile(engine, "userId", "u2")["id"]
    send(client, {"type": "alias", "previousId": "a1", "userId": "u2"})
    merged = profile(engine, "anonymousId", "a1")
    assert merged["id"] == target
    assert merged["traits"] == {"utm": "ad", "name": "Bo"}
    assert keys(merged) == {("anonymousId", "a1"), ("userId", "u2")}


def test_alias_of_an_earlier_user_id(client, engine) -> None:
    send(client, {"type": "identify", "userId": "old-id", "traits": {"a": 1}})
    send(client, {"type": "alias", "previousId": "old-id", "userId": "new-id"})
    merged = profile(engine, "userId", "new-id")
    assert merged == profile(engine, "userId", "old-id")
    assert merged["traits"] == {"a": 1}


def test_alias_with_an_unknown_previous_id_keeps_it_as_an_anonymous_id(client, engine) -> None:
    send(client, {"type": "alias", "previousId": "visitor-9", "userId": "u9"})
    visitor = profile(engine, "anonymousId", "visitor-9")
    assert visitor["id"] == profile(engine, "userId", "u9")["id"]


@pytest.mark.parametrize("user_known", [False, True], ids=["new-user", "known-user"])
def test_a_fresh_visitors_alias_links_its_own_anonymous_id(client, engine, user_known) -> None:
    """What browser SDKs send when a visitor signs up before any other call is stored (the
    RudderStack SDK sends its calls in parallel): previousId is the message's own anonymousId,
    which no profile holds yet. It used to be listed twice and fail the unique key (503 for
    ever, so the SDK's retries never got it stored)."""
    if user_known:
        send(client, {"type": "identify", "userId": "u7", "anonymousId": "other-visitor",
                      "traits": {"email": "u7@example.com"}})
    send(client, {"type": "alias", "previousId": "visitor-7", "anonymousId": "visitor-7",
                  "userId": "u7"})
    visitor = profile(engine, "anonymousId", "visitor-7")
    assert visitor is not None and visitor == profile(engine, "userId", "u7")
    assert ("anonymousId", "visitor-7") in keys(visitor)


@pytest.fixture
def roomy(database_url: str):
    """An app whose profiles may hold three userIds (the default is one: see test_identity_
    guardrails), so merges of identified profiles go through."""
    app = create_app(from_mapping(base_config(database_url,
                                              identity={"limits": {"userId": 3}})))
    yield app.test_client(), app.extensions["gateway.engine"]
    app.extensions["gateway.engine"].dispose()


def test_merges_are_transitive_and_never_lose_a_key(roomy) -> None:
    client, engine = roomy
    send(client,
         {"type": "identify", "userId": "u1", "anonymousId": "a1"},
         {"type": "identify", "userId": "u2", "anonymousId": "a2",
          "traits": {"email": "shared@example.com"}},
         {"type": "identify", "userId": "u3", "anonymousId": "a3"})
    send(client, {"type": "identify", "userId": "u1", "traits": {"email": "shared@example.com"}})
    send(client, {"type": "track", "event": "e", "userId": "u3", "anonymousId": "a2"})
    merged = profile(engine, "userId", "u3")
    assert keys(merged) == {("userId", "u1"), ("anonymousId", "a1"), ("userId", "u2"),
                            ("anonymousId", "a2"), ("userId", "u3"), ("anonymousId", "a3"),
                            ("email", "shared@example.com")}
    for kind, value in keys(merged):
        assert profile(engine, kind, value)["id"] == merged["id"]


def test_traits_latest_wins_by_event_time(client, engine) -> None:
    send(client, {"type": "identify", "userId": "u1", "timestamp": "2026-05-01T00:00:00Z",
                  "traits": {"plan": "pro"}})
    send(client, {"type": "identify", "userId": "u1", "timestamp": "2026-01-01T00:00:00Z",
                  "traits": {"plan": "free", "age": 30}})  # older, arrives later
    send(client, {"type": "identify", "userId": "u1", "timestamp": "2026-06-01T00:00:00Z",
                  "traits": {"seats": 5}})
    assert profile(engine, "userId", "u1")["traits"] == {"plan": "pro", "age": 30, "seats": 5}


def test_first_and_last_seen(client, engine) -> None:
    send(client, {"type": "track", "event": "e", "userId": "u1",
                  "timestamp": "2026-03-01T00:00:00Z"},
         {"type": "track", "event": "e", "userId": "u1", "timestamp": "2026-01-01T00:00:00Z"},
         {"type": "track", "event": "e", "userId": "u1", "timestamp": "2026-02-01T00:00:00Z"})
    found = profile(engine, "userId", "u1")
    assert found["first_seen"].isoformat() == "2026-01-01T00:00:00+00:00"
    assert found["last_seen"].isoformat() == "2026-03-01T00:00:00+00:00"


def test_group_traits_are_not_user_traits(client, engine) -> None:
    send(client, {"type": "group", "userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}})
    assert profile(engine, "userId", "u1")["traits"] == {}


def test_a_duplicate_message_does_not_change_the_profile(client, engine) -> None:
    message = {"type": "identify", "userId": "u1", "messageId": "m1", "traits": {"v": 1}}
    send(client, message)
    send(client, {**message, "messageId": "m2", "traits": {"v": 2}})
    send(client, message)  # a resend of m1 is not stored again, so it cannot roll traits back
    assert profile(engine, "userId", "u1")["traits"] == {"v": 2}
