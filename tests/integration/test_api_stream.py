"""The live alert stream (SSE) over real HTTP, fed by alert changes and NOTIFY as the gateway
writes them."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from carewatch.settings import Settings
from tests.fixtures.api_client import (
    SseClient,
    add_device,
    add_org_with_sites,
    add_session,
    add_user,
    call,
    insert_alert,
    login,
    open_stream,
)
from tests.fixtures.api_server import running_api

HEARTBEAT_S = 0.3
RECHECK_S = 0.5


@dataclass(frozen=True)
class World:
    base: str
    database_url: str
    anna: str  # caregiver of kommun, every site
    anna_id: int
    sara: str  # caregiver of kommun limited to solgarden


@pytest.fixture
def world(make_settings: Settings, database_url: str) -> Iterator[World]:
    """kommun (solgarden, ekbacken) and annan-kommun (fjallbo), a lock at each; the API running
    with a short heartbeat."""
    settings = make_settings(  # type: ignore[operator]
        database_url, sse_heartbeat_s=HEARTBEAT_S, sse_recheck_s=RECHECK_S
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        add_org_with_sites(conn, "kommun", "solgarden", "ekbacken")
        add_org_with_sites(conn, "annan-kommun", "fjallbo")
        for device_id, site_id in (
            ("lock-01", "solgarden"),
            ("lock-02", "ekbacken"),
            ("lock-03", "fjallbo"),
        ):
            add_device(conn, device_id, site_id)
        anna_id = add_user(conn, "anna", "kommun", "caregiver")
        add_user(conn, "sara", "kommun", "caregiver", sites=["solgarden"])
    with running_api(settings) as base:
        yield World(base, database_url, login(base, "anna"), anna_id, login(base, "sara"))


def test_stream_delivers_own_alerts_and_not_another_organisations(world: World) -> None:
    """alert.opened arrives with its change id and alert; another organisation's never does."""
    with open_stream(world.base, token=world.anna) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        foreign = insert_alert(world.database_url, "lock-03", "lock_jammed", "high")
        own = insert_alert(world.database_url, "lock-01", "lock_jammed", "high")
        event = stream.next()
        assert event is not None
        assert (event.id, event.event) == (str(own.change_id), "alert.opened")
        alert = event.json()
        assert (alert["id"], alert["device_id"], alert["site_id"], alert["state"]) == (
            own.alert_id,
            "lock-01",
            "solgarden",
            "open",
        )
        assert stream.events_until_keepalive() == []
    assert foreign.change_id < own.change_id


def test_stream_respects_site_limits(world: World) -> None:
    """A caregiver limited to one site gets that site's alerts only."""
    with open_stream(world.base, token=world.sara) as stream:
        other_site = insert_alert(world.database_url, "lock-02", "tamper", "high")
        own_site = insert_alert(world.database_url, "lock-01", "tamper", "high")
        event = stream.next()
        assert event is not None
        assert event.id == str(own_site.change_id)
        assert stream.events_until_keepalive() == []
    assert other_site.change_id < own_site.change_id


def test_stream_sends_heartbeat_comments(world: World) -> None:
    """A quiet stream sends ``: keepalive`` every sse_heartbeat_s."""
    with open_stream(world.base, token=world.anna) as stream:
        comments = [stream.next(2.0, skip_comments=False) for _ in range(2)]
    assert [event.comment if event else None for event in comments] == ["keepalive"] * 2


def test_ack_and_resolve_arrive_as_updated_and_resolved(world: World) -> None:
    """Acknowledging and resolving through the API stream alert.updated then alert.resolved."""
    with open_stream(world.base, token=world.anna) as stream:
        inserted = insert_alert(world.database_url, "lock-01", "lock_jammed", "high")
        opened = stream.next()
        assert opened is not None
        assert opened.event == "alert.opened"
        url = f"{world.base}/api/v1/alerts/{inserted.alert_id}"
        assert call("POST", f"{url}/ack", token=world.anna).status == 200
        updated = stream.next()
        assert call("POST", f"{url}/resolve", token=world.anna).status == 200
        resolved = stream.next()
    assert updated is not None
    assert resolved is not None
    assert (updated.event, updated.json()["state"]) == ("alert.updated", "acknowledged")
    assert (resolved.event, resolved.json()["state"]) == ("alert.resolved", "resolved")
    assert int(inserted.change_id) < int(updated.id or 0) < int(resolved.id or 0)


@pytest.mark.parametrize("how", ["header", "query"])
def test_last_event_id_resumes_with_the_missed_changes(world: World, how: str) -> None:
    """A reconnect with Last-Event-ID (header or query) first gets the scoped changes after it,
    then live ones."""
    with open_stream(world.base, token=world.anna) as earlier_connection:
        first = insert_alert(world.database_url, "lock-01", "lock_jammed", "high")
        second = insert_alert(world.database_url, "lock-02", "lock_jammed", "high")
        insert_alert(world.database_url, "lock-03", "lock_jammed", "high")  # another organisation
        third = insert_alert(world.database_url, "lock-01", "tamper", "high")
        # The connection that is lost: it saw the first change live, then went away.
        seen = [earlier_connection.next() for _ in range(3)]
        assert [event.id if event else None for event in seen] == [
            str(c.change_id) for c in (first, second, third)
        ]
    if how == "header":
        stream = open_stream(world.base, token=world.anna, last_event_id=first.change_id)
    else:
        stream = SseClient(
            world.base,
            f"/api/v1/alerts/stream?last_event_id={first.change_id}",
            {"Authorization": f"Bearer {world.anna}"},
        )
    with stream:
        backlog = stream.events_until_keepalive()
        assert [event.id for event in backlog] == [str(second.change_id), str(third.change_id)]
        live = insert_alert(world.database_url, "lock-02", "tamper", "high")
        event = stream.next()
        assert event is not None
        assert event.id == str(live.change_id)


def test_stream_accepts_the_session_cookie(world: World) -> None:
    """The pages' EventSource authenticates with the session cookie."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        cookie = add_session(conn, world.anna_id, "session")
    with open_stream(world.base, cookie=cookie) as stream:
        assert stream.status == 200
        inserted = insert_alert(world.database_url, "lock-01", "lock_jammed", "high")
        event = stream.next()
    assert event is not None
    assert event.id == str(inserted.change_id)


def stream_ends(stream: SseClient, within_s: float = 10 * RECHECK_S) -> bool:
    """Whether the server ends the stream within ``within_s`` (keepalives may come first)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if stream.next(within_s, skip_comments=False) is None:
            return True
    return False


def test_logout_ends_an_open_stream(world: World) -> None:
    """A stream checks its token again while it runs: after a logout it ends (the browser's
    reconnect is then refused), instead of streaming alerts to a signed-out screen."""
    token = login(world.base, "anna")
    with open_stream(world.base, token=token) as stream:
        assert stream.status == 200
        assert stream.next(3 * RECHECK_S, skip_comments=False) is not None  # alive and well
        assert call("POST", f"{world.base}/api/v1/auth/logout", token=token).status == 204
        assert stream_ends(stream), "the stream went on after its token was revoked"


def test_changed_sites_end_an_open_stream(world: World) -> None:
    """A user limited to other sites while their board is open gets a fresh, narrower stream."""
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        bo = add_user(conn, "bo", "kommun", "caregiver")
    token = login(world.base, "bo")
    with open_stream(world.base, token=token) as stream:
        assert stream.next(3 * RECHECK_S, skip_comments=False) is not None
        with psycopg.connect(world.database_url, autocommit=True) as conn:
            conn.execute("INSERT INTO user_sites (user_id, site_id) VALUES (%s, 'ekbacken')", (bo,))
        assert stream_ends(stream)


def test_an_unchanged_session_keeps_streaming_past_its_rechecks(world: World) -> None:
    with open_stream(world.base, token=world.anna) as stream:
        seen = [stream.next(2.0, skip_comments=False) for _ in range(8)]  # about 2.4 s
    assert None not in seen


def test_stream_needs_authentication(world: World) -> None:
    """Without credentials the stream answers 401."""
    with open_stream(world.base) as stream:
        assert stream.status == 401
        with pytest.raises(queue.Empty):
            stream.next(0.1)


def test_stream_reconnects_its_listener_after_a_lost_connection(world: World) -> None:
    """When PostgreSQL drops the LISTEN connection, the hub reconnects and catches up."""
    with open_stream(world.base, token=world.anna) as stream:
        with psycopg.connect(world.database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query = 'LISTEN carewatch_alerts' AND pid <> pg_backend_pid()"
            )
        inserted = insert_alert(world.database_url, "lock-01", "lock_jammed", "high")
        event = stream.next(10.0)
    assert event is not None
    assert event.id == str(inserted.change_id)
