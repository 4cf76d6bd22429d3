"""Event values in destination URLs (adapters/urls.py): encoded as one path segment or one query
value, or refused as an invalid event naming the field. The requests are checked as urllib3
would send them (`parse_url(...).request_uri`: dot segments resolved, `#` cut)."""

from __future__ import annotations

from typing import Any

import pytest
from urllib3.util import parse_url

from adapters.base import HttpRequest, InvalidEvent, LookupResponse
from adapters.custify import ADAPTER as CUSTIFY
from adapters.customerio import ADAPTER as CUSTOMERIO
from adapters.kustomer import ADAPTER as KUSTOMER
from adapters.urls import URI_COMPONENT_SAFE, path_segment, query_value

KUSTOMER_SETTINGS = {"apiKey": "ku-key"}
CIO_SETTINGS = {"siteID": "site", "apiKey": "cio-key"}
H2_KUSTOMER_ID = "../../v1/users/AGENT42?replace=true#"
H2_EMAIL = "a@b.c/../../../v1/orgs/current?x=1#"


class Recorder:
    """A lookup / send that records every request and answers `status`."""

    def __init__(self, status: int = 404, body: Any = None) -> None:
        self.requests: list[HttpRequest] = []
        self.status, self.body = status, body

    def __call__(self, request: HttpRequest) -> LookupResponse:
        self.requests.append(request)
        return LookupResponse(self.status, self.body)


def sent_as(url: str) -> str:
    """The request target urllib3 puts on the wire for `url`."""
    return parse_url(url).request_uri


@pytest.mark.parametrize(
    "value,segment,component,query",
    [
        ("k+1@x.io", "k+1@x.io", "k%2B1%40x.io", "k%2B1%40x.io"),
        ("a b/c?d#e%f;g", *["a%20b%2Fc%3Fd%23e%25f%3Bg"] * 3),
        ("é🙂", *["%C3%A9%F0%9F%99%82"] * 3),
        ("..x", "..x", "..x", "..x"),
        (12345, "12345", "12345", "12345"),
    ],
)
def test_values_are_encoded(value: Any, segment: str, component: str, query: str) -> None:
    assert path_segment(value, "f") == segment
    assert path_segment(value, "f", safe=URI_COMPONENT_SAFE) == component
    assert query_value(value, "f") == query


@pytest.mark.parametrize(
    "value,why",
    [
        (".", "'.' cannot be sent"),
        ("..", "'..' cannot be sent"),
        ("", "is empty"),
        ("x\r\nX-Injected: 1", "control character (U+000D)"),
        ("\x00", "control character (U+0000)"),
        ("a\x7f", "control character (U+007F)"),
        ("a\x85", "control character (U+0085)"),
        ("a\ud800", "lone surrogate (U+D800)"),
    ],
)
def test_unsendable_path_values_are_refused(value: str, why: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        path_segment(value, "traits.email")
    assert caught.value.reason.startswith("traits.email ") and why in caught.value.reason


def test_dots_are_fine_in_a_query_value_but_controls_are_not() -> None:
    assert query_value("..", "userId") == ".."
    with pytest.raises(InvalidEvent, match="userId holds a control character"):
        query_value("a\nb", "userId")


def test_h2_kustomer_id_stays_one_segment_of_the_customers_path() -> None:
    lookups = Recorder()
    event = {
        "type": "identify",
        "userId": "u1",
        "context": {"externalId": [{"type": "kustomerId", "id": H2_KUSTOMER_ID}]},
    }
    [request] = KUSTOMER.transform(event, KUSTOMER_SETTINGS, lookups)
    assert lookups.requests == []
    assert request.method == "PUT"
    assert sent_as(request.url) == (
        "/v1/customers/..%2F..%2Fv1%2Fusers%2FAGENT42%3Freplace=true%23?replace=false"
    )


def test_h2_kustomer_email_stays_in_its_search_segment() -> None:
    lookups = Recorder(404)
    event = {"type": "identify", "userId": "u1", "traits": {"email": H2_EMAIL}}
    [request] = KUSTOMER.transform(event, KUSTOMER_SETTINGS, lookups)
    assert [sent_as(r.url) for r in lookups.requests] == [
        "/v1/customers/email=a@b.c%2F..%2F..%2F..%2Fv1%2Forgs%2Fcurrent%3Fx=1%23",
        "/v1/customers/externalId=u1",
    ]
    assert (request.method, sent_as(request.url)) == ("POST", "/v1/customers")


@pytest.mark.parametrize(
    "event,field",
    [
        ({"context": {"externalId": [{"type": "kustomerId", "id": ".."}]}}, "kustomerId"),
        ({"traits": {"email": "."}}, "email"),
        ({"traits": {"email": "k@x.io"}, "anonymousId": "a\r\nb"}, "anonymousId"),
    ],
)
def test_kustomer_refuses_before_any_lookup(event: dict[str, Any], field: str) -> None:
    lookups = Recorder()
    with pytest.raises(InvalidEvent) as caught:
        KUSTOMER.transform(
            {"type": "identify", "userId": "u1", **event}, KUSTOMER_SETTINGS, lookups
        )
    assert field in caught.value.reason
    assert lookups.requests == []


def test_kustomer_refuses_a_looked_up_id_that_is_a_dot_segment() -> None:
    lookups = Recorder(200, {"data": {"id": ".."}})
    with pytest.raises(InvalidEvent, match="customer id Kustomer's lookup answered"):
        KUSTOMER.transform({"type": "identify", "userId": "u1"}, KUSTOMER_SETTINGS, lookups)


def test_m2_customerio_device_token_dot_dot_is_refused() -> None:
    event = {
        "type": "track",
        "userId": "victim",
        "event": "Application Uninstalled",
        "context": {"device": {"token": ".."}},
    }
    with pytest.raises(InvalidEvent, match=r"context\.device\.token '\.\.' cannot be sent"):
        CUSTOMERIO.transform(event, CIO_SETTINGS, Recorder())


@pytest.mark.parametrize("kind", ["identify", "track", "page", "screen"])
def test_m2_customerio_user_id_dot_dot_is_refused(kind: str) -> None:
    event = {"type": kind, "userId": "..", "event": "Paid", "name": "Home"}
    with pytest.raises(InvalidEvent, match=r"userId '\.\.' cannot be sent"):
        CUSTOMERIO.transform(event, CIO_SETTINGS, Recorder())


def test_customerio_email_as_id_is_named_email() -> None:
    event = {"type": "identify", "traits": {"email": "."}}
    with pytest.raises(InvalidEvent, match=r"^email '\.' cannot be sent"):
        CUSTOMERIO.transform(event, CIO_SETTINGS, Recorder())


def test_customerio_deletion_refuses_every_id_before_deleting_any() -> None:
    sends = Recorder(200)
    with pytest.raises(InvalidEvent, match=r"userId '\.\.' cannot be sent"):
        CUSTOMERIO.delete_users(CIO_SETTINGS, [{"userId": "u1"}, {"userId": ".."}], sends)
    assert sends.requests == []
    CUSTOMERIO.delete_users(CIO_SETTINGS, [{"userId": "a/b?c"}, {"email": "k@x.io"}], sends)
    assert [sent_as(r.url) for r in sends.requests] == ["/api/v1/customers/a%2Fb%3Fc"]


def test_custify_deletion_refuses_a_control_character_before_deleting_any() -> None:
    sends = Recorder(200)
    with pytest.raises(InvalidEvent, match="userId holds a control character"):
        CUSTIFY.delete_users({"apiKey": "cu"}, [{"userId": "u1"}, {"userId": "x\r\ny"}], sends)
    assert sends.requests == []
