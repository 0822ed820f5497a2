"""The broker as an onboarding request describes it: the one dependency behind the credentials
of ``/api/v1/devices``, ``/api/v1/bridges``, ``/api/v1/broker`` and the onboarding page.

The address and CA come from :func:`carewatch.device_broker.device_broker`, read for each
request (a replaced CA file is given out without a restart); the CA's download address is
``GET /api/v1/broker/ca.pem`` (:mod:`api.routes.broker`) as the caller reached this server. A
configured CA file that is not one CA certificate answers 503, its reason in the log and not in
the answer (which would show the server's paths): credentials without the CA the broker needs
would fail on site, after their password was shown.
"""

from __future__ import annotations

import logging
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, status

from api.deps import SettingsDep
from carewatch.device_broker import DeviceBroker, device_broker
from carewatch.errors import InvalidValueError

__all__ = ["CA_DOWNLOAD_NAME", "CA_ROUTE_NAME", "DeviceBrokerDep", "get_device_broker"]

log = logging.getLogger(__name__)

# The name of the route serving the CA certificate (request.url_for), and the file name a
# browser saves it under.
CA_ROUTE_NAME: Final = "broker_ca_certificate"
CA_DOWNLOAD_NAME: Final = "carewatch-broker-ca.pem"
_UNAVAILABLE: Final = (
    "the broker's CA certificate cannot be given out: the server's CA file setting"
    " (CAREWATCH_DEVICE_MQTT_CA_FILE) is not usable; its log says why"
)


def get_device_broker(request: Request, settings: SettingsDep) -> DeviceBroker:
    """The broker devices are told about, its CA served at this server's ``ca.pem`` URL.

    A plain function: FastAPI runs it in a worker thread, so reading the file never blocks the
    event loop.
    """
    try:
        broker = device_broker(settings)
    except InvalidValueError as error:
        log.error("onboarding refused: %s", error)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, _UNAVAILABLE) from None
    if broker.ca is None:
        return broker
    return broker.served_at(str(request.url_for(CA_ROUTE_NAME)))


DeviceBrokerDep = Annotated[DeviceBroker, Depends(get_device_broker)]
