"""Child processes and loopback ports, for everything that runs a program of its own.

:class:`ChildProcess` is one started program whose output goes to a log file and that ends
with the ``with`` block owning it (SIGTERM, then SIGKILL). The production broker service
(``broker.mosquitto``), the private instances of tests, demo and benchmarks, the benchmarks'
children and the tests' gateway all start theirs with it. :func:`start_listening` starts a
server on a free loopback port and tries another when someone took the port first; the rest
reads ``/proc`` about processes this one did not start (PostgreSQL's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

from carewatch.errors import LocalInstanceError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# A port picked by free_port() can be taken by someone else before the server binds it.
PORT_ATTEMPTS = 3
_PORT_TAKEN = "Address already in use"

Stdout = Literal["log", "pipe", "null"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it (bind to port 0); another process could take it before our server
    binds it, so :func:`start_listening` retries with a fresh port when that happened.
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


def start_listening(
    service: str,
    start: Callable[[int], str | None],
    *,
    port: int,
    retry_ports: bool,
    log_path: Path,
) -> int:
    """Start a server with ``start(port)``; the port it then listens on.

    ``start`` returns None once the server listens, else what it knows of the failure ('' if
    nothing more than the log says). With ``retry_ports`` (the port came from
    :func:`free_port`, and no client knows it yet), a start whose log says the port was taken
    is tried again on a fresh one, up to ``PORT_ATTEMPTS`` times. Otherwise a failure raises
    :class:`LocalInstanceError` with the log's tail.
    """
    attempts = PORT_ATTEMPTS if retry_ports else 1
    attempt = 1
    while True:
        log_offset = _file_size(log_path)
        problem = start(port)
        if problem is None:
            return port
        if attempt < attempts and _PORT_TAKEN in _read_since(log_path, log_offset):
            log.info("port %s was taken before %s bound it; trying another", port, service)
            attempt += 1
            port = free_port()
            continue
        detail = "\n".join(text for text in (problem.strip(), log_tail(log_path)) if text)
        raise LocalInstanceError(service, f"start on port {port}", log_path, detail)


class ChildProcess:
    """One started program, owned by a ``with`` block: stopped when the block ends.

    ``with ChildProcess("gateway", argv, log_path=logs / "gateway.log") as gateway: ...``
    starts the program at once (as ``subprocess.Popen`` does). Its stderr is appended to
    ``log_path``, and so is its stdout unless that is a ``"pipe"`` to read or ``"null"``
    (a program whose output would only cost time); without ``log_path`` both are this
    process's own (a container's log). ``stdin_pipe`` gives it a pipe to write to; otherwise
    it reads nothing. ``own_session`` keeps a Ctrl-C in our terminal from reaching it, so that
    its owner can stop it in order.

    :meth:`stop` (what the end of the block does) sends SIGTERM and waits ``stop_timeout_s``
    for it to exit before SIGKILL.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None,
        env: Mapping[str, str] | None = None,
        stdout: Stdout = "log",
        stdin_pipe: bool = False,
        own_session: bool = False,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_timeout_s = stop_timeout_s
        with contextlib.nullcontext(None) if log_path is None else log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout={"log": log_file, "pipe": subprocess.PIPE, "null": subprocess.DEVNULL}[
                    stdout
                ],
                stderr=log_file,
                env=dict(env) if env is not None else None,
                start_new_session=own_session,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    @property
    def stdin(self) -> IO[bytes] | None:
        """The pipe to the child's stdin (``stdin_pipe``), else None."""
        return self._process.stdin

    @property
    def stdout(self) -> IO[bytes] | None:
        """The pipe from the child's stdout (``stdout="pipe"``), else None."""
        return self._process.stdout

    def poll(self) -> int | None:
        """The exit code if the child has exited, else None."""
        return self._process.poll()

    def is_running(self) -> bool:
        """Whether the child has not exited yet."""
        return self._process.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the child to exit; its exit code (``subprocess.TimeoutExpired`` if not)."""
        return self._process.wait(timeout_s)

    def send_signal(self, signum: int) -> None:
        """Send ``signum`` if the child still runs (SIGHUP: a reload, for instance)."""
        if self._process.poll() is None:
            self._process.send_signal(signum)

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, and SIGKILL if it is still there after ``timeout_s``; its exit code.

        Also closes the pipes. Stopping a child that has exited only collects its code.
        """
        grace_s = self.stop_timeout_s if timeout_s is None else timeout_s
        try:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGTERM)
                try:
                    return self._process.wait(grace_s)
                except subprocess.TimeoutExpired:
                    log.warning(
                        "%s (pid %s) ignored SIGTERM for %.0f s; killing it",
                        self.name,
                        self.pid,
                        grace_s,
                    )
                    self._process.kill()
            return self._process.wait()
        finally:
            self._close_pipes()

    def kill(self) -> int:
        """SIGKILL, as a crash would end it; its exit code."""
        if self._process.poll() is None:
            self._process.kill()
        code = self._process.wait()
        self._close_pipes()
        return code

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the child's log ('' without a log file)."""
        return log_tail(self.log_path, lines) if self.log_path is not None else ""

    def _close_pipes(self) -> None:
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                # stdin with unflushed data to a child that is gone: nothing to save.
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


# --- processes we did not start (read from /proc) -----------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: it only waits to be reaped).

    Reads /proc rather than sending signal 0, because the processes we watch may belong to
    another user (postgres) and because an unreaped zombie still answers signal 0.
    """
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def child_pids(parent: int) -> list[int]:
    """The pids of ``parent``'s children, as /proc says right now."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == parent:
                children.append(int(entry.name))
    return children


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
    """Whether we run as root (servers that refuse root then run as another user)."""
    return os.geteuid() == 0


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ...; None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The fields follow the parenthesised command name, which may itself contain spaces.
    return stat.rpartition(")")[2].split()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_since(path: Path, offset: int) -> str:
    """What was appended to ``path`` after ``offset`` bytes ('' if it does not exist)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
