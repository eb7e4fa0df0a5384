"""Transports: how rxws reaches the network, behind one small interface.

:class:`Link` is an open connection that pushes frames to a callback; a
:class:`Transport` opens links or adopts connections someone else opened. ``transport=``
on :func:`rxws.connect` and :class:`rxws.WebSocketClient` takes a name or a
:class:`Transport` object:

- ``"websockets"`` (:mod:`rxws.transports.websockets`): the default and the reference;
- ``"picows"`` (:mod:`rxws.transports.picows`, extra ``rxws[picows]``): the fast one,
  held to the same behaviour by the same tests and the Autobahn|Testsuite
  (``compliance/``).

A transport module is imported only when it is chosen, so the picows extra stays
optional.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._redact import Redactor
from .base import FrameHandler, Link, Transport

__all__ = ["FrameHandler", "Link", "Transport", "adopt", "get_transport", "register_transport"]


def adopt(connection: Any, redactor: Redactor) -> Link:
    """A :class:`Link` over a connection someone else opened.

    Any object with async ``recv``, ``send`` and ``close`` works (a websockets
    connection or a look-alike), whatever transport would have opened it; every
    transport's :meth:`Transport.wrap` may use this.
    """
    from .websockets import WebsocketsLink

    return WebsocketsLink(connection, redactor)


def _websockets_transport() -> Transport:
    from .websockets import WebsocketsTransport

    return WebsocketsTransport()


def _picows_transport() -> Transport:
    from .picows import PicowsTransport

    return PicowsTransport()


_TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "websockets": _websockets_transport,
    "picows": _picows_transport,
}


def register_transport(name: str, factory: Callable[[], Transport]) -> None:
    """Make ``transport=name`` choose the transport ``factory()`` builds.

    Args:
        name: The name users pass as ``transport=``.
        factory: Builds the transport (called once per ``connect()``).
    """
    _TRANSPORTS[name] = factory


def get_transport(transport: str | Transport) -> Transport:
    """The transport ``transport`` names, or ``transport`` itself if it is one.

    Raises:
        ValueError: No transport has that name.
        TypeError: ``transport`` is neither a name nor a transport object.
    """
    if not isinstance(transport, str):
        if all(callable(getattr(transport, m, None)) for m in ("prepare", "open", "wrap")):
            return transport
        raise TypeError(
            "transport must be a name (one of "
            f"{sorted(_TRANSPORTS)}) or a Transport object, got {type(transport).__name__}"
        )
    try:
        factory = _TRANSPORTS[transport]
    except KeyError:
        raise ValueError(
            f"unknown transport {transport!r}; choose one of {sorted(_TRANSPORTS)}"
        ) from None
    return factory()
