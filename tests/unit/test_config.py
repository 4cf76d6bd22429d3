"""Config loading: every mistake stops start-up naming the file, the table and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli.starter import write_default
from gateway.config import (
    ConfigFileError,
    Limits,
    anchor_sqlite_path,
    from_mapping,
    load,
    parse_bind,
    unknown_environment,
)
from tests.conftest import ADMIN_TOKEN

ENV_TOKEN = "env-admin-token-k3v9q2x7m4w8p6z1"


def raw(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "database_url": "sqlite:///x.db", "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": "k1"}, {"name": "app", "write_key": "k2"}],
        "destinations": [{"name": "cio", "type": "customerio", "sources": ["web"],
                          "settings": {"siteID": "s", "apiKey": "k"}}],
    }
    base.update(overrides)
    return base


def error_of(mapping: dict[str, Any]) -> str:
    with pytest.raises(ConfigFileError) as caught:
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
    env = {"GATEWAY_DATABASE_URL": "postgresql://db/x", "GATEWAY_ADMIN_TOKEN": ENV_TOKEN,
           "GATEWAY_LIMITS_MAX_REQUEST_BYTES": "4096000", "GATEWAY_LIMITS_STRICT_BATCHES": "true",
           "GATEWAY_SERVER_TRUSTED_PROXIES": "10.0.0.1, 10.0.0.2"}
    config = from_mapping(raw(), env=env)
    assert config.database_url == "postgresql://db/x" and config.admin_token == ENV_TOKEN
    assert config.limits.max_request_bytes == 4_096_000 and config.limits.strict_batches
    assert config.server.trusted_proxies == ("10.0.0.1", "10.0.0.2")


def test_bad_environment_value_is_reported_with_its_field() -> None:
    with pytest.raises(ConfigFileError, match=r"\[limits\]: field .max_batch_messages."):
        from_mapping(raw(), env={"GATEWAY_LIMITS_MAX_BATCH_MESSAGES": "lots"})


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "none.toml"
    with pytest.raises(ConfigFileError, match=r"none\.toml: file not found"):
        load(missing, env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("database_url = \n")
    with pytest.raises(ConfigFileError, match=r"broken\.toml: not valid TOML"):
        load(broken, env={})


def test_written_default_loads_and_holds_fresh_secrets(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    write_key, admin_token = write_default(path)
    config = load(path, env={})
    assert config.sources[0].write_key == write_key and config.admin_token == admin_token
    assert config.database_url == f"sqlite:///{tmp_path.resolve()}/gateway.db"  # by the file
    assert path.stat().st_mode & 0o777 == 0o600
    assert write_default(tmp_path / "other.toml")[0] != write_key


@pytest.mark.parametrize("table,name", [
    ("worker", "concurrency"), ("worker", "batch_size"), ("worker", "poll_interval_ms"),
    ("limits", "max_request_bytes"), ("limits", "max_batch_messages"),
    ("limits", "max_json_depth"), ("limits", "max_message_id_length"),
    ("retry", "min_attempts"),
])
def test_a_zero_that_means_nothing_is_refused(table: str, name: str) -> None:
    message = error_of(raw(**{table: {name: 0}}))
    assert f"[{table}]: field '{name}': must be at least 1" in message


def test_zeros_that_mean_something_are_kept() -> None:
    config = from_mapping(raw(server={"workers": 0}, limits={"max_message_bytes": 0},
                              retry={"base_delay_seconds": 0}))
    assert config.server.workers == 0 and config.limits.max_message_bytes == 0


def test_a_zero_from_the_environment_is_refused_too() -> None:
    with pytest.raises(ConfigFileError,
                       match=r"\[worker\]: field 'concurrency': must be at least 1"):
        from_mapping(raw(), env={"GATEWAY_WORKER_CONCURRENCY": "0"})


@pytest.mark.parametrize("settings,fragment", [
    ({"siteID": "s", "apiKey": "k", "datacenterr": "EU"},
     "unknown setting 'datacenterr' (did you mean 'datacenter'?)"),
    ({"siteID": "s", "apiKey": "k", "zzz": 1}, "unknown setting 'zzz' (known: apiKey,"),
])
def test_unknown_destination_settings_are_refused(settings, fragment: str) -> None:
    mapping = raw(destinations=[{"name": "cio", "type": "customerio", "settings": settings}])
    message = error_of(mapping)
    assert "[[destinations]] #1 ('cio').settings" in message and fragment in message


def test_misspelt_webhook_secret_gets_a_suggestion() -> None:
    mapping = raw(destinations=[{"name": "h", "type": "webhook", "settings": {
        "webhookUrl": "https://h.example/in", "sharedSecre": "s"}}])
    assert "unknown setting 'sharedSecre' (did you mean 'sharedSecret'?)" in error_of(mapping)


def test_rudderstack_generic_settings_are_let_through() -> None:
    generic = {"blacklistedEvents": [], "whitelistedEvents": [], "eventFilteringOption": "disable",
               "oneTrustCookieCategories": [], "consentManagement": {}, "useNativeSDK": False,
               "connectionMode": "cloud", "eventDelivery": False, "eventDeliveryTS": 1}
    config = from_mapping(raw(destinations=[{"name": "cio", "type": "customerio",
                                             "settings": {"siteID": "s", "apiKey": "k",
                                                          **generic}}]))
    assert config.destinations[0].settings["eventFilteringOption"] == "disable"


def test_unknown_environment_variables_are_warned_about_with_a_suggestion() -> None:
    env = {"GATEWAY_WORKER_CONCURENCY": "3", "GATEWAY_DATABASE_URL": "sqlite://",
           "GATEWAY_LIMITS_STRICT_BATCHES": "1", "GATEWAY_INTERNAL_ANYTHING": "1",
           "GATEWAY_TEST_POSTGRES_URL": "x", "GATEWAY_EXTRA_FIXTURES": "x", "HOME": "/root",
           "GATEWAY_XYZZY": "1"}
    assert unknown_environment(env) == [
        "gateway: warning: ignoring unknown environment variable GATEWAY_WORKER_CONCURENCY "
        "(did you mean GATEWAY_WORKER_CONCURRENCY?)",
        "gateway: warning: ignoring unknown environment variable GATEWAY_XYZZY"]


def test_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "gateway.toml").write_text(
        f'database_url = "sqlite:///data/gateway.db"\nadmin_token = "{ADMIN_TOKEN}"\n')
    monkeypatch.chdir(tmp_path)
    config = load(Path("etc/gateway.toml"), env={})
    assert config.database_url == f"sqlite:///{folder.resolve()}/data/gateway.db"
    from_env = load(Path("etc/gateway.toml"), env={"GATEWAY_DATABASE_URL": "sqlite:///x.db"})
    assert from_env.database_url == "sqlite:///x.db"  # the shell's: the working directory


@pytest.mark.parametrize("url", ["sqlite:////abs/gateway.db", "sqlite://", "sqlite:///:memory:",
                                 "postgresql://u@h/db"])
def test_absolute_memory_and_server_urls_are_left_alone(url: str) -> None:
    assert anchor_sqlite_path(url, Path("/etc/gw")) == url


@pytest.mark.parametrize("text,expected", [
    ("localhost", ("localhost", 8080)), (":9000", ("127.0.0.1", 9000)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9000", ("::1", 9000)), ("[::1]", ("::1", 8080)),
])
def test_parse_bind(text: str, expected: tuple[str, int]) -> None:
    assert parse_bind(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:99999", ":80x", "host:", "a:b:c", "[::1]x",
                                  "h:0"])
def test_parse_bind_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"port|address"):
        parse_bind(text)


def test_server_bind_is_checked_and_completed_at_load() -> None:
    assert from_mapping(raw(server={"bind": "0.0.0.0"})).server.bind == "0.0.0.0:8080"
    assert "[server]: field 'bind'" in error_of(raw(server={"bind": "localhost:http"}))


@pytest.mark.parametrize("text,expected", [
    ("", ""),
    ("https://gw.example.com", "https://gw.example.com"),
    ("HTTPS://GW.Example.com:8443/", "https://gw.example.com:8443"),
    ("http://shop.example/t/", "http://shop.example/t"),
    ("http://[::1]:8080/first/party", "http://[::1]:8080/first/party"),
])
def test_public_url_is_normalised_at_load(text: str, expected: str) -> None:
    assert from_mapping(raw(server={"public_url": text})).server.public_url == expected


@pytest.mark.parametrize("text,problem", [
    ("gw.example.com", "must start with http:// or https://"),
    ("ftp://gw.example.com", "must start with http:// or https://"),
    ("https://", "names no host"),
    ("https://gw.example.com/?a=1", "must not have a query"),
    ("https://gw.example.com/#top", "must not have a fragment"),
    ("https://user:pw@gw.example.com", "must not hold credentials"),
    ("https://gw.example.com:99999", "the port must be a number from 1 to 65535"),
    ("https://gw example.com", "must not contain spaces"),
    ("https://gw!.example.com", "is not a host name or IP address"),
])
def test_a_bad_public_url_is_refused_naming_the_field(text: str, problem: str) -> None:
    message = error_of(raw(server={"public_url": text}))
    assert message.startswith("gateway.toml: [server]: field 'public_url': ")
    assert problem in message


def test_public_url_from_the_environment_is_checked_too() -> None:
    env = {"GATEWAY_SERVER_PUBLIC_URL": "https://gw.example.com/e/"}
    assert from_mapping(raw(), env=env).server.public_url == "https://gw.example.com/e"
    with pytest.raises(ConfigFileError, match="field 'public_url'"):
        from_mapping(raw(), env={"GATEWAY_SERVER_PUBLIC_URL": "gw.example.com"})


def test_a_folder_or_an_unreadable_file_is_one_clear_error(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigFileError, match="is a folder"):
        load(tmp_path, env={})
    path = tmp_path / "gateway.toml"
    path.write_text(f'database_url = "sqlite://"\nadmin_token = "{ADMIN_TOKEN}"\n')

    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigFileError, match=r"gateway\.toml: cannot read it: Permission denied"):
        load(path, env={})


def test_writing_a_starter_into_a_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError,
                       match=r"cannot write .*x\.toml: folder .*sub does not exist"):
        write_default(tmp_path / "sub" / "x.toml")


@pytest.mark.parametrize("mapping,fragments", [
    (raw(server={"trusted_proxies": ["10.0.0.1", "proxy.internal"]}),
     ["[server]", "'trusted_proxies'", "'proxy.internal' is not an IP address or CIDR"]),
    (raw(server={"trusted_proxies": ["*"]}), ["'trusted_proxies'", "'*'"]),
    (raw(admin={"bind": "127.0.0.1:99999"}), ["[admin]", "field 'bind'", "1 to 65535"]),
    (raw(admin={"bind": "localhost"}, server={"bind": "localhost:8080"}),
     ["[admin]", "field 'bind'", "is also [server] bind"]),
    (raw(admin={"max_failed_auth": 0}), ["[admin]", "'max_failed_auth'", "at least 1"]),
    (raw(metrics={"require_token": "yes"}), ["[metrics]", "'require_token'", "true or false"]),
    (raw(metrics={"require_token": False}, admin={"metrics_require_token": True}),
     ["[metrics]", "'require_token'", "keep one"]),
])
def test_bad_admin_surface_settings(mapping, fragments: list[str]) -> None:
    message = error_of(mapping)
    for fragment in fragments:
        assert fragment in message


def test_admin_surface_settings() -> None:
    config = from_mapping(raw(server={"trusted_proxies": ["10.1.2.3/8", "192.0.2.1"]},
                              admin={"bind": ":8081"}))
    assert config.server.trusted_proxies == ("10.0.0.0/8", "192.0.2.1")
    assert config.admin.bind == "127.0.0.1:8081"
    assert config.metrics.require_token is None  # decided by the binds
    older = from_mapping(raw(admin={"metrics_require_token": True}))
    assert older.metrics.require_token is True
    env = {"GATEWAY_METRICS_REQUIRE_TOKEN": "false", "GATEWAY_ADMIN_BIND": "[::1]:9000"}
    config = from_mapping(raw(), env=env)
    assert config.metrics.require_token is False and config.admin.bind == "[::1]:9000"
    assert from_mapping(raw(), env={"GATEWAY_METRICS_REQUIRE_TOKEN": "auto"}
                        ).metrics.require_token is None


# the admin token: long, varied, no placeholder ----------------------------------------------------

@pytest.mark.parametrize("token,reason", [
    ("x", "too short (1 characters, at least 32)"),
    ("change-me", "too short (9 characters, at least 32)"),  # the README's old example
    ("test-admin-token", "too short (16 characters, at least 32)"),
    ("change-me-change-me-change-me-change-me", "looks like a placeholder"),
    ("REPLACE_ME_WITH_A_LONG_RANDOM_STRING_PLEASE", "looks like a placeholder"),
    ("your-admin-token-goes-here-ok-thanks", "looks like a placeholder"),
    ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "too repetitive"),
    ("abababababababababababababababab", "too repetitive"),
])
def test_a_weak_admin_token_is_refused_at_load(token: str, reason: str) -> None:
    """Guessable tokens open the admin API and the console to anyone: one line naming the
    field and the reason, and how to make a good one; never the token itself."""
    message = error_of(raw(admin_token=token))
    assert message.startswith("gateway.toml: top level: field 'admin_token': " + reason)
    assert "secrets.token_urlsafe(32)" in message and "\n" not in message
    assert token not in message


def test_a_weak_admin_token_from_the_environment_names_the_variable() -> None:
    with pytest.raises(ConfigFileError) as caught:
        from_mapping(raw(), "gateway.toml", env={"GATEWAY_ADMIN_TOKEN": "hunter2"})
    message = str(caught.value)
    assert message.startswith("gateway.toml: top level: field 'admin_token' "
                              "(from $GATEWAY_ADMIN_TOKEN): too short")
    assert "hunter2" not in message


def test_strong_admin_tokens_are_accepted() -> None:
    import secrets

    for token in (secrets.token_urlsafe(32), secrets.token_hex(16), secrets.token_urlsafe(24),
                  "correct horse battery staple tomato"):
        assert from_mapping(raw(admin_token=token)).admin_token == token
    # `gateway check` reads the config without the rule and reports it on its own line
    assert from_mapping(raw(admin_token="x"), check_admin_token=False).admin_token == "x"


def test_console_sessions_are_configurable() -> None:
    config = from_mapping(raw())
    assert (config.console.idle_timeout_seconds, config.console.session_lifetime_seconds) == (
        1800, 43200)
    config = from_mapping(raw(), env={"GATEWAY_CONSOLE_IDLE_TIMEOUT_SECONDS": "600"})
    assert config.console.idle_timeout_seconds == 600
    assert "[console]: field 'idle_timeout_seconds': must be at least 60" in error_of(
        raw(console={"idle_timeout_seconds": 5}))
