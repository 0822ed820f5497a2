"""The pages' words for what the platform names: every alert rule and every device kind has a
title in both languages, so the board never shows a code such as ``supervision_missed``."""

from __future__ import annotations

import pytest

from dashboards.kit import LANGUAGES, strings
from devices.catalog import DEFAULT_CATALOG, Rule
from devices.supervision import ALERT_SEVERITY


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_rule_has_a_title(lang: str) -> None:
    rules = {rule.value for rule in Rule} | set(ALERT_SEVERITY)
    assert rules - strings()[lang]["rule"].keys() == set()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_kind_has_a_title(lang: str) -> None:
    assert set(DEFAULT_CATALOG) - strings()[lang]["kind"].keys() == set()
