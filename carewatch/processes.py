"""Child processes and loopback ports: the helpers that the broker service, the private
instances of tests, demo and benchmarks, and the benchmarks' children share."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it (bind to port 0); another process could take it before our server
    binds it, so the instances retry with a fresh port when their first start finds it in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(
    port: int,
    *,
    timeout_s: float,
    still_starting: Callable[[], bool] = lambda: True,
    host: str = LOOPBACK,
) -> bool:
    """Poll until ``host:port`` accepts a TCP connection.

    Returns False when ``timeout_s`` passed or ``still_starting()`` said the server gave up
    (its process exited), so that a failed start is reported at once instead of after the timeout.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not still_starting():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


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
