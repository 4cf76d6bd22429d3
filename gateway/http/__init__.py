"""HTTP: the tracking API (tracking.py; body.py, auth.py, errors.py, cors.py, clients.py), the
browser settings (browser.py), the admin API with /health and /metrics (admin.py;
auth_throttle.py), and what guards every connection: the gunicorn worker (worker.py), body
deadlines (deadline.py), TLS (tls.py), listeners (listeners.py), trusted proxies (peers.py,
forwarded.py)."""
