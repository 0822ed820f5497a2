"""The shipped Prometheus configuration and alerting rules pass promtool's own checks.

``promtool check config`` reads deploy/prometheus/prometheus.yml as Prometheus does, including
the rule files it names (relative to its directory, as docker-compose.yml mounts them);
``promtool test rules`` runs deploy/prometheus/alerts_test.yml, where every rule is shown
firing and not firing. The live test (test_prometheus.py) loads the same rules into a running
Prometheus.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.fixtures.grafana import REPO

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
RULE_TESTS = PROMETHEUS_DIR / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """``promtool ARGS`` from the repository root; fails the test on a non-zero exit."""
    binary = shutil.which("promtool")
    assert binary is not None, "no promtool: install the Debian package prometheus (scripts/setup)"
    result = subprocess.run(
        [binary, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def test_prometheus_config_is_valid_and_finds_its_rules() -> None:
    """prometheus.yml is valid and the rule file it names exists beside it and checks."""
    result = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert "1 rule files found" in result.stdout, result.stdout


def test_rules_are_valid() -> None:
    """alerts.yml parses, and every expression and template is valid."""
    result = promtool("check", "rules", str(RULES))
    assert f"{len(alert_names())} rules found" in result.stdout, result.stdout


def test_rules_fire_and_stay_quiet_as_their_tests_say() -> None:
    """promtool's unit tests of the rules pass."""
    promtool("test", "rules", str(RULE_TESTS))


def alert_names() -> set[str]:
    return set(re.findall(r"(?m)^\s*- alert: (\w+)\s*$", RULES.read_text(encoding="utf-8")))


def firing_in_tests() -> set[str]:
    """The alerts that alerts_test.yml expects to fire at least once (exp_alerts not empty)."""
    text = RULE_TESTS.read_text(encoding="utf-8")
    return set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels:", text))


@pytest.mark.parametrize(
    "severity_and_for", ["labels:\n          severity: ", "for: "], ids=["severity", "for"]
)
def test_every_rule_has_a_severity_and_a_for(severity_and_for: str) -> None:
    """Each rule waits (``for:``) and says how urgent it is (``severity`` label)."""
    rules = re.split(r"(?m)^\s*- alert: ", RULES.read_text(encoding="utf-8"))[1:]
    assert len(rules) == len(alert_names())
    for rule in rules:
        assert severity_and_for in rule, rule.splitlines()[0]
        assert "description: " in rule, rule.splitlines()[0]


def test_every_rule_is_tested_firing() -> None:
    """No rule ships without a promtool test in which it fires."""
    assert alert_names()
    assert alert_names() == firing_in_tests()
