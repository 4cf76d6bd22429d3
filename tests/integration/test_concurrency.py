"""Concurrent writers: every accepted event stored once, the identity graph stays whole."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from gateway import create_app
from gateway.config import from_mapping
from gateway.store.models import identities, identity_keys
from tests.conftest import WRITE_KEY, base_config
from tests.helpers import basic, stored_events

THREADS = 4
REQUESTS = 15


def test_parallel_requests_with_overlapping_identities(database_url: str) -> None:
    config = from_mapping(base_config(database_url))
    apps = [create_app(config) for _ in range(THREADS)]  # one engine each, like gunicorn workers
    statuses: list[int] = []

    def sender(worker: int) -> None:
        client = apps[worker].test_client()
        for n in range(REQUESTS):
            user, anon = f"u{n % 5}", f"a{(n + worker) % 7}"
            batch = [
                {"type": "identify", "userId": user, "anonymousId": anon,
                 "messageId": f"w{worker}-{n}-i", "traits": {"email": f"{user}@x.io", "n": n}},
                {"type": "track", "event": "e", "anonymousId": anon,
                 "messageId": f"w{worker}-{n}-t"},
                {"type": "alias", "previousId": anon, "userId": f"u{(n + 1) % 5}",
                 "messageId": f"w{worker}-{n}-a"},
                {"type": "track", "event": "shared", "userId": user, "messageId": f"shared-{n}"},
            ]
            response = client.post("/v1/batch", json={"batch": batch}, headers=basic(WRITE_KEY))
            statuses.append(response.status_code)

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * (THREADS * REQUESTS)
    engine = apps[0].extensions["gateway.engine"]
    assert len(stored_events(engine)) == THREADS * REQUESTS * 3 + REQUESTS  # "shared-n" once
    with engine.connect() as connection:
        orphans = connection.execute(
            select(func.count()).select_from(identity_keys).where(
                identity_keys.c.identity_id.not_in(select(identities.c.id)))).scalar_one()
        key_count = connection.execute(select(func.count()).select_from(identity_keys)).scalar()
    assert orphans == 0
    assert key_count == 5 + 7 + 5  # u0..u4, a0..a6, five emails: each key exactly once
    for app in apps:
        app.extensions["gateway.engine"].dispose()
