"""``/api/v1/devices``: the list with filters, the fleet summary, one device and its events;
onboarding, changes, credentials, CSV import and decommissioning.

Reading: every role reads the devices it can see (its organisation, its sites if it has a
list): the contract gives caregivers the devices of their sites and technicians fleet health; a
manager's usage reports name the same devices, and every alert already shows its device's id,
label, kind and site to every role, so reading them adds no exposure. What the caller cannot
see answers 404, as if it did not exist.

Writing: technicians and admins onboard, change and decommission devices (a site-limited one
only at their sites); other roles get 403 for what they can see and 404 for what they cannot;
nothing of another organisation is ever visible (404). Every change is written to the audit log.
The logic is :mod:`carewatch.fleet`, shared with the page and the CLI.

Endpoints (answers in :mod:`api.schemas`)::

    GET    /api/v1/devices                   -> 200 DevicePage
    GET    /api/v1/devices/summary           -> 200 FleetSummary
    GET    /api/v1/devices/{id}              -> 200 DevicePublic
    GET    /api/v1/devices/{id}/events       -> 200 [DeviceEventPublic]
    POST   /api/v1/devices                   DeviceCreate -> 201 DeviceOnboarded (credentials once)
    PATCH  /api/v1/devices/{id}              DeviceUpdate -> 200 DeviceRegistration
    DELETE /api/v1/devices/{id}              -> 200 DeviceDecommissioned; 409 if already so
    POST   /api/v1/devices/{id}/credentials  -> 200 DeviceOnboarded (new password, old one void)
    POST   /api/v1/devices/import            CSV -> 200 ImportReportPublic
    GET    /api/v1/devices/{id}/maintenance  -> 200 [MaintenancePublic]
    POST   /api/v1/devices/{id}/maintenance  MaintenanceCreate -> 201 MaintenancePublic
    POST   /api/v1/devices/{id}/maintenance/{maintenance_id}/end -> 200 MaintenancePublic

A maintenance window (+#11) marks a device "in repair" for a while: technicians and admins
record and end them (409 for a decommissioned device, a window overlapping another, or ending
one already over); every role that sees the device reads them.

A device id in the path has the contract's shape (:data:`devices.ids.DEVICE_ID_PATTERN`) or the
answer is 422, whatever the method.

``POST /api/v1/devices`` statuses: 409 ``device id taken`` (in any organisation, without
saying which), 422 for a bad value (unknown kind, id format, label) and for a site or bridge
the caller does not have (``site not found``: the body's reference, not the resource, is
missing; the same answer whether it exists elsewhere or not), or a ``residence_id`` that is
not one of the device's site (``residence_id not found at the device's site``).

``POST /api/v1/devices/import`` takes the CSV as the ``file`` field of a multipart/form-data
upload or as the raw body (``Content-Type: text/csv``). A header row names the columns ``id,
kind, site, label`` and optionally ``source, zigbee_name, zigbee_model, bridge, residence``
(the label of a residence at the row's site, such as ``Lgh 12``; an unknown one refuses the
row) in any order and case; comma or semicolon separated; UTF-8 with or without BOM; at most
2 MB and 10,000 rows (413 beyond), an unreadable file or header is 422. Each row is checked on
its own: good rows are created (one transaction, one INSERT), bad rows are refused with their
line number and reason, so one bad row never refuses the file. The answer (200 even if every row was
refused)::

    {"created": [{"line": 2, "device": {DeviceRegistration}, "credentials":
                  {"username", "password", "host", "port", "tls", "url"} | null}, ...],
     "refused": [{"line": 3, "id": "lock-x", "reason": "device id taken"}, ...],
     "created_count": 1, "refused_count": 1,
     "credentials_csv": "id,kind,site,label,username,password,url\\r\\n..."}
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, HTTPException, Path, Query, Request, status

from api import device_import, device_queries
from api.auth import UserContext
from api.deps import (
    CurrentUser,
    FleetManager,
    PoolDep,
    actor_for,
    fleet_refusals,
    forbidden,
)
from api.device_broker import DeviceBrokerDep
from api.device_queries import MAX_EVENTS, MAX_PAGE, DeviceFilter
from api.schemas import (
    DeviceCreate,
    DeviceDecommissioned,
    DeviceEventPublic,
    DeviceOnboarded,
    DevicePage,
    DevicePublic,
    DeviceRegistration,
    DeviceSort,
    DeviceStatusFilter,
    DeviceUpdate,
    FleetSummary,
    ImportReportPublic,
    MaintenanceCreate,
    MaintenancePublic,
    QueryAwareTime,
)
from carewatch import fleet
from carewatch.errors import NotFoundError
from carewatch.roles import Permission, may
from devices.device_specs import DeviceSpec, ImportFileError, RefusalCode
from devices.ids import DEVICE_ID_PATTERN

router = APIRouter(prefix="/api/v1/devices", tags=["devices"])

DeviceId = Annotated[str, Path(pattern=DEVICE_ID_PATTERN)]
MaintenanceId = Annotated[int, Path(ge=1, le=2**63 - 1)]
SiteQuery = Annotated[str | None, Query(max_length=64)]
KindQuery = Annotated[str | None, Query(max_length=64)]
_NOT_FOUND: Final[dict[int | str, dict[str, Any]]] = {
    404: {"description": "no such device, or not one the caller may see"}
}
_MAY_NOT_CHANGE: Final[dict[int | str, dict[str, Any]]] = {
    **_NOT_FOUND,
    403: {"description": "the caller's role may not change devices"},
}


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="device not found")


async def _check_may_change(pool: PoolDep, user: UserContext, device_id: str) -> None:
    """403 for a device the caller sees but may not change; 404 for one they cannot see."""
    if may(user.role, Permission.MANAGE_FLEET):
        return
    async with pool.connection() as conn:
        visible = await fleet.device_visible(conn, actor_for(user, None), device_id)
    if visible:
        raise forbidden()
    raise _not_found()


# --- reading: /summary is declared before /{device_id}, which would otherwise take it for an id


@router.get("")
async def list_devices(
    user: CurrentUser,
    pool: PoolDep,
    site: SiteQuery = None,
    kind: KindQuery = None,
    status: DeviceStatusFilter = "active",
    battery_below: Annotated[int | None, Query(ge=1, le=101)] = None,
    sort: DeviceSort = "id",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    trend: bool = True,
) -> DevicePage:
    """The caller's devices, a page at a time (``limit`` up to 500, then ``next_offset``).

    ``status``: ``active`` (default), ``online``, ``offline`` (seen before, silent now),
    ``never_seen`` (no message since onboarding), ``decommissioned`` or ``all``.
    ``battery_below``: only devices whose last battery is under this percentage.
    ``trend=false`` leaves out the week's battery trend (cheaper for bulk exports)."""
    return await device_queries.list_devices(
        pool,
        user,
        DeviceFilter(site_id=site, kind=kind, status=status, battery_below=battery_below),
        sort=sort,
        descending=order == "desc",
        limit=limit,
        offset=offset,
        trend=trend,
    )


@router.get("/summary")
async def fleet_summary(
    user: CurrentUser, pool: PoolDep, site: SiteQuery = None, kind: KindQuery = None
) -> FleetSummary:
    """Fleet health in numbers: active devices, online, offline, battery under 20 %, never seen
    since onboarding, in all and by kind; decommissioned ones counted apart."""
    return await device_queries.fleet_summary(pool, user, site_id=site, kind=kind)


@router.get("/{device_id}", responses=_NOT_FOUND)
async def get_device(device_id: DeviceId, user: CurrentUser, pool: PoolDep) -> DevicePublic:
    """One device with its health and the week's battery trend."""
    device = await device_queries.get_device(pool, user, device_id)
    if device is None:
        raise _not_found()
    return device


@router.get("/{device_id}/events", responses=_NOT_FOUND)
async def list_device_events(
    device_id: DeviceId,
    user: CurrentUser,
    pool: PoolDep,
    since: QueryAwareTime | None = None,
    until: QueryAwareTime | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS)] = 100,
) -> list[DeviceEventPublic]:
    """The device's events with ``since`` <= time < ``until`` (device time, RFC 3339 with an
    offset), newest first, at most ``limit`` (up to 1000). For the next page ask again with
    ``until`` = the oldest time received."""
    if since is not None and until is not None and since >= until:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail="since must be < until")
    events = await device_queries.device_events(
        pool, user, device_id, since=since, until=until, limit=limit
    )
    if events is None:
        raise _not_found()
    return events


# --- writing: /import is declared before the /{device_id} routes, like /summary -----------------


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        403: {"description": "the caller's role may not onboard devices"},
        409: {"description": "device id taken (in any organisation), or zigbee_name taken"},
        422: {
            "description": "a bad value, or a site, bridge or residence the caller does not have"
        },
    },
)
async def create_device(
    body: DeviceCreate, request: Request, user: FleetManager, pool: PoolDep, broker: DeviceBrokerDep
) -> DeviceOnboarded:
    """Onboard one device; its MQTT credentials (username = device id) are in the answer, once.
    A zigbee2mqtt device has none: its bridge connects for it."""
    spec = DeviceSpec(**body.model_dump(), line=1)
    async with pool.connection() as conn:
        report = await fleet.create_devices(conn, actor_for(user, request), [spec], broker)
    if report.refused:
        refusal = report.refused[0]
        code = (
            status.HTTP_409_CONFLICT
            if refusal.code is RefusalCode.TAKEN
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        raise HTTPException(code, detail=refusal.reason)
    created = report.created[0]
    return DeviceOnboarded.issued(created.device, created.credentials)


@router.post(
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
    request: Request, user: FleetManager, pool: PoolDep, broker: DeviceBrokerDep
) -> ImportReportPublic:
    """Onboard the devices of a CSV file row by row: good rows are created, bad rows refused
    with line and reason (see the module's description of the format and the answer)."""
    try:
        report = await device_import.import_devices(request, pool, user, broker)
    except ImportFileError as error:
        code = (
            status.HTTP_413_CONTENT_TOO_LARGE
            if error.too_large
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        raise HTTPException(code, detail=error.reason) from None
    return ImportReportPublic.from_report(report)


@router.patch("/{device_id}", responses=_MAY_NOT_CHANGE)
async def update_device(
    device_id: DeviceId, body: DeviceUpdate, request: Request, user: CurrentUser, pool: PoolDep
) -> DeviceRegistration:
    """Change the label, move the device to another site of the organisation (422 ``site not
    found`` for any other site), or put it in a residence of its site (``residence_id``; 422
    ``residence_id not found`` for any other; ``null`` takes it out); 409 for a decommissioned
    device."""
    await _check_may_change(pool, user, device_id)
    with fleet_refusals():
        async with pool.connection() as conn:
            record = await fleet.update_device(
                conn,
                actor_for(user, request),
                device_id,
                label=body.label,
                site=body.site,
                set_residence="residence_id" in body.model_fields_set,
                residence_id=body.residence_id,
            )
    return DeviceRegistration.from_record(record)


@router.delete(
    "/{device_id}",
    responses={**_MAY_NOT_CHANGE, 409: {"description": "already decommissioned"}},
)
async def decommission_device(
    device_id: DeviceId, request: Request, user: CurrentUser, pool: PoolDep
) -> DeviceDecommissioned:
    """Decommission: the broker refuses the device at once (its password hash is deleted), its
    events and alerts stay, its unresolved alerts are resolved (note ``device decommissioned``).
    Deleting it again answers 409 ``already decommissioned``."""
    await _check_may_change(pool, user, device_id)
    with fleet_refusals():
        async with pool.connection() as conn:
            result = await fleet.decommission_device(conn, actor_for(user, request), device_id)
    return DeviceDecommissioned.from_result(result)


@router.post(
    "/{device_id}/credentials",
    responses={
        **_MAY_NOT_CHANGE,
        409: {"description": "decommissioned, or a zigbee2mqtt device (its bridge connects)"},
    },
)
async def rotate_device_credentials(
    device_id: DeviceId, request: Request, user: CurrentUser, pool: PoolDep, broker: DeviceBrokerDep
) -> DeviceOnboarded:
    """A new MQTT password for the device, shown once; the old one stops working at once.
    Also issues the first one of a device onboarded before credentials existed."""
    await _check_may_change(pool, user, device_id)
    with fleet_refusals():
        async with pool.connection() as conn:
            record, credentials = await fleet.rotate_device_credentials(
                conn, actor_for(user, request), device_id, broker
            )
    return DeviceOnboarded.issued(record, credentials)


# --- maintenance windows (+#11) ----------------------------------------------------------------


@router.get("/{device_id}/maintenance", responses=_NOT_FOUND)
async def list_maintenance(
    device_id: DeviceId, user: CurrentUser, pool: PoolDep
) -> list[MaintenancePublic]:
    """The device's current and upcoming maintenance windows, and those over for less than 30
    days, oldest first."""
    windows = await device_queries.maintenance_windows(pool, user, device_id)
    if windows is None:
        raise _not_found()
    return windows


@router.post(
    "/{device_id}/maintenance",
    status_code=status.HTTP_201_CREATED,
    responses={
        **_MAY_NOT_CHANGE,
        409: {"description": "decommissioned, or a window overlapping this one"},
    },
)
async def start_maintenance(
    device_id: DeviceId,
    body: MaintenanceCreate,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> MaintenancePublic:
    """Put the device in repair from ``starts_at`` (default now, at most 24 h back) until
    ``ends_at`` (at most 30 days later), with an optional ``note``."""
    await _check_may_change(pool, user, device_id)
    assert body.starts_at is not None  # the body's validator defaults it to now
    with fleet_refusals():
        async with pool.connection() as conn:
            window = await fleet.start_maintenance(
                conn,
                actor_for(user, request),
                device_id,
                starts_at=body.starts_at,
                ends_at=body.ends_at,
                note=body.note,
            )
    return MaintenancePublic.from_window(window)


@router.post(
    "/{device_id}/maintenance/{maintenance_id}/end",
    responses={
        **_MAY_NOT_CHANGE,
        404: {"description": "no such device or window, or not one the caller may see"},
        409: {"description": "the window is already over"},
    },
)
async def end_maintenance(
    device_id: DeviceId,
    maintenance_id: MaintenanceId,
    request: Request,
    user: CurrentUser,
    pool: PoolDep,
) -> MaintenancePublic:
    """End the window now (an upcoming one is cancelled); 409 if it is already over."""
    await _check_may_change(pool, user, device_id)
    with fleet_refusals():
        try:
            async with pool.connection() as conn:
                window = await fleet.end_maintenance(
                    conn, actor_for(user, request), device_id, maintenance_id
                )
        except NotFoundError as error:
            if error.entity != "maintenance":
                raise
            # The path names the window: it is the resource, so 404 (not the body's 422).
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, detail="maintenance window not found"
            ) from None
    return MaintenancePublic.from_window(window)
