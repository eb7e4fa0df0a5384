"""rxws: one websocket connection, as many reactive streams as you want.

The connection's lifecycle is a ReactiveX Observable (:func:`connect`), made resilient
by the operators in :mod:`rxws.ops` (``reconnect``, ``rotate``), fanned out by an
indexed :class:`Router`, wrapped up in :class:`WebSocketClient`, and bridged to
``async for`` by :func:`to_async_iterable`.
"""

from . import compat, errors, events, ops, protocols, transports
from ._version import __version__
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
