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
    "customfit",
    "webhook",
    "console",
)


class AwaitingAdapter(Adapter):
    """A type the gateway accepts and routes to, whose adapter has not landed yet: events are
    stored and their deliveries wait as `pending` (the worker does not claim them) until it
    does."""

    def __init__(self, name: str, display_names: tuple[str, ...]) -> None:
        self.name = name
        self.display_names = display_names


AWAITING = (
    AwaitingAdapter("customerio", ("Customer.io", "Customer IO", "CustomerIO")),
)


def _load() -> dict[str, Adapter]:
    registry: dict[str, Adapter] = {a.name: a for a in AWAITING}
    for module_name in ADAPTER_MODULES:
        adapter = import_module(f"adapters.{module_name}").ADAPTER
        if adapter.name != module_name:
            raise ImportError(f"adapters.{module_name}.ADAPTER is named {adapter.name!r}")
        registry[module_name] = adapter
    return registry


DESTINATION_TYPES: dict[str, Adapter] = _load()


def deliverable(type_name: str) -> bool:
    """Has this type an adapter the worker can run?"""
    return not isinstance(DESTINATION_TYPES.get(type_name), AwaitingAdapter)
