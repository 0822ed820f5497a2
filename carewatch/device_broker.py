"""What devices and bridges are told about the broker when they are onboarded: its address, and
the CA certificate they must trust to verify it.

The address is ``CAREWATCH_DEVICE_MQTT_URL`` (``Settings.device_mqtt``); the CA is the PEM file
``CAREWATCH_DEVICE_MQTT_CA_FILE``, for a broker whose certificate a private CA signed (empty:
``CAREWATCH_MQTT_CA_FILE`` when devices use the gateway's broker, else none: a publicly trusted
certificate, which devices verify with their usual trust store, or no TLS).

A CA certificate is public, so the API serves it without a login (``GET
/api/v1/broker/ca.pem``); what makes it trustworthy is its SHA-256 fingerprint, which travels
with the credentials (shown once, to a signed-in technician): a device or installer that
downloaded the certificate over any channel checks it against that fingerprint before trusting
it. The fingerprint is that of the certificate (its DER encoding), written as
``openssl x509 -noout -fingerprint -sha256`` prints it (``AB:CD:...``), so the same command
checks it by hand.

The file is read each time it is needed (a few kilobytes): a replaced CA is given out at once,
without a restart. One certificate, a CA's, or :class:`~carewatch.errors.InvalidValueError`
naming what is wrong: devices given a bundle, or the broker's own certificate by mistake, would
fail on site, after their password was already shown.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

from carewatch.errors import InvalidValueError
from carewatch.settings import Settings

__all__ = [
    "CA_FILE_SETTING",
    "GATEWAY_CA_FILE_SETTING",
    "DeviceBroker",
    "DeviceCa",
    "device_broker",
    "fingerprint_sha256",
    "parse_device_ca",
    "read_device_ca",
]

CA_FILE_SETTING: Final = "CAREWATCH_DEVICE_MQTT_CA_FILE"
GATEWAY_CA_FILE_SETTING: Final = "CAREWATCH_MQTT_CA_FILE"
# A CA certificate is 1-2 kB; anything far larger is the wrong file (a log, a key store).
MAX_CA_FILE_BYTES: Final = 64 * 1024
_PEM_CERTIFICATE: Final = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True, slots=True)
class DeviceCa:
    """The CA certificate devices trust: the file's bytes as served, and its fingerprint."""

    pem: bytes
    sha256: str


@dataclass(frozen=True, slots=True)
class DeviceBroker:
    """The broker as devices are told about it; ``ca`` None when they need no private CA.

    ``ca_url`` is where the API serves the CA certificate, as the caller reached the API (None
    outside a request: the shell knows no public address of the API).
    """

    host: str
    port: int
    tls: bool
    ca: DeviceCa | None = None
    ca_url: str | None = None

    @property
    def url(self) -> str:
        """The broker's address: ``mqtt[s]://host:port``."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def ca_sha256(self) -> str | None:
        """The CA certificate's SHA-256 fingerprint, if devices are given one."""
        return None if self.ca is None else self.ca.sha256

    def served_at(self, ca_url: str) -> DeviceBroker:
        """The same broker, its CA certificate downloadable at ``ca_url``."""
        return replace(self, ca_url=ca_url)


def fingerprint_sha256(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as OpenSSL writes it: ``AB:CD:...`` (95 characters)."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(der).digest())


def parse_device_ca(
    pem: bytes, source: str = "the CA file", setting: str = CA_FILE_SETTING
) -> DeviceCa:
    """The CA certificate in ``pem`` with its fingerprint; InvalidValueError unless it holds
    exactly one certificate, and that of a CA."""
    blocks = _PEM_CERTIFICATE.findall(pem)
    if len(blocks) != 1:
        found = "no PEM certificate" if not blocks else f"{len(blocks)} certificates"
        raise InvalidValueError(
            setting, source, f"it holds {found}; give devices one CA certificate"
        )
    text = blocks[0].decode("ascii", "replace")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        # OpenSSL parses it as a trust anchor would be parsed on a device.
        context.load_verify_locations(cadata=text)
        der = ssl.PEM_cert_to_DER_cert(text)
    except (ssl.SSLError, ValueError) as error:
        raise InvalidValueError(
            setting, source, f"not a readable X.509 certificate ({error})"
        ) from None
    if context.cert_store_stats()["x509_ca"] != 1:
        raise InvalidValueError(
            setting,
            source,
            "not a CA certificate (basicConstraints CA:TRUE): give the CA that signed the"
            " broker's certificate, not the broker's own",
        )
    return DeviceCa(pem, fingerprint_sha256(der))


def read_device_ca(path: str | Path, setting: str = CA_FILE_SETTING) -> DeviceCa:
    """The CA certificate in the file at ``path`` (the value of ``setting``); InvalidValueError
    saying what is wrong."""
    source = str(path)
    try:
        with open(path, "rb") as file:
            pem = file.read(MAX_CA_FILE_BYTES + 1)
    except OSError as error:
        raise InvalidValueError(
            setting, source, f"cannot be read ({error.strerror or error})"
        ) from None
    if len(pem) > MAX_CA_FILE_BYTES:
        raise InvalidValueError(setting, source, f"larger than {MAX_CA_FILE_BYTES // 1024} KiB")
    return parse_device_ca(pem, source, setting)


def device_broker(settings: Settings) -> DeviceBroker:
    """The broker devices are told about, with the CA certificate read now (InvalidValueError
    if ``device_mqtt_ca_file`` names a file that is not one CA certificate)."""
    endpoint = settings.device_mqtt
    # As device_mqtt falls back to the gateway's broker, so does its CA; a broker of its own
    # (device_mqtt_url) has its own CA or none.
    if settings.device_mqtt_ca_file or settings.device_mqtt_url:
        path, setting = settings.device_mqtt_ca_file, CA_FILE_SETTING
    else:
        path, setting = settings.mqtt_ca_file, GATEWAY_CA_FILE_SETTING
    ca = read_device_ca(path, setting) if path else None
    return DeviceBroker(endpoint.host, endpoint.port, endpoint.tls, ca)
