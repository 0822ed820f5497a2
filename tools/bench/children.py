"""Subprocesses of a benchmark run: a line protocol on stdin/stdout, always ended on exit.

Every measured party (publishers, subscribers, the gateway, the naive bridge) runs in its own
process so that none of them shares a GIL with the clock-keeping parent. Their stderr goes to a
log file in the run's directory, whose tail is shown when one of them fails.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from carewatch.processes import ChildProcess, Stdout
from tools.bench.errors import ChildError

# How long a child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE_S = 5.0
# Lines of its log that a failure shows.
_FAILURE_LOG_LINES = 20


class BenchChild(ChildProcess):
    """A benchmark's subprocess: a :class:`ChildProcess` that fails as :class:`ChildError`.

    Those that take part in a measurement speak a line protocol: they print ``ready``, read
    ``go`` and print ``done ...`` (:meth:`send_line`, :meth:`expect`); those that only exit
    when they are done are timed by :meth:`watch_exit`.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        stdout: Stdout = "pipe",
        stdin_pipe: bool = True,
    ) -> None:
        super().__init__(
            name,
            argv,
            log_path=log_path,
            env=env,
            stdout=stdout,
            stdin_pipe=stdin_pipe,
            stop_timeout_s=TERMINATE_GRACE_S,
        )
        self._buffer = b""
        self._exited_at: float | None = None
        self._waiter: threading.Thread | None = None

    def failed(self, problem: str) -> ChildError:
        """The error that says this child failed, with the end of its log."""
        return ChildError(self.name, problem, self.log_tail(_FAILURE_LOG_LINES))

    def check_alive(self, when: str = "") -> None:
        """Raise :meth:`failed` if the child has exited (``when``: say at what point)."""
        code = self.poll()
        if code is not None:
            raise self.failed(f"exited with {code}{f' {when}' if when else ''}")

    def send_line(self, line: str) -> None:
        """Write one line to the child's stdin."""
        if self.stdin is None:
            raise self.failed("has no stdin pipe")
        try:
            self.stdin.write(line.encode() + b"\n")
            self.stdin.flush()
        except BrokenPipeError as error:
            raise self.failed(f"exited with {self.poll()} before reading {line!r}") from error

    def read_line(self, timeout_s: float) -> str:
        """The next line the child prints, waiting at most ``timeout_s``."""
        if self.stdout is None:
            raise self.failed("has no stdout pipe")
        fd = self.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self.failed(f"said nothing within {timeout_s:.0f} s")
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                continue
            # os.read on the raw fd: the file object's own buffer would hide data from select.
            chunk = os.read(fd, 65536)
            if not chunk:
                raise self.failed(f"exited with {self.wait()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()

    def expect(self, word: str, timeout_s: float) -> list[str]:
        """Read a line that starts with ``word``; the rest of its words."""
        line = self.read_line(timeout_s)
        parts = line.split()
        if not parts or parts[0] != word:
            raise self.failed(f"said {line!r}, expected {word!r}")
        return parts[1:]

    def watch_exit(self) -> None:
        """Note the moment the child exits, from a thread blocked in wait().

        ``Popen.wait(timeout=...)`` polls with growing sleeps; a blocking wait in a thread
        sees the exit at once, which is what a timing needs.
        """

        def waiter() -> None:
            self.wait()
            self._exited_at = time.monotonic()

        self._waiter = threading.Thread(target=waiter, name=f"wait-{self.name}", daemon=True)
        self._waiter.start()

    def exited_at(self, timeout_s: float) -> float | None:
        """When the watched child exited (monotonic), or None if it still runs after the wait."""
        if self._waiter is None:
            raise RuntimeError("watch_exit() was not called")
        self._waiter.join(timeout_s)
        return self._exited_at

    def stop(self, timeout_s: float | None = None) -> int:
        """End the child if it still runs, release its pipes; its exit code."""
        try:
            return super().stop(timeout_s)
        finally:
            if self._waiter is not None:
                self._waiter.join(1.0)
