"""The registry of destination types: type name → what the gateway knows about it.

Routing needs the display names a message's `integrations` object may use (tracking-api.md §6.5);
config loading needs each type's settings schema. Adapters (issue: destination adapters) hang
their transform off the same entry, so adding a destination stays one folder and one line here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import marshmallow


@dataclass(frozen=True)
class DestinationType:
    """One destination type: its `integrations` names and (once declared) its settings schema."""

    name: str
    display_names: tuple[str, ...]
    settings_schema: type[marshmallow.Schema] | None = None

    def check_settings(self, settings: Mapping[str, Any]) -> str | None:
        """Return a message naming the first bad setting, or None when they are usable."""
        if self.settings_schema is None:
            return None
        errors = self.settings_schema().validate(dict(settings))
        if not errors:
            return None
        field_name, messages = sorted(errors.items())[0]
        text = messages[0] if isinstance(messages, list) else str(messages)
        return f"field {field_name!r}: {text}"


def _entries(*types: DestinationType) -> dict[str, DestinationType]:
    return {t.name: t for t in types}


DESTINATION_TYPES: dict[str, DestinationType] = _entries(
    DestinationType("custify", ("Custify",)),
    DestinationType("kustomer", ("Kustomer",)),
    DestinationType("customerio", ("Customer.io", "Customer IO", "CustomerIO")),
    DestinationType("customfit", ("CustomFit", "CustomFit.ai")),
    DestinationType("webhook", ("Webhook", "Webhooks")),
    DestinationType("console", ("Console",)),
)
