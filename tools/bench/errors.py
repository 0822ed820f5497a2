"""Why a benchmark run stopped.

BenchError
├── ChildError       a subprocess exited, or said something we did not expect
└── MeasurementStalledError  the rows or messages stopped arriving before the target was reached
"""

from __future__ import annotations

from carewatch.errors import CarewatchError


class BenchError(CarewatchError):
    """Base class: a benchmark run could not produce its numbers."""


class ChildError(BenchError):
    """A benchmark subprocess exited early or broke its line protocol."""

    def __init__(self, name: str, problem: str, log_tail: str = "") -> None:
        self.name = name
        self.problem = problem
        self.log_tail = log_tail
        message = f"{name}: {problem}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)


class MeasurementStalledError(BenchError):
    """The count stopped growing (lost messages, a wedged subscriber, a broker dropping)."""

    def __init__(self, what: str, reached: int, target: int, waited_s: float) -> None:
        self.what = what
        self.reached = reached
        self.target = target
        self.waited_s = waited_s
        super().__init__(
            f"{what}: only {reached} of {target} after {waited_s:.0f} s without progress "
            "(did the broker drop messages? check max_queued_messages in its configuration)"
        )
