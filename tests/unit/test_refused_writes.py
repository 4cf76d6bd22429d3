"""`storage_state.RefusedWrites`: a refused request is logged once a minute per kind of
refusal, escaped for the log line, whatever values the requests carry."""

from __future__ import annotations

import logging
import sqlite3

import pytest
from prometheus_client import REGISTRY
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from gateway.store.storage_state import RefusedWrites, refuses_values


def refusal(text: str) -> IntegrityError:
    return IntegrityError("INSERT …", {}, sqlite3.IntegrityError(text))


def test_refused_values_are_not_an_outage() -> None:
    assert refuses_values(refusal("UNIQUE constraint failed: identity_keys.kind"))
    assert refuses_values(DataError("INSERT …", {}, ValueError("value too long")))
    assert not refuses_values(OperationalError("INSERT …", {}, sqlite3.OperationalError("x")))


def test_one_line_a_minute_per_kind_escaped(caplog: pytest.LogCaptureFixture) -> None:
    refused = RefusedWrites(every=60.0)
    with caplog.at_level(logging.ERROR, logger="gateway.storage"):
        refused.failed(refusal('invalid value: "\x1b[31mred\t\x7fforged"'))
        for n in range(100):  # other values, the same kind of refusal: counted, not logged
            refused.failed(refusal(f'invalid value: "{n}"'))
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1
    assert all(c not in lines[0] for c in "\x1b\t\x7f") and "\\x1b" in lines[0]
    assert len(refused._last) == 1
    refused.every = 0.0
    with caplog.at_level(logging.ERROR, logger="gateway.storage"):
        refused.failed(refusal("UNIQUE constraint failed: events.id"))
    assert "100 more like it" in caplog.records[-1].getMessage()
    assert REGISTRY.get_sample_value("gateway_requests_not_stored_total",
                                     {"kind": "IntegrityError:None"}) >= 102
