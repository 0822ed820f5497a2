"""Who may do what: the four roles and the one table of what each may do.

Every check of a role (the API's dependencies, the pages' guards and navigation, the CLI's
``user add``) reads this table, so a role's rights change in one place. The roles themselves
are also a CHECK constraint on ``users.role`` (migration 0002).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from devices.audience import Audience


class Role(StrEnum):
    """A user's role inside their organisation (the contract's table of roles)."""

    CAREGIVER = "caregiver"
    TECHNICIAN = "technician"
    MANAGER = "manager"
    ADMIN = "admin"


class Permission(StrEnum):
    """Something a role may do; the names say what, the table below says who."""

    SEE_ALERTS = "see_alerts"
    ACT_ON_ALERTS = "act_on_alerts"  # acknowledge and resolve care alerts; work responses
    # Acknowledge and resolve technical alerts (devices/audience.py): device health is the
    # technicians' work (issue 12).
    ACT_ON_TECHNICAL_ALERTS = "act_on_technical_alerts"
    MANAGE_FLEET = "manage_fleet"  # fleet health, onboarding, changing and decommissioning
    READ_USAGE = "read_usage"  # usage dashboards, reports and CSV
    ADMINISTER = "administer"  # sites, their rule settings, users
    # Residences and their supervision plans: the unit manager enters the check times a care
    # decision gives.
    PLAN_SUPERVISION = "plan_supervision"
    # A resident's absence (hospital, travel, respite): night staff pause the checks themselves
    # when a resident is taken to hospital at 1 a.m.
    RECORD_ABSENCE = "record_absence"


ROLES: Final = tuple(Role)

GRANTS: Final[Mapping[Permission, frozenset[Role]]] = MappingProxyType(
    {
        Permission.SEE_ALERTS: frozenset(Role),
        Permission.ACT_ON_ALERTS: frozenset({Role.CAREGIVER, Role.ADMIN}),
        Permission.ACT_ON_TECHNICAL_ALERTS: frozenset({Role.TECHNICIAN, Role.ADMIN}),
        Permission.MANAGE_FLEET: frozenset({Role.TECHNICIAN, Role.ADMIN}),
        Permission.READ_USAGE: frozenset({Role.MANAGER, Role.ADMIN}),
        Permission.ADMINISTER: frozenset({Role.ADMIN}),
        Permission.PLAN_SUPERVISION: frozenset({Role.MANAGER, Role.ADMIN}),
        Permission.RECORD_ABSENCE: frozenset({Role.CAREGIVER, Role.MANAGER, Role.ADMIN}),
    }
)


# The audience each act permission covers: acting on an alert needs one of them for one of the
# alert's audiences.
_ACT_AUDIENCES: Final[Mapping[Audience, Permission]] = MappingProxyType(
    {
        Audience.CARE: Permission.ACT_ON_ALERTS,
        Audience.TECHNICAL: Permission.ACT_ON_TECHNICAL_ALERTS,
    }
)

BOARD_AUDIENCES: Final[Mapping[Role, frozenset[Audience]]] = MappingProxyType(
    {
        Role.CAREGIVER: frozenset({Audience.CARE}),
        Role.TECHNICIAN: frozenset({Audience.TECHNICAL}),
        Role.MANAGER: frozenset(Audience),
        Role.ADMIN: frozenset(Audience),
    }
)
"""What each role's board shows (issue 12): caregivers the care alerts, technicians the
technical ones, managers and admins all. The API still answers every visible alert to anyone
who asks without ``audience=``."""


def may(role: str, permission: Permission) -> bool:
    """Whether ``role`` has ``permission`` (an unknown role has none)."""
    return role in GRANTS[permission]


def act_audiences(role: str) -> frozenset[Audience]:
    """The audiences of the alerts ``role`` may acknowledge and resolve."""
    return frozenset(a for a, permission in _ACT_AUDIENCES.items() if may(role, permission))


def may_act_on(role: str, audiences: Iterable[str]) -> bool:
    """Whether ``role`` may acknowledge and resolve an alert for ``audiences``."""
    return not act_audiences(role).isdisjoint(audiences)
