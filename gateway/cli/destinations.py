"""`gateway destinations`: the destination types and their settings, secrets marked."""

from __future__ import annotations

from typing import Any

import orjson

from adapters import DESTINATION_TYPES


def describe() -> list[dict[str, Any]]:
    """One entry per type: its `integrations` names and each setting (type, required, secret)."""
    out = []
    for name, adapter in sorted(DESTINATION_TYPES.items()):
        settings = []
        for field_name, field in adapter.settings_schema().fields.items():
            settings.append({
                "name": field_name,
                "type": field.__class__.__name__.lower(),
                "required": field.required,
                "secret": bool(field.metadata.get("secret")),
                "description": field.metadata.get("description", ""),
            })
        out.append({"type": name, "display_names": list(adapter.display_names),
                    "settings": settings})
    return out


def render(as_json: bool) -> str:
    entries = describe()
    if as_json:
        return orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode()
    lines = []
    for entry in entries:
        lines.append(f"{entry['type']}  (integrations: {', '.join(entry['display_names'])})")
        for s in entry["settings"]:
            flags = ", ".join(f for f, on in (("required", s["required"]),
                                              ("secret", s["secret"])) if on)
            note = f"  [{flags}]" if flags else ""
            described = f"  {s['description']}" if s["description"] else ""
            lines.append(f"    {s['name']:<32} {s['type']:<8}{note}{described}")
    return "\n".join(lines)
