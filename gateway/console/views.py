"""The console's pages. Each reads through gateway/queries.py, gateway/explain.py or
gateway/console/data.py (bounded, keyset-paged) and changes things only through
gateway/replay.py or data.retry_dead_matching, behind auth.guard's cookie and CSRF checks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Response, abort, make_response, redirect, render_template, request
from flask import url_for as url

from gateway import consent, identity, queries, rejections
from gateway.console import auth, bp, data
from gateway.explain import explain, explain_event
from gateway.http import context, shutdown
from gateway.http.browser import public_base_url
from gateway.messages import iso_text
from gateway.replay import Conflict, NotFound, replay, retry_dead
from gateway.store import outbox
from gateway.store.models import MESSAGE_TYPES, events

STREAM_SECONDS = 25.0  # one stream's life; EventSource reconnects with Last-Event-ID
POLL_SECONDS = 0.25  # a committed event is on the page within about this
LOOK_BACK = 2_000  # ids below the newest sent that may still commit (two group commits' worth)
PAGE = 50
LIVE_TYPES = ("track", *(kind for kind in MESSAGE_TYPES if kind != "track"))  # commonest first
REPLAY_FILTERS = ("source", "type", "event", "user_id", "anonymous_id", "since", "until")




# sign-in ---------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login() -> Response:
    target = auth.safe_next(request.values.get("next"))
    if request.method == "POST":
        return auth.attempt_sign_in(target)
    if auth.signed_in():
        return redirect(target)
    notice = SIGNED_OUT.get(request.args.get("signed_out", ""))
    return make_response(render_template("console/login.html", next=target, notice=notice))


SIGNED_OUT = {"everywhere": "Every console session is signed out, this one included."}


@bp.post("/logout")
def logout() -> Response:
    return auth.sign_out(redirect(url("console.login")))


@bp.post("/logout/everywhere")
def logout_everywhere() -> Response:
    """Revokes every console session, on every process and node (a lost laptop, a copied
    cookie): everyone signs in again with the admin token."""
    return auth.sign_out(redirect(url("console.login", signed_out="everywhere")),
                         everywhere=True)


# live events -----------------------------------------------------------------------------------

@bp.get("/")
def live() -> str:
    filters = data.feed_filters(request.args)
    before = queries.parse_id(request.args.get("before", "")) if request.args.get("before") \
        else None
    with context.engine().connect() as connection:
        rows = data.events_before(connection, before, filters, PAGE)
        newest = data.newest_event_id(connection)
    return render_template("console/live.html", rows=rows, filters=filters, newest=newest,
                           paged=before is not None, sources=context.config().sources,
                           types=LIVE_TYPES,
                           older=rows[-1]["id"] if len(rows) == PAGE else None)


@bp.get("/stream")
def stream() -> Response:
    """Server-sent events: each batch of newly committed events that match the filters, polled
    from the database (so events stored by any process or machine show up)."""
    filters = data.feed_filters(request.args)
    given = request.headers.get("Last-Event-ID") or request.args.get("after", "")
    after = queries.parse_id(given) if given not in ("", "0") else 0
    engine = context.engine()
    if after is None:
        abort(400, "after: an event id")
    if not given:
        with engine.connect() as connection:
            after = data.newest_event_id(connection)

    def generate(after: int) -> Iterator[str]:
        yield f"retry: 1000\nid: {after}\n\n"
        deadline = time.monotonic() + STREAM_SECONDS
        quiet_since = time.monotonic()
        floor = after
        sent: set[int] = set()  # ids sent within the look-back window
        while time.monotonic() < deadline and not shutdown.stopping.is_set():
            # look back LOOK_BACK ids: on PostgreSQL a transaction (another process's group
            # commit) may commit an id below one already sent; skip what was sent
            with engine.connect() as connection:
                rows = data.events_after(connection, max(floor, after - LOOK_BACK), filters)
            rows = [r for r in rows if r["id"] not in sent]
            if rows:
                sent.update(r["id"] for r in rows)
                after = max(after, rows[-1]["id"])
                sent = {i for i in sent if i > after - LOOK_BACK}
                yield f"id: {after}\nevent: events\ndata: {orjson.dumps(rows).decode()}\n\n"
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 10:
                yield ": still here\n\n"  # keeps proxies from closing an idle stream
                quiet_since = time.monotonic()
            shutdown.stopping.wait(POLL_SECONDS)

    return Response(generate(after), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# one event -------------------------------------------------------------------------------------


def _preview(payload: Any, destination: str | None) -> dict[str, Any] | None:
    """"What would this destination receive?": the dry run of gateway/transforms/preview.py
    (sends nothing), or None when no destination was asked for."""
    if not destination:
        return None
    from gateway.transforms.preview import PreviewError, preview

    try:
        result = preview(context.config(), payload, destination)
    except PreviewError as exc:
        return {"error": str(exc), "destination": destination}
    result["json"] = {key: orjson.dumps(result[key], option=orjson.OPT_INDENT_2).decode()
                      for key in ("events", "requests", "steps")}
    return result

@bp.get("/events/<id:event_id>")
def event(event_id: int | None) -> str:
    if event_id is None:
        abort(404)
    engine = context.engine()
    with engine.connect() as connection:
        found = queries.get_event(connection, event_id)
        if found is None:
            abort(404, f"no event {event_id}")
        row = connection.execute(events.select().where(events.c.id == event_id)).one()
        why = explain_event(connection, context.config(), row,
                            rejections.for_message(connection, row.message_id, row.source))
        profile = None
        for kind, value in (("userId", row.user_id), ("anonymousId", row.anonymous_id)):
            if value and profile is None:
                profile = identity.lookup(connection, kind, value)
    explained = {d["destination"]: d for d in why["destinations"]}
    previewed = _preview(found["payload"], request.args.get("preview"))
    return render_template("console/event.html", event=found, why=why, explained=explained,
                           previewed=previewed,
                           destinations=[d.name for d in context.config().destinations],
                           profile=profile, payload=orjson.dumps(
                               found["payload"], option=orjson.OPT_INDENT_2).decode(),
                           dead=outbox.DEAD)


@bp.get("/explain")
def explain_page() -> str:
    message_id = request.args.get("message_id", "").strip()
    found = None
    if message_id:
        rejections.flush(context.engine(), timeout=1.0)
        with context.engine().connect() as connection:
            found = explain(connection, context.config(), message_id,
                            request.args.get("source") or None)
    with context.engine().connect() as connection:
        recent = rejections.recent(connection, limit=20)
    return render_template("console/explain.html", found=found, message_id=message_id,
                           recent=recent)


# deliveries desk -------------------------------------------------------------------------------

def _desk_filters() -> dict[str, str]:
    return {k: request.values[k].strip() for k in ("destination", "since", "until")
            if request.values.get(k, "").strip()}


@bp.get("/deliveries")
def deliveries(notice: str | None = None, status: int = 200) -> Any:
    config = context.config()
    names = [d.name for d in config.destinations]
    wanted = {"state": request.args.get("state") or outbox.DEAD}
    if request.args.get("destination"):
        wanted["destination"] = request.args["destination"]
    with context.engine().connect() as connection:
        counts = data.state_counts(connection, names)
        page = queries.list_deliveries(connection, wanted, PAGE, request.args.get("cursor"))
    body = render_template("console/deliveries.html", counts=counts, states=outbox.STATES,
                           page=page, wanted=wanted, names=names, notice=notice,
                           replay_filters=REPLAY_FILTERS)
    return body, status


@bp.post("/deliveries/<id:delivery_id>/retry")
def retry_one(delivery_id: int | None) -> Any:
    if delivery_id is None:
        abort(404)
    try:
        retry_dead(context.engine(), delivery_id)
    except NotFound:
        abort(404, f"no delivery {delivery_id}")
    except Conflict as exc:
        return deliveries(str(exc), 409)
    back = request.form.get("back", "")
    if back.startswith("/console/events/"):
        return redirect(auth.safe_next(back))
    return deliveries(f"Delivery {delivery_id} is pending again: the worker sends it next.")


@bp.post("/deliveries/retry-matching")
def retry_matching() -> Any:
    """Step one counts and asks; step two (confirm=<that count>) moves them."""
    filters = _desk_filters()
    with context.engine().connect() as connection:
        count = data.capped_count(connection, data.dead_selection(filters), data.RETRY_CAP)
    if request.form.get("confirm") is None:
        return render_template("console/confirm.html", filters=filters, count=count,
                               action=url("console.retry_matching"),
                               what=f"retry {count} dead deliveries",
                               cap=data.RETRY_CAP)
    moved = data.retry_dead_matching(context.engine(), filters)
    return deliveries(f"{moved:,} dead deliveries are pending again.")


@bp.post("/replay")
def replay_form() -> Any:
    """Dry run first (a count), then the real replay with the same fields."""
    destination = request.form.get("destination", "")
    filters = {k: request.form[k].strip() for k in REPLAY_FILTERS
               if request.form.get(k, "").strip()}
    dry_run = request.form.get("confirm") is None
    try:
        result = replay(context.engine(), context.config(), destination, filters, dry_run=dry_run)
    except queries.QueryError as exc:
        return deliveries(f"Replay refused: {exc}", 400)
    if dry_run:
        return render_template("console/replay.html", destination=destination,
                               filters=filters, result=result)
    return deliveries(f"Replay {result['replay_id']}: queued {result['queued']:,} deliveries "
                      f"to {destination}.")


# destinations and sources ----------------------------------------------------------------------

@bp.get("/destinations")
def destinations() -> str:
    config = context.config()
    gauges = data.queue_gauges(context.engine())
    with context.engine().connect() as connection:
        chart = data.last_hour(connection)
    circuits = data.circuit_words(d.name for d in config.destinations)
    rows = []
    for d in config.destinations:
        depth, age = gauges.get(d.name, (0, 0.0))
        series = chart.series.get(d.name, {k: [0] * data.CHART_BUCKETS
                                    for k in ("delivered", "failed", "dead")})
        rows.append({"destination": d, "depth": int(depth), "age": _age(age),
                     "series": series, "totals": {k: sum(v) for k, v in series.items()},
                     "bars": _bars(series), "circuit": circuits.get(d.name),
                     "consent": consent.describe(d.consent)})
    covered = (datetime.now(UTC) - chart.since).total_seconds()
    return render_template("console/destinations.html", rows=rows,
                           covered=None if covered >= 3590 else _age(covered))


@bp.get("/sources")
def sources() -> str:
    return render_template("console/sources.html", sources=context.config().sources,
                           base=public_base_url())


@bp.get("/violations")
def violations_page() -> str:
    """Tracking-plan violations over the last hours, counted per source, event and rule."""
    from gateway.plans import record

    hours = request.args.get("hours", "24")
    hours = int(hours) if hours in VIOLATION_HOURS else 24
    source = request.args.get("source") or None
    record.flush(context.engine(), timeout=1.0)  # this process's counts are included
    with context.engine().connect() as connection:
        rows = record.summary(connection, record.default_since(hours), source)
    planned = [s for s in context.config().sources if s.tracking_plan is not None]
    return render_template("console/violations.html", rows=rows, hours=hours, source=source,
                           choices=VIOLATION_HOURS, planned=planned,
                           total=sum(r["count"] for r in rows))


VIOLATION_HOURS = ("1", "6", "24", "72", "168")


@bp.post("/sources/<name>/key")
def reveal_key(name: str) -> Response:
    """The write key, only to a signed-in POST with the CSRF token (never in the page HTML)."""
    for source in context.config().sources:
        if source.name == name:
            return Response(orjson.dumps({"write_key": source.write_key}),
                            mimetype="application/json", headers={"Cache-Control": "no-store"})
    abort(404, f"no source {name!r}")


def mask(key: str) -> str:
    return key[:4] + "•" * 8 if len(key) > 8 else "•" * 8


def iso(value: datetime | None) -> str:
    return iso_text(value) or ""


bp.add_app_template_filter(mask, "mask")
bp.add_app_template_filter(iso, "iso")


def _age(seconds: float) -> str:
    if seconds <= 0:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _bars(series: dict[str, list[int]]) -> list[dict[str, Any]]:
    """Stacked bars for the inline SVG: one per 5-minute bucket, heights scaled to 40 px."""
    totals = [sum(series[k][i] for k in series) for i in range(data.CHART_BUCKETS)]
    top = max(totals) or 1
    bars = []
    for i in range(data.CHART_BUCKETS):
        y = 40.0
        parts = []
        for kind in ("delivered", "failed", "dead"):
            h = 40.0 * series[kind][i] / top
            y -= h
            parts.append({"kind": kind, "y": round(y, 1), "h": round(h, 1),
                          "n": series[kind][i]})
        bars.append({"x": i * 10, "parts": parts})
    return bars
