"""Hostile input gets a clear answer, never a 500: oversized bodies (413), NUL characters and
lone surrogates (400 in the URL, 422 in a body), dates at the ends of the calendar and rule
settings out of bounds (422), JSON that is not finite (422 without an echo); the metrics name
routes, and every answer says nosniff. Against the real app on a real PostgreSQL."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import httpx
import psycopg
import pytest

from api.limits import DEFAULT_BODY_MAX_BYTES, UPLOAD_BODY_MAX_BYTES
from api.schemas import RuleSettingsUpdate
from carewatch.settings import Settings
from devices.rules import SITE_RULE_BOUNDS, SiteRuleSettings
from tests.fixtures.api_client import (
    ApiResponse,
    add_device,
    add_org_with_sites,
    add_session,
    add_user,
    call,
    insert_alert,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

CSV_HEADER: Final = b"id,kind,site,label\r\n"


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    admin: str  # a bearer token
    admin_cookie: str  # a session for the pages
    alert_id: int


@pytest.fixture(scope="module")
def world(pg: PostgresInstance, template_database: str) -> Iterator[World]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a")
            admin_id = add_user(conn, "admin", "kommun", "admin")
            add_device(conn, "lock-0001", "site-a")
            cookie = add_session(conn, admin_id, "session")
        alert = insert_alert(database_url, "lock-0001")
        with running_api(Settings(database_url=database_url)) as base:
            yield World(base, database_url, login(base, "admin"), cookie, alert.alert_id)


def get(world: World, path: str) -> ApiResponse:
    return call("GET", f"{world.base}{path}", token=world.admin)


def page(world: World, path: str) -> ApiResponse:
    return call("GET", f"{world.base}{path}", cookie=world.admin_cookie)


def detail(response: ApiResponse) -> object:
    assert response.headers["content-type"].startswith("application/json"), response.body
    return response.json()["detail"]


# --- 413: bodies over the limit, declared or not --------------------------------------------


def chunks(total_bytes: int, chunk_bytes: int = 16 * 1024) -> Iterator[bytes]:
    sent = 0
    while sent < total_bytes:
        size = min(chunk_bytes, total_bytes - sent)
        yield b" " * size
        sent += size


def test_a_body_over_the_limit_is_refused_before_authentication_is_even_asked(
    world: World,
) -> None:
    """A JSON body over the limit answers 413 whether it declares its length or comes chunked,
    without credentials too (FastAPI reads a body before it checks who sent it)."""
    url = f"{world.base}/api/v1/sites"
    oversized = b"[" + b"1," * DEFAULT_BODY_MAX_BYTES + b"1]"
    declared = httpx.post(url, content=oversized, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413, declared.text
    assert "larger than" in declared.json()["detail"]
    chunked = httpx.post(
        url,
        content=chunks(4 * DEFAULT_BODY_MAX_BYTES),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {world.admin}"},
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413, chunked.text
    assert "larger than" in chunked.json()["detail"]
    # Under the limit the same route answers as ever: no credentials, 401.
    assert httpx.post(url, json={"id": "x"}).status_code == 401


def test_a_csv_import_may_be_larger_than_json_but_not_without_bound(world: World) -> None:
    """The CSV upload has its own, larger limit: a file over the JSON limit is read, one over
    the upload limit is 413, chunked too."""
    url = f"{world.base}/api/v1/devices/import"
    headers = {"Authorization": f"Bearer {world.admin}", "Content-Type": "text/csv"}
    # Rows of a kind that does not exist: every one is read and refused, none is created.
    label = b"x" * 190
    rows = b"".join(b"lock-9%03d,no_such_kind,site-a,%s\r\n" % (i, label) for i in range(400))
    assert len(rows) > DEFAULT_BODY_MAX_BYTES
    read = httpx.post(url, content=CSV_HEADER + rows, headers=headers, timeout=60)
    assert read.status_code == 200, read.text
    assert read.json()["refused_count"] == 400
    too_large = httpx.post(url, content=chunks(UPLOAD_BODY_MAX_BYTES + 1), headers=headers)
    assert too_large.status_code == 413, too_large.text
    declared = httpx.post(url, content=b"x" * (UPLOAD_BODY_MAX_BYTES + 1), headers=headers)
    assert declared.status_code == 413, declared.text
    # A multipart upload is parsed whole before the route sees its file: the limit stops it.
    boundary = b"grans"
    multipart = itertools.chain(
        [b"--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n"
         b"Content-Type: text/csv\r\n\r\n" % boundary],
        chunks(UPLOAD_BODY_MAX_BYTES + 1),
        [b"\r\n--%s--\r\n" % boundary],
    )  # fmt: skip
    upload = httpx.post(
        url,
        content=multipart,
        headers={
            "Authorization": f"Bearer {world.admin}",
            "Content-Type": "multipart/form-data; boundary=grans",
        },
    )
    assert upload.status_code == 413, upload.text
    assert "request body larger than" in upload.json()["detail"]


# --- NUL characters and lone surrogates ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/alerts?site=%00"),
        ("GET", "/api/v1/devices?site=a%00b"),
        ("GET", "/api/v1/devices?kind=%00"),
        ("GET", "/api/v1/devices/summary?site=%00"),
        ("GET", "/api/v1/usage?site=%00"),
        ("GET", "/api/v1/alerts?%00=1"),
        ("GET", "/api/v1/devices/lock-0001%00"),
        ("GET", "/api/v1/devices/lock-0001%00/events"),
        ("GET", "/api/v1/sites/site-a%00"),
        ("DELETE", "/api/v1/bridges/x%00"),
        ("POST", "/api/v1/alerts/1/ack?note=%00"),
    ],
)
def test_a_nul_in_an_api_url_is_a_bad_request(world: World, method: str, path: str) -> None:
    """A NUL in a query parameter or a path segment answers 400, before it reaches a query."""
    response = call(method, f"{world.base}{path}", token=world.admin)
    assert response.status == 400, response.body
    assert detail(response) == "NUL character in the URL"


@pytest.mark.parametrize(
    "path",
    [
        "/fleet?site=%00",
        "/fleet?kind=%00",
        "/fleet/lock-0001%00",
        "/dashboards?site=%00",
        "/dashboards/export/alarms.csv?site=%00",
        "/dashboards/report?site=%00",
        "/?lang=%00",
    ],
)
def test_a_nul_in_a_page_url_is_a_bad_request(world: World, path: str) -> None:
    """The pages share the check: a NUL in their URL answers 400 too."""
    response = page(world, path)
    assert response.status == 400, response.body


def test_a_nul_in_the_login_form_is_refused_without_a_500(world: World) -> None:
    """The login form reaches the database without authentication: a NUL in the username is a
    422, never a 500."""
    response = call(
        "POST",
        f"{world.base}/api/v1/auth/token",
        content=b"username=a%00&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status == 422, response.body
    assert "NUL" in str(detail(response))


@pytest.mark.parametrize("text", ["a\x00b", "a\ud800b"], ids=["nul", "lone-surrogate"])
def test_unstorable_text_in_a_json_body_is_refused_by_field(world: World, text: str) -> None:
    """A note, a label or a name with a NUL or a lone surrogate is a 422 naming the field."""
    ack = f"{world.base}/api/v1/alerts/{world.alert_id}/ack"
    cases = [
        ("POST", ack, {"note": text}, "note"),
        (
            "POST",
            f"{world.base}/api/v1/devices",
            {"id": "lock-0777", "kind": "door_lock", "site": "site-a", "label": text},
            "label",
        ),
        ("POST", f"{world.base}/api/v1/bridges", {"id": "brygga", "label": text}, "label"),
        ("PATCH", f"{world.base}/api/v1/devices/lock-0001", {"label": text}, "label"),
    ]
    for method, url, body, field in cases:
        # json.dumps escapes both as \u0000 and \ud800, as a hostile client would send them.
        response = call(
            method,
            url,
            token=world.admin,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 422, (url, response.body)
        refusals = detail(response)
        assert isinstance(refusals, list)
        assert [r["loc"][-1] for r in refusals] == [field], refusals
    alert = get(world, f"/api/v1/alerts/{world.alert_id}").json()
    assert alert["state"] == "open"


def test_a_csv_file_with_a_nul_is_refused_as_a_whole(world: World) -> None:
    """A CSV with a NUL byte in a cell is not a text file: 422 for the file, nothing created."""
    body = CSV_HEADER + b"lock-0900,door_lock,site-a,Lgh\x00 1\r\n"
    response = call(
        "POST",
        f"{world.base}/api/v1/devices/import",
        token=world.admin,
        content=body,
        headers={"Content-Type": "text/csv"},
    )
    assert response.status == 422, response.body
    assert "NUL" in str(detail(response))
    assert get(world, "/api/v1/devices/lock-0900").status == 404


# --- dates and numbers at the edges ----------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "since=9999-12-31T23:59:59Z",
        "until=0001-01-01T00:00:00Z",
        "since=0001-01-01T00:00:00&until=0001-01-02T00:00:00",
        "until=9999-12-31T23:59:59%2B14:00&bucket=week",
    ],
)
def test_usage_dates_out_of_range_are_422(world: World, query: str) -> None:
    """A period at the ends of the calendar is refused with a reason, not an OverflowError."""
    response = get(world, f"/api/v1/usage?{query}")
    assert response.status == 422, response.body
    assert "years" in str(detail(response))


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/devices/lock-0001/events?since=9999-12-31T23:59:59%2B14:00",
        "/api/v1/devices/lock-0001/events?until=0001-01-01T00:00:00-12:00",
    ],
)
def test_device_events_at_the_ends_of_the_calendar_answer(world: World, path: str) -> None:
    """Device event times at the ends of the calendar are a plain question: no 500."""
    assert get(world, path).status in (200, 422)


@pytest.mark.parametrize(
    "path",
    [
        "/dashboards?since=9999-12-31&until=9999-12-31",
        "/dashboards?since=0001-01-01&until=0001-01-02",
        "/dashboards/report?month=9999-12",
        "/dashboards/report?month=0001-01",
    ],
)
def test_usage_pages_at_the_ends_of_the_calendar_answer(world: World, path: str) -> None:
    """The dashboards' own dates at the ends of the calendar never give a 500."""
    assert page(world, path).status < 500


def test_rule_setting_bounds_are_the_same_in_the_api_schema_and_the_core() -> None:
    """Each override's bounds in the API's schema are the core's, which the gateway applies;
    the core accepts both ends and refuses one beyond."""
    schema = RuleSettingsUpdate.model_json_schema()["properties"]
    assert set(schema) == set(SITE_RULE_BOUNDS)
    assert set(SITE_RULE_BOUNDS) == set(SiteRuleSettings.__dataclass_fields__)
    for name, bounds in SITE_RULE_BOUNDS.items():
        published = next(option for option in schema[name]["anyOf"] if option["type"] == "integer")
        assert (published["minimum"], published["maximum"]) == (bounds.minimum, bounds.maximum)
        for edge in (bounds.minimum, bounds.maximum):
            SiteRuleSettings.from_record({name: edge})
            RuleSettingsUpdate.model_validate({name: edge})
        for beyond in (bounds.minimum - 1, bounds.maximum + 1, 99999999999999999999):
            with pytest.raises(ValueError, match=name):
                SiteRuleSettings.from_record({name: beyond})
            with pytest.raises(ValueError, match=name):
                RuleSettingsUpdate.model_validate({name: beyond})


@pytest.mark.parametrize(
    "body",
    [
        b'{"rule_settings": {"escalation_s": 99999999999999999999}}',
        b'{"rule_settings": {"escalation_s": 604801}}',
        b'{"rule_settings": {"door_left_open_min": 10081}}',
    ],
)
def test_rule_settings_beyond_the_gateways_bounds_are_422(world: World, body: bytes) -> None:
    """The API refuses an override the gateway would refuse, and stores nothing."""
    response = call(
        "PATCH",
        f"{world.base}/api/v1/sites/site-a",
        token=world.admin,
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 422, response.body
    with psycopg.connect(world.database_url) as conn:
        row = conn.execute("SELECT rule_settings FROM sites WHERE id = 'site-a'").fetchone()
    assert row is not None
    assert "escalation_s" not in row[0]
    assert "door_left_open_min" not in row[0]


def test_the_largest_rule_settings_are_stored(world: World) -> None:
    """The bounds themselves are accepted and stored as given."""
    largest = {name: bounds.maximum for name, bounds in SITE_RULE_BOUNDS.items()}
    response = call(
        "PATCH",
        f"{world.base}/api/v1/sites/site-a",
        token=world.admin,
        json_body={"rule_settings": largest},
    )
    assert response.status == 200, response.body
    assert response.json()["rule_settings"] == largest
    call("PATCH", f"{world.base}/api/v1/sites/site-a", token=world.admin,
         json_body={"rule_settings": {}})  # fmt: skip


# --- 422 answers: safe to encode, never an echo ----------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"note": NaN}',
        b'{"note": 1e999}',
        b'{"note": -Infinity}',
        b'{"note": "x", "\\ud800": 1}',
        b'{"\\ud800\\u0000": NaN}',
        b'{"note": [1e999, NaN, "\\udfff"]}',
    ],
)
def test_unencodable_json_gets_a_422_that_encodes(world: World, body: bytes) -> None:
    """NaN, infinities and lone surrogates in a refused body give a 422, not a 500 from
    encoding the refusal."""
    response = call(
        "POST",
        f"{world.base}/api/v1/alerts/{world.alert_id}/ack",
        token=world.admin,
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 422, response.body
    for refusal in detail(response):  # type: ignore[attr-defined]
        assert set(refusal) <= {"type", "loc", "msg", "ctx"}


def test_a_refused_body_is_not_echoed(world: World) -> None:
    """A note over its length limit is refused with the reason, not with the note."""
    note = "å" * 20_000
    response = call(
        "POST",
        f"{world.base}/api/v1/alerts/{world.alert_id}/ack",
        token=world.admin,
        json_body={"note": note},
    )
    assert response.status == 422, response.body
    assert len(response.body) < 1000
    assert "åååå" not in response.body.decode()


def test_a_refused_password_is_not_echoed(world: World) -> None:
    """A login form refused for its password's length does not send the password back."""
    password = "hemligt-" * 200
    response = call(
        "POST",
        f"{world.base}/api/v1/auth/token",
        form={"username": "admin", "password": password},
    )
    assert response.status in (401, 422), response.body
    assert b"hemligt" not in response.body


# --- metrics, documentation, headers ---------------------------------------------------------


def metric_lines(world: World, route: str) -> list[str]:
    text = httpx.get(f"{world.base}/metrics").text
    return [
        line
        for line in text.splitlines()
        if line.startswith("carewatch_http_requests_total{") and f'route="{route}"' in line
    ]


def test_metrics_name_each_request_by_its_route_template(world: World) -> None:
    """/metrics counts requests by route template; "unmatched" is for paths no route takes."""
    assert get(world, "/api/v1/alerts").status == 200
    assert get(world, f"/api/v1/alerts/{world.alert_id}").status == 200
    assert get(world, "/api/v1/no-such-thing").status == 404
    assert get(world, "/api/v1/alerts?site=%00").status == 400
    assert any('status="200"' in line for line in metric_lines(world, "/api/v1/alerts"))
    assert any('status="400"' in line for line in metric_lines(world, "/api/v1/alerts"))
    assert metric_lines(world, "/api/v1/alerts/{alert_id}")
    unmatched = metric_lines(world, "unmatched")
    assert unmatched
    assert all('status="404"' in line for line in unmatched), unmatched
    assert not any(re.search(r'route="/api/v1/alerts/\d', line) for line in unmatched)


def test_no_swagger_ui_from_a_cdn_but_the_openapi_document_stays(world: World) -> None:
    """/docs and /redoc (scripts from a CDN) are gone; /openapi.json is served."""
    assert httpx.get(f"{world.base}/docs").status_code == 404
    assert httpx.get(f"{world.base}/redoc").status_code == 404
    document = httpx.get(f"{world.base}/openapi.json").json()
    assert "/api/v1/alerts" in document["paths"]
    assert "cdn" not in httpx.get(f"{world.base}/openapi.json").text.lower()


def test_every_answer_says_nosniff(world: World) -> None:
    """JSON, errors, 413s, pages and static files all carry X-Content-Type-Options: nosniff."""
    answers = [
        get(world, "/api/v1/alerts"),
        get(world, "/api/v1/no-such-thing"),
        call("GET", f"{world.base}/api/v1/alerts"),
        call("GET", f"{world.base}/healthz"),
        call("GET", f"{world.base}/metrics"),
        call("POST", f"{world.base}/api/v1/sites", content=b"[" * (DEFAULT_BODY_MAX_BYTES + 1)),
        page(world, "/fleet"),
        call("GET", f"{world.base}/login"),
    ]
    for response in answers:
        assert response.headers.get("x-content-type-options") == "nosniff", response.status
