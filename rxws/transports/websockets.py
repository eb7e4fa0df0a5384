"""The websockets transport: the default, and the reference the others must match.

It opens connections with ``websockets.asyncio.client.connect`` and adopts any
connection with async ``recv``, ``send`` and ``close`` (what ``websockets.connect``
returns, or a look-alike handed over by a url callable such as compat's
``_create_ws``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from websockets.asyncio.client import connect as _ws_connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    ProxyError,
)
from websockets.protocol import State

from .._redact import RedactingLogger, Redactor
from ..errors import ConnectionFailed, ConnectionLost, HandshakeRejected
from .base import FrameHandler, Link, certificate_error, close_transport, os_error_reason

__all__ = [
    "WebsocketsLink",
    "WebsocketsTransport",
    "connection_is_open",
    "lost_from_closed",
    "send_on",
]

_wire_log = logging.getLogger("rxws.websockets")


def connection_is_open(connection: Any) -> bool:
    """Whether a connection can still send; look-alikes without a state count as open."""
    state = getattr(connection, "state", None)
    if state is not None:
        return bool(state is State.OPEN)
    closed = getattr(connection, "closed", None)
    return closed is not True


async def send_on(connection: Any, data: str | bytes, redactor: Redactor) -> None:
    """Send one frame on a connection that ``on_open`` was given, with rxws's errors.

    Raises:
        ConnectionLost: The connection is closed or broke while sending.
    """
    try:
        await connection.send(data)
    except ConnectionClosed as exc:
        raise lost_from_closed(exc, redactor) from None


def lost_from_closed(exc: ConnectionClosed, redactor: Redactor) -> ConnectionLost:
    """The :class:`ConnectionLost` for a websockets ``ConnectionClosed``."""
    frame = exc.rcvd or exc.sent
    if frame is None:
        return ConnectionLost(None, "the TCP connection broke without a close frame")
    return ConnectionLost(frame.code, redactor(frame.reason))


class WebsocketsLink:
    """A :class:`Link` over a ``websockets`` connection (or any look-alike)."""

    __slots__ = ("_conn", "_redactor")

    def __init__(self, connection: Any, redactor: Redactor) -> None:
        self._conn = connection
        self._redactor = redactor

    @property
    def connection(self) -> Any:
        """The websockets connection."""
        return self._conn

    @property
    def is_open(self) -> bool:
        """Whether frames can still be sent."""
        return connection_is_open(self._conn)

    async def run(self, on_frame: FrameHandler) -> None:
        """Push every frame to ``on_frame`` until the connection closes."""
        recv = self._conn.recv
        try:
            while True:
                on_frame(await recv())
        except ConnectionClosedOK:
            return
        except ConnectionClosed as exc:
            raise lost_from_closed(exc, self._redactor) from None

    async def send(self, data: str | bytes) -> None:
        """Send one text or binary frame."""
        await send_on(self._conn, data, self._redactor)

    async def close(self, timeout: float | None = None) -> None:
        """Close the connection, waiting at most ``timeout`` for the peer."""
        conn = self._conn
        current = getattr(conn, "close_timeout", None)
        if timeout is not None and (current is None or current > timeout):
            conn.close_timeout = timeout
        transport = getattr(conn, "transport", None)
        try:
            await conn.close()
        except BaseException:
            # Cancelled (again) while waiting for the peer's answer: websockets leaves
            # the socket open then, so drop it here.
            if transport is not None:
                transport.abort()
            raise
        close_transport(transport)


class WebsocketsTransport:
    """The default transport, on ``websockets.asyncio.client.connect``."""

    name = "websockets"

    def prepare(self, options: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
        """Add a redacting logger unless the caller gave a logger of their own."""
        if "logger" not in options:
            options = {**options, "logger": RedactingLogger(_wire_log, redactor)}
        return options

    async def open(self, url: str, options: dict[str, Any], redactor: Redactor) -> Link:
        """Open a connection with ``websockets.asyncio.client.connect``."""
        shown = redactor.url(url)
        try:
            conn = await _ws_connect(url, **options)
        except InvalidStatus as exc:
            raise HandshakeRejected(shown, exc.response.status_code) from None
        except ssl.SSLCertVerificationError as exc:
            raise certificate_error(shown, exc, redactor) from None
        except ssl.SSLError as exc:
            raise ConnectionFailed(shown, f"TLS error: {redactor(str(exc))}") from None
        except (TimeoutError, asyncio.TimeoutError):  # the same class from Python 3.11 on
            limit = options.get("open_timeout", 10)
            raise ConnectionFailed(
                shown, f"timed out after {limit} s during the opening handshake"
            ) from None
        except InvalidURI:
            raise ConnectionFailed(shown, "the URL is not a valid websocket URI") from None
        except (InvalidHandshake, ProxyError) as exc:
            raise ConnectionFailed(shown, f"{type(exc).__name__}: {redactor(str(exc))}") from None
        except OSError as exc:
            raise ConnectionFailed(shown, redactor(os_error_reason(exc))) from None
        return WebsocketsLink(conn, redactor)

    def wrap(self, connection: Any, redactor: Redactor) -> Link:
        """Adopt an open websockets connection (or a look-alike)."""
        return WebsocketsLink(connection, redactor)
