"""The dry run: what a chain makes of an event and, for a destination, the exact HTTP requests
its adapter would send, with secrets redacted — nothing is sent. Shared by
`gateway transform test`, `POST /admin/v1/preview` and the console's event page ("what would
this destination receive?"). A lookup an adapter needs first (Kustomer's customer lookup) is
not sent either: the preview stops there and shows that request."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from adapters import DESTINATION_TYPES
from adapters.base import AdapterError, BatchItem, HttpRequest, LookupResponse, Unsupported
from gateway.config import Config, Destination
from gateway.delivery.client import redact, secret_values
from gateway.delivery.send import Target, events_for
from gateway.transforms import run
from gateway.transforms.config import Transformation

MAX_EVENT_BYTES = 1_048_576  # an event given to the dry run (the admin API reads a body)


class PreviewError(ValueError):
    """The dry run cannot start (unknown name, not an event): a message for the user."""


class LookupNeeded(AdapterError):
    """The adapter needs an answer from the destination before it can build its requests."""


def preview(config: Config, event: Any, destination: str | None = None,
            transformation: Transformation | None = None) -> dict[str, Any]:
    """Run the dry run. With `transformation`, that one transformation alone (then, with a
    destination, consent before it and that destination's filters and adapter after it);
    without, the destination's own chain (consent, transformations, filters, adapter)."""
    if not isinstance(event, dict):
        raise PreviewError("the event must be a JSON object")
    if len(orjson.dumps(event)) > MAX_EVENT_BYTES:
        raise PreviewError(f"the event may hold at most {MAX_EVENT_BYTES} bytes")
    chain = _chain(config, destination, transformation)
    target = _target(config, destination, chain) if destination else None
    steps: list[run.Step] = []
    result: dict[str, Any] = {"destination": destination,
                              "transformations": [t.name for t in chain]}
    try:
        if target is None:
            made: Sequence[Mapping[str, Any]] = run.run_chain(chain, event, source=None,
                                                              steps=steps)
        else:
            made = events_for(target, event, steps)
    except (run.Dropped, run.Failed, AdapterError) as exc:
        reason = exc.reason if isinstance(exc, AdapterError) else str(exc)
        result.update(outcome=_outcome(exc), reason=reason, events=[], requests=[],
                      steps=[s.as_json() for s in steps])
        return _redacted(result, target)
    result.update(outcome="sent" if target else "kept", reason=None, events=list(made),
                  steps=[s.as_json() for s in steps], requests=[])
    if target is not None:
        try:
            result["requests"] = [_request_json(r, target) for r in _requests(target, made)]
        except LookupNeeded as exc:
            result.update(outcome="lookup_needed", reason=exc.reason,
                          requests=[_request_json(exc.request, target)])
        except AdapterError as exc:
            result.update(outcome=_outcome(exc), reason=exc.reason)
        except Exception as exc:  # a hand-written event an adapter trips on: say so, no 500
            result.update(outcome="adapter_error", reason=(
                f"the adapter failed on this event ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:200]}); is it a complete event as stored?"))
    return _redacted(result, target)


def _chain(config: Config, destination: str | None,
           transformation: Transformation | None) -> tuple[Transformation, ...]:
    if transformation is not None:
        return (transformation,)
    if destination is None:
        raise PreviewError("name a transformation or a destination")
    return _destination(config, destination).transformations


def _destination(config: Config, name: str) -> Destination:
    for destination in config.destinations:
        if destination.name == name:
            return destination
    known = ", ".join(d.name for d in config.destinations) or "none"
    raise PreviewError(f"no destination named {name!r} (known: {known})")


def _target(config: Config, name: str, chain: tuple[Transformation, ...]) -> Target:
    destination = _destination(config, name)
    if destination.transformations != chain:  # `transform test NAME --destination D`
        destination = _replace_chain(destination, chain)
    adapter = DESTINATION_TYPES[destination.type]
    secrets = secret_values(destination.settings, adapter.secret_settings())
    return Target(destination, adapter, _no_lookup, secrets, adapter.batches(
        destination.settings), adapter.redact(destination.settings))


def _replace_chain(destination: Destination, chain: tuple[Transformation, ...]) -> Destination:
    return dataclasses.replace(destination, transformations=chain)


def _no_lookup(request: HttpRequest) -> LookupResponse:
    error = LookupNeeded("the adapter needs the destination's answer to this request before "
                         "it can build the others; the preview sends nothing")
    error.request = request  # type: ignore[attr-defined]
    raise error


def _requests(target: Target, made: Sequence[Mapping[str, Any]]) -> list[HttpRequest]:
    settings = target.destination.settings
    if not target.batches:
        return [r for one in made for r in target.adapter.transform(one, settings,
                                                                     target.lookup)]
    items = [BatchItem(one, settings, key=n) for n, one in enumerate(made)]
    requests: list[HttpRequest] = []
    for output in target.adapter.transform_batch(items, target.lookup):
        if output.error is not None:
            raise output.error
        requests.extend(output.requests)
    return requests


def _request_json(request: HttpRequest, target: Target) -> dict[str, Any]:
    sent = request.with_base(target.destination.endpoint)
    body: Any = sent.json
    if sent.data is not None:
        body = sent.data.decode("utf-8", "replace")
    elif sent.form is not None:
        body = dict(sent.form)
    return {"method": sent.method, "url": sent.url, "headers": dict(sent.headers),
            "body": body}


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, run.Dropped):
        return "dropped"
    if isinstance(exc, run.Failed):
        return "failed"
    name = type(exc).__name__
    if name in ("TransformDropped", "TransformFailed"):
        return "dropped" if name == "TransformDropped" else "failed"
    # as the worker would end the delivery: skipped (consent, a filter, an unsupported type)
    # or dead (the adapter refused the event)
    return "skipped" if isinstance(exc, Unsupported) else "refused"


def _redacted(result: dict[str, Any], target: Target | None) -> dict[str, Any]:
    """Every secret of the destination hidden, in every form `redact` knows, anywhere in the
    result (a transformation may have copied one into the event too)."""
    if target is None or not target.secrets:
        return result
    text = orjson.dumps(result).decode()
    loaded: dict[str, Any] = orjson.loads(redact(text, target.secrets))
    return loaded
