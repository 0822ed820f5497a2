"""Subprocesses of a benchmark run: a line protocol on stdin/stdout, always ended on exit.

Every measured party (publishers, subscribers, the gateway, the naive bridge) runs in its own
process so that none of them shares a GIL with the clock-keeping parent. Their stderr goes to a
log file in the run's directory, whose tail is shown when one of them fails.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from tools.bench.errors import ChildError

# How long a child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE_S = 5.0


class Child:
    """One subprocess, owned by a ``with`` block: terminated, then killed, when it ends."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        pipe_stdout: bool = True,
        pipe_stdin: bool = True,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._buffer = b""
        self._exited_at: float | None = None
        self._waiter: threading.Thread | None = None
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe_stdout else subprocess.DEVNULL,
                stderr=log,
                env=dict(env) if env is not None else None,
            )

    def __enter__(self) -> Child:
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
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failed(self, problem: str) -> ChildError:
        return ChildError(self.name, problem, self.log_tail())

    def send_line(self, line: str) -> None:
        if self.proc.stdin is None:
            raise self.failed("has no stdin pipe")
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as error:
            raise self.failed(f"exited with {self.proc.poll()} before reading {line!r}") from error

    def read_line(self, timeout_s: float) -> str:
        """The next line the child prints, waiting at most ``timeout_s``."""
        if self.proc.stdout is None:
            raise self.failed("has no stdout pipe")
        fd = self.proc.stdout.fileno()
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
                code = self.proc.wait()
                raise self.failed(f"exited with {code}")
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
            self.proc.wait()
            self._exited_at = time.monotonic()

        self._waiter = threading.Thread(target=waiter, name=f"wait-{self.name}", daemon=True)
        self._waiter.start()

    def exited_at(self, timeout_s: float) -> float | None:
        """When the watched child exited (monotonic), or None if it still runs after the wait."""
        if self._waiter is None:
            raise RuntimeError("watch_exit() was not called")
        self._waiter.join(timeout_s)
        return self._exited_at

    def terminate(self, timeout_s: float = TERMINATE_GRACE_S) -> int:
        """SIGTERM, and SIGKILL if it is still there after ``timeout_s``; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()

    def stop(self, timeout_s: float = TERMINATE_GRACE_S) -> None:
        """End the child if it still runs and release its pipes."""
        try:
            self.terminate(timeout_s)
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    # stdin with unflushed data to a child that is gone: nothing to save.
                    with contextlib.suppress(BrokenPipeError):
                        stream.close()
            if self._waiter is not None:
                self._waiter.join(1.0)
