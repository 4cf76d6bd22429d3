"""Tracking plans without a database: Segment's two formats read alike, schemas checked and
compiled at load with one clear line, violations in RudderStack's shape, drop_properties'
removals, and the config's plan keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigFileError, from_mapping
from gateway.plans import enforce
from gateway.plans.load import PlanError, parse, read
from gateway.plans.settings import SourcePlan
from gateway.plans.validate import Plan
from tests.conftest import ADMIN_TOKEN

PLANS = Path(__file__).resolve().parents[1] / "fixtures" / "plans"
S = "http://json-schema.org/draft-07/schema#"


def schema(properties: dict[str, Any], required: list[str] = (), **extra: Any) -> dict:
    return {"$schema": S, "type": "object", "properties": {"properties": {
        "type": "object", "properties": properties, "required": list(required), **extra}}}


def test_both_segment_formats_read_to_the_same_rules() -> None:
    export = read(PLANS / "segment_export.json")
    public = read(PLANS / "segment_public_api.json")
    def key(r: Any) -> tuple:
        return (r.kind, r.key, r.version, json.dumps(r.schema, sort_keys=True))
    assert sorted(map(key, export)) == sorted(map(key, public))
    assert {(r.kind, r.key) for r in export} >= {
        ("common", None), ("identify", None), ("group", None), ("track", "Order Completed")}
    assert Plan("web", export).events == [
        "Checkout Started", "Order Completed", "Product Added", "Product Viewed",
        "Search Performed", "Signed Up"]


@pytest.mark.parametrize(("document", "wanted"), [
    ({"name": "x"}, "no `rules`"),
    ({"rules": {"events": {}}}, "rules.events must be a list"),
    ({"rules": {"events": [{"version": 1, "rules": {}}]}}, "rules.events[0]: needs a `name`"),
    ({"rules": {"events": [{"name": "A", "version": 0, "rules": {}}]}}, "version must be"),
    ({"rules": {"events": [{"name": "A", "rules": []}]}},
     "rules.events[0] ('A').rules: must be a JSON Schema object"),
    ([{"type": "TRAK", "key": "A", "jsonSchema": {}}], "type must be one of"),
    ([{"type": "TRACK", "jsonSchema": {}}], "needs a `key`"),
    ([{"type": "TRACK", "key": "A", "jsonSchema": {}},
      {"type": "TRACK", "key": "A", "jsonSchema": {}}], "defined twice"),
])
def test_a_malformed_plan_names_the_rule(document: Any, wanted: str) -> None:
    with pytest.raises(PlanError) as caught:
        Plan("p", parse(document))
    assert wanted in str(caught.value)


def test_a_schema_that_does_not_compile_is_refused_at_load() -> None:
    with pytest.raises(PlanError, match=r"rules.events\[0\] \('A'\): not a valid JSON Schema"):
        Plan("p", parse({"rules": {"events": [{"name": "A", "rules": {"type": "objekt"}}]}}))
    remote = {"$ref": "https://example.com/schema.json"}
    with pytest.raises(PlanError, match="remote"):
        Plan("p", parse([{"type": "COMMON", "jsonSchema": remote}]))


def test_violations_take_rudderstacks_shape_without_the_failing_values() -> None:
    plan = Plan("p", parse({"rules": {"events": [{"name": "A", "rules": schema(
        {"n": {"type": "integer"}, "kind": {"enum": ["a", "b"]},
         "code": {"type": "string", "pattern": "^[A-Z]+$"}}, ["n"],
        additionalProperties=False)}]}}))
    outcome = plan.check({"type": "track", "event": "A", "properties": {
        "kind": "secret@example.com", "code": "lower", "extra": 1}})
    assert outcome is not None
    found = [v.as_json() for v in outcome.violations]
    assert {"type": "Required-Missing", "message": "must have required property 'n'",
            "meta": {"instancePath": "/properties", "missingProperty": "n",
                     "schemaPath": "#/properties/properties/required"}} in found
    assert {(v["type"], v["message"]) for v in found} == {
        ("Required-Missing", "must have required property 'n'"),
        ("Unknown-Violation", "must be equal to one of the allowed values"),
        ("Unknown-Violation", 'must match pattern "^[A-Z]+$"'),
        ("Additional-Properties", "must NOT have additional properties")}
    assert "secret@example.com" not in json.dumps(found)
    assert set(outcome.removals) == {("properties", "kind"), ("properties", "code"),
                                     ("properties", "extra")}


def test_removal_keeps_array_indexes_right_and_never_touches_the_top_level() -> None:
    payload = {"type": "track", "properties": {"items": [{"a": 1, "b": 2}, 3, 4, {"a": 5}]}}
    enforce.remove(payload, [("properties", "items", 1), ("properties", "items", 2),
                             ("properties", "items", 3, "a"), ("properties", "missing", 0)])
    assert payload["properties"]["items"] == [{"a": 1, "b": 2}, {}]


def test_a_message_past_the_report_cap_is_still_trimmed_fully() -> None:
    plan = Plan("p", parse([{"type": "TRACK", "key": "A", "jsonSchema": schema(
        {}, additionalProperties=False)}]))
    payload = {"type": "track", "event": "A",
               "properties": {f"p{n}": n for n in range(200)}}
    outcome, keep = enforce.judge(SourcePlan(plan, violations="drop_properties"), payload)
    assert keep and payload["properties"] == {}
    assert len(payload["context"]["violationErrors"]) == 20 < len(outcome.violations)


def raw_config(tmp_path: Path, plans: Any, **source: Any) -> dict[str, Any]:
    return {"database_url": f"sqlite:///{tmp_path}/g.db", "admin_token": ADMIN_TOKEN,
            "tracking_plans": plans,
            "sources": [{"name": "web", "write_key": "wk", **source}]}


def test_config_reads_plans_relative_to_its_folder(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "web.json").write_bytes((PLANS / "segment_export.json").read_bytes())
    config = from_mapping(raw_config(tmp_path, [{"name": "web", "file": "plans/web.json"}],
                                     tracking_plan="web", violations="drop_event"),
                          base_dir=tmp_path)
    chosen = config.sources[0].tracking_plan
    assert chosen is not None and chosen.plan is config.tracking_plans["web"]
    assert (chosen.unplanned_events, chosen.violations) == ("allow", "drop_event")


@pytest.mark.parametrize(("plans", "source", "wanted"), [
    ([{"name": "web", "file": "nope.json"}], {"tracking_plan": "web"},
     "[[tracking_plans]] #1 ('web'): "),
    ([{"name": "web"}], {}, "field 'file' is required"),
    ([{"name": "web", "file": "p.json", "path": "x"}], {}, "unknown field 'path'"),
    ([], {"tracking_plan": "mobile"}, "no plan named 'mobile'"),
    ([], {"violations": "flag"}, "field 'violations' needs a tracking_plan"),
    ([{"name": "web", "file": "p.json"}], {"tracking_plan": "web", "violations": "block"},
     "field 'violations' must be one of flag, drop_properties, drop_event"),
    ([{"name": "web", "file": "p.json"}], {"tracking_plan": "web",
                                          "unplanned_events": "forward"},
     "field 'unplanned_events' must be one of allow, drop"),
    ([{"name": "web", "file": "bad.json"}], {}, "bad.json: not valid JSON"),
])
def test_a_config_mistake_is_one_line_naming_the_plan(
        tmp_path: Path, plans: Any, source: dict, wanted: str) -> None:
    (tmp_path / "p.json").write_text(json.dumps({"rules": {"events": []}}))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigFileError) as caught:
        from_mapping(raw_config(tmp_path, plans, **source), "gw.toml", base_dir=tmp_path)
    message = str(caught.value)
    assert message.startswith("gw.toml: ") and wanted in message and "\n" not in message
