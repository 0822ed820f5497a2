"""Onboarding: ``POST``/``PATCH``/``DELETE /api/v1/devices``, credentials, CSV import; bridges.

Technicians and admins onboard, change and decommission devices (a site-limited one only at
their sites); other roles get 403 for what they can see and 404 for what they cannot; nothing of
another organisation is ever visible (404). Every change is written to the audit log. The logic
is :mod:`carewatch.onboarding`, shared with the page and the CLI.

Endpoints (answers in :mod:`api.schemas`)::

    POST   /api/v1/devices                   DeviceCreate -> 201 DeviceOnboarded (credentials once)
    PATCH  /api/v1/devices/{id}              DeviceUpdate -> 200 DeviceRegistration
    DELETE /api/v1/devices/{id}              -> 200 DeviceDecommissioned; 409 if already so
    POST   /api/v1/devices/{id}/credentials  -> 200 DeviceOnboarded (new password, old one void)
    POST   /api/v1/devices/import            CSV -> 200 ImportReportPublic
    GET    /api/v1/bridges                   -> 200 [BridgePublic]
    POST   /api/v1/bridges                   BridgeCreate -> 201 BridgeCreated (credentials once)
    DELETE /api/v1/bridges/{id}              -> 204; 409 while devices name it
    POST   /api/v1/bridges/{id}/credentials  -> 200 BridgeCreated (new password)

``POST /api/v1/devices`` statuses: 409 ``device id taken`` (in any organisation, without
saying which), 422 for a bad value (unknown kind, id format, label) and for a site or bridge
the caller does not have (``site not found``: the body's reference, not the resource, is
missing; the same answer whether it exists elsewhere or not).

``POST /api/v1/devices/import`` takes the CSV as the ``file`` field of a multipart/form-data
upload or as the raw body (``Content-Type: text/csv``). A header row names the columns ``id,
kind, site, label`` and optionally ``source, zigbee_name, zigbee_model, bridge`` (any order,
any case); comma or semicolon separated; UTF-8 with or without BOM; at most 2 MB and 10,000
rows (413 beyond), an unreadable file or header is 422. Each row is checked on its own: good
rows are created (one transaction, one INSERT), bad rows are refused with their line number
and reason, so one bad row never refuses the file. The answer (200 even if every row was
refused)::

    {"created": [{"line": 2, "device": {DeviceRegistration}, "credentials":
                  {"username", "password", "host", "port", "tls", "url"} | null}, ...],
     "refused": [{"line": 3, "id": "lock-x", "reason": "device id taken"}, ...],
     "created_count": 1, "refused_count": 1,
     "credentials_csv": "id,kind,site,label,username,password,url\\r\\n..."}
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Final, NoReturn

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status

from api import device_import
from api.auth import UserContext
from api.deps import CurrentUser, PoolDep, SettingsDep, actor_for, forbidden, require
from api.schemas import (
    BridgeCreate,
    BridgeCreated,
    BridgePublic,
    DeviceCreate,
    DeviceDecommissioned,
    DeviceOnboarded,
    DeviceRegistration,
    DeviceUpdate,
    ImportCreated,
    ImportRefused,
    ImportReportPublic,
    MqttCredentialsPublic,
)
from carewatch import onboarding
from carewatch.errors import AdminError, AlreadyExistsError, ConflictError, NotFoundError
from carewatch.onboarding import (
    DeviceRecord,
    DeviceSpec,
    ImportFileError,
    ImportReport,
    MqttCredentials,
    RefusalCode,
)
from carewatch.roles import Permission, may

Onboarder = Annotated[UserContext, Depends(require(Permission.MANAGE_FLEET))]
DeviceId = Annotated[str, Path(max_length=64)]
BridgeId = Annotated[str, Path(max_length=63)]

devices_router = APIRouter(prefix="/api/v1/devices", tags=["devices"])
bridges_router = APIRouter(prefix="/api/v1/bridges", tags=["bridges"])
router = APIRouter()

_DEVICE_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"description": "no such device, or not one the caller may see"},
    403: {"description": "the caller's role may not change devices"},
}


def _raise(error: AdminError) -> NoReturn:
    """The HTTP answer for a refusal of carewatch.onboarding."""
    if isinstance(error, NotFoundError) and error.entity in ("device", "bridge"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{error.entity} not found")
    if isinstance(error, NotFoundError):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{error.entity} not found")
    if isinstance(error, AlreadyExistsError):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"{error.entity} id taken")
    if isinstance(error, ConflictError):
        raise HTTPException(status.HTTP_409_CONFLICT, detail=error.detail)
    raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error))


def _credentials(credentials: MqttCredentials | None) -> MqttCredentialsPublic | None:
    if credentials is None:
        return None
    return MqttCredentialsPublic(**asdict(credentials), url=credentials.url)


def _bridge_credentials(credentials: MqttCredentials) -> MqttCredentialsPublic:
    return MqttCredentialsPublic(**asdict(credentials), url=credentials.url)


def _registration(record: DeviceRecord) -> DeviceRegistration:
    return DeviceRegistration.model_validate(asdict(record))


def report_public(report: ImportReport) -> ImportReportPublic:
    return ImportReportPublic(
        created=[
            ImportCreated(
                line=item.line,
                device=_registration(item.device),
                credentials=_credentials(item.credentials),
            )
            for item in report.created
        ],
        refused=[
            ImportRefused(line=refusal.line, id=refusal.id, reason=refusal.reason)
            for refusal in report.refused
        ],
        created_count=len(report.created),
        refused_count=len(report.refused),
        credentials_csv=onboarding.credentials_csv(report.created),
    )


async def _check_may_change(pool: PoolDep, user: UserContext, device_id: str) -> None:
    """403 for a device the caller sees but may not change; 404 for one they cannot see."""
    if may(user.role, Permission.MANAGE_FLEET):
        return
    async with pool.connection() as conn:
        visible = await onboarding.device_visible(conn, actor_for(user, None), device_id)
    if visible:
        raise forbidden()
    raise HTTPException(status.HTTP_404_NOT_FOUND, detail="device not found")


# --- devices -----------------------------------------------------------------------------------


@devices_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "the caller's role may not onboard devices"},
        409: {"description": "device id taken (in any organisation), or zigbee_name taken"},
        422: {"description": "a bad value, or a site or bridge the caller does not have"},
    },
)
async def create_device(
    body: DeviceCreate, request: Request, user: Onboarder, pool: PoolDep, settings: SettingsDep
) -> DeviceOnboarded:
    """Onboard one device; its MQTT credentials (username = device id) are in the answer, once.
    A zigbee2mqtt device has none: its bridge connects for it."""
    spec = DeviceSpec(**body.model_dump(), line=1)
    async with pool.connection() as conn:
        report = await onboarding.create_devices(
            conn, actor_for(user, request), [spec], settings.device_mqtt
        )
    if report.refused:
        refusal = report.refused[0]
        code = (
            status.HTTP_409_CONFLICT
            if refusal.code is RefusalCode.TAKEN
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        raise HTTPException(code, detail=refusal.reason)
    created = report.created[0]
    return DeviceOnboarded(**asdict(created.device), credentials=_credentials(created.credentials))


@devices_router.post(
    "/import",
    responses={
        403: {"description": "the caller's role may not onboard devices"},
        413: {"description": "more than 2 MB or 10,000 rows"},
        422: {"description": "not a readable CSV file with a header row"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
                "text/csv": {"schema": {"type": "string"}},
            },
        }
    },
)
async def import_devices(
    request: Request, user: Onboarder, pool: PoolDep, settings: SettingsDep
) -> ImportReportPublic:
    """Onboard the devices of a CSV file row by row: good rows are created, bad rows refused
    with line and reason (see the module's description of the format and the answer)."""
    try:
        report = await device_import.import_devices(request, pool, user, settings.device_mqtt)
    except ImportFileError as error:
        code = (
            status.HTTP_413_CONTENT_TOO_LARGE
            if error.too_large
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        raise HTTPException(code, detail=error.reason) from None
    return report_public(report)


@devices_router.patch("/{device_id}", responses=_DEVICE_NOT_FOUND)
async def update_device(
    device_id: DeviceId, body: DeviceUpdate, request: Request, user: CurrentUser, pool: PoolDep
) -> DeviceRegistration:
    """Change the label, or move the device to another site of the organisation (422 ``site not
    found`` for any other site); 409 for a decommissioned device."""
    await _check_may_change(pool, user, device_id)
    try:
        async with pool.connection() as conn:
            record = await onboarding.update_device(
                conn, actor_for(user, request), device_id, label=body.label, site=body.site
            )
    except AdminError as error:
        _raise(error)
    return _registration(record)


@devices_router.delete(
    "/{device_id}",
    responses={**_DEVICE_NOT_FOUND, 409: {"description": "already decommissioned"}},
)
async def decommission_device(
    device_id: DeviceId, request: Request, user: CurrentUser, pool: PoolDep
) -> DeviceDecommissioned:
    """Decommission: the broker refuses the device at once (its password hash is deleted), its
    events and alerts stay, its unresolved alerts are resolved (note ``device decommissioned``).
    Deleting it again answers 409 ``already decommissioned``."""
    await _check_may_change(pool, user, device_id)
    try:
        async with pool.connection() as conn:
            result = await onboarding.decommission_device(conn, actor_for(user, request), device_id)
    except AdminError as error:
        _raise(error)
    return DeviceDecommissioned(
        **asdict(result.device), resolved_alert_ids=result.resolved_alert_ids
    )


@devices_router.post(
    "/{device_id}/credentials",
    responses={
        **_DEVICE_NOT_FOUND,
        409: {"description": "decommissioned, or a zigbee2mqtt device (its bridge connects)"},
    },
)
async def rotate_device_credentials(
    device_id: DeviceId, request: Request, user: CurrentUser, pool: PoolDep, settings: SettingsDep
) -> DeviceOnboarded:
    """A new MQTT password for the device, shown once; the old one stops working at once.
    Also issues the first one of a device onboarded before credentials existed."""
    await _check_may_change(pool, user, device_id)
    try:
        async with pool.connection() as conn:
            record, credentials = await onboarding.rotate_device_credentials(
                conn, actor_for(user, request), device_id, settings.device_mqtt
            )
    except AdminError as error:
        _raise(error)
    return DeviceOnboarded(**asdict(record), credentials=_credentials(credentials))


# --- bridges -----------------------------------------------------------------------------------
# A bridge belongs to the organisation, not to a site: any technician or admin of it manages its
# bridges (a site-limited technician included, as they install the Zigbee coordinators).


@bridges_router.get("", responses={403: {"description": "not a technician or admin"}})
async def list_bridges(request: Request, user: Onboarder, pool: PoolDep) -> list[BridgePublic]:
    """The zigbee2mqtt bridges of the caller's organisation, with their active devices."""
    async with pool.connection() as conn:
        bridges = await onboarding.list_bridges(conn, actor_for(user, request))
    return [BridgePublic.model_validate(asdict(bridge)) for bridge in bridges]


@bridges_router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "not a technician or admin"},
        409: {"description": "bridge id taken"},
    },
)
async def create_bridge(
    body: BridgeCreate, request: Request, user: Onboarder, pool: PoolDep, settings: SettingsDep
) -> BridgeCreated:
    """A zigbee2mqtt bridge account ``zigbee2mqtt.<id>`` with its credentials, shown once
    (zigbee2mqtt's ``mqtt.user``/``mqtt.password``, ``base_topic: zigbee2mqtt``)."""
    try:
        async with pool.connection() as conn:
            bridge, credentials = await onboarding.create_bridge(
                conn, actor_for(user, request), body.id, body.label, settings.device_mqtt
            )
    except AdminError as error:
        _raise(error)
    return BridgeCreated(**asdict(bridge), credentials=_bridge_credentials(credentials))


@bridges_router.delete(
    "/{bridge_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "no such bridge"}, 409: {"description": "devices use it"}},
)
async def delete_bridge(
    bridge_id: BridgeId, request: Request, user: Onboarder, pool: PoolDep
) -> Response:
    """Delete the bridge account (disconnected at once); 409 while any device names it."""
    try:
        async with pool.connection() as conn:
            await onboarding.delete_bridge(conn, actor_for(user, request), bridge_id)
    except AdminError as error:
        _raise(error)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@bridges_router.post("/{bridge_id}/credentials", responses={404: {"description": "no such bridge"}})
async def rotate_bridge_credentials(
    bridge_id: BridgeId, request: Request, user: Onboarder, pool: PoolDep, settings: SettingsDep
) -> BridgeCreated:
    """A new password for the bridge, shown once; the old one stops working at once."""
    try:
        async with pool.connection() as conn:
            bridge, credentials = await onboarding.rotate_bridge_credentials(
                conn, actor_for(user, request), bridge_id, settings.device_mqtt
            )
    except AdminError as error:
        _raise(error)
    return BridgeCreated(**asdict(bridge), credentials=_bridge_credentials(credentials))


router.include_router(devices_router)
router.include_router(bridges_router)
