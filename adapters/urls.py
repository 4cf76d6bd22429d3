"""Event values placed in a destination URL: the one place they are checked and percent-encoded.

A request built from event data is sent with the operator's API key, so an event must never
choose its path or query. urllib3 resolves `.`/`..` segments and splits at `?` and `#`, and
servers decode `%2e` back to `.`: so `/ ? # %`, spaces and non-ASCII (as UTF-8) are encoded,
and a value that is `.` or `..` (no encoding makes those safe), is empty (it would drop a
segment) or holds a control character or a lone surrogate is refused as an invalid event
naming its field: the delivery ends `dead` with that reason and nothing is sent.

Characters RFC 3986 allows inside a path segment stay as they are, so ordinary ids keep the URLs
the reference sends (Kustomer's `email=k+1@x.io`); a destination whose reference escapes more
(Customer.io's `encodeURIComponent`) passes its narrower `safe` set.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from adapters.base import InvalidEvent
from adapters.mapping import js_string

# RFC 3986 pchar minus the unreserved characters `quote` always keeps, and minus `;` (some
# servers cut a segment at `;` as a matrix parameter).
PATH_SAFE = "!$&'()*+,=:@"
# JavaScript's encodeURIComponent: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
URI_COMPONENT_SAFE = "!*'()"
# A query value: only the unreserved characters (`&`, `=`, `+` and `#` must not be literal).
QUERY_SAFE = ""
DOT_SEGMENTS = (".", "..")
# C0 controls, DEL and C1 controls; lone surrogates (JSON can carry them, UTF-8 cannot).
UNSENDABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def path_segment(value: Any, field: str, safe: str = PATH_SAFE) -> str:
    """`value` as one path segment, or InvalidEvent naming `field` when it cannot be one."""
    text = _checked(value, field)
    if text in DOT_SEGMENTS:
        raise InvalidEvent(
            f"{field} {text!r} cannot be sent in a URL path: '.' and '..' would change the path"
        )
    return quote(text, safe=_narrower(safe, PATH_SAFE))


def query_value(value: Any, field: str) -> str:
    """`value` as one query parameter value, or InvalidEvent naming `field`."""
    return encode_query_value(_checked(value, field))


def encode_query_value(text: str) -> str:
    """Percent-encoding alone, for a value that is not the event's (a setting)."""
    return quote(text, safe=QUERY_SAFE)


def _checked(value: Any, field: str) -> str:
    text = js_string(value)
    if text == "":
        raise InvalidEvent(f"{field} is empty and cannot be sent in a URL")
    found = UNSENDABLE.search(text)
    if found:
        code = ord(found.group())
        what = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else "a control character"
        raise InvalidEvent(f"{field} holds {what} (U+{code:04X}) and cannot be sent in a URL")
    return text


def _narrower(safe: str, allowed: str) -> str:
    """Never more than `allowed` kept literal, whatever a caller passes."""
    return "".join(c for c in safe if c in allowed)
