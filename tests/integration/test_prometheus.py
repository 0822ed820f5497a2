"""The operations dashboard and the operators' alerting rules, on a real Prometheus.

A private Prometheus (Debian's 2.42; compose runs 3.5, and the files are valid for both) scrapes
a live gateway and a live API every second, with the shipped scrape jobs and the shipped rules
(deploy/prometheus/). Devices publish through the session's Mosquitto, the gateway stores their
events, dead-letters a bad message and raises an alarm; a caregiver calls the API. Then every
expression of the "Carewatch — Operations" dashboard is queried as Grafana sends it (a range
query with ``$__rate_interval`` expanded) and must return data, but for the few listed in
MAY_BE_EMPTY with the reason a healthy run leaves them empty. The rules must load and stay quiet
in that healthy run, and a killed gateway must put "gateway down" in motion.

The rules' thresholds and ``for`` durations are tested in deploy/prometheus/alerts_test.yml
(tests/integration/test_prometheus_rules.py); here they only have to load, evaluate and see the
live series.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from carewatch.processes import ChildProcess, free_port, wait_until_listening
from carewatch.settings import Settings
from tests.fixtures.api_client import add_user, call, login, module_database
from tests.fixtures.api_server import running_api
from tests.fixtures.gateway_process import GatewayProcess, wait_until
from tests.fixtures.grafana import (
    REPO,
    Target,
    UnsupportedGrafanaSyntaxError,
    format_interval,
    load_dashboards,
    read_json_yaml,
    targets,
)
from tests.fixtures.mqtt import envelope, events_topic, publish_all
from tests.fixtures.services import SeededRegistry, end_mqtt_session, seed_registry
from tests.fixtures.webhooks import NotifierProcess
from tools.local.postgres import PostgresInstance

pytestmark = pytest.mark.slow  # a few seconds of traffic, and a gateway killed at the end

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
PROMETHEUS_YML = PROMETHEUS_DIR / "prometheus.yml"
OPERATIONS = load_dashboards()["carewatch-operations"]
PROMETHEUS_TARGETS = [t for t in targets(OPERATIONS) if t.datasource_type == "prometheus"]

# Our Prometheus scrapes and evaluates every second; Grafana's minimum interval is the data
# source's scrape interval (its timeInterval), so $__interval is 1 s over a short range.
SCRAPE_INTERVAL = timedelta(seconds=1)
TRAFFIC_ROUNDS = 6  # one a second: each rate window of 4 s sees events

# Expressions a healthy run may leave without data, and why. Each must still parse and run.
MAY_BE_EMPTY: Mapping[str, str] = {
    "carewatch-operations/Store errors/A": (
        "no batch fails to commit in a healthy run, and the counter, labelled by error, has no "
        "series before the first failure"
    ),
    "carewatch-operations/API errors by route/A": "a healthy API answers no 5xx",
}
# Expressions whose value must have been above zero at some point of the run: the traffic
# moved them (the rest must have a finite value, but 0 is fine: a 5xx share, held messages).
MUST_MOVE = frozenset(
    {
        "carewatch-operations/Gateway up/A",
        "carewatch-operations/Gateway connected to the broker/A",
        "carewatch-operations/API up/A",
        "carewatch-operations/Ingest rate/A",
        "carewatch-operations/Ingest rate/B",
        "carewatch-operations/Ingest delay (receipt to commit)/A",
        "carewatch-operations/Batch time and size/C",
        "carewatch-operations/Duplicates/A",
        "carewatch-operations/Dead letters by reason/A",
        "carewatch-operations/Devices online by kind/A",
        "carewatch-operations/Open alerts by severity/A",
        "carewatch-operations/API requests by route/A",
        "carewatch-operations/API errors by route/B",
        "carewatch-operations/Gateway memory/A",
    }
)
# Pending is not firing (every `for` is a minute or more). The run dead-letters on purpose, and
# a loaded test machine may hold a batch past the delay rule's 2 s.
MAY_BE_PENDING = frozenset({"CarewatchDeadLettersIncreasing", "CarewatchIngestDelayHigh"})


# --- Grafana's Prometheus variables ------------------------------------------------------------

_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)(:[^}]*)?\}|\[\[(\w+)[^\]]*\]\]")


def rate_interval(interval: timedelta, scrape_interval: timedelta) -> timedelta:
    """Grafana's ``$__rate_interval``: max($__interval + scrape interval, 4 x scrape interval)."""
    return max(interval + scrape_interval, 4 * scrape_interval)


def expand_promql(expr: str, *, interval: timedelta, scrape_interval: timedelta) -> str:
    """The PromQL Grafana sends for ``expr``: its built-in interval variables filled in.

    The operations dashboard has no template variables; one added later (``$instance``)
    raises here until this function models it, so no panel can dodge the live test.
    """

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if match[3] is not None or name is None:
            raise UnsupportedGrafanaSyntaxError(f"variable syntax {match[0]!r}")
        if name == "__rate_interval":
            return format_interval(rate_interval(interval, scrape_interval))
        if name == "__interval":
            return format_interval(interval)
        raise UnsupportedGrafanaSyntaxError(f"variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("rate(x[$__rate_interval])", "rate(x[4s])"),
        ("rate(x[${__rate_interval}]) / $__interval", "rate(x[4s]) / 1s"),
        ('up{job="a"}', 'up{job="a"}'),
    ],
    ids=["rate-interval", "braced-and-interval", "no-variables"],
)
def test_grafana_prometheus_variables_expand(expr: str, expected: str) -> None:
    """$__rate_interval is four scrape intervals at a 1 s $__interval; $__interval is itself."""
    assert expand_promql(expr, interval=SCRAPE_INTERVAL, scrape_interval=SCRAPE_INTERVAL) == (
        expected
    )


@pytest.mark.parametrize("expr", ['up{instance=~"$instance"}', "rate(x[${__range:text}])"])
def test_unmodelled_grafana_variables_are_refused(expr: str) -> None:
    """A dashboard variable the expander does not model fails instead of reaching Prometheus."""
    with pytest.raises(UnsupportedGrafanaSyntaxError):
        expand_promql(expr, interval=SCRAPE_INTERVAL, scrape_interval=SCRAPE_INTERVAL)


# --- a private Prometheus ----------------------------------------------------------------------


def prometheus_config(targets_by_job: Mapping[str, str]) -> dict[str, Any]:
    """The shipped prometheus.yml with loopback targets, 1 s intervals and the shipped rules."""
    config: dict[str, Any] = read_json_yaml(PROMETHEUS_YML)
    config["global"] = {
        "scrape_interval": format_interval(SCRAPE_INTERVAL),
        "scrape_timeout": format_interval(SCRAPE_INTERVAL),
        "evaluation_interval": format_interval(SCRAPE_INTERVAL),
    }
    # Relative rule files are read from the configuration's directory, as promtool checks.
    config["rule_files"] = [str(PROMETHEUS_DIR / name) for name in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == set(targets_by_job), "the shipped scrape jobs changed"
    for name, target in targets_by_job.items():
        jobs[name]["static_configs"] = [{"targets": [target]}]
    return config


class Prometheus:
    """Debian's ``prometheus`` on a free loopback port, with its TSDB in ``directory``."""

    def __init__(self, directory: Path, gateway: str, api: str, notifier: str) -> None:
        binary = shutil.which("prometheus")
        assert binary is not None, "no prometheus: install the Debian package (scripts/setup)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_path = directory / "prometheus.yml"
        targets_by_job = {
            "carewatch-gateway": gateway,
            "carewatch-api": api,
            "carewatch-notifier": notifier,
            "prometheus": f"127.0.0.1:{self.port}",
        }
        # JSON is YAML: written the way the shipped file is.
        config_path.write_text(json.dumps(prometheus_config(targets_by_job), indent=2))
        self.child = ChildProcess(
            "prometheus",
            [binary, f"--config.file={config_path}",
             f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            log_path=directory / "prometheus.log",
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, timeout=10.0)

    def wait_ready(self) -> None:
        if not wait_until_listening(self.port, timeout_s=30, still_starting=self.child.is_running):
            raise AssertionError(f"prometheus did not start:\n{self.child.log_tail()}")
        wait_until(lambda: self.http.get("/-/ready").status_code == 200, timeout_s=30)
        # Ready is not scraping yet: discovered targets reach the scrape loops up to 5 s later.
        wait_until(lambda: self.values("count(up == 1) == 4"), timeout_s=30)

    def api(self, path: str, **params: str | float) -> Any:
        """``/api/v1/<path>``'s data; fails on anything but ``"status": "success"``."""
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def values(self, expr: str) -> list[float]:
        """Every value of the instant query ``expr`` now (NaN included)."""
        return [float(s["value"][1]) for s in self.api("query", query=expr)["result"]]

    def close(self) -> None:
        self.http.close()
        self.child.stop()


# --- the live run ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveRun:
    """The services, and the time range in which the traffic flowed (Unix seconds)."""

    prometheus: Prometheus
    gateway: GatewayProcess
    settings: Settings
    registry: SeededRegistry
    start: float
    end: float

    @property
    def gateway_instance(self) -> str:
        return f"127.0.0.1:{self.settings.metrics_port}"


def send_traffic(run_base: str, token: str, publisher_url: str, seeded: SeededRegistry) -> None:
    """TRAFFIC_ROUNDS seconds of what a healthy day looks like, at small scale."""
    bearer = login(run_base, "prom-caregiver")
    devices = seeded.all_devices()
    button = seeded.device("alarm_button")
    previous: list[tuple[str, bytes]] = []
    for round_number in range(TRAFFIC_ROUNDS):
        messages = [
            (
                events_topic(device),
                envelope(f"{token}-hb-{round_number}", "heartbeat", {"battery": 90}),
            )
            for device in devices
        ]
        if round_number == 1:
            messages.append((events_topic(button), envelope(f"{token}-press", "alarm.pressed")))
        if round_number in (2, 3):
            messages.append(previous[0])  # a resend: stored once, counted as a duplicate
            messages.append((events_topic(devices[1]), b"not json"))  # a dead letter
        publish_all(publisher_url, messages)
        previous = messages
        for path in ("/api/v1/alerts", "/api/v1/sites", "/api/v1/devices"):
            assert call("GET", f"{run_base}{path}", token=bearer).status == 200, path
        assert call("GET", f"{run_base}/api/v1/alerts").status == 401  # not logged in
        time.sleep(1.0)


@pytest.fixture(scope="module")
def live(
    pg: PostgresInstance,
    template_database: str,
    publisher_url: str,
    gateway_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveRun]:
    """Gateway, API, notifier and Prometheus scraping them, after a few seconds of traffic."""
    token = "tprom"  # test_token's are t0001...: nothing else in the session uses this one
    directory = tmp_path_factory.mktemp("prometheus")
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(module_database(pg, template_database))
        seeded = seed_registry(database_url, token)
        with psycopg.connect(database_url, autocommit=True) as conn:
            add_user(conn, "prom-caregiver", seeded.org_id, "caregiver")
        settings = Settings(
            database_url=database_url,
            mqtt_url=gateway_url,
            metrics_port=free_port(),
            notifier_metrics_port=free_port(),
            gateway_client_id=f"gateway-{token}",
            gateway_share_group=f"carewatch-{token}",
            batch_max_wait_s=0.02,
            reconnect_min_s=0.05,
            reconnect_max_s=1.0,
            registry_refresh_s=0.2,
        )
        stack.callback(end_mqtt_session, gateway_url, settings.gateway_client_id)
        gateway = stack.enter_context(GatewayProcess(settings, directory / "gateway.log"))
        api_base = stack.enter_context(running_api(settings))
        stack.enter_context(NotifierProcess(settings, directory / "notifier.log"))
        prometheus = Prometheus(
            directory,
            gateway=f"127.0.0.1:{settings.metrics_port}",
            api=api_base.removeprefix("http://"),
            notifier=f"127.0.0.1:{settings.notifier_metrics_port}",
        )
        stack.callback(prometheus.close)
        prometheus.wait_ready()
        start = time.time()
        send_traffic(api_base, token, publisher_url, seeded)
        # The gateway's housekeeping sets the gauges every 5 s; wait until Prometheus has
        # scraped what the traffic did, then give the rate windows one more scrape.
        stored = len(seeded.all_devices()) * TRAFFIC_ROUNDS + 1
        for expr in (
            f"sum(carewatch_events_stored_total) >= {stored}",
            'carewatch_alerts_open{severity="critical"} >= 1',
            'carewatch_dead_letters_total{reason="not_json"} >= 2',
            f'carewatch_site_last_seen_timestamp_seconds{{site="{seeded.site_id}"}}',
        ):
            wait_until(functools.partial(prometheus.values, expr), 30, context=gateway.log_tail)
        time.sleep(2 * SCRAPE_INTERVAL.total_seconds())
        yield LiveRun(prometheus, gateway, settings, seeded, start, time.time())


def query_range(run: LiveRun, expr: str) -> list[dict[str, Any]]:
    """``expr`` over the run as a Grafana time series panel asks for it (step = $__interval)."""
    result: list[dict[str, Any]] = run.prometheus.api(
        "query_range",
        query=expr,
        start=run.start,
        end=run.end,
        step=SCRAPE_INTERVAL.total_seconds(),
    )["result"]
    return result


def finite_values(series: list[dict[str, Any]]) -> list[float]:
    values = (float(value) for s in series for _, value in s["values"])
    return [v for v in values if math.isfinite(v)]


def test_allow_lists_name_dashboard_expressions() -> None:
    """MAY_BE_EMPTY and MUST_MOVE name real expressions of the dashboard, and not both."""
    keys = {t.key for t in PROMETHEUS_TARGETS}
    assert set(MAY_BE_EMPTY) <= keys
    assert keys >= MUST_MOVE
    assert not MUST_MOVE & set(MAY_BE_EMPTY)


@pytest.mark.parametrize("target", PROMETHEUS_TARGETS, ids=lambda t: t.key)
def test_dashboard_expression_returns_data(live: LiveRun, target: Target) -> None:
    """Each expression of the operations dashboard runs on Prometheus and has data from the
    live gateway and API (but for MAY_BE_EMPTY); those the traffic moved went above zero."""
    expr = expand_promql(
        target.body["expr"], interval=SCRAPE_INTERVAL, scrape_interval=SCRAPE_INTERVAL
    )
    live.prometheus.api("query", query=expr)  # the instant form (stat panels) runs too
    series = query_range(live, expr)
    if target.key in MAY_BE_EMPTY:
        return  # it parsed and ran; see MAY_BE_EMPTY for why it may have nothing
    values = finite_values(series)
    assert values, f"{target.key}: no data for {expr!r} ({len(series)} series, all NaN or none)"
    if target.key in MUST_MOVE:
        assert max(values) > 0, f"{target.key}: {expr!r} stayed at {max(values)}"


def test_alerts_and_dead_letters_show_by_label(live: LiveRun) -> None:
    """The alarm shows as a critical alert and the bad messages by their reason."""
    alerts = query_range(live, 'max by (severity) (carewatch_alerts_open{severity="critical"})')
    assert max(finite_values(alerts), default=0) >= 1
    dead = query_range(live, 'sum by (reason) (carewatch_dead_letters_total{reason="not_json"})')
    assert max(finite_values(dead), default=0) >= 2


def test_requests_by_route_name_the_routes(live: LiveRun) -> None:
    """The "API requests by route" panel shows route templates such as /api/v1/alerts.

    Fails while api/app.py's middleware labels every API route "unmatched" (issue 10, item 6).
    """
    (target,) = [t for t in PROMETHEUS_TARGETS if t.panel_title == "API requests by route"]
    expr = expand_promql(
        target.body["expr"], interval=SCRAPE_INTERVAL, scrape_interval=SCRAPE_INTERVAL
    )
    routes = {s["metric"].get("route") for s in query_range(live, expr)}
    assert {"/api/v1/alerts", "/api/v1/sites", "/api/v1/devices"} <= routes, routes


def shipped_alert_names() -> set[str]:
    return set(
        re.findall(r"(?m)^\s*- alert: (\w+)\s*$", (PROMETHEUS_DIR / "alerts.yml").read_text())
    )


def test_shipped_rules_load_and_stay_quiet_in_a_healthy_run(live: LiveRun) -> None:
    """Every shipped rule is loaded and evaluates without error on the live series; none fires."""
    names = shipped_alert_names()
    assert names

    def evaluated_rules() -> dict[str, dict[str, Any]]:
        groups = live.prometheus.api("rules", type="alert")["groups"]
        rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
        # Health is "unknown" until the first evaluation.
        return rules if all(r["health"] != "unknown" for r in rules.values()) else {}

    wait_until(evaluated_rules, timeout_s=10)
    rules = evaluated_rules()
    assert set(rules) == names
    for name, rule in rules.items():
        assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
    states = {a["labels"]["alertname"]: a["state"] for a in live.prometheus.api("alerts")["alerts"]}
    assert "firing" not in states.values(), states
    assert set(states) <= MAY_BE_PENDING, states
    # Nor did any fire at any moment of the run (Prometheus records them as ALERTS).
    assert query_range(live, 'ALERTS{alertstate="firing"}') == []
    # The site rule's series is there, and the site was heard from just now.
    silence = live.prometheus.values(
        "time() - max by (site) (carewatch_site_last_seen_timestamp_seconds"
        f'{{site="{live.registry.site_id}"}})'
    )
    assert len(silence) == 1
    assert silence[0] < 60


def test_killed_gateway_sets_gateway_down_in_motion(live: LiveRun) -> None:
    """SIGKILL of the gateway: `up` drops to 0 and "gateway down" becomes pending (it fires
    after its `for` of a minute, which alerts_test.yml tests).

    Last in the module: the gateway stays dead.
    """
    live.gateway.kill()

    def gateway_down_state() -> str | None:
        for alert in live.prometheus.api("alerts")["alerts"]:
            labels = alert["labels"]
            if (labels["alertname"], labels.get("instance")) == (
                "CarewatchGatewayDown",
                live.gateway_instance,
            ):
                return str(alert["state"])
        return None

    wait_until(lambda: gateway_down_state() in ("pending", "firing"), timeout_s=30)
    up = f'up{{job="carewatch-gateway", instance="{live.gateway_instance}"}}'
    assert live.prometheus.values(up) == [0.0]
