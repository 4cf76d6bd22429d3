"""Read a tracking plan in Segment's formats (README "Tracking plans").

Two shapes are accepted, both as JSON:

- the Config API export: `{"rules": {"events": [{name, version, rules}], "global": {...},
  "identify": {...}, "group": {...}}}`;
- the Public API's list of rules: `[{key, type, version, jsonSchema}]`, alone or as
  `{"rules": [...]}` / `{"data": {"rules": [...]}}` (the API's own answer).

Each schema describes the whole message (`properties.properties`, `properties.traits`,
`properties.context`). A plan is trusted input (the operator's file), but it is still checked
fully here, so a mistake stops start-up with one line naming the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

# Public API rule types → the message type they apply to ("common": every message)
PUBLIC_TYPES = {"TRACK": "track", "IDENTIFY": "identify", "GROUP": "group", "PAGE": "page",
                "SCREEN": "screen", "COMMON": "common"}
CONFIG_SECTIONS = {"global": "common", "identify": "identify", "group": "group"}
MAX_PLAN_BYTES = 20 * 1024 * 1024


class PlanError(Exception):
    """The plan cannot be used; the message names the rule and says why."""


@dataclass(frozen=True)
class Rule:
    """One JSON Schema and the messages it applies to."""

    kind: str  # track | identify | group | page | screen | common
    key: str | None  # the track event's (page's, screen's) name; None: every message of kind
    version: int
    schema: Mapping[str, Any]
    where: str  # where it sits in the file, for error messages

    @property
    def label(self) -> str:
        return f"{self.kind} {self.key!r} v{self.version}" if self.key else self.kind


def read(path: str | Path) -> list[Rule]:
    """The rules of a plan file, or PlanError saying in one line what is wrong."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PLAN_BYTES:
            raise PlanError(f"{path}: larger than {MAX_PLAN_BYTES} bytes")
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise PlanError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PlanError(f"{path}: is a folder, not a plan file") from None
    except OSError as exc:
        raise PlanError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise PlanError(f"{path}: not valid JSON: {exc}") from None
    try:
        return parse(document)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from None


def parse(document: Any) -> list[Rule]:
    """Rules from a parsed plan document in either of Segment's formats."""
    if isinstance(document, dict) and isinstance(document.get("data"), dict):
        document = document["data"]  # the Public API's answer: {"data": {"rules": [...]}}
    if isinstance(document, dict):
        if "rules" not in document:
            raise PlanError("no `rules`: expected Segment's Config API export "
                            "({\"rules\": {\"events\": [...]}}) or the Public API's rule list")
        document = document["rules"]
        if isinstance(document, dict):
            return _config_api(document)
    if isinstance(document, list):
        return _public_api(document)
    raise PlanError("`rules` must be an object (Config API export) or a list (Public API)")


def _config_api(rules: Mapping[str, Any]) -> list[Rule]:
    found: list[Rule] = []
    for section, kind in CONFIG_SECTIONS.items():
        schema = rules.get(section)
        if schema in (None, {}):
            continue
        found.append(Rule(kind, None, 1, _schema(schema, f"rules.{section}"),
                          f"rules.{section}"))
    events = rules.get("events", [])
    if not isinstance(events, list):
        raise PlanError("rules.events must be a list")
    for index, item in enumerate(events):
        where = f"rules.events[{index}]"
        if not isinstance(item, dict):
            raise PlanError(f"{where}: must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise PlanError(f"{where}: needs a `name` (the track event's name)")
        where = f"{where} ({name!r})"
        found.append(Rule("track", name, _version(item.get("version"), where),
                          _schema(item.get("rules"), f"{where}.rules"), where))
    return _unique(found)


def _public_api(items: list[Any]) -> list[Rule]:
    found: list[Rule] = []
    for index, item in enumerate(items):
        where = f"rules[{index}]"
        if not isinstance(item, dict):
            raise PlanError(f"{where}: must be an object")
        kind = PUBLIC_TYPES.get(str(item.get("type", "")).upper())
        if kind is None:
            raise PlanError(f"{where}: type must be one of {', '.join(PUBLIC_TYPES)}")
        key = item.get("key")
        if key is not None and not isinstance(key, str):
            raise PlanError(f"{where}: key must be a string")
        if kind == "track" and not key:
            raise PlanError(f"{where}: a TRACK rule needs a `key` (the event's name)")
        if kind in ("identify", "group", "common"):
            key = None  # they apply to every message of their kind
        where = f"{where} ({key!r})" if key else where
        found.append(Rule(kind, key or None, _version(item.get("version"), where),
                          _schema(item.get("jsonSchema"), f"{where}.jsonSchema"), where))
    return _unique(found)


def _schema(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PlanError(f"{where}: must be a JSON Schema object")
    return value


def _version(value: Any, where: str) -> int:
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{where}: version must be a whole number, at least 1")
    return value


def _unique(rules: list[Rule]) -> list[Rule]:
    seen: dict[tuple[str, str | None, int], str] = {}
    for rule in rules:
        first = seen.setdefault((rule.kind, rule.key, rule.version), rule.where)
        if first != rule.where:
            raise PlanError(f"{rule.where}: {rule.label} is defined twice (also {first})")
    return rules
