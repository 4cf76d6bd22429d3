"""Addresses in the config: listener binds (`host:port`), the public URL browsers are told to
send to, and trusted proxies. `parse_*` raise ValueError with a message fit for the user;
`normal_*` put the file and the field in front of it (ConfigFileError)."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from gateway.config.model import ConfigFileError
from gateway.http.peers import parse_network

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def parse_bind(text: str) -> tuple[str, int]:
    """`host:port`, `host` (port 8080), `:port` (host 127.0.0.1) or `[v6]:port` → (host, port).
    Raises ValueError with a message fit for the user."""
    text = text.strip()
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: expected [address]:port")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: write an IPv6 address as [address]:port")
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
    port = DEFAULT_PORT if port_text is None else _port(port_text, text)
    return host or DEFAULT_HOST, port


def _port(port_text: str, text: str) -> int:
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    return int(port_text)


def format_bind(host: str, port: int) -> str:
    """The `host:port` gunicorn takes (IPv6 in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normal_bind(bind: str, where: str, table: str = "[server]") -> str:
    """[server] bind as gunicorn takes it (`localhost` → `localhost:8080`), or a ConfigFileError."""
    try:
        return format_bind(*parse_bind(bind))
    except ValueError as exc:
        raise ConfigFileError(f"{where}: {table}: field 'bind': {exc}") from None


def normal_proxies(entries: tuple[str, ...], where: str) -> tuple[str, ...]:
    """[server] trusted_proxies checked and written as gunicorn's forwarded_allow_ips takes
    them (`10.1.2.3/8` → `10.0.0.0/8`; a single address stays as it is), or a ConfigFileError."""
    normal = []
    for entry in entries:
        try:
            network = parse_network(entry)
        except ValueError as exc:
            raise ConfigFileError(f"{where}: [server]: field 'trusted_proxies': {exc}") from None
        single = network.num_addresses == 1 and "/" not in entry
        normal.append(str(network.network_address) if single else str(network))
    return tuple(normal)


def is_loopback_bind(bind: str) -> bool:
    """Whether `host:port` only listens on this machine (127.0.0.0/8, ::1, `localhost`)."""
    host = parse_bind(bind)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name: it may resolve to anything


_HOST = re.compile(r"[a-z0-9._-]+|[0-9a-f:.]*:[0-9a-f:.]*")  # a name, IPv4, or IPv6 (unbracketed)


def parse_public_url(text: str) -> str:
    """`https://GW.example.com:8443/t/` → `https://gw.example.com:8443/t`: the address browser
    SDKs are told to send to, so it must be a plain http(s) base URL. Raises ValueError with a
    message fit for the user."""
    text = text.strip()
    if any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise ValueError(f"{text!r}: must not contain spaces or control characters")
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"{text!r}: must start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"{text!r}: names no host")
    if not _HOST.fullmatch(parts.hostname):
        raise ValueError(f"{text!r}: {parts.hostname!r} is not a host name or IP address")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{text!r}: must not hold credentials")
    if parts.query or text.rstrip().endswith("?"):
        raise ValueError(f"{text!r}: must not have a query (?…)")
    if parts.fragment or "#" in text:
        raise ValueError(f"{text!r}: must not have a fragment (#…)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme.lower()}://{netloc}{parts.path.rstrip('/')}"


def normal_public_url(text: str, where: str) -> str:
    """[server] public_url normalised, "" left as "" (the request's own host), or a
    ConfigFileError."""
    if not text.strip():
        return ""
    try:
        return parse_public_url(text)
    except ValueError as exc:
        raise ConfigFileError(f"{where}: [server]: field 'public_url': {exc}") from None
