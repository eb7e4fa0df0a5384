"""rxws: one websocket connection, as many reactive streams as you want.

The connection's lifecycle is a ReactiveX Observable (:func:`connect`), made resilient
by the operators in :mod:`rxws.ops` (``reconnect``, ``rotate``), fanned out by an
indexed :class:`Router`, wrapped up in :class:`WebSocketClient`, and bridged to
``async for`` by :func:`to_async_iterable`.

Importing ``rxws`` is quick: each name below is imported from its module when it is
first used (``rxws.WebSocketClient`` imports :mod:`rxws.client`, and so on), which
keeps the ``rxws`` command quiet on a Ctrl-C from its first moment.
"""

from __future__ import annotations

from ._version import __version__

# Not typing.TYPE_CHECKING: importing typing alone would take longer than all of this.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from . import compat, errors, events, ops, protocols, transports
    from .backoff import Backoff
    from .bridge import AsyncStream, from_async_iterable, to_async_iterable
    from .client import ClientStats, WebSocketClient
    from .codec import dump_json, parse_json
    from .errors import (
        CertificateError,
        ConnectionFailed,
        ConnectionLost,
        HandshakeRejected,
        IdleTimeout,
        NoRunningLoop,
        NotConnected,
        ParseError,
        ReconnectExhausted,
        RotationFailed,
        RxwsError,
        StreamClosed,
        StreamOverflow,
        SubscriberError,
        SubscriptionRejected,
        TransportUnavailable,
        is_retryable,
    )
    from .filters import FilterIndex, matches
    from .limits import Limits, RateBudget
    from .router import Router
    from .source import connect

# Where each public name lives ("": the name is a submodule).
_HOME: dict[str, str] = {
    "AsyncStream": "bridge",
    "Backoff": "backoff",
    "CertificateError": "errors",
    "ClientStats": "client",
    "ConnectionFailed": "errors",
    "ConnectionLost": "errors",
    "FilterIndex": "filters",
    "HandshakeRejected": "errors",
    "IdleTimeout": "errors",
    "Limits": "limits",
    "NoRunningLoop": "errors",
    "NotConnected": "errors",
    "ParseError": "errors",
    "RateBudget": "limits",
    "ReconnectExhausted": "errors",
    "RotationFailed": "errors",
    "Router": "router",
    "RxwsError": "errors",
    "StreamClosed": "errors",
    "StreamOverflow": "errors",
    "SubscriberError": "errors",
    "SubscriptionRejected": "errors",
    "TransportUnavailable": "errors",
    "WebSocketClient": "client",
    "compat": "",
    "connect": "source",
    "dump_json": "codec",
    "errors": "",
    "events": "",
    "from_async_iterable": "bridge",
    "is_retryable": "errors",
    "matches": "filters",
    "ops": "",
    "parse_json": "codec",
    "protocols": "",
    "to_async_iterable": "bridge",
    "transports": "",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'rxws' has no attribute {name!r}")
    from importlib import import_module

    module = import_module(f".{home or name}", __name__)
    value = module if not home else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AsyncStream",
    "Backoff",
    "CertificateError",
    "ClientStats",
    "ConnectionFailed",
    "ConnectionLost",
    "FilterIndex",
    "HandshakeRejected",
    "IdleTimeout",
    "Limits",
    "NoRunningLoop",
    "NotConnected",
    "ParseError",
    "RateBudget",
    "ReconnectExhausted",
    "RotationFailed",
    "Router",
    "RxwsError",
    "StreamClosed",
    "StreamOverflow",
    "SubscriberError",
    "SubscriptionRejected",
    "TransportUnavailable",
    "WebSocketClient",
    "__version__",
    "compat",
    "connect",
    "dump_json",
    "errors",
    "events",
    "from_async_iterable",
    "is_retryable",
    "matches",
    "ops",
    "parse_json",
    "protocols",
    "to_async_iterable",
    "transports",
]
