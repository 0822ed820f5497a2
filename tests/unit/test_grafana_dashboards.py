"""The Grafana dashboards, their provisioning, Prometheus and docker-compose fit together.

No Grafana or Prometheus here (CI has neither): the files are read as data. Every metric a
Prometheus panel queries must exist in the gateway's or the API's registry with the labels the
panel uses; Prometheus must scrape the ports docker-compose.yml gives the services; Grafana's
mounts must put the provisioning and the dashboards where the provisioning files say. The SQL
panels are executed in tests/integration/test_grafana_queries.py.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.web import create_app
from carewatch.settings import Settings
from gateway.metrics import GatewayMetrics
from tests.fixtures.grafana import (
    GRAFANA_DIR,
    POSTGRES_TYPES,
    REPO,
    Target,
    load_dashboards,
    read_json_yaml,
    targets,
    walk_panels,
)

DASHBOARDS = load_dashboards()
ALL_TARGETS = [target for d in DASHBOARDS.values() for target in targets(d)]
PROMETHEUS_TARGETS = [t for t in ALL_TARGETS if t.datasource_type == "prometheus"]
PROVISIONING = GRAFANA_DIR / "provisioning"
PROMETHEUS_YML = REPO / "deploy" / "prometheus" / "prometheus.yml"
COMPOSE = REPO / "docker-compose.yml"
# Labels Prometheus attaches to every scraped series, and the series it makes itself.
TARGET_LABELS = frozenset({"job", "instance"})
PROMETHEUS_OWN: dict[str, frozenset[str]] = {
    "up": frozenset(),
    "scrape_duration_seconds": frozenset(),
}


# --- the metrics our processes expose ----------------------------------------------------------


def exposed_metrics(registries: Iterable[CollectorRegistry]) -> dict[str, frozenset[str]]:
    """Series name -> label names, as the registries expose them in /metrics."""
    exposed: dict[str, frozenset[str]] = {}
    for registry in registries:
        # prometheus_client has no public list of collectors; the labels of a labelled metric
        # that has not been used yet are only in its _labelnames.
        for collector in list(registry._collector_to_names):
            declared = frozenset(getattr(collector, "_labelnames", None) or ())
            for family in collector.collect():
                labels = declared | {k for s in family.samples for k in s.labels if k != "le"}
                for suffix, extra in _SUFFIXES.get(family.type, (("", ()),)):
                    exposed[family.name + suffix] = labels | frozenset(extra)
    return exposed


_SUFFIXES: Mapping[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "counter": (("_total", ()), ("_created", ())),
    "histogram": (("_bucket", ("le",)), ("_sum", ()), ("_count", ()), ("_created", ())),
    "summary": (("", ("quantile",)), ("_sum", ()), ("_count", ()), ("_created", ())),
}


def process_registries() -> list[CollectorRegistry]:
    """The gateway's registry and the API's (as create_app builds it; nothing connects)."""
    api_registry = CollectorRegistry()
    create_app(Settings(), metrics_registry=api_registry)
    return [GatewayMetrics().registry, api_registry]


# --- just enough PromQL ------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
# Label lists: aggregation grouping and vector matching.
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"and", "or", "unless", "inf", "nan"}
)


def parse_promql(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The metric selectors of ``expr`` (name -> labels matched) and its grouping labels."""
    text = _STRING.sub('""', expr)
    grouping: set[str] = set()
    for match in _GROUPING.finditer(text):
        grouping |= {label.strip() for label in match[1].split(",") if label.strip()}
    text = _GROUPING.sub(" ", text)
    selectors: dict[str, set[str]] = {}
    for match in _SELECTOR.finditer(text):
        matched = {m.split("=")[0].rstrip("!~").strip() for m in match[2].split(",") if m.strip()}
        if match[1]:
            selectors.setdefault(match[1], set()).update(matched)
        else:
            raise AssertionError(f"selector without a metric name in {expr!r}")
    text = _RANGE.sub(" ", _SELECTOR.sub(" ", text))
    for match in _IDENTIFIER.finditer(text):
        name = match[0]
        follows = text[match.end() :].lstrip()[:1]
        if follows == "(" or name.lower() in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        selectors.setdefault(name, set())
    return selectors, grouping


@pytest.mark.parametrize(
    ("expr", "selectors", "grouping"),
    [
        (
            'sum by (kind) (rate(carewatch_events_stored_total{kind!="x"}[$__rate_interval]))',
            {"carewatch_events_stored_total": {"kind"}},
            {"kind"},
        ),
        (
            "histogram_quantile(0.95, sum by (le, route) (rate(h_bucket[5m]))) / up",
            {"h_bucket": set(), "up": set()},
            {"le", "route"},
        ),
        (
            'a{job="x", instance=~"y"} and on (job) b',
            {"a": {"job", "instance"}, "b": set()},
            {"job"},
        ),
    ],
    ids=["selector-with-matcher", "quantile-and-bare-name", "binary-operator"],
)
def test_promql_parser(expr: str, selectors: dict[str, set[str]], grouping: set[str]) -> None:
    """The PromQL reader finds metric names, matched labels and grouping labels."""
    assert parse_promql(expr) == (selectors, grouping)


# --- the dashboards ----------------------------------------------------------------------------


def test_there_are_an_operations_and_a_usage_dashboard() -> None:
    """The two dashboards are provisioned, with Prometheus and PostgreSQL queries."""
    assert set(DASHBOARDS) == {"carewatch-operations", "carewatch-usage"}
    kinds = {uid: {t.datasource_type for t in targets(d)} for uid, d in DASHBOARDS.items()}
    assert kinds["carewatch-operations"] == {"prometheus"}
    assert kinds["carewatch-usage"] <= POSTGRES_TYPES


@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_panels_are_well_formed(uid: str) -> None:
    """Unique panel ids and titles, every panel on the 24-column grid, every query with a refId."""
    panels = list(walk_panels(DASHBOARDS[uid]["panels"]))
    ids = [p["id"] for p in panels]
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(ids) == len(set(ids))
    assert len(titles) == len(set(titles))
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        refs = [t.get("refId") for t in panel.get("targets", [])]
        assert all(refs), panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]


def test_every_query_names_a_provisioned_data_source() -> None:
    """Dashboards refer to the provisioned data sources by uid and type, nothing else."""
    provisioned = read_json_yaml(PROVISIONING / "datasources" / "carewatch.yaml")
    sources = {d["uid"]: d["type"] for d in provisioned["datasources"]}
    for target in ALL_TARGETS:
        assert sources.get(target.datasource_uid) == target.datasource_type, target.key
    for dashboard in DASHBOARDS.values():
        for variable in dashboard["templating"]["list"]:
            source = variable["datasource"]
            assert sources.get(source["uid"]) == source["type"], variable["name"]


def test_postgres_data_source_is_the_read_only_role_without_timescale_macros() -> None:
    """Grafana logs in as carewatch_grafana with the password from the environment, and
    $__timeGroup stays plain SQL (the form the integration tests execute)."""
    provisioned = read_json_yaml(PROVISIONING / "datasources" / "carewatch.yaml")
    (postgres,) = [d for d in provisioned["datasources"] if d["type"] in POSTGRES_TYPES]
    assert postgres["user"] == "carewatch_grafana"
    assert postgres["secureJsonData"]["password"] == "$CAREWATCH_GRAFANA_DB_PASSWORD"
    assert postgres["jsonData"]["timescaledb"] is False
    assert postgres["jsonData"]["database"] == "carewatch"


@pytest.mark.parametrize("target", PROMETHEUS_TARGETS, ids=lambda t: t.key)
def test_prometheus_queries_use_metrics_and_labels_that_exist(target: Target) -> None:
    """Every metric a Prometheus panel reads is exposed by the gateway or the API (or made by
    Prometheus), with the labels the query matches, groups by and names in its legend."""
    exposed = {**exposed_metrics(process_registries()), **PROMETHEUS_OWN}
    selectors, grouping = parse_promql(target.body["expr"])
    assert selectors, target.key
    available: set[str] = set(TARGET_LABELS)
    for name, matched in selectors.items():
        assert name in exposed, f"{target.key}: no metric {name}"
        labels = exposed[name] | TARGET_LABELS
        assert matched <= labels, f"{target.key}: {name} has no label {matched - labels}"
        available |= labels
    assert grouping <= available, f"{target.key}: cannot group by {grouping - available}"
    legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.body.get("legendFormat", "")))
    assert legend_labels <= (grouping or available), f"{target.key}: legend {legend_labels}"


def test_contract_metrics_are_on_the_operations_dashboard() -> None:
    """The ingest, dead-letter, fleet and alert metrics of the contract all have a panel."""
    used = {name for t in PROMETHEUS_TARGETS for name in parse_promql(t.body["expr"])[0]}
    assert {
        "carewatch_messages_received_total",
        "carewatch_events_stored_total",
        "carewatch_events_duplicate_total",
        "carewatch_dead_letters_total",
        "carewatch_ingest_batch_seconds_bucket",
        "carewatch_ingest_delay_seconds_bucket",
        "carewatch_alerts_open",
        "carewatch_devices_online",
        "carewatch_http_requests_total",
        "carewatch_http_request_duration_seconds_bucket",
        "up",
    } <= used


# --- Prometheus and docker-compose -------------------------------------------------------------


def compose_services() -> dict[str, str]:
    """docker-compose.yml's services, each as its block of text (comments removed)."""
    text = re.sub(r"(?m)^\s*#.*\n", "", COMPOSE.read_text(encoding="utf-8"))
    body = text.split("\nservices:\n", 1)[1].split("\nvolumes:\n", 1)[0]
    blocks = re.split(r"(?m)^  (?=[a-z][\w-]*:\s*$)", body)
    return {block.split(":", 1)[0]: block for block in blocks if block.strip()}


def scrape_targets() -> dict[str, list[str]]:
    config: dict[str, Any] = read_json_yaml(PROMETHEUS_YML)
    return {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }


def test_prometheus_scrapes_the_ports_compose_gives_gateway_and_api() -> None:
    """Prometheus's targets are the gateway's metrics port and the API's port in compose."""
    services = compose_services()
    gateway_port = re.search(r'CAREWATCH_METRICS_PORT: "(\d+)"', services["gateway"])
    api_port = re.search(r'"--port", "(\d+)"', services["api"])
    assert gateway_port is not None
    assert api_port is not None
    jobs = scrape_targets()
    assert jobs["carewatch-gateway"] == [f"gateway:{gateway_port[1]}"]
    assert jobs["carewatch-api"] == [f"api:{api_port[1]}"]


def test_compose_mounts_what_the_provisioning_files_name() -> None:
    """Prometheus reads our config; Grafana gets the provisioning and the dashboards where the
    dashboard provider looks, and the secrets it needs from the environment."""
    services = compose_services()
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in services["prometheus"]
    )
    providers = read_json_yaml(PROVISIONING / "dashboards" / "carewatch.yaml")["providers"]
    (provider,) = providers
    grafana = services["grafana"]
    for kind in ("datasources", "dashboards"):
        mount = f"./deploy/grafana/provisioning/{kind}:/etc/grafana/provisioning/{kind}:ro"
        assert mount in grafana
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in grafana
    assert re.search(r"GF_SECURITY_ADMIN_PASSWORD: \$\{GRAFANA_ADMIN_PASSWORD:\?", grafana)
    assert re.search(
        r"CAREWATCH_GRAFANA_DB_PASSWORD: \$\{CAREWATCH_GRAFANA_DB_PASSWORD:\?", grafana
    )
    # The role migrate sets up is the one the data source logs in as.
    assert "carewatch grafana role --name carewatch_grafana" in services["migrate"]


@pytest.mark.parametrize("service", ["prometheus", "grafana"])
def test_images_are_pinned(service: str) -> None:
    """Third-party images have an exact version, never latest."""
    image = re.search(r"image: (\S+)", compose_services()[service])
    assert image is not None
    assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", image[1]), image[1]


def test_provisioning_files_parse() -> None:
    """Every provisioning file is JSON-syntax YAML with apiVersion 1."""
    files = sorted(Path(PROVISIONING).rglob("*.yaml"))
    assert len(files) == 2
    for path in files:
        assert read_json_yaml(path)["apiVersion"] == 1, path
