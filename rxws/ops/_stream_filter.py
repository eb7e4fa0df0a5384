"""``stream_filter``: keep the messages a filter list accepts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from reactivex import Observable
from reactivex import operators as ops

from ..filters import Filters, matches

__all__ = ["stream_filter"]

_T = TypeVar("_T")


def stream_filter(filters: Filters) -> Callable[[Observable[_T]], Observable[_T]]:
    """Keep the messages that :func:`rxws.matches` accepts for ``filters``.

    Args:
        filters: A list of dicts: a message passes when every key/value pair of at
            least one dict is in it. ``None`` or ``[]`` lets everything through.

    Returns:
        ``reactivex.operators.filter(rxws.matches(filters))``.

    Raises:
        TypeError: ``filters`` is not a list of dicts.

    Example:
        >>> btc = feed.pipe(stream_filter([{"s": "BTCUSDT"}]))
    """
    return ops.filter(matches(filters))
