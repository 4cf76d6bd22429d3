"""What the graph works with: what one message says about identity (its keys — userId,
anonymousId, an identify's email —, its user traits and an alias's previousId, blocked values
left out), and a profile as the graph holds it in memory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.config.identity import DEFAULT_SETTINGS, IdentitySettings
from gateway.messages import Message
from gateway.store.models import (
    key_value,
)

Key = tuple[str, str]


@dataclass(frozen=True)
class Links:
    """What one message says about identity."""

    keys: tuple[Key, ...]  # userId, anonymousId, email: in that order (the message's home first)
    traits: dict[str, Any]
    previous_id: str | None = None  # alias: the profile to absorb into userId's
    blocked: tuple[str, ...] = ()  # kinds whose value was a blocked value (not a key)


def links_of(message: Message, settings: IdentitySettings = DEFAULT_SETTINGS) -> Links:
    """The message's keys, its user traits and an alias's previousId; blocked values (trimmed,
    case-insensitive: `undefined`, `null`, …) are left out."""
    payload = message.payload
    keys: list[Key] = []
    blocked: list[str] = []
    for kind, value in (("userId", message.user_id), ("anonymousId", message.anonymous_id)):
        if value:
            if settings.is_blocked(value):
                blocked.append(kind)
            else:
                keys.append((kind, key_value(value)))
    traits: dict[str, Any] = {}
    if message.type == "identify":
        traits = user_traits(payload)
        email = traits.get("email")
        if isinstance(email, str) and email.strip():
            if settings.is_blocked(email):
                blocked.append("email")
            else:
                keys.append(("email", key_value(email.strip().lower())))
    previous = payload.get("previousId") if message.type == "alias" else None
    if previous and settings.is_blocked(str(previous)):
        blocked.append("previousId")
        previous = None
    return Links(tuple(keys), traits, key_value(str(previous)) if previous else None,
                 tuple(blocked))


def user_traits(payload: dict[str, Any]) -> dict[str, Any]:
    """identify's user traits: context.traits overlaid by top-level traits (§6.4)."""
    context_traits = (payload.get("context") or {}).get("traits")
    merged = dict(context_traits) if isinstance(context_traits, dict) else {}
    top = payload.get("traits")
    if isinstance(top, dict):
        merged.update(top)
    return merged


@dataclass
class Profile:
    """A profile this transaction touches. `loaded`: its row was read (traits, seen range);
    otherwise first/last seen are only this batch's range, applied by a min/max UPDATE."""

    id: int
    traits: dict[str, Any]
    traits_updated_at: datetime | None
    first_seen: datetime | None
    last_seen: datetime | None
    loaded: bool = True
    dirty: bool = False  # traits changed (or merged): the whole row is written
    seen_changed: bool = False  # only first/last seen moved: a narrower UPDATE

    def seen(self, when: datetime | None) -> None:
        if when is None:
            return
        if self.first_seen is None or when < self.first_seen:
            self.first_seen, self.seen_changed = when, True
        if self.last_seen is None or when > self.last_seen:
            self.last_seen, self.seen_changed = when, True

    def merge_traits(self, traits: dict[str, Any], when: datetime | None) -> None:
        """Latest wins by event time; older traits only fill keys the profile lacks."""
        if not traits:
            return
        if self.traits_updated_at is None or (when is not None and when >= self.traits_updated_at):
            self.traits = {**self.traits, **traits}
            self.traits_updated_at = when
        else:
            self.traits = {**traits, **self.traits}
        self.dirty = True


def traits_age(profile: Profile) -> tuple[bool, datetime | None]:
    return (profile.traits_updated_at is not None, profile.traits_updated_at)
