"""zigbee2mqtt friendly names as installations write them: what devices.ids accepts, what it
refuses and why (pure). The database's CHECK of migration 0015 is held to the same table in
tests/integration/test_zigbee2mqtt_gateway.py."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.ids import ZIGBEE_NAME_MAX_CHARS, is_zigbee_name, zigbee_name_problem

# Names seen in zigbee2mqtt's issues and documentation, and what a Swedish care home writes.
ACCEPTED = [
    pytest.param("hall_door", id="plain"),
    pytest.param("Front Door Lock", id="spaces"),
    pytest.param("Lgh 14 lås", id="utf8"),
    pytest.param("Bedroom Window", id="capitals"),
    pytest.param("kitchen/door", id="hierarchy"),
    pytest.param("living_room/sensor/0004/doorsensor", id="deep-hierarchy"),
    pytest.param("0x00158d0001d82999", id="ieee-address"),
    pytest.param("-leading-dash", id="leading-dash"),
    pytest.param("a.b:c", id="dots-inside-a-level"),
    pytest.param("...", id="three-dots"),
    pytest.param("set", id="set-as-the-only-level"),
    pytest.param("availability", id="availability-as-the-only-level"),
    pytest.param("kitchen/doors 2", id="digits-inside-the-last-level"),
    pytest.param("100% <b>dörr</b> & 'fönster'", id="markup-is-text"),
    pytest.param("Bridge", id="Bridge-capitalised"),
    pytest.param("bridges/hall", id="bridge-as-a-prefix-of-a-level"),
    pytest.param("🚪 entré", id="emoji"),
    pytest.param("x" * ZIGBEE_NAME_MAX_CHARS, id="longest"),
]

REFUSED = [
    pytest.param("", "empty", id="empty"),
    pytest.param("x" * (ZIGBEE_NAME_MAX_CHARS + 1), "longer than", id="too-long"),
    pytest.param("kitchen/+", "wildcards", id="plus"),
    pytest.param("kitchen/#", "wildcards", id="hash"),
    pytest.param("door#1", "wildcards", id="hash-inside"),
    pytest.param("nul\x00name", "control", id="nul"),
    pytest.param("two\nlines", "control", id="newline"),
    pytest.param("tab\there", "control", id="tab"),
    pytest.param("del\x7f", "control", id="delete"),
    pytest.param("c1\x85", "control", id="c1-next-line"),
    pytest.param("zero\u200bwidth", "format", id="zero-width-space"),
    pytest.param("evil\u202eroD", "format", id="right-to-left-override"),
    pytest.param("line\u2028sep", "line-separator", id="line-separator"),
    pytest.param("non\ufffecharacter", "control", id="noncharacter"),
    pytest.param(" door", "space at the start or end", id="leading-space"),
    pytest.param("door ", "space at the start or end", id="trailing-space"),
    pytest.param("door\u00a0", "space at the start or end", id="trailing-nbsp"),
    pytest.param("/door", "empty level", id="leading-slash"),
    pytest.param("door/", "empty level", id="trailing-slash"),
    pytest.param("kitchen//door", "empty level", id="double-slash"),
    pytest.param("/", "empty level", id="slash-alone"),
    pytest.param(".", ". or ..", id="dot"),
    pytest.param("..", ". or ..", id="dot-dot"),
    pytest.param("../other_org/door", ". or ..", id="path-traversal"),
    pytest.param("kitchen/./door", ". or ..", id="dot-level"),
    pytest.param("bridge", "zigbee2mqtt's own", id="bridge"),
    pytest.param("bridge/devices", "zigbee2mqtt's own", id="bridge-devices"),
    pytest.param("door/availability", "'availability'", id="availability-suffix"),
    pytest.param("door/set", "'set'", id="set-suffix"),
    pytest.param("door/get", "'get'", id="get-suffix"),
    pytest.param("door/set/state", "'set'", id="set-property"),
    pytest.param("door/availability/x", "'availability'", id="availability-inside"),
    pytest.param("door/4", "endpoint", id="endpoint-number"),
]


@pytest.mark.parametrize("name", ACCEPTED)
def test_names_as_users_write_them_are_accepted(name: str) -> None:
    """UTF-8, spaces, / between levels, markup as plain text: accepted as they are."""
    assert zigbee_name_problem(name) is None
    assert is_zigbee_name(name)


@pytest.mark.parametrize(("name", "reason"), REFUSED)
def test_dangerous_or_ambiguous_names_are_refused_with_a_reason(name: str, reason: str) -> None:
    """Wildcards, control and invisible characters, empty, . and .. levels, zigbee2mqtt's own
    topics and spaces an ACL line would lose are refused, saying which."""
    problem = zigbee_name_problem(name)
    assert problem is not None
    assert reason in problem
    assert not is_zigbee_name(name)


@given(st.text(max_size=ZIGBEE_NAME_MAX_CHARS + 10))
def test_an_accepted_name_is_always_one_exact_topic_tail(name: str) -> None:
    """Whatever text is accepted can be published and told apart from zigbee2mqtt's own topics:
    no wildcard, no empty level, no reserved level after the first, no space at an end."""
    if not is_zigbee_name(name):
        return
    levels = name.split("/")
    assert "+" not in name
    assert "#" not in name
    assert "\x00" not in name
    assert all(levels)
    assert levels[0] != "bridge"
    assert not {"availability", "set", "get"} & set(levels[1:])
    assert name == name.strip()
    assert 1 <= len(name) <= ZIGBEE_NAME_MAX_CHARS
