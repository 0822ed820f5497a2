"""``/api/v1/broker``: the broker as devices are told about it, and the CA certificate they trust.

The CA certificate is public (it is in every TLS handshake with the broker), so it is served
without a login, at a stable address installers and devices can fetch it from; its SHA-256
fingerprint comes with every set of credentials (:mod:`carewatch.device_broker`), which is how
a device knows the certificate it fetched is the right one.

Endpoints::

    GET /api/v1/broker         -> 200 BrokerPublic (technicians and admins)
    GET /api/v1/broker/ca.pem  -> 200 application/x-pem-file (anyone); 404 when devices need no
                                  CA of Carewatch's own (no TLS, or a publicly trusted broker)

The onboarding routes and page learn the same through :data:`api.device_broker.DeviceBrokerDep`;
a configured CA file that is not one CA certificate answers 503 here too.
"""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, HTTPException, Response, status

from api.deps import FleetManager
from api.device_broker import CA_DOWNLOAD_NAME, CA_ROUTE_NAME, DeviceBrokerDep
from api.schemas import BrokerPublic

__all__ = ["PEM_MEDIA_TYPE", "router"]

router = APIRouter(prefix="/api/v1/broker", tags=["broker"])

PEM_MEDIA_TYPE: Final = "application/x-pem-file"
_NO_TLS: Final = "devices connect without TLS (mqtt://): there is no CA certificate to trust"
_PUBLIC_CA: Final = (
    "the broker's certificate is publicly trusted: devices verify it with their own trusted"
    " CA certificates; there is no Carewatch CA"
)


@router.get("", responses={403: {"description": "not a technician or admin"}})
async def describe_broker(user: FleetManager, broker: DeviceBrokerDep) -> BrokerPublic:
    """Where onboarded devices connect, and the CA certificate they must trust for it."""
    return BrokerPublic.from_broker(broker)


@router.get(
    "/ca.pem",
    name=CA_ROUTE_NAME,
    response_class=Response,
    responses={
        200: {
            "content": {PEM_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "description": "the CA certificate devices trust for the broker, PEM",
        },
        404: {"description": "devices need no CA of Carewatch's own"},
        503: {"description": "the configured CA file is not usable"},
    },
)
async def ca_certificate(broker: DeviceBrokerDep) -> Response:
    """The CA certificate that signed the broker's, exactly as configured; public, no login.

    Check it against the ``ca_sha256`` given with the credentials before trusting it.
    """
    if broker.ca is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _PUBLIC_CA if broker.tls else _NO_TLS)
    return Response(
        broker.ca.pem,
        media_type=PEM_MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{CA_DOWNLOAD_NAME}"',
            # A replaced CA must reach the next device: caches revalidate every time.
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
        },
    )
