"""The pure half of registering devices: a spec's checks and the import file's reading."""

from __future__ import annotations

import pytest

from devices.device_specs import (
    MAX_IMPORT_BYTES,
    ZIGBEE_MODELS,
    DeviceSpec,
    ImportFileError,
    Refusal,
    check_spec,
    parse_csv,
)

_MODEL, _MODEL_KIND = next(iter(ZIGBEE_MODELS.items()))


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        pytest.param(DeviceSpec("lock-01", "door_lock", "site-a"), None, id="good"),
        pytest.param(DeviceSpec("L", "door_lock", "site-a"), "invalid device id", id="bad-id"),
        pytest.param(DeviceSpec("summary", "door_lock", "site-a"), "reserved", id="reserved"),
        pytest.param(DeviceSpec("lock-01", "fridge", "site-a"), "unknown kind", id="kind"),
        pytest.param(DeviceSpec("lock-01", "door_lock", ""), "no site", id="no-site"),
        pytest.param(
            DeviceSpec("lock-01", "door_lock", "site-a", label="a\x07b"),
            "control characters",
            id="label",
        ),
        pytest.param(
            DeviceSpec("lock-01", "door_lock", "site-a", bridge="hall"),
            "for source zigbee2mqtt only",
            id="mqtt-with-bridge",
        ),
        pytest.param(
            DeviceSpec(
                "zb-01",
                _MODEL_KIND,
                "site-a",
                source="zigbee2mqtt",
                zigbee_name="bridge",
                zigbee_model=_MODEL,
                bridge="hall",
            ),
            "zigbee2mqtt's own topic",
            id="name-bridge",
        ),
        pytest.param(
            DeviceSpec(
                "zb-01",
                _MODEL_KIND,
                "site-a",
                source="zigbee2mqtt",
                zigbee_name="hall/+",
                zigbee_model=_MODEL,
                bridge="hall",
            ),
            "invalid zigbee_name: + and # are MQTT's wildcards",
            id="name-with-wildcard",
        ),
        pytest.param(
            DeviceSpec(
                "zb-01",
                _MODEL_KIND,
                "site-a",
                source="zigbee2mqtt",
                zigbee_name="../other/door",
                zigbee_model=_MODEL,
                bridge="hall",
            ),
            "invalid zigbee_name: a . or .. level",
            id="name-like-a-path",
        ),
        pytest.param(
            DeviceSpec(
                "zb-01",
                _MODEL_KIND,
                "site-a",
                source="zigbee2mqtt",
                zigbee_name="Lgh 14 lås/Hall door",
                zigbee_model=_MODEL,
                bridge="hall",
            ),
            None,
            id="name-with-spaces-utf8-and-levels",
        ),
        pytest.param(
            DeviceSpec(
                "zb-01",
                _MODEL_KIND,
                "site-a",
                source="zigbee2mqtt",
                zigbee_name="hall_door",
                zigbee_model=_MODEL,
                bridge="zigbee2mqtt.hall",
            ),
            None,
            id="zigbee-good",
        ),
    ],
)
def test_check_spec(spec: DeviceSpec, reason: str | None) -> None:
    """A spec is refused with a sentence saying why, or accepted."""
    found = check_spec(spec, zigbee_models=ZIGBEE_MODELS)
    if reason is None:
        assert found is None
    else:
        assert found is not None
        assert reason in found


def test_parse_csv_reads_semicolons_a_bom_and_aliases() -> None:
    """Swedish Excel's CSV UTF-8: a BOM, semicolons, ``device_id``/``site_id`` headers."""
    data = "\ufeffdevice_id;Kind;site_id;label\r\nlock-01;door_lock;site-a;Lgh 1\r\n\r\n".encode()
    specs, refused = parse_csv(data)
    assert specs == [DeviceSpec("lock-01", "door_lock", "site-a", "Lgh 1", line=2)]
    assert refused == []


def test_parse_csv_refuses_a_row_not_the_file() -> None:
    """A row with too many fields or an unknown source is refused on its own line."""
    data = b"id,kind,site,source\nlock-01,door_lock,site-a,\nlock-02,door_lock,site-a,lora\n"
    data += b"lock-03,door_lock,site-a,mqtt,extra\n"
    specs, refused = parse_csv(data)
    assert [spec.id for spec in specs] == ["lock-01"]
    assert refused == [
        Refusal(3, "lock-02", "unknown source 'lora'"),
        Refusal(4, "lock-03", "5 fields but the header has 4"),
    ]


@pytest.mark.parametrize(
    ("data", "reason", "too_large"),
    [
        pytest.param(b"", "the file is empty", False, id="empty"),
        pytest.param(b"id,kind\n", "lacks site", False, id="missing-column"),
        pytest.param(b"id,kind,site,colour\n", "unknown column(s) colour", False, id="unknown"),
        pytest.param(b"id,kind,site\n\xff\n", "not UTF-8", False, id="not-utf8"),
        pytest.param(b"x" * (MAX_IMPORT_BYTES + 1), "larger than 2 MB", True, id="too-large"),
    ],
)
def test_parse_csv_refuses_a_file_it_cannot_read(data: bytes, reason: str, too_large: bool) -> None:
    """A file without a usable header, not UTF-8 or too large is refused as a whole."""
    with pytest.raises(ImportFileError) as caught:
        parse_csv(data)
    assert reason in caught.value.reason
    assert caught.value.too_large is too_large
    assert str(caught.value).startswith("import refused: ")
