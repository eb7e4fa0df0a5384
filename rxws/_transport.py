"""The transport seam: how :mod:`rxws.source` reaches the network.

The layers above see only :class:`Link`: an open connection that pushes each frame to
a callback until it closes, can send, and can be closed. A transport opens links
(:meth:`Transport.open`) or wraps a connection someone else opened
(:meth:`Transport.wrap`). websockets is the default and the reference transport.

Close semantics are the same for every transport: :meth:`Link.run` returns when the
peer closed normally (1000, 1001, or a close frame without a status code) and raises
:class:`rxws.ConnectionLost` otherwise; :meth:`Transport.open` raises
:class:`rxws.ConnectionFailed` (or its subclasses ``HandshakeRejected`` and
``CertificateError``) when no connection could be made.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

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

from ._redact import RedactingLogger, Redactor
from .errors import CertificateError, ConnectionFailed, ConnectionLost, HandshakeRejected

_wire_log = logging.getLogger("rxws.websockets")

__all__ = [
    "FrameHandler",
    "Link",
    "Transport",
    "WebsocketsTransport",
    "certificate_error",
    "connection_is_open",
    "get_transport",
    "send_on",
]

FrameHandler = Callable[[Any], None]
"""Receives each frame's payload (``str`` for text, ``bytes`` for binary)."""


class Link(Protocol):
    """One open connection, as the layers above rxws.source see it."""

    @property
    def connection(self) -> Any:
        """The transport's own connection object (what ``client.present`` returns)."""

    @property
    def is_open(self) -> bool:
        """Whether frames can still be sent."""

    async def run(self, on_frame: FrameHandler) -> None:
        """Push every frame to ``on_frame`` until the connection closes.

        Returns on a normal close (1000, 1001, or no status code: 1005) and raises
        ``ConnectionLost`` otherwise.
        """

    async def send(self, data: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) frame."""

    async def close(self, timeout: float | None = None) -> None:
        """Close the connection (normal close, 1000) and wait until it is closed.

        Waits at most ``timeout`` seconds (default: the connection's own close
        timeout) for the peer to answer, then drops the TCP connection.
        """


class Transport(Protocol):
    """Opens links."""

    name: str

    def prepare(self, options: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
        """Check the connect options once, when ``connect()`` is called.

        Returns:
            The options :meth:`open` gets.

        Raises:
            ValueError: An option this transport cannot honour (the message names it).
        """

    async def open(self, url: str, options: dict[str, Any], redactor: Redactor) -> Link:
        """Open a connection to ``url`` with transport ``options``.

        Raises:
            ConnectionFailed: No connection could be made.
        """

    def wrap(self, connection: Any, redactor: Redactor) -> Link:
        """Adopt an open connection (anything with async ``recv``, ``send`` and ``close``)."""


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


# OpenSSL verification results that mean "the certificate names another host".
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
# ... and those that mean "no CA this client trusts signed it".
_UNTRUSTED = (18, 19, 20, 21)  # self-signed leaf / in chain, issuer not found, unverifiable


def certificate_error(
    shown: str, exc: ssl.SSLCertVerificationError, redactor: Redactor
) -> CertificateError:
    """The :class:`CertificateError` for a failed TLS verification, saying what to do.

    Args:
        shown: The redacted URL.
        exc: What the ``ssl`` module raised.
        redactor: Blanks the connection's secrets.
    """
    what = str(exc.verify_message or exc.reason or exc)
    code = exc.verify_code
    if code in _NAME_MISMATCH:
        host = urlsplit(shown).hostname or "this host"
        what = what.split(",")[0].rstrip(".")  # "IP address mismatch, certificate is ..."
        detail = f"the server's certificate is not valid for {host!r} ({what})"
        return CertificateError(
            shown,
            redactor(detail),
            "connect with a host name the certificate lists, or give the server a "
            "certificate for this name",
        )
    if code in _UNTRUSTED:
        detail = f"{what}: the certificate was not signed by a CA that this client trusts"
    else:
        detail = what
    return CertificateError(shown, redactor(detail))


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
        return self._conn

    @property
    def is_open(self) -> bool:
        return connection_is_open(self._conn)

    async def run(self, on_frame: FrameHandler) -> None:
        recv = self._conn.recv
        try:
            while True:
                on_frame(await recv())
        except ConnectionClosedOK:
            return
        except ConnectionClosed as exc:
            raise lost_from_closed(exc, self._redactor) from None

    async def send(self, data: str | bytes) -> None:
        await send_on(self._conn, data, self._redactor)

    async def close(self, timeout: float | None = None) -> None:
        conn = self._conn
        current = getattr(conn, "close_timeout", None)
        if timeout is not None and (current is None or current > timeout):
            conn.close_timeout = timeout
        await conn.close()


class WebsocketsTransport:
    """The default transport, on ``websockets.asyncio.client.connect``."""

    name = "websockets"

    def prepare(self, options: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
        """Add a redacting logger unless the caller gave a logger of their own."""
        if "logger" not in options:
            options = {**options, "logger": RedactingLogger(_wire_log, redactor)}
        return options

    async def open(self, url: str, options: dict[str, Any], redactor: Redactor) -> Link:
        shown = redactor.url(url)
        try:
            conn = await _ws_connect(url, **options)
        except InvalidStatus as exc:
            raise HandshakeRejected(shown, exc.response.status_code) from None
        except ssl.SSLCertVerificationError as exc:
            raise certificate_error(shown, exc, redactor) from None
        except ssl.SSLError as exc:
            raise ConnectionFailed(shown, f"TLS error: {redactor(str(exc))}") from None
        except TimeoutError:
            limit = options.get("open_timeout", 10)
            raise ConnectionFailed(
                shown, f"timed out after {limit} s during the opening handshake"
            ) from None
        except InvalidURI:
            raise ConnectionFailed(shown, "the URL is not a valid websocket URI") from None
        except (InvalidHandshake, ProxyError) as exc:
            raise ConnectionFailed(shown, f"{type(exc).__name__}: {redactor(str(exc))}") from None
        except OSError as exc:
            raise ConnectionFailed(shown, redactor(exc.strerror or str(exc))) from None
        return WebsocketsLink(conn, redactor)

    def wrap(self, connection: Any, redactor: Redactor) -> Link:
        return WebsocketsLink(connection, redactor)


def _picows_transport() -> Transport:
    from ._picows import PicowsTransport

    return PicowsTransport()


_TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "websockets": WebsocketsTransport,
    "picows": _picows_transport,
}


def get_transport(name: str) -> Transport:
    """The transport registered under ``name``.

    Raises:
        ValueError: No transport has that name.
    """
    try:
        factory = _TRANSPORTS[name]
    except KeyError:
        raise ValueError(
            f"unknown transport {name!r}; choose one of {sorted(_TRANSPORTS)}"
        ) from None
    return factory()
