"""The config's `[[tracking_plans]]` tables and each source's plan keys, parsed here so
gateway/config.py only holds the fields (README "Tracking plans").

Every plan is read and compiled at load: a plan file that does not parse, or a schema that does
not compile, stops start-up with one line naming the plan and the rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.known import unknown_key
from gateway.plans.load import PlanError, read
from gateway.plans.validate import Plan

SOURCE_KEYS = ("tracking_plan", "unplanned_events", "violations")
PLAN_KEYS = ("name", "file")  # a [[tracking_plans]] entry
UNPLANNED_CHOICES = ("allow", "drop")
VIOLATION_CHOICES = ("flag", "drop_properties", "drop_event")


class PlanSettingsError(Exception):
    """A `[[tracking_plans]]` table or a source's plan keys are wrong (one line)."""


@dataclass(frozen=True, eq=False)
class SourcePlan:
    """What a source does with its plan."""

    plan: Plan
    unplanned_events: str = "allow"
    violations: str = "flag"


def load_plans(items: Any, base_dir: Path | None) -> dict[str, Plan]:
    """Every `[[tracking_plans]]` entry, its file read (relative to the config's folder) and
    its rules compiled."""
    if not isinstance(items, list):
        raise PlanSettingsError("[[tracking_plans]] must be an array of tables")
    plans: dict[str, Plan] = {}
    for index, item in enumerate(items, 1):
        table = f"[[tracking_plans]] #{index}"
        if not isinstance(item, dict):
            raise PlanSettingsError(f"{table} must be a table")
        problem = unknown_key(item, PLAN_KEYS)
        if problem:
            raise PlanSettingsError(f"{table}: {problem}")
        name, file = item.get("name"), item.get("file")
        if not isinstance(name, str) or not name.strip():
            raise PlanSettingsError(f"{table}: field 'name' is required (a non-empty string)")
        table = f"[[tracking_plans]] #{index} ({name!r})"
        if name in plans:
            raise PlanSettingsError(f"{table}: duplicate plan name")
        if not isinstance(file, str) or not file.strip():
            raise PlanSettingsError(f"{table}: field 'file' is required (the plan's path)")
        path = Path(file)
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        try:
            plans[name] = Plan(name, read(path))
        except PlanError as exc:
            raise PlanSettingsError(f"{table}: {exc}") from None
    return plans


def for_source(item: Mapping[str, Any], plans: Mapping[str, Plan],
               table: str) -> SourcePlan | None:
    """The source's plan settings; None when it names no plan (then the other keys are an
    error: they would silently do nothing)."""
    name = item.get("tracking_plan")
    if name is None:
        stray = [key for key in SOURCE_KEYS[1:] if key in item]
        if stray:
            raise PlanSettingsError(f"{table}: field {stray[0]!r} needs a tracking_plan")
        return None
    if not isinstance(name, str) or name not in plans:
        known = ", ".join(sorted(plans)) or "none is declared in [[tracking_plans]]"
        raise PlanSettingsError(f"{table}: field 'tracking_plan': no plan named {name!r} "
                                f"({known})")
    unplanned = _choice(item, "unplanned_events", UNPLANNED_CHOICES, table)
    violations = _choice(item, "violations", VIOLATION_CHOICES, table)
    return SourcePlan(plans[name], unplanned, violations)


def _choice(item: Mapping[str, Any], key: str, choices: tuple[str, ...], table: str) -> str:
    value = item.get(key, choices[0])
    if value not in choices:
        raise PlanSettingsError(f"{table}: field {key!r} must be one of {', '.join(choices)}")
    return value


def attach(raw: Mapping[str, Any], sources: tuple[Any, ...], where: str,
           base_dir: Path | None) -> tuple[tuple[Any, ...], dict[str, Plan]]:
    """The plans, and the sources (as gateway/config.py built them, in file order) with their
    `tracking_plan` set. Errors come back as one line naming the file."""
    from dataclasses import replace

    from gateway.config import ConfigFileError

    try:
        plans = load_plans(raw.get("tracking_plans", []), base_dir)
        items = raw.get("sources", [])
        attached = []
        for index, (item, source) in enumerate(zip(items, sources, strict=True), 1):
            chosen = for_source(item, plans, f"[[sources]] #{index} ({source.name!r})")
            attached.append(replace(source, tracking_plan=chosen) if chosen else source)
    except PlanSettingsError as exc:
        raise ConfigFileError(f"{where}: {exc}") from None
    return tuple(attached), plans
