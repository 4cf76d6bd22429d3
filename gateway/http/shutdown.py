"""This HTTP worker process is stopping (SIGTERM, gunicorn's graceful stop).

A graceful stop waits for every response in flight, up to 30 s. A long response (the console's
live event stream) ends when `stopping` is set instead of holding the stop, and a rolling
restart, for its whole life: the browser's EventSource reconnects on its own, to another node or
to this one once it is back, and loses nothing (it resumes from Last-Event-ID)."""

from __future__ import annotations

import threading

stopping = threading.Event()  # set by the worker's SIGTERM handler (gateway/http/worker.py)
