"""Which SDK family sent a tracking request, for the one answer that depends on it: a request
none of whose messages can ever be stored (too large, malformed).

Most SDKs drop a batch answered 400. A few send the same batch again after any answer but a
success, forever: RudderStack's Android and iOS 1.x SDKs (and so the React Native and Flutter
wrappers built on them) and Segment's analytics-react-native and analytics_flutter. A 400 would
block every later event on that device, so they get 200 with the refused messages listed in
`rejected`, and the refusals go to the rejections record like any other (README "What each SDK
does with each answer").

The family is read from `context.library.name`, which each of these SDKs sets on every message:
the batch-level context first, else the first message that has one. Unknown or absent: the
ordinary answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# `context.library.name` of the SDKs that resend every answer but 200/2xx (README table)
RESEND_ALL_BUT_SUCCESS: frozenset[str] = frozenset(
    {
        "com.rudderstack.android.sdk.core",  # rudder-sdk-android 1.x
        "com.rudderlabs.android.sdk.core",  # its package name before 1.0.x
        "rudder-ios-library",  # rudder-sdk-ios 1.x
        "analytics-react-native",  # @segment/analytics-react-native
        "analytics_flutter",  # segment analytics_flutter (pub.dev name)…
        "analytics-flutter",  # …and its repository's name
    }
)


def library_name(body: Mapping[str, Any], elements: Sequence[Any]) -> str | None:
    """`context.library.name` of the request: batch-level, else the first message's."""
    for holder in (body, *elements):
        if not isinstance(holder, Mapping):
            continue
        context = holder.get("context")
        library = context.get("library") if isinstance(context, Mapping) else None
        name = library.get("name") if isinstance(library, Mapping) else None
        if isinstance(name, str) and name:
            return name
    return None


def resends_all_but_success(body: Mapping[str, Any], elements: Sequence[Any]) -> bool:
    """True when the sender would send a refused request again forever instead of dropping it."""
    return library_name(body, elements) in RESEND_ALL_BUT_SUCCESS
