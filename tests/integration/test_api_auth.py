"""Authentication against a real PostgreSQL over real HTTP: tokens, rate limits, cookies, CSRF."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import psycopg_pool
import pytest

from api.auth import (
    LoginLimits,
    UserContext,
    authenticate,
    issue_token,
    revoke_token,
    user_for_token,
)
from api.errors import LoginRateLimited
from carewatch.roles import Role
from carewatch.settings import Settings
from tests.fixtures.api_client import (
    PASSWORD,
    add_device,
    add_org_with_sites,
    add_session,
    add_user,
    call,
    insert_alert,
    login,
    run_async,
)
from tests.fixtures.api_server import running_api


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    user_id: int
    alert_id: int


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """One organisation and site, a caregiver ``anna``, an open alert, the API running."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden")
        add_device(conn, "lock-01", "solgarden")
        user_id = add_user(conn, "anna", "kommun", "caregiver")
    alert = insert_alert(settings.database_url, "lock-01")
    with running_api(settings) as base:
        yield World(base, settings.database_url, user_id, alert.alert_id)


def test_token_is_issued_and_opens_the_api(world: World) -> None:
    """The password flow answers a bearer token that the other endpoints accept."""
    response = call(
        "POST",
        f"{world.base}/api/v1/auth/token",
        form={"username": "anna", "password": PASSWORD},
    )
    assert response.status == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert len(body["access_token"]) >= 43  # 32 random bytes, base64
    sites = call("GET", f"{world.base}/api/v1/sites", token=body["access_token"])
    assert (sites.status, [site["id"] for site in sites.json()]) == (200, ["solgarden"])


def test_token_hash_not_token_is_stored(world: World) -> None:
    """The database holds a SHA-256 of the token, never the token itself."""
    token = login(world.base, "anna")
    with psycopg.connect(world.database_url) as conn:
        stored = conn.execute("SELECT token_hash, kind FROM auth_tokens").fetchall()
    assert len(stored) == 1
    assert stored[0][1] == "bearer"
    assert token.encode() not in bytes(stored[0][0])
    assert len(stored[0][0]) == 32


@pytest.mark.parametrize(
    ("username", "password"),
    [("anna", "wrong password"), ("nobody", PASSWORD), ("ANNA", "wrong password")],
    ids=["wrong-password", "unknown-user", "wrong-password-any-case"],
)
def test_bad_credentials_answer_401(world: World, username: str, password: str) -> None:
    """A wrong password or unknown user is 401 with WWW-Authenticate, and the same answer."""
    response = call(
        "POST",
        f"{world.base}/api/v1/auth/token",
        form={"username": username, "password": password},
    )
    assert response.status == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "wrong username or password"}


def test_missing_or_invalid_token_answers_401(world: World) -> None:
    """No credentials, a made-up token or another scheme: 401 with WWW-Authenticate: Bearer."""
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic YTpi"}):
        response = call("GET", f"{world.base}/api/v1/alerts", headers=headers)
        assert response.status == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"


def test_repeated_failures_rate_limit_even_the_right_password(world: World) -> None:
    """After 5 failures for a username the right password is refused with 429 and Retry-After."""
    url = f"{world.base}/api/v1/auth/token"
    for _ in range(5):
        assert call("POST", url, form={"username": "anna", "password": "nope"}).status == 401
    refused = call("POST", url, form={"username": "anna", "password": PASSWORD})
    assert refused.status == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 15 * 60
    # Refused attempts are not failures of their own: exactly the five are recorded.
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM login_failures WHERE username = 'anna'").fetchone()
    assert row == (5,)


def test_failures_are_forgotten_after_a_successful_login(world: World) -> None:
    """A successful login clears the username's failures and is audited as a login."""
    url = f"{world.base}/api/v1/auth/token"
    for _ in range(4):
        assert call("POST", url, form={"username": "anna", "password": "nope"}).status == 401
    login(world.base, "anna")
    with psycopg.connect(world.database_url) as conn:
        failures = conn.execute("SELECT count(*) FROM login_failures").fetchone()
        audit = conn.execute("SELECT username, action, client FROM audit_log").fetchall()
    assert failures == (0,)
    assert audit == [("anna", "login", "127.0.0.1")]


def test_logout_revokes_the_token(world: World) -> None:
    """After logout the same bearer token answers 401."""
    token = login(world.base, "anna")
    assert call("GET", f"{world.base}/api/v1/alerts", token=token).status == 200
    assert call("POST", f"{world.base}/api/v1/auth/logout", token=token).status == 204
    assert call("GET", f"{world.base}/api/v1/alerts", token=token).status == 401


def test_session_cookie_reads_without_csrf_header(world: World) -> None:
    """A session cookie authenticates GET requests; logging out with it deletes the cookie."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        cookie = add_session(conn, world.user_id, "session")
    assert call("GET", f"{world.base}/api/v1/alerts", cookie=cookie).status == 200
    logout = call(
        "POST",
        f"{world.base}/api/v1/auth/logout",
        cookie=cookie,
        headers={"X-Requested-With": "carewatch"},
    )
    assert logout.status == 204
    assert "carewatch_session=" in logout.headers["set-cookie"]
    assert call("GET", f"{world.base}/api/v1/alerts", cookie=cookie).status == 401


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, 403),
        ({"Origin": "https://evil.example"}, 403),
        ({"X-Requested-With": "XMLHttpRequest"}, 403),
        ({"X-Requested-With": "carewatch"}, 200),
        ({"Origin": "same"}, 200),
    ],
    ids=["no-header", "foreign-origin", "other-x-requested-with", "csrf-header", "same-origin"],
)
def test_cookie_post_needs_the_csrf_header_or_same_origin(
    world: World, headers: dict[str, str], expected: int
) -> None:
    """A state-changing request authenticated by cookie alone is refused (CSRF)."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        cookie = add_session(conn, world.user_id, "session")
    if headers.get("Origin") == "same":
        headers = {"Origin": world.base}
    response = call(
        "POST", f"{world.base}/api/v1/alerts/{world.alert_id}/ack", cookie=cookie, headers=headers
    )
    assert response.status == expected, response.body


def test_bearer_post_needs_no_csrf_header(world: World) -> None:
    """A bearer token is never sent by a browser on its own: no CSRF check."""
    token = login(world.base, "anna")
    response = call("POST", f"{world.base}/api/v1/alerts/{world.alert_id}/ack", token=token)
    assert response.status == 200


def test_tokens_only_work_as_their_own_kind(world: World) -> None:
    """A session token is no bearer token and a bearer token is no session cookie."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        session = add_session(conn, world.user_id, "session")
        bearer = add_session(conn, world.user_id, "bearer")
    assert call("GET", f"{world.base}/api/v1/alerts", token=session).status == 401
    assert call("GET", f"{world.base}/api/v1/alerts", cookie=bearer).status == 401


def test_disabled_user_cannot_log_in_or_use_a_token(world: World) -> None:
    """Disabling a user refuses their password and their existing tokens."""
    token = login(world.base, "anna")
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute("UPDATE users SET disabled = true")
    assert call("GET", f"{world.base}/api/v1/alerts", token=token).status == 401
    response = call(
        "POST", f"{world.base}/api/v1/auth/token", form={"username": "anna", "password": PASSWORD}
    )
    assert response.status == 401


def test_auth_functions_for_the_pages(settings: Settings) -> None:
    """authenticate, issue_token, user_for_token and revoke_token as the login page uses them."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden", "ekbacken")
        user_id = add_user(conn, "bo", "kommun", "technician", sites=["ekbacken"])

    async def scenario() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=2, open=False
        ) as pool:
            limits = LoginLimits(per_username=2, per_client=100, window_s=60)
            assert await authenticate(pool, "bo", "nope", "10.0.0.1", limits=limits) is None
            user = await authenticate(pool, " Bo ", PASSWORD, "10.0.0.1", limits=limits)
            assert user == UserContext(
                user_id=user_id,
                username="bo",
                org_id="kommun",
                role=Role.TECHNICIAN,
                site_ids=frozenset({"ekbacken"}),
                language="sv",
            )
            ttl_s = settings.token_ttl_s
            token = await issue_token(pool, user, "session", ttl_s=ttl_s)
            assert await user_for_token(pool, token, kind="session", ttl_s=ttl_s) == user
            assert await user_for_token(pool, token, kind="bearer", ttl_s=ttl_s) is None
            await revoke_token(pool, token)
            assert await user_for_token(pool, token, ttl_s=ttl_s) is None
            for _ in range(2):
                assert await authenticate(pool, "bo", "nope", "10.0.0.1", limits=limits) is None
            with pytest.raises(LoginRateLimited) as refused:
                await authenticate(pool, "bo", PASSWORD, "10.0.0.1", limits=limits)
            assert 1 <= refused.value.retry_after_s <= 60

    run_async(scenario())


def test_client_address_is_rate_limited_across_usernames(settings: Settings) -> None:
    """One address guessing many usernames is refused after the per-client limit."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden")
        add_user(conn, "cecilia", "kommun", "manager")

    async def scenario() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=2, open=False
        ) as pool:
            limits = LoginLimits(per_username=5, per_client=3, window_s=60)
            for guess in ("a1", "b2", "c3"):
                assert await authenticate(pool, guess, "x", "10.0.0.9", limits=limits) is None
            with pytest.raises(LoginRateLimited):
                await authenticate(pool, "cecilia", PASSWORD, "10.0.0.9", limits=limits)
            # Another address is not affected.
            assert await authenticate(pool, "cecilia", PASSWORD, "10.0.0.10", limits=limits)

    run_async(scenario())
