"""The API under schemathesis: generated requests for every operation of ``/openapi.json``,
valid and invalid, against the real app on a real PostgreSQL, as an admin. No answer may be a
5xx, and every answer must be one the document publishes (status, content type, body schema).

Bounded in time: a fixed number of examples per operation (a few hundred requests in all).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from app.web import create_app
from carewatch.settings import Settings
from tests.fixtures.api_client import (
    add_device,
    add_org_with_sites,
    add_user,
    insert_alert,
    login,
    module_database,
)
from tests.fixtures.api_server import running_api
from tools.local.postgres import PostgresInstance

# Examples per operation: about 30 operations, so some 500 requests, well under a minute. (Runs
# of 80 random examples per operation found nothing more; raise it, and set derandomize=False
# below, to explore.)
EXAMPLES_PER_OPERATION: Final = 20


@dataclass(frozen=True)
class Target:
    base: str
    token: str


@pytest.fixture(scope="module")
def target(pg: PostgresInstance, template_database: str) -> Iterator[Target]:
    with module_database(pg, template_database) as database_url:
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_org_with_sites(conn, "kommun", "site-a", "site-b")
            add_user(conn, "admin", "kommun", "admin")
            for number in range(1, 4):
                add_device(conn, f"lock-000{number}", "site-a")
        insert_alert(database_url, "lock-0001")
        with running_api(Settings(database_url=database_url)) as base:
            yield Target(base, login(base, "admin"))


# The document the app publishes, generated here so that pytest can make one test per operation
# before any server runs (test_the_fuzzed_document_is_the_published_one checks they agree).
DOCUMENT: Final = create_app(Settings()).openapi()
schema = (
    schemathesis.openapi.from_dict(DOCUMENT)
    # The alert stream never ends by itself: a generated request would wait forever.
    .exclude(path="/api/v1/alerts/stream")
    # Logging out would revoke the token every other request uses.
    .exclude(path="/api/v1/auth/logout")
)


def test_the_fuzzed_document_is_the_published_one(target: Target) -> None:
    """The document fuzzed below is what /openapi.json serves."""
    assert httpx.get(f"{target.base}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    # Explicit examples and generation; shrinking a failure would multiply the time.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    # The same examples on every run (seeded by the operation): CI fails only for a change.
    derandomize=True,
)
def test_the_api_answers_every_generated_request_as_it_documents(
    case: schemathesis.Case[Any], target: Target
) -> None:
    """No 5xx, and status, content type and body as the OpenAPI document publishes them."""
    case.call_and_validate(
        base_url=target.base,
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=30,
        # The document cannot say every rule a valid request must follow (a known time zone,
        # a site of the caller's, an id not taken), so a request that fits it may still be
        # refused with a 422 that explains why.
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
