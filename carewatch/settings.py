"""Configuration: one pydantic-settings class, built in ``main()`` and passed down, never at import.

Timing knobs live here so that tests shrink them by injection instead of patching constants.
"""

from __future__ import annotations

import socket
from urllib.parse import unquote, urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MqttEndpoint:
    """The parts of ``CAREWATCH_MQTT_URL``: ``mqtt[s]://[user:password@]host:port``."""

    __slots__ = ("host", "password", "port", "tls", "username")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
        self.tls = parts.scheme == "mqtts"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (8883 if self.tls else 1883)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    def __repr__(self) -> str:
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


class Settings(BaseSettings):
    """Everything a Carewatch process can be told from its environment (``CAREWATCH_*``)."""

    model_config = SettingsConfigDict(env_prefix="CAREWATCH_", extra="ignore")

    database_url: str = "postgresql://localhost/carewatch"
    mqtt_url: str = "mqtt://localhost:1883"
    metrics_port: int = 9108

    # --- gateway -------------------------------------------------------------------------
    # The broker keeps a persistent session per client id, so the id must survive restarts:
    # a gateway that came back under another id would leave its unacknowledged messages
    # behind in the old session. Run several gateways on one host with distinct ids.
    gateway_client_id: str = Field(
        default_factory=lambda: f"carewatch-gateway-{socket.gethostname()}"
    )
    # Shared subscription group: gateways in one group split the load. Empty: a plain
    # subscription, for a single gateway (it survives a broker restart, see the README).
    gateway_share_group: str = "carewatch"
    # A batch closes when it holds this many messages ...
    batch_max_messages: int = 2000
    # ... or when its first message has waited this long (bounds the ingest delay at low rates).
    batch_max_wait_s: float = 0.05
    # Batches committing at once: while one waits for PostgreSQL the next is parsed and sent.
    pipeline_depth: int = 2
    # Each batch is split by device into this many parts, committed side by side on their own
    # connections (gateway/lanes.py); 1 stores a batch in one transaction.
    ingest_lanes: int = Field(default=2, ge=1, le=16)
    # MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may send us.
    # (pipeline_depth + 1) batches: the next batch fills while the others commit. It also
    # bounds memory when the database is slow: the broker stops sending, its queue grows.
    receive_maximum: int = 6000
    mqtt_keepalive_s: int = 30
    # How long the broker keeps our session (and queues for it) while we are away: one week.
    mqtt_session_expiry_s: int = 7 * 24 * 3600
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 30.0
    # A device row is rewritten when something changes, or when last_seen moved by at least
    # this much: far below the offline threshold (3 heartbeat intervals), and it spares the
    # database thousands of row versions per second under load.
    last_seen_resolution_s: float = 5.0
    # How often the gateway re-reads devices changed since its last look (onboarding, decommission).
    registry_refresh_s: float = 5.0
    # Events older than this are dropped (TimescaleDB retention policy, or a scheduled delete).
    retention_days: int = 730
    retention_check_s: float = 3600.0
    # Envelope timestamps further than this from the receive time are rejected as absurd.
    max_clock_skew_s: float = 7 * 24 * 3600.0
    drain_timeout_s: float = 30.0
    # How often the clock-driven alert rules run (silence, door left unlocked, escalation).
    watchdog_interval_s: float = 5.0

    # --- API -----------------------------------------------------------------------------
    # The broker address devices are told to use when they are onboarded (their credentials
    # come with it): the public name, e.g. mqtts://mqtt.kommun.se:8883. Empty: mqtt_url's
    # host and port, which suits a demo on one machine.
    device_mqtt_url: str = ""
    # Bearer tokens live this long; session cookies this long after their last use (sliding).
    token_ttl_s: float = 12 * 3600.0
    # SSE: a comment this often keeps proxies (which close idle connections after 30-60 s)
    # and the browser's EventSource from giving up on a quiet stream.
    sse_heartbeat_s: float = 15.0
    # Messages waiting for one SSE subscriber; a subscriber this far behind is disconnected
    # (it resumes with Last-Event-ID) instead of holding up everyone else.
    sse_queue_max: int = 1000
    # The EventSource reconnect delay the stream asks browsers for (the SSE ``retry:`` field).
    sse_retry_ms: int = 2000
    # How often an open stream checks that its token still holds (logout, revocation, a
    # disabled user, changed sites end it within this).
    sse_recheck_s: float = 60.0

    # --- HTTPS proxy and login throttle (issue 10) ----------------------------------------
    # Who may tell the API the client's address and scheme (X-Forwarded-For, -Proto): the
    # TLS-terminating proxy's addresses or networks (CIDR), comma-separated. From anyone else
    # those headers are ignored. Loopback only by default (the demo, a proxy on the same host).
    trusted_proxies: str = "127.0.0.1,::1"
    # Login throttle (api.auth.LoginLimits): the first delay after the free failures, doubled
    # with each further failure up to the cap; never a lockout longer than the cap.
    login_backoff_base_s: float = 1.0
    login_backoff_max_s: float = 300.0

    # --- MQTT over TLS ------------------------------------------------------------------
    # The CA certificate (PEM) that signed the broker's: with an mqtts:// URL the gateway and
    # the tools verify the broker against it alone (host name included), and onboarding hands
    # it to devices. Empty: the system's trusted CAs (a broker with a public certificate).
    mqtt_ca_file: str = ""

    # --- onboarding: the CA devices trust -----------------------------------------------------
    # The CA certificate (PEM, one certificate) devices are told to trust for device_mqtt_url's
    # broker: served at /api/v1/broker/ca.pem, its SHA-256 fingerprint given with their
    # credentials. Empty: mqtt_ca_file when devices use the gateway's broker (device_mqtt_url
    # empty too), else none (a publicly trusted broker certificate, or no TLS).
    device_mqtt_ca_file: str = ""

    # --- gateway: store retries (soak finding) ---------------------------------------------
    # A batch the database refused (read-only, a restart, a lost connection) is retried with
    # jittered backoff up to this cap, not reconnect_max_s: the batch is held unacknowledged
    # meanwhile, so a short cap only costs a few failed attempts, while the broker's 30 s cap
    # let alarms wait up to 26 s after a 10 s read-only episode had ended.
    store_retry_max_s: float = 2.0
    # The connection pools' reconnect window (psycopg_pool's reconnect_timeout). Within it a
    # pool retries with doubling delays; after it the attempt ends (a warning in the log) and
    # the next request starts a fresh one at 1 s. A long window let the delays grow with the
    # outage: measured, a pool with a 24-hour window came back 18 s after a 100 s outage
    # (minutes after an hour's), one with 10 s came back in 1.4 s. Services never give up.
    db_reconnect_window_s: float = 10.0

    # --- notifier: outgoing webhooks (issue 12) ----------------------------------------------
    # Its own metrics port: it may run on the gateway's host (9108).
    notifier_metrics_port: int = 9109
    # A receiver that has not answered in this long is a failed attempt (retried).
    webhook_timeout_s: float = 10.0
    # Attempts before a delivery is dead. Waits double from the base up to the cap: with
    # 30 s and 15 min, eight attempts span about 45-55 minutes (the schedule's ~20 % jitter).
    webhook_max_attempts: int = 8
    webhook_retry_base_s: float = 30.0
    webhook_retry_max_s: float = 900.0
    # Deliveries sent at once by one notifier.
    webhook_concurrency: int = 16
    # How often the notifier looks without being told: sources after a missed NOTIFY, and
    # retries that have come due.
    notifier_poll_s: float = 2.0

    # --- notifier: Web Push to caregivers' phones (issue 12) --------------------------------
    # The VAPID key pair's private half (RFC 8292): PEM (`vapid --gen`), the PEM's body on one
    # line (base64 DER, for an .env file), or the raw 32-byte key in base64url. The API serves
    # the public half to browsers, the notifier signs every push with it. Empty: no Web Push.
    vapid_private_key: str = ""
    # Who push services may contact about our pushes: mailto:drift@kommun.se (or an https URL).
    vapid_subject: str = ""
    # How long a push service keeps a push for a phone that is offline: an alarm older than
    # ten minutes is on the board (and escalated) by then.
    push_ttl_s: int = 600
    # Push endpoints must be https (they are, from every browser); tests run a local push
    # service on http://127.0.0.1, which this allows for loopback addresses only.
    push_allow_http_loopback: bool = False

    @property
    def mqtt(self) -> MqttEndpoint:
        """Where the gateway and the tools connect: ``mqtt_url``, parsed."""
        return MqttEndpoint(self.mqtt_url)

    @property
    def device_mqtt(self) -> MqttEndpoint:
        """Where devices connect: ``device_mqtt_url``, or ``mqtt_url`` without its credentials."""
        endpoint = MqttEndpoint(self.device_mqtt_url or self.mqtt_url)
        endpoint.username = endpoint.password = None
        return endpoint
