"""Why two keys are one profile, and splitting them: the admin API, `gateway identities` and
the console, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway import create_app
from gateway.cli.commands import main
from gateway.config import from_mapping
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, base_config, write_toml
from tests.helpers import ADMIN_AUTH, basic, stored_events


@pytest.fixture
def gateway(database_url: str, tmp_path: Path):
    raw = base_config(database_url)
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    app = create_app(from_mapping(raw))
    yield app.test_client(), path
    app.extensions["gateway.engine"].dispose()


def send(client, *messages: dict[str, Any]) -> None:
    response = client.post("/v1/batch", json={"batch": list(messages)}, headers=basic(WRITE_KEY))
    assert response.status_code == 200, response.get_data(as_text=True)


def by_key(client, **given: str) -> dict[str, Any]:
    response = client.get("/admin/v1/identities", query_string=given, headers=ADMIN_AUTH)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def unlink(client, profile_id: Any, body: Any) -> Any:
    return client.delete(f"/admin/v1/identities/{profile_id}/keys", json=body,
                         headers=ADMIN_AUTH)


def history(client) -> None:
    send(client, {"type": "track", "event": "e", "anonymousId": "laptop", "messageId": "m1"})
    send(client, {"type": "identify", "userId": "ann", "anonymousId": "laptop",
                  "messageId": "m2", "traits": {"email": "ann@example.com"}})
    send(client, {"type": "identify", "userId": "bob", "messageId": "m3",
                  "traits": {"email": "ann@example.com"}})


def test_a_profile_by_id_says_when_and_by_which_message_each_key_was_linked(gateway) -> None:
    client, _ = gateway
    history(client)
    ann = by_key(client, user_id="ann")
    response = client.get(f"/admin/v1/identities/{ann['id']}", headers=ADMIN_AUTH)
    assert response.status_code == 200
    found = response.get_json()
    assert found == ann
    linked = {k["kind"]: (k["linked_by"], k["source"]) for k in found["keys"]}
    assert linked == {"anonymousId": ("m1", "web"), "userId": ("m2", "web"),
                      "email": ("m2", "web")}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT.*", k["linked_at"]) for k in found["keys"])
    bob = by_key(client, user_id="bob")
    assert found["conflicts"] == [{
        "key": {"kind": "email", "value": "ann@example.com"}, "reason": "limit",
        "message_id": "m3", "source": "web", "at": found["conflicts"][0]["at"],
        "other_profile": bob["id"], "held_here": True}]
    assert client.get("/admin/v1/identities/999999", headers=ADMIN_AUTH).status_code == 404
    assert client.get("/admin/v1/identities/99999999999999999999",
                      headers=ADMIN_AUTH).status_code == 400
    assert client.get(f"/admin/v1/identities/{ann['id']}").status_code == 401


def test_unlink_splits_one_key_off_and_its_later_messages_link_there(gateway) -> None:
    client, _ = gateway
    history(client)
    ann = by_key(client, user_id="ann")
    response = unlink(client, ann["id"], {"kind": "anonymousId", "value": "laptop"})
    assert response.status_code == 200, response.get_data(as_text=True)
    result = response.get_json()
    assert result["from_profile"] == ann["id"] and result["to_profile"] != ann["id"]
    assert {k["kind"] for k in result["profile"]["keys"]} == {"userId", "email"}
    laptop = by_key(client, anonymous_id="laptop")
    assert laptop["id"] == result["to_profile"]
    assert laptop["conflicts"][0]["reason"] == "unlinked"
    assert laptop["conflicts"][0]["other_profile"] == ann["id"]
    send(client, {"type": "identify", "anonymousId": "laptop", "traits": {"name": "Bob"},
                  "messageId": "m4"})
    assert by_key(client, anonymous_id="laptop")["traits"] == {"name": "Bob"}
    assert by_key(client, user_id="ann")["traits"] == {"email": "ann@example.com"}
    assert [e["message_id"] for e in stored_events(client.application.extensions[
        "gateway.engine"])] == ["m1", "m2", "m3", "m4"]


def test_unlink_refuses_what_it_cannot_do(gateway) -> None:
    client, _ = gateway
    history(client)
    bob = by_key(client, user_id="bob")
    ann = by_key(client, user_id="ann")
    assert unlink(client, bob["id"], {"kind": "email", "value": "ann@example.com"}
                  ).status_code == 404  # Ann's profile holds it
    only = unlink(client, bob["id"], {"kind": "userId", "value": "bob"})
    assert only.status_code == 409 and only.get_json()["code"] == "last_key"
    for body in ({"kind": "phone", "value": "1"}, {"kind": "email"}, ["email"],
                 {"kind": "email", "value": ""}, {"kind": "email", "value": "x", "more": 1}):
        response = unlink(client, ann["id"], body)
        assert response.status_code == 400, body
    emailed = unlink(client, ann["id"], {"kind": "email", "value": " ANN@example.com "})
    assert emailed.status_code == 200  # compared as ingest stores emails
    assert by_key(client, email="ann@example.com")["id"] != ann["id"]


def test_gateway_identities_shows_links_and_conflicts_and_unlinks(gateway, capsys) -> None:
    client, path = gateway
    history(client)
    ann = by_key(client, user_id="ann")
    assert main(["--config", str(path), "identities", str(ann["id"])]) == 0
    out = capsys.readouterr().out
    assert f"profile {ann['id']}:" in out
    assert re.search(r"anonymousId\s+laptop\s+linked \S+ by message m1 \(source web\)", out)
    assert re.search(r"email\s+ann@example.com\s+limit: message m3 \(source web\)", out)
    assert main(["--config", str(path), "identities", "--user-id", "ann", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == ann["id"]

    assert main(["--config", str(path), "identities", "unlink", str(ann["id"]),
                 "--kind", "anonymousId", "--value", "laptop", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert by_key(client, anonymous_id="laptop")["id"] == result["to_profile"]
    assert main(["--config", str(path), "identities", "unlink", str(ann["id"]),
                 "--kind", "anonymousId", "--value", "laptop"]) == 1  # no longer there
    assert "holds no anonymousId" in capsys.readouterr().err
    assert main(["--config", str(path), "identities", "unlink", str(ann["id"])]) == 2
    assert main(["--config", str(path), "identities", "x1"]) == 2
    assert main(["--config", str(path), "identities", "424242"]) == 1


def test_the_console_event_page_shows_links_and_conflicts(gateway) -> None:
    client, _ = gateway
    history(client)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").get_data(
        as_text=True)).group(1)
    assert client.post("/console/login", data={"csrf": token, "token": ADMIN_TOKEN}
                       ).status_code == 302
    engine = client.application.extensions["gateway.engine"]
    bob_event = next(e for e in stored_events(engine) if e["message_id"] == "m3")
    page = client.get(f"/console/events/{bob_event['id']}").get_data(as_text=True)
    assert 'id="profile-keys"' in page and 'id="profile-conflicts"' in page
    conflicts = page.split('id="profile-conflicts"')[1].split("</table>")[0]
    assert "email: ann@example.com" in conflicts and "m3" in conflicts and "holds it" in conflicts
    ann_event = next(e for e in stored_events(engine) if e["message_id"] == "m1")
    page = client.get(f"/console/events/{ann_event['id']}").get_data(as_text=True)
    keys = page.split('id="profile-keys"')[1].split("</table>")[0]
    assert "laptop" in keys and "m1" in keys and "m2" in keys


@pytest.mark.parametrize(("identity", "status", "said"), [
    (None, "ok", "18 blocked values (default list); at most userId 1, anonymousId 1000, email 5 "
                 "per profile; alias never merges two identified profiles"),
    ({"extra_blocked_values": ["n/a"]}, "ok", "19 blocked values (default list + 1 added)"),
    ({"blocked_values": ["n/a"]}, "WARN", "blocked_values leaves out 'undefined', 'null', '0', "
                                          "'[object object]'"),
    ({"limits": {"userId": 2}}, "WARN", "limits.userId > 1: two identified people"),
])
def test_gateway_check_reports_the_identity_rules(database_url: str, tmp_path: Path, capsys,
                                                  identity, status, said) -> None:
    raw = base_config(database_url, destinations=[],
                      **({"identity": identity} if identity else {}))
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    path.chmod(0o600)
    assert main(["--config", str(path), "check"]) == 0  # a warning is not a failure
    [line] = [line for line in capsys.readouterr().out.splitlines() if " identity " in line]
    assert line.split()[0] == status and said in line, line


def test_a_mistake_in_the_identity_table_stops_start_up_with_its_field(
        database_url: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "gateway.toml"
    write_toml(path, base_config(database_url, identity={"limits": {"userid": 1}}))
    assert main(["--config", str(path), "check"]) == 1
    out = capsys.readouterr().out
    assert "[identity]: limits: unknown field 'userid' (did you mean 'userId'?)" in out
