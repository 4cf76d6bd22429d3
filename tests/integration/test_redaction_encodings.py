"""A destination that echoes the request in its error shows no form of a secret anywhere the
gateway records or shows it: Customer.io's `Basic base64(siteID:apiKey)`, CustomFit's
percent-encoded key, the webhook's `Basic base64(apiKey:)`, their JSON-escaped and decoded
forms — in last_error, the attempt excerpts, explain and `gateway events ID` (L1). Secrets that
straddle the excerpt's or the reason's cut are hidden whole, not half shown."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import pytest
from sqlalchemy import select

from gateway import create_app
from gateway.cli import main
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from gateway.store.models import delivery_attempts
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, write_toml
from tests.helpers import basic, drain, stored_deliveries
from tests.standin import Answer, Received, StandIn

SITE_ID = "site-7"
CIO_KEY = 'cio/k+y "\u00fc=&-secret'
CF_KEY = 'cf key/+=&"\u00fc-9'
HOOK_KEY = 'wh/+ "\u00fc-key'
SECRETS = (CIO_KEY, CF_KEY, HOOK_KEY)
# where the echoed Basic token starts in the body: across the excerpt's cut (1024 characters)
# and across the reason's (last_error keeps 500 characters of the body)
# (the token starts 25 characters after the pad begins: 10 characters before each cut)
PADS = {"cut-excerpt": 1024 - 35, "cut-reason": 500 - 35, "whole": 10}


def forms(secret: str) -> set[str]:
    """Every form of a secret a destination's echo can carry."""
    found = {
        secret,
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    for pair in (secret, f"{secret}:", f"{SITE_ID}:{secret}"):
        token = base64.b64encode(pair.encode()).decode()
        found |= {token, token.rstrip("=")}
    return found


def leaks(text: str) -> list[str]:
    """Forms of any secret in a text, or the first 8 characters of one (a half-shown secret)."""
    return [
        form for secret in SECRETS for form in forms(secret) if form in text or form[:8] in text
    ]


def echo(request: Received) -> Answer:
    """A destination that refuses, echoing the credentials it got (as sent and decoded)."""
    auth = request.headers.get("Authorization", "")
    decoded = base64.b64decode(auth.split()[-1]).decode() if auth.startswith("Basic") else ""
    query = parse_qs(urlsplit(request.path).query).get("cfenc", [""])[0]
    seen = request.path + request.body.decode()
    [pad] = [pad for user, pad in PADS.items() if user in seen]
    return Answer(
        400, {"p": "x" * pad, "auth": auth, "path": request.path, "decoded": decoded, "key": query}
    )


@pytest.fixture
def setup(database_url: str, tmp_path: Path) -> Iterator[tuple[Any, Worker, Path]]:
    standin = StandIn()
    standin.answer_for = echo
    raw = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [
            {
                "name": "cio",
                "type": "customerio",
                "endpoint": standin.url,
                "settings": {"siteID": SITE_ID, "apiKey": CIO_KEY},
            },
            {
                "name": "cf",
                "type": "customfit",
                "endpoint": standin.url,
                "settings": {"apiKey": CF_KEY, "mode": "native"},
            },
            {
                "name": "hook",
                "type": "webhook",
                "endpoint": standin.url,
                "settings": {"webhookUrl": "https://h.example/in", "apiKey": HOOK_KEY},
            },
        ],
        "retry": {"base_delay_seconds": 0},
    }
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    app = create_app(from_mapping(raw))
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])
    yield app, worker, path
    worker.close()
    standin.close()
    app.extensions["gateway.engine"].dispose()


def test_no_form_of_a_secret_is_recorded_or_shown(setup, capsys) -> None:
    app, worker, path = setup
    client = app.test_client()
    for user in PADS:
        response = client.post(
            "/v1/track",
            headers=basic(WRITE_KEY),
            json={"userId": user, "event": "Bought", "messageId": f"m-{user}"},
        )
        assert response.status_code == 200
    drain(worker)
    rows = stored_deliveries(worker.engine)
    assert len(rows) == 9 and {r["state"] for r in rows} == {"dead"}
    # the echo is there, redacted (past the reason's 500 characters for the longest pad)
    assert sum("***" in r["last_error"] for r in rows) >= 5
    assert [leaks(r["last_error"]) for r in rows] == [[]] * 9
    with worker.engine.connect() as connection:
        excerpts = connection.execute(select(delivery_attempts.c.excerpt)).scalars().all()
    assert len(excerpts) == 9 and sum("***" in e for e in excerpts) >= 8
    assert [leaks(e) for e in excerpts] == [[]] * 9
    for user in PADS:
        explained = client.get(
            "/admin/v1/explain",
            query_string={"message_id": f"m-{user}"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert explained.status_code == 200 and leaks(explained.get_data(as_text=True)) == []
    for event_id in {r["event_id"] for r in rows}:
        for extra in ((), ("--json",)):
            assert main(["--config", str(path), "events", str(event_id), *extra]) == 0
            out = capsys.readouterr().out
            assert leaks(out) == [] and ("***" in out or not extra)  # (tables cut excerpts)
