"""The delivery state machine (DESIGN.md §2.2, §7): named states, the allowed moves, one
`check_transition` that every state change goes through.

    pending ──▶ delivering ──▶ delivered | retrying | dead | skipped
    retrying ──▶ delivering            dead ──▶ pending   (explicit retry or replay only)
    delivering ──▶ delivering          (an expired lease reclaimed by another worker)
"""

from __future__ import annotations

PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
RETRYING = "retrying"
DEAD = "dead"
SKIPPED = "skipped"

STATES = (PENDING, DELIVERING, DELIVERED, RETRYING, DEAD, SKIPPED)
# Not finished: they hold back later deliveries of the same (destination, user key).
UNFINISHED = (PENDING, DELIVERING, RETRYING)
TERMINAL = (DELIVERED, DEAD, SKIPPED)

ALLOWED: dict[str, frozenset[str]] = {
    PENDING: frozenset({DELIVERING}),
    DELIVERING: frozenset({DELIVERED, RETRYING, DEAD, SKIPPED, DELIVERING}),
    RETRYING: frozenset({DELIVERING}),
    DEAD: frozenset({PENDING}),
    DELIVERED: frozenset(),
    SKIPPED: frozenset(),
}


class IllegalTransition(ValueError):
    """A state change the machine does not allow: a bug, never a data condition."""


def check_transition(current: str, target: str) -> str:
    """Return `target` if the move is allowed, else raise IllegalTransition."""
    if target not in ALLOWED.get(current, frozenset()):
        raise IllegalTransition(f"delivery cannot move from {current!r} to {target!r}")
    return target
