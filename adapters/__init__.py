"""The registry of destination types: type name → its adapter.

Adding a destination is one folder (`adapters/<type>/`, exporting `ADAPTER`) and one line in
`ADAPTER_MODULES` below. Routing reads each adapter's display names (the `integrations` keys of
tracking-api.md §6.5), config loading its settings schema, the worker its `transform`.
"""

from __future__ import annotations

from importlib import import_module

from adapters.base import Adapter

ADAPTER_MODULES = (
    "custify",
    "kustomer",
    "customerio",
    "customfit",
    "webhook",
    "console",
)


def _load() -> dict[str, Adapter]:
    registry: dict[str, Adapter] = {}
    for module_name in ADAPTER_MODULES:
        adapter = import_module(f"adapters.{module_name}").ADAPTER
        if adapter.name != module_name:
            raise ImportError(f"adapters.{module_name}.ADAPTER is named {adapter.name!r}")
        registry[module_name] = adapter
    return registry


DESTINATION_TYPES: dict[str, Adapter] = _load()
