"""A destination for development: it logs each event it receives and sends nothing.

Point a source at it to watch what the gateway would fan out without any external account."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from marshmallow import fields

from adapters.base import Adapter, HttpRequest, Lookup, SettingsSchema
from adapters.textsafe import json_safe, printable

log = logging.getLogger("gateway.console")


class ConsoleSettings(SettingsSchema):
    pretty = fields.Boolean(load_default=False, metadata={"description": "indent the JSON"})


def transform(event: Mapping[str, Any], settings: Mapping[str, Any],
          lookup: Lookup) -> list[HttpRequest]:
    """One log record per event; its values escaped, so event data cannot forge a log line
    or send a control sequence to the terminal showing the log."""
    option = orjson.OPT_INDENT_2 if settings.get("pretty") else 0
    log.info("console destination: %s %s %s", printable(event.get("type")),
             printable(event.get("messageId")),
             json_safe(orjson.dumps(dict(event), option=option).decode()))
    return []


ADAPTER = Adapter(
    name="console",
    display_names=("Console",),
    settings_schema=ConsoleSettings,
    every_event=transform,
)
