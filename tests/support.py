"""Helpers shared by several test modules."""

from __future__ import annotations

from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import Disposable
from reactivex.subject import Subject


class CountingSource:
    """A Subject behind ``reactivex.create`` that counts subscriptions and disposals."""

    def __init__(self) -> None:
        self.subject: Subject[Any] = Subject()
        self.subscribed = 0
        self.disposed = 0

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self.subscribed += 1
            inner = self.subject.subscribe(observer)

            def dispose() -> None:
                self.disposed += 1
                inner.dispose()

            return Disposable(dispose)

        self.observable: Observable[Any] = reactivex.create(subscribe)

    @property
    def active(self) -> int:
        """Subscriptions not yet disposed."""
        return self.subscribed - self.disposed

    def push(self, msg: Any) -> None:
        """Emit ``msg`` to the current subscribers."""
        self.subject.on_next(msg)
