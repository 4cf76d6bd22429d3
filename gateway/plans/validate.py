"""Validate messages against a plan's rules, compiled once, and describe each failure in
RudderStack's violation shape (`{type, message, meta: {instancePath, schemaPath}}`).

Two well-kept libraries, each where it is best: every message goes through the rule compiled
by `fastjsonschema` (Python code generated once per rule: a valid message, the usual case,
costs a few microseconds). fastjsonschema stops at the first error, but a flagged event must
list everything that failed and `drop_properties` must remove every offending property, so a
message that failed is checked again with `jsonschema`, whose `iter_errors` reports them all.
Messages never quote the value that failed (it may be personal data): they say what was
expected, as ajv does for RudderStack.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import jsonschema
from jsonschema.exceptions import SchemaError, ValidationError

from gateway.plans.load import PlanError, Rule

UNPLANNED = "Unplanned-Event"
REQUIRED = "Required-Missing"
DATATYPE = "Datatype-Mismatch"
ADDITIONAL = "Additional-Properties"
UNKNOWN = "Unknown-Violation"
MAX_REPORTED = 20  # violations listed per message (removals are not capped)
MAX_NAME = 100  # a property name quoted in a violation (it comes from the sender)
CONTAINERS = ("properties", "traits", "context")  # where drop_properties may remove things
DEFAULT_DRAFT = jsonschema.Draft7Validator  # Segment writes draft-07 schemas


@dataclass(frozen=True)
class Violation:
    type: str
    message: str
    instance_path: tuple[str | int, ...]
    schema_path: str
    extra: Mapping[str, str] = field(default_factory=dict)  # missingProperty / additional…

    @property
    def rule(self) -> str:
        """The rule that failed, as the violations record aggregates it."""
        named = self.extra.get("missingProperty") or self.extra.get("additionalProperty")
        return f"{self.schema_path} ({named})" if named else self.schema_path

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message,
                "meta": {"instancePath": pointer(self.instance_path),
                         "schemaPath": self.schema_path, **self.extra}}


@dataclass(frozen=True)
class Outcome:
    violations: tuple[Violation, ...]
    removals: tuple[tuple[str | int, ...], ...]  # what drop_properties removes


VALID = Outcome((), ())


def _no_remote(uri: str) -> Any:
    raise PlanError(f"remote $ref {uri[:200]!r}: a plan must be self-contained")


class Compiled:
    """One rule, compiled once by both libraries."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        schema = dict(rule.schema)
        cls = jsonschema.validators.validator_for(schema, default=DEFAULT_DRAFT)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            path = pointer(tuple(exc.absolute_path))
            raise PlanError(f"{rule.where}: not a valid JSON Schema at {path or '/'}: "
                            f"{exc.message[:300]}") from None
        try:
            self.fast: Callable[[Any], Any] = fastjsonschema.compile(
                schema, handlers={"http": _no_remote, "https": _no_remote},
                use_formats=True)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            raise PlanError(f"{rule.where}: cannot compile the schema: {exc}") from None
        self.detail = cls(schema, format_checker=cls.FORMAT_CHECKER)

    def check(self, payload: Mapping[str, Any]) -> Outcome:
        """VALID, or every failure of this rule with what drop_properties would remove."""
        try:
            self.fast(payload)
            return VALID
        except fastjsonschema.JsonSchemaValueException as first:
            return self._explain(payload, first)

    def _explain(self, payload: Mapping[str, Any],
                 first: fastjsonschema.JsonSchemaValueException) -> Outcome:
        violations: list[Violation] = []
        removals: list[tuple[str | int, ...]] = []
        seen: set[tuple[Any, ...]] = set()
        for error in self.detail.iter_errors(payload):
            for violation, removal in _describe(error):
                key = (violation.type, violation.instance_path, violation.schema_path,
                       tuple(violation.extra.items()))
                if key in seen:
                    continue
                seen.add(key)
                violations.append(violation)
                if removal is not None:
                    removals.append(removal)
        if not violations:  # the libraries disagree (a format one knows): keep the first
            path = tuple(p for p in first.path[1:]) if first.path else ()
            violations.append(Violation(UNKNOWN, f"must pass the {first.rule!r} keyword",
                                        path, "#"))
        return Outcome(tuple(violations), tuple(removals))


def _describe(error: ValidationError) -> Iterable[
        tuple[Violation, tuple[str | int, ...] | None]]:
    path = tuple(error.absolute_path)
    schema_path = "#/" + "/".join(str(p) for p in error.absolute_schema_path)
    keyword = error.validator
    if keyword == "required" and isinstance(error.instance, dict):
        # every missing name here; the caller drops the repeats (jsonschema reports each
        # missing name as an error of its own, all with the same keyword and paths)
        for name in (n for n in error.validator_value if n not in error.instance):
            name = _clip(name)
            yield (Violation(REQUIRED, f"must have required property '{name}'", path,
                             schema_path, {"missingProperty": name}), None)
        return
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        for name in _additional(error.instance, error.schema):
            yield (Violation(ADDITIONAL, "must NOT have additional properties", path,
                             schema_path, {"additionalProperty": _clip(name)}),
                   _removable((*path, name)))
        return
    if keyword == "type":
        wanted = error.validator_value
        text = ",".join(wanted) if isinstance(wanted, list) else str(wanted)
        yield Violation(DATATYPE, f"must be {text}", path, schema_path), _removable(path)
        return
    yield (Violation(UNKNOWN, _message(str(keyword), error.validator_value), path,
                     schema_path), _removable(path))


def _additional(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """The names additionalProperties refused (not declared, matching no pattern)."""
    declared = schema.get("properties") or {}
    patterns = [re.compile(p) for p in (schema.get("patternProperties") or {})]
    return [name for name in instance
            if name not in declared and not any(p.search(name) for p in patterns)]


def _removable(path: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Inside properties, traits or context, and not the container itself."""
    return path if len(path) >= 2 and path[0] in CONTAINERS else None


def _message(keyword: str, value: Any) -> str:
    """ajv's wording for the common keywords, without the failing value."""
    simple = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">",
              "exclusiveMaximum": "<"}
    if keyword in simple and isinstance(value, int | float):
        return f"must be {simple[keyword]} {value}"
    texts = {
        "enum": "must be equal to one of the allowed values",
        "const": "must be equal to constant",
        "pattern": f'must match pattern "{str(value)[:200]}"',
        "format": f'must match format "{str(value)[:50]}"',
        "minLength": f"must NOT have fewer than {value} characters",
        "maxLength": f"must NOT have more than {value} characters",
        "minItems": f"must NOT have fewer than {value} items",
        "maxItems": f"must NOT have more than {value} items",
        "uniqueItems": "must NOT have duplicate items",
    }
    return texts.get(keyword, f"must pass the '{keyword[:50]}' keyword")


def pointer(path: Iterable[str | int]) -> str:
    """A JSON Pointer (RFC 6901), as ajv writes instancePath."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _clip(name: Any) -> str:
    text = str(name).replace("\x00", "")
    return text if len(text) <= MAX_NAME else text[:MAX_NAME - 1] + "…"


class Plan:
    """A plan's rules compiled, and the choice of which apply to a message."""

    def __init__(self, name: str, rules: list[Rule]) -> None:
        self.name = name
        self.compiled = [Compiled(rule) for rule in rules]
        self.common = [c for c in self.compiled if c.rule.kind == "common"]
        self.by_kind: dict[str, list[Compiled]] = {}
        self.by_key: dict[tuple[str, str], dict[int, Compiled]] = {}
        for c in self.compiled:
            if c.rule.kind == "common":
                continue
            if c.rule.key is None:
                self.by_kind.setdefault(c.rule.kind, []).append(c)
            else:
                self.by_key.setdefault((c.rule.kind, c.rule.key), {})[c.rule.version] = c

    @property
    def events(self) -> list[str]:
        return sorted({key for kind, key in self.by_key if kind == "track"})

    def rules_for(self, payload: Mapping[str, Any]) -> list[Compiled] | None:
        """The rules a message must pass; None for a track event the plan does not name."""
        kind = payload.get("type")
        chosen = list(self.common)
        if kind in ("track", "page", "screen"):
            name = payload.get("event" if kind == "track" else "name")
            versions = self.by_key.get((kind, name)) if isinstance(name, str) else None
            if versions:
                chosen.append(versions.get(_asked_version(payload)) or
                              versions[max(versions)])
            elif kind == "track":
                return None
        chosen.extend(self.by_kind.get(str(kind), ()))
        return chosen

    def check(self, payload: Mapping[str, Any]) -> Outcome | None:
        """None: an unplanned track event. Otherwise what every applicable rule found."""
        rules = self.rules_for(payload)
        if rules is None:
            return None
        outcomes = [c.check(payload) for c in rules]
        if all(o is VALID for o in outcomes):
            return VALID
        return Outcome(tuple(itertools.chain.from_iterable(o.violations for o in outcomes)),
                       tuple(itertools.chain.from_iterable(o.removals for o in outcomes)))


def unplanned(payload: Mapping[str, Any]) -> Violation:
    name = payload.get("event")
    return Violation(UNPLANNED, f"no schema for event '{_clip(name)}' in the tracking plan", (),
                     "#")


def _asked_version(payload: Mapping[str, Any]) -> int | None:
    """Segment's way to pin a rule version: context.protocols.event_version."""
    context = payload.get("context")
    protocols = context.get("protocols") if isinstance(context, dict) else None
    version = protocols.get("event_version") if isinstance(protocols, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else None
