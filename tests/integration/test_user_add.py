"""``carewatch user add``: users from a shell, with the password on standard input."""

from __future__ import annotations

import io

import psycopg
import pytest

from app.cli import main
from carewatch.passwords import verify_password
from tests.fixtures.api_client import add_org_with_sites


@pytest.fixture
def orgs(database_url: str) -> str:
    """kommun with sites a and b, annan with site c."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "site-a", "site-b")
        add_org_with_sites(conn, "annan", "site-c")
    return database_url


def user_add(monkeypatch: pytest.MonkeyPatch, database_url: str, stdin: str, *argv: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(["user", "add", "--database-url", database_url, *argv])


def test_user_add_stores_an_argon2_hash_and_the_sites(
    orgs: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The user is stored with an Argon2id hash of the first stdin line and their sites."""
    code = user_add(
        monkeypatch, orgs, "hemligt lösen 1\nignored\n",
        "anna", "--org", "kommun", "--role", "caregiver", "--site", "site-a", "--site", "site-b",
        "--password-stdin",
    )  # fmt: skip
    assert code == 0
    assert "anna" in capsys.readouterr().out
    with psycopg.connect(orgs) as conn:
        row = conn.execute("SELECT id, org_id, role, password_hash FROM users").fetchone()
        assert row is not None
        sites = conn.execute(
            "SELECT site_id FROM user_sites WHERE user_id = %s ORDER BY site_id", (row[0],)
        ).fetchall()
    assert row[1:3] == ("kommun", "caregiver")
    assert row[3].startswith("$argon2id$")
    assert verify_password(row[3], "hemligt lösen 1")
    assert sites == [("site-a",), ("site-b",)]


@pytest.mark.parametrize(
    ("stdin", "argv", "message"),
    [
        ("långt lösenord\n", ["bo", "--org", "kommun", "--role", "caregiver"], "--password-stdin"),
        (
            "kort\n",
            ["bo", "--org", "kommun", "--role", "caregiver", "--password-stdin"],
            "at least",
        ),
        (
            "långt lösenord\n",
            ["bo", "--org", "kommun", "--role", "boss", "--password-stdin"],
            "invalid role",
        ),
        (
            "långt lösenord\n",
            ["Bo Ek", "--org", "kommun", "--role", "admin", "--password-stdin"],
            "invalid username",
        ),
        (
            "långt lösenord\n",
            ["bo", "--org", "nowhere", "--role", "admin", "--password-stdin"],
            "does not exist",
        ),
        (
            "långt lösenord\n",
            [
                "bo",
                "--org",
                "kommun",
                "--role",
                "caregiver",
                "--site",
                "site-c",
                "--password-stdin",
            ],
            "not a site of organisation 'kommun'",
        ),
        (
            "långt lösenord\n",
            ["anna", "--org", "kommun", "--role", "caregiver", "--password-stdin"],
            "already exists",
        ),
    ],
    ids=[
        "no-password-stdin",
        "short-password",
        "unknown-role",
        "bad-username",
        "unknown-org",
        "site-of-another-org",
        "duplicate",
    ],
)
def test_user_add_refuses_with_a_clear_message(
    orgs: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: str,
    argv: list[str],
    message: str,
) -> None:
    """Bad arguments exit 2 with one line on stderr saying why; nothing is stored."""
    assert user_add(
        monkeypatch, orgs, "ett bra lösenord\n",
        "anna", "--org", "kommun", "--role", "caregiver", "--password-stdin",
    ) == 0  # fmt: skip
    capsys.readouterr()
    assert user_add(monkeypatch, orgs, stdin, *argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("carewatch user add: ")
    with psycopg.connect(orgs) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
