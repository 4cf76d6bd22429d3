"""URL safety end to end: event values sent through the public write key reach the
destination's stand-in only inside their own path segment, and a value no encoding makes safe
(`..`, CR LF) ends the delivery `dead` with a reason naming the field, nothing sent."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from tests.helpers import run, stored_deliveries
from tests.standin import Answer, StandIn

KUSTOMER = {"name": "kustomer", "type": "kustomer", "settings": {"apiKey": "ku-key"}}
CUSTOMERIO = {
    "name": "cio",
    "type": "customerio",
    "settings": {"siteID": "site-1", "apiKey": "cio-key"},
}
H2_KUSTOMER_ID = "../../v1/users/AGENT42?replace=true#"
H2_EMAIL = "a@b.c/../../../v1/orgs/current?x=1#"


def identify(user: str, **fields: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "messageId": f"m-{user}", **fields}


def by_user(worker: Any) -> dict[str, dict[str, Any]]:
    return {d["user_key"]: d for d in stored_deliveries(worker.engine)}


def test_h2_kustomer_values_stay_in_their_segment_or_are_refused(
    database_url: str, standin: StandIn
) -> None:
    standin.answer_for = lambda r: Answer(404, {"errors": []}) if r.method == "GET" else None
    worker = run(
        database_url,
        standin,
        KUSTOMER,
        identify("u1", context={"externalId": [{"type": "kustomerId", "id": H2_KUSTOMER_ID}]}),
        identify("u2", traits={"email": H2_EMAIL}),
        identify("u3", context={"externalId": [{"type": "kustomerId", "id": ".."}]}),
        identify("u4", traits={"email": "k@x.io\r\nX-Injected: 1"}),
    )
    sent = [(r.method, r.path) for r in standin.requests]
    put = ("PUT", "/v1/customers/..%2F..%2Fv1%2Fusers%2FAGENT42%3Freplace=true%23?replace=false")
    assert put in sent
    assert unquote(put[1].split("/")[3].partition("?")[0]) == H2_KUSTOMER_ID
    assert [request for request in sent if request != put] == [  # u2's, in order
        ("GET", "/v1/customers/email=a@b.c%2F..%2F..%2F..%2Fv1%2Forgs%2Fcurrent%3Fx=1%23"),
        ("GET", "/v1/customers/externalId=u2"),
        ("POST", "/v1/customers"),
    ]
    assert all(r.headers.get("Authorization") == "Bearer ku-key" for r in standin.requests)
    deliveries = by_user(worker)
    assert (deliveries["u1"]["state"], deliveries["u2"]["state"]) == ("delivered", "delivered")
    for user, field in (("u3", "kustomerId '..'"), ("u4", "email holds a control character")):
        assert deliveries[user]["state"] == "dead"
        assert field in deliveries[user]["last_error"]
        assert deliveries[user]["attempts"] == 1
    worker.close()


def test_m2_customerio_dot_dot_is_refused_not_sent(database_url: str, standin: StandIn) -> None:
    worker = run(
        database_url,
        standin,
        CUSTOMERIO,
        {
            "type": "track",
            "userId": "victim",
            "messageId": "m-token",
            "event": "Application Uninstalled",
            "context": {"device": {"token": ".."}},
        },
        identify(".."),
        identify("a/b?c#d"),
    )
    assert [(r.method, r.path) for r in standin.requests] == [
        ("PUT", "/api/v1/customers/a%2Fb%3Fc%23d")
    ]
    deliveries = by_user(worker)
    assert deliveries["victim"]["state"] == "dead"
    assert "context.device.token '..'" in deliveries["victim"]["last_error"]
    assert deliveries[".."]["state"] == "dead"
    assert "userId '..'" in deliveries[".."]["last_error"]
    assert deliveries["a/b?c#d"]["state"] == "delivered"
    worker.close()
