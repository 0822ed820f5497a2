"""docker-compose.yml runs the same commands as the tests: every service command parses as a
``carewatch`` command line, so a renamed flag cannot break production unnoticed."""

from __future__ import annotations

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
    assert {"migrate", "broker", "grafana", "gateway", "api"} == {argv[0] for argv in commands}
    for argv in commands:
        build_parser().parse_args(argv)  # SystemExit (a failure) on an unknown flag
