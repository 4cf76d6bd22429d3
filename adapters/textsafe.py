"""Text from events made safe for terminals and log lines: the one escaping helper.

Event data is written by whoever holds a write key. Printed raw, a value can drive the operator's
terminal (OSC 52 writes the clipboard, CSI erases lines, OSC 0 sets the window title), forge a
log line with a newline, or reorder what is shown with bidi overrides. Every human-readable
output passes values through `printable`; JSON meant for people or machines through
`json_safe`. (Here, not in gateway/, because adapters import nothing of the gateway and the
console destination needs it too.)
"""

from __future__ import annotations

from typing import Any

# bidi embeddings/overrides/isolates and marks, and the two Unicode line/paragraph separators
# (str.splitlines and some log viewers break lines on them)
_UNICODE_CONTROLS = (
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x200E,
    0x200F,
    0x061C,
    0x2028,
    0x2029,
)
_C1 = range(0x80, 0xA0)


_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _escape(code: int) -> str:
    if code in _SHORT:
        return _SHORT[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# every C0 control (newline and tab too: inside a value they are data, not layout), DEL, C1
_TEXT = str.maketrans(
    {code: _escape(code) for code in (*range(0x20), 0x7F, *_C1, *_UNICODE_CONTROLS)}
)
# JSON already escapes C0 in strings; the rest becomes \uXXXX, which leaves it valid JSON (these
# characters can only stand inside strings) with the same meaning
_JSON = str.maketrans({code: f"\\u{code:04x}" for code in (0x7F, *_C1, *_UNICODE_CONTROLS)})


def printable(value: Any) -> str:
    """`value` as text with every control character written as an escape (`\\n`,
    `\\x1b`, `\\u202e`); None is the empty string."""
    if value is None:
        return ""
    return str(value).translate(_TEXT)


def json_safe(text: str) -> str:
    """JSON text (from orjson, which leaves DEL, C1 and bidi controls raw) with those
    characters as `\\uXXXX` escapes."""
    return text.translate(_JSON)
