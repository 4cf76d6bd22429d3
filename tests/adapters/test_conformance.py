"""Conformance: every case file under tests/fixtures/destinations/<dest>/ (the shared cases,
copied into the repository), under $GATEWAY_EXTRA_FIXTURES/<dest>/ and under
tests/adapters/cases/<dest>/ (our own cases, same format), compared as tests/fixtures/README.md
says. Sockets are blocked throughout: the
adapters must do no network I/O of their own (docs/design.md §2.4)."""

from __future__ import annotations

import importlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters import ADAPTER_MODULES
from adapters.base import AdapterError, BatchItem, HttpRequest, LookupResponse

REPO = Path(__file__).resolve().parents[2]
SHARED_FIXTURES = REPO / "tests" / "fixtures" / "destinations"
OWN_CASES = Path(__file__).resolve().parent / "cases"
DESTINATIONS = ADAPTER_MODULES
V2_FLAG = "CUSTOMERIO_BATCHING_FRAMEWORK_ENABLED_WORKSPACE_IDS"

# Upstream outputs we deliberately do not reproduce, with the reason (fixtures README).
EXPECTED_DIFFERENCES = {
    ("custify router #0", 1): "JS artifact: a missing apiKey is sent as `Bearer undefined`; "
                              "our adapter fails the event with a configuration error instead",
}


# Kinds of upstream cases we deliberately do not run, by rule (fixtures README), with the reason.
NOT_RUN = {
    "customerio v1 router": "Customer.io's v1 router mode batches group objects, always to the "
                            "US host; the worker sends v1 events one by one instead (no EU "
                            "object ever goes to the US host), so only v2 router cases apply",
}


def not_run(destination: str, case: dict[str, Any]) -> str | None:
    """The NOT_RUN reason that covers the case, or None to run it."""
    v1_router = "inputs" in case and (case.get("env") or {}).get(V2_FLAG) != "ALL"
    if destination == "customerio" and v1_router:
        return NOT_RUN["customerio v1 router"]
    return None


def case_roots() -> list[Path]:
    roots = [SHARED_FIXTURES, OWN_CASES]
    extra = os.environ.get("GATEWAY_EXTRA_FIXTURES")
    if extra:
        roots.append(Path(extra))
    return roots


def load_cases() -> Iterator[Any]:
    assert SHARED_FIXTURES.is_dir(), f"shared fixtures missing at {SHARED_FIXTURES}"
    for root in case_roots():
        unknown = {p.name for p in root.iterdir() if p.is_dir()} - set(DESTINATIONS)
        assert not unknown, f"cases for unregistered destinations in {root}: {unknown}"
    for root in case_roots():
        for destination in DESTINATIONS:
            folder = root / destination
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                for index, case in enumerate(json.loads(path.read_text())):
                    label = f"{root.name}/{destination}/{path.name}#{index}: {case['name']}"
                    yield pytest.param(destination, path.name, case, id=label)


def adapter_for(destination: str):
    return importlib.import_module(f"adapters.{destination}").ADAPTER


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an adapter tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


class ReplayedLookups:
    """Answers lookups from a case's `mocks`, in call order, checking method and URL."""

    def __init__(self, mocks: list[dict[str, Any]], ordered: bool = True) -> None:
        self.mocks = list(mocks)
        self.ordered = ordered
        self.calls: list[HttpRequest] = []

    def __call__(self, request: HttpRequest) -> LookupResponse:
        self.calls.append(request)
        for index, mock in enumerate(self.mocks):
            if mock["method"].upper() == request.method.upper() and mock["url"] == request.url:
                self.mocks.pop(index)
                break
            if self.ordered:
                raise AssertionError(f"lookup {request.method} {request.url}, expected "
                                     f"{mock['method']} {mock['url']}")
        else:
            raise AssertionError(f"unexpected lookup {request.method} {request.url}")
        body = mock.get("response_body")
        return LookupResponse(mock["response_status"], body,
                              "" if body is None else json.dumps(body))


def assert_request(actual: HttpRequest, expected: dict[str, Any]) -> None:
    assert actual.method.upper() == expected["method"].upper()
    assert actual.url == expected["endpoint"]
    sent = {k.lower(): v for k, v in actual.headers.items()}
    for name, value in expected["headers"].items():
        assert sent.get(name.lower()) == value, f"header {name}"
    body = actual.json if actual.json is not None else {}
    assert body == expected.get("body_json", {})
    assert type_tree(body) == type_tree(expected.get("body_json", {}))


def type_tree(value: Any) -> Any:
    """Numbers keep their types: 9830311522 is an int, "432" a string, 1.5 a float."""
    if isinstance(value, dict):
        return {k: type_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [type_tree(v) for v in value]
    return type(value).__name__


def assert_error(error: AdapterError, expected: dict[str, Any]) -> None:
    assert error.reason == expected["error"]
    assert error.status == expected["status"]


@pytest.mark.parametrize("destination,file_name,case", list(load_cases()))
def test_conformance(destination: str, file_name: str, case: dict[str, Any]) -> None:
    reason = not_run(destination, case)
    if reason:
        pytest.skip(reason)
    adapter = adapter_for(destination)
    if "user_attributes" in case:
        run_deletion(adapter, case)
    elif "inputs" in case:
        run_router(adapter, case)
    else:
        run_processor(adapter, case)


def run_processor(adapter: Any, case: dict[str, Any]) -> None:
    lookups = ReplayedLookups(case.get("mocks", []))
    expected = case["expected"]
    if "error" in expected:
        with pytest.raises(AdapterError) as caught:
            adapter.transform(case["event"], case["settings"], lookups)
        assert_error(caught.value, expected)
    else:
        requests = adapter.transform(case["event"], case["settings"], lookups)
        assert len(requests) == len(expected["requests"])
        for actual, wanted in zip(requests, expected["requests"], strict=True):
            assert_request(actual, wanted)
    assert lookups.mocks == [], "lookups the adapter did not make"


def run_router(adapter: Any, case: dict[str, Any]) -> None:
    v2 = (case.get("env") or {}).get(V2_FLAG) == "ALL"
    items = [BatchItem(event=i["event"], settings={**i["settings"], **({"v2Batching": True}
                                                                        if v2 else {})},
                       key=i["metadata"], extra=i.get("raw_input_extra") or {})
             for i in case["inputs"]]
    lookups = ReplayedLookups(case.get("mocks", []))
    outputs = adapter.transform_batch(items, lookups)
    expected = case["expected"]["outputs"]
    assert len(outputs) == len(expected)
    for index, (actual, wanted) in enumerate(zip(outputs, expected, strict=True)):
        difference = EXPECTED_DIFFERENCES.get((case["name"].split(":")[0], index))
        if difference:
            assert actual.error is not None, difference
            continue
        assert list(actual.keys) == wanted["metadata"]
        assert actual.batched == wanted["batched"]
        if "error" in wanted:
            assert actual.error is not None, f"output {index}: expected {wanted['error']}"
            assert_error(actual.error, wanted)
        else:
            assert actual.error is None, f"output {index}: {actual.error}"
            assert len(actual.requests) == len(wanted["requests"])
            for request, wanted_request in zip(actual.requests, wanted["requests"], strict=True):
                assert_request(request, wanted_request)
    assert lookups.mocks == [], "lookups the adapter did not make"


def run_deletion(adapter: Any, case: dict[str, Any]) -> None:
    sends = ReplayedLookups(case.get("mocks", []), ordered=False)
    expected = case["expected"]
    if "error" in expected:
        with pytest.raises(AdapterError) as caught:
            adapter.delete_users(case["settings"], case["user_attributes"], sends)
        assert_error(caught.value, expected)
    else:
        adapter.delete_users(case["settings"], case["user_attributes"], sends)
        assert sends.mocks == [], "deletions the adapter did not send"
