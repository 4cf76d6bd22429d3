"""Calling a chain of transformations: a copy of the event in, events out, each call timed.

Every call gets a deep copy of the event as the next step would see it (so a function that
mutates its argument changes nothing behind the gateway's back) and a `Context`. A call returns an
event, a list of events (each goes on through the rest of the chain, in order) or None (dropped).
Anything else, or an exception, is a `Failed` naming the transformation with the last lines of
its traceback. Python cannot stop a running function: `timeout_ms` is a budget that is measured
and logged (with the event's messageId), not enforced — README "Transformations".
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import orjson

from gateway import metrics
from gateway.transforms.config import Transformation

log = logging.getLogger("gateway.transforms")

MAX_OUTPUT_EVENTS = 100  # one call may turn one event into at most this many
TRACE_FRAMES = 2  # frames of the function's traceback kept in a dead delivery's reason
MAX_ID_IN_LOG = 120


@dataclass(frozen=True)
class Context:
    """What a transformation is told besides the event. `settings` are the destination's
    settings without the secret ones (empty for a source); read-only."""

    transformation: str
    source: str | None
    destination: str | None = None
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    logger: logging.Logger = log


class Dropped(Exception):
    """The chain dropped the event: `name` is the transformation that returned None (or an
    empty list)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"transformation {name!r} dropped the event")
        self.name = name


class Failed(Exception):
    """A transformation raised, or returned something that is not an event."""

    def __init__(self, name: str, error: BaseException | str) -> None:
        self.name = name
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
            frames = traceback.extract_tb(error.__traceback__)[-TRACE_FRAMES:]
            where = " | ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} in {f.name}: "
                               f"{(f.line or '').strip()[:120]}" for f in frames)
            text = f"{text} | {where}" if where else text
        else:
            text = error
        self.text = text
        super().__init__(f"transformation {name!r} failed: {text}")


@dataclass
class Step:
    """One transformation's effect on the events it was given (explain and the dry run)."""

    name: str
    given: int
    returned: int
    milliseconds: float
    events: list[dict[str, Any]]
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        effect = ("failed" if self.error else "dropped" if not self.returned
                  else f"split into {self.returned}" if self.returned > self.given
                  else "kept")
        return {"transformation": self.name, "effect": effect, "given": self.given,
                "returned": self.returned, "milliseconds": round(self.milliseconds, 3),
                "events": self.events, "error": self.error}


def run_chain(chain: Sequence[Transformation], event: Mapping[str, Any], *,
              source: str | None, destination: str | None = None,
              settings: Mapping[str, Any] | None = None,
              steps: list[Step] | None = None) -> list[dict[str, Any]]:
    """The events the chain makes of `event`, in order. Raises Dropped when nothing is left,
    Failed when a step fails. `steps`, when given, receives each step's effect."""
    view = MappingProxyType(dict(settings or {}))
    events: list[dict[str, Any]] = [event]  # type: ignore[list-item]
    for transformation in chain:
        context = Context(transformation.name, source, destination, view,
                          logging.getLogger(f"gateway.transforms.{transformation.name}"))
        out: list[dict[str, Any]] = []
        started = time.perf_counter()
        try:
            for one in events:
                out.extend(call(transformation, one, context))
        except Failed as exc:
            if steps is not None:
                steps.append(Step(transformation.name, len(events), 0,
                                  (time.perf_counter() - started) * 1000, [], exc.text))
            raise
        if steps is not None:
            steps.append(Step(transformation.name, len(events), len(out),
                              (time.perf_counter() - started) * 1000, copy_events(out)))
        if not out:
            raise Dropped(transformation.name)
        events = out
    return events


def call(transformation: Transformation, event: Mapping[str, Any],
         context: Context) -> list[dict[str, Any]]:
    """One call on a copy of `event`, timed: its events (none when dropped), or Failed."""
    try:
        given = orjson.loads(orjson.dumps(event))  # a deep copy; events are JSON
    except TypeError as exc:
        raise Failed(transformation.name, f"the event given is not JSON: {exc}") from None
    started = time.perf_counter()
    try:
        result = transformation.call(given, context)
    except Exception as exc:
        _timed(transformation, event, started)
        raise Failed(transformation.name, exc) from exc
    _timed(transformation, event, started)
    return checked(transformation.name, result)


def checked(name: str, result: Any) -> list[dict[str, Any]]:
    """A call's result as a list of JSON objects, or Failed saying what was returned."""
    if result is None:
        return []
    found = [result] if isinstance(result, dict) else result
    if not isinstance(found, list | tuple) or not all(isinstance(e, dict) for e in found):
        raise Failed(name, f"returned {type(result).__name__}: expected an event (dict), "
                           "a list of events or None")
    if len(found) > MAX_OUTPUT_EVENTS:
        raise Failed(name, f"returned {len(found)} events: at most {MAX_OUTPUT_EVENTS}")
    try:
        orjson.dumps(list(found))
    except TypeError as exc:
        raise Failed(name, f"returned an event that is not JSON: {exc}") from None
    return list(found)


def copy_events(found: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = orjson.loads(orjson.dumps(list(found)))
    return result


def _timed(transformation: Transformation, event: Mapping[str, Any], started: float) -> None:
    seconds = time.perf_counter() - started
    metrics.TRANSFORMATION_SECONDS.labels(transformation.name).observe(seconds)
    if seconds * 1000 > transformation.timeout_ms:
        log.warning("transformation %s took %d ms (timeout_ms %d) on messageId %s",
                    transformation.name, seconds * 1000, transformation.timeout_ms,
                    escaped_id(event.get("messageId")))


def escaped_id(value: Any) -> str:
    """A messageId fit for a log line: JSON-quoted (control characters escaped), clipped."""
    text = value if isinstance(value, str) else repr(value)
    return orjson.dumps(text[:MAX_ID_IN_LOG]).decode()
