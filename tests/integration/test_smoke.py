import pytest

from tests.conftest import WRITE_KEY
from tests.helpers import basic, stored_payloads


def test_batch_is_stored(client, engine):
    response = client.post("/v1/batch", json={"batch": [
        {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "m1"}]},
        headers=basic(WRITE_KEY))
    assert response.status_code == 200
    assert response.get_json() == {"success": True}
    [payload] = stored_payloads(engine)
    assert payload["event"] == "Signed Up"


@pytest.mark.slow  # `gateway serve`
def test_live_gateway_answers(live_gateway):
    import requests
    response = requests.post(live_gateway.url + "/v1/track", headers=basic(WRITE_KEY),
                             json={"event": "x", "userId": "u"})
    assert response.status_code == 200, response.text
