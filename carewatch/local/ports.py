"""Loopback ports for private instances."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

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
