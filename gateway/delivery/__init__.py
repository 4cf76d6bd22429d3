"""Delivery: claim, send, record and the loop that runs them (worker.py)."""
