"""Delivery: the loop (worker.py) claims due rows (claim.py) into per-destination lanes
(lanes.py; their limits are parsed with the config, gateway/config/limits.py), sends
them (send.py, client.py), classifies each outcome (verdict.py, retry.py) and records it
(record.py)."""
