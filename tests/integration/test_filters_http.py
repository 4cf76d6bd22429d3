"""Source and destination filters end to end: HTTP in (`gateway serve` with its worker), stand-in
destinations out. A dropped field never reaches storage (source) or a destination; a dropped
event is never stored (source) or ends as a `skipped` delivery naming its rule (destination)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select

from gateway.store.db import make_engine
from gateway.store.models import events
from tests import conftest
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, LiveGateway
from tests.helpers import basic, wait_until_finished
from tests.standin import StandIn

pytestmark = pytest.mark.slow  # `gateway serve` with its delivery worker

SALT = "test-salt-0123456789"
CARD = "4111-1111-SECRET"
SSN = "078-05-1120-SECRET"


def dump_toml(path: Path, raw: dict[str, Any]) -> None:
    """TOML for nested tables and arrays of tables (the suite's writer stops at one level)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def table(prefix: str, body: dict[str, Any], header: str | None) -> None:
        if header:
            lines.append(header)
        nested = []
        for k, v in body.items():
            if isinstance(v, dict):
                nested.append((k, v, False))
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v) \
                    and k not in ("where",):
                nested.append((k, v, True))
            else:
                lines.append(f"{k} = {value(v)}")
        for k, v, is_array in nested:
            name = f"{prefix}.{k}" if prefix else k
            if is_array:
                for item in v:
                    table(name, item, f"[[{name}]]")
            else:
                table(name, v, f"[{name}]")

    table("", raw, None)
    path.write_text("\n".join(lines) + "\n")


def config(database_url: str, hook: StandIn, cio: StandIn) -> dict[str, Any]:
    return {
        "database_url": database_url, "admin_token": ADMIN_TOKEN,
        "worker": {"poll_interval_ms": 50},
        "sources": [{"name": "web", "write_key": WRITE_KEY, "filters": {
            "drop_fields": ["properties.ssn", "traits.ssn"],
            "ip": "truncate",
            "drop": [{"name": "internal-traffic",
                      "where": [{"field": "properties.internal", "equals": True}]}],
        }}],
        "destinations": [
            {"name": "hook", "type": "webhook", "endpoint": hook.url,
             "settings": {"webhookUrl": "https://hooks.example/in"},
             "filters": {
                 "drop_fields": ["properties.card"],
                 "hash_fields": ["traits.email", "context.traits.email"], "hash_salt": SALT,
                 "ip": "drop",
                 "drop": [{"name": "test-events", "events": ["Test Event"]}]}},
            {"name": "cio", "type": "customerio", "endpoint": cio.url,
             "settings": {"siteID": "site", "apiKey": "key", "v2Batching": True},
             "filters": {
                 "drop_fields": ["properties.card"],
                 "keep": [{"name": "orders", "events": ["Order Completed"]},
                          {"name": "people", "types": ["identify"]}]}},
        ],
    }


def test_filters_over_http(database_url: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    hook, cio = StandIn(), StandIn()
    monkeypatch.setattr(conftest, "write_toml", dump_toml)
    gateway = LiveGateway(tmp_path, config(database_url, hook, cio), delivery_worker=True)
    engine = make_engine(database_url)
    try:
        batch = [
            {"type": "identify", "userId": "u1",
             "traits": {"email": "ann@example.com", "ssn": SSN, "plan": "pro"}},
            {"type": "track", "userId": "u1", "event": "Order Completed",
             "properties": {"revenue": 9.5, "card": CARD, "ssn": SSN},
             "context": {"traits": {"email": "ann@example.com"}}},
            {"type": "track", "userId": "u1", "event": "Test Event", "properties": {}},
            {"type": "track", "userId": "u1", "event": "Order Completed",
             "properties": {"internal": True, "card": CARD}},
            {"type": "page", "userId": "u1", "name": "Home"},
        ]
        answer = requests.post(gateway.url + "/v1/batch", json={"batch": batch},
                               headers=basic(WRITE_KEY), timeout=10)
        assert answer.status_code == 200 and answer.json() == {"success": True}

        # source level: the internal event is not stored, the ssn never stored, ip truncated
        with engine.connect() as connection:
            stored = [r.payload for r in connection.execute(
                select(events.c.payload).order_by(events.c.id))]
        assert [(p["type"], p.get("event")) for p in stored] == [
            ("identify", None), ("track", "Order Completed"), ("track", "Test Event"),
            ("page", None)]
        assert all(SSN not in str(p) for p in stored)
        assert {p["context"]["ip"] for p in stored} == {"127.0.0.0"}
        assert {p["request_ip"] for p in stored} == {"127.0.0.0"}
        assert stored[1]["properties"]["card"] == CARD  # only destinations drop it

        rows = wait_until_finished(engine, expected=8)
        by = {(r["destination"], r["type"], r["event"]): r for r in rows}
        assert by[("hook", "track", "Test Event")]["state"] == "skipped"
        assert "dropped by filter 'test-events'" in by[("hook", "track", "Test Event")][
            "last_error"]
        for key in (("hook", "identify", None), ("hook", "track", "Order Completed"),
                    ("hook", "page", None), ("cio", "identify", None),
                    ("cio", "track", "Order Completed")):
            assert by[key]["state"] == "delivered", by[key]
        for key in (("cio", "track", "Test Event"), ("cio", "page", None)):
            assert by[key]["state"] == "skipped"
            assert "matched no keep filter ('orders', 'people')" in by[key]["last_error"]

        # the webhook got three events, none dropped, with no card, hashed email and no ip
        received = [r.json for r in hook.requests]
        assert [(r["type"], r.get("event")) for r in received] == [
            ("identify", None), ("track", "Order Completed"), ("page", None)]
        hashed = hashlib.sha256((SALT + "ann@example.com").encode()).hexdigest()
        assert received[0]["traits"] == {"email": hashed, "plan": "pro"}
        assert received[1]["context"]["traits"]["email"] == hashed
        assert "card" not in received[1]["properties"]
        assert all("ip" not in r["context"] and "request_ip" not in r for r in received)
        # Customer.io (router mode): the same never-sent guarantees on the raw bodies
        bodies = b"".join(r.body for r in hook.requests + cio.requests)
        assert CARD.encode() not in bodies and SSN.encode() not in bodies
        assert b"Test Event" not in bodies and b"ann@example.com" not in b"".join(
            r.body for r in hook.requests)
        assert cio.requests and b"Order Completed" in b"".join(r.body for r in cio.requests)
    finally:
        engine.dispose()
        gateway.stop()
        hook.close()
        cio.close()
