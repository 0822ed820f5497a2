"""Who an alert is for (issue 12): care staff, technicians, or both, as data.

``audience.toml`` beside this module routes every rule to ``care``, ``technical`` or ``both``
and lists the *safety exceptions*: device faults that take away someone's safety (a silent alarm
button, a dark camera with checks planned, a jammed or flat lock) and so reach care staff too.
A site may route a rule otherwise (``sites.alert_audiences``), but never away from care staff
when the table gives it to them, and never past a safety exception.

:meth:`AudienceTable.audiences` is the one answer, computed when an alert is read (not stored
with it): a changed routing or plan applies to the alerts already open. The API's SQL filter
(:mod:`api.alert_queries`) and the notifier's push recipients are built from the same table.

No I/O here beyond reading the packaged data file at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from devices.catalog import DEFAULT_CATALOG, Catalog, CatalogError, Rule, Severity, load_data_file
from devices.supervision import ALERT_SEVERITY

__all__ = [
    "ALL_AUDIENCES",
    "DEFAULT_AUDIENCES",
    "KNOWN_RULES",
    "Audience",
    "AudienceError",
    "AudienceTable",
    "Routing",
    "SafetyException",
    "audiences",
    "build_audiences",
    "load_audiences",
]


class AudienceError(CatalogError):
    """``audience.toml`` or a site's routing is wrong; the message says where and why."""


class Audience(StrEnum):
    """Whose work an alert is."""

    CARE = "care"  # caregivers: a person needs someone
    TECHNICAL = "technical"  # technicians: a device needs mending


ALL_AUDIENCES: Final = frozenset(Audience)


class Routing(StrEnum):
    """What the table, or a site, says of a rule."""

    CARE = "care"
    TECHNICAL = "technical"
    BOTH = "both"

    @property
    def audiences(self) -> frozenset[Audience]:
        """The audiences this routing reaches."""
        return ALL_AUDIENCES if self is Routing.BOTH else frozenset({Audience(self.value)})


KNOWN_RULES: Final = frozenset({rule.value for rule in Rule} | set(ALERT_SEVERITY))
"""Every rule an alert can have: the device rules of the catalog and the night checks'."""


@dataclass(frozen=True, slots=True)
class SafetyException:
    """An alert of ``rule`` on a device of ``kind`` reaches care staff too, if it is at least
    ``min_severity`` (None: any) and, with ``needs_plan``, its residence has a supervision plan
    in force."""

    kind: str
    rule: str
    min_severity: Severity | None = None
    needs_plan: bool = False

    def applies(self, kind: str, rule: str, severity: str, *, residence_has_plan: bool) -> bool:
        """Whether an alert with these facts falls under the exception."""
        if kind != self.kind or rule != self.rule:
            return False
        if self.needs_plan and not residence_has_plan:
            return False
        if self.min_severity is None:
            return True
        try:
            return Severity(severity).rank >= self.min_severity.rank
        except ValueError:  # not a severity: not at least anything
            return False


@dataclass(frozen=True, slots=True)
class AudienceTable:
    """The routing of every rule and the safety exceptions."""

    rules: Mapping[str, Routing]
    safety: tuple[SafetyException, ...] = ()

    def audiences(
        self,
        rule: str,
        kind: str,
        severity: str,
        *,
        residence_has_plan: bool = False,
        site_routing: Mapping[str, object] | None = None,
    ) -> frozenset[Audience]:
        """Who an alert of ``rule`` on a ``kind`` device at ``severity`` is for.

        ``site_routing`` is the site's ``{rule: "care" | "technical" | "both"}``; a value that is
        not a routing is ignored (the API refuses it; an old row must not hide an alert). A rule
        the table does not know reaches everyone: nobody misses what nobody has routed.
        """
        default = self.rules.get(rule)
        if default is None:
            return ALL_AUDIENCES
        routing = default
        if site_routing is not None:
            wanted = site_routing.get(rule)
            if isinstance(wanted, str) and wanted in _ROUTING_NAMES:
                routing = Routing(wanted)
        result = routing.audiences
        # A care rule keeps its care staff whatever the site says.
        if Audience.CARE in default.audiences or any(
            exception.applies(kind, rule, severity, residence_has_plan=residence_has_plan)
            for exception in self.safety
        ):
            result |= {Audience.CARE}
        return result

    def check_site_routing(self, routing: Mapping[str, str]) -> dict[str, Routing]:
        """A site's routing as stored, or :class:`AudienceError` saying what is wrong with it:
        an unknown rule, a value other than care/technical/both, or a care rule sent to
        technicians only."""
        checked: dict[str, Routing] = {}
        for rule, value in routing.items():
            default = self.rules.get(rule)
            if default is None:
                raise AudienceError(
                    f"{rule}: not a rule; the rules are {', '.join(sorted(self.rules))}"
                )
            if value not in _ROUTING_NAMES:
                raise AudienceError(f"{rule}: {value!r} is not one of care, technical, both")
            if Audience.CARE in default.audiences and value == Routing.TECHNICAL:
                raise AudienceError(
                    f"{rule} is a care alert: a site may give it to care or both, never to"
                    " technicians alone"
                )
            checked[rule] = Routing(value)
        return checked


_ROUTING_NAMES: Final = frozenset(Routing)


def load_audiences(
    path: str | os.PathLike[str] | None = None, catalog: Catalog = DEFAULT_CATALOG
) -> AudienceTable:
    """Read an audience TOML file; without ``path``, the built-in ``devices/audience.toml``."""
    return load_data_file(
        path, "audience.toml", lambda document: build_audiences(document, catalog), AudienceError
    )


def build_audiences(
    document: Mapping[str, object], catalog: Catalog = DEFAULT_CATALOG
) -> AudienceTable:
    """Build the table from its TOML document; strict: every known rule routed, each exception
    naming a kind of ``catalog`` that has the rule (or a camera, for the night checks' rules)."""
    _keys(document, "audience", required={"rules"}, optional={"safety"})
    rules_table = document["rules"]
    if not isinstance(rules_table, dict):
        raise AudienceError("rules: expected a table")
    rules: dict[str, Routing] = {}
    for rule, value in rules_table.items():
        if rule not in KNOWN_RULES:
            raise AudienceError(f"rules.{rule}: not a rule")
        if value not in _ROUTING_NAMES:
            raise AudienceError(f"rules.{rule}: {value!r} is not one of care, technical, both")
        rules[rule] = Routing(value)
    if missing := sorted(KNOWN_RULES - rules.keys()):
        raise AudienceError(f"rules: no audience for {', '.join(missing)}")
    safety_list = document.get("safety", [])
    if not isinstance(safety_list, list):
        raise AudienceError("safety: expected an array of tables ([[safety]])")
    safety = tuple(
        _exception(value, f"safety[{n}]", catalog) for n, value in enumerate(safety_list)
    )
    return AudienceTable(MappingProxyType(rules), safety)


def _exception(value: object, where: str, catalog: Catalog) -> SafetyException:
    if not isinstance(value, dict):
        raise AudienceError(f"{where}: expected a table")
    _keys(value, where, required={"kind", "rule"}, optional={"min_severity", "needs_plan"})
    kind, rule = value["kind"], value["rule"]
    if not isinstance(kind, str) or kind not in catalog:
        raise AudienceError(f"{where}.kind: {kind!r} is not a kind of the catalog")
    if not isinstance(rule, str) or rule not in KNOWN_RULES:
        raise AudienceError(f"{where}.rule: {rule!r} is not a rule")
    # The night checks' rules are not the catalog's: any kind may carry them.
    if rule not in catalog[kind].rules.enabled and rule not in ALERT_SEVERITY:
        raise AudienceError(f"{where}: the kind {kind} has no rule {rule}")
    min_severity = value.get("min_severity")
    if min_severity is not None and min_severity not in frozenset(Severity):
        raise AudienceError(f"{where}.min_severity: {min_severity!r} is not a severity")
    needs_plan = value.get("needs_plan", False)
    if type(needs_plan) is not bool:
        raise AudienceError(f"{where}.needs_plan: expected true or false")
    return SafetyException(
        kind=kind,
        rule=rule,
        min_severity=None if min_severity is None else Severity(min_severity),
        needs_plan=needs_plan,
    )


def _keys(
    table: Mapping[str, object],
    where: str,
    *,
    required: frozenset[str] | set[str],
    optional: frozenset[str] | set[str] = frozenset(),
) -> None:
    if missing := sorted(key for key in required if key not in table):
        raise AudienceError(f"{where}: missing {', '.join(missing)}")
    if unknown := sorted(key for key in table if key not in required and key not in optional):
        raise AudienceError(f"{where}: unknown key(s) {', '.join(unknown)}")


DEFAULT_AUDIENCES: Final[AudienceTable] = load_audiences()
"""The built-in routing (``devices/audience.toml``)."""


def audiences(
    rule: str,
    kind: str,
    severity: str,
    *,
    residence_has_plan: bool = False,
    site_routing: Mapping[str, object] | None = None,
) -> frozenset[Audience]:
    """:meth:`AudienceTable.audiences` of the built-in table."""
    return DEFAULT_AUDIENCES.audiences(
        rule, kind, severity, residence_has_plan=residence_has_plan, site_routing=site_routing
    )
