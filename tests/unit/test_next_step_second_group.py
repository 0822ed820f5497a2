"""The alert JSON's next step says whether the site has a second group (issue 12): for a step
that alerts one, true or false from the site's chain; null for a step that does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.schemas import AlertResponse

OPENED = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)


def _next(escalated: list[str], second_group: bool) -> tuple[str, bool | None]:
    response = AlertResponse.model_validate(
        {
            "state": "open",
            "escalated": escalated,
            "site_promise": {"opened_at": OPENED.isoformat(), "contact_s": None, "on_site_s": None},
            "site_chain": {"steps": {}, "second_group": second_group},
        }
    )
    assert response.next_step is not None
    return response.next_step.name, response.next_step.second_group


@pytest.mark.parametrize("second_group", [True, False])
def test_a_step_that_alerts_the_second_group_says_whether_there_is_one(
    second_group: bool,
) -> None:
    assert _next([], second_group) == ("not_accepted", second_group)


def test_a_step_without_the_second_group_says_nothing_of_it() -> None:
    assert _next(["not_accepted"], True) == ("call_out", None)
