"""Transformations: loading and checking at config load, and the chain's rules (copy in,
event / list / None out, failures named, each call timed)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from gateway import metrics
from gateway.config import ConfigFileError, from_mapping, load
from gateway.transforms import run
from gateway.transforms.config import Transformation
from tests.conftest import base_config, write_toml

MODULE = "tests.transforms_module"


def config_with(transformations: list[dict[str, Any]], source: list[str] | None = None,
                destination: list[str] | None = None) -> dict[str, Any]:
    raw = base_config("sqlite:///unused.db", transformations=transformations)
    if source is not None:
        raw["sources"][0]["transformations"] = source
    if destination is not None:
        raw["destinations"][0]["transformations"] = destination
    return raw


def test_declared_once_attached_by_name_in_order() -> None:
    raw = config_with([{"name": "mask", "function": f"{MODULE}:mask_email"},
                       {"name": "drop", "function": f"{MODULE}:drop_tests", "timeout_ms": 5,
                        "on_error": "store"}],
                      source=["drop", "mask"], destination=["mask"])
    config = from_mapping(raw)
    assert [t.name for t in config.sources[0].transformations] == ["drop", "mask"]
    assert config.sources[0].transformations[0].timeout_ms == 5
    assert config.sources[0].transformations[0].on_error == "store"
    assert config.sources[1].transformations == ()
    assert [t.name for t in config.destinations[0].transformations] == ["mask"]
    assert config.destinations[0].transformations[0].timeout_ms == 100  # the default


@pytest.mark.parametrize(("function", "expected"), [
    ("tests.no_such_module:f", "cannot import module 'tests.no_such_module': "
                               "ModuleNotFoundError"),
    (f"{MODULE}:missing", f"module '{MODULE}' has no 'missing'"),
    (f"{MODULE}:NOT_CALLABLE", "is not callable"),
    (f"{MODULE}:one_parameter", "must take two parameters (event, ctx)"),
    ("no colon", "\"module:callable\""),
])
def test_a_bad_function_is_one_line_naming_the_transformation(function: str,
                                                               expected: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        from_mapping(config_with([{"name": "mask", "function": function}]))
    text = str(caught.value)
    assert "\n" not in text
    assert "[[transformations]] #1 ('mask'): field 'function'" in text
    assert expected in text


@pytest.mark.parametrize(("item", "expected"), [
    ({"name": "m", "function": f"{MODULE}:mask_email", "timeout_ms": 0}, "'timeout_ms'"),
    ({"name": "m", "function": f"{MODULE}:mask_email", "on_error": "ignore"}, "'on_error'"),
    ({"name": "m", "function": f"{MODULE}:mask_email", "timeout": 1}, "unknown field 'timeout'"),
    ({"name": "bad name!", "function": f"{MODULE}:mask_email"}, "field 'name'"),
])
def test_bad_fields_are_refused(item: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigFileError, match=expected):
        from_mapping(config_with([item]))


def test_unknown_names_are_refused_with_did_you_mean() -> None:
    raw = config_with([{"name": "mask-cards", "function": f"{MODULE}:mask_email"}],
                      destination=["mask-card"])
    with pytest.raises(ConfigFileError) as caught:
        from_mapping(raw)
    assert str(caught.value) == (
        "<config>: [[destinations]] #1 ('cio'): field 'transformations': no "
        "[[transformations]] named 'mask-card' (did you mean 'mask-cards'?)")
    raw = config_with([{"name": "m", "function": f"{MODULE}:mask_email"},
                       {"name": "m", "function": f"{MODULE}:mask_email"}])
    with pytest.raises(ConfigFileError, match="duplicate transformation name"):
        from_mapping(raw)


def test_importable_from_the_config_files_folder(tmp_path: Path) -> None:
    (tmp_path / "acme_transforms_here.py").write_text(
        "def shout(event, ctx):\n    event['event'] = event['event'].upper()\n    return event\n")
    raw = config_with([], source=["shout"])
    raw["database_url"] = "sqlite:///gateway.db"
    write_toml(tmp_path / "gateway.toml", raw)
    with (tmp_path / "gateway.toml").open("a") as file:
        file.write('[[transformations]]\nname = "shout"\n'
                   'function = "acme_transforms_here:shout"\n')
    config = load(tmp_path / "gateway.toml", env={})
    (shout,) = config.sources[0].transformations
    assert shout.call({"event": "a"}, None) == {"event": "A"}


def chain(*functions: str, timeout_ms: int = 100) -> list[Transformation]:
    from gateway.transforms.config import load_callable
    return [Transformation(f, f"{MODULE}:{f}", load_callable(f"{MODULE}:{f}"), timeout_ms)
            for f in functions]


def test_the_function_gets_a_copy_and_a_context() -> None:
    event = {"type": "track", "event": "Bought", "messageId": "m1",
             "properties": {"email": "a@b.example"}}
    out = run.run_chain(chain("mask_email"), event, source="web")
    assert out == [{**event, "properties": {"email": "***"}}]
    assert event["properties"]["email"] == "a@b.example"  # the caller's event is untouched


def test_none_drops_a_list_splits_anything_else_fails() -> None:
    with pytest.raises(run.Dropped) as dropped:
        run.run_chain(chain("mask_email", "drop_tests"), {"event": "Test Event"}, source="w")
    assert dropped.value.name == "drop_tests"
    order = {"event": "Order Completed", "properties": {"items": [{"a": 1}, {"a": 2}]}}
    steps: list[run.Step] = []
    out = run.run_chain(chain("split_items", "mask_email"), order, source="w", steps=steps)
    assert [e["properties"] for e in out] == [{"a": 1}, {"a": 2}]
    assert [s.as_json()["effect"] for s in steps] == ["split into 2", "kept"]
    with pytest.raises(run.Failed, match="returned str: expected an event"):
        run.run_chain(chain("not_an_event"), {"event": "x"}, source="w")


def test_an_exception_names_the_transformation_with_its_traceback_tail() -> None:
    with pytest.raises(run.Failed) as failed:
        run.run_chain(chain("explode"), {"properties": {"boom": True}}, source="w")
    assert failed.value.name == "explode"
    assert failed.value.text.startswith("ValueError: boom requested | ")
    assert "transforms_module.py:" in failed.value.text and "in explode" in failed.value.text


def test_each_call_is_measured_and_a_slow_one_logged(caplog: pytest.LogCaptureFixture) -> None:
    before = _observed("slow")
    with caplog.at_level(logging.WARNING, "gateway.transforms"):
        run.run_chain(chain("slow", timeout_ms=1), {"messageId": "evil\n\x1b[31mid"},
                      source="w")
    assert _observed("slow") == before + 1
    (line,) = [r.getMessage() for r in caplog.records]
    assert "transformation slow took" in line and "(timeout_ms 1)" in line
    assert '"evil\\n\\u001b[31mid"' in line and "\n" not in line


def _observed(name: str) -> float:
    value = metrics.REGISTRY.get_sample_value("gateway_transformation_seconds_count",
                                              {"transformation": name})
    return value or 0.0


CLI_CONFIG = """\
database_url = "sqlite:///gateway.db"
admin_token = "k3v9q2x7m4w8p6z1-Rj7Hq2-d93kLm0Pz"
[[transformations]]
name = "split"
function = "cli_transforms_here:split"
[[transformations]]
name = "fail"
function = "cli_transforms_here:fail"
[[sources]]
name = "web"
write_key = "wk_cli"
[[destinations]]
name = "cio"
type = "customerio"
[destinations.settings]
siteID = "site-1"
apiKey = "cio-cli-secret-77"
"""


def test_transform_test_prints_the_result_and_the_requests(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli.commands import main

    (tmp_path / "gateway.toml").write_text(CLI_CONFIG)
    (tmp_path / "cli_transforms_here.py").write_text(
        "def split(event, ctx):\n"
        "    return [{**event, 'properties': i} for i in event['properties']['items']]\n"
        "def fail(event, ctx):\n"
        "    raise KeyError('nope')\n")
    event = tmp_path / "event.json"
    event.write_text('{"type": "track", "userId": "u1", "event": "Order\\u001b[2J", '
                     '"properties": {"items": [{"sku": "A"}, {"sku": "cio-cli-secret-77"}]}}')
    config = str(tmp_path / "gateway.toml")
    assert main(["transform", "test", "split", "--event", str(event), "--config", config]) == 0
    alone = capsys.readouterr().out
    assert alone.startswith("step split: split into 2 (1 → 2 events")
    assert "outcome: kept" in alone and "request" not in alone

    assert main(["--config", config, "transform", "test", "split", "--event", str(event),
                 "--destination", "cio"]) == 0
    out = capsys.readouterr().out
    assert "request 1: POST https://track.customer.io/api/v1/customers/u1/events" in out
    assert "request 2: POST" in out and "Authorization: Basic ***" in out
    assert "cio-cli-secret-77" not in out and "\x1b" not in out and "\\u001b[2J" in out

    assert main(["--config", config, "transform", "test", "fail", "--event", str(event)]) == 1
    out = capsys.readouterr().out
    assert "step fail: failed" in out and "KeyError: 'nope'" in out

    assert main(["--config", config, "transform", "test", "splt", "--event",
                 str(event)]) == 2
    assert "no transformation named splt (declared: fail, split)" in capsys.readouterr().err


def test_a_refused_message_is_named_by_its_place_in_the_request() -> None:
    from datetime import UTC, datetime

    from gateway.config import Limits
    from gateway.messages import RequestInfo, normalise_batch
    from gateway.transforms.source import apply, element_indices

    elements: list[Any] = [
        {"type": "track", "userId": "u", "event": "a", "messageId": "m1"},
        {"type": "track", "event": "no id"},  # refused by normalise_batch
        {"type": "track", "userId": "u", "event": "a", "messageId": "m1"},  # a repeat
        {"type": "track", "userId": "u", "event": "b"},  # a generated messageId
        {"type": "track", "userId": "u", "event": "c", "messageId": 7,
         "properties": {"boom": True}},
    ]
    limits = Limits()
    accepted, rejected = normalise_batch(elements, RequestInfo(datetime.now(UTC)), limits)
    assert element_indices(elements, accepted, {r.index for r in rejected}) == [0, 3, 4]
    raw = config_with([{"name": "explode", "function": f"{MODULE}:explode"}],
                      source=["explode"])
    source = from_mapping(raw).sources[0]
    # the source filters dropped the first message: the others keep their places
    kept, failed = apply(source, accepted[1:], elements, rejected, limits, accepted)
    assert [m.message_id for m in kept] == [accepted[1].message_id]
    assert [(f.index, f.message_id, f.code) for f in failed] == [
        (4, "7", "transformation_failed")]


def test_a_split_deliverys_outcome_is_its_worst_parts() -> None:
    from adapters.base import InvalidEvent, Unsupported
    from gateway.delivery.send import _worse
    from gateway.delivery.verdict import Outcome, refused

    sent = Outcome(status=200)
    skipped = refused(Unsupported("filtered"))
    failing = Outcome(status=503, text="busy")
    dead = refused(InvalidEvent("bad"))
    assert _worse(None, sent) is sent
    assert _worse(sent, failing) is failing and _worse(failing, sent) is failing
    assert _worse(skipped, sent) is sent and _worse(sent, skipped) is sent
    assert _worse(failing, dead) is failing  # the first failure decides
    assert _worse(sent, dead) is dead


def test_the_dry_run_shows_a_lookup_without_sending_it_and_says_skipped() -> None:
    from gateway.transforms.preview import PreviewError, preview

    config = from_mapping(base_config("sqlite:///unused.db"))
    identify = {"type": "identify", "userId": "u1", "messageId": "m1",
                "traits": {"email": "a@b.example"}, "timestamp": "2026-12-01T00:00:00Z"}
    found = preview(config, identify, "kustomer-main")
    assert found["outcome"] == "lookup_needed" and "sends nothing" in found["reason"]
    (request,) = found["requests"]
    assert request["method"] == "GET" and "kustomer" in request["url"]
    assert "kustomer-key" not in str(found) and "***" in str(request["headers"])
    page = {**identify, "type": "alias", "previousId": "p"}
    assert preview(config, page, "kustomer-main")["outcome"] == "skipped"
    with pytest.raises(PreviewError, match="no destination named 'nope'"):
        preview(config, identify, "nope")
    with pytest.raises(PreviewError, match="must be a JSON object"):
        preview(config, [identify], "cio")
