"""The adapter contract (docs/design.md §2.4): `transform(event, settings, lookup) → [HttpRequest]`.

Adapters are pure: they build requests and raise one of a closed set of errors. The only I/O
they may cause goes through the injected `lookup` (Kustomer's customer search, Custify's company
upsert), which production wires to the real HTTP client and tests replay from fixtures.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import marshmallow
import orjson

from adapters.known import unknown_key
from adapters.status import is_retryable_status

T = TypeVar("T")


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request a destination should receive. `url` carries any query string."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None  # a JSON body, or None
    form: Mapping[str, str] | None = None  # a form body, or None
    data: bytes | None = None  # exact body bytes, when a signature covers them (wins over json)

    def with_base(self, base: str | None) -> HttpRequest:
        """Replace scheme, host and port (the `endpoint` override of docs/design.md §4)."""
        if not base:
            return self
        return dataclasses.replace(self, url=rebase_url(self.url, base))


def rebase_url(url: str, base: str) -> str:
    scheme_end = url.index("://") + 3
    path_start = url.find("/", scheme_end)
    rest = url[path_start:] if path_start != -1 else ""
    return base.rstrip("/") + rest


@dataclass(frozen=True)
class LookupResponse:
    status: int
    body: Any  # parsed JSON, or None when the body was empty or not JSON
    text: str = ""
    # the destination's own rate-limit headers (x-ratelimit-remaining / -reset in seconds),
    # so a lookup tightens its lane's bucket like any other answer; None when not sent
    rate_remaining: int | None = None
    rate_reset: float | None = None


Lookup = Callable[[HttpRequest], LookupResponse]


def no_lookups(request: HttpRequest) -> LookupResponse:
    """For adapters that never look anything up: calling it is a bug."""
    raise AssertionError(f"unexpected lookup {request.method} {request.url}")


class AdapterError(Exception):
    """Base of the closed error set. `status` is what the reference reports for the event."""

    retryable = False

    def __init__(self, reason: str, status: int = 400, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class InvalidEvent(AdapterError):
    """The event cannot be sent to this destination as it is: terminal (`dead`)."""


class ConfigError(AdapterError):
    """The destination's settings are unusable: terminal (`dead`) until the config is fixed."""


class Retryable(AdapterError):
    """A transient failure (a lookup answered 5xx/429, a timeout): try again later."""

    retryable = True


class Unsupported(AdapterError):
    """The destination does not take this kind of event: `skipped`, never retried."""


def error_for_status(status: int, reason: str, retry_after: float | None = None) -> AdapterError:
    """A failed lookup passes its HTTP status on; the one rule decides if it is retryable."""
    if is_retryable_status(status):
        return Retryable(reason, status, retry_after)
    return InvalidEvent(reason, status)


@dataclass(frozen=True)
class BatchItem:
    """One event of a router-mode batch. `key` is opaque to the adapter (the delivery id, or a
    fixture's metadata) and comes back in the outputs that cover the item; `extra` carries
    connection-level input some events need (Customer.io RETL records' object type)."""

    event: Mapping[str, Any]
    settings: Mapping[str, Any]
    key: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchOutput:
    """What router mode produced for some items: requests to send, or one error."""

    keys: Sequence[Any]
    requests: Sequence[HttpRequest] = ()
    batched: bool = False
    error: AdapterError | None = None


# -- router mode: RudderStack's conventions for the destinations that batch -------------------

def by_settings(items: Sequence[BatchItem]) -> list[list[BatchItem]]:
    """The items grouped by their settings' content, in order of appearance: a router
    transforms each destination's events together. The worker gives one settings object to
    every item, so each object is serialised once."""
    groups: dict[bytes, list[BatchItem]] = {}
    keys: dict[int, bytes] = {}
    for item in items:
        key = keys.get(id(item.settings))
        if key is None:
            key = keys[id(item.settings)] = orjson.dumps(
                dict(item.settings), option=orjson.OPT_SORT_KEYS, default=str)
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def job_id(key: Any) -> Any:
    """An item's place in its job order: the worker keys items by delivery id (an int),
    fixtures by their metadata (`jobId`)."""
    if key.__class__ is int:
        return key
    if isinstance(key, Mapping):
        return key.get("jobId", 0)
    return key if isinstance(key, int | float) else 0


def dont_batch(item: BatchItem) -> bool:
    """The metadata's `dontBatch`: the item goes in a request of its own."""
    key = item.key
    return key.__class__ is not int and isinstance(key, Mapping) and key.get("dontBatch") is True


def chunks_within(items: Sequence[T], sizes: Sequence[int], limit: int,
                  envelope: int) -> list[list[T]]:
    """The items in order, cut into chunks whose bytes stay within `limit` (`sizes`: each
    item's bytes): each chunk is `envelope` bytes around its items joined by one separator
    byte (a JSON array in an object). An item too big on its own still gets a chunk of its own."""
    chunks: list[list[T]] = []
    current: list[T] = []
    total = envelope
    for item, size in zip(items, sizes, strict=True):
        grown = total + size + (1 if current else 0)
        if current and grown > limit:
            chunks.append(current)
            current, grown = [], envelope + size
        current.append(item)
        total = grown
    if current:
        chunks.append(current)
    return chunks


# Keys RudderStack puts in every destination's config and each destination ignores (event
# filtering, consent, SDK connection mode). A config copied from RudderStack may carry them, so
# config load lets them through; any other key a destination does not know is refused. The
# consent keys are the gateway's to enforce, before any adapter runs (gateway/consent.py).
GENERIC_SETTINGS = frozenset({
    "blacklistedEvents", "whitelistedEvents", "blackListedEvents", "whiteListedEvents",
    "eventFilteringOption", "oneTrustCookieCategories", "ketchConsentPurposes",
    "consentManagement", "eventDelivery", "eventDeliveryTS", "connectionMode", "connectionModes",
    "useNativeSDK", "useNativeSDKToSend",
})


class SettingsSchema(marshmallow.Schema):
    """Settings are named as in RudderStack's destination config, which carries generic keys
    (event filters, consent categories) every destination ignores: unknown keys are let through."""

    class Meta:
        unknown = marshmallow.EXCLUDE


Handler = Callable[[Mapping[str, Any], Mapping[str, Any], Lookup], list[HttpRequest]]


def message_type(event: Mapping[str, Any]) -> str | None:
    """The event's type in lower case, or None when it has none (or not a string)."""
    kind = event.get("type")
    return kind.lower() if isinstance(kind, str) and kind else None


Requires = Callable[[Mapping[str, Any], Mapping[str, Any]], str]
Refusal = Callable[[Mapping[str, Any], str], AdapterError]
Router = Callable[[Sequence[BatchItem]], list[BatchOutput]]
Deletion = Callable[[Mapping[str, Any], Sequence[Mapping[str, Any]], Lookup], None]


def require_type(event: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """The default precondition: the event has a type; returns it in lower case."""
    kind = message_type(event)
    if kind is None:
        raise InvalidEvent("message type is required")
    return kind


def never(settings: Mapping[str, Any]) -> bool:
    return False


def no_rejections(status: int, body: Any) -> dict[int, str]:
    return {}


@dataclass(frozen=True, eq=False)
class Adapter:
    """A destination declared as data (as Segment's action-destinations declare theirs): a
    name, its `integrations` names, a settings schema, a handler per event type. Each folder
    exports one as `ADAPTER`; the methods below are all the gateway calls.

    `transform` runs `requires` (the destination's preconditions, in its reference's order),
    then the type's handler, or refuses the type (`unsupported`, default: skipped). A
    destination that takes every type the same way (webhook, console) gives `every_event`."""

    name: str
    display_names: tuple[str, ...]
    settings_schema: type[marshmallow.Schema] = SettingsSchema
    # requests per second the destination documents (its default rate limit; 0: none known)
    default_rate: float = 0.0
    handlers: Mapping[str, Handler] = field(default_factory=dict)
    requires: Requires = require_type
    unsupported: Refusal | None = None
    every_event: Handler | None = None
    # router mode: `router` groups the events of the settings `batches_when` accepts, and
    # `rejected` reads which items of a successful batch the destination refused anyway
    router: Router | None = None
    batches_when: Callable[[Mapping[str, Any]], bool] = never
    rejected: Callable[[int, Any], dict[int, str]] = no_rejections
    # a regulation's user deletion; None: the destination has no deletion API
    deletion: Deletion | None = None

    def transform(self, event: Mapping[str, Any], settings: Mapping[str, Any],
                  lookup: Lookup) -> list[HttpRequest]:
        if self.every_event is not None:
            return self.every_event(event, settings, lookup)
        return dispatch(self.handlers, self.requires, self.refuse, event, settings, lookup)

    def refuse(self, event: Mapping[str, Any], kind: str) -> AdapterError:
        """The error for a type with no handler (default: skipped, never retried)."""
        if self.unsupported is not None:
            return self.unsupported(event, kind)
        return Unsupported(f"{event.get('type')} is unsupported for destination {self.name}")

    def transform_batch(self, items: Sequence[BatchItem], lookup: Lookup) -> list[BatchOutput]:
        """Router mode: the destination's `router` when its settings batch, else each event on
        its own, one output per item, in order."""
        if self.router is not None and any(self.batches(item.settings) for item in items):
            return self.router(items)
        outputs: list[BatchOutput] = []
        for item in items:
            try:
                outputs.append(BatchOutput([item.key], self.transform(item.event, item.settings,
                                                                      lookup)))
            except AdapterError as error:
                outputs.append(BatchOutput([item.key], error=error))
        return outputs

    def rejected_items(self, status: int, body: Any) -> dict[int, str]:
        """After a batch request succeeded: the items the destination refused anyway, by their
        index in the batch, with the reason (Customer.io answers 207 with errors[])."""
        return self.rejected(status, body)

    @property
    def deletes(self) -> bool:
        """Does the destination have a user deletion API?"""
        return self.deletion is not None

    def delete_users(self, settings: Mapping[str, Any] | None,
                     users: Sequence[Mapping[str, Any]], send: Lookup) -> None:
        """A regulation's user deletion (`users`: `{"userId"}` or `{"email"}` mappings), sent
        through `send`; raise AdapterError as `transform` does. Without a deletion API, the
        regulation reports it `unsupported`."""
        if self.deletion is None:
            raise Unsupported(f"{self.name} has no user deletion API")
        self.deletion(settings or {}, users, send)

    def batches(self, settings: Mapping[str, Any]) -> bool:
        """Does the worker hand this destination's deliveries to `transform_batch`?"""
        return self.router is not None and self.batches_when(settings)

    def check_settings(self, settings: Mapping[str, Any]) -> str | None:
        """A message naming the first bad setting, or None (used when the config loads). An
        unknown key is refused here, though `transform` ignores it: a misspelt optional setting
        would otherwise silently do nothing."""
        unknown = self.unknown_setting(settings)
        if unknown:
            return unknown
        empty = self.empty_required_setting(settings)
        if empty:
            return empty
        errors = self.settings_schema().validate(dict(settings))
        if not errors:
            return None
        field_name, messages = sorted(errors.items())[0]
        text = messages[0] if isinstance(messages, list) else str(messages)
        return f"field {field_name!r}: {text}"

    def empty_required_setting(self, settings: Mapping[str, Any]) -> str | None:
        """A required setting given as "" (or blanks) is as missing as an absent one: an unset
        template variable would otherwise load and make every delivery dead."""
        for name, f in sorted(self.settings_schema().fields.items()):
            key = f.data_key or name
            value = settings.get(key)
            if f.required and isinstance(value, str) and not value.strip():
                return f"field {key!r}: required, must not be empty"
        return None

    def unknown_setting(self, settings: Mapping[str, Any]) -> str | None:
        """The first key neither this destination nor RudderStack's generic config knows, with
        the closest known name."""
        known = {f.data_key or name for name, f in self.settings_schema().fields.items()}
        return unknown_key(set(settings) - GENERIC_SETTINGS, known, "setting")

    def secret_settings(self) -> frozenset[str]:
        """Setting names whose values must never be logged or shown (metadata secret=True)."""
        return frozenset(name for name, f in self.settings_schema().fields.items()
                         if f.metadata.get("secret"))

    def redact(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        secret = self.secret_settings()
        return {k: ("***" if k in secret and v else v) for k, v in settings.items()}


def dispatch(handlers: Mapping[str, Handler],
             check: Callable[[Mapping[str, Any], Mapping[str, Any]], str],
             unsupported: Callable[[Mapping[str, Any], str], AdapterError],
             event: Mapping[str, Any], settings: Mapping[str, Any],
             lookup: Lookup) -> list[HttpRequest]:
    """`check`, then the type's handler (module-level, so router mode can call it too)."""
    kind = check(event, settings)
    handler = handlers.get(kind)
    if handler is None:
        raise unsupported(event, kind)
    return handler(event, settings, lookup)


def delete_each(send: Lookup, requests: Sequence[HttpRequest],
                detail: Callable[[LookupResponse], str]) -> None:
    """A regulation's deletions, sent in turn (all made first: an id refused while they are
    made deletes no one). 200 and 404 both mean gone; any other answer stops with its
    status's error, `detail(response)` its reason."""
    for request in requests:
        response = send(request)
        if response.status not in (200, 404):
            raise error_for_status(response.status, detail(response))


def basic_auth(user: str, password: str = "") -> str:
    """An `Authorization: Basic` value: base64 of `user:password` (the colon always there)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def secret(**kwargs: Any) -> dict[str, Any]:
    """`metadata=` for a secret setting: redacted in logs, API responses and listings."""
    return {"secret": True, **kwargs}
