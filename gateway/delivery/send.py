"""Sending: transform claimed deliveries with their destination's adapter and send the requests.

Each destination is resolved once when the worker starts (`Target`: its adapter, lookup client,
secret values, whether it batches); a send produces one `Outcome` per delivery and touches no
database. A lane's throttle and circuit breaker (lanes.py) are asked before every request.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from adapters import DESTINATION_TYPES
from adapters.base import (
    Adapter,
    AdapterError,
    BatchItem,
    BatchOutput,
    HttpRequest,
    InvalidEvent,
    Lookup,
    LookupResponse,
    Unsupported,
)
from adapters.status import is_success
from gateway import consent, filters
from gateway.config import Destination
from gateway.delivery.claim import Claimed
from gateway.delivery.client import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    HttpClient,
    Sent,
    secret_values,
)
from gateway.delivery.verdict import Outcome, crashed, refused, released
from gateway.transforms import run

log = logging.getLogger("gateway.delivery.worker")

SEND_BUDGET = CONNECT_TIMEOUT + READ_TIMEOUT  # the longest one request may take


@dataclass(frozen=True)
class Target:
    """A destination resolved once: what every delivery to it needs, computed at start."""

    destination: Destination
    adapter: Adapter
    lookup: Lookup
    secrets: tuple[str, ...]
    batches: bool
    # the settings a transformation's context shows: the adapter's secret ones hidden
    public_settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.destination.name


def resolve(destination: Destination, client: HttpClient) -> Target:
    adapter = DESTINATION_TYPES[destination.type]
    secrets = secret_values(destination.settings, adapter.secret_settings())
    return Target(destination, adapter, client.lookup(destination.endpoint), secrets,
                  adapter.batches(destination.settings), adapter.redact(destination.settings))


@dataclass(frozen=True)
class Finished:
    """One attempt done, waiting to be recorded."""

    claimed: Claimed
    target: Target | None
    started: datetime
    outcome: Outcome


# Asked before each request: None to go ahead, or an Outcome that stops the send (the circuit
# is open). Called after each answer with the Sent, so the lane learns from it.
Gate = Callable[[], Outcome | None]
Observe = Callable[[Sent], None]


class Sender:
    def __init__(self, client: HttpClient, lease_seconds: float,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        """`now`: when a send starts, against its lease (a fake clock in tests)."""
        self.client = client
        self.lease_seconds = lease_seconds
        self.now = now

    def one(self, claimed: Claimed, target: Target | None, gate: Gate | None = None,
            observe: Observe | None = None) -> list[Finished]:
        started = self.now()
        if self.lease_too_short(claimed, started):
            return [Finished(claimed, target, started, released("not sent: lease too short"))]
        try:
            outcome = self._attempt(claimed, target, gate, observe)
        except Exception as exc:  # a bug in an adapter must not lose the delivery
            log.exception("delivery %s: unexpected error", claimed.id)
            outcome = crashed(exc)
        return [Finished(claimed, target, started, outcome)]

    def batch(self, claimed: Sequence[Claimed], target: Target, gate: Gate | None = None,
              observe: Observe | None = None) -> list[Finished]:
        """Router mode: the adapter groups the events into requests; each output's fate is
        the fate of every delivery it covers."""
        started = self.now()
        if any(self.lease_too_short(c, started) for c in claimed):
            return [Finished(c, target, started, released("not sent: lease too short"))
                    for c in claimed]
        by_id = {c.id: c for c in claimed}
        settings = target.destination.settings
        items = [BatchItem(c.event, settings, key=c.id) for c in claimed]
        items, skipped = split_batch(target.destination, items, target)  # consent, filters
        try:
            outputs = skipped + (target.adapter.transform_batch(items, target.lookup)
                                 if items else [])
        except Exception as exc:
            log.exception("batch for %s: unexpected error", target.name)
            outcome = crashed(exc)
            return [Finished(c, target, started, outcome) for c in claimed]
        results: dict[Any, Outcome] = {}  # by delivery id, in output order
        for output in outputs:
            outcome = (refused(output.error) if output.error is not None
                       else self.send_all(output.requests, target, gate, observe))
            rejected = _rejected(target.adapter, outcome)
            for index, key in enumerate(output.keys):
                one = outcome if index not in rejected else Outcome(
                    outcome.status, "ItemRejected", rejected[index], outcome.duration_ms,
                    rejected=rejected[index])
                # a transformation's split event is several items of one delivery
                delivery = key.delivery if isinstance(key, Part) else key
                results[delivery] = _worse(results.get(delivery), one)
        finished = [Finished(by_id.pop(key), target, started, outcome)
                    for key, outcome in results.items()]
        for left in by_id.values():  # an adapter that forgot an item must not lose it
            finished.append(Finished(left, target, started, Outcome(
                error_class="NotBatched", text="left out of every batch")))
        return finished

    def lease_too_short(self, claimed: Claimed, now: datetime) -> bool:
        """Never start a send that could outlive its lease unrenewed (the loop renews leases
        every poll, but a claim that waited long in a queue goes back unsent)."""
        if self.lease_seconds <= 0:  # leases that expire at once (tests): nothing to protect
            return False
        margin = min(SEND_BUDGET, self.lease_seconds / 2)
        return (claimed.lease - now).total_seconds() < margin

    def _attempt(self, claimed: Claimed, target: Target | None, gate: Gate | None,
                 observe: Observe | None) -> Outcome:
        if target is None or not target.destination.enabled:
            return refused(DestinationRemoved("the destination is no longer configured or enabled"))
        if claimed.regulation_id is not None:  # a user deletion (a regulation), not an event
            return _deletion(claimed, target)
        try:
            # consent, transformations, filters: may skip; a split event is several requests
            requests = [request for event in events_for(target, claimed.event)
                        for request in target.adapter.transform(
                            event, target.destination.settings, target.lookup)]
        except AdapterError as error:
            return refused(error)
        return self.send_all(requests, target, gate, observe)

    def send_all(self, requests: Sequence[HttpRequest], target: Target, gate: Gate | None,
                 observe: Observe | None) -> Outcome:
        """Send in order; the first request that does not succeed decides the outcome."""
        total_ms, last = 0, Outcome(status=200)
        endpoint = target.destination.endpoint
        for request in requests:
            stop = gate() if gate else None
            if stop is not None:
                return stop
            sent = self.client.send(request, endpoint)
            if observe:
                observe(sent)
            total_ms += sent.duration_ms
            last = Outcome(sent.status, sent.error_class, sent.text, total_ms, sent.retry_after)
            if not is_success(sent.status):
                break
        return last


def _deletion(claimed: Claimed, target: Target) -> Outcome:
    """A regulation's deletion request (gateway/regulations): the adapter's `delete_users`
    sends it through the lookup client (it knows the destination's "already gone" answers);
    its errors are refusals like a transform's, so retries, dead letters and attempts hold.
    The attempt records the destination's real status when one answered."""
    started = time.monotonic()
    answers: list[LookupResponse] = []

    def send(request: HttpRequest) -> LookupResponse:
        answers.append(target.lookup(request))
        return answers[-1]

    try:
        answer = send_deletion(target.adapter, claimed.event, target.destination.settings, send)
    except AdapterError as error:
        outcome = refused(error)
        return dataclasses.replace(outcome, status=answers[-1].status) if answers else outcome
    # the adapter returned: the destination deleted the person, or never had them (404)
    return Outcome(answer.status, None, answer.text or "",
                   int((time.monotonic() - started) * 1000), accepted=True)


class DestinationRemoved(AdapterError):
    """The delivery's destination was removed or disabled: dead, not retried."""


def _rejected(adapter: Adapter, outcome: Outcome) -> dict[int, str]:
    if not is_success(outcome.status) or outcome.error_class:
        return {}
    try:
        body = orjson.loads(outcome.text) if outcome.text else None
    except orjson.JSONDecodeError:
        return {}
    return adapter.rejected_items(outcome.status, body)


# --- destination consent (gateway/consent.py) and filters (gateway/filters/): a refused or --
# --- dropped event is the contract's Unsupported, so the delivery ends `skipped` -------------


class Filtered(Unsupported):
    """A destination filter dropped the event: the delivery ends `skipped` with the reason."""


class Consent(Unsupported):
    """The event's consent forbids this destination: `skipped`, the reason names the rule
    (`Consent: denied C0004 (oneTrust)`)."""


def for_destination(destination: Any, event: Mapping[str, Any]) -> Mapping[str, Any]:
    """What the adapter of `destination` (anything with `.consent` and `.filters`) is given,
    or Consent / Filtered. Consent first: no filter can make a refused event go out."""
    refusal = consent.decide(destination.consent, event)
    if refusal is not None:
        raise Consent(refusal)
    if destination.filters.empty:
        return event
    result = filters.apply(destination.filters, event)
    if isinstance(result, filters.Dropped):
        raise Filtered(result.reason)
    return result


def split_batch(destination: Any, items: list[BatchItem],
                target: Target | None = None) -> tuple[list[BatchItem], list[BatchOutput]]:
    """Router mode: the items consent, the transformations and the filters let through
    (transformed), and one skipped (or, for a failed transformation, dead) output per refused
    or dropped item. An event a transformation split is one item per part, keyed `Part`."""
    chain = getattr(destination, "transformations", ())
    if destination.filters.empty and destination.consent.empty and not chain:
        return items, []
    kept: list[BatchItem] = []
    dropped: list[BatchOutput] = []
    for item in items:
        try:
            if not chain:
                kept.append(dataclasses.replace(
                    item, event=for_destination(destination, item.event)))
                continue
            assert target is not None, "a destination with transformations needs its Target"
            made = events_for(target, item.event)
            kept.extend([dataclasses.replace(item, event=made[0])] if len(made) == 1 else
                        [dataclasses.replace(item, event=event, key=Part(item.key, n))
                         for n, event in enumerate(made)])
        except (Filtered, Consent, TransformDropped, TransformFailed) as error:
            dropped.append(BatchOutput([item.key], error=error))
    return kept, dropped


@dataclass(frozen=True)
class Part:
    """The batch key of one part of a split event: its delivery's key and its place."""

    delivery: Any
    n: int


def _worse(before: Outcome | None, now: Outcome) -> Outcome:
    """One delivery's outcome from its parts' (a split event): the first part that failed
    decides; else a sent part's over a skipped one's."""
    if before is None:
        return now
    if _failed(before):
        return before
    if _failed(now) or isinstance(before.error, Unsupported):
        return now
    return before


def _failed(outcome: Outcome) -> bool:
    if outcome.error is not None:
        return not isinstance(outcome.error, Unsupported)
    return (outcome.rejected is not None or outcome.released or outcome.error_class is not None
            or not is_success(outcome.status or 0)) and not outcome.accepted


# --- destination transformations (gateway/transforms): consent first, then the chain, then ---
# --- the filters on each event the chain made ---------------------------------------------


class TransformDropped(Unsupported):
    """A transformation returned None: the delivery ends `skipped`, naming it."""


class TransformFailed(InvalidEvent):
    """A transformation raised (or returned no event): `dead` at once, with the exception and
    the last lines of its traceback; retrying cannot help, replay after the fix."""


def events_for(target: Target, event: Mapping[str, Any],
               steps: list[run.Step] | None = None) -> list[Mapping[str, Any]]:
    """What the adapter of `target` is given for one stored event, in order: consent first
    (no transformation can make a refused event go out), then the transformations, then the
    filters on each event they made. Raises Consent, TransformDropped, TransformFailed or
    Filtered."""
    destination = target.destination
    if not destination.transformations:
        return [for_destination(destination, event)]
    refusal = consent.decide(destination.consent, event)
    if refusal is not None:
        raise Consent(refusal)
    try:
        made = run.run_chain(destination.transformations, event, source=None,
                             destination=destination.name, settings=target.public_settings,
                             steps=steps)
    except run.Dropped as exc:
        raise TransformDropped(str(exc)) from None
    except run.Failed as exc:
        raise TransformFailed(str(exc)) from None
    if destination.filters.empty:
        return made
    kept: list[Mapping[str, Any]] = []
    reason = ""
    for one in made:
        result = filters.apply(destination.filters, one)
        if isinstance(result, filters.Dropped):
            reason = reason or result.reason
        else:
            kept.append(result)
    if not kept:
        raise Filtered(reason)
    return kept



# --- a regulation's deletion (gateway/regulations) -------------------------------------------


def send_deletion(adapter: Adapter, subject: Mapping[str, Any] | None,
                  settings: Mapping[str, Any], lookup: Lookup) -> LookupResponse:
    """Ask the adapter to delete the person at its destination (the worker's deletion branch).
    Returns the last answer; raises the adapter's errors (Unsupported: nothing to do there)."""
    if subject is None:
        raise Unsupported("the deletion's keys were erased when its regulation finished: "
                          "create a new delete regulation to send it again")
    # by userId; by email only for a person known by no userId (Customer.io takes either)
    users = [{"userId": user} for user in subject.get("userIds", [])] or [
        {"email": email} for email in subject.get("emails", [])]
    if not users:
        raise Unsupported("the profile has no userId or email a destination can delete by")
    answers: list[LookupResponse] = []

    def send(request: HttpRequest) -> LookupResponse:
        answers.append(lookup(request))
        return answers[-1]

    adapter.delete_users(settings, users, send)
    if not answers:
        raise Unsupported(f"{adapter.name}: nothing to delete by for this profile")
    return answers[-1]
