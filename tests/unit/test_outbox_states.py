"""The delivery state machine allows exactly the moves of docs/design.md §2.2."""

from __future__ import annotations

import itertools

import pytest

from gateway.store.outbox import ALLOWED, STATES, IllegalTransition, check_transition

MOVES = {("pending", "delivering"), ("delivering", "delivered"), ("delivering", "retrying"),
         ("delivering", "dead"), ("delivering", "skipped"), ("delivering", "delivering"),
         ("retrying", "delivering"), ("dead", "pending")}


@pytest.mark.parametrize("current,target", list(itertools.product(STATES, STATES)))
def test_only_the_designed_moves_are_allowed(current: str, target: str) -> None:
    if (current, target) in MOVES:
        assert check_transition(current, target) == target
    else:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)


def test_every_state_has_a_row() -> None:
    assert set(ALLOWED) == set(STATES)
