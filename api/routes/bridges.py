"""``/api/v1/bridges``: the zigbee2mqtt bridge accounts of the caller's organisation.

A bridge belongs to the organisation, not to a site: any technician or admin of it manages its
bridges (a site-limited technician included, as they install the Zigbee coordinators); other
roles get 403. The logic is :mod:`carewatch.fleet`, shared with the CLI.

Endpoints (answers in :mod:`api.schemas`)::

    GET    /api/v1/bridges                   -> 200 [BridgePublic]
    POST   /api/v1/bridges                   BridgeCreate -> 201 BridgeCreated (credentials once)
    PATCH  /api/v1/bridges/{id}              BridgeUpdate -> 200 BridgePublic (+#13)
    DELETE /api/v1/bridges/{id}              -> 204; 409 while devices name it
    POST   /api/v1/bridges/{id}/credentials  -> 200 BridgeCreated (new password)
    GET    /api/v1/bridges/{id}/announced    -> 200 BridgeAnnouncedPublic (+#13)

A bridge id in the path has the shape :data:`devices.ids.BRIDGE_ID_PATTERN` or the answer is 422.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, Response, status

from api import bridge_queries
from api.deps import FleetManager, PoolDep, actor_for, fleet_refusals
from api.device_broker import DeviceBrokerDep
from api.schemas import (
    BridgeAnnouncedPublic,
    BridgeCreate,
    BridgeCreated,
    BridgePublic,
    BridgeUpdate,
)
from carewatch import fleet
from devices.ids import BRIDGE_ID_PATTERN

router = APIRouter(prefix="/api/v1/bridges", tags=["bridges"])

BridgeId = Annotated[str, Path(pattern=BRIDGE_ID_PATTERN)]


@router.get("", responses={403: {"description": "not a technician or admin"}})
async def list_bridges(request: Request, user: FleetManager, pool: PoolDep) -> list[BridgePublic]:
    """The zigbee2mqtt bridges of the caller's organisation, with their active devices."""
    async with pool.connection() as conn:
        bridges = await fleet.list_bridges(conn, actor_for(user, request))
    return [BridgePublic.from_bridge(bridge) for bridge in bridges]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "not a technician or admin"},
        409: {
            "description": "bridge id taken, or base topic taken, overlapping another or left"
            " by another organisation's bridge and not yet cleared"
        },
    },
)
async def create_bridge(
    body: BridgeCreate, request: Request, user: FleetManager, pool: PoolDep, broker: DeviceBrokerDep
) -> BridgeCreated:
    """A zigbee2mqtt bridge account ``zigbee2mqtt.<id>`` with its credentials, shown once
    (zigbee2mqtt's ``mqtt.user``/``mqtt.password``; ``mqtt.base_topic`` as given, default
    ``zigbee2mqtt``)."""
    with fleet_refusals():
        async with pool.connection() as conn:
            bridge, credentials = await fleet.create_bridge(
                conn, actor_for(user, request), body.id, body.label, broker,
                base_topic=body.base_topic,
            )  # fmt: skip
    return BridgeCreated.issued(bridge, credentials)


@router.patch(
    "/{bridge_id}",
    responses={
        403: {"description": "not a technician or admin"},
        404: {"description": "no such bridge"},
        409: {
            "description": "base topic taken, overlapping another or left by another"
            " organisation's bridge and not yet cleared"
        },
    },
)
async def update_bridge(
    bridge_id: BridgeId, body: BridgeUpdate, request: Request, user: FleetManager, pool: PoolDep
) -> BridgePublic:
    """Move the bridge to a new base topic (its zigbee2mqtt ``mqtt.base_topic`` changed),
    checked as at creation; the broker lets it publish there, and the gateways subscribe there,
    within moments. What it announced under the old base is forgotten."""
    with fleet_refusals():
        async with pool.connection() as conn:
            bridge = await fleet.change_bridge_base_topic(
                conn, actor_for(user, request), bridge_id, body.base_topic
            )
    return BridgePublic.from_bridge(bridge)


@router.delete(
    "/{bridge_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such bridge"}, 409: {"description": "devices use it"}},
)
async def delete_bridge(
    bridge_id: BridgeId, request: Request, user: FleetManager, pool: PoolDep
) -> Response:
    """Delete the bridge account (disconnected at once); 409 while any device names it."""
    with fleet_refusals():
        async with pool.connection() as conn:
            await fleet.delete_bridge(conn, actor_for(user, request), bridge_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{bridge_id}/credentials", responses={404: {"description": "no such bridge"}})
async def rotate_bridge_credentials(
    bridge_id: BridgeId,
    request: Request,
    user: FleetManager,
    pool: PoolDep,
    broker: DeviceBrokerDep,
) -> BridgeCreated:
    """A new password for the bridge, shown once; the old one stops working at once."""
    with fleet_refusals():
        async with pool.connection() as conn:
            bridge, credentials = await fleet.rotate_bridge_credentials(
                conn, actor_for(user, request), bridge_id, broker
            )
    return BridgeCreated.issued(bridge, credentials)


@router.get("/{bridge_id}/announced", responses={404: {"description": "no such bridge"}})
async def announced_devices(
    bridge_id: BridgeId, user: FleetManager, pool: PoolDep
) -> BridgeAnnouncedPublic:
    """The devices the bridge last announced on ``<base>/bridge/devices`` (+#13), each with
    whether Carewatch maps its model, the device onboarded under its name, and whether
    onboarding offers it. Onboarding itself is ``POST /api/v1/devices``: a person's decision."""
    with fleet_refusals():
        async with pool.connection() as conn:
            bridge = await bridge_queries.announced(conn, user.org_id, bridge_id)
    return BridgeAnnouncedPublic.from_bridge(bridge)
