"""The API's health, readiness and metrics endpoints against a real PostgreSQL."""

from __future__ import annotations

from carewatch.processes import free_port
from carewatch.settings import Settings
from tests.fixtures.api_client import call
from tests.fixtures.api_server import running_api


def test_healthz_and_readyz_answer_when_the_database_is_there(settings: Settings) -> None:
    """Alive and ready, and the requests show up in the HTTP metrics by route."""
    with running_api(settings) as base:
        assert call("GET", f"{base}/healthz").json() == {"status": "ok"}
        ready = call("GET", f"{base}/readyz")
        assert (ready.status, ready.json()) == (200, {"status": "ok"})
        metrics = call("GET", f"{base}/metrics").body.decode()
    assert 'carewatch_http_requests_total{method="GET",route="/readyz",status="200"} 1.0' in metrics


def test_readyz_says_unavailable_without_a_database(settings: Settings) -> None:
    """Nothing listens on the database port: alive, but 503 not ready."""
    nowhere = settings.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/none"}
    )
    with running_api(nowhere) as base:
        assert call("GET", f"{base}/healthz").status == 200
        ready = call("GET", f"{base}/readyz")
    assert ready.status == 503
    body = ready.json()
    assert isinstance(body, dict)
    assert body["status"] == "unavailable"
