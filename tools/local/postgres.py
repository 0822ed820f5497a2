"""A private PostgreSQL server on a free loopback port, from ``initdb``/``pg_ctl``.

Trust authentication is on for TCP from 127.0.0.1: the server listens on loopback only and
holds throw-away data (tests, demo, benchmark). Never point it at real data.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

from carewatch.errors import LocalInstanceError
from carewatch.processes import (
    LOOPBACK,
    child_pids,
    free_port,
    is_root,
    log_tail,
    pid_alive,
    process_cmdline,
    start_listening,
    wait_for_exit,
)

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root: as root we run initdb and the server as this OS user.
# It is also the database superuser that initdb creates (-U), whatever OS user we are.
SUPERUSER = "postgres"
_CONFIG_FILE = "carewatch.conf"
# After a kill the next start replays WAL first; give it time.
_START_TIMEOUT_S = 120
_STOP_TIMEOUT_S = 60


def find_bindir() -> Path:
    """Where initdb, pg_ctl and postgres live: PATH first, else Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        return Path(on_path).resolve().parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not versions:
        raise FileNotFoundError(
            "pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
        )
    return versions[-1].parent


def _quote_setting(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresInstance:
    """A private PostgreSQL server whose data directory is ``base_dir/data``.

    ``with PostgresInstance(path, settings={"fsync": "off"}) as pg: pg.url("postgres")``.
    ``start()`` runs initdb when the data directory is empty and reuses it otherwise, so the
    demo keeps its data across runs. ``settings`` are server options (postgresql.conf names)
    written, with the listener, to ``data/carewatch.conf`` on every start.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "postgres.log"
        self.settings: dict[str, str] = dict(settings or {})
        self._port_chosen = port is None
        self.port: int = port if port is not None else free_port()
        self._started_once = False
        self._bindir = find_bindir()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        except LocalInstanceError:
            # Leave no server behind, even if it would not stop politely.
            log.exception("PostgreSQL would not stop; killing it")
            self.kill()

    # --- public API ----------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """The URL of database ``dbname`` as the superuser (trust authentication)."""
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{dbname}"

    @property
    def initialised(self) -> bool:
        """Whether initdb has made the data directory."""
        return (self.data_dir / "PG_VERSION").exists()

    def is_running(self) -> bool:
        """Whether a server runs on our data directory (ours, or one left from before)."""
        return self._postmaster_pid() is not None

    def start(self) -> None:
        """Start the server (initdb first if needed); return when it accepts connections."""
        if self.is_running():
            return
        self._prepare_directories()
        if not self.initialised:
            self._initdb()
        self._remove_stale_pid_file()
        self.port = start_listening(
            "PostgreSQL",
            self._pg_ctl_start,
            port=self.port,
            retry_ports=self._port_chosen and not self._started_once,
            log_path=self.log_path,
        )
        self._started_once = True
        log.info("PostgreSQL listening on %s:%s (data %s)", LOOPBACK, self.port, self.data_dir)

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m MODE``: ``smart`` waits for clients, ``fast`` disconnects them,
        ``immediate`` quits without a checkpoint (crash recovery on the next start)."""
        if mode not in ("smart", "fast", "immediate"):
            raise ValueError(f"stop mode must be smart, fast or immediate, not {mode!r}")
        if not self.is_running():
            return
        result = self._run(self._pg_ctl("stop", "-w", "-t", str(_STOP_TIMEOUT_S), "-m", mode))
        if result.returncode != 0 and self.is_running():
            raise LocalInstanceError(
                "PostgreSQL",
                f"stop ({mode})",
                self.log_path,
                (result.stdout + result.stderr).strip() + "\n" + log_tail(self.log_path),
            )

    def kill(self) -> None:
        """SIGKILL the postmaster and all its children at once, as a crash of the machine would.

        Each child of the postmaster runs in a session of its own, so there is no process group
        to kill. The postmaster is stopped first (SIGSTOP) so that it forks no new backend while
        we list its children; a backend left running would keep the shared memory attached and
        the next start would refuse to run beside it.
        """
        pid = self._postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        victims = [pid, *child_pids(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        for victim in victims:
            wait_for_exit(victim, timeout_s=10)
        log.info(
            "PostgreSQL on port %s killed (postmaster %s, %d children)",
            self.port,
            pid,
            len(victims) - 1,
        )

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE, from ``template`` if given (it must have no connections); its URL."""
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ... WITH (FORCE): connections left open are terminated."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(statement)

    # --- internals ---------------------------------------------------------------------------

    def _pg_ctl_start(self, port: int) -> str | None:
        """``pg_ctl start`` on ``port``; None once the server accepts connections, else what
        pg_ctl said."""
        self.port = port
        self._write_config()
        result = self._run(
            self._pg_ctl("start", "-w", "-t", str(_START_TIMEOUT_S), "-l", str(self.log_path))
        )
        return None if result.returncode == 0 else result.stdout + result.stderr

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self._bindir / "pg_ctl"), "-D", str(self.data_dir), *args]

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool, as the postgres OS user when we are root."""
        command = ["runuser", "-u", SUPERUSER, "--", *argv] if is_root() else list(argv)
        # cwd "/": initdb and pg_ctl complain when the postgres user cannot enter our cwd.
        return subprocess.run(command, cwd="/", capture_output=True, text=True, check=False)

    def _prepare_directories(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        self.log_path.touch(exist_ok=True)
        if is_root():
            account = pwd.getpwnam(SUPERUSER)
            for path in (self.data_dir, self.log_path):
                if path.stat().st_uid != account.pw_uid:
                    os.chown(path, account.pw_uid, account.pw_gid)
            _make_reachable(self.data_dir.parent, account)
        # The server refuses a data directory that others may read.
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        if any(self.data_dir.iterdir()):
            raise LocalInstanceError(
                "PostgreSQL",
                f"initialise {self.data_dir}: it is not empty and holds no PG_VERSION",
                self.log_path,
                "",
            )
        argv = [
            str(self._bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            # C.UTF-8: byte-order collation (fast, the same everywhere) with Unicode-aware
            # upper()/lower() for names like "Solgården".
            "--locale=C.UTF-8",
            # Throw-away clusters: skipping the fsync of ~1000 new files saves seconds.
            "--no-sync",
            "--no-instructions",
        ]  # fmt: skip
        result = self._run(argv)
        if result.returncode != 0:
            raise LocalInstanceError(
                "PostgreSQL",
                f"initdb {self.data_dir}",
                self.log_path,
                (result.stdout + result.stderr).strip(),
            )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"\n# Added by tools.local.postgres, rewritten on every start.\n"
                f"include_if_exists = '{_CONFIG_FILE}'\n"
            )
        log.info("initialised PostgreSQL data directory %s", self.data_dir)

    def _write_config(self) -> None:
        options = {
            "listen_addresses": LOOPBACK,
            "port": str(self.port),
            # No unix socket: clients use TCP (url()), and a socket path under a deep
            # directory can exceed the 107-byte limit of sun_path.
            "unix_socket_directories": "",
            **self.settings,
        }
        lines = ["# Written by tools.local.postgres on every start; edits are overwritten."]
        lines += [f"{key} = {_quote_setting(value)}" for key, value in options.items()]
        path = self.data_dir / _CONFIG_FILE
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        if is_root():
            account = pwd.getpwnam(SUPERUSER)
            os.chown(path, account.pw_uid, account.pw_gid)

    def _postmaster_pid(self) -> int | None:
        """The pid of the postmaster running on our data directory, or None."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        if not first_line.strip().isdigit():
            return None
        pid = int(first_line)
        if not pid_alive(pid):
            return None
        # The pid may have been reused since a crash: only a postgres process whose working
        # directory is our data directory counts (the postmaster chdirs there).
        cmdline = process_cmdline(pid)
        if not cmdline or not Path(cmdline[0]).name.startswith(("postgres", "postmaster")):
            return None
        try:
            return pid if Path(os.readlink(f"/proc/{pid}/cwd")) == self.data_dir.resolve() else None
        except PermissionError:
            return pid  # cannot tell; assume it is ours rather than start a second server
        except FileNotFoundError:
            return None

    def _remove_stale_pid_file(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists() and self._postmaster_pid() is None:
            # PostgreSQL would work this out too, but not if the pid has been reused by an
            # unrelated process of the postgres user; removing it is safe once we know.
            log.warning("removing stale %s (the server crashed or was killed)", pid_file)
            pid_file.unlink()


def _make_reachable(directory: Path, account: pwd.struct_passwd) -> None:
    """Give ``account`` search (x) permission on ``directory`` and its ancestors where missing.

    Only the permission class that applies to the account is widened, and only by x (enter a
    known name), never r (list). pytest's base temp dir and /root are 0700, for example.
    """
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for path in [directory, *directory.parents]:
        st = path.stat()
        if st.st_uid == account.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            path.chmod(stat.S_IMODE(st.st_mode) | bit)
            log.info(
                "made %s searchable by the %s user so that PostgreSQL can reach its data",
                path,
                account.pw_name,
            )
