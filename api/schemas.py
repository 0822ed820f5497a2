"""The API's models: what it accepts (``*Create``, ``AlertNote``) and answers (``*Public``)."""

from __future__ import annotations

import re
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Final, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from api.bridge_queries import AnnouncedRow, BridgeAnnouncements
from carewatch.device_broker import DeviceBroker
from carewatch.fleet import (
    Bridge,
    Decommissioned,
    DeviceRecord,
    ImportReport,
    MaintenanceWindow,
    MqttCredentials,
    credentials_csv,
)
from devices.audience import DEFAULT_AUDIENCES, AudienceError
from devices.audience import audiences as audiences_for
from devices.ids import ORG_SITE_ID_PATTERN, USERNAME_RE, ZIGBEE_NAME_MAX_CHARS
from devices.response import (
    EscalationAction,
    Promise,
    Response,
    ResponseState,
    next_step,
    response_times,
    within_promise,
)
from devices.rules import SITE_RULE_BOUNDS, SiteRuleSettings
from devices.site_response import STEP_MAX_S, STEP_MIN_S, check_steps, site_chain
from devices.supervision import (
    DEFAULT_RETRY_S,
    DEFAULT_WINDOW_S,
    NIGHT_STARTS,
    CheckState,
    FollowUp,
    PlanVersion,
)
from devices.zigbee2mqtt_bridges import DEFAULT_BASE_TOPIC

Severity = Literal["info", "warning", "high", "critical"]
AlertState = Literal["open", "acknowledged", "resolved"]
ChangeKind = Literal["alert.opened", "alert.updated", "alert.resolved"]
AudienceName = Literal["care", "technical"]
RoutingName = Literal["care", "technical", "both"]
# Plain text fields a person types: no control characters (they break logs and CSV exports).
_PLAIN_TEXT = r"^[^\x00-\x1f\x7f]*$"
# A residence named in a body by its id (a bigint; a JSON number, never "3").
ResidenceRef = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]
# The most members a site's second group may have (issue 12): a team, not the organisation.
SECOND_GROUP_MAX: Final = 100


class ErrorDetail(BaseModel):
    """An error answer: what went wrong, in a sentence (every error but a refused parameter or
    body, whose 422 lists each refusal: FastAPI's ``HTTPValidationError``)."""

    detail: str


def storable_text(value: str) -> bool:
    """True if PostgreSQL can store the text: no NUL character and no lone surrogate (which
    JSON can spell as ``\\u0000`` and ``\\ud800`` but UTF-8 cannot)."""
    if "\x00" in value:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _not_a_number(value: object) -> object:
    # pydantic reads a number as Unix time; the API documents RFC 3339 date-times only.
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("expected a date and time (RFC 3339), not a number")
    return value


_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
# A time in a query (``since``, ``until``): RFC 3339 as documented, never a bare number.
QueryTime = Annotated[datetime, BeforeValidator(_not_a_number)]
QueryAwareTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


class RequestBody(BaseModel):
    """Base of every JSON body the API accepts: unknown fields are refused, and so is text
    PostgreSQL cannot store (a 422 naming the field, instead of an error from the database)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: object) -> object:
        if isinstance(value, str) and not storable_text(value):
            raise ValueError("text with a NUL character or a lone surrogate")
        return value


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
    # The reasons as data (issue 12, devices/reasons.py): a code and its arguments, which the
    # pages say in the reader's language; null on alerts stored before (only the English then).
    reason_code: str | None = None
    reason_args: dict[str, int | str | bool] | None = None
    cleared_reason_code: str | None = None
    cleared_reason_args: dict[str, int | str | bool] | None = None
    # The residence (+#11): a supervision alert's own, else its device's; null when none.
    residence_id: int | None = None
    residence_label: str | None = None
    # The response (+#12): only for alerts of a response rule (devices/response.toml).
    response: AlertResponse | None = None
    # Who the alert is for (issue 12, devices/audience.toml): computed when it is read, from its
    # rule, its device's kind, its severity, its residence's plan and its site's routing.
    audiences: list[AudienceName] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _with_audiences(cls, data: object) -> object:
        """The alert's SQL hands over ``site_audiences`` (the site's routing) and
        ``residence_has_plan``; who the alert is for is the pure core's answer."""
        if not isinstance(data, dict) or "audiences" in data:
            return data
        data = dict(data)
        site_routing = data.pop("site_audiences", None)
        has_plan = bool(data.pop("residence_has_plan", False))
        data["audiences"] = sorted(
            audience.value
            for audience in audiences_for(
                str(data.get("rule", "")),
                str(data.get("device_kind", "")),
                str(data.get("severity", "")),
                residence_has_plan=has_plan,
                site_routing=site_routing if isinstance(site_routing, dict) else None,
            )
        )
        return data


ResponseStateName = Literal["open", "forwarded", "accepted", "on_site", "closed"]


class AlertResponse(BaseModel):
    """Where the response to an alert stands (+#12): who has it (``holder``), to whom it was
    forwarded (``offered_to``), when it was first accepted, when someone got there and how
    (``on_site_source``: ``staff`` by hand, ``lock`` the residence's lock, ``on_site_by`` a
    username or the lock's device id), and how it was closed (``action``, a code of the close
    actions)."""

    state: ResponseStateName = "open"
    holder: str | None = None
    offered_to: str | None = None
    accepted_at: datetime | None = None
    on_site_at: datetime | None = None
    on_site_by: str | None = None
    on_site_source: Literal["staff", "lock"] | None = None
    contact_made: bool | None = None
    closed_at: datetime | None = None
    closed_by: str | None = None
    action: str | None = None
    note: str = ""
    escalated: list[str] = Field(default_factory=list)
    # The next step of the site's escalation chain and when (null: none can come any more).
    next_step: NextStep | None = None
    # The site's promise (+#12, the board counts down to it): accepted by ``contact_due_at``,
    # someone on site by ``on_site_due_at`` (the opening + the promise; null: none promised);
    # ``*_met`` whether it was kept, once it happened (null before, or without a promise).
    contact_due_at: datetime | None = None
    on_site_due_at: datetime | None = None
    contact_met: bool | None = None
    on_site_met: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _with_derived(cls, data: object) -> object:
        """The alert's SQL hands over ``site_promise`` (the alert's opening and the site's
        promise) and, until the alert is resolved, ``site_chain`` (the site's step times and
        whether it has a second group): the next step is the pure core's, and the promise's
        deadlines and whether they were kept follow."""
        if not isinstance(data, dict) or not isinstance(data.get("site_promise"), dict):
            return data
        data = dict(data)
        promised = data.pop("site_promise")
        chain = data.pop("site_chain", None)
        opened_at = _moment(promised["opened_at"])
        assert opened_at is not None  # every alert has opened
        promise = Promise(promised["contact_s"], promised["on_site_s"])
        if isinstance(chain, dict):
            data["next_step"] = _next_step(data, opened_at, promise, chain)
        data.update(_promise_fields(data, opened_at, promise))
        return data


class NextStep(BaseModel):
    """A step of the escalation chain still to come (+#12): its name (a step of
    ``devices/response.toml``) and when the watchdog takes it unless the response moves on."""

    name: str
    at: datetime
    # For a step that alerts the site's second group: whether the site has one (false: only the
    # first group is alerted again, as nobody else is named); null for other steps.
    second_group: bool | None = None


def _next_step(
    response: dict[str, Any], opened_at: datetime, promise: Promise, chain: dict[str, Any]
) -> NextStep | None:
    pending = next_step(
        Response(
            opened_at=opened_at,
            state=ResponseState(response.get("state") or "open"),
            escalated=tuple(response.get("escalated") or ()),
        ),
        site_chain(promise.contact_s, promise.on_site_s, chain["steps"]),
    )
    if pending is None:
        return None
    step, at = pending
    notifies = EscalationAction.NOTIFY_SECOND_GROUP in step.actions
    has_group = bool(chain.get("second_group"))
    return NextStep(name=step.name, at=at, second_group=has_group if notifies else None)


def _promise_fields(
    response: dict[str, Any], opened_at: datetime, promise: Promise
) -> dict[str, Any]:
    times = response_times(
        Response(
            opened_at=opened_at,
            accepted_at=_moment(response.get("accepted_at")),
            on_site_at=_moment(response.get("on_site_at")),
        )
    )
    contact_met, on_site_met = within_promise(times, promise)

    def due(seconds: int | None) -> datetime | None:
        return None if seconds is None else opened_at + timedelta(seconds=seconds)

    return {
        "contact_due_at": due(promise.contact_s),
        "on_site_due_at": due(promise.on_site_s),
        "contact_met": contact_met,
        "on_site_met": on_site_met,
    }


def _moment(value: object) -> datetime | None:
    """A timestamp of the response's JSON (ISO text from jsonb) as a datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


AlertResponse.model_rebuild()  # its ``next_step`` is declared below it
AlertPublic.model_rebuild()  # its ``response`` is declared above it


class ForwardBody(RequestBody):
    """Offer the response to colleague ``to`` (a username of the organisation who may act on
    alerts), or back to the team (null)."""

    to: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class ArriveBody(RequestBody):
    """Someone is with the person; ``contact_made``: could they talk (null: not said)."""

    contact_made: bool | None = None


class CloseBody(RequestBody):
    """Close the response with ``action`` (a code of ``GET /api/v1/response-actions``) and a
    note of what was done."""

    action: Annotated[str, Field(min_length=1, max_length=64)]
    note: Annotated[str, Field(max_length=2000)] = ""


class ResponseActionPublic(BaseModel):
    """A code a response may be closed with; ``arrived``: it says someone was with the person
    (such a close needs the arrival recorded first)."""

    code: str
    title_sv: str
    title_en: str
    arrived: bool


class AlertNote(RequestBody):
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


class SiteCreate(RequestBody):
    """A new site (a care home, a home-care area) in the caller's organisation."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(pattern=ORG_SITE_ID_PATTERN)]
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=_PLAIN_TEXT)]
    timezone: Annotated[str, Field(max_length=64), AfterValidator(_known_timezone)] = (
        "Europe/Stockholm"
    )


class SitePublic(BaseModel):
    """A site as lists show it."""

    id: str
    name: str
    timezone: str


def _bounded(name: str) -> FieldInfo:
    """An override's bounds as the gateway checks them, for the schema to publish and check."""
    bounds = SITE_RULE_BOUNDS[name]
    field: FieldInfo = Field(ge=bounds.minimum, le=bounds.maximum)
    return field


class RuleSettingsUpdate(RequestBody):
    """A site's overrides of the alert rules' defaults (absent or null: the catalog's), each
    within the bounds of :data:`devices.rules.SITE_RULE_BOUNDS`."""

    escalation_s: Annotated[int | None, _bounded("escalation_s")] = None
    door_left_unlocked_min: Annotated[int | None, _bounded("door_left_unlocked_min")] = None
    door_left_open_min: Annotated[int | None, _bounded("door_left_open_min")] = None
    night_from_hour: Annotated[int | None, _bounded("night_from_hour")] = None
    night_until_hour: Annotated[int | None, _bounded("night_until_hour")] = None
    battery_warning_below: Annotated[int | None, _bounded("battery_warning_below")] = None
    battery_high_below: Annotated[int | None, _bounded("battery_high_below")] = None
    battery_resolved_at: Annotated[int | None, _bounded("battery_resolved_at")] = None

    def to_record(self) -> dict[str, int]:
        """The overrides as ``sites.rule_settings`` stores them (the ones given)."""
        return self.model_dump(exclude_none=True)


def _valid_rule_settings(value: RuleSettingsUpdate | None) -> RuleSettingsUpdate | None:
    if value is not None:
        # The gateway reads them through the same class: what passes here is what it applies
        # (this adds the order of the battery thresholds to the bounds above).
        SiteRuleSettings.from_record(value.to_record())
    return value


def _known_steps(value: dict[str, int] | None) -> dict[str, int] | None:
    return None if value is None else check_steps(value)


def _known_routing(value: dict[str, RoutingName] | None) -> dict[str, RoutingName] | None:
    if value is not None:
        try:
            DEFAULT_AUDIENCES.check_site_routing(value)
        except AudienceError as exc:
            raise ValueError(str(exc)) from None
    return value


class SiteDetail(SitePublic):
    """A site with its overrides of the alert rules' defaults (absent: the catalog's) and the
    effect estimate's assumptions (+#11)."""

    rule_settings: dict[str, int]
    visit_minutes: int
    key_handling_minutes: int
    # The alarm response (+#12): the promise (null: none made) and the chain's times by step.
    contact_promise_s: int | None = None
    on_site_promise_s: int | None = None
    escalation_steps: dict[str, int] = Field(default_factory=dict)
    # Who the site's alerts are for (issue 12): its routing of rules, over devices/audience.toml.
    # (str, not the closed set: a row written by hand must not make the site unreadable.)
    alert_audiences: dict[str, str] = Field(default_factory=dict)
    # The site's second group (issue 12, migration 0016): the usernames the escalation's
    # notify_second_group step alerts besides the first group; [] is no second group.
    second_group: list[str] = Field(default_factory=list)


class SiteUpdate(RequestBody):
    """A change to a site (admins): its name, time zone, rule settings, the effect estimate's
    minutes, or its alarm response promise, escalation times and second group.
    ``rule_settings`` replaces the site's overrides as a whole; ``{}`` returns every rule to its
    default."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str | None, Field(min_length=1, max_length=200, pattern=_PLAIN_TEXT)] = None
    timezone: Annotated[
        str | None, Field(max_length=64), AfterValidator(_known_timezone_or_none)
    ] = None
    rule_settings: Annotated[RuleSettingsUpdate | None, AfterValidator(_valid_rule_settings)] = None
    # The effect estimate's assumptions (+#11), the bounds of the sites table's CHECKs (0007).
    visit_minutes: Annotated[int | None, Field(ge=1, le=240)] = None
    key_handling_minutes: Annotated[int | None, Field(ge=0, le=120)] = None
    # The alarm response (+#12): a promise given as null is withdrawn (absent: unchanged);
    # escalation_steps replaces the site's step times as a whole ({}: the defaults).
    contact_promise_s: Annotated[int | None, Field(ge=STEP_MIN_S, le=STEP_MAX_S)] = None
    on_site_promise_s: Annotated[int | None, Field(ge=STEP_MIN_S, le=STEP_MAX_S)] = None
    escalation_steps: Annotated[
        dict[str, Annotated[int, Field(ge=STEP_MIN_S, le=STEP_MAX_S)]] | None,
        AfterValidator(_known_steps),
    ] = None
    # Who the site's alerts are for (issue 12): {rule: care | technical | both}, replacing the
    # site's routing as a whole ({}: devices/audience.toml's); a care rule keeps care staff.
    alert_audiences: Annotated[dict[str, RoutingName] | None, AfterValidator(_known_routing)] = None
    # The site's second group (issue 12): usernames replacing the group as a whole ([]: none).
    # Who may be in it is the database's answer (api.site_queries: 422 naming the refused).
    second_group: (
        Annotated[
            list[Annotated[str, Field(pattern=rf"^{USERNAME_RE.pattern}$")]],
            Field(max_length=SECOND_GROUP_MAX),
        ]
        | None
    ) = None


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
    # The residence the device belongs to (+#11), null when none.
    residence_id: int | None
    residence_label: str | None
    # In repair (+#11): the end of the maintenance window covering now, null when none.
    maintenance_until: datetime | None


class DevicePage(BaseModel):
    """One page of the device list and how many devices match in all."""

    items: list[DevicePublic]
    total: int
    limit: int
    offset: int
    # The offset of the next page, or None on the last one.
    next_offset: int | None


class KindSummary(BaseModel):
    """Counts over the caller's active devices of one kind (see :class:`FleetSummary`)."""

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


# --- onboarding (the writes of api/routes/devices.py, api/routes/bridges.py) -------------------
# Values are checked by carewatch.fleet (one implementation for API, page and CLI), which
# answers a bad id with a sentence; the limits here only keep absurd input out.


class MqttCredentialsPublic(BaseModel):
    """A broker identity's connection settings; the password is shown this once, never again."""

    username: str
    password: str
    host: str
    port: int
    tls: bool
    url: str
    # The SHA-256 fingerprint (``AB:CD:...``, as ``openssl x509 -fingerprint -sha256`` prints
    # it) of the CA certificate to trust for the broker, and where it is served (+#10); null
    # when the broker needs no CA of Carewatch's own.
    ca_sha256: str | None
    ca_url: str | None

    @classmethod
    def from_credentials(cls, credentials: MqttCredentials) -> MqttCredentialsPublic:
        """The credentials just issued, with the broker's URL."""
        return cls(**asdict(credentials), url=credentials.url)

    @classmethod
    def from_optional(cls, credentials: MqttCredentials | None) -> MqttCredentialsPublic | None:
        """As :meth:`from_credentials`; None for a device that has none (zigbee2mqtt)."""
        return None if credentials is None else cls.from_credentials(credentials)


class BrokerPublic(BaseModel):
    """The broker devices are told to connect to, and the CA certificate they trust for it
    (``ca_*`` null when it needs none of Carewatch's own: no TLS, or a public certificate)."""

    url: str
    host: str
    port: int
    tls: bool
    ca_sha256: str | None
    ca_url: str | None

    @classmethod
    def from_broker(cls, broker: DeviceBroker) -> BrokerPublic:
        """The broker as onboarding describes it."""
        return cls(
            url=broker.url,
            host=broker.host,
            port=broker.port,
            tls=broker.tls,
            ca_sha256=broker.ca_sha256,
            ca_url=broker.ca_url if broker.ca is not None else None,
        )


class DeviceCreate(RequestBody):
    """A device to onboard. ``source`` zigbee2mqtt needs ``zigbee_name``, ``zigbee_model`` and
    ``bridge`` (a bridge id, or its username ``zigbee2mqtt.<id>``) and gets no credentials."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(max_length=64)]
    kind: Annotated[str, Field(max_length=64)]
    site: Annotated[str, Field(max_length=64)]
    label: Annotated[str, Field(max_length=200)] = ""
    source: Literal["mqtt", "zigbee2mqtt"] = "mqtt"
    zigbee_name: Annotated[str, Field(max_length=ZIGBEE_NAME_MAX_CHARS)] | None = None
    zigbee_model: Annotated[str, Field(max_length=64)] | None = None
    bridge: Annotated[str, Field(max_length=80)] | None = None
    # A residence of the device's site (+#11); any other is 422 ``residence_id not found ...``.
    residence_id: ResidenceRef | None = None


class DeviceUpdate(RequestBody):
    """What a technician may change: the label, the site (within the organisation) and the
    residence (one of the device's site; ``null`` removes it, left out it stays, except that a
    move to another site leaves the old site's residence)."""

    model_config = ConfigDict(extra="forbid")

    label: Annotated[str, Field(max_length=200)] | None = None
    site: Annotated[str, Field(max_length=64)] | None = None
    residence_id: ResidenceRef | None = None


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
    # The residence the device belongs to (+#11), null when none.
    residence_id: int | None
    residence_label: str | None

    @classmethod
    def from_record(cls, record: DeviceRecord) -> DeviceRegistration:
        """The registry row as the API answers it."""
        return cls.model_validate(asdict(record))


class DeviceOnboarded(DeviceRegistration):
    """A device just onboarded or given new credentials: ``credentials`` shown once (None for a
    zigbee2mqtt device, whose bridge connects for it)."""

    credentials: MqttCredentialsPublic | None

    @classmethod
    def issued(cls, record: DeviceRecord, credentials: MqttCredentials | None) -> DeviceOnboarded:
        """The device with the credentials just issued to it."""
        return cls(**asdict(record), credentials=MqttCredentialsPublic.from_optional(credentials))


class DeviceDecommissioned(DeviceRegistration):
    """A decommissioned device and the alerts that were resolved with it."""

    resolved_alert_ids: list[int]

    @classmethod
    def from_result(cls, result: Decommissioned) -> DeviceDecommissioned:
        """What decommissioning did, as the API answers it."""
        return cls(**asdict(result.device), resolved_alert_ids=result.resolved_alert_ids)


class ImportCreated(BaseModel):
    """A row of an import that created a device (its credentials shown this once)."""

    line: int
    device: DeviceRegistration
    credentials: MqttCredentialsPublic | None


class ImportRefused(BaseModel):
    """A row of an import that was refused, and why."""

    line: int
    id: str
    reason: str


class ImportReportPublic(BaseModel):
    """What an import created (with credentials, shown once) and what it refused, and why."""

    created: list[ImportCreated]
    refused: list[ImportRefused]
    created_count: int
    refused_count: int
    # The created devices' credentials as CSV (id,kind,site,label,username,password,url,
    # ca_sha256,ca_url) for installers; never stored on the server.
    credentials_csv: str

    @classmethod
    def from_report(cls, report: ImportReport) -> ImportReportPublic:
        """The import's report as the API answers it, with the credentials as CSV."""
        return cls(
            created=[
                ImportCreated(
                    line=item.line,
                    device=DeviceRegistration.from_record(item.device),
                    credentials=MqttCredentialsPublic.from_optional(item.credentials),
                )
                for item in report.created
            ],
            refused=[
                ImportRefused(line=refusal.line, id=refusal.id, reason=refusal.reason)
                for refusal in report.refused
            ],
            created_count=len(report.created),
            refused_count=len(report.refused),
            credentials_csv=credentials_csv(report.created),
        )


class BridgeCreate(RequestBody):
    """A zigbee2mqtt bridge account ``zigbee2mqtt.<id>`` of the caller's organisation."""

    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(max_length=63)]
    label: Annotated[str, Field(max_length=200)] = ""
    # zigbee2mqtt's mqtt.base_topic for this bridge (+#13); checked by carewatch.fleet.
    base_topic: Annotated[str, Field(max_length=200)] = DEFAULT_BASE_TOPIC


class BridgeUpdate(RequestBody):
    """A bridge's new base topic: zigbee2mqtt's ``mqtt.base_topic`` changed (+#13)."""

    model_config = ConfigDict(extra="forbid")

    # Checked by carewatch.fleet, as at creation.
    base_topic: Annotated[str, Field(max_length=200)]


class BridgePublic(BaseModel):
    """A zigbee2mqtt bridge of the caller's organisation and how many active devices use it."""

    id: str
    username: str
    label: str
    created_at: datetime
    active_devices: int
    base_topic: str = DEFAULT_BASE_TOPIC

    @classmethod
    def from_bridge(cls, bridge: Bridge) -> BridgePublic:
        """The bridge as the API answers it."""
        return cls.model_validate(asdict(bridge))


class BridgeCreated(BridgePublic):
    """A bridge just created or given a new password: ``credentials`` shown once."""

    credentials: MqttCredentialsPublic

    @classmethod
    def issued(cls, bridge: Bridge, credentials: MqttCredentials) -> BridgeCreated:
        """The bridge with the credentials just issued to it."""
        return cls(
            **asdict(bridge), credentials=MqttCredentialsPublic.from_credentials(credentials)
        )


class AnnouncedDevicePublic(BaseModel):
    """A device a bridge announced on ``<base>/bridge/devices`` (+#13) and what Carewatch makes
    of it: ``kind`` None = its model is not mapped (never guessed); ``device_id`` = the active
    device onboarded under its name behind this bridge; ``offered`` = onboarding offers it."""

    ieee_address: str
    friendly_name: str
    type: str | None
    model: str | None
    vendor: str | None
    description: str | None
    model_id: str | None
    interview_completed: bool
    power_source: str | None
    supported: bool | None
    disabled: bool
    seen_at: datetime
    mapped: bool
    kind: str | None
    device_id: str | None
    offered: bool

    @classmethod
    def from_row(cls, row: AnnouncedRow) -> AnnouncedDevicePublic:
        """The announced device as the API answers it."""
        return cls(
            **asdict(row.device),
            seen_at=row.seen_at,
            mapped=row.mapped,
            kind=row.kind,
            device_id=row.device_id,
            offered=row.offered,
        )


class BridgeAnnouncedPublic(BaseModel):
    """What one bridge last announced; ``received_at`` None and no devices until it has."""

    id: str
    base_topic: str
    received_at: datetime | None
    devices: list[AnnouncedDevicePublic]

    @classmethod
    def from_bridge(cls, bridge: BridgeAnnouncements) -> BridgeAnnouncedPublic:
        """The bridge's announcement as the API answers it."""
        return cls(
            id=bridge.id,
            base_topic=bridge.base_topic,
            received_at=bridge.received_at,
            devices=[AnnouncedDevicePublic.from_row(row) for row in bridge.devices],
        )


# --- usage (GET /api/v1/usage; the dashboards render the same report) ---------------------------

UsageBucket = Literal["hour", "day", "week"]


class UsageCameraBucket(BaseModel):
    """Camera checks that ended in one bucket, and how long they took on average."""

    bucket: datetime
    checks: int
    # Of those, the checks in night hours (18:00-06:00 local).
    night_checks: int
    mean_duration_s: float | None


class UsageCameraChecks(BaseModel):
    """Night camera checks: per bucket, per night and their mean duration."""

    series: list[UsageCameraBucket]
    # Nights that start (18:00 local) inside the period.
    nights: int
    # Checks in night hours inside the period / nights (None when no night starts in it).
    checks_per_night: float | None
    mean_duration_s: float | None


class UsageLockBucket(BaseModel):
    """Lock visits (unlocked, then locked again) in one bucket."""

    bucket: datetime
    visits: int
    mean_duration_s: float | None


class UsageLockVisits(BaseModel):
    """Lock visits: per bucket, in all, per day and their mean duration."""

    series: list[UsageLockBucket]
    visits: int
    visits_per_day: float
    mean_duration_s: float | None


class UsageRobotBucket(BaseModel):
    """Minutes of companion robot interaction in one bucket."""

    bucket: datetime
    minutes: float


class UsageRobotPublic(BaseModel):
    """One robot's minutes of interaction in the period (0 for an unused robot)."""

    device_id: str
    label: str
    site_id: str
    minutes: float
    minutes_per_day: float


class UsageRobotMinutes(BaseModel):
    """Companion robot interaction: per bucket, in all and per robot."""

    series: list[UsageRobotBucket]
    minutes: float
    per_robot: list[UsageRobotPublic]


class UsageAlarmBucket(BaseModel):
    """Alarm presses in one bucket."""

    bucket: datetime
    alarms: int


class UsageAlarms(BaseModel):
    """Alarm presses: per bucket, in all and per day."""

    series: list[UsageAlarmBucket]
    total: int
    per_day: float


class UsageAlertCount(BaseModel):
    """Alerts of one rule and severity opened in the period."""

    rule: str
    severity: Severity
    count: int


class UsageAlerts(BaseModel):
    """Alerts opened in the period."""

    by_rule_severity: list[UsageAlertCount]
    total: int


class UsageSeverityTimes(BaseModel):
    """How fast alerts of one severity were acknowledged and resolved (seconds)."""

    severity: Severity
    alerts: int
    acknowledged: int
    ack_median_s: float | None
    ack_p90_s: float | None
    resolved: int
    resolve_median_s: float | None
    resolve_p90_s: float | None


class UsageSlowAck(BaseModel):
    """An acknowledged alert that waited long for it."""

    alert_id: int
    device_id: str
    label: str
    site_id: str
    rule: str
    severity: Severity
    opened_at: datetime
    ack_s: float


class UsageResponseTimes(BaseModel):
    """Response times per severity, and the slowest acknowledgements."""

    by_severity: list[UsageSeverityTimes]
    slowest: list[UsageSlowAck]


class UsageKindAvailability(BaseModel):
    """The share of time the devices of one kind were online (time-weighted)."""

    kind: str
    devices: int
    share_online: float | None


class UsageDeviceAvailability(BaseModel):
    """A device that was offline during the period, and its share online."""

    device_id: str
    label: str
    site_id: str
    kind: str
    share_online: float


class UsageAvailability(BaseModel):
    """Availability per kind, and the least available devices."""

    by_kind: list[UsageKindAvailability]
    least_available: list[UsageDeviceAvailability]


class UsageBatteryBucket(BaseModel):
    """Batteries replaced in one bucket."""

    bucket: datetime
    replacements: int


class UsageBatteryReplacements(BaseModel):
    """Battery replacements: per bucket and in all."""

    series: list[UsageBatteryBucket]
    total: int


class UsageSiteComparison(BaseModel):
    """One site's totals for the period, to compare the sites side by side."""

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


# --- residences, supervision plans and absences (+#11) -----------------------------------------
# No resident names or personal identity numbers: a residence is the label staff use and,
# optionally, the municipality's case number. The plan's limits are the core's
# (devices.supervision), narrowed where the core's would admit a typo.

RESIDENCE_LABEL_MAX: Final = 64
EXTERNAL_REF_MAX: Final = 64
SUPERVISION_NOTE_MAX: Final = 500
# A care decision gives one to three checks a night; twelve (one every hour) is far beyond any.
MAX_CHECK_TIMES: Final = 12
# Window and retry: a minute at least (less is a typo for minutes), three hours at most (the
# core's limit); the database checks the same bounds (migration 0007).
MIN_SUPERVISION_S: Final = 60
MAX_SUPERVISION_S: Final = 3 * 3600
# How far an absence may start in the past (one forgotten over a weekend, or noticed when a
# month's figures are read) and how far ahead anything about it may lie.
ABSENCE_BACKDATE: Final = timedelta(days=31)
ABSENCE_AHEAD: Final = timedelta(days=366)
# An absence is listed while it is current or upcoming, and for this long after it is over.
ABSENCES_LISTED_DAYS: Final = 30
# Versions of a plan answered (newest first): care decisions change a few times a year.
PLAN_HISTORY_MAX: Final = 100

_CHECK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Dates and times a body may carry: outside these years nothing is meant (and year 1 with an
# offset cannot even be converted to UTC).
_EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST: Final = datetime(2100, 1, 1, tzinfo=UTC)

AbsenceReason = Literal["hospital", "travel", "respite", "other"]
# upcoming: starts later; current: the resident is away now; over: expired, or ended early.
AbsenceState = Literal["upcoming", "current", "over"]


def _label(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise ValueError("a label staff use, such as 'Lgh 12', not blank")
    return value


def _blank_is_none(value: str | None) -> str | None:
    return None if value is None else value.strip() or None


def _date_text(value: object) -> object:
    # pydantic would read a number as Unix time; a date in a body is YYYY-MM-DD, as published.
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("expected a date YYYY-MM-DD")
    return value


def _in_range(value: datetime) -> datetime:
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("a date and time between 2000 and 2100") from None
    if not _EARLIEST <= utc < _LATEST:
        raise ValueError("a date and time between 2000 and 2100")
    return utc


ResidenceLabel = Annotated[
    str,
    Field(min_length=1, max_length=RESIDENCE_LABEL_MAX, pattern=_PLAIN_TEXT),
    AfterValidator(_label),
]
ExternalRef = Annotated[
    str | None,
    Field(max_length=EXTERNAL_REF_MAX, pattern=_PLAIN_TEXT),
    AfterValidator(_blank_is_none),
]
# A time in a body: RFC 3339 with an offset, never a bare number, between 2000 and 2100.
BodyTime = Annotated[AwareDatetime, BeforeValidator(_not_a_number), AfterValidator(_in_range)]
CheckTime = Annotated[str, Field(pattern=_CHECK_TIME, examples=["22:00", "02:00"])]
# Numbers and dates as JSON types, as published: never "3" for 3, or 0 for 1970-01-01.
Weekday = Annotated[int, Field(ge=0, le=6, strict=True)]
SupervisionSeconds = Annotated[int, Field(ge=MIN_SUPERVISION_S, le=MAX_SUPERVISION_S, strict=True)]
BodyDate = Annotated[date, BeforeValidator(_date_text)]
SupervisionNote = Annotated[str, Field(max_length=SUPERVISION_NOTE_MAX, pattern=_PLAIN_TEXT)]


class ResidenceCreate(RequestBody):
    """A new residence at one of the caller's sites; ``label`` is unique within the site."""

    site: Annotated[str, Field(pattern=ORG_SITE_ID_PATTERN)]
    label: ResidenceLabel
    external_ref: ExternalRef = None


class ResidenceUpdate(RequestBody):
    """A change to a residence: its label (left out or ``null``: unchanged), or its external
    reference (``null`` removes it; left out, it stays)."""

    label: Annotated[
        str | None,
        Field(min_length=1, max_length=RESIDENCE_LABEL_MAX, pattern=_PLAIN_TEXT),
        AfterValidator(_label),
    ] = None
    external_ref: ExternalRef = None


class ResidencePublic(BaseModel):
    """A residence, its site and the active devices in it."""

    id: int
    site_id: str
    site_name: str
    label: str
    external_ref: str | None
    created_at: datetime
    device_ids: list[str]


def check_time(text: str) -> time:
    """A check time ``HH:MM`` (already matched by its pattern) as a time of day."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def _night_order(at: time) -> tuple[bool, time]:
    # A night runs from noon to noon (devices.supervision.NIGHT_STARTS): 22:00 before 02:00.
    return (at < NIGHT_STARTS, at)


class PlanChange(RequestBody):
    """A new version of a residence's supervision plan, in force from now on (the earlier ones
    are kept). ``check_times`` are local times ``HH:MM`` in the site's time zone (``[]``: no
    checks from now on); ``weekdays`` (Monday = 0) and ``valid_from``/``valid_to`` (inclusive)
    are those of the night's evening: a check at 02:00 on a Tuesday belongs to Monday's night.
    ``window_s`` is the window either side of each time, ``retry_s`` when staff look again after
    "not seen", ``follow_up`` what a failed retry leads to."""

    check_times: Annotated[list[CheckTime], Field(max_length=MAX_CHECK_TIMES)]
    weekdays: Annotated[list[Weekday], Field(min_length=1, max_length=7)] = Field(
        default_factory=lambda: list(range(7))
    )
    valid_from: BodyDate | None = None
    valid_to: BodyDate | None = None
    window_s: SupervisionSeconds = DEFAULT_WINDOW_S
    retry_s: SupervisionSeconds = DEFAULT_RETRY_S
    follow_up: FollowUp = FollowUp.PHYSICAL_VISIT
    note: SupervisionNote = ""

    @field_validator("check_times")
    @classmethod
    def _no_repeated_times(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a check time is given twice")
        return value

    @field_validator("weekdays")
    @classmethod
    def _no_repeated_days(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a weekday is given twice")
        return value

    @field_validator("valid_to")
    @classmethod
    def _not_before_valid_from(cls, value: date | None, info: ValidationInfo) -> date | None:
        valid_from = info.data.get("valid_from")
        if value is not None and valid_from is not None and value < valid_from:
            raise ValueError("valid_to is before valid_from")
        return value

    @model_validator(mode="after")
    def _the_core_agrees(self) -> Self:
        # The gateway judges checks through PlanVersion: what passes here is what it applies.
        self.to_version(residence_id=0, recorded_at=datetime.now(UTC))
        return self

    def times(self) -> tuple[time, ...]:
        """The check times in the order the night reaches them (22:00 before 02:00)."""
        return tuple(sorted(map(check_time, self.check_times), key=_night_order))

    def to_version(self, *, residence_id: int, recorded_at: datetime) -> PlanVersion:
        """The plan as the core's version recorded at ``recorded_at`` (ValueError if the core
        refuses it)."""
        return PlanVersion(
            residence_id=str(residence_id),
            recorded_at=recorded_at,
            check_times=self.times(),
            weekdays=frozenset(self.weekdays),
            valid_from=self.valid_from,
            valid_to=self.valid_to,
            window_s=self.window_s,
            retry_s=self.retry_s,
            follow_up=self.follow_up,
        )


class PlanVersionPublic(BaseModel):
    """One recorded version of a supervision plan (check times ``HH:MM``, in night order)."""

    id: int
    recorded_at: datetime
    recorded_by: str
    check_times: list[str]
    weekdays: list[int]
    valid_from: date | None
    valid_to: date | None
    window_s: int
    retry_s: int
    follow_up: FollowUp
    note: str

    @field_validator("check_times", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        # The database's time[] comes back as times; the API speaks HH:MM.
        if isinstance(value, list):
            return [at.strftime("%H:%M") if isinstance(at, time) else at for at in value]
        return value


class PlanPublic(BaseModel):
    """A residence's supervision plan: the version in force (null: none was ever recorded) and
    the versions recorded, newest first (at most ``PLAN_HISTORY_MAX``)."""

    residence_id: int
    in_force: PlanVersionPublic | None
    history: list[PlanVersionPublic]


class AbsenceCreate(RequestBody):
    """A resident's absence: from ``starts_at`` (default: now; at most 31 days back) until
    ``expected_end`` (null: until ended), during which no checks fall due."""

    reason: AbsenceReason
    starts_at: BodyTime | None = None
    expected_end: BodyTime | None = None
    note: SupervisionNote = ""

    @model_validator(mode="after")
    def _a_sensible_period(self) -> Self:
        now = datetime.now(UTC)
        if self.starts_at is None:
            self.starts_at = now
        elif not now - ABSENCE_BACKDATE <= self.starts_at <= now + ABSENCE_AHEAD:
            raise ValueError("starts_at: at most 31 days ago and at most a year ahead")
        if self.expected_end is not None:
            if self.expected_end <= self.starts_at:
                raise ValueError("expected_end must be after starts_at")
            if self.expected_end > self.starts_at + ABSENCE_AHEAD:
                raise ValueError("expected_end: at most a year after starts_at")
        return self


class AbsencePublic(BaseModel):
    """An absence; it covers ``starts_at`` until ``expected_end`` or ``ended_at``, whichever
    comes first."""

    id: int
    residence_id: int
    reason: AbsenceReason
    state: AbsenceState
    starts_at: datetime
    expected_end: datetime | None
    ended_at: datetime | None
    note: str
    created_by: str
    created_at: datetime


# --- physical visits and the night round (+#11) ------------------------------------------------

# A visit is recorded while (or soon after) it happens: a clock a few minutes ahead is tolerated,
# a visit forgotten until the next shift is not backdated further than a day (the checks it
# could settle are those of the last night at most).
VISIT_AHEAD: Final = timedelta(minutes=5)
VISIT_BACKDATE: Final = timedelta(hours=24)
# Visits listed: since ``since`` (default: the last 7 days), newest first, at most this many (a
# night patrol visits a residence a few times a night at most).
VISITS_LISTED_DAYS: Final = 7
VISITS_LISTED_MAX: Final = 200
# Residences (with a plan) in one night round, over every site answered, by site and label:
# at most 12 checks each, so at most 6000 checks in an answer. A care home has dozens.
NIGHT_ROUND_RESIDENCES_MAX: Final = 500
_NIGHT_YEARS: Final = (2000, 2099)  # nights outside these years mean nothing (and overflow)

VisitSource = Literal["staff", "lock"]


class VisitCreate(RequestBody):
    """A physical visit staff made to a residence: at ``visited_at`` (RFC 3339 with an offset;
    default now; at most 24 h ago and at most 5 min ahead), with an optional note. It settles
    the planned check whose window it falls in and ends its ``physical_visit_needed`` alert
    (the gateway's next supervision pass)."""

    visited_at: BodyTime | None = None
    note: SupervisionNote = ""

    @model_validator(mode="after")
    def _recent(self) -> Self:
        now = datetime.now(UTC)
        if self.visited_at is None:
            self.visited_at = now
        elif not now - VISIT_BACKDATE <= self.visited_at <= now + VISIT_AHEAD:
            raise ValueError("visited_at: at most 24 hours ago and at most 5 minutes ahead")
        return self


class VisitPublic(BaseModel):
    """A physical visit: recorded by staff (``recorded_by``, a note) or proved by the
    residence's lock unlocked and locked again (``lock_device_id``)."""

    id: int
    residence_id: int
    visited_at: datetime
    source: VisitSource
    recorded_by: str | None
    note: str
    lock_device_id: str | None
    created_at: datetime


def night_date(text: str) -> date:
    """A night (its evening's date) ``YYYY-MM-DD`` from a query (ValueError if it is not a
    date between 2000 and 2099)."""
    night = date.fromisoformat(text)
    if not _NIGHT_YEARS[0] <= night.year <= _NIGHT_YEARS[1]:
        raise ValueError("a night between 2000 and 2099")
    return night


class NightRoundCheck(BaseModel):
    """One planned check of the night. ``state`` is the supervision pass's verdict when it has
    judged the check (``judged``); before that it is ``paused`` (an absence covers the planned
    time), ``upcoming`` (the window has not opened) or ``due`` (the window is open and the next
    pass will judge it). ``alert_ids``: the check's unresolved supervision alerts."""

    residence_id: int
    residence_label: str
    planned_at: datetime
    planned_local: Annotated[str, Field(examples=["22:00"])]  # HH:MM in the site's time zone
    window_start: datetime
    window_end: datetime
    state: CheckState
    judged: bool
    seen_at: datetime | None = None
    duration_s: float | None = None
    # When to look again after "not seen" (while the retry is due); when the visit was made.
    retry_at: datetime | None = None
    visited_at: datetime | None = None
    not_seen: bool = False
    visit_needed: bool = False
    by_visit: bool = False
    camera_failed: bool = False
    alert_ids: list[int] = Field(default_factory=list)


class NightRoundResidence(BaseModel):
    """A residence with a supervision plan and its unresolved supervision alerts of the night."""

    id: int
    label: str
    open_alert_ids: list[int]


class NightRoundSite(BaseModel):
    """One site's night: its residences with a plan (by label) and their checks in time order."""

    site_id: str
    site_name: str
    timezone: str
    night: date
    residences: list[NightRoundResidence]
    checks: list[NightRoundCheck]


class NightRound(BaseModel):
    """The night round of the caller's sites (or one). ``truncated``: more than
    ``NIGHT_ROUND_RESIDENCES_MAX`` (500) residences with a plan; the first 500 by site and label
    are answered (ask per site)."""

    sites: list[NightRoundSite]
    truncated: bool


# --- supervision summary (+#11) -----------------------------------------------------------------


class SupervisionTally(BaseModel):
    """Planned checks counted as :class:`devices.supervision.NightTally` counts them."""

    planned: int = 0
    paused: int = 0
    done_in_window: int = 0
    late: int = 0
    missed: int = 0
    not_seen: int = 0
    visits_needed: int = 0
    replaced_by_visits: int = 0


class SupervisionNight(SupervisionTally):
    """One site's night (its evening's date) with its lock-proved visits."""

    night: date
    lock_visits: int = 0


class SupervisionAssumptions(BaseModel):
    """A site's minutes the effect estimate multiplies by (``PATCH /api/v1/sites/{id}``)."""

    visit_minutes: int
    key_handling_minutes: int


class SupervisionEffect(BaseModel):
    """The effect estimate over the period: checks the camera did (done + late) are physical
    night visits avoided; lock-proved visits are key handling avoided."""

    visits_avoided: int
    staff_minutes_saved: int
    lock_visits: int
    key_minutes_saved: int


class SupervisionSiteSummary(BaseModel):
    """One site: the nights that have checks or lock visits (in order), totals, effect."""

    site_id: str
    site_name: str
    timezone: str
    nights: list[SupervisionNight]
    totals: SupervisionTally
    effect: SupervisionEffect
    assumptions: SupervisionAssumptions


class SupervisionSummary(BaseModel):
    """Supervision per site and night from ``since`` to ``until`` (nights, both included);
    ``assumptions_explained`` says what each assumption means."""

    since: date
    until: date
    sites: list[SupervisionSiteSummary]
    assumptions_explained: dict[str, str]


# --- device maintenance windows (+#11) ---------------------------------------------------------

# A window is recorded when the work starts or is planned: backdated by a day at most (the
# technician who forgot to record it this morning), planned at most a year ahead, and at most
# 30 days long (a device out for longer is decommissioned or replaced, not silenced).
MAINTENANCE_BACKDATE: Final = timedelta(hours=24)
MAINTENANCE_AHEAD: Final = timedelta(days=366)
MAINTENANCE_MAX: Final = timedelta(days=30)
MAINTENANCE_NOTE_MAX: Final = 500
# A window is listed while it is current or upcoming, and for this long after it is over.
MAINTENANCE_LISTED_DAYS: Final = 30

MaintenanceState = Literal["upcoming", "current", "over"]


class MaintenanceCreate(RequestBody):
    """A device's maintenance window: from ``starts_at`` (default: now; at most 24 h back)
    until ``ends_at`` (after starts_at and after now, at most 30 days after starts_at)."""

    starts_at: BodyTime | None = None
    ends_at: BodyTime
    note: Annotated[str, Field(max_length=MAINTENANCE_NOTE_MAX, pattern=_PLAIN_TEXT)] = ""

    @model_validator(mode="after")
    def _a_sensible_window(self) -> Self:
        now = datetime.now(UTC)
        if self.starts_at is None:
            self.starts_at = now
        elif not now - MAINTENANCE_BACKDATE <= self.starts_at <= now + MAINTENANCE_AHEAD:
            raise ValueError("starts_at: at most 24 hours ago and at most a year ahead")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if self.ends_at > self.starts_at + MAINTENANCE_MAX:
            raise ValueError("ends_at: at most 30 days after starts_at")
        # A window already over when recorded would silence nothing.
        if self.ends_at <= now:
            raise ValueError("ends_at must be in the future")
        return self


class MaintenancePublic(BaseModel):
    """A maintenance window; it covers ``starts_at`` until ``ends_at`` or ``ended_at``,
    whichever comes first (an upcoming window ended early covers nothing)."""

    id: int
    device_id: str
    state: MaintenanceState
    starts_at: datetime
    ends_at: datetime
    ended_at: datetime | None
    note: str
    created_by: str
    created_at: datetime

    @classmethod
    def from_window(cls, window: MaintenanceWindow) -> MaintenancePublic:
        """The API's view of a window of :mod:`carewatch.fleet`."""
        return cls.model_validate(asdict(window))


# --- what is paused now: the board's "Paused now" (+#11) ---------------------------------------

# Pauses answered per kind, by site and label. An organisation has a handful at a time; the cap
# keeps one answer cheap whatever is recorded (``truncated`` says there were more).
PAUSES_LISTED_MAX: Final = 500


class PausedResidence(BaseModel):
    """A residence whose resident is away now: no checks fall due until ``expected_end`` (null:
    until someone ends the absence). ``timezone`` is the site's, for showing times locally."""

    absence_id: int
    residence_id: int
    residence_label: str
    site_id: str
    site_name: str
    timezone: str
    reason: AbsenceReason
    starts_at: datetime
    expected_end: datetime | None
    note: str


class PausedDevice(BaseModel):
    """A device in repair now: its health alerts are silent until ``ends_at`` (the window's
    end, or the moment it was ended early). ``timezone`` is the site's."""

    maintenance_id: int
    device_id: str
    device_kind: str
    device_label: str
    residence_id: int | None
    residence_label: str | None
    site_id: str
    site_name: str
    timezone: str
    starts_at: datetime
    ends_at: datetime
    note: str


class PausesPublic(BaseModel):
    """What is paused now at the caller's sites, each list by site and label; ``truncated``:
    more than ``PAUSES_LISTED_MAX`` (500) of a kind, the first 500 answered (ask per site)."""

    absences: list[PausedResidence]
    maintenance: list[PausedDevice]
    truncated: bool
