"""A bridge's base topic and the devices it announces (issue 13, items 3 and 4), pure: the
checks, the reading of ``bridge/devices``, the ACL lines, the gateway's filters and the sorting
of a batch. Over MQTT with the real broker and gateway:
tests/integration/test_zigbee2mqtt_discovery.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.auth_files import Account, BrokerAuth, Role, render
from devices.catalog import DEFAULT_CATALOG
from devices.envelope import Rejected, RejectReason
from devices.zigbee2mqtt_bridges import (
    AnnouncedDevice,
    Announcement,
    base_topic_conflict,
    check_base_topic,
    is_offered,
    parse_announcement,
)
from gateway.discovery import Bridges
from gateway.ingest import classify
from gateway.registry import DeviceRegistry
from gateway.service import topic_filters
from gateway.transport import Message

RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def entry(
    ieee: str | None = "0x00124B00AAAAAAA1", name: str | None = "hall door", **fields: Any
) -> Any:
    """One bridge/devices entry as zigbee2mqtt publishes it (fields override)."""
    return {
        "ieee_address": ieee,
        "type": "EndDevice",
        "network_address": 4711,
        "supported": True,
        "disabled": False,
        "friendly_name": name,
        "definition": {
            "model": "SNZB-04",
            "vendor": "SONOFF",
            "description": "Contact sensor",
            "exposes": [{"type": "binary", "property": "contact"}],
        },
        "power_source": "Battery",
        "model_id": "DS01",
        "interview_completed": True,
        **fields,
    }


# --- base topics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base",
    ["zigbee2mqtt", "z2m-hus-b", "building-b/zigbee2mqtt", "a/b/c/d/e/f/g/h", "Z2M_floor.2:x"],
)
def test_a_base_topic_of_levels_is_accepted(base: str) -> None:
    """Levels of A-Z a-z 0-9 _ . : - separated by /, up to eight."""
    assert check_base_topic(base) is None


@pytest.mark.parametrize(
    "base",
    [
        pytest.param("", id="empty"),
        pytest.param("z2m/+", id="single-level-wildcard"),
        pytest.param("z2m/#", id="multi-level-wildcard"),
        pytest.param("z2m//a", id="empty-level"),
        pytest.param("/z2m", id="leading-slash"),
        pytest.param("z2m/", id="trailing-slash"),
        pytest.param("$SYS/z2m", id="broker-namespace"),
        pytest.param("z2m hus", id="space"),
        pytest.param("z2m\ntopic write #", id="acl-line-injection"),
        pytest.param("a/b/c/d/e/f/g/h/i", id="nine-levels"),
        pytest.param("x" * 65, id="long-level"),
        pytest.param("carewatch", id="devices-namespace"),
        pytest.param("carewatch/devices", id="under-devices-namespace"),
        pytest.param("lås", id="non-ascii"),
    ],
)
def test_a_base_topic_that_is_not_a_plain_prefix_is_refused(base: str) -> None:
    """No wildcard, empty level, $-level, space, control character or carewatch/ namespace."""
    assert check_base_topic(base) is not None


@pytest.mark.parametrize(
    ("base", "others", "conflict"),
    [
        pytest.param("zigbee2mqtt", ["zigbee2mqtt"], None, id="default-shared"),
        pytest.param("z2m-b", ["z2m-a"], None, id="siblings"),
        pytest.param("zigbee2mqtt/floor2", [], "zigbee2mqtt", id="under-the-default"),
        pytest.param("z2m", ["z2m/floor2"], "z2m/floor2", id="above-another"),
        pytest.param("z2m-a/x", ["z2m-a"], "z2m-a", id="below-another"),
        pytest.param("z2m-ab", ["z2m-a"], None, id="a-longer-name-is-not-a-level"),
    ],
)
def test_base_topics_may_not_nest(base: str, others: list[str], conflict: str | None) -> None:
    """One a level prefix of the other would make one topic name two devices."""
    assert base_topic_conflict(base, others) == conflict


# --- reading bridge/devices -----------------------------------------------------------------------


def test_a_device_list_is_read_with_what_matters_for_onboarding() -> None:
    """IEEE address (lower case), name, type, model, vendor, interview, power source."""
    read = parse_announcement(
        orjson.dumps(
            [
                entry(),
                entry("0x00124b00aaaaaaa2", "Coordinator", type="Coordinator", definition=None),
            ]
        )
    )
    assert isinstance(read, Announcement)
    assert read.skipped == 0
    contact, coordinator = read.devices
    assert contact == AnnouncedDevice(
        ieee_address="0x00124b00aaaaaaa1",
        friendly_name="hall door",
        type="EndDevice",
        model="SNZB-04",
        vendor="SONOFF",
        description="Contact sensor",
        model_id="DS01",
        interview_completed=True,
        power_source="Battery",
        supported=True,
        disabled=False,
    )
    assert (coordinator.model, coordinator.vendor, coordinator.type) == (None, None, "Coordinator")
    assert is_offered(contact)
    assert not is_offered(coordinator)


@pytest.mark.parametrize(
    ("fields", "offered"),
    [
        pytest.param({}, True, id="interviewed-end-device"),
        pytest.param({"type": "Router"}, True, id="router"),
        pytest.param({"interview_completed": False}, False, id="interviewing"),
        pytest.param({"interview_completed": "true"}, False, id="interview-as-a-string"),
        pytest.param({"disabled": True}, False, id="disabled"),
        pytest.param({"type": "Coordinator"}, False, id="coordinator"),
    ],
)
def test_only_interviewed_enabled_devices_are_offered(
    fields: dict[str, Any], offered: bool
) -> None:
    """The coordinator, an unfinished interview and a disabled device are never offered."""
    read = parse_announcement(orjson.dumps([entry(**fields)]))
    assert isinstance(read, Announcement)
    assert is_offered(read.devices[0]) is offered


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("not a list", id="not-a-list"),
        pytest.param({"ieee_address": "0x00124b00aaaaaaa1"}, id="an-object"),
        pytest.param(None, id="null"),
    ],
)
def test_a_payload_that_is_not_an_array_is_refused(bad: object) -> None:
    """The whole payload must be zigbee2mqtt's array."""
    read = parse_announcement(orjson.dumps(bad))
    assert isinstance(read, Rejected)
    assert read.reason is RejectReason.WRONG_TYPE


def test_unreadable_entries_are_skipped_and_counted() -> None:
    """No IEEE address, a malformed one, no name, a control character, a repeat: skipped."""
    entries = [
        entry(),
        entry(ieee="0x123"),
        entry(ieee=None),
        entry("0x00124b00aaaaaaa3", name=None),
        entry("0x00124b00aaaaaaa4", name=""),
        entry("0x00124b00aaaaaaa5", name="nul\x00name"),
        entry(name="another name"),  # the same IEEE address again
        entry("0x00124b00aaaaaaa6"),  # the same name again
        "a string",
        entry("0x00124b00aaaaaaa7", name="odd fields", definition="x", power_source=3),
    ]
    read = parse_announcement(orjson.dumps(entries))
    assert isinstance(read, Announcement)
    assert [d.friendly_name for d in read.devices] == ["hall door", "odd fields"]
    assert (read.devices[1].model, read.devices[1].power_source) == (None, None)
    assert read.skipped == 8


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{", RejectReason.NOT_JSON),
        (b"\xff\xfe", RejectReason.NOT_UTF8),
        (orjson.dumps([{}] * 2001), RejectReason.TOO_LARGE),
    ],
    ids=["not-json", "not-utf8", "too-many"],
)
def test_a_payload_that_cannot_be_read_is_a_dead_letter_reason(
    payload: bytes, reason: RejectReason
) -> None:
    """The envelope's reasons, as a dead letter keeps them."""
    read = parse_announcement(payload)
    assert isinstance(read, Rejected)
    assert read.reason is reason


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=6)
        ),
        max_leaves=30,
    )
)
def test_any_json_is_read_or_refused_never_raised(document: object) -> None:
    """Whatever a bridge (or anyone allowed to publish there) sends, nothing raises."""
    read = parse_announcement(orjson.dumps(document))
    assert isinstance(read, Announcement | Rejected)


# --- the broker's ACL -------------------------------------------------------------------------


def acl_of(text: str, username: str) -> list[str]:
    return text.split(f"user {username}\n")[1].split("\n\n")[0].splitlines()


def test_each_bridge_writes_under_its_own_base_topic_and_only_a_lone_one_its_list() -> None:
    """A bridge with a base topic of its own may publish its device list there; bridges that
    share the default may not (they would overwrite one retained list); the gateway may read
    every base topic's device topics, shared or plain, and each list, plain."""
    auth = BrokerAuth(
        accounts=[
            Account("carewatch.gateway", Role.GATEWAY, "$7$101$g$G"),
            Account("zigbee2mqtt.hub-a", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$a$A", "z2m-a"),
            Account("zigbee2mqtt.hub-b", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$b$B", "house/z2m-b"),
            Account("zigbee2mqtt.hub-1", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$1$1"),
            Account("zigbee2mqtt.hub-2", Role.ZIGBEE2MQTT_BRIDGE, "$7$101$2$2"),
        ],
        bridged={"zigbee2mqtt.hub-a": ["front_door"], "zigbee2mqtt.hub-1": ["back_door"]},
    )
    text = render(auth).acl_file
    assert acl_of(text, "zigbee2mqtt.hub-a") == [
        "topic write z2m-a/front_door",
        "topic write z2m-a/front_door/availability",
        "topic write z2m-a/bridge/devices",
    ]
    assert acl_of(text, "zigbee2mqtt.hub-b") == ["topic write house/z2m-b/bridge/devices"]
    assert acl_of(text, "zigbee2mqtt.hub-1") == [
        "topic write zigbee2mqtt/back_door",
        "topic write zigbee2mqtt/back_door/availability",
    ]
    gateway = acl_of(text, "carewatch.gateway")
    assert all(line.startswith("topic read ") for line in gateway)
    for filter_ in (
        "z2m-a/#",
        "$share/+/z2m-a/#",
        "house/z2m-b/#",
        "$share/+/house/z2m-b/#",
        "z2m-a/bridge/devices",
        "house/z2m-b/bridge/devices",
        "zigbee2mqtt/bridge/devices",
    ):
        assert f"topic read {filter_}" in gateway
    assert "topic read $share/+/z2m-a/bridge/devices" not in gateway


def test_a_lone_bridge_on_the_default_base_may_publish_its_list() -> None:
    """Alone on zigbee2mqtt, the list is unambiguously its own."""
    auth = BrokerAuth(accounts=[Account("zigbee2mqtt.hub-1", Role.ZIGBEE2MQTT_BRIDGE, "$7$1$1$1")])
    assert acl_of(render(auth).acl_file, "zigbee2mqtt.hub-1") == [
        "topic write zigbee2mqtt/bridge/devices"
    ]


# --- the gateway ---------------------------------------------------------------------------------


def test_the_gateway_subscribes_under_every_base_and_to_each_list_plainly() -> None:
    """Device topics shared under each base topic; each base's bridge/devices plain."""
    filters = topic_filters("cw", ["z2m-a", "zigbee2mqtt", "house/z2m-b"])
    assert "$share/cw/zigbee2mqtt/#" in filters
    assert "$share/cw/z2m-a/#" in filters
    assert "$share/cw/house/z2m-b/#" in filters
    assert [f for f in filters if f.endswith("bridge/devices")] == [
        "house/z2m-b/bridge/devices",
        "z2m-a/bridge/devices",
        "zigbee2mqtt/bridge/devices",
    ]
    assert topic_filters("", ()) == topic_filters("", ["zigbee2mqtt"])


def test_a_topic_belongs_to_its_base_and_a_list_to_the_lone_bridge_on_it() -> None:
    """The longest base topic a topic lies under; a shared base's list is nobody's."""
    bridges = Bridges(
        {
            "zigbee2mqtt.hub-a": "z2m-a",
            "zigbee2mqtt.hub-1": "zigbee2mqtt",
            "zigbee2mqtt.hub-2": "zigbee2mqtt",
        }
    )
    assert bridges.base_topics == ["z2m-a", "zigbee2mqtt"]
    assert bridges.base_of("z2m-a/hall door") == "z2m-a"
    assert bridges.base_of("z2m-ab/hall door") is None
    assert bridges.base_of("z2m-a") is None
    assert bridges.announcing_bridge("z2m-a/bridge/devices") == "zigbee2mqtt.hub-a"
    assert bridges.announcing_bridge("z2m-a/bridge/state") is None
    assert bridges.announcing_bridge("zigbee2mqtt/bridge/devices") is None  # two share it
    assert Bridges().announcing_bridge("zigbee2mqtt/bridge/devices") is None  # none has it


def test_a_batch_sorts_device_lists_from_device_reports() -> None:
    """bridge/devices of a lone bridge becomes an announcement; a broken one a dead letter; a
    shared base's list is ignored; the reports under a second base topic go on as before."""
    registry = DeviceRegistry(miss_ttl_s=5)
    registry.bridges = Bridges(
        {
            "zigbee2mqtt.hub-a": "z2m-a",
            "zigbee2mqtt.hub-1": "zigbee2mqtt",
            "zigbee2mqtt.hub-2": "zigbee2mqtt",
        }
    )
    batch = [
        Message("z2m-a/bridge/devices", orjson.dumps([entry()]), 1, RECEIVED, retained=True),
        Message("z2m-a/bridge/devices", b"{broken", 2, RECEIVED),
        Message("zigbee2mqtt/bridge/devices", orjson.dumps([entry()]), 3, RECEIVED),
        Message("z2m-a/not onboarded", b'{"contact": true}', 4, RECEIVED),
    ]
    parsed = classify(batch, registry, DEFAULT_CATALOG, max_clock_skew_s=300)
    [announcement] = parsed.announcements
    assert announcement.bridge == "zigbee2mqtt.hub-a"
    assert [d.friendly_name for d in announcement.announcement.devices] == ["hall door"]
    assert [(d.topic, d.reason) for d in parsed.dead_letters] == [
        ("z2m-a/bridge/devices", RejectReason.NOT_JSON),
        ("z2m-a/not onboarded", RejectReason.UNKNOWN_DEVICE),
    ]
    assert parsed.unknown_zigbee_names == {"not onboarded"}
    assert parsed.ignored == 1
