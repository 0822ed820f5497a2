"""The API's models: what it accepts (``*Create``, ``AlertNote``) and answers (``*Public``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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


class TokenPublic(BaseModel):
    """The answer of ``POST /api/v1/auth/token`` (OAuth2 password flow)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret
