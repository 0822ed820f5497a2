"""Errors raised by the ``api`` package. Each builds its own message and carries its data.

::

    ApiError
    ├── LoginRateLimited   too many failed logins for a username or client; HTTP 429
    └── SiteIdTaken        a new site's id is in use (ids are global); HTTP 409
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
