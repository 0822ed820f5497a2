"""The expander of Grafana's variables and PostgreSQL macros behaves like Grafana.

Expected strings follow Grafana's own tests (pkg/tsdb/grafana-postgresql-datasource/
macros_test.go) and its SQL data sources' interpolateVariable.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.fixtures.grafana import (
    TimeRange,
    UnsupportedGrafanaSyntaxError,
    VariableValue,
    expand,
    expand_macros,
    format_interval,
    go_float,
    interpolate_variables,
    rfc3339_nano,
)

APRIL = TimeRange(
    datetime(2018, 4, 12, 18, 0, tzinfo=UTC), datetime(2018, 4, 12, 18, 5, tzinfo=UTC)
)
MULTI = VariableValue(("gbg-lundby", "o'hara"), multi=True, include_all=True)
SINGLE = VariableValue(("o'hara",))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param(
            "WHERE $__timeFilter(time_column)",
            "WHERE time_column BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'",
            id="timeFilter",
        ),
        pytest.param("select $__timeFrom()", "select '2018-04-12T18:00:00Z'", id="timeFrom"),
        pytest.param("select $__timeTo()", "select '2018-04-12T18:05:00Z'", id="timeTo"),
        pytest.param(
            "SELECT $__timeGroup(time_column,'5m')",
            "SELECT floor(extract(epoch from time_column)/300)*300",
            id="timeGroup",
        ),
        pytest.param(
            "SELECT $__timeGroupAlias(time_column , '5m')",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time"',
            id="timeGroupAlias-spaces",
        ),
        pytest.param(
            "SELECT $__timeGroup(time_column,'5m'), value",
            'SELECT floor(extract(epoch from time_column)/300)*300 AS "time", value',
            id="timeGroup-pre-5.3-comma-means-alias",
        ),
        pytest.param(
            "SELECT $__timeGroup(time_column,'5m') as time, value",
            "SELECT floor(extract(epoch from time_column)/300)*300 as time, value",
            id="timeGroup-own-alias",
        ),
        pytest.param(
            "GROUP BY $__timeGroup(t, 12d)",
            "GROUP BY floor(extract(epoch from t)/1.0368e+06)*1.0368e+06",
            id="timeGroup-large-interval-in-go-float-format",
        ),
        pytest.param("SELECT 1", "SELECT 1", id="no-macro"),
    ],
)
def test_macros_expand_like_grafana(sql: str, expected: str) -> None:
    """Each macro we use expands to the text Grafana's PostgreSQL backend produces."""
    assert expand_macros(sql, APRIL) == expected


@pytest.mark.parametrize(
    "sql",
    [
        pytest.param("SELECT $__unixEpochFilter(t)", id="unmodelled-macro"),
        pytest.param("SELECT $__timeFilter()", id="timeFilter-without-column"),
        pytest.param("SELECT $__timeFrom(x)", id="timeFrom-with-argument"),
        pytest.param("SELECT $__timeGroup(t)", id="timeGroup-without-interval"),
        pytest.param("SELECT $__timeGroup(t, 1M)", id="calendar-interval"),
        pytest.param("SELECT $__timeGroup(t, 1h, 0)", id="fill-mode"),
        pytest.param("WHERE $__timeFilter(coalesce(a, b))", id="parenthesis-in-argument"),
        pytest.param("SELECT $__timeFilter", id="macro-without-parentheses"),
    ],
)
def test_unmodelled_or_broken_macros_are_refused(sql: str) -> None:
    """What the expander does not model (or Grafana would mangle) fails loudly."""
    with pytest.raises(UnsupportedGrafanaSyntaxError):
        expand_macros(sql, APRIL)


@pytest.mark.parametrize(
    ("sql", "variables", "expected"),
    [
        pytest.param("IN ($site)", {"site": MULTI}, "IN ('gbg-lundby','o''hara')", id="multi"),
        pytest.param("IN (${site})", {"site": MULTI}, "IN ('gbg-lundby','o''hara')", id="braces"),
        pytest.param(
            "IN ($site)",
            {"site": VariableValue(("a",), multi=False, include_all=True)},
            "IN ('a')",
            id="include-all-quotes-one-value",
        ),
        pytest.param("= '$who'", {"who": SINGLE}, "= 'o''hara'", id="single-unquoted-escaped"),
        pytest.param(
            "$site_id $site",
            {"site": MULTI, "site_id": SINGLE},
            "o''hara 'gbg-lundby','o''hara'",
            id="longest-name",
        ),
        pytest.param("$__timeFilter(t)", {}, "$__timeFilter(t)", id="macros-left-for-stage-2"),
        pytest.param("'$__interval' $__interval_ms", {}, "'1h' 3600000", id="interval"),
    ],
)
def test_variables_interpolate_like_grafanas_sql_data_sources(
    sql: str, variables: dict[str, VariableValue], expected: str
) -> None:
    """Multi-value and All variables become quoted lists; single ones their escaped value."""
    assert interpolate_variables(sql, variables, interval=timedelta(hours=1)) == expected


@pytest.mark.parametrize(
    ("sql", "variables"),
    [
        pytest.param("IN ($stie)", {"site": MULTI}, id="unknown-variable"),
        pytest.param("IN (${site:csv})", {"site": MULTI}, id="format-option"),
        pytest.param("IN ([[site]])", {"site": MULTI}, id="deprecated-brackets"),
        pytest.param("IN ($site)", {"site": VariableValue((), multi=True)}, id="empty-multi"),
        pytest.param("= $who", {"who": VariableValue(("a", "b"))}, id="single-with-two-values"),
    ],
)
def test_bad_variable_use_is_refused(sql: str, variables: dict[str, VariableValue]) -> None:
    """A misspelt variable or a syntax we do not model fails instead of reaching SQL raw."""
    with pytest.raises(UnsupportedGrafanaSyntaxError):
        interpolate_variables(sql, variables, interval=timedelta(hours=1))


def test_interval_needs_a_value() -> None:
    """$__interval without an interval given is an error, not an empty string."""
    with pytest.raises(UnsupportedGrafanaSyntaxError):
        interpolate_variables("$__interval", {})


def test_both_stages_together() -> None:
    """expand() interpolates variables first, then the macros (with $__interval inside)."""
    sql = "SELECT $__timeGroupAlias(t, $__interval) FROM x WHERE s IN ($site) AND $__timeFilter(t)"
    assert expand(sql, variables={"site": MULTI}, time_range=APRIL, interval=timedelta(days=1)) == (
        'SELECT floor(extract(epoch from t)/86400)*86400 AS "time" FROM x'
        " WHERE s IN ('gbg-lundby','o''hara')"
        " AND t BETWEEN '2018-04-12T18:00:00Z' AND '2018-04-12T18:05:00Z'"
    )


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        pytest.param(datetime(1960, 2, 1, 7, 0, 0, 500_000, tzinfo=UTC), "1960-02-01T07:00:00.5Z"),
        pytest.param(
            datetime(2026, 11, 2, 1, 0, tzinfo=timezone(timedelta(hours=1))), "2026-11-02T00:00:00Z"
        ),
        pytest.param(datetime(2026, 1, 1, 0, 0, 0, 123, tzinfo=UTC), "2026-01-01T00:00:00.000123Z"),
    ],
    ids=["half-second", "converted-to-utc", "microseconds"],
)
def test_time_range_is_written_as_go_rfc3339_nano(moment: datetime, expected: str) -> None:
    """Times go out in UTC with Go's RFC3339Nano (trailing zeros of the fraction dropped)."""
    assert rfc3339_nano(moment) == expected


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(300, "300"), (86400, "86400"), (604800, "604800"), (1e6, "1e+06"), (0.02, "0.02")],
)
def test_interval_seconds_are_written_like_go_percent_v(seconds: float, expected: str) -> None:
    """Seconds in $__timeGroup print as Go's %v does (exponent form from 1e6)."""
    assert go_float(seconds) == expected


@pytest.mark.parametrize(
    ("interval", "expected"),
    [
        (timedelta(hours=1), "1h"),
        (timedelta(days=7), "7d"),
        (timedelta(minutes=90), "90m"),
        (timedelta(milliseconds=1500), "1500ms"),
    ],
)
def test_interval_text(interval: timedelta, expected: str) -> None:
    """$__interval is written in the largest whole unit."""
    assert format_interval(interval) == expected


def test_time_range_must_be_aware_and_ordered() -> None:
    """A naive or reversed time range is a mistake in the test, not a query."""
    with pytest.raises(ValueError, match="aware"):
        TimeRange(datetime(2026, 1, 1), datetime(2026, 1, 2))  # noqa: DTZ001
    with pytest.raises(ValueError, match="end before"):
        TimeRange(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
