"""HTTP blueprints: the tracking API (tracking.py) and health/admin routes (admin.py)."""
