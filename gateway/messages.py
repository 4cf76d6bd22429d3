"""Validation and normalisation of tracking messages (tracking-api.md §6–§8).

`normalise_batch` turns the elements of one request into stored-event payloads, one by one: a bad
message is reported and dropped, the others are kept (Segment's behaviour, §8). Validation of the
fields a message type requires is declared once, as marshmallow schemas; normalisation (ids,
timestamps, context, request-level fields) is plain code after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from marshmallow import RAISE, Schema, ValidationError, fields, validates_schema

from gateway.config import Limits
from gateway.store.models import MESSAGE_TYPES

MESSAGE_ID_COLUMN = 255  # events.message_id: the cap whatever [limits] says
# The earliest event time stored: PostgreSQL reads a timestamptz back in the session's time
# zone, and year 1 seen from a zone west of UTC is 1 BC, which psycopg refuses to load.
EARLIEST_EVENT_TIME = datetime(1, 1, 2, tzinfo=UTC)
NO_ID = "a message needs a userId or an anonymousId"
REQUIRED_TEXT = "Missing data for required field."  # marshmallow's own text for required fields


class Identifier(fields.Field):
    """An id as SDKs send it: a string (trimmed) or a number (stringified); null = absent."""

    default_error_messages = {"invalid": "must be a string or a number"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value.strip() or None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return str(value)


class Obj(fields.Dict):
    """A JSON object field where null means absent."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(allow_none=True, **kwargs)


class MessageSchema(Schema):
    """Fields common to every message type (the others are carried unchecked)."""

    class Meta:
        unknown = RAISE  # normalise() passes only the declared fields

    type = fields.String(required=True)
    messageId = Identifier(allow_none=True)
    userId = Identifier(allow_none=True)
    anonymousId = Identifier(allow_none=True)
    context = Obj()
    properties = Obj()
    traits = Obj()
    integrations = fields.Raw(allow_none=True)  # a non-object routes nowhere (§6.5), not an error

    @validates_schema
    def _needs_an_id(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        if not data.get("userId") and not data.get("anonymousId"):
            raise ValidationError(NO_ID, "userId")


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("must not be empty")


class TrackSchema(MessageSchema):
    event = fields.String(required=True, validate=_not_blank)


class GroupSchema(MessageSchema):
    groupId = Identifier(required=True)


class AliasSchema(MessageSchema):
    previousId = Identifier(required=True)

    @validates_schema
    def _needs_an_id(self, data: Mapping[str, Any], **kwargs: Any) -> None:
        for name in ("userId", "previousId"):
            if not data.get(name):
                raise ValidationError(REQUIRED_TEXT, name)


class NamedSchema(MessageSchema):
    """page and screen: `name` and `category` are optional strings."""

    name = fields.String(allow_none=True)
    category = fields.String(allow_none=True)


SCHEMAS: dict[str, Schema] = {
    "identify": MessageSchema(),
    "track": TrackSchema(),
    "page": NamedSchema(),
    "screen": NamedSchema(),
    "group": GroupSchema(),
    "alias": AliasSchema(),
}


@dataclass(frozen=True)
class Rejection:
    """One message not accepted, reported back to the caller."""

    index: int
    code: str
    message: str
    message_id: str | None = None
    message_type: str = "unknown"  # a known type or "unknown": bounded, for metrics labels

    def as_json(self) -> dict[str, Any]:
        out = {"index": self.index, "code": self.code, "message": self.message}
        if self.message_id:
            out["messageId"] = self.message_id
        return out


@dataclass
class Message:
    """A normalised message, ready to store."""

    type: str
    message_id: str
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    payload: dict[str, Any]

    @property
    def event(self) -> str | None:
        return self.payload.get("event") if self.type == "track" else None


@dataclass(frozen=True)
class RequestInfo:
    """What a request contributes to each of its messages."""

    received_at: datetime
    ip: str | None = None
    sent_at: Any = None  # raw body-level sentAt
    context: Mapping[str, Any] | None = None
    integrations: Mapping[str, Any] | None = None


def strip_nul(value: Any) -> Any:
    """Remove the NUL character from every string and key of a parsed JSON value, in place
    where it can (rudder-server does the same): PostgreSQL text cannot hold it, and a value
    one database stores and the other refuses would split their behaviour. Iterative, so
    nesting depth costs no recursion."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    stack = [value] if isinstance(value, dict | list) else []
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            items = [(k.replace("\x00", ""), v.replace("\x00", "") if isinstance(v, str) else v)
                     for k, v in node.items()]
            node.clear()
            node.update(items)  # keys that only differed by NUL: the last wins, as in JSON
            stack.extend(v for _, v in items if isinstance(v, dict | list))
        else:
            for index, child in enumerate(node):
                if isinstance(child, str):
                    node[index] = child.replace("\x00", "")
                elif isinstance(child, dict | list):
                    stack.append(child)
    return value


def nesting_exceeds(value: Any, limit: int, depth: int = 1) -> bool:
    """True when `value`, counted as level `depth`, holds an object or array deeper than `limit`.
    Iterative with one iterator per level: memory grows with the depth, not with the size."""
    if not isinstance(value, dict | list):
        return False
    if depth > limit:
        return True
    stack = [iter(value.values() if isinstance(value, dict) else value)]
    while stack:
        for child in stack[-1]:
            if isinstance(child, dict | list):
                if depth + len(stack) > limit:
                    return True
                stack.append(iter(child.values() if isinstance(child, dict) else child))
                break
        else:
            stack.pop()
    return False


def too_deep_text(limits: Limits) -> str:
    return f"JSON nesting may be at most {limits.max_json_depth} levels deep"


def normalise_batch(elements: list[Any], info: RequestInfo, limits: Limits,
                    path_type: str | None = None) -> tuple[list[Message], list[Rejection]]:
    """Validate and normalise every element. A messageId repeated within the request is a
    duplicate, not an error: like a resent one it is accepted and stored once."""
    accepted: list[Message] = []
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for index, element in enumerate(elements):
        if index >= limits.max_batch_messages:
            text = f"a batch holds at most {limits.max_batch_messages} messages"
            rejected.append(Rejection(index, "batch_too_long", text))
            continue
        try:
            message = normalise(element, info, limits, path_type)
        except MessageError as exc:
            fields = element if isinstance(element, dict) else {}
            mid, kind = fields.get("messageId"), path_type or fields.get("type")
            rejected.append(Rejection(index, exc.code, exc.message,
                                      mid if isinstance(mid, str) else None,
                                      kind if isinstance(kind, str) and kind in SCHEMAS
                                      else "unknown"))
            continue
        if message.message_id in seen:
            continue
        seen.add(message.message_id)
        accepted.append(message)
    return accepted, rejected


class MessageError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def normalise(element: Any, info: RequestInfo, limits: Limits,
              path_type: str | None = None) -> Message:
    """One message → a normalised Message, or MessageError saying what is wrong."""
    if not isinstance(element, dict):
        raise MessageError("invalid_message", "a message must be a JSON object")
    # first: orjson cannot serialise what nests past 255 levels. A batch's messages sit two
    # levels down (body, `batch`): the depth counts from the body
    if nesting_exceeds(element, limits.max_json_depth, 1 if path_type else 3):
        raise MessageError("too_deep", too_deep_text(limits))
    if limits.max_message_bytes and len(orjson.dumps(element)) > limits.max_message_bytes:
        raise MessageError("message_too_large",
                           f"a message may hold at most {limits.max_message_bytes} bytes")
    kind = path_type or element.get("type")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise MessageError("invalid_type", f"type must be one of {', '.join(MESSAGE_TYPES)}")
    schema = SCHEMAS[kind]
    # Only the declared fields go through marshmallow; the rest of the message is carried as
    # it is (INCLUDE would copy it field by field for nothing).
    declared = {name: element[name] for name in schema.fields if name in element}
    declared["type"] = kind
    try:
        checked: dict[str, Any] = schema.load(declared)
    except ValidationError as exc:
        raise MessageError(*_describe(exc)) from None
    return _finish(kind, {**element, **checked}, info, limits)


def _describe(exc: ValidationError) -> tuple[str, str]:
    messages = exc.normalized_messages()
    field, problems = next(iter(messages.items()))
    text = problems[0] if isinstance(problems, list) else str(problems)
    if field == "_schema":
        return "invalid_message", str(text)
    if text == NO_ID:
        return "no_user_anon_id", NO_ID
    if text == REQUIRED_TEXT:
        return "missing_field", f"{field} is required"
    return "invalid_field", f"{field}: {text}"


def _finish(kind: str, data: dict[str, Any], info: RequestInfo, limits: Limits) -> Message:
    # null means absent (§6.1): drop top-level nulls before anything reads the message
    payload = {k: v for k, v in data.items() if v is not None}
    payload.pop("writeKey", None)

    message_id = payload.get("messageId") or str(uuid.uuid4())
    longest = min(limits.max_message_id_length, MESSAGE_ID_COLUMN)
    if len(message_id) > longest:
        raise MessageError("invalid_field", f"messageId: at most {longest} characters")
    payload["messageId"] = message_id

    context = dict(info.context or {})
    context.update(payload.get("context") or {})
    if info.ip and "ip" not in context:
        context["ip"] = info.ip
    payload["context"] = context
    if info.ip:
        payload["request_ip"] = info.ip
    if info.integrations and isinstance(payload.get("integrations", {}), dict):
        payload["integrations"] = {**info.integrations, **payload.get("integrations", {})}
    payload.setdefault("integrations", {})

    timestamp = _event_time(payload, info)
    payload["timestamp"] = format_time(timestamp)
    payload["receivedAt"] = format_time(info.received_at)
    return Message(kind, message_id, payload.get("userId"), payload.get("anonymousId"),
                   timestamp, payload)


def _event_time(payload: dict[str, Any], info: RequestInfo) -> datetime:
    """timestamp = receivedAt − (sentAt − originalTimestamp), tracking-api.md §7 (Rec.).

    A message carrying both `originalTimestamp` (the SDK's call time) and `timestamp` comes from
    a RudderStack SDK whose caller set the event time explicitly: rudder-server keeps that
    `timestamp` as it is, and so do we. A result outside the calendar (or before
    EARLIEST_EVENT_TIME) falls back to receivedAt; the raw values stay in the payload.
    """
    when = _claimed_time(payload, info)
    return when if when >= EARLIEST_EVENT_TIME else info.received_at


def _claimed_time(payload: dict[str, Any], info: RequestInfo) -> datetime:
    raw_sent = payload.get("sentAt", info.sent_at)
    explicit = parse_time(payload.get("timestamp"))
    if explicit is not None and "originalTimestamp" in payload:
        if raw_sent is not None:
            payload["sentAt"] = raw_sent
        return explicit
    raw_original = payload.get("originalTimestamp", payload.get("timestamp"))
    original = parse_time(raw_original)
    sent = parse_time(raw_sent)
    if original is not None and "originalTimestamp" not in payload:
        payload["originalTimestamp"] = raw_original
    if raw_sent is not None and "sentAt" not in payload:
        payload["sentAt"] = raw_sent
    if original is None:
        return info.received_at
    if sent is None:
        return original
    try:
        return info.received_at - (sent - original)
    except OverflowError:  # the correction leaves the calendar (sentAt in year 1, …)
        return info.received_at


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 with `Z` or an offset and 0–9 fractional digits; anything else is absent, and
    so is a time that has no UTC equivalent (`0001-01-01T00:00:00+14:00`)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def iso_text(value: datetime | None) -> str | None:
    """A stored time as the admin API, the CLI and the console show it: ISO-8601 as stored,
    `Z` for UTC (None stays None). The one timestamp-to-text rule of the read side."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def format_time(value: datetime) -> str:
    """RFC 3339 with milliseconds and `Z`, as both vendors emit it (years below 1000 padded:
    strftime's %Y does not pad them on every platform)."""
    value = value.astimezone(UTC)
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:"
            f"{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z")
