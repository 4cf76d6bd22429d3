"""The outgoing client against a real local HTTP server (no mocks)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from adapters.base import HttpRequest, Retryable
from gateway.delivery.client import (
    MAX_RESPONSE_BYTES,
    HttpClient,
    NoAnswer,
    excerpt,
    rate_headers,
    redact,
    secret_values,
)


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Recorder.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(429 if self.path == "/slow-down" else 200)
        self.send_header("Retry-After", "7")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ok": true, "echo": "secret-value"}')

    def do_GET(self) -> None:
        if self.path == "/huge":  # an answer past the client's bound
            self.send_response(200)
            self.send_header("Content-Length", str(3 << 20))
            self.end_headers()
            self.wfile.write(b"x" * (3 << 20))
            return
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)  # quick stop
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_endpoint_override_json_body_and_headers(server: str) -> None:
    client = HttpClient()
    request = HttpRequest("POST", "https://api.custify.com/people?x=1",
                          {"Authorization": "Bearer k"}, json={"n": 1})
    sent = client.send(request, endpoint=server)
    assert sent.status == 200 and sent.duration_ms >= 0
    [seen] = Recorder.seen
    assert seen["path"] == "/people?x=1"
    assert json.loads(seen["body"]) == {"n": 1}
    assert seen["headers"]["Authorization"] == "Bearer k"
    assert seen["headers"]["Content-Type"] == "application/json"


def test_exact_bytes_win_and_retry_after_is_read(server: str) -> None:
    sent = HttpClient().send(HttpRequest("POST", server + "/slow-down", {}, json={"a": 1},
                                         data=b'{"a":1}'))
    assert sent.status == 429 and sent.retry_after == "7"
    assert Recorder.seen[0]["body"] == b'{"a":1}'


def test_connection_refused_is_a_status_less_result() -> None:
    sent = HttpClient().send(HttpRequest("POST", "http://127.0.0.1:9/x"))
    assert sent.status is None and sent.error_class == "ConnectionError"


def test_lookup_parses_json_and_maps_network_failure(server: str) -> None:
    client = HttpClient()
    found = client.lookup(server)(HttpRequest("POST", "https://api.custify.com/company"))
    assert found.status == 200 and found.body == {"ok": True, "echo": "secret-value"}
    assert client.lookup(server)(HttpRequest("GET", "https://x.io/v1/customers/a")).status == 404
    with pytest.raises(Retryable) as failed:
        client.lookup("http://127.0.0.1:9")(HttpRequest("GET", "https://x.io/a"))
    # no answer at all: the status-less result rides along, for the circuit breaker
    assert isinstance(failed.value, NoAnswer)
    assert failed.value.sent.status is None and failed.value.sent.error_class == "ConnectionError"


def test_redaction() -> None:
    assert redact('{"echo": "secret-value"}', ["secret-value", ""]) == '{"echo": "***"}'
    assert len(excerpt("x" * 5000, [])) == 1024


@pytest.mark.parametrize("shown", [
    "k%2Fe%2By%20%26%C3%BC-secret",  # quote(safe="")
    "k/e%2By%20%26%C3%BC-secret",  # quote()
    "k%2Fe%2By+%26%C3%BC-secret",  # quote_plus
    'k\\/e+y &\\u00fc-secret',  # JSON, ASCII only and the slash escaped
    "k/e+y &amp;\u00fc-secret",  # HTML
    "Basic " + base64.b64encode("site-9:k/e+y &\u00fc-secret".encode()).decode(),
    base64.urlsafe_b64encode("k/e+y &\u00fc-secret:".encode()).decode().rstrip("="),
    base64.b64encode('{"token": "k/e+y &\u00fc-secret", "n": 1}'.encode()).decode(),
])
def test_every_encoding_of_a_secret_is_redacted(shown: str) -> None:
    secrets = secret_values({"siteID": "site-9", "apiKey": "k/e+y &\u00fc-secret"}, {"apiKey"})
    text = f"refused: {shown}!"
    cleaned = redact(text, secrets)
    assert "***" in cleaned and cleaned.startswith("refused: ") and cleaned.endswith("!")
    assert "secret" not in cleaned and "site-9" not in cleaned.replace("refused", "")


def test_the_webhooks_header_values_are_secrets() -> None:
    """A receiver's bearer token set in the webhook's `headers` is hidden like an API key."""
    from adapters.webhook import ADAPTER as WEBHOOK

    settings = {"webhookUrl": "https://r.example/in",
                "headers": {"X-Receiver-Token": "tok-8f2a9c71e6"}}
    secrets = secret_values(settings, WEBHOOK.secret_settings())
    assert "tok-8f2a9c71e6" in secrets
    assert redact("echo: X-Receiver-Token: tok-8f2a9c71e6", secrets) == (
        "echo: X-Receiver-Token: ***")
    assert WEBHOOK.redact(settings)["headers"] == "***"


def test_a_secret_across_the_excerpt_cut_is_not_half_shown() -> None:
    text = "x" * 1020 + "my-long-secret-1234"
    assert excerpt(text, ["my-long-secret-1234"]) == "x" * 1020 + "***"


def test_an_answer_is_read_up_to_its_bound(server: str) -> None:
    client = HttpClient()
    sent = client.send(HttpRequest("GET", server + "/huge"))
    assert sent.status == 200 and len(sent.text) == MAX_RESPONSE_BYTES
    # the oversized answer's connection was dropped, not reused half-read
    assert client.send(HttpRequest("POST", server + "/ok", json={})).status == 200


def test_form_bodies_are_encoded(server: str) -> None:
    HttpClient().send(HttpRequest("POST", server + "/form", form={"a": "1 2", "b": "&"}))
    [seen] = Recorder.seen
    assert seen["body"] == b"a=1+2&b=%26"
    assert seen["headers"]["Content-Type"] == "application/x-www-form-urlencoded"


def test_rate_limit_headers() -> None:
    assert rate_headers("0", "2") == (0, 2.0)
    left, reset = rate_headers("17", str(int(time.time()) + 30))  # a Unix time
    assert left == 17 and reset is not None and 28 <= reset <= 31
    assert rate_headers("many", "soon") == (None, None)
    assert rate_headers(None, "-5") == (None, None)
