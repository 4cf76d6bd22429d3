"""An empty required destination setting (`apiKey = ""`, e.g. from an unset template variable)
is refused when the config loads, like a missing one: it used to load, and every delivery went
`dead` with "apiKey not found in Configs"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli.check import check
from gateway.config import ConfigFileError, from_mapping
from tests.conftest import ADMIN_TOKEN, write_toml

VALID = {
    "customerio": {"siteID": "site", "apiKey": "key"},
    "custify": {"apiKey": "key"},
    "kustomer": {"apiKey": "key"},
    "customfit": {"apiKey": "key", "endpointUrl": "https://cf.example"},
    "webhook": {"webhookUrl": "https://hooks.example/in"},
}
EMPTIED = [("customerio", "apiKey", ""), ("customerio", "siteID", "  "),
           ("custify", "apiKey", ""), ("kustomer", "apiKey", "\t"),
           ("customfit", "apiKey", "")]


def config(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN,
            "sources": [{"name": "web", "write_key": "k1"}],
            "destinations": [{"name": "dest", "type": kind, "settings": settings}]}


@pytest.mark.parametrize("kind", sorted(VALID))
def test_the_valid_settings_load(kind: str) -> None:
    assert from_mapping(config(kind, VALID[kind])).destinations[0].type == kind


@pytest.mark.parametrize(("kind", "name", "value"), EMPTIED)
def test_an_empty_required_setting_is_refused_at_load(kind: str, name: str, value: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        from_mapping(config(kind, {**VALID[kind], name: value}), "gateway.toml")
    message = str(caught.value)
    assert "gateway.toml" in message and "[[destinations]] #1 ('dest').settings" in message
    assert f"field {name!r}" in message


def test_an_empty_optional_setting_still_loads() -> None:
    """Webhook apiKey and Kustomer orgPod are optional: empty means unset there."""
    assert from_mapping(config("webhook", {**VALID["webhook"], "apiKey": ""}))
    assert from_mapping(config("kustomer", {**VALID["kustomer"], "orgPod": ""}))


def test_check_fails_on_an_empty_required_setting(tmp_path: Path, capsys) -> None:
    path = tmp_path / "gateway.toml"
    write_toml(path, config("custify", {"apiKey": ""}))
    assert check(path) == 1
    out = capsys.readouterr().out
    assert "FAIL destination dest (custify)" in out and "field 'apiKey'" in out
    assert "settings ok" not in out
