"""Reconnect delay policy: exponential growth, full jitter, a cap, reset after health.

Pure policy with no I/O and no event loop, so it can be tested (and reasoned about)
on its own. :func:`rxws.ops.reconnect` asks it for each delay and keeps the attempt
count per subscription.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """How long to wait before reconnect attempt number ``attempt``.

    The ceiling for attempt *n* (1-based) is ``min(maximum, initial * factor ** (n - 1))``.
    With ``jitter=1.0`` ("full jitter") the delay is drawn uniformly from
    ``[0, ceiling]``, which spreads many clients' reconnects after a server restart; with
    ``jitter=0`` it is exactly the ceiling; values in between draw from
    ``[ceiling * (1 - jitter), ceiling]``. A connection that stayed up for
    ``reset_after`` seconds counts as healthy and starts the count again.

    Attributes:
        initial: Ceiling of the first delay, in seconds.
        maximum: Largest delay, in seconds.
        factor: Growth of the ceiling per failed attempt.
        jitter: Fraction of the ceiling that is randomised (0 to 1).
        reset_after: Seconds of healthy connection after which the attempt count resets.

    Example:
        >>> b = Backoff(initial=1.0, maximum=8.0, factor=2.0, jitter=0.0)
        >>> [b.delay(n) for n in range(1, 6)]
        [1.0, 2.0, 4.0, 8.0, 8.0]
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 1.0
    reset_after: float = 30.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError(
                f"Backoff initial and maximum must be >= 0 seconds, got initial={self.initial!r}"
                f" and maximum={self.maximum!r}"
            )
        if self.factor < 1:
            raise ValueError(f"Backoff factor must be >= 1, got {self.factor!r}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff jitter must be between 0 and 1, got {self.jitter!r}")
        if self.reset_after < 0:
            raise ValueError(f"Backoff reset_after must be >= 0, got {self.reset_after!r}")

    def ceiling(self, attempt: int) -> float:
        """The largest delay for attempt ``attempt`` (1-based), before jitter.

        Args:
            attempt: The failed attempt's number in a row, starting at 1.

        Returns:
            Seconds.
        """
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt!r}")
        # Stop multiplying once past the cap, so huge attempt numbers cannot overflow.
        value = self.initial
        for _ in range(attempt - 1):
            value *= self.factor
            if value >= self.maximum:
                return self.maximum
        return min(value, self.maximum)

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before the attempt after failed attempt ``attempt``.

        Args:
            attempt: The failed attempt's number in a row, starting at 1.
            rand: A source of uniform numbers in ``[0, 1)``; pass a seeded
                ``random.Random().random`` for reproducible delays.

        Returns:
            Seconds to wait.
        """
        top = self.ceiling(attempt)
        return top - top * self.jitter * rand()

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """An endless iterator of delays for attempts 1, 2, 3, ...

        Args:
            rand: A source of uniform numbers in ``[0, 1)``.

        Yields:
            Seconds to wait before each next attempt.
        """
        attempt = 1
        while True:
            yield self.delay(attempt, rand)
            attempt += 1
