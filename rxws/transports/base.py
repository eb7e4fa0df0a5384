"""The transport seam: how :mod:`rxws.source` reaches the network.

The layers above see only :class:`Link`: an open connection that pushes each frame to
a callback until it closes, can send, and can be closed. A :class:`Transport` opens
links (:meth:`Transport.open`) or adopts a connection someone else opened
(:meth:`Transport.wrap`). One module per transport sits beside this one:
:mod:`rxws.transports.websockets` (the default and the reference) and
:mod:`rxws.transports.picows` (the fast one, extra ``rxws[picows]``).

Close semantics are the same for every transport: :meth:`Link.run` returns when the
peer closed normally (1000, 1001, or a close frame without a status code) and raises
:class:`rxws.ConnectionLost` otherwise; :meth:`Transport.open` raises
:class:`rxws.ConnectionFailed` (or its subclasses ``HandshakeRejected`` and
``CertificateError``) when no connection could be made.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

from .._redact import Redactor
from ..errors import CertificateError

__all__ = [
    "FrameHandler",
    "Link",
    "TextBytesHandler",
    "Transport",
    "certificate_error",
    "close_transport",
    "os_error_reason",
]


FrameHandler = Callable[[Any], None]
"""Receives each frame's payload (``str`` for text, ``bytes`` for binary)."""

TextBytesHandler = Callable[[bytes], bool]
"""Receives a whole text frame's UTF-8 bytes, not decoded (for a parser that reads bytes).

Returns True when the bytes are not valid UTF-8: the link then fails the connection
with 1007, as it does when it decodes a text frame itself.
"""


class Link(Protocol):
    """One open connection, as the layers above rxws.source see it.

    A link may also offer ``async run_text_bytes(on_frame, on_text_bytes)``: the same
    as :meth:`run`, except that each whole (unfragmented) text frame goes to
    ``on_text_bytes`` (a :data:`TextBytesHandler`) undecoded. :mod:`rxws.source` uses
    it, when a link has it, for a parser that reads UTF-8 bytes (orjson), sparing the
    decoding of each frame into a ``str``.
    """

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
        timeout) for the peer to answer, then drops the TCP connection. If the wait
        is interrupted (the task is cancelled again, as ``asyncio.run`` cancels what
        is left when the program ends), the TCP connection is dropped at once before
        the cancellation goes on: no socket outlives a close.
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


def os_error_reason(exc: OSError) -> str:
    """Words for an ``OSError`` raised while connecting, never empty.

    A bare ``ConnectionResetError()`` (a TLS client talking to a plain server, whose
    answer the TLS layer cannot read) carries no text at all.
    """
    text = exc.strerror or str(exc)
    if text:
        return text
    if isinstance(exc, ConnectionResetError):
        return "the server reset the connection during the handshake"
    return type(exc).__name__


def close_transport(transport: Any) -> None:
    """Mark an asyncio transport closed once its connection has ended.

    On Python 3.10, asyncio's TLS transport is left open (and warns when collected)
    when the peer closed the TCP connection first; closing it again is harmless.
    """
    if transport is not None and not transport.is_closing():
        transport.close()
