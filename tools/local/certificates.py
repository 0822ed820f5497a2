"""A private certificate authority for the broker's TLS listener in the demo and the tests.

Nothing here reaches the internet: ``trustme`` (on ``cryptography``) makes a CA and signs a
server certificate for the names clients dial. What it writes into its directory:

``ca.pem``
    The CA's certificate: what clients trust (``CAREWATCH_MQTT_CA_FILE``, Mosquitto's
    ``cafile``, what onboarded devices are given).
``ca.key``
    The CA's private key (0600), kept only to issue the next server certificate; a CA that
    stays the same across runs keeps the devices onboarded earlier trusting the broker.
``server.pem``
    The broker's certificate (Mosquitto's ``certfile``), for the names given (by default
    ``localhost`` and ``127.0.0.1``).
``server.key``
    Its private key (0600; Mosquitto's ``keyfile``).

:func:`issue_server_certificate` writes a fresh server certificate and key into the same
paths, each file replaced atomically, so that a broker reloading them (SIGHUP) never reads
half a file: this is how the renewal test and a demo restart renew it.

A production broker gets its certificate from the operator's own PKI or a public CA; for a
trial installation ``python -m tools.local.certificates DIR --hostname mqtt.example.org``
makes the same four files.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import trustme

# The names clients of a private broker dial: the tests and the demo connect to 127.0.0.1.
LOCAL_HOSTNAMES: Final = ("localhost", "127.0.0.1")
# Short enough that renewal is a routine (as with public CAs), long enough for any demo.
SERVER_CERTIFICATE_DAYS: Final = 90
_ORGANIZATION: Final = "Carewatch private CA"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The four files of a private CA and the broker certificate it issued, in ``directory``."""

    directory: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients trust."""
        return self.directory / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        """The CA's private key, used only to issue server certificates."""
        return self.directory / "ca.key"

    @property
    def certfile(self) -> Path:
        """The broker's certificate."""
        return self.directory / "server.pem"

    @property
    def keyfile(self) -> Path:
        """The broker's private key."""
        return self.directory / "server.key"


def ensure_authority(directory: Path) -> TlsFiles:
    """The CA in ``directory``: the one already there, or a new one written there."""
    files = TlsFiles(Path(directory).absolute())
    if files.ca_file.exists() and files.ca_key_file.exists():
        return files
    files.directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=_ORGANIZATION)
    # The key first: a ca.pem without its key would be taken for a complete CA next time.
    _write_atomically(files.ca_key_file, ca.private_key_pem.bytes(), private=True)
    _write_atomically(files.ca_file, ca.cert_pem.bytes(), private=False)
    return files


def issue_server_certificate(
    files: TlsFiles,
    hostnames: Sequence[str] = LOCAL_HOSTNAMES,
    *,
    valid_days: int = SERVER_CERTIFICATE_DAYS,
) -> bytes:
    """Sign a new server certificate for ``hostnames`` and replace ``server.pem`` and
    ``server.key`` with it; the certificate, PEM.

    Host names and IP addresses alike (``trustme`` puts each in the right kind of
    subjectAltName). The key is written before the certificate; Mosquitto reads both only on
    start and on SIGHUP, which the caller sends once this returns.
    """
    if not hostnames:
        raise ValueError("a server certificate needs at least one host name")
    ca = trustme.CA.from_pem(files.ca_file.read_bytes(), files.ca_key_file.read_bytes())
    leaf = ca.issue_cert(
        *hostnames,
        organization_name=_ORGANIZATION,
        not_after=datetime.now(UTC) + timedelta(days=valid_days),
    )
    certificate = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    _write_atomically(files.keyfile, leaf.private_key_pem.bytes(), private=True)
    _write_atomically(files.certfile, certificate, private=False)
    return certificate


def local_tls(directory: Path, hostnames: Sequence[str] = LOCAL_HOSTNAMES) -> TlsFiles:
    """A CA in ``directory`` (kept if there) and a fresh server certificate from it."""
    files = ensure_authority(directory)
    issue_server_certificate(files, hostnames)
    return files


def _write_atomically(path: Path, content: bytes, *, private: bool) -> None:
    """Replace ``path`` by a complete new file (0600 if ``private``, else 0644)."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tools.local.certificates DIR [--hostname NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.local.certificates",
        description="A private CA (kept if DIR has one) and a new broker certificate from it: "
        "DIR/ca.pem, ca.key, server.pem, server.key.",
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--hostname",
        action="append",
        help="a name or IP address clients dial (repeat; default: localhost and 127.0.0.1)",
    )
    args = parser.parse_args(argv)
    files = local_tls(args.directory, args.hostname or LOCAL_HOSTNAMES)
    print(f"CA certificate {files.ca_file}; server certificate {files.certfile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
