"""Bootstrap administration: ``carewatch org|site|device add`` and the seeding helpers."""

from __future__ import annotations

import shlex
from pathlib import Path

import psycopg
import pytest

from app.cli import main
from carewatch import admin
from carewatch.broker_passwords import verify_password
from carewatch.errors import AlreadyExistsError, InvalidValueError, NotFoundError
from carewatch.processes import free_port
from tools.local.postgres import PostgresInstance


def cli(database_url: str, *argv: str) -> int:
    return main([*argv[:2], "--database-url", database_url, *argv[2:]])


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


@pytest.fixture
def org_and_site(database_url: str) -> tuple[str, str]:
    assert cli(database_url, "org", "add", "sundsvall", "--name", "Sundsvalls kommun") == 0
    assert (
        cli(database_url, "site", "add", "solgarden", "--org", "sundsvall", "--name", "Solgården")
        == 0
    )
    return "sundsvall", "solgarden"


def test_org_add_creates_the_organisation(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``org add`` stores the organisation and says so."""
    assert cli(database_url, "org", "add", "sundsvall", "--name", "Sundsvalls kommun") == 0
    assert "sundsvall" in capsys.readouterr().out
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT id, name FROM organisations").fetchall() == [
            ("sundsvall", "Sundsvalls kommun")
        ]


def test_site_add_creates_the_site_in_its_organisation(
    database_url: str, org_and_site: tuple[str, str]
) -> None:
    """``site add`` stores the site under its organisation with the default time zone."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT id, org_id, name, timezone FROM sites").fetchone()
    assert row == ("solgarden", "sundsvall", "Solgården", "Europe/Stockholm")


def test_device_add_registers_the_device_and_prints_its_mqtt_settings(
    database_url: str, org_and_site: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``device add`` stores the device and prints username, password, broker and topics; only
    the password's hash is stored."""
    capsys.readouterr()
    code = cli(
        database_url,
        "device", "add", "lock-0001", "--kind", "door_lock", "--site", "solgarden",
        "--label", "Lgh 12",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "username:   lock-0001" in out
    assert "carewatch/devices/lock-0001/events" in out
    assert "carewatch/devices/lock-0001/status" in out
    assert "broker:     mqtt://localhost:1883" in out
    password = one_line(
        "\n".join(line for line in out.splitlines() if line.startswith("  password:"))
    ).split()[-1]
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT id, kind, site_id, label, status, online FROM devices"
        ).fetchone()
        stored = conn.execute("SELECT mqtt_password_hash FROM devices").fetchone()
    assert row == ("lock-0001", "door_lock", "solgarden", "Lgh 12", "active", False)
    assert stored is not None
    assert verify_password(password, stored[0])
    assert password not in stored[0]


REFUSED = [
    pytest.param("org add Bad_Org --name X", "invalid organisation id 'Bad_Org'", id="org-bad-id"),
    pytest.param(
        "org add sundsvall --name Again", "organisation 'sundsvall' already exists", id="org-dup"
    ),
    pytest.param("org add umea --name '  '", "invalid organisation name", id="org-empty-name"),
    pytest.param(
        "site add other --org nowhere --name X",
        "organisation 'nowhere' does not exist",
        id="site-unknown-org",
    ),
    pytest.param(
        "site add solgarden --org sundsvall --name X",
        "site 'solgarden' already exists",
        id="site-dup",
    ),
    pytest.param(
        "site add x2 --org sundsvall --name X --timezone Mars/Olympus",
        "invalid time zone 'Mars/Olympus'",
        id="site-bad-timezone",
    ),
    pytest.param(
        "device add lock-2 --kind door_lock --site nowhere",
        "site 'nowhere' does not exist",
        id="device-unknown-site",
    ),
    pytest.param(
        "device add lock-2 --kind toaster --site solgarden",
        "invalid device kind 'toaster'",
        id="device-unknown-kind",
    ),
    pytest.param(
        "device add ab --kind door_lock --site solgarden",
        "invalid device id 'ab'",
        id="device-short-id",
    ),
    pytest.param(
        "device add Lock-2 --kind door_lock --site solgarden",
        "invalid device id 'Lock-2'",
        id="device-uppercase-id",
    ),
    pytest.param(
        "device add lock-1 --kind door_lock --site solgarden",
        "device 'lock-1' already exists",
        id="device-dup",
    ),
]


@pytest.mark.parametrize(("command", "message"), REFUSED)
def test_refused_requests_exit_2_with_one_line_on_stderr(
    database_url: str,
    org_and_site: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    command: str,
    message: str,
) -> None:
    """Bad ids, unknown references and duplicates: exit code 2, one clear line, no traceback."""
    assert (
        cli(database_url, *shlex.split("device add lock-1 --kind door_lock --site solgarden")) == 0
    )
    capsys.readouterr()
    argv = shlex.split(command)
    code = cli(database_url, *argv)
    captured = capsys.readouterr()
    assert code == 2
    line = one_line(captured.err)
    assert line.startswith(f"carewatch {argv[0]} add: ")
    assert message in line
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_unreachable_database_exits_1_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """No server behind the URL: exit code 1 and the connection error on one line."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing?connect_timeout=2"
    code = cli(url, "org", "add", "sundsvall", "--name", "Sundsvalls kommun")
    line = one_line(capsys.readouterr().err)
    assert code == 1
    assert "database error" in line


def test_missing_schema_says_to_migrate(
    pg: PostgresInstance, test_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that was never migrated: exit code 1 and a hint to run ``carewatch migrate``."""
    name = f"nomigr_{test_token}"
    url = pg.create_database(name)
    try:
        code = cli(url, "org", "add", "sundsvall", "--name", "Sundsvalls kommun")
    finally:
        pg.drop_database(name)
    assert code == 1
    assert "carewatch migrate" in one_line(capsys.readouterr().err)


def test_ensure_functions_keep_what_exists(database_url: str) -> None:
    """ensure_org/ensure_site add once, then report nothing added and change nothing."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert admin.ensure_org(conn, "umea", "Umeå kommun")
        assert not admin.ensure_org(conn, "umea", "Another name")
        assert admin.ensure_site(conn, "bjorken", "umea", "Björken")
        assert not admin.ensure_site(conn, "bjorken", "umea", "Renamed")
        names = conn.execute(
            "SELECT o.name, s.name FROM organisations o JOIN sites s ON s.org_id = o.id"
        ).fetchall()
        with pytest.raises(NotFoundError, match="organisation 'nowhere'"):
            admin.ensure_site(conn, "other", "nowhere", "X")
    assert names == [("Umeå kommun", "Björken")]


def test_add_devices_bulk_adds_new_devices_and_skips_existing(database_url: str) -> None:
    """Thousands of devices in one call; ones already registered are counted out and unchanged."""
    rows = [(f"bulk-{n:05d}", "alarm_button", "bjorken", f"Lgh {n}") for n in range(3000)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_org(conn, "umea", "Umeå kommun")
        admin.ensure_site(conn, "bjorken", "umea", "Björken")
        admin.add_devices_bulk(conn, [("bulk-00000", "door_lock", "bjorken", "kept as it was")])
        added = admin.add_devices_bulk(conn, rows)
        again = admin.add_devices_bulk(conn, rows)
        count = conn.execute("SELECT count(*) FROM devices").fetchone()
        first = conn.execute("SELECT kind, label FROM devices WHERE id = 'bulk-00000'").fetchone()
    assert (added, again) == (2999, 0)
    assert count == (3000,)
    assert first == ("door_lock", "kept as it was")


def test_add_devices_bulk_validates_every_row_before_writing(database_url: str) -> None:
    """One bad row or unknown site refuses the whole batch and writes nothing."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        admin.ensure_org(conn, "umea", "Umeå kommun")
        admin.ensure_site(conn, "bjorken", "umea", "Björken")
        good = ("good-1", "door_lock", "bjorken", "")
        with pytest.raises(InvalidValueError, match="unknown kind 'fridge'"):
            admin.add_devices_bulk(conn, [good, ("good-2", "fridge", "bjorken", "")])
        with pytest.raises(NotFoundError, match="site 'elsewhere'"):
            admin.add_devices_bulk(conn, [good, ("good-2", "door_lock", "elsewhere", "")])
        assert conn.execute("SELECT count(*) FROM devices").fetchone() == (0,)


def test_add_device_inside_a_callers_transaction_is_a_savepoint(database_url: str) -> None:
    """A refused add inside the caller's transaction does not abort that transaction."""
    with psycopg.connect(database_url) as conn:
        admin.add_org(conn, "umea", "Umeå kommun")
        with pytest.raises(AlreadyExistsError):
            admin.add_org(conn, "umea", "Umeå kommun")
        admin.add_site(conn, "bjorken", "umea", "Björken")
        conn.commit()
        assert conn.execute("SELECT count(*) FROM sites").fetchone() == (1,)


def test_device_decommission_credentials_and_import_from_the_shell(
    database_url: str,
    org_and_site: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """``device credentials`` rotates, ``device decommission`` revokes, ``device import`` onboards
    a file and prints the credentials as CSV on stdout and the refusals on stderr."""
    assert (
        cli(database_url, *shlex.split("device add lock-9 --kind door_lock --site solgarden")) == 0
    )
    capsys.readouterr()
    assert cli(database_url, "device", "credentials", "lock-9") == 0
    out = capsys.readouterr().out
    password = next(line for line in out.splitlines() if "password:" in line).split()[-1]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT mqtt_password_hash FROM devices WHERE id = 'lock-9'")
        (hash_after_rotation,) = stored.fetchone() or (None,)
    assert verify_password(password, str(hash_after_rotation))

    assert cli(database_url, "device", "decommission", "lock-9") == 0
    assert "decommissioned" in capsys.readouterr().out
    assert cli(database_url, "device", "decommission", "lock-9") == 2
    assert "already decommissioned" in capsys.readouterr().err

    csv_file = tmp_path / "enheter.csv"
    csv_file.write_text("id;kind;site;label\nimp-1;door_lock;solgarden;A\nimp-2;x;solgarden;B\n")
    assert cli(database_url, "device", "import", str(csv_file), "--org", "sundsvall") == 0
    captured = capsys.readouterr()
    assert "line 3: imp-2 refused: unknown kind 'x'" in captured.err
    rows = captured.out.strip().splitlines()
    assert rows[0] == "id,kind,site,label,username,password,url,ca_sha256,ca_url"
    assert [row.split(",")[0] for row in rows[1:]] == ["imp-1"]
    with psycopg.connect(database_url) as conn:
        status = conn.execute(
            "SELECT id, status, mqtt_password_hash IS NULL FROM devices"
            " WHERE id IN ('lock-9', 'imp-1') ORDER BY id"
        ).fetchall()
        imp_hash = conn.execute("SELECT mqtt_password_hash FROM devices WHERE id = 'imp-1'")
        (imported_hash,) = imp_hash.fetchone() or (None,)
    assert status == [("imp-1", "active", False), ("lock-9", "decommissioned", True)]
    assert verify_password(rows[1].split(",")[5], str(imported_hash))
