"""The alarm response report (#12, api/response_report_queries.py) over hand-built responses
with known times: exact medians, 90th percentiles (continuous, as PostgreSQL interpolates them)
and shares within each site's promise, per local month and over the period; a site without a
promise measured only; another organisation's responses never counted; a site-limited manager
sees their site only; ``GET /api/v1/responses/summary`` answers the same figures as JSON."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import psycopg_pool
import pytest

from api.auth import UserContext
from api.response_report_queries import ResponseReport, ResponseReportQuery, response_report
from carewatch.roles import Role
from carewatch.settings import Settings
from devices.response import Promise
from tests.fixtures.api_client import (
    add_device,
    add_org_with_sites,
    add_user,
    call,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

MARCH, APRIL = date(2026, 3, 1), date(2026, 4, 1)
CONTACT_PROMISE_S, ON_SITE_PROMISE_S = 300, 1800


@dataclass(frozen=True)
class Response:
    """One hand-built response: seconds from the opening to each step (None: not reached)."""

    device: str
    opened_at: datetime
    contact_s: int | None = None
    on_site_s: int | None = None
    source: str | None = None
    close_s: int | None = None
    action: str | None = None
    rule: str = "alarm_pressed"


def at(month: int, day: int, hour: int = 10, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# Site A (Stockholm; promises 5 min contact, 30 min on site), March: contact 60/120/240/600 s,
# on site 600 (lock)/1500 (by hand)/2400 (lock), closed 1200/2400/3000/900; one never touched.
SITE_A_MARCH = (
    Response("alarm-a1", at(3, 2), 60, 600, "lock", 1200, "help_given"),
    Response("alarm-a1", at(3, 5), 120, 1500, "staff", 2400, "help_given"),
    Response("alarm-a2", at(3, 10), 240, 2400, "lock", 3000, "help_given"),
    Response("alarm-a2", at(3, 15), 600, None, None, 900, "false_alarm"),
    Response("alarm-a1", at(3, 20)),  # nobody took it: a response, never accepted
)
# 31 March 23:30 UTC is 1 April 01:30 in Stockholm (summer time): April's, still open.
SITE_A_APRIL = Response("alarm-a2", at(3, 31, 23, 30), 30, rule="smoke_detected")
OUTSIDE = (
    # 28 February 23:30 in Stockholm: before the period's first local midnight.
    Response("alarm-a1", at(2, 28, 22, 30), 10, 20, "lock", 30, "help_given"),
    # Not a response rule: acknowledged, never worked.
    Response("alarm-a1", at(3, 3), 1, rule="battery_low"),
)
SITE_B = Response("alarm-b1", at(3, 7), 100, 200, "staff", 400, "help_given")
SITE_C = Response("alarm-c1", at(3, 8), 5000, 9000, "staff", 9900, "help_given")

_users = itertools.count(1)


def user(org: str, role: Role, sites: set[str] | None = None) -> UserContext:
    return UserContext(
        user_id=next(_users),
        username=f"u{org}",
        org_id=org,
        role=role,
        site_ids=None if sites is None else frozenset(sites),
        language="sv",
    )


def store(conn: psycopg.Connection[Any], response: Response) -> None:
    """The alert, resolved when its response closed (or an hour on), and its response row as the
    API writes it; none for an alert nobody touched."""

    def later(seconds: int | None) -> datetime | None:
        return None if seconds is None else response.opened_at + timedelta(seconds=seconds)

    closed = later(response.close_s)
    resolved = response.contact_s is None or closed is not None or response.rule == "battery_low"
    row = conn.execute(
        "INSERT INTO alerts (device_id, rule, severity, state, opened_at, acknowledged_at,"
        " resolved_at, last_event_at) VALUES (%s, %s, 'critical', %s, %s, %s, %s, %s)"
        " RETURNING id",
        (
            response.device,
            response.rule,
            "resolved" if resolved else "acknowledged",
            response.opened_at,
            later(response.contact_s),
            (closed or response.opened_at + timedelta(hours=1)) if resolved else None,
            response.opened_at,
        ),
    ).fetchone()
    assert row is not None
    if response.contact_s is None or response.rule == "battery_low":
        return
    state = "closed" if closed else "on_site" if response.on_site_s else "accepted"
    conn.execute(
        "INSERT INTO alert_responses (alert_id, state, holder, accepted_at, on_site_at,"
        " on_site_by, on_site_source, closed_at, closed_by, action)"
        " VALUES (%s, %s, 'anna', %s, %s, %s, %s, %s, %s, %s)",
        (
            row[0],
            state,
            later(response.contact_s),
            later(response.on_site_s),
            None if response.source is None else "anna",
            response.source,
            closed,
            None if closed is None else "anna",
            response.action,
        ),
    )


@pytest.fixture(scope="module")
def database_url(pg: PostgresInstance, template_database: str) -> Iterator[str]:
    with module_database(pg, template_database) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_org_with_sites(conn, "annan", "site-c")
            conn.execute(
                "UPDATE sites SET contact_promise_s = %s, on_site_promise_s = %s"
                " WHERE id = 'site-a'",
                (CONTACT_PROMISE_S, ON_SITE_PROMISE_S),
            )
            conn.execute("UPDATE sites SET contact_promise_s = 60 WHERE id = 'site-c'")
            for device, site in (("alarm-a1", "site-a"), ("alarm-a2", "site-a"),
                                 ("alarm-b1", "site-b"), ("alarm-c1", "site-c")):  # fmt: skip
                add_device(conn, device, site, "alarm_button")
            residence = conn.execute(
                "INSERT INTO residences (site_id, label) VALUES ('site-a', 'Lgh 1') RETURNING id"
            ).fetchone()
            assert residence is not None
            conn.execute(
                "UPDATE devices SET residence_id = %s WHERE id = 'alarm-a1'", (residence[0],)
            )
            for response in (*SITE_A_MARCH, SITE_A_APRIL, *OUTSIDE, SITE_B, SITE_C):
                store(conn, response)
            add_user(conn, "manager", "kommun", "manager")
            add_user(conn, "caregiver", "kommun", "caregiver")
        yield url


@pytest.fixture(scope="module")
def api(database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The API over the module's database, with a token per user."""
    with running_api(Settings(database_url=database_url)) as base:
        yield base, {name: login(base, name) for name in ("manager", "caregiver")}


def report(
    database_url: str, caller: UserContext, site: str | None = None
) -> ResponseReport | None:
    async def scenario() -> ResponseReport | None:
        async with psycopg_pool.AsyncConnectionPool(
            database_url, min_size=1, max_size=1, open=False
        ) as pool:
            query = ResponseReportQuery(since=MARCH, until=date(2026, 4, 30), site=site)
            return await response_report(pool, caller, query)

    return asyncio.run(scenario())


MANAGER = user("kommun", Role.MANAGER)


def test_medians_p90_and_shares_per_month_and_period(database_url: str) -> None:
    """Site A's March: the known times' continuous percentiles and the shares within its
    promise (of the accepted, of the arrivals); April holds the response opened after local
    midnight; the period's figures are over all of them, not put together from the months."""
    answer = report(database_url, MANAGER)
    assert answer is not None
    assert [site.site_id for site in answer.sites] == ["site-a", "site-b"]
    site_a = answer.sites[0]
    assert site_a.promise == Promise(CONTACT_PROMISE_S, ON_SITE_PROMISE_S)
    march, april = site_a.months
    assert (march.month, april.month) == (MARCH, APRIL)
    m = march.figures
    assert (m.responses, m.accepted, m.arrived, m.closed) == (5, 4, 3, 4)
    # 60, 120, 240, 600: the median between 120 and 240; p90 at 2.7 of 3 steps: 240 + 0.7 * 360.
    assert m.contact_median_s == 180
    assert m.contact_p90_s == pytest.approx(492)
    assert (m.contact_within, m.contact_share) == (3, 0.75)
    # 600, 1500, 2400: p90 at 1.8 of 2 steps: 1500 + 0.8 * 900.
    assert m.on_site_median_s == 1500
    assert m.on_site_p90_s == pytest.approx(2220)
    assert m.on_site_within == 2
    assert m.on_site_share == pytest.approx(2 / 3)
    assert (m.by_lock, m.by_hand) == (2, 1)
    # 900, 1200, 2400, 3000.
    assert m.close_median_s == 1800
    assert m.close_p90_s == pytest.approx(2820)
    a = april.figures
    assert (a.responses, a.accepted, a.contact_median_s, a.contact_share) == (1, 1, 30, 1.0)
    assert (a.arrived, a.on_site_median_s, a.on_site_share, a.closed) == (0, None, None, 0)
    total = site_a.totals
    assert total is not None
    # 30, 60, 120, 240, 600: p90 at 3.6 of 4 steps: 240 + 0.6 * 360.
    assert (total.responses, total.contact_median_s) == (6, 120)
    assert total.contact_p90_s == pytest.approx(456)
    assert (total.contact_within, total.contact_share) == (4, 0.8)
    assert answer.responses == 7


def test_a_site_without_a_promise_is_measured_only(database_url: str) -> None:
    """Site B promises nothing: its times are there, its shares and counts within are None."""
    answer = report(database_url, MANAGER, "site-b")
    assert answer is not None
    [site] = answer.sites
    assert site.promise == Promise(None, None)
    [month] = site.months
    f = month.figures
    assert (f.responses, f.contact_median_s, f.on_site_median_s, f.close_median_s) == (
        1, 100, 200, 400,
    )  # fmt: skip
    assert (f.contact_within, f.contact_share, f.on_site_within, f.on_site_share) == (
        None, None, None, None,
    )  # fmt: skip
    assert (f.by_lock, f.by_hand) == (0, 1)


def test_the_slowest_by_arrival_else_acceptance_name_no_one(database_url: str) -> None:
    """Slowest first by time to arrive, else to accept; the residence's label (else the
    device's); never accepted is not ranked; another organisation's never there."""
    answer = report(database_url, MANAGER)
    assert answer is not None
    assert [(s.site_id, s.residence, s.contact_s, s.on_site_s, s.close_s, s.action)
            for s in answer.slowest] == [
        ("site-a", "Lgh a2", 240, 2400, 3000, "help_given"),
        ("site-a", "Lgh 1", 120, 1500, 2400, "help_given"),
        ("site-a", "Lgh 1", 60, 600, 1200, "help_given"),
        ("site-a", "Lgh a2", 600, None, 900, "false_alarm"),
        ("site-b", "Lgh b1", 100, 200, 400, "help_given"),
        ("site-a", "Lgh a2", 30, None, None, None),
    ]  # fmt: skip
    assert answer.slowest[0].opened_at == at(3, 10)
    assert answer.slowest[0].on_site_source == "lock"
    assert answer.slowest[-1].rule == "smoke_detected"


def test_scope_other_organisation_and_site_limited_manager(database_url: str) -> None:
    """The other organisation's admin sees only site C; kommun never sees it (not even when
    asked for by id); a manager limited to site B gets B's figures and slowest only."""
    other = report(database_url, user("annan", Role.ADMIN))
    assert other is not None
    assert [site.site_id for site in other.sites] == ["site-c"]
    assert [s.site_id for s in other.slowest] == ["site-c"]
    assert report(database_url, MANAGER, "site-c") is None
    limited = user("kommun", Role.MANAGER, {"site-b"})
    answer = report(database_url, limited)
    assert answer is not None
    assert [site.site_id for site in answer.sites] == ["site-b"]
    assert {s.site_id for s in answer.slowest} == {"site-b"}
    assert report(database_url, limited, "site-a") is None


def test_the_endpoint_answers_the_same_figures(api: tuple[str, dict[str, str]]) -> None:
    """``GET /api/v1/responses/summary``: the report as JSON (shares as fields, the promise
    beside them); a caregiver 403, another organisation's site 404, days out of order 422."""
    base, tokens = api
    url = f"{base}/api/v1/responses/summary"
    answer = call("GET", f"{url}?since=2026-03-01&until=2026-04-30", token=tokens["manager"])
    assert answer.status == 200, answer.body
    body = answer.json()
    assert (body["since"], body["until"]) == ("2026-03-01", "2026-04-30")
    site_a, site_b = body["sites"]
    assert site_a["promise"] == {"contact_s": CONTACT_PROMISE_S, "on_site_s": ON_SITE_PROMISE_S}
    march = site_a["months"][0]
    assert march["month"] == "2026-03-01"
    assert march["figures"]["contact_median_s"] == 180
    assert (march["figures"]["contact_within"], march["figures"]["contact_share"]) == (3, 0.75)
    assert site_b["promise"] == {"contact_s": None, "on_site_s": None}
    assert site_b["totals"]["contact_share"] is None
    assert len(body["slowest"]) == 6
    assert set(body["slowest"][0]) == {
        "alert_id", "rule", "site_id", "residence", "opened_at", "contact_s", "on_site_s",
        "close_s", "on_site_source", "action",
    }  # fmt: skip
    forbidden = call("GET", url, token=tokens["caregiver"])
    assert forbidden.status == 403
    assert call("GET", f"{url}?site=site-c", token=tokens["manager"]).status == 404
    wrong = call("GET", f"{url}?since=2026-04-02&until=2026-04-01", token=tokens["manager"])
    assert wrong.status == 422
    too_long = call("GET", f"{url}?since=2024-01-01&until=2026-04-01", token=tokens["manager"])
    assert too_long.status == 422
