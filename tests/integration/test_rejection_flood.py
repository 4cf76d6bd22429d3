"""Requests without a valid write key cannot flush the rejections record: they are bounded on
their own, so a real source's refusal stays explainable through a flood of them (L7)."""

from __future__ import annotations

import base64

import pytest
from sqlalchemy import func, select

from gateway import rejections
from gateway.store.models import rejections as rejections_table
from tests.conftest import WRITE_KEY
from tests.helpers import basic, explain

FLOOD = 600


def test_a_bad_key_flood_leaves_real_refusals_explainable(
    explain_setup,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, *_ = explain_setup
    monkeypatch.setattr(rejections, "MAX_ROWS", 200)  # the flood is 3× the whole record
    monkeypatch.setattr(rejections, "MAX_UNAUTHENTICATED_ROWS", 50, raising=False)
    engine = app.extensions["gateway.engine"]
    client = app.test_client()
    refused = client.post(
        "/v1/track", json={"type": "track", "messageId": "real-1"}, headers=basic(WRITE_KEY)
    )
    assert refused.status_code == 400  # no userId nor anonymousId: a real source's refusal
    assert rejections.flush(engine)
    junk = {"Authorization": "Basic " + base64.b64encode(b"wk_guess:").decode()}
    for n in range(FLOOD):
        headers = junk if n % 3 else {}  # bad keys, and no key at all
        assert (
            client.post(
                "/v1/track", json={"userId": "x", "event": "e"}, headers=headers
            ).status_code
            == 401
        )
        if n % 100 == 99:
            assert rejections.flush(engine)
    assert rejections.flush(engine)
    found = explain(app, "real-1")
    assert found["outcome"] == "rejected"
    assert [r["reason"] for r in found["rejections"]] == ["missing_field"]
    with engine.connect() as connection:
        counts = dict(
            connection.execute(
                select(rejections_table.c.source.is_(None), func.count()).group_by(
                    rejections_table.c.source.is_(None)
                )
            ).all()
        )
    assert counts[True] <= 50 and counts[False] == 1
