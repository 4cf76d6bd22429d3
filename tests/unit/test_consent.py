"""Consent enforcement per destination (gateway/consent.py) as conformance tables: destination
config + event context → sent, or skipped with the exact reason the delivery row keeps.

RudderStack's rules are its processor's (`processor/consent.go`); Segment's are its Consent
Management's (`context.consent.categoryPreferences` against the destination's categories). Each
case goes through the real config load and the worker's real hook (delivery/send.py) and verdict
(delivery/verdict.py), so the reason is the one an operator reads.
"""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import BatchItem
from gateway.config import ConfigFileError, Destination, from_mapping
from gateway.consent import NO_RULES, decide
from gateway.delivery.retry import RetryPolicy
from gateway.delivery.send import Consent, for_destination, split_batch
from gateway.delivery.verdict import classify, refused
from tests.conftest import ADMIN_TOKEN

SENT = "sent"


def destination(settings: dict[str, Any] | None = None,
                consent: dict[str, Any] | None = None) -> Destination:
    """A webhook destination loaded from config, with RudderStack keys in `settings` and,
    when given, a Segment `[destinations.consent]` table."""
    entry: dict[str, Any] = {"name": "hook", "type": "webhook",
                             "settings": {"webhookUrl": "https://h.example/in",
                                          **(settings or {})}}
    if consent is not None:
        entry["consent"] = consent
    config = from_mapping({"database_url": "sqlite://", "admin_token": ADMIN_TOKEN,
                           "sources": [{"name": "web", "write_key": "wk"}],
                           "destinations": [entry]})
    return config.destinations[0]


def outcome(target: Destination, context: Any) -> str:
    """`sent`, or the `last_error` of the skipped delivery."""
    event = {"type": "track", "event": "Bought", "userId": "u1", "messageId": "m1",
             "context": context}
    try:
        for_destination(target, event)
    except Consent as error:
        now = datetime.now(UTC)
        verdict = classify(refused(error), attempt=1, first_attempt_at=now, now=now,
                           policy=RetryPolicy())
        assert verdict.state == "skipped"
        return verdict.reason or ""
    return SENT


def cm(denied: Any, provider: Any = None, strategy: Any = None) -> dict[str, Any]:
    """An event context carrying RudderStack's `consentManagement` object."""
    info: dict[str, Any] = {"deniedConsentIds": denied}
    if provider is not None:
        info["provider"] = provider
    if strategy is not None:
        info["resolutionStrategy"] = strategy
    return {"consentManagement": info}


def one_trust(*ids: str) -> dict[str, Any]:
    return {"oneTrustCookieCategories": [{"oneTrustCookieCategory": i} for i in ids]}


def ketch(*ids: str) -> dict[str, Any]:
    return {"ketchConsentPurposes": [{"purpose": i} for i in ids]}


def generic(*entries: tuple[str, str, tuple[str, ...]]) -> dict[str, Any]:
    return {"consentManagement": [
        {"provider": p, "resolutionStrategy": s, "consents": [{"consent": c} for c in ids]}
        for p, s, ids in entries]}


# RudderStack: (id, destination settings, event context, expected)
RUDDERSTACK = [
    # no denied ids: everywhere
    ("no consentManagement object", one_trust("C0001"), {}, SENT),
    ("empty denied list", one_trust("C0001"), cm([]), SENT),
    ("only empty ids are ignored", one_trust("C0001"), cm(["", ""]), SENT),
    ("no rules on the destination", {}, cm(["C0001"]), SENT),
    # oneTrustCookieCategories: provider empty or oneTrust, any denied → dropped
    ("oneTrust: one category denied", one_trust("C0001", "C0004"), cm(["C0004"]),
     "Consent: denied C0004 (oneTrust)"),
    ("oneTrust: both denied, named in config order", one_trust("C0001", "C0004"),
     cm(["C0004", "C0001", "C0009"]), "Consent: denied C0001, C0004 (oneTrust)"),
    ("oneTrust: none of its categories denied", one_trust("C0001", "C0004"), cm(["C0002"]),
     SENT),
    ("oneTrust: provider oneTrust", one_trust("C0004"), cm(["C0004"], "oneTrust"),
     "Consent: denied C0004 (oneTrust)"),
    ("oneTrust: another provider's event is not judged by it", one_trust("C0004"),
     cm(["C0004"], "ketch"), SENT),
    ("oneTrust: empty rows from the dashboard are left out", one_trust("", " C0004 "),
     cm(["C0004"]), "Consent: denied C0004 (oneTrust)"),
    ("oneTrust: the event's strategy does not matter", one_trust("C0001", "C0004"),
     cm(["C0004"], "oneTrust", "or"), "Consent: denied C0004 (oneTrust)"),
    # ketchConsentPurposes: provider empty or ketch, dropped only if every purpose denied
    ("ketch: one purpose of two denied", ketch("analytics", "ads"), cm(["ads"]), SENT),
    ("ketch: every purpose denied", ketch("analytics", "ads"),
     cm(["ads", "analytics", "other"]), "Consent: denied every one of analytics, ads (ketch)"),
    ("ketch: provider ketch", ketch("ads"), cm(["ads"], "ketch"),
     "Consent: denied every one of ads (ketch)"),
    ("ketch: a oneTrust event is not judged by it", ketch("ads"), cm(["ads"], "oneTrust"),
     SENT),
    ("both legacy keys, no provider: oneTrust decides alone", {**one_trust("C1"), **ketch("p")},
     cm(["p"]), SENT),
    ("both legacy keys, provider ketch: ketch decides", {**one_trust("C1"), **ketch("p")},
     cm(["p"], "ketch"), "Consent: denied every one of p (ketch)"),
    # consentManagement (generic), for the event's provider
    ("generic and: any denied drops", generic(("oneTrust", "and", ("C1", "C2"))),
     cm(["C2"], "oneTrust", "and"), "Consent: denied C2 (consentManagement oneTrust, and)"),
    ("generic: no event strategy means and", generic(("oneTrust", "", ("C1", "C2"))),
     cm(["C1"], "oneTrust"), "Consent: denied C1 (consentManagement oneTrust, and)"),
    ("generic: an unknown event strategy means and", generic(("oneTrust", "or", ("C1", "C2"))),
     cm(["C1"], "oneTrust", "OR"), "Consent: denied C1 (consentManagement oneTrust, and)"),
    ("generic and: none denied", generic(("oneTrust", "and", ("C1", "C2"))),
     cm(["C3"], "oneTrust", "and"), SENT),
    ("generic or: one of two denied is sent", generic(("oneTrust", "and", ("C1", "C2"))),
     cm(["C1"], "oneTrust", "or"), SENT),
    ("generic or: every one denied drops", generic(("oneTrust", "", ("C1", "C2"))),
     cm(["C2", "C1"], "oneTrust", "or"),
     "Consent: denied every one of C1, C2 (consentManagement oneTrust, or)"),
    ("generic: the strategy is the event's, not the entry's, for oneTrust",
     generic(("oneTrust", "or", ("C1", "C2"))), cm(["C1"], "oneTrust", "and"),
     "Consent: denied C1 (consentManagement oneTrust, and)"),
    ("custom: the entry's or wins over the event's and", generic(("custom", "or", ("a", "b"))),
     cm(["a"], "custom", "and"), SENT),
    ("custom: the entry's and wins over the event's or", generic(("custom", "and", ("a", "b"))),
     cm(["a"], "custom", "or"), "Consent: denied a (consentManagement custom, and)"),
    ("custom: no entry strategy means and", generic(("custom", "", ("a", "b"))),
     cm(["b"], "custom", "or"), "Consent: denied b (consentManagement custom, and)"),
    ("custom or: every one denied", generic(("custom", "or", ("a", "b"))),
     cm(["a", "b"], "custom"),
     "Consent: denied every one of a, b (consentManagement custom, or)"),
    ("iubenda: generic for any provider", generic(("iubenda", "and", ("1", "2"))),
     cm(["2"], "iubenda"), "Consent: denied 2 (consentManagement iubenda, and)"),
    ("generic ketch and: one purpose denied drops", generic(("ketch", "and", ("ads", "x"))),
     cm(["ads"], "ketch"), "Consent: denied ads (consentManagement ketch, and)"),
    ("generic for another provider: ignored", generic(("ketch", "and", ("C1",))),
     cm(["C1"], "iubenda"), SENT),
    ("generic for another provider: the legacy key decides",
     {**generic(("ketch", "and", ("C1",))), **one_trust("C1")}, cm(["C1"], "oneTrust"),
     "Consent: denied C1 (oneTrust)"),
    ("generic match wins over the legacy key",
     {**generic(("oneTrust", "and", ("C1",))), **one_trust("C2")}, cm(["C2"], "oneTrust"),
     SENT),
    ("no event provider: generic entries are not used",
     {**generic(("oneTrust", "and", ("C2",))), **one_trust("C1")}, cm(["C2"]), SENT),
    ("generic entry whose consents are all empty: the legacy key decides",
     {**generic(("oneTrust", "and", ("", " "))), **one_trust("C1")}, cm(["C1"], "oneTrust"),
     "Consent: denied C1 (oneTrust)"),
    ("provider names are case-sensitive", generic(("oneTrust", "and", ("C1",))),
     cm(["C1"], "onetrust"), SENT),
    ("reasons name five ids and count the rest", one_trust(*[f"C{i}" for i in range(8)]),
     cm([f"C{i}" for i in range(8)]), "Consent: denied C0, C1, C2, C3, C4 and 3 more (oneTrust)"),
    # hostile or malformed event fields
    ("context not an object", one_trust("C1"), "C1", SENT),
    ("consentManagement not an object", one_trust("C1"), {"consentManagement": ["C1"]}, SENT),
    ("deniedConsentIds not a list", one_trust("C1"), cm("C1"), SENT),
    ("non-string ids are ignored, the strings still count", one_trust("C1"),
     cm([5, None, {"C1": True}, "C1"]), "Consent: denied C1 (oneTrust)"),
    ("a provider that is not a string counts as none", one_trust("C1"), cm(["C1"], 7),
     "Consent: denied C1 (oneTrust)"),
    ("ids match exactly (no trimming of the event's)", one_trust("C1"), cm([" C1"]), SENT),
]

# Segment: (id, [destinations.consent] categories, event context, expected)
SEGMENT = [
    ("every category true", ["Advertising", "Analytics"],
     {"consent": {"categoryPreferences": {"Advertising": True, "Analytics": True,
                                          "Other": False}}}, SENT),
    ("one category false", ["Advertising", "Analytics"],
     {"consent": {"categoryPreferences": {"Advertising": True, "Analytics": False}}},
     "Consent: not granted Analytics (Segment categoryPreferences)"),
    ("a category missing is not granted", ["Advertising", "Analytics"],
     {"consent": {"categoryPreferences": {"Advertising": True}}},
     "Consent: not granted Analytics (Segment categoryPreferences)"),
    ("an empty object grants nothing", ["Advertising", "Analytics"],
     {"consent": {"categoryPreferences": {}}},
     "Consent: not granted Advertising, Analytics (Segment categoryPreferences)"),
    ("only true grants (not \"true\", not 1)", ["Advertising", "Analytics"],
     {"consent": {"categoryPreferences": {"Advertising": "true", "Analytics": 1}}},
     "Consent: not granted Advertising, Analytics (Segment categoryPreferences)"),
    ("names are case-sensitive", ["Advertising"],
     {"consent": {"categoryPreferences": {"advertising": True}}},
     "Consent: not granted Advertising (Segment categoryPreferences)"),
    ("no consent object: not enforced", ["Advertising"], {}, SENT),
    ("consent without categoryPreferences: not enforced", ["Advertising"],
     {"consent": {"other": True}}, SENT),
    ("categoryPreferences not an object: not enforced", ["Advertising"],
     {"consent": {"categoryPreferences": ["Advertising"]}}, SENT),
    ("no categories on the destination", [],
     {"consent": {"categoryPreferences": {"Advertising": False}}}, SENT),
]


@pytest.mark.parametrize("settings,context,expected",
                         [case[1:] for case in RUDDERSTACK], ids=[c[0] for c in RUDDERSTACK])
def test_rudderstack_rules(settings: dict[str, Any], context: Any, expected: str) -> None:
    assert outcome(destination(settings), context) == expected


@pytest.mark.parametrize("categories,context,expected",
                         [case[1:] for case in SEGMENT], ids=[c[0] for c in SEGMENT])
def test_segment_rules(categories: list[str], context: Any, expected: str) -> None:
    assert outcome(destination(consent={"categories": categories}), context) == expected


def test_both_shapes_on_one_destination_each_can_refuse() -> None:
    target = destination(one_trust("C0004"), {"categories": ["Advertising"]})
    granted = {"consent": {"categoryPreferences": {"Advertising": True}}}
    assert outcome(target, {**granted, **cm(["C0002"])}) == SENT
    assert outcome(target, {**granted, **cm(["C0004"])}) == "Consent: denied C0004 (oneTrust)"
    assert outcome(target, {"consent": {"categoryPreferences": {"Advertising": False}},
                            **cm(["C0002"])}) == \
        "Consent: not granted Advertising (Segment categoryPreferences)"


def test_consent_is_decided_before_the_filters_and_batches_skip_per_item() -> None:
    """A refused item of a batching destination is skipped alone; the others go on, and a
    filter cannot bring a refused event back."""
    target = from_mapping({
        "database_url": "sqlite://", "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": "wk"}],
        "destinations": [{"name": "cio", "type": "customerio",
                          "settings": {"siteID": "s", "apiKey": "k", "v2Batching": True,
                                       **one_trust("C0004")},
                          "filters": {"drop_fields": ["properties.card"]}}]}).destinations[0]
    items = [BatchItem({"type": "track", "userId": "u", "event": "E",
                        "properties": {"card": "4111"}, "context": cm(denied)},
                       target.settings, key=key)
             for key, denied in ((1, ["C0002"]), (2, ["C0004"]), (3, []))]
    kept, skipped = split_batch(target, items)
    assert [i.key for i in kept] == [1, 3]
    assert all("card" not in i.event["properties"] for i in kept)  # the filters still ran
    [output] = skipped
    assert output.keys == [2] and isinstance(output.error, Consent)
    assert output.error.reason == "denied C0004 (oneTrust)"


def test_no_rules_decide_nothing() -> None:
    assert NO_RULES.empty and destination().consent == NO_RULES
    assert decide(NO_RULES, {"context": cm(["C1"])}) is None


def test_a_config_copied_from_rudderstack_loads_and_enforces() -> None:
    """The destination config JSON of a RudderStack destination (its generic keys), as is."""
    copied = {
        "oneTrustCookieCategories": [{"oneTrustCookieCategory": "C0004"},
                                     {"oneTrustCookieCategory": ""}],
        "ketchConsentPurposes": [{"purpose": ""}],
        "consentManagement": [
            {"provider": "oneTrust", "resolutionStrategy": "",
             "consents": [{"consent": "C0004"}, {"consent": "C0003"}]},
            {"provider": "custom", "resolutionStrategy": "or",
             "consents": [{"consent": "marketing"}, {"consent": "ads"}]},
            {"provider": "", "resolutionStrategy": "", "consents": [{"consent": ""}]},
        ],
        "blacklistedEvents": [{"eventName": ""}], "eventFilteringOption": "disable",
    }
    target = destination(copied)
    assert target.consent.ketch == ()
    assert [g.provider for g in target.consent.generic] == ["oneTrust", "custom"]
    assert outcome(target, cm(["C0003"], "oneTrust")) == \
        "Consent: denied C0003 (consentManagement oneTrust, and)"
    assert outcome(target, cm(["marketing"], "custom")) == SENT
    assert outcome(target, cm(["C0004"])) == "Consent: denied C0004 (oneTrust)"
    assert outcome(destination({"consentManagement": {}, "oneTrustCookieCategories": []}),
                   cm(["C0004"])) == SENT


PREFIX = "[[destinations]] #1 ('hook')"

# (settings, [destinations.consent] table or None, the error's text after the table's name)
BAD = [
    ({"oneTrustCookieCategories": "C0004"}, None,
     ".settings: field 'oneTrustCookieCategories': must be a list of at most 200 tables "
     "([{ oneTrustCookieCategory = \"…\" }, …])"),
    ({"oneTrustCookieCategories": ["C0004"]}, None,
     ".settings: field 'oneTrustCookieCategories': #1: must be a table"),
    ({"oneTrustCookieCategories": [{"oneTrustCookieCategory": "C1"}, {"category": "C2"}]},
     None, ".settings: field 'oneTrustCookieCategories': #2: unknown field 'category'"),
    ({"oneTrustCookieCategories": [{}]}, None,
     ".settings: field 'oneTrustCookieCategories': #1: field 'oneTrustCookieCategory': "
     "required, a string of at most 200 characters"),
    ({"ketchConsentPurposes": [{"purpose": 5}]}, None,
     ".settings: field 'ketchConsentPurposes': #1: field 'purpose': required, a string"),
    ({"ketchConsentPurposes": [{"purpose": "x" * 201}]}, None,
     ".settings: field 'ketchConsentPurposes': #1: field 'purpose': required, a string of at "
     "most 200"),
    ({"oneTrustCookieCategories": [{"oneTrustCookieCategory": "C"}] * 201}, None,
     ".settings: field 'oneTrustCookieCategories': must be a list of at most 200 tables"),
    ({"consentManagement": {"web": []}}, None,
     ".settings: field 'consentManagement': must be a list of at most 200 tables ([{ provider"),
    ({"consentManagement": [{"provider": "oneTrust", "resolutionStrategy": "any",
                             "consents": [{"consent": "C1"}]}]}, None,
     ".settings: field 'consentManagement': #1: field 'resolutionStrategy': 'any' is neither "
     "'and' nor 'or'"),
    ({"consentManagement": [{"provider": "oneTrust", "resolutionStrateg": "or"}]}, None,
     ".settings: field 'consentManagement': #1: unknown field 'resolutionStrateg' "
     "(did you mean 'resolutionStrategy'?)"),
    ({"consentManagement": [{"provider": "oneTrust", "consents": ["C1"]}]}, None,
     ".settings: field 'consentManagement': #1: field 'consents': #1: must be a table"),
    ({"consentManagement": [{"provider": "oneTrust", "consents": [{"id": "C1"}]}]}, None,
     ".settings: field 'consentManagement': #1: field 'consents': #1: unknown field 'id'"),
    ({"consentManagement": [{"consents": [{"consent": "C1"}]}]}, None,
     ".settings: field 'consentManagement': #1: field 'provider': required with consents"),
    ({"consentManagement": [{"provider": 1, "consents": [{"consent": "C1"}]}]}, None,
     ".settings: field 'consentManagement': #1: field 'provider': a string"),
    ({"consentManagement": [{"provider": "ketch", "consents": [{"consent": "a"}]},
                            {"provider": "ketch", "consents": [{"consent": "b"}]}]}, None,
     ".settings: field 'consentManagement': #2: provider 'ketch' appears twice"),
    ({}, {"categories": "Advertising"}, ".consent: field 'categories': must be a list"),
    ({}, {"categories": ["Advertising", ""]},
     ".consent: field 'categories': #2: must be a non-empty string"),
    ({}, {"categorie": ["Advertising"]},
     ".consent: unknown field 'categorie' (did you mean 'categories'?)"),
    ({}, ["Advertising"], ".consent: must be a table"),
]


@pytest.mark.parametrize("settings,table,error", BAD)
def test_malformed_consent_config_is_refused_at_load(settings: dict[str, Any], table: Any,
                                                     error: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        destination(settings, table)
    assert f"{PREFIX}{error}" in str(caught.value)


def test_explain_names_consent_not_the_adapter() -> None:
    from types import SimpleNamespace

    from gateway.explain import _delivery_words

    row = SimpleNamespace(state="skipped", attempts=1, last_status=None,
                          last_error="Consent: denied C0004 (oneTrust)",
                          next_attempt_at=None, updated_at=None)
    assert _delivery_words(row) == ("skipped", "skipped for consent: denied C0004 (oneTrust)")


def test_the_readme_examples_load_and_enforce() -> None:
    """The Consent section's TOML (the copied RudderStack config, the Segment table) is real."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Consent\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```toml\n(.*?)```", section, re.S)
    json_block = re.search(r"```json\n\"config\": (.*?)```", section, re.S)
    assert len(blocks) == 2 and json_block
    loaded = [tomllib.loads(block)["destinations"][0] for block in blocks]
    assert loaded[0]["settings"] == json.loads(json_block.group(1))  # the TOML is the JSON
    config = from_mapping({"database_url": "sqlite://", "admin_token": ADMIN_TOKEN,
                           "sources": [{"name": "web", "write_key": "wk"}],
                           "destinations": loaded})
    hook, ads = config.destinations
    assert outcome(hook, cm(["C0004"])) == "Consent: denied C0004 (oneTrust)"
    assert outcome(hook, cm(["C0003"], "oneTrust")) == \
        "Consent: denied C0003 (consentManagement oneTrust, and)"
    assert outcome(hook, cm(["ads"], "custom")) == SENT
    assert outcome(hook, cm(["analytics"], "ketch")) == \
        "Consent: denied every one of analytics (ketch)"
    assert outcome(ads, {"consent": {"categoryPreferences": {"Advertising": True,
                                                             "Analytics": False}}}) == \
        "Consent: not granted Analytics (Segment categoryPreferences)"


def test_gateway_check_shows_the_rules_and_fails_on_a_malformed_one(tmp_path: Path,
                                                                    capsys) -> None:
    from gateway.cli.check import check, check_destinations
    from tests.conftest import write_toml

    settings = {**one_trust("C0004"), **ketch("ads"),
                **generic(("oneTrust", "", ("C0003",)), ("custom", "or", ("a", "b")))}
    config = from_mapping({"database_url": "sqlite://", "admin_token": ADMIN_TOKEN,
                           "sources": [{"name": "web", "write_key": "wk"}],
                           "destinations": [
                               {"name": "hook", "type": "webhook",
                                "settings": {"webhookUrl": "https://h.example/in", **settings},
                                "consent": {"categories": ["Advertising"]}},
                               {"name": "plain", "type": "webhook",
                                "settings": {"webhookUrl": "https://h.example/in"}}]})
    assert check_destinations(config) == [
        ("ok", "destination hook (webhook)",
         "settings ok; consent: consentManagement oneTrust: C0003; consentManagement custom "
         "(or): a, b; oneTrustCookieCategories: C0004; ketchConsentPurposes: ads; Segment "
         "categories: Advertising"),
        ("ok", "destination plain (webhook)", "settings ok")]

    path = tmp_path / "gateway.toml"
    write_toml(path, {"database_url": f"sqlite:///{tmp_path}/g.db", "admin_token": ADMIN_TOKEN,
                      "sources": [{"name": "web", "write_key": "wk"}],
                      "destinations": [{"name": "hook", "type": "webhook",
                                        "settings": {"webhookUrl": "https://h.example/in",
                                                     "oneTrustCookieCategories": "C0004"}}]})
    assert check(path) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL")
    assert "[[destinations]] #1 ('hook').settings: field 'oneTrustCookieCategories': must be " \
           "a list" in out


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
IDS = st.sampled_from(["C1", "C2", "ads", "", "Advertising"])
CONSENT_FIELDS = st.fixed_dictionaries({}, optional={
    "deniedConsentIds": st.lists(IDS | JSON, max_size=5) | JSON,
    "provider": st.sampled_from(["", "oneTrust", "ketch", "custom", "iubenda"]) | JSON,
    "resolutionStrategy": st.sampled_from(["and", "or", ""]) | JSON})
CONTEXTS = st.fixed_dictionaries({}, optional={
    "consentManagement": CONSENT_FIELDS | JSON,
    "consent": st.fixed_dictionaries({}, optional={
        "categoryPreferences": st.dictionaries(IDS, JSON, max_size=3) | JSON}) | JSON}) | JSON
EVERY_SHAPE = destination({**one_trust("C1"), **ketch("ads", "C2"),
                           **generic(("oneTrust", "", ("C1", "C2")), ("custom", "or", ("ads",)))},
                          {"categories": ["Advertising"]})


@settings(max_examples=300, deadline=None)
@given(CONTEXTS)
def test_any_event_context_is_decided_without_error(context: Any) -> None:
    """Every field of the event is the sender's: whatever it holds, the worker gets a decision,
    and a refusal names only configured ids (never the sender's text)."""
    result = outcome(EVERY_SHAPE, context)
    assert result == SENT or result.startswith("Consent: ")
    if result != SENT:
        named = result.split(" (", 1)[0]
        assert set(re.findall(r"[\w]+", named)) <= {
            "Consent", "denied", "every", "one", "of", "not", "granted", "C1", "C2", "ads",
            "Advertising"}
