"""The SSE hub's per-subscriber rules: who gets a change, and what happens to a slow reader."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.alert_queries import AlertChange, Audience
from api.auth import UserContext
from api.schemas import AlertPublic
from api.stream import Subscriber, encode_event
from carewatch.roles import Role

NOW = datetime(2026, 11, 22, 23, 41, tzinfo=UTC)


def user(org_id: str = "kommun", site_ids: frozenset[str] | None = None) -> UserContext:
    return UserContext(1, "anna", org_id, Role.CAREGIVER, site_ids, "sv")


def change(change_id: int = 7, org_id: str = "kommun", site_id: str = "site-a") -> AlertChange:
    alert = AlertPublic(
        id=3, device_id="lock-01", device_label="Lgh 12", device_kind="door_lock",
        site_id=site_id, site_name="Solgården", rule="lock_jammed", severity="high",
        state="open", cleared=False, cleared_reason=None, escalated=False, count=1, reason="",
        opened_at=NOW, acknowledged_at=None, acknowledged_by=None, resolved_at=None,
        resolved_by=None, escalated_at=None,
    )  # fmt: skip
    return AlertChange(change_id, "alert.opened", org_id, site_id, alert)


@pytest.mark.parametrize(
    ("subscriber", "org_id", "site_id", "wanted"),
    [
        (user(), "kommun", "site-a", True),
        (user(), "kommun", "site-b", True),
        (user(), "annan", "site-c", False),
        (user(site_ids=frozenset({"site-a"})), "kommun", "site-a", True),
        (user(site_ids=frozenset({"site-a"})), "kommun", "site-b", False),
        (user(site_ids=frozenset({"site-c"})), "annan", "site-c", False),
    ],
    ids=[
        "org-wide-own-site",
        "org-wide-other-site",
        "other-org",
        "limited-own-site",
        "limited-other-site",
        "limited-to-a-foreign-site-id",
    ],
)
def test_subscriber_wants_only_its_org_and_sites(
    subscriber: UserContext, org_id: str, site_id: str, wanted: bool
) -> None:
    """A change goes to a subscriber only within its organisation and, if limited, its sites."""
    assert Subscriber(subscriber, 10).wants(change(org_id=org_id, site_id=site_id)) is wanted


def test_full_queue_drops_the_subscriber() -> None:
    """A subscriber that falls behind by the queue size is emptied and told to end."""
    subscriber = Subscriber(user(), 2)

    def offer(*change_ids: int) -> bool:
        for change_id in change_ids:
            subscriber.offer(change_id, b"x")
        return subscriber.dropped

    assert offer(1, 2) is False
    assert offer(3, 4) is True
    assert subscriber.queue.get_nowait() is None
    assert subscriber.queue.empty()


def test_event_encoding() -> None:
    """An SSE message carries the change id, the change kind and the alert as one JSON line."""
    message = encode_event(change(change_id=42)).decode()
    lines = message.split("\n")
    assert lines[:2] == ["id: 42", "event: alert.opened"]
    assert lines[2].startswith('data: {"id":3,"device_id":"lock-01"')
    assert message.endswith("\n\n")
    assert message.count("\n") == 4


@pytest.mark.parametrize(
    ("audience", "audiences", "wanted"),
    [
        (None, ["technical"], True),
        ("care", ["care"], True),
        ("care", ["care", "technical"], True),
        ("care", ["technical"], False),
        ("technical", ["care"], False),
        ("technical", ["care", "technical"], True),
    ],
)
def test_subscriber_of_an_audience_wants_only_alerts_for_it(
    audience: Audience | None, audiences: list[str], wanted: bool
) -> None:
    """A stream that asked for an audience gets the alerts whose ``audiences`` name it."""
    plain = change()
    alert = plain.alert.model_copy(update={"audiences": audiences})
    routed = AlertChange(plain.change_id, plain.change, plain.org_id, plain.site_id, alert)
    assert Subscriber(user(), 10, audience).wants(routed) is wanted
