"""A lane's circuit breaker on its own (a fake lookup): lookups (Kustomer's search, a
regulation's deletion) pass through it like any request."""

from __future__ import annotations

import pytest

from adapters.base import HttpRequest, LookupResponse, Retryable
from gateway.delivery.client import NoAnswer, Sent
from gateway.delivery.lanes import CLOSED, HALF_OPEN, OPEN, Lane
from gateway.delivery.limits import Limits

REQUEST = HttpRequest("GET", "https://api.kustomer.com/v1/customers/email=a")


def lane(**limits: float) -> Lane:
    return Lane("d", 1, 10, 60, limits=Limits(**limits))  # type: ignore[arg-type]


def refused(request: HttpRequest) -> LookupResponse:
    raise NoAnswer(Sent(None, "refused", 1, error_class="ConnectionError"))


def test_lookup_connection_failures_open_the_circuit_and_it_then_sends_nothing() -> None:
    one = lane(circuit_failures=2, circuit_open_seconds=30)
    calls: list[HttpRequest] = []

    def lookup(request: HttpRequest) -> LookupResponse:
        calls.append(request)
        return refused(request)

    guarded = one.guarded(lookup)
    for _ in range(2):
        with pytest.raises(NoAnswer):
            guarded(REQUEST)
    assert one.breaker.state == OPEN and len(calls) == 2
    with pytest.raises(Retryable, match="circuit is open") as caught:
        guarded(REQUEST)
    assert len(calls) == 2  # nothing went out
    assert 29 <= caught.value.retry_after <= 30  # tried again once a probe is due


def test_a_lookup_answer_closes_the_circuit_and_its_headers_pause_the_bucket() -> None:
    one = lane(rate_per_second=100, circuit_failures=1, circuit_open_seconds=0.01)
    with pytest.raises(NoAnswer):
        one.guarded(refused)(REQUEST)
    assert one.breaker.state == OPEN
    one.breaker.opened_at -= 1  # the open period is over: the next lookup is the probe
    answer = LookupResponse(404, {}, "", rate_remaining=0, rate_reset=5.0)
    assert one.guarded(lambda request: answer)(REQUEST) is answer
    assert one.breaker.state == CLOSED and one.breaker.consecutive == 0
    assert one.bucket.available() == 0 and one.status()["paused_seconds"] > 4


def test_a_lookup_that_raises_something_else_frees_the_probe() -> None:
    one = lane(circuit_failures=1, circuit_open_seconds=0.01)
    with pytest.raises(NoAnswer):
        one.guarded(refused)(REQUEST)
    one.breaker.opened_at -= 1

    def broken(request: HttpRequest) -> LookupResponse:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        one.guarded(broken)(REQUEST)
    assert one.breaker.state == HALF_OPEN and one.breaker.allow()  # the next probe may go


def test_a_probe_without_a_token_is_given_back() -> None:
    """Half-open, the probe let through but no token in time: the next probe may still go
    (else the circuit would stay half-open forever, waiting for an answer that never comes)."""
    one = Lane("d", 1, 10, 0.04, limits=Limits(rate_per_second=0.001, burst=1,
                                                  circuit_failures=1, circuit_open_seconds=0.01))
    one.bucket.tokens = 0.0
    one.breaker.state, one.breaker.opened_at = OPEN, 0.0
    assert one.gate() is not None  # released: rate limit
    assert one.breaker.state == HALF_OPEN and not one.breaker.probing
    with pytest.raises(Retryable, match="rate limit"):
        one.guarded(lambda request: LookupResponse(200, None))(REQUEST)
    assert not one.breaker.probing
