"""Authentication against a real PostgreSQL over real HTTP: tokens, login throttle, cookies, CSRF.

The API trusts X-Forwarded-For from loopback (``Settings.trusted_proxies``' default), so a test
is the proxy here and names the client each request comes from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
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
    ApiResponse,
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
from tests.fixtures.services import MakeSettings

# Client addresses as the proxy names them (documentation ranges, RFC 5737).
ATTACKER = "203.0.113.66"
CAREGIVER_PLACE = "198.51.100.7"


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    user_id: int
    alert_id: int


@contextlib.contextmanager
def running_world(settings: Settings) -> Iterator[World]:
    """One organisation and site, a caregiver ``anna``, an open alert, the API running."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden")
        add_device(conn, "lock-01", "solgarden")
        user_id = add_user(conn, "anna", "kommun", "caregiver")
    # A care alert, so the caregiver may act on it (issue 12: tamper is the technicians').
    alert = insert_alert(settings.database_url, "lock-01", "door_left_unlocked")
    with running_api(settings) as base:
        yield World(base, settings.database_url, user_id, alert.alert_id)


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    """The world of :func:`running_world` with the default settings."""
    with running_world(settings) as world:
        yield world


@pytest.fixture
def patient_world(make_settings: MakeSettings, database_url: str) -> Iterator[World]:
    """The world with a first throttle delay of a minute: no test is slow enough to outwait it."""
    with running_world(make_settings(database_url, login_backoff_base_s=60.0)) as world:
        yield world


def token_from(world: World, client: str, username: str, password: str) -> ApiResponse:
    """``POST /api/v1/auth/token`` as if from ``client`` (the proxy's X-Forwarded-For)."""
    return call(
        "POST",
        f"{world.base}/api/v1/auth/token",
        form={"username": username, "password": password},
        headers={"X-Forwarded-For": client},
    )


def time_passes(world: World, seconds: float) -> None:
    """Every recorded failure moves ``seconds`` into the past: waiting, without the wait."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE login_failures SET failed_at = failed_at - make_interval(secs => %s)",
            (seconds,),
        )


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


def test_repeated_failures_from_one_address_make_it_wait(world: World) -> None:
    """After 5 failures from one address, that address waits (429, Retry-After) even with the
    right password; refused attempts are not failures of their own."""
    url = f"{world.base}/api/v1/auth/token"
    for _ in range(5):
        assert call("POST", url, form={"username": "anna", "password": "nope"}).status == 401
    refused = call("POST", url, form={"username": "anna", "password": PASSWORD})
    assert refused.status == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 300
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM login_failures WHERE username = 'anna'").fetchone()
    assert row == (5,)


def test_attacker_elsewhere_cannot_lock_the_caregiver_out(patient_world: World) -> None:
    """Failures for a username from address A never refuse its right password from address B,
    neither for the API's token nor for the board's login page."""
    answers = [token_from(patient_world, ATTACKER, "anna", f"guess {n}").status for n in range(12)]
    assert answers[:5] == [401] * 5
    assert set(answers[5:]) == {429}
    assert token_from(patient_world, CAREGIVER_PLACE, "anna", PASSWORD).status == 200
    page = httpx.post(
        f"{patient_world.base}/login",
        data={"username": "anna", "password": PASSWORD},
        headers={"X-Forwarded-For": "198.51.100.8"},
    )
    assert page.status_code == 303, page.text
    assert "carewatch_session=" in page.headers["set-cookie"]
    # The success at B forgot nothing of A's failures: A still waits.
    assert token_from(patient_world, ATTACKER, "anna", PASSWORD).status == 429


def test_retry_after_grows_with_each_further_failure(
    make_settings: MakeSettings, database_url: str
) -> None:
    """Past the free failures the wait doubles with each failure: 10 s, 20 s, 40 s here."""
    settings = make_settings(database_url, login_backoff_base_s=10.0)
    with running_world(settings) as world:
        for _ in range(5):
            assert token_from(world, ATTACKER, "anna", "nope").status == 401
        waits: list[int] = []
        for _ in range(3):
            refused = token_from(world, ATTACKER, "anna", "nope")
            assert refused.status == 429
            waits.append(int(refused.headers["retry-after"]))
            time_passes(world, waits[-1])
            assert token_from(world, ATTACKER, "anna", "nope").status == 401
    # Whole seconds rounded up, less what the request itself took (well under 2 s).
    for wait, expected in zip(waits, (10, 20, 40), strict=True):
        assert expected - 2 <= wait <= expected, waits


def test_password_spraying_from_one_address_is_limited(patient_world: World) -> None:
    """An address failing across 20 usernames waits, even for a real user's right password;
    the same user from another address is not affected."""
    for n in range(20):
        assert token_from(patient_world, ATTACKER, f"user{n:02d}", "Sommar2026!").status == 401
    sprayed = token_from(patient_world, ATTACKER, "anna", PASSWORD)
    assert sprayed.status == 429
    assert int(sprayed.headers["retry-after"]) >= 1
    assert token_from(patient_world, CAREGIVER_PLACE, "anna", PASSWORD).status == 200


@pytest.mark.parametrize(
    ("trusted_proxies", "audited_client"),
    [("127.0.0.1,::1", ATTACKER), ("10.0.0.1", "127.0.0.1"), ("", "127.0.0.1")],
    ids=["from-the-proxy", "from-someone-else", "no-proxy"],
)
def test_forwarded_for_counts_only_from_a_trusted_proxy(
    make_settings: MakeSettings, database_url: str, trusted_proxies: str, audited_client: str
) -> None:
    """X-Forwarded-For names the client only on a connection from CAREWATCH_TRUSTED_PROXIES;
    from anyone else the connection's own address is the client."""
    settings = make_settings(database_url, trusted_proxies=trusted_proxies)
    with running_world(settings) as world:
        assert token_from(world, ATTACKER, "anna", PASSWORD).status == 200
        with psycopg.connect(world.database_url) as conn:
            audit = conn.execute("SELECT client FROM audit_log WHERE action = 'login'").fetchall()
    assert audit == [(audited_client,)]


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
            # A first wait of a minute: longer than the test, whatever the machine's load.
            limits = LoginLimits(free_per_pair=2, base_delay_s=60, window_s=600)
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
            assert 58 <= refused.value.retry_after_s <= 60  # base_delay_s, the first wait
            # The same person from another address is not slowed by those failures.
            assert await authenticate(pool, "bo", PASSWORD, "10.0.0.2", limits=limits) == user

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
            limits = LoginLimits(free_per_client=3, base_delay_s=60, window_s=600)
            for guess in ("a1", "b2", "c3"):
                assert await authenticate(pool, guess, "x", "10.0.0.9", limits=limits) is None
            with pytest.raises(LoginRateLimited):
                await authenticate(pool, "cecilia", PASSWORD, "10.0.0.9", limits=limits)
            # Another address is not affected.
            assert await authenticate(pool, "cecilia", PASSWORD, "10.0.0.10", limits=limits)

    run_async(scenario())


def test_a_username_guessed_from_many_addresses_slows_only_failing_addresses(
    settings: Settings,
) -> None:
    """Past the username's ceiling an address that failed for it waits after one failure;
    an address that has not failed still gets in with the right password."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden")
        add_user(conn, "dag", "kommun", "caregiver")

    async def scenario() -> None:
        async with psycopg_pool.AsyncConnectionPool(
            settings.database_url, min_size=1, max_size=2, open=False
        ) as pool:
            limits = LoginLimits(
                username_ceiling=4, free_when_targeted=1, base_delay_s=60, window_s=600
            )
            for n in range(4):
                assert await authenticate(pool, "dag", "x", f"10.1.0.{n}", limits=limits) is None
            # 10.1.0.0 failed once: below the 5 free failures, but dag is being guessed at.
            with pytest.raises(LoginRateLimited):
                await authenticate(pool, "dag", PASSWORD, "10.1.0.0", limits=limits)
            assert await authenticate(pool, "dag", PASSWORD, "10.2.0.1", limits=limits)

    run_async(scenario())
