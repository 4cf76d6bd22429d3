"""Which destinations receive a message (tracking-api.md §6.5).

A destination receives a message when it is enabled, linked to the message's source, and the
message's `integrations` object lets it through: its own key (any of the type's display names or
the configured destination name, case-sensitive) wins; otherwise `All`, which defaults to true.
"""

from __future__ import annotations

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
