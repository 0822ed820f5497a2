"""Errors raised by the ``carewatch`` package. Each builds its own message and carries its data.

::

    CarewatchError
    ├── AdminError              bootstrap administration refused a request (the CLI exits 2)
    │   ├── InvalidValueError   an id, name, kind or time zone that is not acceptable
    │   ├── NotFoundError       a referenced organisation or site does not exist
    │   ├── AlreadyExistsError  the id is already taken
    │   └── ConflictError       refused by the current state (decommissioned, in use)
    ├── MigrationError          the packaged migrations are inconsistent
    └── LocalInstanceError      a private PostgreSQL or Mosquitto instance failed to start or stop
"""

from __future__ import annotations

from pathlib import Path


class CarewatchError(Exception):
    """Base of every error this package raises on purpose."""


class AdminError(CarewatchError):
    """An administration request was refused; the message is fit for a shell user."""


class InvalidValueError(AdminError):
    """A value given is not acceptable: ``what`` it is, the ``value`` and what was ``expected``."""

    def __init__(self, what: str, value: str, expected: str) -> None:
        self.what = what
        self.value = value
        self.expected = expected
        super().__init__(f"invalid {what} {value!r}: {expected}")


class NotFoundError(AdminError):
    """A referenced ``entity`` (organisation, site, device, bridge) is not there for the caller."""

    def __init__(self, entity: str, entity_id: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id!r} does not exist")


class AlreadyExistsError(AdminError):
    """The id of a new ``entity`` is taken."""

    def __init__(self, entity: str, entity_id: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id!r} already exists")


class ConflictError(AdminError):
    """The request contradicts the current state of ``entity_id``; ``detail`` says how."""

    def __init__(self, entity: str, entity_id: str, detail: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.detail = detail
        super().__init__(f"{entity} {entity_id!r}: {detail}")


class MigrationError(CarewatchError):
    """The packaged migrations, or the ones a database has applied, are inconsistent."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"migrations: {detail}")


class LocalInstanceError(CarewatchError):
    """A private instance failed; ``log_tail`` holds the end of its log, the usual explanation."""

    def __init__(self, service: str, action: str, log_path: Path, log_tail: str) -> None:
        self.service = service
        self.action = action
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(
            f"{service}: could not {action} (log {log_path}):\n{log_tail}"
            if log_tail
            else f"{service}: could not {action} (log {log_path} is empty)"
        )
