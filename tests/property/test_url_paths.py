"""Property: no event value changes the shape of a destination URL.

Every adapter, for every kind of message that puts an event value into a URL (and the regulation
deletions), gets random ids carrying `/ ? # % ..`, CR LF, other controls and unicode. Each
request it makes — the lookups included — is taken as urllib3 puts it on the wire
(`request_uri`: dot segments resolved, the fragment cut) and must keep its method, host, segment
count, fixed segments and query keys; the segment holding the id must decode to exactly the id.
An id the adapter may not place (`.` or `..` in a path, empty, a control character, a lone
surrogate) must end in InvalidEvent naming its field, and no request is sent with it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from adapters import DESTINATION_TYPES
from adapters.base import BatchItem, HttpRequest, InvalidEvent, LookupResponse
from adapters.mapping import js_string

EXAMPLES = settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NASTY = [
    ".", "..", "../..", "a/../b", "../../v1/users/AGENT42?replace=true#", "?x=1#", "#", "%",
    "%2e%2e", "%2F", "a b", "a+b@c.d", "k@x.io", "é", "🙂", "x\r\nX-Injected: 1", "\x00",
    "\x7f", "\x85", "a;b", "a\\b", " ", "=&", "...",
]  # fmt: skip
# (no lone surrogates: the tracking API's JSON parser refuses them, so no stored event has one;
# tests/adapters/test_urls.py checks the helper refuses them anyway)
# random text leans on the characters URLs treat specially
URL_CHARS = st.sampled_from([*"/?#%.;=&+@: \\\r\n\t", "é", "🙂", "\x85"])
IDS = st.one_of(
    st.sampled_from(NASTY),
    st.text(st.one_of(URL_CHARS, st.characters()), min_size=1, max_size=24),
    st.integers(min_value=1, max_value=10**12),
)
UNSENDABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

KUSTOMER = {"apiKey": "ku-key"}
CIO = {"siteID": "site", "apiKey": "cio-key"}
CUSTIFY = {"apiKey": "cu-key"}
CUSTOMFIT = {"apiKey": "cf key/1", "mode": "native"}
WEBHOOK = {"webhookUrl": "https://hook.example/in/events?src=gw"}
STORED = {
    "messageId": "m-1",
    "timestamp": "2026-01-01T00:00:00.000Z",
}  # every stored event has them
KU, CIO_HOST, CU = "api.kustomerapp.com", "track.customer.io", "api.custify.com"

# One expected request: method, host, path segments (decoded), query pairs (decoded). The
# string "ID" in a segment or a query value stands for the random id.
Shape = tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...]]


def unsendable_in_path(value: str) -> bool:
    return value in (".", "..") or unsendable_in_query(value)


def unsendable_in_query(value: str) -> bool:
    return value == "" or bool(UNSENDABLE.search(value))


def never(value: str) -> bool:
    return False


@dataclass(frozen=True)
class Case:
    """One way an id reaches a URL: what to run, what it must send, when it must refuse."""

    name: str
    run: Callable[[Any, Callable[[HttpRequest], LookupResponse]], list[HttpRequest]]
    shapes: tuple[Shape, ...]  # lookups and outputs, in order
    field: str = ""  # what a refusal names
    refuses: Callable[[str], bool] = unsendable_in_path
    answer: Callable[[Any], LookupResponse] = lambda v: LookupResponse(404, None)
    # the requests made before a refusal (a lookup whose answer is then refused)
    refused_after: int = 0


def transform(adapter: str, settings_: dict[str, Any], build: Callable[[Any], dict[str, Any]]):
    def run(value: Any, lookup: Callable[[HttpRequest], LookupResponse]) -> list[HttpRequest]:
        return DESTINATION_TYPES[adapter].transform({**STORED, **build(value)}, settings_, lookup)

    return run


def routed(adapter: str, settings_: dict[str, Any], build: Callable[[Any], dict[str, Any]]):
    """Router mode (the worker's batches): an error output is raised like transform's."""

    def run(value: Any, lookup: Callable[[HttpRequest], LookupResponse]) -> list[HttpRequest]:
        items = [BatchItem({**STORED, **build(value)}, settings_, key=1)]
        [output] = DESTINATION_TYPES[adapter].transform_batch(items, lookup)
        if output.error is not None:
            raise output.error
        return list(output.requests)

    return run


def deletion(adapter: str, settings_: dict[str, Any], key: str):
    def run(value: Any, send: Callable[[HttpRequest], LookupResponse]) -> list[HttpRequest]:
        DESTINATION_TYPES[adapter].delete_users(settings_, [{key: value}], send)
        return []

    return run


def device(name: str, user: Any, token: Any) -> dict[str, Any]:
    return {
        "type": "track",
        "event": name,
        "userId": user,
        "context": {"device": {"token": token}},
    }


CUSTOMERS = ("api", "v1", "customers")
CASES = [
    Case(
        "kustomer identify: kustomerId",
        transform("kustomer", KUSTOMER, lambda v: {
            "type": "identify", "userId": "u1",
            "context": {"externalId": [{"type": "kustomerId", "id": v}]}}),
        (("PUT", KU, ("v1", "customers", "ID"), (("replace", "false"),)),),
        field="kustomerId",
    ),
    Case(
        "kustomer identify: email search",
        transform("kustomer", KUSTOMER, lambda v: {
            "type": "identify", "anonymousId": "anon-1", "traits": {"email": v}}),
        (("GET", KU, ("v1", "customers", "email=ID"), ()),
         ("GET", KU, ("v1", "customers", "externalId=anon-1"), ()),
         ("POST", KU, ("v1", "customers"), ())),
        field="email",
    ),
    Case(
        "kustomer identify: userId search",
        transform("kustomer", KUSTOMER, lambda v: {"type": "identify", "userId": v}),
        (("GET", KU, ("v1", "customers", "externalId=ID"), ()),
         ("POST", KU, ("v1", "customers"), ())),
        field="userId",
    ),
    Case(
        "kustomer identify: anonymousId search",
        transform("kustomer", KUSTOMER, lambda v: {"type": "identify", "anonymousId": v}),
        (("GET", KU, ("v1", "customers", "externalId=ID"), ()),
         ("POST", KU, ("v1", "customers"), ())),
        field="anonymousId",
    ),
    Case(
        "kustomer identify: the id a lookup answers",
        transform("kustomer", KUSTOMER, lambda v: {"type": "identify", "userId": "u1"}),
        (("GET", KU, ("v1", "customers", "externalId=u1"), ()),
         ("PUT", KU, ("v1", "customers", "ID"), (("replace", "false"),))),
        field="lookup answered",
        answer=lambda v: LookupResponse(200, {"data": {"id": v}}),
        refused_after=1,
    ),
    Case(
        "kustomer track: fixed path",
        transform("kustomer", KUSTOMER, lambda v: {
            "type": "track", "event": "Paid", "userId": v, "traits": {"email": v}}),
        (("POST", KU, ("v1", "tracking", "identityEvent"), ()),),
        refuses=never,
    ),
    *[
        Case(
            f"customerio {mode} identify: userId",
            run("customerio", CIO, lambda v: {"type": "identify", "userId": v}),
            (("PUT", CIO_HOST, (*CUSTOMERS, "ID"), ()),),
            field="userId",
        )
        for mode, run in (("processor", transform), ("router v1", routed))
    ],
    Case(
        "customerio identify: email as the id",
        transform("customerio", CIO, lambda v: {"type": "identify", "traits": {"email": v}}),
        (("PUT", CIO_HOST, (*CUSTOMERS, "ID"), ()),),
        field="email",
    ),
    *[
        Case(
            f"customerio {kind}: userId",
            transform("customerio", CIO, lambda v, kind=kind: {
                "type": kind, "userId": v, "event": "Paid", "name": "Home"}),
            (("POST", CIO_HOST, (*CUSTOMERS, "ID", "events"), ()),),
            field="userId",
        )
        for kind in ("track", "page", "screen")
    ],
    Case(
        "customerio Application Installed: userId",
        transform("customerio", CIO, lambda v: device("Application Installed", v, "tok")),
        (("PUT", CIO_HOST, (*CUSTOMERS, "ID", "devices"), ()),),
        field="userId",
    ),
    Case(
        "customerio Application Uninstalled: userId",
        transform("customerio", CIO, lambda v: device("Application Uninstalled", v, "tok")),
        (("DELETE", CIO_HOST, (*CUSTOMERS, "ID", "devices", "tok"), ()),),
        field="userId",
    ),
    Case(
        "customerio Application Uninstalled: device token",
        transform("customerio", CIO, lambda v: device("Application Uninstalled", "u1", v)),
        (("DELETE", CIO_HOST, (*CUSTOMERS, "u1", "devices", "ID"), ()),),
        field="context.device.token",
    ),
    Case(
        "customerio group: fixed path",
        transform("customerio", CIO, lambda v: {"type": "group", "userId": v, "groupId": v}),
        (("POST", CIO_HOST, ("api", "v2", "batch"), ()),),
        refuses=never,
    ),
    Case(
        "customerio router v2: fixed path",
        routed("customerio", {**CIO, "v2Batching": True}, lambda v: device(
            "Application Uninstalled", v, v)),
        (("POST", CIO_HOST, ("api", "v2", "batch"), ()),),
        refuses=never,
    ),
    Case(
        "customerio deletion: userId",
        deletion("customerio", CIO, "userId"),
        (("DELETE", CIO_HOST, (*CUSTOMERS, "ID"), ()),),
        field="userId",
    ),
    Case(
        "customerio deletion: email",
        deletion("customerio", CIO, "email"),
        (("DELETE", CIO_HOST, (*CUSTOMERS, "ID"), ()),),
        field="email",
    ),
    Case(
        "custify deletion: userId",
        deletion("custify", CUSTIFY, "userId"),
        (("DELETE", CU, ("people",), (("user_id", "ID"),)),),
        field="userId",
        refuses=unsendable_in_query,
    ),
    *[
        Case(
            f"custify {kind}: fixed path",
            transform("custify", CUSTIFY, lambda v, kind=kind: {
                "type": kind, "userId": v, "event": "Paid", "groupId": v}),
            shapes,
            refuses=never,
            answer=lambda v: LookupResponse(200, {}),
        )
        for kind, shapes in (
            ("identify", (("POST", CU, ("people",), ()),)),
            ("track", (("POST", CU, ("event",), ()),)),
            ("group", (("POST", CU, ("company",), ()), ("POST", CU, ("people",), ()))),
        )
    ],
    Case(
        "customfit native track: fixed path and key",
        transform("customfit", CUSTOMFIT, lambda v: {
            "type": "track", "event": v, "userId": v}),
        (("POST", "api.customfit.ai", ("v1", "cfe"), (("cfenc", "cf key/1"),)),),
        refuses=never,
    ),
    *[
        Case(
            f"{name} track: the configured URL",
            transform(name, config, lambda v: {"type": "track", "event": v, "userId": v}),
            (("POST", "hook.example", ("in", "events"), (("src", "gw"),)),),
            refuses=never,
        )
        for name, config in (
            ("webhook", WEBHOOK),
            ("customfit", {"apiKey": "k", "endpointUrl": WEBHOOK["webhookUrl"]}),
        )
    ],
    Case(
        "console: sends nothing",
        transform("console", {}, lambda v: {"type": "track", "event": v, "userId": v}),
        (),
        refuses=never,
    ),
]  # fmt: skip


def on_the_wire(request: HttpRequest) -> Shape:
    """What urllib3 sends for `request`, decoded segment by segment."""
    url = parse_url(request.url)
    target = url.request_uri
    path, _, query = target.partition("?")
    segments = tuple(unquote(s, errors="strict") for s in path.split("/")[1:])
    pairs = tuple(parse_qsl(query, keep_blank_values=True, errors="strict"))
    return request.method, url.host or "", segments, pairs


def expected(shape: Shape, value: str) -> Shape:
    method, host, segments, pairs = shape
    return (
        method,
        host,
        tuple(s.replace("ID", value) for s in segments),
        tuple((k, v.replace("ID", value)) for k, v in pairs),
    )


def check(case: Case, raw: Any) -> None:
    value = js_string(raw)
    sent: list[HttpRequest] = []

    def lookup(request: HttpRequest) -> LookupResponse:
        sent.append(request)
        return case.answer(raw)

    try:
        outputs = case.run(raw, lookup)
    except InvalidEvent as refusal:
        assert case.refuses(value), f"{case.name}: {value!r} refused: {refusal.reason}"
        assert case.field in refusal.reason, refusal.reason
        assert len(sent) == case.refused_after, f"{case.name}: sent {sent} before refusing"
        for request, shape in zip(sent, case.shapes, strict=False):
            assert on_the_wire(request) == expected(shape, value)
        return
    assert not case.refuses(value), f"{case.name}: {value!r} was sent: {sent + outputs}"
    actual = [on_the_wire(r) for r in sent + outputs]
    assert actual == [expected(shape, value) for shape in case.shapes], case.name


@EXAMPLES
@given(raw=IDS)
def test_no_id_changes_a_url_shape(raw: Any) -> None:
    for case in CASES:
        check(case, raw)


def test_every_adapter_is_covered() -> None:
    covered = {case.name.split()[0].rstrip(":") for case in CASES}
    assert covered == set(DESTINATION_TYPES)
