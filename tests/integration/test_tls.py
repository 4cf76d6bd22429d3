"""TLS served by `gateway serve` itself (`[server] certfile` / `keyfile`), for apps whose SDK
hard-codes `https://`: every client here verifies the certificate against a CA made in the test.
The worker reads request heads in its event loop (`gateway/http/worker.py`), so it drives the
handshake there too: a trickling or never-finished handshake holds no thread and meets the
head deadline, and the body deadline still answers 408 encrypted."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import trustme

from gateway.cli import main
from gateway.store.db import make_engine
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, LiveGateway, base_config, free_port, write_toml
from tests.helpers import basic, console_sign_in, stored_payloads

pytestmark = pytest.mark.slow  # `gateway serve` over TLS


class TestCA:
    """A CA made for the test, a certificate it signed for 127.0.0.1 and localhost, and the
    files: the CA certificate (what clients trust), the chain and the key (what serve loads)."""

    __test__ = False

    def __init__(self, folder: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = folder / "test-ca.pem"
        self.cert_file = folder / "gateway-cert.pem"
        self.key_file = folder / "gateway-key.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        server.cert_chain_pems[0].write_to_path(str(self.cert_file))
        server.private_key_pem.write_to_path(str(self.key_file))
        os.chmod(self.key_file, 0o600)

    def client_context(self) -> ssl.SSLContext:
        """What an app does: verify the chain and the host name."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def server_settings(self, **more: Any) -> dict[str, Any]:
        return {"certfile": str(self.cert_file), "keyfile": str(self.key_file), **more}


def tls_gateway(tmp_path: Path, admin: dict[str, Any] | None = None,
                **server: Any) -> tuple[TestCA, LiveGateway]:
    ca = TestCA(tmp_path)
    raw = base_config(f"sqlite:///{tmp_path / 'g.db'}", destinations=[],
                      server=ca.server_settings(**server), admin=admin or {})
    return ca, LiveGateway(tmp_path, raw, workers=1, tls_ca=str(ca.ca_file))


def track(user: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"userId": user, "event": "Opened"}).encode()
    return body, {**basic(WRITE_KEY), "Content-Type": "application/json"}


def raw_request(user: str) -> bytes:
    body, headers = track(user)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


TLS_RECORD = 16384  # the most plaintext one TLS record carries


def padded_request(user: str, size: int) -> bytes:
    """A track request of exactly `size` bytes, head and body."""
    body, headers = track(user)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())

    def build(pad: int) -> bytes:
        padded = body[:-1] + b',"properties":{"pad":"' + b"p" * pad + b'"}}'
        return (f"POST /v1/track HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                f"Content-Length: {len(padded)}\r\n\r\n").encode() + padded

    request = build(size - len(build(20000)) + 20000)  # the length has 5 digits either way
    assert len(request) == size, (len(request), size)
    return request


def tls_connect(ca: TestCA, port: int, timeout: float = 10) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ca.client_context().wrap_socket(sock, server_hostname="127.0.0.1")


def tls_connect_untrusted(port: int) -> None:
    """A client that trusts only the system's CAs, as an app would without the test CA."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        ssl.create_default_context().wrap_socket(sock, server_hostname="127.0.0.1").close()


def read_answers(sock: socket.socket, count: int) -> bytes:
    answers = b""
    while answers.count(b"HTTP/1.1 ") < count or not answers.endswith(b"}"):
        chunk = sock.recv(4096)
        assert chunk, answers
        answers += chunk
    return answers


def test_apps_over_verified_tls_keep_alive_pipelining_and_https_everywhere(
        tmp_path: Path) -> None:
    """A verifying client is served over TLS; two requests on one kept-alive connection, two
    pipelined in one TLS record; the settings advertise https; the console, on the admin
    listener (TLS too), sets a Secure cookie; every event is stored. A plain-HTTP client on the
    port is told to use https."""
    admin_port = free_port()
    ca, gateway = tls_gateway(tmp_path, admin={"bind": f"127.0.0.1:{admin_port}"})
    admin_url = f"https://127.0.0.1:{admin_port}"
    try:
        assert f"Serving on https://127.0.0.1:{gateway.port} " in gateway.log_text()
        assert f"only on {admin_url}" in gateway.log_text()
        connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, timeout=10,
                                                 context=ca.client_context())
        for user in ("kept-1", "kept-2"):
            body, headers = track(user)
            connection.request("POST", "/v1/track", body=body, headers=headers)
            answer = connection.getresponse()
            assert (answer.status, json.loads(answer.read())) == (200, {"success": True})
            if user == "kept-1":
                first_socket = connection.sock
        assert connection.sock is first_socket  # the second request rode the same connection
        connection.close()

        with tls_connect(ca, gateway.port) as sock:
            sock.sendall(raw_request("piped-1") + raw_request("piped-2"))  # one TLS record
            assert read_answers(sock, 2).count(b"HTTP/1.1 200 OK") == 2
            sock.sendall(raw_request("piped-3"))  # and the connection is still kept alive
            assert read_answers(sock, 1).startswith(b"HTTP/1.1 200 OK")

        with tls_connect(ca, gateway.port) as sock:
            # the second request decrypted already while the socket is not readable: the
            # first ends exactly where the thread's 8 KB read of the second TLS record ends
            first = padded_request("big", TLS_RECORD + 8192)
            sock.sendall(first + raw_request("after-big"))
            assert read_answers(sock, 2).count(b"HTTP/1.1 200 OK") == 2

        # the certificate is really checked: a client without the test CA refuses it
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect_untrusted(gateway.port)

        settings = requests.get(f"{gateway.url}/v1/projects/{WRITE_KEY}/settings",
                                verify=gateway.verify, timeout=10).json()
        segment = settings["integrations"]["Segment.io"]
        assert (segment["protocol"], segment["apiHost"]) == \
            ("https", f"127.0.0.1:{gateway.port}/v1")

        browser = requests.Session()
        browser.verify = gateway.verify
        browser.trust_env = False  # else $REQUESTS_CA_BUNDLE would replace verify
        signed_in = console_sign_in(browser, admin_url, ADMIN_TOKEN)  # TLS there too
        assert signed_in.status_code == 302
        cookie = next(value for value in signed_in.raw.headers.getlist("Set-Cookie")
                      if value.startswith("gw_console="))
        assert "Secure" in cookie.split("; ")

        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as plain:
            plain.sendall(raw_request("plain"))
            answer = plain.recv(4096)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request")
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["code"] == "tls_required"

        engine = make_engine(gateway.database_url)
        try:
            users = sorted(p["userId"] for p in stored_payloads(engine))
        finally:
            engine.dispose()
        assert users == ["after-big", "big", "kept-1", "kept-2", "piped-1", "piped-2",
                         "piped-3"]
    finally:
        gateway.stop()


HEAD_DEADLINE = 3
TRICKLERS = 6  # more than the threads: each would hold one if heads were read on threads
THREADS = 2


def client_hello(ca: TestCA) -> bytes:
    """The first flight of a verifying client, as bytes (what an app's TLS stack sends)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ca.client_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class Outcome:
    """What one slow client was answered (its first line, b"" when closed) and when."""

    def __init__(self) -> None:
        self.answer: bytes | None = None
        self.held = 0.0


def trickle_head(ca: TestCA, port: int, outcome: Outcome, stop: threading.Event) -> None:
    """Finish the handshake, then send the request line and one header line every 0.5 s."""
    with tls_connect(ca, port) as sock:
        opened = time.monotonic()
        sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.5)
        n = 0
        while not stop.is_set():
            try:
                answer = sock.recv(4096)
            except TimeoutError:
                n += 1
                try:
                    sock.sendall(f"X-Trickle-{n}: {n}\r\n".encode())
                    continue
                except OSError:
                    answer = b""
            except OSError:
                answer = b""
            outcome.answer, outcome.held = answer.split(b"\r\n", 1)[0], time.monotonic() - opened
            return


def stall_handshake(port: int, first_flight: bytes, outcome: Outcome) -> None:
    """Send (part of) a ClientHello and never finish the handshake: when is it closed?"""
    with socket.create_connection(("127.0.0.1", port), timeout=HEAD_DEADLINE + 10) as sock:
        opened = time.monotonic()
        sock.sendall(first_flight)
        try:
            while sock.recv(4096):  # the server's flight, if any, then its close
                pass
        except TimeoutError:
            return  # never closed: outcome.answer stays None
        except OSError:
            pass
        outcome.answer, outcome.held = b"", time.monotonic() - opened


def test_tls_heads_trickled_or_handshakes_never_finished_hold_no_thread(tmp_path: Path) -> None:
    """Over TLS as in the clear: clients that finish the handshake and trickle their head get
    408 (encrypted) at the head deadline, clients that never finish the handshake are closed
    then, and meanwhile the others are answered at once although the slow ones outnumber the
    threads. A body stalled past its deadline is answered 408 over TLS too."""
    ca, gateway = tls_gateway(tmp_path, header_timeout_seconds=HEAD_DEADLINE, threads=THREADS,
                              body_timeout_seconds=2)
    stop = threading.Event()
    hello = client_hello(ca)
    tricklers = [Outcome() for _ in range(TRICKLERS)]
    stalled = [Outcome() for _ in range(4)]
    threads = [threading.Thread(target=trickle_head, args=(ca, gateway.port, o, stop))
               for o in tricklers]
    threads += [threading.Thread(target=stall_handshake,
                                 args=(gateway.port, hello if n % 2 else hello[:40], o))
                for n, o in enumerate(stalled)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # all slow clients are in
        session = requests.Session()
        session.verify = gateway.verify
        session.trust_env = False
        latencies = []
        for n in range(20):
            body, headers = track(f"u{n}")
            begun = time.perf_counter()
            response = session.post(gateway.url + "/v1/track", data=body, headers=headers,
                                    timeout=30)
            latencies.append(time.perf_counter() - begun)
            assert response.status_code == 200
            time.sleep(0.05)
        assert sorted(latencies)[-2] < 1.0, sorted(latencies)[-5:]

        with tls_connect(ca, gateway.port) as sock:  # a body that stalls: 408 at its deadline
            sock.sendall(b"POST /v1/track HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: 1000\r\n\r\n{\"userId\":")
            assert sock.recv(4096).startswith(b"HTTP/1.1 408")

        for thread in threads:
            thread.join(timeout=HEAD_DEADLINE + 12)
        assert [o.answer for o in tricklers] == [b"HTTP/1.1 408 Request Timeout"] * TRICKLERS
        assert [o.answer for o in stalled] == [b""] * len(stalled)
        for outcome in tricklers + stalled:
            assert HEAD_DEADLINE - 1 <= outcome.held < HEAD_DEADLINE + 3, outcome.held
    finally:
        stop.set()
        gateway.stop()


def test_check_and_serve_verify_the_certificate_and_key(tmp_path: Path, capsys) -> None:
    """`gateway check` loads the files as serve does: ok when they match (relative paths are
    the config file's folder's), WARN when others may read the key, FAIL when the key is not
    the certificate's or a file is missing; `gateway serve` refuses to start on a FAIL. No
    line quotes the key."""
    ca = TestCA(tmp_path)
    config = tmp_path / "gateway.toml"

    def configure(**server: str) -> None:
        write_toml(config, {"database_url": "sqlite:///gateway.db", "admin_token": ADMIN_TOKEN,
                            "sources": [{"name": "web", "write_key": WRITE_KEY}],
                            "server": server})
        os.chmod(config, 0o600)

    def check() -> tuple[int, list[str]]:
        capsys.readouterr()
        code = main(["--config", str(config), "check"])
        captured = capsys.readouterr()
        assert "PRIVATE KEY" not in captured.out + captured.err
        return code, [" ".join(line.split()) for line in captured.out.splitlines()
                      if "TLS" in line]

    configure(certfile=ca.cert_file.name, keyfile=ca.key_file.name)  # relative to the file
    assert main(["--config", str(config), "migrate"]) == 0
    assert check() == (0, [f"ok TLS {ca.cert_file} and its key load"])

    os.chmod(ca.key_file, 0o644)
    code, lines = check()
    assert code == 0 and lines[1].startswith("WARN TLS key file")
    assert "group or others can read the private key; run chmod 600" in lines[1]
    os.chmod(ca.key_file, 0o600)

    other = ca.ca.issue_cert("127.0.0.1")  # a key of another certificate
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    configure(certfile=ca.cert_file.name, keyfile="other-key.pem")
    code, lines = check()
    assert code == 1
    assert lines == [f"FAIL TLS {tmp_path / 'other-key.pem'}: this private key is not the "
                     "certificate's"]
    capsys.readouterr()
    assert main(["--config", str(config), "serve", "--bind", f"127.0.0.1:{free_port()}",
                 "--no-worker"]) == 2
    assert "this private key is not the certificate's" in capsys.readouterr().err

    configure(certfile="missing.pem")
    assert check() == (1, [f"FAIL TLS {tmp_path / 'missing.pem'}: file not found"])

    configure(keyfile=ca.key_file.name)
    capsys.readouterr()
    assert main(["--config", str(config), "check"]) == 1
    assert "[server]: field 'keyfile': set, but 'certfile' is not" in capsys.readouterr().out
