"""Event data never drives the operator's terminal: every CLI output (tables, trees, explain,
`--json`) shows control characters from events as escapes, never raw (L3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway import create_app
from gateway.cli import main
from gateway.config import from_mapping
from gateway.delivery.worker import Worker
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, write_toml
from tests.helpers import RAW, basic, drain
from tests.standin import Answer, StandIn

OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # writes the clipboard
ERASE = "\r\x1b[2K"  # erases the line it is printed on
TITLE = "\x1b]0;owned\x9c"  # window title, ended by the C1 string terminator
BIDI = "\u202etxt.exe\u202c\u2066\u2069\u200f"
HOSTILE = f"{OSC52}{ERASE}{TITLE}{BIDI}\x7f\x9b2J\u2028"
MESSAGE_ID = f"m-{ERASE}1"

def raw_controls(text: str, layout: str = "\n") -> set[str]:
    """The control characters in a CLI output, beyond its own line breaks."""
    return {c for c in text if c in RAW and c not in layout}


@pytest.fixture
def hostile(database_url: str, tmp_path: Path):
    standin = StandIn()
    standin.script = [Answer(400, {"error": "refused"})]
    raw = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "sources": [{"name": "web", "write_key": WRITE_KEY}],
        "destinations": [
            {
                "name": "hook",
                "type": "webhook",
                "endpoint": standin.url,
                "settings": {"webhookUrl": "https://h.example/in"},
            }
        ],
        "retry": {"base_delay_seconds": 0},
    }
    path = tmp_path / "gateway.toml"
    write_toml(path, raw)
    app = create_app(from_mapping(raw))
    message = {
        "type": "track",
        "userId": f"u{ERASE}",
        "anonymousId": BIDI,
        "event": HOSTILE,
        "messageId": MESSAGE_ID,
        "properties": {"note": HOSTILE, HOSTILE: 1},
    }
    response = app.test_client().post("/v1/track", json=message, headers=basic(WRITE_KEY))
    assert response.status_code == 200
    worker = Worker(app.extensions["gateway.engine"], app.extensions["gateway.config"])
    drain(worker)
    yield path
    worker.close()
    standin.close()
    app.extensions["gateway.engine"].dispose()


def run(capsys: pytest.CaptureFixture, path: Path, *args: str) -> str:
    assert main(["--config", str(path), *args]) == 0
    return capsys.readouterr().out


def test_human_output_escapes_every_control_character(hostile: Path, capsys) -> None:
    listing = run(capsys, hostile, "events")
    assert raw_controls(listing) == set()
    assert "\\x1b]52;c;" in listing  # shown, escaped, not dropped
    event_id = listing.splitlines()[1].split()[0]
    tree = run(capsys, hostile, "events", event_id)
    assert raw_controls(tree) == set()
    assert "\\u202etxt.exe" in tree and "\\x9b2J" in tree
    deliveries = run(capsys, hostile, "deliveries")
    assert raw_controls(deliveries) == set()
    delivery_id = deliveries.splitlines()[1].split()[0]
    assert raw_controls(run(capsys, hostile, "deliveries", delivery_id)) == set()
    explained = run(capsys, hostile, "explain", MESSAGE_ID)
    assert raw_controls(explained) == set()
    assert "m-\\r\\x1b[2K1" in explained
    identity = run(capsys, hostile, "identities", "--anonymous-id", BIDI)
    assert raw_controls(identity) == set() and "\\u202e" in identity


def test_json_output_has_no_raw_controls_and_the_same_values(hostile: Path, capsys) -> None:
    page = run(capsys, hostile, "events", "--json")
    assert raw_controls(page) == set()
    [event] = json.loads(page)["data"]
    assert event["event"] == HOSTILE and event["anonymous_id"] == BIDI
    one = run(capsys, hostile, "events", str(event["id"]), "--json")
    assert raw_controls(one) == set()
    assert json.loads(one)["payload"]["properties"] == {"note": HOSTILE, HOSTILE: 1}
    explained = run(capsys, hostile, "explain", MESSAGE_ID, "--json")
    assert raw_controls(explained) == set()
    assert json.loads(explained)["message_id"] == MESSAGE_ID
