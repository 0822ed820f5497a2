"""The onboarding page ``/onboarding`` (technicians and admins): one device by form, many by CSV,
and the devices the organisation's zigbee2mqtt bridges announce (+#13).

Server-rendered, no script: the forms post with the session cookie and are refused unless they
come from our own pages (Sec-Fetch-Site / Origin, as the login form). The created devices'
passwords appear once, in the answer to the post (``Cache-Control: no-store``), with a
"download credentials" link whose CSV sits in the page itself as a ``data:`` URL: nothing of it
is kept on the server. The work is :mod:`carewatch.fleet`, as for the API and the CLI.

Discovery: each bridge's ``<base>/bridge/devices`` (stored by the gateway,
:mod:`api.bridge_queries`) is listed per bridge; the devices onboarding offers (mapped model,
interview complete, not the coordinator, not yet onboarded) each get a row with the device id
(suggested from the IEEE address), site, residence and location to choose, and are onboarded
one by one (the row's button) or together (ticked rows). Name, model, kind and bridge are taken
from the stored announcement, never from the form; nothing is onboarded until a person posts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final
from urllib.parse import quote

import segno
from fastapi import APIRouter, Form, Request, Response, status
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from api import bridge_queries, device_import, residence_queries, site_queries
from api.auth import UserContext
from api.deps import PoolDep, SettingsDep, actor_for
from api.device_broker import CA_DOWNLOAD_NAME, DeviceBrokerDep
from carewatch import fleet
from carewatch.device_broker import DeviceBroker
from carewatch.fleet import CreatedDevice, ImportReport
from carewatch.roles import Permission
from dashboards.formatting import fill, kind_title
from dashboards.kit import (
    choose_language,
    from_our_pages,
    page_context,
    page_user,
    render_page,
    strings,
    switchable_context,
)
from devices.catalog import DEFAULT_CATALOG
from devices.device_specs import DeviceSpec, ImportFileError, Refusal
from devices.zigbee2mqtt_bridges import MAX_ANNOUNCED_DEVICES

router = APIRouter(include_in_schema=False)

# Onboarding is the technicians' work (CONTRACT.md roles); admins may do everything.
PERMISSION: Final = Permission.MANAGE_FLEET
TEMPLATE: Final = "onboarding.html"


# QR codes are drawn for files up to this many devices; a bigger import is for the CSV.
QR_CODES_MAX: Final = 100
# The suggested id of an announced device: zb- and its IEEE address's 16 hex digits.
ANNOUNCED_ID_PREFIX: Final = "zb-"


def discovery_key(bridge_id: str, ieee_address: str) -> str:
    """How the discovery form names an announced device: ``<bridge id>/<IEEE address>``."""
    return f"{bridge_id}/{ieee_address}"


def suggested_id(ieee_address: str) -> str:
    """A device id for an announced device, from its IEEE address (unique per Zigbee radio):
    ``zb-00158d0001a2b3c4``."""
    return ANNOUNCED_ID_PREFIX + ieee_address.removeprefix("0x").lower()


def qr_codes(created: Sequence[CreatedDevice], title: str) -> dict[str, Markup]:
    """An inline SVG QR code per created device with credentials, carrying its connection URL
    (``mqtt[s]://id:password@host:port``, with ``?ca_sha256=...&ca_url=...`` when the broker
    needs Carewatch's CA) for the installer's phone; none for big imports."""
    with_credentials = [item for item in created if item.credentials is not None]
    if len(with_credentials) > QR_CODES_MAX:
        return {}
    codes: dict[str, Markup] = {}
    for item in with_credentials:
        assert item.credentials is not None
        code = segno.make(item.credentials.connection_url, error="m")
        # segno escapes the title; the SVG has attributes only, no style (CSP: style-src 'self').
        svg = code.svg_inline(scale=3, border=2, title=fill(title, id=item.device.id))
        codes[item.device.id] = Markup(svg)  # noqa: S704 - segno's own, escaped SVG
    return codes


def credentials_href(csv_text: str) -> str:
    """The credentials CSV as a ``data:`` URL; the BOM makes Excel read it as UTF-8."""
    return "data:text/csv;charset=utf-8," + quote("\ufeff" + csv_text, safe="")


async def _page(
    request: Request,
    pool: PoolDep,
    user: UserContext,
    broker: DeviceBroker,
    *,
    report: ImportReport | None = None,
    message: str = "",
    form: dict[str, str] | None = None,
    discovery_form: dict[str, str] | None = None,
    status_code: int = status.HTTP_200_OK,
) -> HTMLResponse:
    """The onboarding page: the broker devices are given (a warning if it is plain MQTT), the
    forms (``form``: what the one-device form held), and the ``report`` of what was just
    created or the ``message`` why not."""
    lang = choose_language(user.language)
    texts = strings()[lang]
    created = report.created if report is not None else []
    csv_text = fleet.credentials_csv(created)
    sites = await site_queries.list_sites(pool, user)
    residences = await residence_queries.list_residences(pool, user)
    async with pool.connection() as conn:
        bridges = await bridge_queries.announced_by_bridge(conn, user.org_id)
    context = page_context(
        user,
        lang,
        "/onboarding",
        kinds=[(name, kind_title(name, lang)) for name in DEFAULT_CATALOG],
        sites=sites,
        # The residence select: one group per site (the device must be at the residence's site,
        # which fleet.create_devices checks; no script narrows the list to the chosen site).
        residence_groups=[
            (site, [item for item in residences if item.site_id == site.id])
            for site in sites
            if any(item.site_id == site.id for item in residences)
        ],
        report=report,
        message=message,
        form=form or {},
        credentials_href=credentials_href(csv_text)
        if any(item.credentials for item in created)
        else "",
        qr_codes=qr_codes(created, texts["onboarding_qr_title"]),
        broker=broker,
        ca_download_name=CA_DOWNLOAD_NAME,
        bridges=bridges,
        discovery_form=discovery_form or {},
        discovery_key=discovery_key,
        suggested_id=suggested_id,
        kind_titles={name: kind_title(name, lang) for name in DEFAULT_CATALOG},
    )
    return render_page(request, TEMPLATE, context, status_code)


def _texts(user: UserContext) -> dict[str, Any]:
    texts: dict[str, Any] = strings()[choose_language(user.language)]
    return texts


def _forbidden(request: Request, user: UserContext) -> Response:
    # A whole page (language, title, navigation), as the fleet's 403: WCAG for every answer.
    context = switchable_context(
        request,
        user,
        "/onboarding",
        heading_key="onboarding_title",
        title_key="fleet_forbidden_title",
        text_key="onboarding_forbidden",
    )
    return render_page(request, "fleet_message.html", context, status.HTTP_403_FORBIDDEN)


@router.get("/onboarding", response_class=HTMLResponse)
async def onboarding_page(
    request: Request, pool: PoolDep, settings: SettingsDep, broker: DeviceBrokerDep
) -> Response:
    """The forms: one device, or a CSV file."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    return await _page(request, pool, user, broker)


@router.post("/onboarding/device", response_class=HTMLResponse)
async def onboard_device(
    request: Request,
    pool: PoolDep,
    settings: SettingsDep,
    broker: DeviceBrokerDep,
    device_id: Annotated[str, Form(alias="id", max_length=64)],
    kind: Annotated[str, Form(max_length=64)],
    site: Annotated[str, Form(max_length=64)],
    label: Annotated[str, Form(max_length=200)] = "",
    residence: Annotated[str, Form(max_length=18)] = "",  # a bigint id; 18 digits always fit
) -> Response:
    """Onboard one device; the page again with its credentials, or with why not."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    if not from_our_pages(request):
        return Response("cross-site form refused", status.HTTP_403_FORBIDDEN)
    form = {"id": device_id, "kind": kind, "site": site, "label": label, "residence": residence}
    if residence and not residence.isdigit():
        return await _page(
            request,
            pool,
            user,
            broker,
            message=fill(_texts(user)["onboarding_refused"], reason="residence: not one listed"),
            form=form,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    spec = DeviceSpec(
        id=device_id.strip(),
        kind=kind,
        site=site,
        label=label.strip(),
        residence_id=int(residence) if residence else None,
        line=1,
    )
    async with pool.connection() as conn:
        report = await fleet.create_devices(conn, actor_for(user, request), [spec], broker)
    if report.refused:
        return await _page(
            request,
            pool,
            user,
            broker,
            message=fill(_texts(user)["onboarding_refused"], reason=report.refused[0].reason),
            form=form,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return await _page(request, pool, user, broker, report=report)


@router.post("/onboarding/import", response_class=HTMLResponse)
async def import_devices(
    request: Request, pool: PoolDep, settings: SettingsDep, broker: DeviceBrokerDep
) -> Response:
    """Onboard a CSV file's devices; the page again with the row-by-row report."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    if not from_our_pages(request):
        return Response("cross-site form refused", status.HTTP_403_FORBIDDEN)
    try:
        report = await device_import.import_devices(request, pool, user, broker)
    except ImportFileError as error:
        return await _page(
            request,
            pool,
            user,
            broker,
            message=fill(_texts(user)["onboarding_file_refused"], reason=error.reason),
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    return await _page(request, pool, user, broker, report=report)


@router.post("/onboarding/discovered", response_class=HTMLResponse)
async def onboard_discovered(
    request: Request, pool: PoolDep, settings: SettingsDep, broker: DeviceBrokerDep
) -> Response:
    """Onboard announced devices: the row whose button was pressed (``one``), or every ticked
    row (``pick``); the page again with the report, the form kept for the rows refused."""
    user = await page_user(request, pool, settings, PERMISSION, _forbidden)
    if isinstance(user, Response):
        return user
    if not from_our_pages(request):
        return Response("cross-site form refused", status.HTTP_403_FORBIDDEN)
    # Five fields a row; the body limit (api.limits, 64 KiB) bounds the work, not Starlette's
    # default of 1000 fields, which a bridge of 200 devices would reach.
    posted = await request.form(max_fields=5 * MAX_ANNOUNCED_DEVICES)
    values = {key: value for key, value in posted.multi_items() if isinstance(value, str)}
    one = values.get("one", "")
    ticked = [value for value in posted.getlist("pick") if isinstance(value, str)]
    keys = [one] if one else ticked
    # The ticked rows stay ticked on the page again (a key has no space: discovery_key).
    values["pick"] = " ".join(ticked)
    texts = _texts(user)
    if not keys:
        return await _page(
            request,
            pool,
            user,
            broker,
            message=texts["onboarding_discovered_none"],
            discovery_form=values,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        )
    async with pool.connection() as conn:
        bridges = await bridge_queries.announced_by_bridge(conn, user.org_id)
        offered = {
            discovery_key(bridge.id, row.device.ieee_address): (bridge, row)
            for bridge in bridges
            for row in bridge.offered
        }
        specs: list[DeviceSpec] = []
        refused: list[Refusal] = []
        for line, key in enumerate(dict.fromkeys(keys), start=1):
            found = offered.get(key)
            if found is None:
                refused.append(Refusal(line, key, "no longer offered: onboarded, or not announced"))
                continue
            specs.append(_announced_spec(line, key, found[0], found[1], values))
        report = await fleet.create_devices(
            conn, actor_for(user, request), specs, broker, refused=refused
        )
    return await _page(
        request,
        pool,
        user,
        broker,
        report=report,
        discovery_form=values,
        status_code=status.HTTP_200_OK if report.created else status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _announced_spec(
    line: int,
    key: str,
    bridge: bridge_queries.BridgeAnnouncements,
    row: bridge_queries.AnnouncedRow,
    values: Mapping[str, str],
) -> DeviceSpec:
    """The device to onboard: what the bridge announced (name, model, the kind its model maps
    to) and what the person chose (id, site, residence, location)."""
    # Offered rows have a mapped model, so both are known.
    assert row.kind is not None
    assert row.device.model is not None
    residence = values.get(f"residence:{key}", "")
    return DeviceSpec(
        id=values.get(f"id:{key}", "").strip(),
        kind=row.kind,
        site=values.get(f"site:{key}", ""),
        label=values.get(f"label:{key}", "").strip(),
        source="zigbee2mqtt",
        zigbee_name=row.device.friendly_name,
        zigbee_model=row.device.model,
        bridge=bridge.username,
        # Not a number: not one of the listed residences, which create_devices refuses.
        residence_id=int(residence) if residence.isdigit() and len(residence) <= 18 else None,
        line=line,
    )
