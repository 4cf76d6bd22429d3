"""The "unknown key" rule, one checker with one wording for every table that declares its keys:
the gateway's config, filters, destination limits, admin queries and regulations, and each
adapter's settings. It lives on the adapters' side (like `status.py`) so that adapters import
nothing of the gateway; the gateway imports it from here."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def unknown_key(given: Iterable[str], known: Iterable[str], what: str = "field") -> str | None:
    """The first (sorted) key of `given` not in `known`, said as "unknown field 'x' (did you
    mean 'y'?)" when a known name is close, else with the known names listed (in their declared
    order when `known` is a sequence, sorted otherwise); None when every key is known."""
    names = list(known) if isinstance(known, Sequence) else sorted(known)
    for key in sorted(set(given) - set(names)):
        close = difflib.get_close_matches(key, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(names)}"
        return f"unknown {what} {key!r} ({hint})"
    return None
