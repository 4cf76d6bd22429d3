"""The identity graph's guardrails on a real database (SQLite and PostgreSQL): blocked values
never link profiles, per-kind limits refuse merges (recorded as conflicts), alias obeys them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from gateway import create_app
from gateway.config import from_mapping
from gateway.identity import lookup
from gateway.store.models import identities, identity_conflicts, identity_keys
from tests.conftest import WRITE_KEY, base_config
from tests.helpers import ADMIN_AUTH, basic, stored_deliveries, stored_events


class Gateway:
    """The app on the test database with an `[identity]` table of the test's choosing."""

    def __init__(self, database_url: str, identity: dict[str, Any] | None = None) -> None:
        raw = base_config(database_url, **({"identity": identity} if identity else {}))
        self.app = create_app(from_mapping(raw))
        self.client = self.app.test_client()
        self.engine = self.app.extensions["gateway.engine"]

    def send(self, *messages: dict[str, Any]) -> None:
        response = self.client.post("/v1/batch", json={"batch": list(messages)},
                                    headers=basic(WRITE_KEY))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert "rejected" not in response.get_json()

    def profile(self, kind: str, value: str) -> dict[str, Any] | None:
        with self.engine.connect() as connection:
            return lookup(connection, kind, value)

    def count(self, table: Any) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture
def make(database_url: str) -> Iterator[Any]:
    made: list[Gateway] = []

    def build(identity: dict[str, Any] | None = None) -> Gateway:
        made.append(Gateway(database_url, identity))
        return made[-1]

    yield build
    for gateway in made:
        gateway.engine.dispose()


def keys(found: dict[str, Any]) -> set[tuple[str, str]]:
    return {(k["kind"], k["value"]) for k in found["keys"]}


def refused(kind: str, reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_identity_merges_refused_total",
                                     {"kind": kind, "reason": reason}) or 0.0


def blocked_count(kind: str) -> float:
    return REGISTRY.get_sample_value("gateway_identity_blocked_values_total",
                                     {"kind": kind}) or 0.0


# blocked values ---------------------------------------------------------------------------------


def test_an_sdk_bug_sending_userid_undefined_leaves_one_profile_per_visitor(make) -> None:
    gateway = make()
    before = blocked_count("userId")
    gateway.send(*[{"type": "track", "event": "Viewed", "userId": "undefined",
                    "anonymousId": f"visitor-{n}", "messageId": f"m-{n}"} for n in range(50)])
    assert gateway.count(identities) == 50
    assert gateway.profile("userId", "undefined") is None
    for n in (0, 17, 49):
        assert keys(gateway.profile("anonymousId", f"visitor-{n}")) == {
            ("anonymousId", f"visitor-{n}")}
    stored = stored_events(gateway.engine)
    assert len(stored) == 50 and {e["user_id"] for e in stored} == {"undefined"}  # as sent
    assert stored[0]["payload"]["userId"] == "undefined"
    assert len(stored_deliveries(gateway.engine)) == 100  # routed as usual (two destinations)
    assert blocked_count("userId") - before == 50


@pytest.mark.parametrize("value", [" NULL ", "[object Object]", "None", "0", "Guest",
                                   "00000000-0000-0000-0000-000000000000"])
def test_blocked_values_are_compared_trimmed_and_case_insensitively(make, value) -> None:
    gateway = make()
    gateway.send({"type": "identify", "userId": value, "anonymousId": "a1",
                  "traits": {"email": "Email"}},
                 {"type": "identify", "userId": value, "anonymousId": "a2"})
    assert gateway.profile("anonymousId", "a1")["id"] != gateway.profile("anonymousId", "a2")["id"]
    assert keys(gateway.profile("anonymousId", "a1")) == {("anonymousId", "a1")}
    assert gateway.count(identity_keys) == 2


def test_a_blocked_anonymous_id_and_alias_previous_id_link_nothing(make) -> None:
    gateway = make()
    gateway.send({"type": "track", "event": "e", "userId": "u1", "anonymousId": "null"},
                 {"type": "track", "event": "e", "userId": "u2", "anonymousId": "null"},
                 {"type": "alias", "userId": "u3", "previousId": "undefined"})
    assert gateway.count(identities) == 3
    assert gateway.profile("anonymousId", "null") is None
    assert keys(gateway.profile("userId", "u3")) == {("userId", "u3")}


def test_operators_add_blocked_values_or_replace_the_list(make) -> None:
    added = make({"extra_blocked_values": ["N/A"]})
    added.send({"type": "track", "event": "e", "userId": "n/a", "anonymousId": "a1"},
               {"type": "track", "event": "e", "userId": " N/A", "anonymousId": "a2"},
               {"type": "track", "event": "e", "userId": "undefined", "anonymousId": "a3"})
    assert added.count(identities) == 3 and added.profile("userId", "n/a") is None

    replaced = make({"blocked_values": ["n/a"]})  # the default list no longer applies
    replaced.send({"type": "track", "event": "e", "userId": "undefined", "anonymousId": "b1"})
    assert replaced.profile("userId", "undefined") is not None


# limits -----------------------------------------------------------------------------------------


def test_two_identified_users_sharing_an_email_stay_two_profiles(make) -> None:
    gateway = make()
    before = refused("email", "limit")
    gateway.send({"type": "identify", "userId": "ann", "messageId": "m-ann",
                  "traits": {"email": "family@example.com"}})
    gateway.send({"type": "identify", "userId": "bob", "messageId": "m-bob",
                  "traits": {"email": "Family@Example.com", "name": "Bob"}})
    ann, bob = gateway.profile("userId", "ann"), gateway.profile("userId", "bob")
    assert ann["id"] != bob["id"]
    assert keys(ann) == {("userId", "ann"), ("email", "family@example.com")}
    assert keys(bob) == {("userId", "bob")}  # the email was not moved
    assert bob["traits"] == {"email": "Family@Example.com", "name": "Bob"}  # attached to Bob
    assert bob["conflicts"] == [{
        "key": {"kind": "email", "value": "family@example.com"}, "reason": "limit",
        "message_id": "m-bob", "source": "web", "at": bob["conflicts"][0]["at"],
        "other_profile": ann["id"], "held_here": False}]
    assert ann["conflicts"][0]["other_profile"] == bob["id"]
    assert ann["conflicts"][0]["held_here"] is True
    assert refused("email", "limit") - before == 1
    # the same refusal again is counted, not recorded twice
    gateway.send({"type": "identify", "userId": "bob", "messageId": "m-bob-2",
                  "traits": {"email": "family@example.com"}})
    assert gateway.count(identity_conflicts) == 1
    assert refused("email", "limit") - before == 2
    metrics = gateway.client.get("/metrics", headers=ADMIN_AUTH).get_data(as_text=True)
    assert 'gateway_identity_merges_refused_total{kind="email",reason="limit"}' in metrics


def test_a_shared_device_does_not_merge_two_users(make) -> None:
    """The event is stored and routed, attached to its own userId's profile; the anonymousId
    stays with the first user."""
    gateway = make()
    gateway.send({"type": "identify", "userId": "ann", "anonymousId": "laptop"})
    gateway.send({"type": "track", "event": "Bought", "userId": "bob", "anonymousId": "laptop",
                  "messageId": "bob-buys"})
    ann, bob = gateway.profile("userId", "ann"), gateway.profile("userId", "bob")
    assert keys(ann) == {("userId", "ann"), ("anonymousId", "laptop")}
    assert keys(bob) == {("userId", "bob")}
    assert bob["conflicts"][0]["key"] == {"kind": "anonymousId", "value": "laptop"}
    assert bob["conflicts"][0]["message_id"] == "bob-buys"
    assert [e["message_id"] for e in stored_events(gateway.engine)][-1] == "bob-buys"
    assert len(stored_deliveries(gateway.engine)) == 4


def test_an_anonymous_visitor_still_becomes_the_user_who_signs_in(make) -> None:
    gateway = make()
    gateway.send({"type": "identify", "anonymousId": "a1", "traits": {"utm": "ad"}})
    gateway.send({"type": "track", "event": "e", "anonymousId": "a2"})
    gateway.send({"type": "identify", "userId": "u1", "anonymousId": "a1"},
                 {"type": "track", "event": "e", "userId": "u1", "anonymousId": "a2"})
    merged = gateway.profile("userId", "u1")
    assert keys(merged) == {("userId", "u1"), ("anonymousId", "a1"), ("anonymousId", "a2")}
    assert merged["traits"] == {"utm": "ad"} and merged["conflicts"] == []
    assert gateway.count(identities) == 1


def test_a_profile_holds_at_most_the_limit_of_emails(make) -> None:
    gateway = make({"limits": {"email": 2}})
    for n in range(3):
        gateway.send({"type": "identify", "userId": "u1", "messageId": f"m{n}",
                      "traits": {"email": f"e{n}@example.com"}})
    found = gateway.profile("userId", "u1")
    assert keys(found) == {("userId", "u1"), ("email", "e0@example.com"),
                           ("email", "e1@example.com")}
    assert found["conflicts"][0]["key"] == {"kind": "email", "value": "e2@example.com"}
    assert found["conflicts"][0]["other_profile"] is None  # the key was new: the profile full
    assert gateway.profile("email", "e2@example.com") is None


def test_a_merge_that_would_pass_the_anonymous_id_limit_is_refused(make) -> None:
    gateway = make({"limits": {"anonymousId": 2}})
    gateway.send({"type": "track", "event": "e", "userId": "u1", "anonymousId": "a1"},
                 {"type": "track", "event": "e", "userId": "u1", "anonymousId": "a2"},
                 {"type": "track", "event": "e", "anonymousId": "a3"})
    gateway.send({"type": "track", "event": "e", "userId": "u1", "anonymousId": "a3"})
    assert keys(gateway.profile("userId", "u1")) == {
        ("userId", "u1"), ("anonymousId", "a1"), ("anonymousId", "a2")}
    assert keys(gateway.profile("anonymousId", "a3")) == {("anonymousId", "a3")}


def test_refusals_in_one_batch_land_on_the_profiles_made_in_it(make) -> None:
    """Both profiles are new in the same request: the conflict names their stored ids."""
    gateway = make()
    gateway.send({"type": "identify", "userId": "ann", "traits": {"email": "x@example.com"}},
                 {"type": "identify", "userId": "bob", "messageId": "bob-1",
                  "traits": {"email": "x@example.com"}})
    ann, bob = gateway.profile("userId", "ann"), gateway.profile("userId", "bob")
    assert bob["conflicts"][0]["other_profile"] == ann["id"]
    assert bob["conflicts"][0]["message_id"] == "bob-1"


# alias ------------------------------------------------------------------------------------------


def test_alias_of_two_identified_profiles_is_refused(make) -> None:
    gateway = make()
    before = refused("userId", "alias_identified")
    gateway.send({"type": "identify", "userId": "ann"}, {"type": "identify", "userId": "bob"})
    gateway.send({"type": "alias", "userId": "bob", "previousId": "ann", "messageId": "al"})
    ann, bob = gateway.profile("userId", "ann"), gateway.profile("userId", "bob")
    assert ann["id"] != bob["id"]
    assert bob["conflicts"][0]["key"] == {"kind": "userId", "value": "ann"}
    assert bob["conflicts"][0]["reason"] == "alias_identified"
    assert refused("userId", "alias_identified") - before == 1


def test_alias_merges_identified_profiles_when_allowed(make) -> None:
    gateway = make({"alias_merges_identified": True})
    gateway.send({"type": "identify", "userId": "ann", "traits": {"a": 1}},
                 {"type": "identify", "userId": "bob", "traits": {"b": 2}})
    gateway.send({"type": "alias", "userId": "bob", "previousId": "ann"})
    merged = gateway.profile("userId", "bob")
    assert merged == gateway.profile("userId", "ann")
    assert keys(merged) == {("userId", "ann"), ("userId", "bob")}


def test_alias_still_obeys_the_other_limits(make) -> None:
    gateway = make({"alias_merges_identified": True, "limits": {"email": 1}})
    gateway.send({"type": "identify", "userId": "ann", "traits": {"email": "a@example.com"}},
                 {"type": "identify", "userId": "bob", "traits": {"email": "b@example.com"}})
    gateway.send({"type": "alias", "userId": "bob", "previousId": "ann"})
    assert gateway.profile("userId", "bob")["id"] != gateway.profile("userId", "ann")["id"]


# linked by which message ------------------------------------------------------------------------


def test_every_key_records_when_and_by_which_message_it_was_linked(make) -> None:
    gateway = make()
    gateway.send({"type": "track", "event": "e", "anonymousId": "a1", "messageId": "first"})
    gateway.send({"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "login",
                  "traits": {"email": "u1@example.com"}})
    found = {k["kind"]: k for k in gateway.profile("userId", "u1")["keys"]}
    assert found["anonymousId"]["linked_by"] == "first"
    assert found["userId"]["linked_by"] == "login" and found["email"]["linked_by"] == "login"
    assert found["userId"]["source"] == "web"
    assert found["anonymousId"]["linked_at"] <= found["userId"]["linked_at"]
