"""The Mosquitto process: the shipped configuration with this broker's listener, paths and
identities, started and stopped as a child of ours.

``carewatch broker run`` (the production broker) runs one, and so do the demo, the tests and
the benchmarks, each in a directory and on a port of its own. Each has a plaintext listener;
given a :class:`TlsListener`, a TLS listener beside it (what devices and remote services use).
"""

from __future__ import annotations

import logging
import shutil
import signal
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from broker.auth_files import BrokerAuth, render
from broker.sync import AuthPaths, ensure_files, write_files
from carewatch.processes import (
    LOOPBACK,
    ChildProcess,
    free_port,
    is_root,
    start_listening,
    wait_until_listening,
)

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
        # The TLS listener's: a private instance writes its own (or none) after its listeners.
        "certfile",
        "keyfile",
        "cafile",
        "tls_version",
    }
)
# TLS 1.0 and 1.1 are deprecated (RFC 8996). Mosquitto 2.0 reads tls_version as the minimum.
_TLS_MIN_VERSION = "tlsv1.2"
_START_TIMEOUT_S = 10.0
# SIGTERM makes the broker write its persistence file; this is how long that may take.
_STOP_TIMEOUT_S = 10.0


def shipped_config() -> Path:
    """The broker configuration the project ships.

    It lives in the package, as ``broker/mosquitto.conf``, so that an installed package
    (a wheel, the Docker image) has it; ``deploy/mosquitto/mosquitto.conf`` is a symlink to it,
    for operators who look for it there. One copy to edit.
    """
    return Path(str(resources.files("broker") / "mosquitto.conf"))


def mosquitto_binary() -> str:
    """The path of the ``mosquitto`` program."""
    # Debian installs the broker in /usr/sbin, which is not on an ordinary user's PATH.
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise FileNotFoundError(
            "mosquitto not found on PATH or in /usr/sbin (apt-get install mosquitto)"
        )
    return found


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener: where it listens and the PEM files it serves.

    ``cafile`` is the CA that signed ``certfile``; Mosquitto needs it only to check client
    certificates (not used: clients log in with passwords), so it may be left out. All three
    are re-read on SIGHUP (:meth:`MosquittoInstance.reload`), which is how a renewed
    certificate takes effect without a restart.
    """

    port: int
    certfile: Path
    keyfile: Path
    cafile: Path | None = None
    host: str = LOOPBACK

    def config_lines(self) -> list[str]:
        """The listener as Mosquitto's configuration lines."""
        lines = [
            f"listener {self.port} {self.host}",
            f"certfile {Path(self.certfile).absolute()}",
            f"keyfile {Path(self.keyfile).absolute()}",
        ]
        if self.cafile is not None:
            lines.append(f"cafile {Path(self.cafile).absolute()}")
        lines.append(f"tls_version {_TLS_MIN_VERSION}")
        return lines


class MosquittoInstance:
    """A broker in ``base_dir``: config, persistence, identities and log live there.

    ``with MosquittoInstance(path, auth=...) as broker: ... broker.url(user, password)``. It
    listens on ``host`` (127.0.0.1 unless told otherwise), on ``port`` or a free one that it
    keeps across restarts, so clients can reconnect.

    Who may connect is in ``auth/passwd`` and ``auth/acl`` (broker/). Given ``auth``,
    the instance writes them itself (tests, benchmarks); without, they are kept by
    ``broker.sync`` from the database and :meth:`reload` applies them.

    Given ``tls``, the broker also listens with TLS there (:meth:`tls_url`).
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
        tls: TlsListener | None = None,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.config_path = self.base_dir / "mosquitto.conf"
        self.data_dir = self.base_dir / "data"
        self.auth_paths = AuthPaths(self.base_dir / "auth")
        self.log_path = self.base_dir / "mosquitto.log"
        self.config_template = config_template or shipped_config()
        self.host = host
        self.tls = tls
        self._auth = auth
        self._log_to_stdout = log_to_stdout
        self._port_chosen = port is None
        self.port: int = port if port is not None else free_port()
        self._child: ChildProcess | None = None
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
        return _url("mqtt", self.port, username, password)

    def tls_url(self, username: str | None = None, password: str | None = None) -> str:
        """``mqtts://[user:password@]127.0.0.1:tls-port``; ValueError without a TLS listener.

        The address is the IP, so the certificate must name 127.0.0.1 (as
        ``tools.local.certificates`` does by default).
        """
        if self.tls is None:
            raise ValueError("this broker has no TLS listener")
        return _url("mqtts", self.tls.port, username, password)

    def set_auth(self, auth: BrokerAuth) -> None:
        """Replace who may connect, and apply it if the broker runs."""
        self._auth = auth
        if write_files(self.auth_paths, render(auth)) and self.is_running():
            self.reload()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its password and ACL files and disconnects every client
        whose credentials no longer hold, and re-reads the TLS listener's certificate and key
        (2.0's man page says so; tests/integration/test_broker_tls.py shows it on 2.0.11):
        new connections get the new certificate, established ones stay."""
        if self._child is not None:
            self._child.send_signal(signal.SIGHUP)

    def is_running(self) -> bool:
        """Whether the broker process runs."""
        return self._child is not None and self._child.is_running()

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._child.pid if self._child is not None and self._child.is_running() else None

    def start(self) -> None:
        """Start the broker and return once it accepts connections."""
        if self.is_running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._auth is not None:
            write_files(self.auth_paths, render(self._auth))
        ensure_files(self.auth_paths)
        self.port = start_listening(
            "mosquitto",
            self._launch,
            port=self.port,
            retry_ports=self._port_chosen and not self._started_once,
            log_path=self.log_path,
        )
        self._started_once = True
        log.info("mosquitto listening on %s (pid %s)", self.url(), self.pid)
        if self.tls is not None:
            log.info("mosquitto listening with TLS on %s:%s", self.tls.host, self.tls.port)

    def stop(self) -> None:
        """SIGTERM, so that the broker writes its persistence file, then wait for it."""
        child, self._child = self._child, None
        if child is not None:
            child.stop()

    def kill(self) -> None:
        """SIGKILL: a crash. Whatever was not in the last persistence snapshot is gone."""
        child, self._child = self._child, None
        if child is not None:
            child.kill()

    def restart(self) -> None:
        """Stop and start again, on the same port."""
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
        if self.tls is not None:
            private += self.tls.config_lines()
        header = f"# Generated from {self.config_template} on every start; edits are overwritten."
        return "\n".join([header, *kept, *private]) + "\n"

    def _launch(self, port: int) -> str | None:
        """Start mosquitto on ``port``; None once it listens, '' if it did not."""
        self.port = port
        self.config_path.write_text(self.render_config(), encoding="utf-8")
        child = ChildProcess(
            "mosquitto",
            [mosquitto_binary(), "-c", str(self.config_path)],
            log_path=None if self._log_to_stdout else self.log_path,
            # Its own session: a Ctrl-C in the demo's terminal must not reach the broker
            # before the gateway has drained; our context manager stops it in order.
            own_session=True,
            stop_timeout_s=_STOP_TIMEOUT_S,
        )
        self._child = child
        if wait_until_listening(
            port, timeout_s=_START_TIMEOUT_S, still_starting=child.is_running
        ) and (
            self.tls is None
            or wait_until_listening(
                self.tls.port, timeout_s=_START_TIMEOUT_S, still_starting=child.is_running
            )
        ):
            return None
        self.kill()
        return ""


def _url(scheme: str, port: int, username: str | None, password: str | None) -> str:
    """``scheme://[user:password@]127.0.0.1:port``, the credentials percent-encoded."""
    if username is None:
        return f"{scheme}://{LOOPBACK}:{port}"
    credentials = quote(username, safe="") + (
        f":{quote(password, safe='')}" if password is not None else ""
    )
    return f"{scheme}://{credentials}@{LOOPBACK}:{port}"
