"""A lane's token bucket and circuit breaker on their own (fake clocks, a fake lookup): its
share of the rate when several worker processes run, and lookups (Kustomer's search, a
regulation's deletion) passing through the breaker like any request."""

from __future__ import annotations

import queue
from types import SimpleNamespace

import pytest

from adapters.base import HttpRequest, LookupResponse, Retryable
from gateway.config.limits import DestinationLimits
from gateway.delivery.client import HttpClient, NoAnswer, Sent
from gateway.delivery.lanes import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    RATE_HORIZON,
    Done,
    Lane,
    TokenBucket,
)
from gateway.delivery.send import Sender
from gateway.delivery.verdict import Outcome, crashed

REQUEST = HttpRequest("GET", "https://api.kustomer.com/v1/customers/email=a")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def lane(**limits: float) -> Lane:
    return Lane("d", 1, 10, 60, limits=DestinationLimits(**limits))  # type: ignore[arg-type]


def test_a_resized_bucket_refills_at_its_new_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10, 10, clock)
    bucket.tokens = 0.0
    bucket.resize(5, 5)
    clock.now += 1
    assert bucket.available() == pytest.approx(5)  # 5 a second now, not 10
    clock.now += 10
    assert bucket.available() == pytest.approx(5)  # and never more than the new size
    bucket.resize(10, 10)
    clock.now += 0.2
    assert bucket.available() == pytest.approx(7)


def test_two_live_workers_halve_each_lanes_rate_and_burst() -> None:
    one = lane(rate_per_second=20, burst=4)
    one.share(2)
    assert (one.bucket.rate, one.bucket.size, one.workers) == (10, 2, 2)
    assert one.bucket.available() <= 2
    one.share(1)  # the other worker stopped: the whole rate again
    assert (one.bucket.rate, one.bucket.size) == (20, 4)
    small = lane(rate_per_second=3, burst=1)
    small.share(4)
    assert (small.bucket.rate, small.bucket.size) == (0.75, 1)  # a burst of at least 1
    unlimited = lane(rate_per_second=0)
    unlimited.share(3)
    assert unlimited.bucket.rate == 0 and unlimited.status()["workers"] == 3


def test_a_halved_bucket_hands_out_half_the_tokens_in_the_same_time() -> None:
    clock = Clock()
    full, half = TokenBucket(20, 1, clock), TokenBucket(20, 1, clock)
    half.resize(10, 1)
    taken = {"full": 0, "half": 0}
    for _ in range(100):  # 1 s in steps of 10 ms
        clock.now += 0.01
        for name, bucket in (("full", full), ("half", half)):
            if bucket.available() >= 1:
                bucket.take(most=0)
                taken[name] += 1
    assert taken["full"] == pytest.approx(20, abs=1) and taken["half"] == pytest.approx(10, abs=1)


def test_a_rate_limited_lane_claims_only_what_its_tokens_send_soon() -> None:
    """A fast destination limited to 10/s holds its tokens plus RATE_HORIZON seconds of its
    rate, not a claim size of waiting: other workers get the other users meanwhile."""
    clock = Clock()
    fast = Lane("d", 8, 1000, 10, limits=DestinationLimits(rate_per_second=10, burst=10),
                monotonic=clock)
    fast.seconds_per_delivery = 0.001
    assert fast.capacity() == 10 + 10 * RATE_HORIZON  # a full bucket and the horizon's refill
    fast.bucket.take(most=0)
    assert fast.capacity() == 9 + 10 * RATE_HORIZON
    fast.share(5)  # five workers: 2/s each, a burst of 2
    assert fast.capacity() == 2 + 2 * RATE_HORIZON
    unlimited = Lane("u", 8, 1000, 10, monotonic=clock)
    unlimited.seconds_per_delivery = 0.001
    assert unlimited.capacity() == 1000  # no rate: the claim size, as before
    batching = Lane("b", 4, 50, 10, batching=True,
                    limits=DestinationLimits(rate_per_second=1, burst=1), monotonic=clock)
    batching.seconds_per_delivery = 0.001
    assert batching.capacity() == (1 + 1 * RATE_HORIZON) * 50  # one token sends a batch


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
    one = Lane("d", 1, 10, 0.04, limits=DestinationLimits(rate_per_second=0.001, burst=1,
                                                  circuit_failures=1, circuit_open_seconds=0.01))
    one.bucket.tokens = 0.0
    one.breaker.state, one.breaker.opened_at = OPEN, 0.0
    assert one.gate() is not None  # released: rate limit
    assert one.breaker.state == HALF_OPEN and not one.breaker.probing
    with pytest.raises(Retryable, match="rate limit"):
        one.guarded(lambda request: LookupResponse(200, None))(REQUEST)
    assert not one.breaker.probing


def test_a_lookup_waits_out_the_destinations_pause_even_with_no_configured_rate() -> None:
    """A destination that said it has no requests left (`x-ratelimit-remaining: 0`) pauses
    its lane's bucket; with no `rate_per_second` configured the deliveries' writes wait it out
    (`gate`), and so must the lookups (Kustomer's customer search), or they go on hitting a
    destination that asked for a pause."""
    one = lane(rate_per_second=0)
    one.observe(Sent(200, "", 1, rate_remaining=0, rate_reset=600.0))
    assert one.gate() is not None  # a write goes back unsent
    calls: list[HttpRequest] = []

    def lookup(request: HttpRequest) -> LookupResponse:
        calls.append(request)
        return LookupResponse(200, None)

    with pytest.raises(Retryable, match="rate limit"):
        one.guarded(lookup)(REQUEST)
    assert calls == []  # nothing went out during the pause


@pytest.mark.parametrize("caught", [True, False], ids=["crash-recorded", "task-raised"])
def test_a_probe_whose_request_raised_before_going_out_lets_the_next_probe_go(
        caught: bool) -> None:
    """Half-open, the probe let through by `gate` but the client raised before sending (a
    header it cannot encode, a body it cannot serialise): the probe must be given back, or
    the circuit stays half-open with a probe out forever and the destination gets nothing
    again (`free()` 0, every `gate` refused) until the worker restarts. `Sender.one` catches
    the error and records a crash (`caught`); a task may also raise."""
    finished: queue.SimpleQueue[Done] = queue.SimpleQueue()
    one = Lane("d", 1, 10, 60,
               limits=DestinationLimits(circuit_failures=1, circuit_open_seconds=0.01),
               sink=finished.put)
    try:
        one.observe(Sent(None, "refused", 1, error_class="ConnectionError"))
        assert one.breaker.state == OPEN
        one.breaker.opened_at -= 1  # the open period is over: a probe is due
        assert one.free() == 1
        sender = Sender(HttpClient(), 60)
        target = SimpleNamespace(destination=SimpleNamespace(endpoint=None))
        bad = HttpRequest("POST", "http://127.0.0.1:9/hook", headers={"X-Name": "Zoë €"})

        def task(items: list[HttpRequest]) -> Outcome:
            try:
                return sender.send_all(items, target, one.gate, one.observe)
            except Exception as exc:
                if not caught:
                    raise
                return crashed(exc)  # what Sender.one does

        one.submit(task, [bad], 1)
        done = finished.get(timeout=5)
        one.collected(1)
        if caught:
            assert done.result.error_class == "UnicodeEncodeError"
        else:
            assert isinstance(done.error, UnicodeEncodeError)
        assert one.free() == 1 and one.breaker.allow()  # the next probe may go
    finally:
        one.close()
