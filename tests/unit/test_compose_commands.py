"""docker-compose.yml runs the same commands as the tests: every service command parses as a
``carewatch`` command line, so a renamed flag cannot break production unnoticed."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from pathlib import Path

from app.cli import build_parser

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def carewatch_commands() -> list[list[str]]:
    # Comments mention commands too; only the YAML counts.
    text = re.sub(r"(?m)^\s*#.*$", "", COMPOSE.read_text(encoding="utf-8"))
    # Exec-form commands of services built from our image (ENTRYPOINT ["carewatch"]).
    commands = [json.loads(m) for m in re.findall(r"(?m)^\s+command: (\[.*\])\s*$", text)]
    # Shell-form steps: every `carewatch ...` inside a `sh -c` script.
    for script in re.findall(r"carewatch (?:migrate|broker|grafana)[^&|\n]*", text):
        commands.append(shlex.split(script)[1:])
    return commands


def test_every_compose_command_is_a_valid_carewatch_command() -> None:
    commands = carewatch_commands()
    assert {"migrate", "broker", "grafana", "gateway", "api", "notifier"} == {
        argv[0] for argv in commands
    }
    for argv in commands:
        build_parser().parse_args(argv)  # SystemExit (a failure) on an unknown flag


def test_the_api_trusts_exactly_the_proxy_for_forwarded_headers() -> None:
    """CAREWATCH_TRUSTED_PROXIES is the proxy's fixed address, inside the network's subnet;
    the API publishes no port of its own and the proxy runs the shipped Caddyfile."""
    text = COMPOSE.read_text(encoding="utf-8")
    trusted = re.search(r"CAREWATCH_TRUSTED_PROXIES: (\S+)", text)
    proxy_address = re.search(r"ipv4_address: (\S+)", text)
    subnet = re.search(r"- subnet: (\S+)", text)
    assert trusted is not None
    assert proxy_address is not None
    assert subnet is not None
    assert trusted[1] == proxy_address[1]
    assert ipaddress.ip_address(proxy_address[1]) in ipaddress.ip_network(subnet[1])
    api = text.split("\n  api:\n", 1)[1].split("\n\n", 1)[0]
    assert "ports:" not in api
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in text
