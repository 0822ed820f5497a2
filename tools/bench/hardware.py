"""The machine beside the figures: its CPU, and how fast its disk makes a write durable.

A gateway's events/s says little without them: the same command on a machine with another CPU
or a disk that syncs ten times slower gives other figures (issue 14). The fsync rate comes from
PostgreSQL's own ``pg_test_fsync`` (Debian's ``postgresql`` package, next to ``pg_ctl``), run
on the directory that will hold the private server's data, before anything else of the run
starts: its ``fdatasync`` line is the method PostgreSQL uses on Linux for the WAL. Only the
first two tests run (the process is stopped once that line is out), so it takes about
2 x ``seconds``. Without ``pg_test_fsync`` the rate is null, with a note; the bench goes on.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tools.bench.children import BenchChild
from tools.bench.errors import BenchError
from tools.local.postgres import find_bindir

_CPUINFO: Final = Path("/proc/cpuinfo")
_MOUNTS: Final = Path("/proc/mounts")
_FDATASYNC: Final = re.compile(r"^\s*fdatasync\s+([0-9.]+)\s+ops/sec")
# The tests before fdatasync (open_datasync) and fdatasync itself, plus writing the 16 MB file.
_FSYNC_TIMEOUT_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class FsyncRate:
    """``pg_test_fsync``'s fdatasync rate on a directory, or why there is none."""

    ops_per_s: float | None
    directory: Path
    filesystem: str | None
    seconds: int
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        """The machine block's ``fsync`` entry."""
        return {
            "fdatasync_ops_per_s": self.ops_per_s,
            "directory": str(self.directory),
            "filesystem": self.filesystem,
            "seconds_per_test": self.seconds,
            "note": self.note,
        }


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The first ``model name`` of /proc/cpuinfo (None where there is none, as on some ARM)."""
    if cpuinfo is None:
        try:
            cpuinfo = _CPUINFO.read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip() or None
    return None


def cpus_available() -> int:
    """The CPUs this process may run on (a container or taskset may allow fewer than exist)."""
    return len(os.sched_getaffinity(0))


def filesystem_of(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem that holds ``path`` (the longest mount point above it)."""
    if mounts is None:
        try:
            mounts = _MOUNTS.read_text(errors="replace")
        except OSError:
            return None
    resolved = str(path.resolve())
    best, best_type = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts escapes a space in a mount point as \040.
        point = fields[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def parse_fdatasync(line: str) -> float | None:
    """The ops/sec of ``pg_test_fsync``'s fdatasync line; None for any other line (or n/a)."""
    match = _FDATASYNC.match(line)
    return float(match.group(1)) if match else None


def pg_test_fsync_binary() -> Path | None:
    """``pg_test_fsync`` of the PostgreSQL the bench runs, or Debian's newest; None if absent."""
    candidates = []
    with contextlib.suppress(FileNotFoundError):
        candidates.append(find_bindir() / "pg_test_fsync")
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_test_fsync"), reverse=True)
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


def fsync_rate(directory: Path, log_path: Path, seconds: int = 2) -> FsyncRate:
    """``pg_test_fsync -s seconds`` on a file in ``directory`` until its fdatasync line."""
    directory.mkdir(parents=True, exist_ok=True)
    filesystem = filesystem_of(directory)

    def missing(note: str) -> FsyncRate:
        return FsyncRate(None, directory, filesystem, seconds, note)

    binary = pg_test_fsync_binary()
    if binary is None:
        return missing("pg_test_fsync not found (Debian: apt-get install postgresql)")
    test_file = directory / "pg_test_fsync.out"
    argv = [str(binary), "-s", str(seconds), "-f", str(test_file)]
    # The C locale: the line is parsed, and a translated "ops/sec" would not match.
    env = {**os.environ, "LC_ALL": "C"}
    try:
        with BenchChild(
            "pg_test_fsync", argv, log_path=log_path, env=env, stdin_pipe=False
        ) as child:
            deadline_s = _FSYNC_TIMEOUT_S + 2 * seconds
            while True:
                # It flushes a test's result when it starts the next one; stopping it then
                # (SIGTERM: it removes its file) saves the remaining tests' time.
                line = child.read_line(deadline_s)
                if line.strip().startswith("fdatasync"):
                    rate = parse_fdatasync(line)
                    note = "" if rate is not None else f"pg_test_fsync said {line.strip()!r}"
                    return FsyncRate(rate, directory, filesystem, seconds, note)
    except (BenchError, OSError) as error:
        return missing(f"pg_test_fsync gave no fdatasync rate: {error}")
    finally:
        test_file.unlink(missing_ok=True)
