"""Kustomer's mapping rows (kustomer-behaviour.md): data only; transform.py holds the rest."""

from __future__ import annotations

from adapters.mapping import Field, traits_and_context

DEFAULT_BASE = "https://api.kustomerapp.com"

# The customer payload, in mapping order; externalId is resolved (and required) in code,
# because the reference names its source "userId" in the error.
CUSTOMER = (
    Field("name", traits_and_context("name")),
    Field("username", traits_and_context("userName")),
    Field("company", ("traits.company.name", "context.traits.company.name", "traits.company",
                      "context.traits.company")),
    Field("signedUpAt", traits_and_context("createdAt")),
    Field("lastActivityAt", traits_and_context("lastActivityAt")),
    Field("lastCustomerActivityAt", traits_and_context("lastCustomerActivityAt")),
    Field("lastSeenAt", traits_and_context("lastSeenAt")),
    Field("importedAt", traits_and_context("importedAt")),
    Field("avatarUrl", traits_and_context("avatar")),
    Field("gender", traits_and_context("gender")),
    Field("tags", traits_and_context("tags")),
    Field("locale", ("context.locale",)),
    Field("emails", traits_and_context("emails")),
    Field("phones", traits_and_context("phones")),
    Field("socials", traits_and_context("socials")),
    Field("birthdayAt", (*traits_and_context("dob"), *traits_and_context("birthday"))),
    Field("custom", traits_and_context("customObject")),
    Field("sentiment", traits_and_context("sentiment")),
    Field("whatsapps", traits_and_context("whatsapps")),
    Field("facebookIds", traits_and_context("facebookIds")),
    Field("instagramIds", traits_and_context("instagramIds")),
    Field("timeZone", traits_and_context("timeZone")),
    Field("defaultLang", traits_and_context("defaultLanguage")),
    Field("rev", traits_and_context("rev")),
)

SESSION_KEYS = ("kustomerSessionId", "kustomer_session_id")
TRACKING_KEYS = ("kustomerTrackingId", "kustomer_tracking_id")
TRACKING_EVENT = (
    Field("sessionId", (*(f"properties.{k}" for k in SESSION_KEYS), "context.sessionId")),
    Field("trackingId", tuple(f"properties.{k}" for k in TRACKING_KEYS)),
    Field("meta", "properties", exclude=(*SESSION_KEYS, *TRACKING_KEYS)),
)
# page and screen names: the first present of these, behind a fixed prefix
VIEW_NAME_SOURCES = ("event", "properties.event", "name", "properties.name")
VIEW_PREFIX = {"page": "Web-Page-Viewed", "screen": "Screen-Viewed"}
GENERIC_SETTING = {"page": "genericPage", "screen": "genericScreen"}
