"""The API's models: what it accepts (``*Create``, ``AlertNote``) and answers (``*Public``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from devices.rules import SiteRuleSettings

Severity = Literal["info", "warning", "high", "critical"]
AlertState = Literal["open", "acknowledged", "resolved"]
ChangeKind = Literal["alert.opened", "alert.updated", "alert.resolved"]
# Plain text fields a person types: no control characters (they break logs and CSV exports).
_PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"


class AlertPublic(BaseModel):
    """An alert as the board shows it, with its device and site."""

    id: int
    device_id: str
    device_label: str
    device_kind: str
    site_id: str
    site_name: str
    rule: str
    severity: Severity
    state: AlertState
    # The condition went away while nobody had acknowledged it (stays on the board).
    cleared: bool
    cleared_reason: str | None
    escalated: bool
    count: int
    reason: str
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    escalated_at: datetime | None


class AlertNote(BaseModel):
    """The optional body of acknowledge and resolve."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(max_length=2000)] | None = None


def _known_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("an IANA time zone such as Europe/Stockholm") from None
    return value


def _known_timezone_or_none(value: str | None) -> str | None:
    return None if value is None else _known_timezone(value)


class SiteCreate(BaseModel):
    """A new site (a care home, a home-care area) in the caller's organisation."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{1,63}$")]
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=_PLAIN_TEXT)]
    timezone: Annotated[str, Field(max_length=64), AfterValidator(_known_timezone)] = (
        "Europe/Stockholm"
    )


class SitePublic(BaseModel):
    id: str
    name: str
    timezone: str


def _valid_rule_settings(value: dict[str, int] | None) -> dict[str, int] | None:
    if value is None:
        return None
    # The gateway reads them through the same class: what passes here is what it applies.
    return SiteRuleSettings.from_record(value).to_record()


class SiteDetail(SitePublic):
    """A site with its overrides of the alert rules' defaults (absent: the catalog's)."""

    rule_settings: dict[str, int]


class SiteUpdate(BaseModel):
    """A change to a site (admins): its name, time zone or rule settings. ``rule_settings``
    replaces the site's overrides as a whole; ``{}`` returns every rule to its default."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, Field(min_length=1, max_length=200, pattern=_PLAIN_TEXT)] = None
    timezone: Annotated[
        str | None, Field(max_length=64), AfterValidator(_known_timezone_or_none)
    ] = None
    rule_settings: Annotated[dict[str, int] | None, AfterValidator(_valid_rule_settings)] = None


class TokenPublic(BaseModel):
    """The answer of ``POST /api/v1/auth/token`` (OAuth2 password flow)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret


# --- devices (read side: fleet health) ---------------------------------------------------------

# What ``status=`` filters on: the registry status (active, decommissioned, all) or, among the
# active devices, how they are doing (online; offline: seen before, silent now; never_seen:
# no message since onboarding). The last three are disjoint and add up to the active devices.
DeviceStatusFilter = Literal["active", "online", "offline", "never_seen", "decommissioned", "all"]
DeviceSort = Literal[
    "id", "kind", "site", "label", "status", "last_seen", "battery", "firmware", "open_alerts"
]


class BatteryPoint(BaseModel):
    """The device's last battery reading (heartbeat ``data.battery``) at or before ``time``."""

    time: datetime
    battery: int


class BatteryTrend(BaseModel):
    """Battery over the last days: one point per day boundary (the latest reading before it;
    days without a reading are left out) and the change from the first point to the last."""

    days: int
    change: int | None
    points: list[BatteryPoint]


class DevicePublic(BaseModel):
    """A device as the fleet page and the API show it: registry facts and health."""

    id: str
    kind: str
    site_id: str
    site_name: str
    label: str
    status: Literal["active", "decommissioned"]
    source: str
    zigbee_name: str | None
    zigbee_model: str | None
    online: bool
    last_seen: datetime | None
    # No message ever since onboarding (last_seen is NULL).
    never_seen: bool
    # When an active device that was seen before is offline: its last message, and how long ago.
    offline_since: datetime | None
    offline_for_s: float | None
    battery: int | None
    battery_trend: BatteryTrend | None
    firmware: str | None
    open_alerts: int
    created_at: datetime
    decommissioned_at: datetime | None


class DevicePage(BaseModel):
    """One page of the device list and how many devices match in all."""

    items: list[DevicePublic]
    total: int
    limit: int
    offset: int
    # The offset of the next page, or None on the last one.
    next_offset: int | None


class KindSummary(BaseModel):
    total: int
    online: int
    offline: int
    never_seen: int
    battery_low: int


class FleetSummary(KindSummary):
    """Counts over the caller's active devices: offline and never_seen are disjoint, and with
    online they add up to total. battery_low: the last reported battery is under
    ``battery_low_below`` percent."""

    battery_low_below: int
    decommissioned: int
    by_kind: dict[str, KindSummary]


class DeviceEventPublic(BaseModel):
    """One stored event of a device, as it arrived."""

    time: datetime
    received_at: datetime
    event_id: str
    type: str
    data: dict[str, object]


# --- onboarding (api/routes/onboarding.py) -----------------------------------------------------
# Values are checked by carewatch.onboarding (one implementation for API, page and CLI); the
# limits here only keep absurd input out.


class MqttCredentialsPublic(BaseModel):
    """A broker identity's connection settings; the password is shown this once, never again."""

    username: str
    password: str
    host: str
    port: int
    tls: bool
    url: str


class DeviceCreate(BaseModel):
    """A device to onboard. ``source`` zigbee2mqtt needs ``zigbee_name``, ``zigbee_model`` and
    ``bridge`` (a bridge id, or its username ``zigbee2mqtt.<id>``) and gets no credentials."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(max_length=64)]
    kind: Annotated[str, Field(max_length=64)]
    site: Annotated[str, Field(max_length=64)]
    label: Annotated[str, Field(max_length=200)] = ""
    source: Literal["mqtt", "zigbee2mqtt"] = "mqtt"
    zigbee_name: Annotated[str, Field(max_length=64)] | None = None
    zigbee_model: Annotated[str, Field(max_length=64)] | None = None
    bridge: Annotated[str, Field(max_length=80)] | None = None


class DeviceUpdate(BaseModel):
    """What a technician may change: the label, and the site (within the organisation)."""

    model_config = ConfigDict(extra="forbid")

    label: Annotated[str, Field(max_length=200)] | None = None
    site: Annotated[str, Field(max_length=64)] | None = None


class DeviceRegistration(BaseModel):
    """A device's registry row as onboarding answers it (health is the fleet's GET)."""

    id: str
    kind: str
    site_id: str
    label: str
    status: Literal["active", "decommissioned"]
    source: Literal["mqtt", "zigbee2mqtt"]
    zigbee_name: str | None
    zigbee_model: str | None
    bridge: str | None
    # A password hash is stored (never the password); false for zigbee2mqtt devices, devices
    # onboarded before broker credentials existed (POST .../credentials issues one) and
    # decommissioned ones.
    has_credentials: bool
    credentials_issued_at: datetime | None
    created_at: datetime
    decommissioned_at: datetime | None


class DeviceOnboarded(DeviceRegistration):
    """A device just onboarded or given new credentials: ``credentials`` shown once (None for a
    zigbee2mqtt device, whose bridge connects for it)."""

    credentials: MqttCredentialsPublic | None


class DeviceDecommissioned(DeviceRegistration):
    """A decommissioned device and the alerts that were resolved with it."""

    resolved_alert_ids: list[int]


class ImportCreated(BaseModel):
    line: int
    device: DeviceRegistration
    credentials: MqttCredentialsPublic | None


class ImportRefused(BaseModel):
    line: int
    id: str
    reason: str


class ImportReportPublic(BaseModel):
    """What an import created (with credentials, shown once) and what it refused, and why."""

    created: list[ImportCreated]
    refused: list[ImportRefused]
    created_count: int
    refused_count: int
    # The created devices' credentials as CSV (id,kind,site,label,username,password,url) for
    # installers; never stored on the server.
    credentials_csv: str


class BridgeCreate(BaseModel):
    """A zigbee2mqtt bridge account ``zigbee2mqtt.<id>`` of the caller's organisation."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(max_length=63)]
    label: Annotated[str, Field(max_length=200)] = ""


class BridgePublic(BaseModel):
    id: str
    username: str
    label: str
    created_at: datetime
    active_devices: int


class BridgeCreated(BridgePublic):
    credentials: MqttCredentialsPublic


# --- usage (GET /api/v1/usage; the dashboards render the same report) ---------------------------

UsageBucket = Literal["hour", "day", "week"]


class UsageCameraBucket(BaseModel):
    bucket: datetime
    checks: int
    # Of those, the checks in night hours (18:00-06:00 local).
    night_checks: int
    mean_duration_s: float | None


class UsageCameraChecks(BaseModel):
    series: list[UsageCameraBucket]
    # Nights that start (18:00 local) inside the period.
    nights: int
    # Checks in night hours inside the period / nights (None when no night starts in it).
    checks_per_night: float | None
    mean_duration_s: float | None


class UsageLockBucket(BaseModel):
    bucket: datetime
    visits: int
    mean_duration_s: float | None


class UsageLockVisits(BaseModel):
    series: list[UsageLockBucket]
    visits: int
    visits_per_day: float
    mean_duration_s: float | None


class UsageRobotBucket(BaseModel):
    bucket: datetime
    minutes: float


class UsageRobotPublic(BaseModel):
    device_id: str
    label: str
    site_id: str
    minutes: float
    minutes_per_day: float


class UsageRobotMinutes(BaseModel):
    series: list[UsageRobotBucket]
    minutes: float
    per_robot: list[UsageRobotPublic]


class UsageAlarmBucket(BaseModel):
    bucket: datetime
    alarms: int


class UsageAlarms(BaseModel):
    series: list[UsageAlarmBucket]
    total: int
    per_day: float


class UsageAlertCount(BaseModel):
    rule: str
    severity: Severity
    count: int


class UsageAlerts(BaseModel):
    """Alerts opened in the period."""

    by_rule_severity: list[UsageAlertCount]
    total: int


class UsageSeverityTimes(BaseModel):
    severity: Severity
    alerts: int
    acknowledged: int
    ack_median_s: float | None
    ack_p90_s: float | None
    resolved: int
    resolve_median_s: float | None
    resolve_p90_s: float | None


class UsageSlowAck(BaseModel):
    alert_id: int
    device_id: str
    label: str
    site_id: str
    rule: str
    severity: Severity
    opened_at: datetime
    ack_s: float


class UsageResponseTimes(BaseModel):
    by_severity: list[UsageSeverityTimes]
    slowest: list[UsageSlowAck]


class UsageKindAvailability(BaseModel):
    kind: str
    devices: int
    share_online: float | None


class UsageDeviceAvailability(BaseModel):
    device_id: str
    label: str
    site_id: str
    kind: str
    share_online: float


class UsageAvailability(BaseModel):
    by_kind: list[UsageKindAvailability]
    least_available: list[UsageDeviceAvailability]


class UsageBatteryBucket(BaseModel):
    bucket: datetime
    replacements: int


class UsageBatteryReplacements(BaseModel):
    series: list[UsageBatteryBucket]
    total: int


class UsageSiteComparison(BaseModel):
    site_id: str
    name: str
    camera_checks: int
    lock_visits: int
    robot_minutes: float
    alarms: int
    alerts: int
    share_online: float | None


class UsageReport(BaseModel):
    """The usage measures of the caller's sites (or one site) over a period, by bucket."""

    site: str | None
    # The period covered: the one asked for, widened to whole buckets.
    since: datetime
    until: datetime
    bucket: UsageBucket
    timezone: str
    # Set when the selected sites do not share one time zone (buckets follow the first one's).
    timezone_note: str | None
    # Bucket starts in local time, oldest first; every series has one item per bucket.
    buckets: list[datetime]
    days: float
    camera_checks: UsageCameraChecks
    lock_visits: UsageLockVisits
    robot_minutes: UsageRobotMinutes
    alarms: UsageAlarms
    alerts: UsageAlerts
    response_times: UsageResponseTimes
    availability: UsageAvailability
    battery_replacements: UsageBatteryReplacements
    sites: list[UsageSiteComparison]
