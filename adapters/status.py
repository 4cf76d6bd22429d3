"""The HTTP status rule, shared by adapters (a failed lookup's status decides its error) and the
delivery worker (`gateway.delivery.verdict.classify`). It lives on the adapters' side so that
adapters import nothing of the gateway; the gateway imports it from here."""

from __future__ import annotations


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx except 501 and 505 are worth another try; other 4xx never are."""
    return status in (408, 429) or (500 <= status <= 599 and status not in (501, 505))


def is_success(status: int | None) -> bool:
    """A 2xx answer (None: no answer at all, never a success). The one success check."""
    return status is not None and 200 <= status <= 299
