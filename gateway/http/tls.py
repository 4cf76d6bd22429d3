"""TLS served by the gateway itself (`[server] certfile` / `keyfile`), for small deployments
without a proxy: the Segment mobile SDKs hard-code `https://` in front of their `apiHost`.

One job: the server's SSL context, built once per worker process from gunicorn's settings (so
its `ssl_context` hook, ciphers and CA settings apply), and the checks `gateway serve` and
`gateway check` run on the files before anyone connects.
"""

from __future__ import annotations

import ssl


def server_context(cfg) -> ssl.SSLContext:
    """gunicorn's context for `cfg`, plus one option the body deadline needs: a client whose
    read side the deadline shuts (`gateway/http/deadline.py`) looks to OpenSSL like a peer that
    vanished without close_notify, which is fatal for the connection unless ignored, and the
    408 could then not be written."""
    from gunicorn.sock import ssl_context

    context = ssl_context(cfg)
    context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
    return context


def load_problem(certfile: str, keyfile: str) -> str | None:
    """Why these files cannot serve TLS (unreadable, not PEM, key not the certificate's), or
    None. The message names the files, never their content."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile, keyfile or None)
    except FileNotFoundError as exc:
        return f"{exc.filename or certfile}: file not found"
    except PermissionError as exc:
        return f"{exc.filename or certfile}: cannot read it (permission denied)"
    except IsADirectoryError as exc:
        return f"{exc.filename or certfile}: is a folder, not a PEM file"
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            return f"{keyfile or certfile}: this private key is not the certificate's"
        files = f"{certfile} and {keyfile}" if keyfile else certfile
        return f"{files}: not a PEM certificate and private key ({exc.reason or exc})"
    except OSError as exc:
        return f"{certfile}: cannot read it ({exc.strerror or exc})"
    return None
