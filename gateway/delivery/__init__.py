"""Delivery: the retry rules (retry.py) and the delivery state machine (states.py)."""
