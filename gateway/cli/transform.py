"""`gateway transform test NAME --event file.json [--destination D]`: the dry run of
gateway/transforms/preview.py from a terminal. Prints each step's effect, the resulting events
and, with a destination, the exact HTTP requests its adapter would send (secrets redacted);
sends nothing, touches no database."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from adapters.textsafe import json_safe, printable
from gateway import config as config_module
from gateway.config import Config, ConfigFileError
from gateway.transforms import config as transforms_config
from gateway.transforms.preview import MAX_EVENT_BYTES, PreviewError, preview

AddCommand = Callable[[str, str], argparse.ArgumentParser]


def add_command(add: AddCommand) -> None:
    command = add("transform", "try a transformation on an event, sending nothing")
    actions = command.add_subparsers(dest="transform_action", required=True, metavar="ACTION")
    test = actions.add_parser("test", help="run one transformation on an event file",
                              description="run transformation NAME on the event in --event; "
                                          "with --destination, that destination's consent "
                                          "first and its filters and adapter after, printing "
                                          "the HTTP requests it would send (secrets redacted)")
    test.add_argument("name", metavar="NAME", help="a [[transformations]] name")
    test.add_argument("--event", required=True, metavar="FILE",
                      help="a JSON file holding one event ('-': standard input)")
    test.add_argument("--destination", metavar="D", help="a [[destinations]] name")
    test.add_argument("--json", action="store_true", help="the whole result as JSON")
    test.add_argument("--config", default=argparse.SUPPRESS,
                      help="config file (default: $GATEWAY_CONFIG or ./gateway.toml)")


def run(args: argparse.Namespace, config: Config) -> int:
    declared = _declared(args.config)
    if args.name not in declared:
        known = ", ".join(sorted(declared)) or "none declared"
        print(f"gateway transform test: no transformation named {printable(args.name)!s} "
              f"(declared: {known})", file=sys.stderr)
        return 2
    try:
        event = _read_event(args.event)
        result = preview(config, event, args.destination, declared[args.name])
    except PreviewError as exc:
        print(f"gateway transform test: {printable(str(exc))}", file=sys.stderr)
        return 2
    if args.json:
        print(json_safe(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()))
    else:
        print(render(result))
    return 0 if result["outcome"] in ("kept", "sent") else 1


def _declared(path: Any) -> dict[str, transforms_config.Transformation]:
    """Every declared transformation, attached or not (the Config holds attached ones)."""
    config_path = config_module.resolve_path(path)
    raw = config_module.read_config(config_path)
    try:
        return transforms_config.parse(raw.get("transformations"), config_path.parent.resolve())
    except transforms_config.TransformConfigError as exc:
        raise ConfigFileError(f"{config_path}: {exc}") from None


def _read_event(name: str) -> Any:
    try:
        data = sys.stdin.buffer.read(MAX_EVENT_BYTES + 1) if name == "-" else \
            Path(name).read_bytes()[:MAX_EVENT_BYTES + 1]
    except OSError as exc:
        raise PreviewError(f"--event {name}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_EVENT_BYTES:
        raise PreviewError(f"--event {name}: more than {MAX_EVENT_BYTES} bytes")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise PreviewError(f"--event {name}: not JSON: {exc}") from None


def render(result: dict[str, Any]) -> str:
    """The result for a person: steps, outcome, events, requests (control characters
    escaped: the event is anyone's input)."""
    lines = []
    for step in result["steps"]:
        text = (f"step {step['transformation']}: {step['effect']} ({step['given']} → "
                f"{step['returned']} events, {step['milliseconds']} ms)")
        lines.append(printable(text))
        if step["error"]:
            lines.append("  " + printable(step["error"]))
    reason = f": {result['reason']}" if result.get("reason") else ""
    lines.append(printable(f"outcome: {result['outcome']}{reason}"))
    for n, event in enumerate(result["events"], 1):
        lines.append(f"event {n}:")
        lines.append(_json(event))
    for n, request in enumerate(result["requests"], 1):
        lines.append(printable(f"request {n}: {request['method']} {request['url']}"))
        for header, value in request["headers"].items():
            lines.append(printable(f"  {header}: {value}"))
        if request["body"] is not None:
            lines.append(_json(request["body"]))
    if result["destination"] and not result["requests"] and result["outcome"] == "sent":
        lines.append("no request: the adapter sends nothing for this event")
    return "\n".join(lines)


def _json(value: Any) -> str:
    return json_safe(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())
