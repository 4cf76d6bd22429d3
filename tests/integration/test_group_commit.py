"""Group commit (gateway/ingest.py `submit`): concurrent requests of one process share one
transaction and one commit, and each still hears 200 only once its events are stored, exactly
once; a group the database fails answers 503 to every request in it and stores none of them; a
request the database refuses on its own fails alone. SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, event, text

from gateway import create_app, ingest
from gateway.config import from_mapping
from gateway.store.db import normalise_url, sqlite_file
from tests.conftest import OTHER_KEY, WRITE_KEY, LiveGateway, base_config
from tests.helpers import basic, stored_deliveries, stored_events, wait_for

THREADS = 24


def run_concurrently(count: int, send: Callable[[int], Any]) -> list[Any]:
    """`send(i)` in `count` threads released together; their results in order."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = send(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def group_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of requests each transaction written by ingest held (observed, not changed)."""
    sizes: list[int] = []
    real = ingest._store

    def observed(connection, group):
        sizes.append(len(group))
        return real(connection, group)

    monkeypatch.setattr(ingest, "_store", observed)
    return sizes


def test_concurrent_calls_share_commits_and_each_200_is_stored_once(app, client, engine,
                                                                      group_sizes) -> None:
    commits: list[int] = []
    event.listen(engine, "commit", lambda _connection: commits.append(1))
    rounds = 5

    def send(i: int) -> list[int]:
        statuses = []
        for n in range(rounds):
            statuses.append(client.post("/v1/track", headers=basic(WRITE_KEY), json={
                "userId": f"u{i % 7}", "event": "e", "messageId": f"m-{i}-{n}"}).status_code)
        return statuses

    answers = run_concurrently(THREADS, send)
    assert answers == [[200] * rounds] * THREADS
    stored = stored_events(engine)
    assert sorted(e["message_id"] for e in stored) == sorted(
        f"m-{i}-{n}" for i in range(THREADS) for n in range(rounds))
    assert len(stored_deliveries(engine)) == 2 * THREADS * rounds  # cio + kustomer-main
    assert sum(group_sizes) == THREADS * rounds  # every request written in exactly one group
    assert max(group_sizes) > 1
    assert len(commits) < THREADS * rounds, "no two requests shared a commit"


def test_the_same_message_id_in_concurrent_requests_is_stored_once_per_source(
        app, client, engine, group_sizes) -> None:
    def send(i: int) -> int:
        key = WRITE_KEY if i % 2 else OTHER_KEY
        return client.post("/v1/batch", headers=basic(key), json={"batch": [
            {"type": "track", "event": "shared", "userId": "u1", "messageId": "same-id"},
            {"type": "identify", "userId": f"u{i}", "messageId": f"own-{i}",
             "traits": {"n": i}},
        ]}).status_code

    assert run_concurrently(THREADS, send) == [200] * THREADS
    stored = stored_events(engine)
    shared = [e for e in stored if e["message_id"] == "same-id"]
    assert sorted(e["source"] for e in shared) == ["server", "web"]  # once per source
    assert sorted(e["message_id"] for e in stored if e["message_id"] != "same-id") == sorted(
        f"own-{i}" for i in range(THREADS))
    web = sum(1 for e in stored if e["source"] == "web")
    server = len(stored) - web
    assert len(stored_deliveries(engine)) == 2 * web + server  # server routes to cio only
    # one more time, after the fact: still a duplicate, 200, nothing new
    again = client.post("/v1/track", headers=basic(WRITE_KEY),
                        json={"event": "shared", "userId": "u1", "messageId": "same-id"})
    assert again.status_code == 200 and len(stored_events(engine)) == len(stored)


def test_invalid_messages_fail_only_their_own_request(app, client, engine) -> None:
    def send(i: int) -> Any:
        if i == 0:  # a batch with one bad message: the good one is stored, the bad named
            return client.post("/v1/batch", headers=basic(WRITE_KEY), json={"batch": [
                {"type": "track", "userId": "bad", "messageId": "no-event"},
                {"type": "track", "event": "e", "userId": "bad", "messageId": "fine-0"},
            ]})
        if i == 1:  # a single call that is invalid: 400, nothing stored
            return client.post("/v1/track", headers=basic(WRITE_KEY),
                               json={"userId": "bad", "messageId": "single-bad"})
        return client.post("/v1/track", headers=basic(WRITE_KEY),
                           json={"event": "e", "userId": f"u{i}", "messageId": f"fine-{i}"})

    answers = run_concurrently(THREADS, send)
    assert answers[0].status_code == 200
    assert [r["messageId"] for r in answers[0].get_json()["rejected"]] == ["no-event"]
    assert answers[1].status_code == 400
    assert [a.status_code for a in answers[2:]] == [200] * (THREADS - 2)
    assert sorted(e["message_id"] for e in stored_events(engine)) == sorted(
        f"fine-{i}" for i in range(THREADS) if i != 1)


def test_a_request_the_database_refuses_fails_alone(app, client, engine, group_sizes,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A message that passes validation but that the database refuses (here: a row made to
    break the events NOT NULL constraint) fails its group; the group is written again request by
    request, so only that request fails: 500 not_stored (the database refused its rows; it is
    no outage, and /health stays up)."""
    real_row = ingest._event_row

    def row(source, message, received_at):
        values = real_row(source, message, received_at)
        if message.message_id == "poison":
            values["type"] = None
        return values

    monkeypatch.setattr(ingest, "_event_row", row)
    # a first request writes slowly, so the poisoned one and the others queue as one group
    release = threading.Event()
    real_store = ingest._store

    def slow_first(connection, group):
        if group[0].messages[0].message_id == "first":
            release.wait(timeout=10)
        return real_store(connection, group)

    monkeypatch.setattr(ingest, "_store", slow_first)

    def send(i: int) -> int:
        if i:
            wait_for(lambda: _leading(engine), 10, "a leader", interval=0.005)
        message_id = "first" if i == 0 else "poison" if i == 1 else f"fine-{i}"
        return client.post("/v1/track", headers=basic(WRITE_KEY), json={
            "event": "e", "userId": f"u{i}", "messageId": message_id}).status_code

    answers = _with_queue_held(engine, THREADS, send, release.set)
    assert answers[1] == 500
    assert answers[:1] + answers[2:] == [200] * (THREADS - 1)
    assert THREADS - 1 in group_sizes  # the poisoned group, before it was split
    assert sorted(e["message_id"] for e in stored_events(engine)) == sorted(
        ["first"] + [f"fine-{i}" for i in range(2, THREADS)])


def _leading(engine) -> bool:
    committer = ingest._COMMITTERS.get(engine)
    return committer is not None and committer._leading


def _queued(engine) -> int:
    committer = ingest._COMMITTERS.get(engine)
    return 0 if committer is None else len(committer._queue)


def _with_queue_held(engine, count: int, send: Callable[[int], Any],
                     release: Callable[[], None]) -> list[Any]:
    """Request 0 leads and is held; the others queue behind it; then `release()`."""
    results: list[list[Any]] = []
    runner = threading.Thread(target=lambda: results.append(run_concurrently(count, send)))
    runner.start()
    wait_for(lambda: _queued(engine) >= count - 1, 10, "the queue", interval=0.005)
    release()
    runner.join(timeout=60)
    assert results, "requests did not finish"
    return results[0]


def test_a_group_the_database_fails_answers_503_to_every_request_and_stores_none(
        database_url: str, group_sizes: list[int]) -> None:
    """A real failure: while the first request writes, another connection renames the
    deliveries table away (holding its lock until the rename commits); the first request's
    transaction and the group queued behind it fail on the missing table."""
    app = create_app(from_mapping(base_config(database_url)))
    engine = app.extensions["gateway.engine"]
    client = app.test_client()
    rename = Renamer(database_url)
    try:
        assert client.post("/v1/track", headers=basic(WRITE_KEY),
                           json={"event": "e", "userId": "before"}).status_code == 200
        group_sizes.clear()
        rename.begin()  # holds the table (PostgreSQL) or the write lock (SQLite)

        def send(i: int) -> int:
            if i:
                # the first leads, waits on the lock
                wait_for(lambda: _leading(engine), 10, "a leader", interval=0.005)
            return client.post("/v1/track", headers=basic(WRITE_KEY), json={
                "event": "e", "userId": f"during-{i}", "messageId": f"during-{i}"}).status_code

        assert _with_queue_held(engine, THREADS, send, rename.commit) == [503] * THREADS
        assert max(group_sizes) > 1  # a whole group failed, not only lone requests
        assert not [e for e in stored_events(engine) if e["message_id"].startswith("during-")]

        rename.back()
        assert client.post("/v1/track", headers=basic(WRITE_KEY),
                           json={"event": "e", "userId": "after"}).status_code == 200
        users = [e["user_id"] for e in stored_events(engine)]
        assert users == ["before", "after"]
    finally:
        rename.close()
        engine.dispose()


class Renamer:
    """Renames `deliveries` away inside a transaction of its own connection."""

    def __init__(self, url: str) -> None:
        self.path = sqlite_file(url)
        if self.path is None:
            self.engine = create_engine(normalise_url(url))
            self.connection = self.engine.connect()
        else:
            self.sqlite = sqlite3.connect(self.path, isolation_level=None, timeout=30)

    def begin(self) -> None:
        if self.path is None:
            self.transaction = self.connection.begin()
            self.connection.execute(text("ALTER TABLE deliveries RENAME TO deliveries_away"))
        else:
            self.sqlite.execute("BEGIN IMMEDIATE")
            self.sqlite.execute("ALTER TABLE deliveries RENAME TO deliveries_away")

    def commit(self) -> None:
        if self.path is None:
            self.transaction.commit()
        else:
            self.sqlite.execute("COMMIT")

    def back(self) -> None:
        if self.path is None:
            with self.connection.begin():
                self.connection.execute(text("ALTER TABLE deliveries_away RENAME TO deliveries"))
        else:
            self.sqlite.execute("ALTER TABLE deliveries_away RENAME TO deliveries")

    def close(self) -> None:
        if self.path is None:
            self.connection.close()
            self.engine.dispose()
        else:
            self.sqlite.close()


@pytest.mark.slow
def test_a_real_server_under_concurrent_load_stores_every_200_once(
        database_url: str, tmp_path: Path) -> None:
    gateway = LiveGateway(tmp_path, base_config(database_url), workers=2)
    try:
        def send(i: int) -> list[tuple[int, str]]:
            out = []
            with requests.Session() as session:
                for n in range(10):
                    message_id = f"m-{i}-{n}" if n % 3 else f"shared-{n}"  # some sent by all
                    response = session.post(f"{gateway.url}/v1/track", auth=(WRITE_KEY, ""),
                                            json={"event": "e", "userId": f"u{i}",
                                                  "messageId": message_id}, timeout=30)
                    out.append((response.status_code, message_id))
            return out

        answers = [a for per_thread in run_concurrently(THREADS, send) for a in per_thread]
        assert {status for status, _ in answers} == {200}
        engine = create_engine(normalise_url(database_url))
        try:
            stored = [e["message_id"] for e in stored_events(engine)]
        finally:
            engine.dispose()
        assert sorted(stored) == sorted({message_id for _, message_id in answers})
    finally:
        gateway.stop()


def test_deliveries_follow_arrival_order_when_messages_are_routed_differently(
        client, engine) -> None:
    """Per-user order (docs/design.md §2.3) follows delivery ids: a user's messages routed to
    different sets of destinations (their `integrations` objects) must still get their
    deliveries to one destination in arrival order."""
    only_cio = {"All": False, "Customer.io": True}
    batch = [
        {"type": "track", "event": "first", "userId": "u-order", "messageId": "o-1",
         "integrations": only_cio},
        {"type": "track", "event": "second", "userId": "u-order", "messageId": "o-2"},
        {"type": "track", "event": "third", "userId": "u-order", "messageId": "o-3",
         "integrations": only_cio},
    ]
    response = client.post("/v1/batch", json={"batch": batch}, headers=basic(WRITE_KEY))
    assert response.status_code == 200
    event_ids = {row["id"]: row["message_id"] for row in stored_events(engine)}
    to_cio = [event_ids[d["event_id"]] for d in stored_deliveries(engine)
              if d["destination"] == "cio"]
    assert to_cio == ["o-1", "o-2", "o-3"]
