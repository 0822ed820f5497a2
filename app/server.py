"""Runs the API under uvicorn (``carewatch api``), behind the TLS proxy in production.

uvicorn takes the client's address and scheme from X-Forwarded-For and X-Forwarded-Proto only
on connections from ``Settings.trusted_proxies`` (deploy/caddy/Caddyfile is that proxy); the
audit log, the login throttle and the session cookie's ``Secure`` depend on it.
"""

from __future__ import annotations

import ipaddress

import uvicorn

from app.web import create_app
from carewatch.settings import Settings


def trusted_proxies(value: str) -> list[str]:
    """``CAREWATCH_TRUSTED_PROXIES`` as uvicorn's ``forwarded_allow_ips``, each entry checked.

    Addresses and networks (CIDR) only; empty trusts no one. Anything else is refused at start:
    uvicorn would take a mistyped entry as a literal that never matches (the proxy silently
    untrusted), and ``*`` as trust in everyone (any client could name its own address to the
    login throttle).
    """
    checked: list[str] = []
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        try:
            # A network with host bits set (10.0.0.7/24) is normalised: uvicorn wants 10.0.0.0/24.
            parsed = (
                ipaddress.ip_network(entry, strict=False)
                if "/" in entry
                else ipaddress.ip_address(entry)
            )
        except ValueError:
            raise ValueError(
                f"CAREWATCH_TRUSTED_PROXIES: {entry!r} is not an IP address or network; "
                "name the TLS proxy's address (or its network, e.g. 172.30.80.0/24)"
            ) from None
        checked.append(str(parsed))
    return checked


def run(settings: Settings, *, host: str, port: int) -> int:
    """Serve the API and the pages until SIGTERM or SIGINT; returns the exit status."""
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=True,
        forwarded_allow_ips=trusted_proxies(settings.trusted_proxies),
        # Open SSE streams never end by themselves; on shutdown they are cut after this long
        # (browsers reconnect with Last-Event-ID to another process or the restarted one).
        timeout_graceful_shutdown=5,
    )
    return 0
