"""A private Mosquitto broker on a free loopback port, configured from the shipped configuration."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from broker.auth_files import BrokerAuth, render
from broker.sync import AuthPaths, ensure_files, write_files
from carewatch.errors import LocalInstanceError
from carewatch.processes import LOOPBACK, free_port, is_root, log_tail, wait_until_listening

log = logging.getLogger(__name__)

# Lines of the template that name places or identities of the deployed broker; a private
# instance replaces them with its own (see the header of deploy/mosquitto/mosquitto.conf).
_REPLACED_OPTIONS = frozenset(
    {
        "listener",
        "persistence_location",
        "log_dest",
        "pid_file",
        "user",
        "password_file",
        "acl_file",
    }
)
_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0
# A port picked by free_port() can be taken by someone else before the broker binds it.
_PORT_ATTEMPTS = 3


def shipped_config() -> Path:
    """The broker configuration the project ships.

    It lives in the package, as ``broker/mosquitto.conf``, so that an installed package
    (a wheel, the Docker image) has it; ``deploy/mosquitto/mosquitto.conf``, which docker-compose
    mounts, is a symlink to it. One copy to edit.
    """
    return Path(str(resources.files("broker") / "mosquitto.conf"))


def mosquitto_binary() -> str:
    # Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError(
            "mosquitto not found on PATH or in /usr/sbin (apt-get install mosquitto)"
        )
    return found


class MosquittoInstance:
    """A broker in ``base_dir``: config, persistence, identities and log live there.

    ``with MosquittoInstance(path, auth=...) as broker: ... broker.url(user, password)``. It
    listens on ``host`` (127.0.0.1 unless told otherwise), on ``port`` or a free one that it
    keeps across restarts, so clients can reconnect.

    Who may connect is in ``auth/passwd`` and ``auth/acl`` (broker/). Given ``auth``,
    the instance writes them itself (tests, benchmarks); without, they are kept by
    ``broker.sync`` from the database and :meth:`reload` applies them.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        port: int | None = None,
        host: str = LOOPBACK,
        config_template: Path | None = None,
        auth: BrokerAuth | None = None,
        log_to_stdout: bool = False,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.config_path = self.base_dir / "mosquitto.conf"
        self.data_dir = self.base_dir / "data"
        self.auth_paths = AuthPaths(self.base_dir / "auth")
        self.log_path = self.base_dir / "mosquitto.log"
        self.config_template = config_template or shipped_config()
        self.host = host
        self._auth = auth
        self._log_to_stdout = log_to_stdout
        self._port_chosen = port is None
        self.port: int = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._started_once = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, username: str | None = None, password: str | None = None) -> str:
        """``mqtt://[user:password@]127.0.0.1:port`` (clients connect over loopback)."""
        if username is None:
            return f"mqtt://{LOOPBACK}:{self.port}"
        credentials = quote(username, safe="") + (
            f":{quote(password, safe='')}" if password is not None else ""
        )
        return f"mqtt://{credentials}@{LOOPBACK}:{self.port}"

    def set_auth(self, auth: BrokerAuth) -> None:
        """Replace who may connect, and apply it if the broker runs."""
        self._auth = auth
        if write_files(self.auth_paths, render(auth)) and self.is_running():
            self.reload()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files and disconnects every client
        whose credentials no longer hold."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGHUP)

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.is_running() and self._process else None

    def start(self) -> None:
        """Start the broker and return once it accepts connections."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._auth is not None:
            write_files(self.auth_paths, render(self._auth))
        ensure_files(self.auth_paths)
        attempts = _PORT_ATTEMPTS if self._port_chosen and not self._started_once else 1
        for attempt in range(1, attempts + 1):
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            self._write_config()
            if self._launch():
                self._started_once = True
                log.info("mosquitto listening on %s (pid %s)", self.url(), self.pid)
                return
            new_output = self._log_since(log_offset)
            if "Address already in use" in new_output and attempt < attempts:
                log.info("port %s was taken before mosquitto bound it; trying another", self.port)
                self.port = free_port()
                continue
            raise LocalInstanceError(
                "mosquitto", f"start on port {self.port}", self.log_path, log_tail(self.log_path)
            )

    def stop(self) -> None:
        """SIGTERM, so that the broker writes its persistence file, then wait for it."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning(
                    "mosquitto (pid %s) ignored SIGTERM for %ss; killing it",
                    process.pid,
                    _STOP_TIMEOUT_S,
                )
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL: a crash. Whatever was not in the last persistence snapshot is gone."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait()
        self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # --- internals ---------------------------------------------------------------------------

    def render_config(self) -> str:
        """The shipped configuration with this instance's listener, paths and user."""
        kept: list[str] = []
        for line in self.config_template.read_text(encoding="utf-8").splitlines():
            option = line.split(maxsplit=1)[0] if line.strip() else ""
            if option in _REPLACED_OPTIONS:
                kept.append(f"# (replaced for this private instance) {line}")
            else:
                kept.append(line)
        private = [
            "",
            "# --- This private instance (broker.mosquitto) ---",
            f"persistence_location {self.data_dir}/",
            f"password_file {self.auth_paths.password_file}",
            f"acl_file {self.auth_paths.acl_file}",
            # The log goes to stderr, which start() sends to the log file: errors that come
            # before the broker could open a log file of its own (a bad option) end up there too.
            "log_dest stderr",
        ]
        if is_root():
            # Started as root, Mosquitto drops privileges to the user `mosquitto`, which could
            # not write to our root-owned directory; this broker only listens on loopback.
            private.append("user root")
        private.append(f"listener {self.port} {self.host}")
        header = f"# Generated from {self.config_template} on every start; edits are overwritten."
        return "\n".join([header, *kept, *private]) + "\n"

    def _write_config(self) -> None:
        self.config_path.write_text(self.render_config(), encoding="utf-8")

    def _launch(self) -> bool:
        with (
            contextlib.nullcontext(None) if self._log_to_stdout else self.log_path.open("ab")
        ) as log_file:
            process = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                # Its own session: a Ctrl-C in the demo's terminal must not reach the broker
                # before the gateway has drained; our context manager stops it in order.
                start_new_session=True,
            )
        self._process = process
        if wait_until_listening(
            self.port, timeout_s=_START_TIMEOUT_S, still_starting=lambda: process.poll() is None
        ):
            return True
        self.kill()
        return False

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
