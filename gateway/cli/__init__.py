"""The entry points: what an operator runs.

- commands.py: the `gateway` command's parser and `serve`, `worker`, `migrate`; dispatches the rest
- admin.py: `events`, `deliveries`, `identities`, `replay`, `retry`, `explain`
- regulations.py: `suppress`, `unsuppress`, `delete`, `regulations`
- check.py: `gateway check`
- destinations.py: `gateway destinations`
- copy.py: `gateway copy --to URL` (the move to PostgreSQL)
- supervisor.py: `gateway serve`'s parent process (binds, starts and restarts the children)
- httpserver.py: the gunicorn child the supervisor starts (`python -m gateway.cli.httpserver`)

`python -m gateway.cli` is the `gateway` command (the supervisor starts the delivery worker so).
"""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """The `gateway` command; imported lazily so the HTTP child (`-m gateway.cli.httpserver`)
    does not load the whole CLI before gunicorn forks."""
    from gateway.cli.commands import main as run

    return run(argv)
