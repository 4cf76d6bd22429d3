"""Consent enforcement per destination: RudderStack's rules and Segment's, pure functions.

A destination's consent rules come from two places of its `[[destinations]]` entry:

- its `settings`, as copied from a RudderStack destination config: `consentManagement` (the
  generic rules, per consent provider), `oneTrustCookieCategories` and `ketchConsentPurposes`
  (the older per-provider keys). They are enforced as RudderStack's processor enforces them
  (its `processor/consent.go`), against the event's `context.consentManagement`;
- its own `[destinations.consent]` table, `categories = ["Advertising", …]`, enforced as
  Segment's Consent Management enforces them, against `context.consent.categoryPreferences`.

`load` checks both at config load (a ValueError naming the table, the field and the entry);
`decide(rules, event)` returns why the event must not reach the destination, or None. The
worker applies it where the destination filters are applied (delivery/send.py): a refused
delivery ends `skipped` with that reason, for replays too. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.known import unknown_key

MAX_LIST = 200  # entries of one list in the config
MAX_ID = 200  # characters of one configured consent id, category or purpose
NAMED_IN_REASON = 5  # ids a reason names before "and N more"
AND, OR = "and", "or"
STRATEGIES = (AND, OR, "")  # "": none given (the `and` rule)
CUSTOM = "custom"  # the provider whose resolution strategy is the destination's own
ONE_TRUST, KETCH = "oneTrust", "ketch"
GENERIC_KEYS = ("provider", "resolutionStrategy", "consents")
TABLE_KEYS = ("categories",)


class ConsentError(ValueError):
    """A consent rule of the config is malformed; the text starts with the table at fault
    (`settings` or `consent`)."""


@dataclass(frozen=True)
class Generic:
    """One `consentManagement` entry: the consent ids the destination needs from a provider."""

    provider: str
    strategy: str  # "and", "or" or "" (used only for the `custom` provider)
    consents: tuple[str, ...]


@dataclass(frozen=True)
class Rules:
    """One destination's consent rules; `empty` when it has none (nothing to check)."""

    generic: tuple[Generic, ...] = ()
    one_trust: tuple[str, ...] = ()  # oneTrustCookieCategories
    ketch: tuple[str, ...] = ()  # ketchConsentPurposes
    categories: tuple[str, ...] = ()  # Segment: [destinations.consent] categories

    @property
    def empty(self) -> bool:
        return not (self.generic or self.one_trust or self.ketch or self.categories)

    def for_provider(self, provider: str) -> Generic | None:
        return next((g for g in self.generic if g.provider == provider), None)


NO_RULES = Rules()


# --- at config load ---------------------------------------------------------------------------


def load(entry: Mapping[str, Any]) -> Rules:
    """The rules of one `[[destinations]]` entry (its `settings` and its `consent` table)."""
    settings = entry.get("settings", {})
    if not isinstance(settings, Mapping):  # config.py refuses it first; never enforce garbage
        raise ConsentError("settings: must be a table")
    categories: tuple[str, ...] = ()
    if "consent" in entry:
        categories = _segment_table(entry["consent"])
    try:
        return Rules(
            generic=_generic(settings.get("consentManagement")),
            one_trust=_ids(settings.get("oneTrustCookieCategories"),
                           "field 'oneTrustCookieCategories'", "oneTrustCookieCategory"),
            ketch=_ids(settings.get("ketchConsentPurposes"), "field 'ketchConsentPurposes'",
                       "purpose"),
            categories=categories)
    except ConsentError as exc:
        raise ConsentError(f"settings: {exc}") from None


def _segment_table(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, Mapping):
        raise ConsentError("consent: must be a table (categories = [\"Advertising\", …])")
    problem = unknown_key(raw, TABLE_KEYS)
    if problem:
        raise ConsentError(f"consent: {problem}")
    values = raw.get("categories", [])
    if not isinstance(values, list) or len(values) > MAX_LIST:
        raise ConsentError(f"consent: field 'categories': must be a list of at most {MAX_LIST} "
                           "category names")
    for index, value in enumerate(values, 1):
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
            raise ConsentError(f"consent: field 'categories': #{index}: must be a non-empty "
                               f"string of at most {MAX_ID} characters")
    return tuple(dict.fromkeys(values))


def _absent(raw: Any) -> bool:
    """Nothing configured: the key missing, an empty list, or an empty table (configs in use
    carry `consentManagement = {}`, which loaded before consent was enforced)."""
    return raw is None or raw == [] or raw == {}


def _entries(raw: Any, where: str, shape: str) -> list[Mapping[str, Any]]:
    if not isinstance(raw, list) or len(raw) > MAX_LIST:
        raise ConsentError(f"{where}: must be a list of at most {MAX_LIST} tables ({shape})")
    for index, item in enumerate(raw, 1):
        if not isinstance(item, Mapping):
            raise ConsentError(f"{where}: #{index}: must be a table ({shape})")
    return raw


def _text(item: Mapping[str, Any], field: str, where: str, required: bool = True) -> str:
    value = item.get(field, None if required else "")
    if not isinstance(value, str) or len(value) > MAX_ID:
        need = "required, " if required else ""
        raise ConsentError(f"{where}: field {field!r}: {need}a string of at most {MAX_ID} "
                           "characters")
    return value.strip()


def _ids(raw: Any, key: str, field: str) -> tuple[str, ...]:
    """`[{field = "id"}, …]` under `key` (a label: "field 'x'"): the ids, trimmed; empty ones
    are left out, as RudderStack does (its dashboard saves an empty row as `{field = ""}`)."""
    if _absent(raw):
        return ()
    shape = f'[{{ {field} = "…" }}, …]'
    found: list[str] = []
    for index, item in enumerate(_entries(raw, key, shape), 1):
        where = f"{key}: #{index}"
        problem = unknown_key(item, (field,))
        if problem:
            raise ConsentError(f"{where}: {problem}")
        found.append(_text(item, field, where))
    return tuple(dict.fromkeys(i for i in found if i))


def _generic(raw: Any) -> tuple[Generic, ...]:
    if _absent(raw):
        return ()
    shape = '[{ provider = "…", resolutionStrategy = "and"|"or", consents = [{ consent = "…" }] }]'
    found: dict[str, Generic] = {}
    seen: set[str] = set()
    for index, item in enumerate(_entries(raw, "field 'consentManagement'", shape), 1):
        where = f"field 'consentManagement': #{index}"
        problem = unknown_key(item, GENERIC_KEYS)
        if problem:
            raise ConsentError(f"{where}: {problem}")
        provider = _text(item, "provider", where, required=False)
        strategy = _text(item, "resolutionStrategy", where, required=False)
        if strategy not in STRATEGIES:
            raise ConsentError(f"{where}: field 'resolutionStrategy': {strategy!r} is neither "
                               "'and' nor 'or'")
        consents = _ids(item.get("consents"), f"{where}: field 'consents'", "consent")
        if provider and provider in seen:
            raise ConsentError(f"{where}: provider {provider!r} appears twice (RudderStack would "
                               "keep only the last entry): merge them")
        seen.add(provider)
        if not consents:  # RudderStack skips an entry without consents
            continue
        if not provider:
            raise ConsentError(f"{where}: field 'provider': required with consents (oneTrust, "
                               "ketch, iubenda, custom, …): an entry without one never applies")
        found[provider] = Generic(provider, strategy, consents)
    return tuple(found.values())


def describe(rules: Rules) -> str:
    """The rules in one line, for `gateway check` and the console ("" when there are none)."""
    parts = [f"consentManagement {g.provider}"
             + (f" ({g.strategy or AND})" if g.provider == CUSTOM else "")
             + f": {_names(g.consents)}" for g in rules.generic]
    for label, ids in (("oneTrustCookieCategories", rules.one_trust),
                       ("ketchConsentPurposes", rules.ketch),
                       ("Segment categories", rules.categories)):
        if ids:
            parts.append(f"{label}: {_names(ids)}")
    return "; ".join(parts)


# --- per event, in the delivery worker ---------------------------------------------------------


def decide(rules: Rules, event: Mapping[str, Any]) -> str | None:
    """Why `event` must not reach the destination with `rules` (`Consent: …` is prefixed by
    the worker), or None to send it."""
    if rules.empty:
        return None
    context = event.get("context")
    if not isinstance(context, Mapping):
        return None
    return (_rudderstack(rules, context.get("consentManagement"))
            or _segment(rules.categories, context.get("consent")))


def _rudderstack(rules: Rules, info: Any) -> str | None:
    """RudderStack's processor, rule for rule. One deliberate difference: where its event
    fields have the wrong type it sends the event everywhere; here a `deniedConsentIds` entry
    that is not a string is ignored like an empty one and the rest still counts, and a
    `provider` or `resolutionStrategy` that is not a string counts as none given."""
    if not isinstance(info, Mapping):
        return None
    listed = info.get("deniedConsentIds")
    if not isinstance(listed, list):
        return None
    denied = {i for i in listed if isinstance(i, str) and i}
    if not denied:  # no denied ids: the event goes everywhere
        return None
    provider = _string(info.get("provider"))
    generic = rules.for_provider(provider) if provider else None
    if generic is not None:
        strategy = generic.strategy if provider == CUSTOM else _string(
            info.get("resolutionStrategy"))
        if strategy == OR:  # sent unless every configured consent is denied
            if all(c in denied for c in generic.consents):
                return (f"denied every one of {_names(generic.consents)} "
                        f"(consentManagement {provider}, or)")
            return None
        hit = [c for c in generic.consents if c in denied]  # `and`: any denied one drops it
        return f"denied {_names(hit)} (consentManagement {provider}, and)" if hit else None
    if provider in ("", ONE_TRUST) and rules.one_trust:
        hit = [c for c in rules.one_trust if c in denied]
        return f"denied {_names(hit)} ({ONE_TRUST})" if hit else None
    if provider in ("", KETCH) and rules.ketch:
        if all(p in denied for p in rules.ketch):
            return f"denied every one of {_names(rules.ketch)} ({KETCH})"
        return None
    return None


def _segment(categories: tuple[str, ...], consent: Any) -> str | None:
    """Segment: only an event that carries `categoryPreferences` (an object) is enforced; it
    reaches the destination when every one of its categories is `true` there."""
    if not categories or not isinstance(consent, Mapping):
        return None
    preferences = consent.get("categoryPreferences")
    if not isinstance(preferences, Mapping):
        return None
    refused = [c for c in categories if preferences.get(c) is not True]
    return f"not granted {_names(refused)} (Segment categoryPreferences)" if refused else None


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _names(ids: Sequence[str]) -> str:
    """Configured ids (bounded at load), the first few by name."""
    shown = ", ".join(ids[:NAMED_IN_REASON])
    more = len(ids) - NAMED_IN_REASON
    return f"{shown} and {more} more" if more > 0 else shown
