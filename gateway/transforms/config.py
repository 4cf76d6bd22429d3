"""`[[transformations]]` tables: parsed, imported and checked at load, attached by name.

A transformation is trusted code in the operator's module (`function = "module:callable"`),
importable from the config file's folder or the environment. Every mistake is one line naming
the transformation; the caller (gateway/config/load.py) prefixes the file name.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.known import unknown_key

DEFAULT_TIMEOUT_MS = 100
ON_ERROR = ("refuse", "store")
KEYS = {"name", "function", "timeout_ms", "on_error"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # also a metrics label: bounded
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class TransformConfigError(ValueError):
    """A transformation cannot be used; the message says which and why, in one line."""


@dataclass(frozen=True)
class Transformation:
    """One declared transformation, its callable imported and checked."""

    name: str
    function: str  # "module:callable" as written
    call: Callable[[Any, Any], Any] = field(compare=False, repr=False)
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    on_error: str = "refuse"  # sources only: "store" keeps the message as the step got it


def parse(items: Any, base_dir: Path | None = None) -> dict[str, Transformation]:
    """The `[[transformations]]` array → {name: Transformation}, each callable imported."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise TransformConfigError("[[transformations]] must be an array of tables")
    found: dict[str, Transformation] = {}
    for index, item in enumerate(items, 1):
        table = f"[[transformations]] #{index}"
        if not isinstance(item, dict):
            raise TransformConfigError(f"{table} must be a table")
        problem = unknown_key(item, KEYS)
        if problem:
            raise TransformConfigError(f"{table}: {problem}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise TransformConfigError(
                f"{table}: field 'name': required, letters, digits, '.', '_' or '-' "
                "(at most 100)")
        table = f"{table} ({name!r})"
        if name in found:
            raise TransformConfigError(f"{table}: field 'name': duplicate transformation name")
        timeout = item.get("timeout_ms", DEFAULT_TIMEOUT_MS)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
            raise TransformConfigError(f"{table}: field 'timeout_ms': a whole number ≥ 1")
        on_error = item.get("on_error", "refuse")
        if on_error not in ON_ERROR:
            raise TransformConfigError(
                f"{table}: field 'on_error': {on_error!r} is not one of refuse, store")
        target = item.get("function")
        if not isinstance(target, str) or not _TARGET.fullmatch(target):
            raise TransformConfigError(
                f"{table}: field 'function': required, \"module:callable\" "
                "(e.g. \"acme_gateway.transforms:mask_cards\")")
        try:
            call = load_callable(target, base_dir)
        except TransformConfigError as exc:
            raise TransformConfigError(f"{table}: field 'function': {exc}") from None
        found[name] = Transformation(name, target, call, timeout, on_error)
    return found


def load_callable(target: str, base_dir: Path | None = None) -> Callable[[Any, Any], Any]:
    """Import `module:callable` (the config file's folder searched first) and check that it
    takes `(event, ctx)`."""
    module_name, _, attribute = target.partition(":")
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))  # kept: the module may import its neighbours later
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error in the operator's module: one line, not a traceback
        raise TransformConfigError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: "
            f"{_one_line(exc)}") from None
    value: Any = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise TransformConfigError(f"module {module_name!r} has no {attribute!r}")
        value = getattr(value, part)
    if not callable(value):
        raise TransformConfigError(f"{target!r} is not callable")
    try:
        inspect.signature(value).bind(None, None)
    except TypeError:
        raise TransformConfigError(
            f"{target!r} must take two parameters (event, ctx)") from None
    except ValueError:  # no signature to read (some builtins): trust it
        pass
    return value


def attach(raw: Mapping[str, Any], sources: Sequence[Any], destinations: Sequence[Any],
           base_dir: Path | None = None) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Sources and destinations with their `transformations = [...]` resolved to chains.
    `sources`/`destinations` are the loaded entries, in the order of the raw tables."""
    declared = parse(raw.get("transformations"), base_dir)
    return (tuple(_with_chain(entry, item, declared, f"[[sources]] #{i}")
                  for i, (entry, item) in enumerate(zip(sources, raw.get("sources") or [],
                                                        strict=True), 1)),
            tuple(_with_chain(entry, item, declared, f"[[destinations]] #{i}")
                  for i, (entry, item) in enumerate(zip(destinations,
                                                        raw.get("destinations") or [],
                                                        strict=True), 1)))


def _with_chain(entry: Any, item: Mapping[str, Any], declared: Mapping[str, Transformation],
                table: str) -> Any:
    names = item.get("transformations")
    if names is None:
        return entry
    table = f"{table} ({entry.name!r})"
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TransformConfigError(
            f"{table}: field 'transformations': must be a list of transformation names")
    chain = []
    for name in names:
        if name not in declared:
            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = f"; declared: {', '.join(declared)}" if declared and not close else ""
            raise TransformConfigError(
                f"{table}: field 'transformations': no [[transformations]] named "
                f"{name!r}{hint}{known}")
        chain.append(declared[name])
    return dataclasses.replace(entry, transformations=tuple(chain))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]
