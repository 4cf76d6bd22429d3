"""Which destinations receive a message (tracking-api.md §6.5).

A destination receives a message when it is enabled, linked to the message's source, and the
message's `integrations` object lets it through: its own key (any of the type's display names or
the configured destination name, case-sensitive) wins; otherwise `All`, which defaults to true.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.config import Config, Destination


def destinations_for_source(config: Config, source: str) -> tuple[Destination, ...]:
    """Enabled destinations linked to a source (before per-message `integrations`)."""
    return tuple(d for d in config.destinations if d.enabled and source in d.sources)


def wants(destination: Destination, integrations: Any) -> bool:
    """Does a message's `integrations` value send it to this destination?"""
    if integrations is None:
        return True
    if not isinstance(integrations, Mapping):
        return False  # rudder-server: a non-object routes the event nowhere
    everything = integrations.get("All", True)
    if not isinstance(everything, bool):
        return False
    for name in destination.display_names:
        if name in integrations:
            return _switch(integrations[name])
    return everything


def _switch(value: Any) -> bool:
    """true or an options object → send; false (or anything else falsy) → skip."""
    if isinstance(value, Mapping):
        return True
    return value is True


def route(candidates: tuple[Destination, ...], integrations: Any) -> list[Destination]:
    return [d for d in candidates if wants(d, integrations)]


def decision(destination: Destination, integrations: Any) -> tuple[bool, str]:
    """`wants` with the rule that decided, in words (for `gateway explain`). Same branches in
    the same order; tests/unit/test_routing.py checks the two always agree."""
    if integrations is None:
        return True, "the message has no integrations object (everything is sent)"
    if not isinstance(integrations, Mapping):
        return False, "the message's integrations value is not an object: it routes nowhere"
    everything = integrations.get("All", True)
    if not isinstance(everything, bool):
        return False, f"integrations.All is {_shown(everything)}, not true or false: routes nowhere"
    for name in destination.display_names:
        if name in integrations:
            verdict = _switch(integrations[name])
            return verdict, f"integrations[{name!r}] is {_shown(integrations[name])}"
    if "All" in integrations:
        return everything, (f"integrations.All is {_shown(everything)} and no key names this "
                            f"destination ({', '.join(destination.display_names)})")
    return True, "integrations names neither this destination nor All (All defaults to true)"


def _shown(value: Any) -> str:
    if isinstance(value, Mapping):
        return "an options object"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"
