"""The starter config `gateway serve` writes when no config file exists: one source with a fresh
write key, a fresh admin token, SQLite beside the file, and a commented destination example."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gateway.config import ConfigFileError, admin_token_problem


def write_default(path: Path) -> tuple[str, str]:
    """Write a starter config for the embedded default; return (write_key, admin_token)."""
    write_key = "wk_" + secrets.token_urlsafe(24)
    admin_token = secrets.token_urlsafe(32)
    while admin_token_problem(admin_token):  # one in billions spells a placeholder word
        admin_token = secrets.token_urlsafe(32)
    if not path.parent.is_dir():
        raise ConfigFileError(f"cannot write {path}: folder {path.parent} does not exist")
    try:
        # created 0600 from the start: it holds secrets
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(STARTER_TEMPLATE.format(write_key=write_key, admin_token=admin_token))
    except OSError as exc:
        raise ConfigFileError(f"cannot write {path}: {exc.strerror or exc}") from None
    return write_key, admin_token


STARTER_TEMPLATE = """\
# Written by `gateway serve` because no config file existed. Reference: README.md, "Configuration".
database_url = "sqlite:///gateway.db"
admin_token = "{admin_token}"

[[sources]]
name = "default"
write_key = "{write_key}"

# Destinations receive the events of the sources they list (default: every source), e.g.
# [[destinations]]
# name = "customerio-prod"
# type = "customerio"
# [destinations.settings]
# siteID = "..."
# apiKey = "..."
"""
