"""Custify's mapping rows (custify-behaviour.md): data only; transform.py holds the rest."""

from __future__ import annotations

from adapters.mapping import (
    EMAIL_ONLY,
    GROUP_ID,
    HISTORICAL_TIMESTAMP,
    NAME,
    PHONE,
    TRAITS,
    USER_ID_ONLY,
    Field,
    traits_and_context,
)

BASE_URL = "https://api.custify.com"

IDENTIFY = (
    Field("user_id", USER_ID_ONLY),
    Field("email", EMAIL_ONLY),
    Field("phone", PHONE),
    Field("session_count", traits_and_context("sessionCount")),
    Field("unsubscribed_from_emails", traits_and_context("unsubscribedFromEmails")),
    Field("unsubscribed_from_calls", traits_and_context("unsubscribedFromCalls")),
    Field("name", NAME),
    Field("signed_up_at", (*traits_and_context("signedUpAt"), *HISTORICAL_TIMESTAMP)),
    Field("custom_attributes", TRAITS),
)

TRACK = (
    Field("user_id", USER_ID_ONLY),
    Field("email", EMAIL_ONLY),
    Field("name", "event", required=True),
    Field("created_at", HISTORICAL_TIMESTAMP, required=True),
)

# group: the top-level traits are the company's, so the person is read from context.traits
GROUP_USER = (
    Field("user_id", USER_ID_ONLY),
    Field("email", "context.traits.email"),
    Field("phone", "context.traits.phone"),
    Field("session_count", "context.traits.sessionCount"),
    Field("unsubscribed_from_emails", "context.traits.unsubscribedFromEmails"),
    Field("unsubscribed_from_calls", "context.traits.unsubscribedFromCalls"),
    Field("name", "context.traits.name"),
    Field("signed_up_at", ("context.traits.signedUpAt", *HISTORICAL_TIMESTAMP)),
    Field("custom_attributes", "context.traits"),
)

COMPANY = (
    Field("company_id", GROUP_ID),
    Field("name", "traits.name"),
    Field("industry", "traits.industry"),
    Field("size", "traits.size"),
    Field("website", ("traits.website", "traits.url")),
    Field("plan", "traits.plan"),
    Field("monthly_revenue", ("traits.monthly_revenue", "traits.monthlyRevenue", "traits.mrr")),
    Field("churned", "traits.churned"),
)

# Keys that have a column of their own and so leave custom_attributes (exact, case-sensitive).
USER_RESERVED = ("userId", "email", "phone", "name", "signed_up_at", "session_count",
                 "unsubscribed_from_emails", "unsubscribed_from_calls", "company")
COMPANY_RESERVED = ("id", "name", "industry", "company_id", "size", "website", "plan",
                    "monthly_revenue", "churned")
TRACK_COMPANY_ID = ("properties.organization_id", "properties.company_id",
                    "properties.companyId")
