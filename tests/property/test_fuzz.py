"""Property-based fuzzing of every tracking path and every admin parameter (hypothesis).

Inputs are generated as JSON *text* and raw bytes, so they can carry what a Python object
cannot: numbers past 64 bits or past a double (1e400), lone surrogates, NUL escapes, invalid
UTF-8, garbage and truncated gzip, nesting past the limit. The properties:

- no answer is a 500, and none is a 503 (the databases are up: a 503 tells SDKs to retry an
  input that can never succeed);
- SQLite and PostgreSQL give the same answer to the same input;
- one bad message never costs its batch's valid neighbours.

One app per database per test function; examples are derandomised and bounded so the whole
file stays well under a minute on both databases.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from gateway import create_app
from gateway.config import from_mapping
from gateway.store.models import events
from tests.conftest import ADMIN_TOKEN, OTHER_KEY, POSTGRES_URL, WRITE_KEY, base_config, pg_schema
from tests.helpers import basic

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
TRACKING_STATUSES = {200, 400, 401, 404, 413, 415}
ADMIN_STATUSES = {200, 400, 404, 409}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Raw(str):
    """JSON text inserted verbatim (numbers no Python float holds, broken nesting)."""


def encode(value: Any) -> str:
    """JSON text for `value`; strings keep NUL and lone surrogates as \\u escapes."""
    if isinstance(value, Raw):
        return str(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "1e400"
    if isinstance(value, str):
        return json.dumps(value)  # ensure_ascii: "\u0000", "\ud800"
    if isinstance(value, list):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return "{" + ",".join(f"{json.dumps(k)}:{encode(v)}" for k, v in value.items()) + "}"


# -- values ---------------------------------------------------------------------------------

EDGE_TIMES = [
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-00:01", "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z", "0001-01-01", "9999-12-31", "2024-02-30T00:00:00Z",
    "2024-01-01T00:00:00+24:00", "2024-01-01T25:00:00Z", "2024-01-01T00:00:00.123456789Z",
    "2024-06-01T12:00:00", "2024-06-01T12:00:00.000Z", "1970-01-01T00:00:00Z", "now", "",
    "2024-06-01T12:00:00\u0000Z", "+002024-06-01T12:00:00Z", "0000-01-01T00:00:00Z",
]
EDGE_NUMBERS = [0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63),
                -(2**63) - 1, 10**30, -(10**30), 0.5, -0.0, 1e308, -1e308, 5e-324,
                Raw("1e400"), Raw("-1e400"), Raw("1E-400"), Raw("-0"), Raw("1" * 400),
                Raw("123456789012345678901234567890.5e10")]
EDGE_STRINGS = ["", " ", "\u0000", "a\u0000b", "\u0000\u0000", "\ud800", "x\udfff", "\ufeff",
                "\u202e", "null", "0", "-1", "x" * 600, "é" * 501, " padded ",
                "a" * 990 + "@example.com", "ANN@Example.COM\u0000", "日本語", "🙂" * 300]

ascii_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=12)
any_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
strings = st.one_of(st.sampled_from(EDGE_STRINGS), ascii_text, any_text,
                    st.sampled_from(EDGE_TIMES),
                    st.builds(lambda a, b: f"{a}\u0000{b}", ascii_text, ascii_text))
numbers = st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(-(2**70), 2**70),
                    st.floats(allow_nan=False, allow_infinity=False))
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
keys = st.one_of(st.sampled_from(["", "\u0000", "a\u0000", "email", "$set", "x" * 300, "type",
                                  "userId", "All"]), ascii_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
objects = st.dictionaries(keys, json_values, max_size=5)


def nested(depth: int) -> Raw:
    return Raw('{"a":' * depth + "1" + "}" * depth)


deep = st.sampled_from([nested(63), nested(64), nested(65), nested(200), nested(1100),
                        Raw("[" * 70 + "]" * 70), Raw("[" * 2000 + "]" * 2000)])
ids = st.one_of(strings, numbers, st.sampled_from([None, True, [], {}, ["u"], {"id": "u"}]))
times = st.one_of(st.sampled_from(EDGE_TIMES), st.datetimes().map(lambda d: d.isoformat()),
                  st.builds(lambda d, h, m, sign: f"{d.isoformat()}{sign}{h:02d}:{m:02d}",
                            st.datetimes(), st.integers(0, 23), st.integers(0, 59),
                            st.sampled_from("+-")),
                  scalars)
traits = st.one_of(objects, st.builds(lambda o, email: {**o, "email": email}, objects,
                                      st.one_of(strings, numbers, st.none())))
TYPES = ["identify", "track", "page", "screen", "group", "alias"]
FIELDS = {
    "type": st.one_of(st.sampled_from(TYPES), scalars),
    "userId": ids, "anonymousId": ids, "previousId": ids, "groupId": ids,
    "messageId": st.one_of(ids, st.sampled_from(["m-1", "m-2", "x" * 101, "x" * 300])),
    "event": st.one_of(strings, scalars), "name": scalars, "category": scalars,
    "context": st.one_of(objects, st.builds(lambda t: {"traits": t}, traits), scalars),
    "properties": st.one_of(objects, json_values), "traits": st.one_of(traits, scalars),
    "integrations": st.one_of(objects, scalars, st.just({"All": False})),
    "timestamp": times, "originalTimestamp": times, "sentAt": times,
    "writeKey": st.one_of(st.sampled_from([WRITE_KEY, OTHER_KEY, "nope"]), scalars),
}


@st.composite
def messages(draw) -> dict[str, Any]:
    """A valid message with a few fields (sometimes all) replaced by generated values, so most
    inputs get past validation and reach the database."""
    base = {"type": draw(st.sampled_from(TYPES)), "event": "E", "groupId": "g", "previousId": "p",
            "userId": draw(st.sampled_from(["u1", "u2", "a" * 600, "b" * 600]))}
    if draw(st.integers(0, 4)) == 0:
        base.update(draw(objects))  # extra keys, odd ones included
    names = draw(st.one_of(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True),
                           st.lists(st.sampled_from(sorted(FIELDS)), unique=True)))
    return {**base, **{name: draw(FIELDS[name]) for name in names}}


elements = st.one_of(messages(), messages(), messages(), json_values)


# -- requests -------------------------------------------------------------------------------

@dataclass
class Call:
    method: str
    path: str
    data: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""

    def send(self, client):
        return client.open(self.path, method=self.method, data=self.data, headers=self.headers,
                           query_string=self.query)


def _body_bytes(text: str, encoding: str) -> tuple[bytes, dict[str, str]]:
    raw = text.encode("utf-8")
    if encoding == "plain":
        return raw, {}
    if encoding == "invalid-utf8":
        return raw[:1] + b"\xff\xed\xa0\x80" + raw[1:], {}
    if encoding == "gzip":
        return gzip.compress(raw), {"Content-Encoding": "gzip"}
    if encoding == "truncated-gzip":
        return gzip.compress(raw)[:-5], {"Content-Encoding": "gzip"}
    if encoding == "garbage-gzip":
        return b"\x1f\x8b\x08garbage" + raw[:20], {"Content-Encoding": "gzip"}
    return raw, {"Content-Encoding": encoding}


AUTHS = st.sampled_from(["basic"] * 6 + ["body", "body", "bearer", "none", "bad-base64",
                                       "unknown", "disabled"])
ENCODINGS = st.sampled_from(["plain"] * 6 + ["gzip", "gzip", "invalid-utf8", "truncated-gzip",
                                             "garbage-gzip", "br"])
SINGLE_PATHS = [f"/v1/{t}" for t in TYPES] + [f"/v1/{t[0]}" for t in TYPES] + ["/v1/m",
                                                                                  "/v1/zzz"]
BATCH_PATHS = ["/v1/batch", "/v1/import", "/v1/b", "/beacon/v1/batch"]


@st.composite
def tracking_calls(draw) -> Call:
    path = draw(st.sampled_from(SINGLE_PATHS + BATCH_PATHS))
    if path in BATCH_PATHS:
        body: Any = {"batch": draw(st.one_of(st.lists(elements, max_size=4), json_values))}
        for name in ("sentAt", "context", "integrations"):
            if draw(st.booleans()):
                body[name] = draw(FIELDS[name] if name != "sentAt" else times)
    else:
        body = draw(elements)
    auth = draw(AUTHS)
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", ""]))}
    query = ""
    if auth == "basic":
        headers.update(basic(WRITE_KEY))
    elif auth in ("body", "bearer") and isinstance(body, dict):
        body = {**body, "writeKey": WRITE_KEY}
        if auth == "bearer":
            headers["Authorization"] = "Bearer some-token"
    elif auth == "bad-base64":
        headers["Authorization"] = "Basic %%%"
    elif auth in ("unknown", "disabled"):
        headers.update(basic("wk_unknown" if auth == "unknown" else "wk_disabled"))
    if path == "/beacon/v1/batch" and auth != "none":
        headers.pop("Authorization", None)
        query = "writeKey=" + (WRITE_KEY if auth in ("basic", "body") else "wk_unknown")
    text = draw(st.one_of(st.just(None), deep, st.sampled_from(["", "[]", "null", "1", '"s"',
                                                                "{", '{"batch": [', "\u0000"])))
    text = encode(body) if text is None or draw(st.integers(0, 3)) else str(text)
    data, extra = _body_bytes(text, draw(ENCODINGS))
    return Call("POST", path, data, {**headers, **extra}, query)


def _percent(value: str | bytes) -> str:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")
    return urllib.parse.quote(raw, safe="")


query_values = st.one_of(strings, st.sampled_from([b"\xff", b"\xed\xa0\x80", b"%", b"a\x00"]),
                         numbers.map(str), st.sampled_from(EDGE_TIMES))


@st.composite
def pixel_calls(draw) -> Call:
    pairs = [("writeKey", draw(st.sampled_from([WRITE_KEY, WRITE_KEY, "", "nope", "wk_disabled",
                                                WRITE_KEY + "\u0000"])))]
    names = st.one_of(st.sampled_from(["userId", "anonymousId", "event", "messageId",
                                       "properties.revenue", "properties", "context.ip",
                                       "traits.email", "a..b", ".", "originalTimestamp",
                                       "sentAt", "properties.\u0000k", "type"]), ascii_text)
    pairs += draw(st.lists(st.tuples(names, query_values), max_size=6))
    query = "&".join(f"{_percent(k)}={_percent(v)}" for k, v in pairs)
    return Call("GET", f"/pixel/v1/{draw(st.sampled_from(['track', 'page', 'other']))}",
                query=query)


def cursor_text(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode("utf-8", "surrogatepass")).decode().rstrip("=")


CURSORS = st.one_of(st.sampled_from(["", "nonsense", "aWQ6", "=", "%%", "aWQ6MQ", "aWQ6LTE"]),
                    st.sampled_from(["id:0", "id:-1", "id:1", "id:99999999999999999999999",
                                     "id:9223372036854775807", "id:9223372036854775808",
                                     "id:" + "9" * 5000, "id:1e3", "id: 5", "id:\u0000",
                                     "x:1", "id:١٢"]).map(cursor_text),
                    strings)
ID_TEXTS = ["0", "1", "2", "007", "9223372036854775807", "9223372036854775808",
            "99999999999999999999999", "9" * 5000, "-1", "abc", "1.5", "١"]
param_values = st.one_of(query_values, st.sampled_from(ID_TEXTS))
EVENT_PARAMS = ["source", "type", "event", "user_id", "anonymous_id", "email", "since", "until",
                "limit", "cursor", "colour"]
DELIVERY_PARAMS = ["destination", "state", "event_id", "since", "until", "limit", "cursor",
                   "colour"]
IDENTITY_PARAMS = ["user_id", "anonymous_id", "email", "colour"]


@st.composite
def admin_calls(draw, ids: list[str] = ID_TEXTS) -> Call:
    route = draw(st.sampled_from(["events", "event", "deliveries", "retry", "identities",
                                  "replay"]))
    if route in ("event", "retry"):
        ident = draw(st.sampled_from(ids))
        path = f"/admin/v1/events/{ident}" if route == "event" else \
            f"/admin/v1/deliveries/{ident}/retry"
        return Call("POST" if route == "retry" else "GET", path, headers=ADMIN)
    if route == "replay":
        body = draw(st.one_of(
            st.fixed_dictionaries({"destination": st.one_of(
                st.sampled_from(["cio", "kustomer-main", "paused", "nope"]), scalars)},
                optional={"filter": st.one_of(st.dictionaries(
                    st.sampled_from(EVENT_PARAMS), st.one_of(param_values.filter(
                        lambda v: isinstance(v, str)), scalars), max_size=3), scalars),
                    "dry_run": st.one_of(st.booleans(), scalars)}),
            json_values))
        text = encode(body) if draw(st.integers(0, 9)) else draw(st.sampled_from(
            ["", "{", "[]", '{"destination": "cio", "filter": {"since": NaN}}',
             '{"destination": "cio", "filter": {"user_id": "\\ud800"}}']))
        return Call("POST", "/admin/v1/replay", text.encode("utf-8", "surrogatepass"),
                    {**ADMIN, "Content-Type": "application/json"})
    names = {"events": EVENT_PARAMS, "deliveries": DELIVERY_PARAMS,
             "identities": IDENTITY_PARAMS}[route]
    values = {"cursor": CURSORS, "since": st.one_of(st.sampled_from(EDGE_TIMES), times.map(str)),
              "until": st.sampled_from(EDGE_TIMES)}
    pairs = []
    for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        value = draw(values.get(name, param_values))
        pairs.append((name, value if isinstance(value, bytes) else str(value)))
    query = "&".join(f"{_percent(k)}={_percent(v)}" for k, v in pairs)
    return Call("GET", f"/admin/v1/{route}", headers=ADMIN, query=query)


any_calls = st.one_of(tracking_calls(), tracking_calls(), pixel_calls(), admin_calls())


# -- properties -----------------------------------------------------------------------------

def _check(call: Call, response, statuses: set[int]) -> None:
    assert response.status_code in statuses, (call, response.status_code,
                                               response.get_data(as_text=True)[:500])


@settings(FUZZ, max_examples=400)
@given(call=any_calls)
def test_no_input_fails_the_server(client, call: Call) -> None:
    response = call.send(client)
    event(f"{call.path.split('/')[1]} {response.status_code}")
    _check(call, response, TRACKING_STATUSES | ADMIN_STATUSES)
    if call.path.startswith("/pixel/"):
        assert response.status_code == 200 and response.mimetype == "image/gif"
    elif response.status_code != 200:
        assert set(response.get_json()) >= {"code", "message"}


@settings(FUZZ, max_examples=200)
@given(call=admin_calls())
def test_admin_parameters_never_fail(client, call: Call) -> None:
    _check(call, call.send(client), ADMIN_STATUSES)


def _essence(call: Call, response) -> tuple[int, Any]:
    """What must agree between the databases: status, and the body (admin: only the error,
    since row ids differ — PostgreSQL's sequences skip the ids an ON CONFLICT discarded)."""
    body = response.get_json(silent=True)
    if call.path.startswith("/admin/") and response.status_code == 200:
        body = {"matched": body.get("matched"), "queued": body.get("queued")} \
            if call.path.endswith("/replay") else len(body.get("data", body.get("keys", [])))
    return response.status_code, body


@pytest.fixture
def both_clients():
    """One app on SQLite and one on PostgreSQL, fed the same inputs in the same order."""
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set")
    import tempfile

    from gateway.store.db import migrate

    with tempfile.TemporaryDirectory() as tmp, pg_schema() as pg_url:
        sqlite_url = f"sqlite:///{tmp}/gateway.db"
        migrate(sqlite_url)
        apps = [create_app(from_mapping(base_config(url))) for url in (sqlite_url, pg_url)]
        yield [a.test_client() for a in apps]
        for a in apps:
            a.extensions["gateway.engine"].dispose()


@settings(FUZZ, max_examples=300)
@given(call=st.one_of(tracking_calls(), tracking_calls(), pixel_calls(),
                      admin_calls(ids=["0", "9223372036854775807", "9223372036854775808",
                                       "99999999999999999999999", "9" * 5000, "abc"])))
def test_sqlite_and_postgresql_answer_alike(both_clients, call: Call) -> None:
    lite, pg = (call.send(c) for c in both_clients)
    assert _essence(call, lite) == _essence(call, pg), call
    _check(call, lite, TRACKING_STATUSES | ADMIN_STATUSES)


_counter = itertools.count()


@settings(FUZZ, max_examples=250)
@given(element=elements, first=st.booleans(), sent_at=st.one_of(st.none(), times),
       context=st.one_of(st.none(), FIELDS["context"]))
def test_a_bad_message_never_costs_its_neighbours(client, engine, element: Any, first: bool,
                                                   sent_at: Any, context: Any) -> None:
    valid_id = f"valid-{next(_counter)}"
    valid = {"type": "track", "userId": "u-valid", "event": "Valid", "messageId": valid_id}
    batch = [valid, element] if first else [element, valid]
    body: dict[str, Any] = {"batch": batch}
    if sent_at is not None:
        body["sentAt"] = sent_at
    if context is not None:
        body["context"] = context
    response = client.post("/v1/batch", data=encode(body).encode("utf-8", "surrogatepass"),
                           headers={**basic(WRITE_KEY), "Content-Type": "application/json"})
    if response.status_code == 400 and response.get_json()["code"] == "invalid_json":
        return  # a lone surrogate makes the whole body invalid JSON: request-level, by design
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    with engine.connect() as connection:
        stored = connection.execute(select(events.c.id).where(
            events.c.message_id == valid_id)).all()
    assert len(stored) == 1
