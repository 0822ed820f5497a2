"""How the benchmark's clients reach the broker, and as whom.

The brokers of a run know two identities (``tools.local.identities``): the simulator,
which may only publish device topics, and the gateway, which may only subscribe to them. Every
client of a run connects as one of them: publishers and probes as the simulator; the gateway,
the naive bridge and the reference subscribers as the gateway.

A child process gets its broker as a URL with the credentials in it, in ``CAREWATCH_MQTT_URL``
(the variable every Carewatch process reads its broker from), not on its command line: anyone
on the machine can read a process's argv (``ps``), only its own user its environment
(``/proc/<pid>/environ``). Debian's ``mosquitto_pub`` and ``mosquitto_sub`` take a password on
argv or from an options file, so they get the file (see :func:`mosquitto_client_env`).

Over TLS (an ``mqtts://`` URL) every client verifies the broker against the CA file in
``CAREWATCH_MQTT_CA_FILE`` (a child inherits it with the environment), as the gateway does.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
from pathlib import Path
from typing import Any, Final

import mqtt5

from carewatch.settings import MqttEndpoint
from gateway.transport import client_ssl_context

MQTT_URL_VARIABLE: Final = "CAREWATCH_MQTT_URL"
# The CA that signed the broker's certificate (Settings.mqtt_ca_file).
CA_FILE_VARIABLE: Final = "CAREWATCH_MQTT_CA_FILE"
# Where Debian keeps the system's CAs, for mosquitto_pub/sub over TLS without a CA file.
_SYSTEM_CA_PATH: Final = "/etc/ssl/certs"
# Where mosquitto_pub and mosquitto_sub look for a file of default options named after
# themselves ($XDG_CONFIG_HOME/mosquitto_sub), before the options of their command line.
_XDG_CONFIG_HOME: Final = "XDG_CONFIG_HOME"


def child_env(mqtt_url: str) -> dict[str, str]:
    """The parent's environment with the broker (credentials included) a child connects to."""
    return {**os.environ, MQTT_URL_VARIABLE: mqtt_url}


def endpoint_from_env(parser: argparse.ArgumentParser) -> MqttEndpoint:
    """In a child: the broker its parent gave it (:func:`child_env`), or a usage error."""
    url = os.environ.get(MQTT_URL_VARIABLE, "")
    if not url:
        parser.error(
            f"{MQTT_URL_VARIABLE} must hold the broker URL (mqtt://user:password@host:port)"
        )
    try:
        return MqttEndpoint(url)
    except ValueError as error:
        parser.error(f"{MQTT_URL_VARIABLE}: {error}")


def connect_packet(endpoint: MqttEndpoint, client_id: str, **options: Any) -> bytes:
    """An encoded MQTT 5 CONNECT with the endpoint's username and password.

    ``options`` are ``mqtt5.ConnectPacket``'s (``clean_start``, ``receive_max``, ...).
    """
    password = endpoint.password.encode() if endpoint.password is not None else None
    packet = mqtt5.ConnectPacket(
        client_id, username=endpoint.username, password=password, **options
    )
    return packet.write()


def mosquitto_client_env(mqtt_url: str, directory: Path) -> dict[str, str]:
    """The environment for ``mosquitto_pub``/``mosquitto_sub`` connecting as ``mqtt_url``'s user.

    Both read default options from ``$XDG_CONFIG_HOME/<their name>``, one option per line; the
    files written here hold ``-u`` and ``-P``, so the password stays off their argv. The
    directory is private to us (0700, files 0600) and goes with the run's directory. Pointing
    ``XDG_CONFIG_HOME`` at it also keeps options of the user's own (``~/.config/mosquitto_sub``)
    out of the measurement.
    """
    endpoint = MqttEndpoint(mqtt_url)
    options = ""
    if endpoint.username is not None:
        options += f"-u {endpoint.username}\n"
    if endpoint.password is not None:
        options += f"-P {endpoint.password}\n"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for program in ("mosquitto_pub", "mosquitto_sub"):
        fd = os.open(directory / program, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as options_file:
            options_file.write(options)
    return {**os.environ, _XDG_CONFIG_HOME: str(directory)}


def ca_file_from_env() -> str:
    """The CA file clients verify the broker with (``CAREWATCH_MQTT_CA_FILE``), or ''."""
    return os.environ.get(CA_FILE_VARIABLE, "")


def ssl_context(endpoint: MqttEndpoint) -> ssl.SSLContext | None:
    """For an ``mqtts://`` endpoint, the verifying context (``ca_file_from_env``); else None."""
    return client_ssl_context(ca_file_from_env()) if endpoint.tls else None


def mosquitto_tls_argv(endpoint: MqttEndpoint, ca_file: str | None = None) -> list[str]:
    """``mosquitto_pub``/``mosquitto_sub`` options for TLS to ``endpoint``, none for plaintext.

    ``--cafile`` (default: ``ca_file_from_env``) or the system's CAs; both clients check the
    broker's host name against its certificate unless told ``--insecure``, which we never do.
    """
    if not endpoint.tls:
        return []
    ca_file = ca_file if ca_file is not None else ca_file_from_env()
    return ["--cafile", ca_file] if ca_file else ["--capath", _SYSTEM_CA_PATH]


def connect_socket(endpoint: MqttEndpoint, timeout_s: float | None = None) -> socket.socket:
    """A connected socket to the broker: TCP, or TLS with the broker verified."""
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s)
    context = ssl_context(endpoint)
    if context is None:
        return sock
    try:
        return context.wrap_socket(sock, server_hostname=endpoint.host)
    except BaseException:
        sock.close()
        raise


def tls_pending(sock: socket.socket) -> bool:
    """Whether a TLS socket holds decrypted bytes not yet read."""
    return isinstance(sock, ssl.SSLSocket) and sock.pending() > 0


def read_packet(sock: socket.socket) -> mqtt5.Packet:
    """The next whole packet from a blocking socket; ConnectionError when the broker is gone."""
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buffer += chunk
        try:
            packet, _ = mqtt5.read(memoryview(buffer))
        except IndexError:  # "Not enough bytes": wait for the rest
            continue
        return packet
