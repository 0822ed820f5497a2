"""Who an alert is for (issue 12): the routing table, its safety exceptions and site routing."""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carewatch.roles import BOARD_AUDIENCES, Role, act_audiences, may_act_on
from devices.audience import (
    ALL_AUDIENCES,
    DEFAULT_AUDIENCES,
    KNOWN_RULES,
    Audience,
    AudienceError,
    Routing,
    audiences,
    build_audiences,
)
from devices.catalog import DEFAULT_CATALOG, Severity

CARE = frozenset({Audience.CARE})
TECHNICAL = frozenset({Audience.TECHNICAL})
BOTH = ALL_AUDIENCES


@pytest.mark.parametrize(
    ("rule", "kind", "severity", "has_plan", "expected"),
    [
        # The issue's board: device health of robots and locks is the technicians' alone.
        ("device_offline", "companion_robot", "high", False, TECHNICAL),
        ("device_offline", "door_lock", "high", True, TECHNICAL),
        ("battery_low", "door_lock", "warning", False, TECHNICAL),
        ("tamper", "door_lock", "high", False, TECHNICAL),
        ("battery_low", "companion_robot", "high", False, TECHNICAL),
        ("device_offline", "smoke_detector", "critical", False, TECHNICAL),
        # Care alerts.
        ("alarm_pressed", "alarm_button", "critical", False, CARE),
        ("smoke_detected", "smoke_detector", "critical", False, CARE),
        ("water_leak", "water_sensor", "critical", False, CARE),
        ("door_left_open", "door_contact", "high", False, CARE),
        ("resident_not_seen", "safety_camera", "high", True, CARE),
        ("supervision_missed", "safety_camera", "high", True, CARE),
        ("physical_visit_needed", "safety_camera", "critical", True, CARE),
        # Safety exceptions: the fault takes someone's safety away, so care staff hear of it.
        ("device_offline", "alarm_button", "critical", False, BOTH),
        ("battery_low", "alarm_button", "high", False, BOTH),
        ("battery_low", "alarm_button", "warning", False, TECHNICAL),
        ("device_offline", "safety_camera", "critical", True, BOTH),
        ("device_offline", "safety_camera", "critical", False, TECHNICAL),
        ("camera_stream_lost", "safety_camera", "high", True, BOTH),
        ("camera_stream_lost", "safety_camera", "high", False, TECHNICAL),
        ("lock_jammed", "door_lock", "high", False, BOTH),
        ("battery_low", "door_lock", "high", False, BOTH),
        # A rule nobody routed reaches everyone.
        ("a_rule_of_a_newer_gateway", "door_lock", "high", False, BOTH),
    ],
    ids=lambda value: None if isinstance(value, frozenset) else str(value),
)
def test_default_routing(
    rule: str, kind: str, severity: str, has_plan: bool, expected: frozenset[Audience]
) -> None:
    """The packaged table routes each alert as issue 12 asks, exceptions included."""
    assert audiences(rule, kind, severity, residence_has_plan=has_plan) == expected


@pytest.mark.parametrize(
    ("rule", "kind", "severity", "site", "expected"),
    [
        ("battery_low", "companion_robot", "warning", {"battery_low": "both"}, BOTH),
        ("battery_low", "companion_robot", "warning", {"battery_low": "care"}, CARE),
        ("tamper", "door_lock", "high", {"device_offline": "care"}, TECHNICAL),
        ("door_left_unlocked", "door_lock", "high", {"door_left_unlocked": "both"}, BOTH),
        # A care rule keeps its care staff, whatever the site's row says.
        ("alarm_pressed", "alarm_button", "critical", {"alarm_pressed": "technical"}, BOTH),
        # A safety exception stays on: the site cannot route it away from care staff.
        ("lock_jammed", "door_lock", "high", {"lock_jammed": "technical"}, BOTH),
        # A value that is not a routing is ignored, never hides an alert.
        ("battery_low", "door_lock", "warning", {"battery_low": "nobody"}, TECHNICAL),
        ("battery_low", "door_lock", "warning", {"battery_low": 3}, TECHNICAL),
    ],
    ids=[
        "battery-both",
        "battery-care",
        "other-rule",
        "door-both",
        "care-keeps-care",
        "exception-stays",
        "bad-value",
        "not-a-string",
    ],
)
def test_site_routing(
    rule: str, kind: str, severity: str, site: dict[str, Any], expected: frozenset[Audience]
) -> None:
    """A site's routing replaces the table's for its rules, within the care and safety floors."""
    assert audiences(rule, kind, severity, site_routing=site) == expected


_KINDS = st.sampled_from(sorted(DEFAULT_CATALOG))
_RULES = st.sampled_from(sorted(KNOWN_RULES))
_SEVERITIES = st.sampled_from([s.value for s in Severity])
_ROUTINGS = st.dictionaries(_RULES, st.sampled_from([r.value for r in Routing]), max_size=6)


@given(_RULES, _KINDS, _SEVERITIES, st.booleans(), _ROUTINGS)
def test_every_alert_reaches_someone_and_care_is_never_lost(
    rule: str, kind: str, severity: str, has_plan: bool, site: dict[str, str]
) -> None:
    """Any facts and any site routing: the alert has an audience, a care rule keeps care, and a
    site's routing can only add to what the safety exceptions give."""
    result = audiences(rule, kind, severity, residence_has_plan=has_plan, site_routing=site)
    assert result
    assert result <= ALL_AUDIENCES
    if Audience.CARE in DEFAULT_AUDIENCES.rules[rule].audiences:
        assert Audience.CARE in result
    if any(
        e.applies(kind, rule, severity, residence_has_plan=has_plan)
        for e in DEFAULT_AUDIENCES.safety
    ):
        assert Audience.CARE in result
    if rule in site:
        assert Routing(site[rule]).audiences <= result


@given(_RULES, _KINDS, _SEVERITIES)
def test_a_plan_only_ever_adds_care(rule: str, kind: str, severity: str) -> None:
    """A residence's supervision plan can bring an alert to care staff, never take it away."""
    without = audiences(rule, kind, severity, residence_has_plan=False)
    with_plan = audiences(rule, kind, severity, residence_has_plan=True)
    assert without <= with_plan
    assert with_plan - without <= CARE


def test_the_table_routes_every_known_rule() -> None:
    """Every rule of the catalog and of the night checks has a routing in the packaged file."""
    assert set(DEFAULT_AUDIENCES.rules) == KNOWN_RULES


def _document(**changes: Any) -> dict[str, Any]:
    text = resources.files("devices").joinpath("audience.toml").read_text(encoding="utf-8")
    document = tomllib.loads(text)
    document.update(changes)
    return document


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_document(extra={}), "unknown key(s) extra"),
        (_document(rules={"alarm_pressed": "care"}), "no audience for"),
        (_document(rules={**_document()["rules"], "nap": "care"}), "rules.nap: not a rule"),
        (_document(rules={**_document()["rules"], "tamper": "everyone"}), "not one of"),
        (_document(safety=[{"kind": "toaster", "rule": "tamper"}]), "not a kind"),
        (_document(safety=[{"kind": "alarm_button", "rule": "lock_jammed"}]), "has no rule"),
        (
            _document(safety=[{"kind": "door_lock", "rule": "tamper", "min_severity": "loud"}]),
            "not a severity",
        ),
        (
            _document(safety=[{"kind": "door_lock", "rule": "tamper", "needs_plan": "yes"}]),
            "needs_plan",
        ),
        (_document(safety={"kind": "door_lock"}), "array of tables"),
    ],
    ids=[
        "unknown-key",
        "rule-missing",
        "unknown-rule",
        "bad-routing",
        "unknown-kind",
        "kind-lacks-rule",
        "bad-severity",
        "bad-needs-plan",
        "safety-not-array",
    ],
)
def test_the_loader_refuses_a_bad_table(document: dict[str, Any], message: str) -> None:
    """A misspelt table stops the service at start-up, naming what is wrong."""
    with pytest.raises(AudienceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build_audiences(document)


@pytest.mark.parametrize(
    ("routing", "message"),
    [
        ({"alarm_pressed": "technical"}, "alarm_pressed is a care alert"),
        ({"nap": "care"}, "nap: not a rule"),
        ({"battery_low": "everyone"}, "not one of care, technical, both"),
    ],
    ids=["care-to-technical", "unknown-rule", "bad-value"],
)
def test_a_bad_site_routing_is_refused(routing: dict[str, str], message: str) -> None:
    """What an admin may not set is refused with a sentence (the API's 422)."""
    with pytest.raises(AudienceError, match=message):
        DEFAULT_AUDIENCES.check_site_routing(routing)


def test_a_good_site_routing_is_kept() -> None:
    """Technical rules may go anywhere, care rules to care or both."""
    routing = {"battery_low": "both", "tamper": "care", "alarm_pressed": "both"}
    assert DEFAULT_AUDIENCES.check_site_routing(routing) == routing


@pytest.mark.parametrize(
    ("role", "board", "acts_on"),
    [
        (Role.CAREGIVER, CARE, CARE),
        (Role.TECHNICIAN, TECHNICAL, TECHNICAL),
        (Role.MANAGER, BOTH, frozenset()),
        (Role.ADMIN, BOTH, BOTH),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_roles_and_audiences(
    role: Role, board: frozenset[Audience], acts_on: frozenset[Audience]
) -> None:
    """Each role's board and the alerts it may acknowledge and resolve."""
    assert BOARD_AUDIENCES[role] == board
    assert act_audiences(role) == acts_on
    assert may_act_on(role, ["care"]) == (Audience.CARE in acts_on)
    assert may_act_on(role, ["technical"]) == (Audience.TECHNICAL in acts_on)
    assert may_act_on(role, ["care", "technical"]) == bool(acts_on)
