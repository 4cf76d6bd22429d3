"""For `gunicorn wsgi:app`; the config comes from $GATEWAY_CONFIG or ./gateway.toml."""

from gateway import create_app

app = create_app()
