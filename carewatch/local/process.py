"""Small process and log helpers shared by the private instances."""

from __future__ import annotations

import os
import time
from pathlib import Path


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or '' if it does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it only waits to be reaped).

    Reads /proc rather than sending signal 0, because the processes we watch may belong to
    another user (postgres) and because an unreaped zombie still answers signal 0.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name, which may itself contain spaces.
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def wait_for_exit(pid: int, timeout_s: float) -> bool:
    """Poll until ``pid`` is gone; True if it went within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def process_cmdline(pid: int) -> list[str]:
    """The argv of ``pid``, or [] if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_root() -> bool:
    return os.geteuid() == 0
