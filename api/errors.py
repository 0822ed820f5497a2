"""Errors raised by the ``api`` package. Each builds its own message and carries its data.

::

    ApiError
    ├── LoginRateLimited   too many failed logins for a username or client; HTTP 429
    ├── SiteIdTaken        a new site's id is in use (ids are global); HTTP 409
    ├── UnknownSite        a body names a site the caller does not have; HTTP 422
    ├── ResidenceLabelTaken  a residence's label is in use at its site; HTTP 409
    ├── AbsenceOver        an absence to end has ended already, or expired; HTTP 409
    ├── VisitRecorded      staff recorded a visit to the residence at that instant; HTTP 409
    └── SecondGroupRefused  users who may not take a site's alarms named for its second group; 422
"""

from __future__ import annotations

import math


class ApiError(Exception):
    """Base of every error this package raises on purpose."""


class LoginRateLimited(ApiError):  # noqa: N818 - the name the pages and the brief use
    """Logins are refused, even with the right password, for ``retry_after_s`` more seconds."""

    def __init__(self, retry_after_s: float) -> None:
        # Whole seconds, at least one: that is what a Retry-After header can say.
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(f"too many failed logins; try again in {self.retry_after_s} s")


class SiteIdTaken(ApiError):  # noqa: N818 - an outcome, named like LoginRateLimited
    """The site id is in use (site ids are global, whichever organisation holds it)."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id
        super().__init__(f"site id {site_id!r} is taken")


class UnknownSite(ApiError):  # noqa: N818 - an outcome, named like LoginRateLimited
    """The site a body names is not one of the caller's (or does not exist: the same to them)."""

    def __init__(self, site_id: str) -> None:
        self.site_id = site_id
        super().__init__(f"site {site_id!r} not found")


class ResidenceLabelTaken(ApiError):  # noqa: N818 - an outcome, named like LoginRateLimited
    """Another residence of the site has the label (labels name residences to staff)."""

    def __init__(self, site_id: str, label: str) -> None:
        self.site_id = site_id
        self.label = label
        super().__init__(f"site {site_id!r} already has a residence labelled {label!r}")


class AbsenceOver(ApiError):  # noqa: N818 - an outcome, named like LoginRateLimited
    """The absence cannot be ended: it was ended already, or its expected end has passed."""

    def __init__(self, absence_id: int, *, ended: bool) -> None:
        self.absence_id = absence_id
        self.ended = ended
        how = "was ended already" if ended else "is over: its expected end has passed"
        super().__init__(f"absence {absence_id} {how}")


class VisitRecorded(ApiError):  # noqa: N818 - an outcome, named like LoginRateLimited
    """Staff recorded a visit to the residence at the same instant already (one visit)."""

    def __init__(self, residence_id: int) -> None:
        self.residence_id = residence_id
        super().__init__(f"a visit to residence {residence_id} at that time is recorded already")


class SecondGroupRefused(ApiError):  # noqa: N818 - an outcome, named like LoginRateLimited
    """Users named for a site's second group who may not take its alarms: unknown, of another
    organisation (the same to the caller), disabled, of a role that does not act on alerts, or
    limited to other sites."""

    def __init__(self, site_id: str, usernames: list[str]) -> None:
        self.site_id = site_id
        self.usernames = usernames
        super().__init__(
            f"cannot be in the second group of site {site_id!r}: {', '.join(usernames)}"
            " (members must be users of the organisation who take alarms at the site)"
        )
