"""Config loading: every mistake stops start-up naming the file, the table and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, Limits, from_mapping, load, write_default


def raw(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "database_url": "sqlite:///x.db", "admin_token": "t",
        "sources": [{"name": "web", "write_key": "k1"}, {"name": "app", "write_key": "k2"}],
        "destinations": [{"name": "cio", "type": "customerio", "sources": ["web"],
                          "settings": {"siteID": "s", "apiKey": "k"}}],
    }
    base.update(overrides)
    return base


def error_of(mapping: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        from_mapping(mapping, "gateway.toml")
    return str(caught.value)


def test_a_good_config() -> None:
    config = from_mapping(raw())
    assert [s.name for s in config.sources] == ["web", "app"]
    assert config.destinations[0].sources == ("web",)
    assert config.source_by_write_key("k2").name == "app"
    assert config.source_by_write_key("nope") is None
    assert config.limits == Limits()


def test_destination_sources_default_to_every_source() -> None:
    config = from_mapping(raw(destinations=[{"name": "d", "type": "console"}]))
    assert config.destinations[0].sources == ("web", "app")


@pytest.mark.parametrize("mapping,fragments", [
    (raw(destinations=[{"name": "d", "type": "segment"}]),
     ["[[destinations]] #1 ('d')", "field 'type'", "unknown destination type 'segment'"]),
    (raw(sources=[{"name": "a", "write_key": "k"}, {"name": "b", "write_key": "k"}]),
     ["[[sources]] #2 ('b')", "field 'write_key'", "duplicate write key"]),
    (raw(destinations=[{"name": "d", "type": "console", "sources": ["mobile"]}]),
     ["[[destinations]] #1 ('d')", "field 'sources'", "no source named 'mobile'"]),
    (raw(destinations=[{"name": "d", "type": "console"}, {"name": "d", "type": "console"}]),
     ["[[destinations]] #2 ('d')", "duplicate destination name"]),
    (raw(database_url=""), ["top level", "field 'database_url'"]),
    ({"database_url": "sqlite://", "sources": []}, ["field 'admin_token'"]),
    (raw(colour="blue"), ["top level", "unknown field 'colour'"]),
    (raw(limits={"max_request_bytes": "big"}), ["[limits]", "'max_request_bytes'"]),
    (raw(limits={"max_request_byte": 5}), ["[limits]", "unknown field 'max_request_byte'"]),
    (raw(server={"trusted_proxies": "10.0.0.1"}), ["[server]", "'trusted_proxies'"]),
    (raw(sources=[{"name": "web"}]), ["[[sources]] #1 ('web')", "field 'write_key'"]),
    (raw(sources=[{"name": "w", "write_key": "k", "enabled": "yes"}]), ["field 'enabled'"]),
    (raw(destinations=[{"name": "d", "type": "console", "endpoint": "ftp://x"}]),
     ["field 'endpoint'"]),
    (raw(destinations=[{"name": "d", "type": "console", "settings": 3}]), ["field 'settings'"]),
    (raw(destinations=[{"name": "k", "type": "kustomer", "settings": {"orgPod": "prod2"}}]),
     ["[[destinations]] #1 ('k').settings", "field 'apiKey'", "Missing data"]),
    (raw(destinations=[{"name": "k", "type": "kustomer",
                        "settings": {"apiKey": "x", "orgPod": "eu"}}]),
     ["[[destinations]] #1 ('k').settings", "field 'orgPod'", "not a Kustomer pod"]),
])
def test_bad_config_names_file_table_and_field(mapping, fragments: list[str]) -> None:
    message = error_of(mapping)
    assert message.startswith("gateway.toml: ")
    for fragment in fragments:
        assert fragment in message


def test_environment_overrides() -> None:
    env = {"GATEWAY_DATABASE_URL": "postgresql://db/x", "GATEWAY_ADMIN_TOKEN": "env-token",
           "GATEWAY_LIMITS_MAX_REQUEST_BYTES": "4096000", "GATEWAY_LIMITS_STRICT_BATCHES": "true",
           "GATEWAY_SERVER_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2"}
    config = from_mapping(raw(), env=env)
    assert config.database_url == "postgresql://db/x" and config.admin_token == "env-token"
    assert config.limits.max_request_bytes == 4_096_000 and config.limits.strict_batches
    assert config.server.trusted_proxies == ("10.0.0.1", "10.0.0.2")


def test_bad_environment_value_is_reported_with_its_field() -> None:
    with pytest.raises(ConfigError, match=r"\[limits\]: field .max_batch_messages."):
        from_mapping(raw(), env={"GATEWAY_LIMITS_MAX_BATCH_MESSAGES": "lots"})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    with pytest.raises(ConfigError, match=r"none\.toml: file not found"):
        load(missing, env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("database_url = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load(broken, env={})


def test_written_default_loads_and_holds_fresh_secrets(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    write_key, admin_token = write_default(path)
    config = load(path, env={})
    assert config.sources[0].write_key == write_key and config.admin_token == admin_token
    assert config.database_url == "sqlite:///gateway.db"
    assert path.stat().st_mode & 0o777 == 0o600
    assert write_default(tmp_path / "other.toml")[0] != write_key
