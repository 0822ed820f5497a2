"""The pages' words for what the platform names: every alert rule and every device kind has a
title in both languages, so the board never shows a code such as ``supervision_missed``; every
reason code has its words too (``devices.reasons``), so no reason is English on a Swedish page."""

from __future__ import annotations

import string

import pytest

from dashboards.kit import LANGUAGES, strings
from devices.catalog import DEFAULT_CATALOG, Rule
from devices.reasons import ENGLISH, PARAMETERS, ReasonCode
from devices.supervision import ALERT_SEVERITY, CheckState


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_rule_has_a_title(lang: str) -> None:
    rules = {rule.value for rule in Rule} | set(ALERT_SEVERITY)
    assert rules - strings()[lang]["rule"].keys() == set()


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_kind_has_a_title(lang: str) -> None:
    assert set(DEFAULT_CATALOG) - strings()[lang]["kind"].keys() == set()


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("code", list(ReasonCode), ids=str)
def test_every_reason_has_words_with_its_parameters(lang: str, code: ReasonCode) -> None:
    """Every reason code has a template in both languages, with exactly the code's parameters,
    so the board never falls back to English for a reason it was given as data."""
    template = strings()[lang]["reason"][code.value]
    assert template.strip()
    assert _placeholders(template) == PARAMETERS[code]


def test_the_pages_english_reasons_are_the_apis() -> None:
    """The English page says a reason exactly as the API's ``reason`` does."""
    assert strings()["en"]["reason"] == {code.value: text for code, text in ENGLISH.items()}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_reason_words_around_the_templates(lang: str) -> None:
    """The held suffix, the duration units and every check state a reason may name."""
    words = strings()[lang]
    assert _placeholders(words["reason_during_maintenance"]) == {"reason"}
    for key in ("reason_seconds", "reason_minutes", "reason_hours"):
        assert _placeholders(words[key]) == {"n"}
    assert {state.value for state in CheckState} == words["reason_values"]["state"].keys()
