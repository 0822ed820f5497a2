"""The device catalog: the built-in kinds match the contract, and the loader is strict."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from devices.catalog import (
    DEFAULT_CATALOG,
    HEARTBEAT,
    BatteryRule,
    Catalog,
    CatalogError,
    DeviceKind,
    DurationRule,
    EventRule,
    EventType,
    FieldSpec,
    FieldType,
    KindRules,
    Rule,
    Severity,
    SilenceRule,
    build_catalog,
    default_catalog,
    load_catalog,
)

# CONTRACT.md, "Device kinds": kind -> (heartbeat interval, event types besides heartbeat).
CONTRACT_KINDS: dict[str, tuple[int, set[str]]] = {
    "safety_camera": (
        60,
        {
            "camera.check_started",
            "camera.check_ended",
            "camera.stream_lost",
            "camera.stream_restored",
            "camera.tamper",
            "camera.privacy_on",
            "camera.privacy_off",
        },
    ),
    "door_lock": (
        300,
        {"lock.unlocked", "lock.locked", "lock.jammed", "lock.access_denied", "lock.tamper"},
    ),
    "companion_robot": (900, {"robot.interaction", "robot.fault"}),
    "alarm_button": (3600, {"alarm.pressed", "alarm.cancelled"}),
}

# Issue 4: the Zigbee sensors (mostly behind zigbee2mqtt), an extension of the contract.
ZIGBEE_KINDS: dict[str, tuple[int, set[str]]] = {
    "door_contact": (3600, {"door.opened", "door.closed", "door.tamper"}),
    "motion_sensor": (3600, {"motion.detected", "motion.cleared", "motion.tamper"}),
    "water_sensor": (3600, {"water.leak_detected", "water.leak_cleared", "water.tamper"}),
    "smoke_detector": (3600, {"smoke.detected", "smoke.cleared", "smoke.tamper"}),
}

STR, INT, NUM = FieldType.STRING, FieldType.INTEGER, FieldType.NUMBER

# (kind, event type) -> {field: (type, required)} for every type with fields; the rest have none.
CONTRACT_FIELDS: dict[tuple[str, str], dict[str, tuple[FieldType, bool]]] = {
    ("safety_camera", "camera.check_started"): {"by": (STR, True)},
    ("safety_camera", "camera.check_ended"): {
        "by": (STR, True),
        "duration_s": (NUM, True),
        "outcome": (STR, True),
    },
    ("door_lock", "lock.unlocked"): {"by": (STR, True), "method": (STR, True)},
    ("door_lock", "lock.locked"): {"by": (STR, True), "method": (STR, True)},
    ("door_lock", "lock.access_denied"): {"credential": (STR, True)},
    ("companion_robot", "robot.interaction"): {"mode": (STR, True), "duration_s": (NUM, True)},
    ("companion_robot", "robot.fault"): {"code": (STR, True)},
}
HEARTBEAT_FIELDS = {"battery": (INT, False), "rssi": (INT, False), "fw": (STR, False)}

ALL_TYPES = [(kind, name) for kind, (_, names) in CONTRACT_KINDS.items() for name in sorted(names)]


def builtin_document() -> dict[str, Any]:
    """The built-in catalog as the TOML document, to mutate in the loader tests."""
    text = resources.files("devices").joinpath("catalog.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def test_builtin_catalog_has_exactly_the_contract_and_zigbee_kinds() -> None:
    """The built-in catalog holds the four kinds of the contract, the Zigbee sensors of issue
    4, and no others."""
    assert set(DEFAULT_CATALOG) == set(CONTRACT_KINDS) | set(ZIGBEE_KINDS)
    assert len(DEFAULT_CATALOG) == 8


@pytest.mark.parametrize("kind", list(ZIGBEE_KINDS))
def test_zigbee_kinds_have_their_interval_and_event_types(kind: str) -> None:
    """Each Zigbee kind has its heartbeat interval and exactly its event types, without fields."""
    interval_s, names = ZIGBEE_KINDS[kind]
    assert DEFAULT_CATALOG[kind].heartbeat_interval_s == interval_s
    assert set(DEFAULT_CATALOG[kind].event_types) == names | {HEARTBEAT}
    assert all(
        not spec.fields
        for name, spec in DEFAULT_CATALOG[kind].event_types.items()
        if name != HEARTBEAT
    )


@pytest.mark.parametrize(
    ("kind", "interval_s"),
    [(kind, interval_s) for kind, (interval_s, _) in CONTRACT_KINDS.items()],
)
def test_heartbeat_interval_is_the_contracts(kind: str, interval_s: int) -> None:
    """Each kind's heartbeat interval is the one in the contract."""
    assert DEFAULT_CATALOG[kind].heartbeat_interval_s == interval_s


@pytest.mark.parametrize("kind", list(CONTRACT_KINDS))
def test_event_types_are_the_contracts_plus_heartbeat(kind: str) -> None:
    """Each kind has exactly the contract's event types, plus heartbeat."""
    _, names = CONTRACT_KINDS[kind]
    assert set(DEFAULT_CATALOG[kind].event_types) == names | {HEARTBEAT}


@pytest.mark.parametrize("kind", list(CONTRACT_KINDS))
def test_every_kind_shares_the_one_heartbeat_type(kind: str) -> None:
    """Every kind's heartbeat is the catalog's shared heartbeat type."""
    assert DEFAULT_CATALOG[kind].event_types[HEARTBEAT] is DEFAULT_CATALOG.heartbeat


def test_heartbeat_fields_are_optional_battery_rssi_fw() -> None:
    """heartbeat data is battery (integer 0-100), rssi (integer) and fw (string), all optional."""
    fields = {spec.name: (spec.type, spec.required) for spec in DEFAULT_CATALOG.heartbeat.fields}
    assert fields == HEARTBEAT_FIELDS
    battery = DEFAULT_CATALOG.heartbeat.field_spec("battery")
    assert battery is not None
    assert (battery.minimum, battery.maximum) == (0, 100)


@pytest.mark.parametrize(("kind", "event_type"), ALL_TYPES, ids=[name for _, name in ALL_TYPES])
def test_fields_of_each_event_type_are_the_contracts(kind: str, event_type: str) -> None:
    """Each event type declares exactly the contract's fields, all of them required."""
    spec = DEFAULT_CATALOG[kind].event_types[event_type]
    assert spec.name == event_type
    fields = {field.name: (field.type, field.required) for field in spec.fields}
    assert fields == CONTRACT_FIELDS.get((kind, event_type), {})


@pytest.mark.parametrize(
    ("kind", "event_type", "field", "choices"),
    [
        (
            "safety_camera",
            "camera.check_ended",
            "outcome",
            {"seen", "not_seen", "technical_failure"},
        ),
        ("companion_robot", "robot.interaction", "mode", {"touch", "voice", "motion"}),
    ],
    ids=["outcome", "mode"],
)
def test_closed_fields_have_the_contracts_choices(
    kind: str, event_type: str, field: str, choices: set[str]
) -> None:
    """outcome and mode accept only the contract's values."""
    spec = DEFAULT_CATALOG.event_type(kind, event_type)
    assert spec is not None
    field_spec = spec.field_spec(field)
    assert field_spec is not None
    assert field_spec.choices == frozenset(choices)


@pytest.mark.parametrize(
    ("kind", "event_type"),
    [("safety_camera", "camera.check_ended"), ("companion_robot", "robot.interaction")],
    ids=["check_ended", "interaction"],
)
def test_duration_is_a_non_negative_number(kind: str, event_type: str) -> None:
    """duration_s is a number with minimum 0 and no maximum."""
    spec = DEFAULT_CATALOG[kind].event_types[event_type].field_spec("duration_s")
    assert spec is not None
    assert (spec.type, spec.minimum, spec.maximum) == (FieldType.NUMBER, 0, None)


@pytest.mark.parametrize("kind", list(CONTRACT_KINDS))
def test_kinds_have_swedish_and_english_titles(kind: str) -> None:
    """Each kind has a Swedish and an English title for the pages."""
    device_kind = DEFAULT_CATALOG[kind]
    assert device_kind.name == kind
    assert device_kind.title_sv
    assert device_kind.title_en


def test_event_type_lookup_answers_none_for_unknowns() -> None:
    """Catalog.event_type and EventType.field_spec return None for names they do not know."""
    assert DEFAULT_CATALOG.event_type("door_lock", "lock.unlocked") is not None
    assert DEFAULT_CATALOG.event_type("door_lock", "camera.tamper") is None
    assert DEFAULT_CATALOG.event_type("teleporter", HEARTBEAT) is None
    assert DEFAULT_CATALOG.heartbeat.field_spec("temperature") is None


def test_catalog_values_are_immutable() -> None:
    """Kinds, event types and field specs cannot be changed after loading."""
    door_lock = DEFAULT_CATALOG["door_lock"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        door_lock.heartbeat_interval_s = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        door_lock.event_types["x"] = door_lock.event_types[HEARTBEAT]  # type: ignore[index]
    with pytest.raises(TypeError):
        DEFAULT_CATALOG.kinds["x"] = door_lock  # type: ignore[index]


def test_device_kinds_are_hashable_values() -> None:
    """A DeviceKind can be a set member or dict key despite holding a mapping."""
    assert len(set(DEFAULT_CATALOG.values())) == len(DEFAULT_CATALOG)


HIGH, CRITICAL = Severity.HIGH, Severity.CRITICAL
BATTERY = BatteryRule(warning_below=20, high_below=10, resolved_at=30)

# CONTRACT.md, "Alerts (default rules)": the rules of each kind with their defaults.
CONTRACT_RULES: dict[str, KindRules] = {
    "safety_camera": KindRules(
        device_offline=SilenceRule(CRITICAL, after_heartbeats=3),
        battery_low=BATTERY,
        camera_stream_lost=EventRule(HIGH),
        resident_not_seen=EventRule(HIGH),
        tamper=EventRule(HIGH),
    ),
    "door_lock": KindRules(
        device_offline=SilenceRule(HIGH, after_heartbeats=3),
        battery_low=BATTERY,
        lock_jammed=EventRule(HIGH),
        door_left_unlocked=DurationRule(HIGH, after_s=10 * 60),
        tamper=EventRule(HIGH),
    ),
    "companion_robot": KindRules(
        device_offline=SilenceRule(HIGH, after_heartbeats=3),
        battery_low=BATTERY,
        robot_inactive=DurationRule(Severity.INFO, after_s=48 * 3600),
    ),
    "alarm_button": KindRules(
        device_offline=SilenceRule(CRITICAL, after_heartbeats=3),
        battery_low=BATTERY,
        alarm_pressed=EventRule(CRITICAL),
    ),
}


@pytest.mark.parametrize("kind", sorted(CONTRACT_RULES))
def test_rules_of_each_kind_are_the_contracts(kind: str) -> None:
    """Each kind has the contract's rules, severities and thresholds, and no others."""
    assert DEFAULT_CATALOG[kind].rules == CONTRACT_RULES[kind]


def test_every_rule_belongs_to_some_kind_and_escalation_is_5_min() -> None:
    """All nine rules of the contract are in use; escalation defaults to 300 s."""
    assert set().union(*(kind.rules.enabled for kind in DEFAULT_CATALOG.values())) == set(Rule)
    assert DEFAULT_CATALOG.escalation_s == 300


def test_severity_ranks_in_contract_order() -> None:
    """Severities compare by rank (info < warning < high < critical), not as strings."""
    ranks = [severity.rank for severity in (Severity.INFO, Severity.WARNING, HIGH, CRITICAL)]
    assert ranks == sorted(ranks) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param(
            {"warning_below": 20, "high_below": 25, "resolved_at": 30},
            "<=",
            id="high-above-warning",
        ),
        pytest.param(
            {"warning_below": 20, "high_below": 10, "resolved_at": 15},
            "<=",
            id="resolved-below-warning",
        ),
        pytest.param(
            {"warning_below": 20, "high_below": 0, "resolved_at": 30}, "0 <", id="high-zero"
        ),
        pytest.param(
            {"warning_below": 20, "high_below": 10, "resolved_at": 101},
            "100",
            id="resolved-above-100",
        ),
    ],
)
def test_battery_rule_checks_itself(kwargs: dict[str, int], message: str) -> None:
    """Battery thresholds must be ordered high < warning <= resolved, within 1..100."""
    with pytest.raises(CatalogError, match=message):
        BatteryRule(**kwargs)


def test_a_catalog_file_can_add_a_kind_with_rules(tmp_path: Path) -> None:
    """A new kind picks the rules it has from the known ones, with its own parameters."""
    text = resources.files("devices").joinpath("catalog.toml").read_text(encoding="utf-8")
    text += (
        "\n[kinds.bed_sensor]\ntitle_sv = 'Sängsensor'\ntitle_en = 'Bed sensor'\n"
        "heartbeat_interval_s = 120\n"
        "[kinds.bed_sensor.events.'bed.tamper']\n"
        "[kinds.bed_sensor.rules]\n"
        "device_offline = { severity = 'warning', after_heartbeats = 5 }\n"
        "tamper = { severity = 'critical' }\n"
    )
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    rules = load_catalog(path)["bed_sensor"].rules
    assert rules == KindRules(
        device_offline=SilenceRule(Severity.WARNING, 5), tamper=EventRule(CRITICAL)
    )


def test_default_catalog_is_the_loaded_builtin_file() -> None:
    """default_catalog() is DEFAULT_CATALOG, equal to a fresh load of the built-in file."""
    assert default_catalog() is DEFAULT_CATALOG
    assert load_catalog() == DEFAULT_CATALOG
    assert isinstance(DEFAULT_CATALOG, Mapping)


def test_a_catalog_file_can_add_a_kind(tmp_path: Path) -> None:
    """A catalog file with one more kind loads, the new kind with heartbeat included."""
    text = resources.files("devices").joinpath("catalog.toml").read_text(encoding="utf-8")
    text += (
        "\n[kinds.bed_sensor]\ntitle_sv = 'Sängsensor'\ntitle_en = 'Bed sensor'\n"
        "heartbeat_interval_s = 120\n"
        "[kinds.bed_sensor.events.'bed.left'.fields]\n"
        "minutes = { type = 'integer', minimum = 0 }\n"
        "awake = { type = 'boolean', required = false }\n"
    )
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    catalog = load_catalog(path)
    assert len(catalog) == len(DEFAULT_CATALOG) + 1
    bed = catalog["bed_sensor"]
    assert set(bed.event_types) == {HEARTBEAT, "bed.left"}
    assert [spec.name for spec in bed.event_types["bed.left"].fields] == ["minutes", "awake"]


def test_a_broken_catalog_file_names_the_file(tmp_path: Path) -> None:
    """A file that is not TOML raises CatalogError naming the file."""
    path = tmp_path / "broken.toml"
    path.write_text("[kinds\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"broken\.toml"):
        load_catalog(path)


def _set(document: dict[str, Any], path: str, value: object) -> None:
    """Set (or, for ..., delete) the value at a |-separated path in a TOML document."""
    *parents, last = path.split("|")
    table = document
    for key in parents:
        table = table[key]
    if value is ...:
        del table[last]
    else:
        table[last] = value


BY = "kinds|door_lock|events|lock.unlocked|fields|by"
RULES = "kinds|door_lock|rules"

BROKEN_CATALOGS: list[tuple[str, str, object, str]] = [
    # (id, |-path, new value or ... to delete, expected message fragment)
    ("unknown-top-level-key", "rules", {}, "unknown key"),
    ("no-heartbeat-table", "heartbeat", ..., "missing heartbeat"),
    ("no-kinds-table", "kinds", ..., "missing kinds"),
    ("kinds-not-a-table", "kinds", [], "expected a table"),
    ("kind-name-upper-case", "kinds|Door", {}, "kind name"),
    ("kind-without-title", "kinds|door_lock|title_sv", ..., "missing title_sv"),
    ("empty-title", "kinds|door_lock|title_en", "", "non-empty string"),
    ("misspelt-kind-key", "kinds|door_lock|heartbeat_interval", 300, "unknown key"),
    ("interval-zero", "kinds|door_lock|heartbeat_interval_s", 0, "positive integer"),
    ("interval-string", "kinds|door_lock|heartbeat_interval_s", "300", "positive integer"),
    ("interval-bool", "kinds|door_lock|heartbeat_interval_s", True, "positive integer"),
    ("interval-float", "kinds|door_lock|heartbeat_interval_s", 300.0, "positive integer"),
    ("kind-defines-heartbeat", "kinds|door_lock|events|heartbeat", {}, "shared"),
    ("event-type-with-space", "kinds|door_lock|events|lock unlocked", {}, "dotted"),
    ("event-type-not-a-table", "kinds|door_lock|events|lock.jammed", "yes", "expected a table"),
    ("misspelt-event-key", "kinds|door_lock|events|lock.jammed|field", {}, "unknown key"),
    ("field-type-unknown", f"{BY}|type", "text", "not one of"),
    ("field-type-missing", f"{BY}|type", ..., "missing type"),
    ("field-misspelt-key", f"{BY}|requird", False, "unknown key"),
    ("required-not-bool", f"{BY}|required", "no", "true or false"),
    ("choices-on-integer", "heartbeat|fields|battery|choices", ["1"], "strings only"),
    ("choices-empty", f"{BY}|choices", [], "non-empty"),
    ("choices-not-strings", f"{BY}|choices", [1, 2], "list of strings"),
    ("minimum-on-string", f"{BY}|minimum", 0, "integers and numbers only"),
    ("minimum-not-number", "heartbeat|fields|battery|minimum", "0", "expected a number"),
    ("minimum-above-maximum", "heartbeat|fields|battery|minimum", 101, "> maximum"),
    ("alerts-not-a-table", "alerts", 300, "expected a table"),
    ("alerts-misspelt-key", "alerts|escalation", 300, "unknown key"),
    ("escalation-zero", "alerts|escalation_s", 0, "positive integer"),
    ("escalation-string", "alerts|escalation_s", "5 min", "positive integer"),
    ("rules-not-a-table", "kinds|door_lock|rules", [], "expected a table"),
    ("unknown-rule", "kinds|door_lock|rules|door_open", {"severity": "high"}, "not a rule"),
    ("rule-not-a-table", "kinds|door_lock|rules|tamper", "high", "expected a table"),
    ("rule-missing-parameter", f"{RULES}|door_left_unlocked|after_s", ..., "missing after_s"),
    ("rule-misspelt-parameter", f"{RULES}|door_left_unlocked|after", 5, "unknown key"),
    ("rule-unknown-severity", f"{RULES}|tamper|severity", "urgent", "not one of"),
    ("rule-severity-upper-case", f"{RULES}|tamper|severity", "HIGH", "not one of"),
    ("rule-parameter-float", f"{RULES}|door_left_unlocked|after_s", 600.0, "an integer"),
    ("rule-parameter-bool", f"{RULES}|device_offline|after_heartbeats", True, "an integer"),
    ("rule-parameter-zero", f"{RULES}|door_left_unlocked|after_s", 0, "positive integer"),
    ("battery-out-of-order", f"{RULES}|battery_low|high_below", 25, "high_below <= warning"),
    (
        "rule-without-its-events",
        "kinds|alarm_button|rules|lock_jammed",
        {"severity": "high"},
        "lacks the event type",
    ),
    (
        "tamper-without-tamper-event",
        "kinds|alarm_button|rules|tamper",
        {"severity": "high"},
        r"no \*\.tamper",
    ),
]


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [case[1:] for case in BROKEN_CATALOGS],
    ids=[case[0] for case in BROKEN_CATALOGS],
)
def test_broken_catalog_is_refused_with_a_precise_message(
    path: str, value: object, message: str
) -> None:
    """A malformed catalog raises CatalogError that says what is wrong."""
    document = copy.deepcopy(builtin_document())
    _set(document, path, value)
    with pytest.raises(CatalogError, match=message):
        build_catalog(document)


def test_builtin_document_builds_unchanged() -> None:
    """The unmutated document the broken-catalog cases start from is itself valid."""
    assert build_catalog(builtin_document()) == DEFAULT_CATALOG


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "type": STR}, "needs a name"),
        ({"name": "x", "type": INT, "choices": frozenset({"a"})}, "strings only"),
        ({"name": "x", "type": STR, "choices": frozenset()}, "non-empty"),
        ({"name": "x", "type": FieldType.BOOLEAN, "maximum": 1.0}, "integers and numbers"),
        ({"name": "x", "type": NUM, "minimum": 2.0, "maximum": 1.0}, "> maximum"),
    ],
    ids=["no-name", "choices-on-integer", "empty-choices", "range-on-boolean", "empty-range"],
)
def test_field_spec_checks_itself(kwargs: dict[str, Any], message: str) -> None:
    """A FieldSpec built in code is checked like one from the file."""
    with pytest.raises(CatalogError, match=message):
        FieldSpec(**kwargs)


def test_catalog_refuses_duplicate_kinds_and_foreign_heartbeats() -> None:
    """Catalog() refuses a kind given twice, or one whose heartbeat is not the shared one."""
    door_lock = DEFAULT_CATALOG["door_lock"]
    heartbeat = DEFAULT_CATALOG.heartbeat
    with pytest.raises(CatalogError, match="twice"):
        Catalog([door_lock, door_lock], heartbeat)
    other = EventType(HEARTBEAT, ())
    odd = DeviceKind("odd", "Udda", "Odd", 60, {HEARTBEAT: other})
    with pytest.raises(CatalogError, match="shared heartbeat"):
        Catalog([odd], heartbeat)
