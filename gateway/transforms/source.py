"""A source's transformations at ingest: on each accepted message, before storing.

A dropped message is answered 200 and not stored (like a source filter). A failure must never
store what the function was meant to mask: the message is refused (a `Rejection` with code
`transformation_failed`, answered and recorded as an invalid message of the request is) unless
the failing transformation says `on_error = "store"`: then that step is skipped and the message
goes on as the step received it. A list of events becomes one message each, with its own
messageId `<id>-<n>` (n from 1) when the function left the original one, so an SDK's resend is
deduplicated exactly like the first send.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from gateway.config import Limits, Source
from gateway.messages import (
    Message,
    MessageError,
    Rejection,
    RequestInfo,
    format_time,
    normalise,
    parse_time,
    strip_nul,
)
from gateway.transforms.config import Transformation
from gateway.transforms.run import Dropped, Failed, escaped_id, run_chain

log = logging.getLogger("gateway.transforms")

FAILED = "transformation_failed"


def apply(source: Source, messages: list[Message], elements: Sequence[Any],
          rejected: Sequence[Rejection], limits: Limits,
          accepted: Sequence[Message] | None = None) -> tuple[list[Message], list[Rejection]]:
    """The messages to store, and the refusals (index = the message's place in the request).
    `accepted`: every message normalise_batch accepted, before the source filters dropped any
    (default: `messages`), to find each one's place."""
    if not source.transformations or not messages:
        return messages, []
    every = messages if accepted is None else accepted
    places = dict(zip((m.message_id for m in every),
                      element_indices(elements, every, {r.index for r in rejected}),
                      strict=True))
    kept: list[Message] = []
    failed: list[Rejection] = []
    for message in messages:
        index = places.get(message.message_id, -1)
        try:
            kept.extend(transform(source, message, limits))
        except Failed as exc:
            log.warning("source %s: messageId %s refused: %s", source.name,
                        escaped_id(message.message_id), exc)
            failed.append(Rejection(index, FAILED, str(exc), message.message_id, message.type))
    return kept, failed


def transform(source: Source, message: Message, limits: Limits) -> list[Message]:
    """The messages the source's chain makes of one message (none when dropped)."""
    messages = [message]
    for step in source.transformations:
        try:
            checked: list[Message] = []
            for given in messages:
                with contextlib.suppress(Dropped):
                    made = run_chain([step], given.payload, source=source.name)
                    if len(made) == 1 and made[0] == given.payload:
                        checked.append(given)  # unchanged: already a checked message
                        continue
                    if len(made) > 1:
                        made = [_numbered(o, given.message_id, n) for n, o in enumerate(made, 1)]
                    checked.extend(_as_message(step, o, message, limits) for o in made)
        except Failed:
            if step.on_error != "store":
                raise
            continue  # "store": this step is skipped, its input goes on
        if not checked:
            return []
        messages = checked
    return messages


def _numbered(payload: dict[str, Any], original_id: str, n: int) -> dict[str, Any]:
    if payload.get("messageId") in (None, "", original_id):
        payload = {**payload, "messageId": f"{original_id}-{n}"}
    return payload


def _as_message(step: Transformation, payload: dict[str, Any], original: Message,
                limits: Limits) -> Message:
    """Normalised again (the function is trusted, the event it was given was not), keeping the
    event time the gateway computed unless the function set another."""
    received = parse_time(original.payload.get("receivedAt"))
    info = RequestInfo(received_at=received or original.timestamp)
    try:
        message = normalise(strip_nul(dict(payload)), info, limits)
    except MessageError as exc:
        raise Failed(step.name, f"returned an event the gateway cannot store: {exc.code}: "
                               f"{exc.message}") from None
    when = parse_time(payload.get("timestamp")) or original.timestamp
    message.payload["timestamp"] = format_time(when)
    return dataclasses.replace(message, timestamp=when)


def element_indices(elements: Sequence[Any], messages: Sequence[Message],
                    rejected: set[int]) -> list[int]:
    """Each accepted message's place in the request: the elements in order, skipping refused
    ones and repeats of a messageId already taken (normalise_batch's own rule)."""
    out: list[int] = []
    seen: set[str] = set()
    i = 0
    for message in messages:
        while i < len(elements) and (i in rejected or _raw_id(elements[i]) in seen):
            i += 1
        out.append(i)
        seen.add(message.message_id)
        i += 1
    return out


def _raw_id(element: Any) -> str | None:
    value = element.get("messageId") if isinstance(element, dict) else None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value) if isinstance(value, float) and value.is_integer() else value)
    return None
