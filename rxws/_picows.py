"""The picows transport: frames pushed from picows's callbacks, no await per message.

picows (a Cython websocket client for asyncio, ``pip install 'rxws[picows]'``) calls
a listener for every frame; this module turns those calls into the :class:`Link`
interface of :mod:`rxws._transport`, so everything above ``rxws.source`` works the
same on either transport. Close codes, refused handshakes, dead links and TLS errors
map to the same rxws errors as with websockets.

websockets options that mean something here are translated (``ssl``,
``additional_headers``, ``max_size``, ``ping_interval``, ``ping_timeout``,
``open_timeout``, ``close_timeout``, ``proxy``, ``logger``); the others
(``compression`` other than ``None``, ``subprotocols``, ``origin``, ...) are refused
with a ValueError that names them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from ._redact import RedactingLogger, Redactor, header_items
from ._transport import FrameHandler, Link, WebsocketsLink, certificate_error
from .errors import (
    ConnectionFailed,
    ConnectionLost,
    HandshakeRejected,
    TransportUnavailable,
)

__all__ = ["PicowsTransport", "picows_options"]

log = logging.getLogger("rxws.picows")

try:  # picows is an optional extra
    import picows as _picows  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _picows = None  # type: ignore[assignment, unused-ignore]

# websockets.connect options this transport translates, and the picows argument each
# becomes (None: handled here, not passed on).
_TRANSLATED = {
    "ssl": "ssl_context",
    "additional_headers": "extra_headers",
    "max_size": "max_frame_size",
    "ping_interval": None,
    "ping_timeout": None,
    "open_timeout": None,
    "close_timeout": None,
    "proxy": "proxy",
    "logger": None,
    "compression": None,
}
_NORMAL_CLOSE = (1000, 1001)


class _PicowsLogger(RedactingLogger):
    """The redacting logger handed to picows, with its ERROR lines logged as WARNING.

    picows logs a peer's protocol violation (a frame over ``max_size``, bad framing)
    at ERROR; rxws handles those (``ConnectionLost`` with the close code, then
    reconnect), so for rxws they are warnings, as they are with websockets.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log one record, at WARNING at most."""
        super().log(min(level, logging.WARNING), msg, *args, **kwargs)


def picows_options(options: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """Translate websockets-style connect options into picows ``ws_connect`` arguments.

    Raises:
        ValueError: An option has no picows equivalent (the message names it).
    """
    unknown = sorted(k for k in options if k not in _TRANSLATED)
    if options.get("compression") is not None:
        unknown.insert(0, "compression")
    if unknown:
        raise ValueError(
            "the picows transport cannot take these websockets-only options: "
            f"{', '.join(unknown)}; drop them or use transport='websockets' "
            f"(picows takes: {', '.join(sorted(_TRANSLATED))})"
        )
    out: dict[str, Any] = {}
    for key, target in _TRANSLATED.items():
        if target is not None and options.get(key) is not None:
            out[target] = options[key]
    if out.get("ssl_context") is True:
        out["ssl_context"] = ssl.create_default_context()
    if options.get("proxy") is True:  # websockets' "from the environment": not here
        out.pop("proxy")
    ping_interval = options.get("ping_interval", 20.0)
    ping_timeout = options.get("ping_timeout", 20.0)
    if ping_interval is not None:
        out["enable_auto_ping"] = True
        out["auto_ping_idle_timeout"] = ping_interval
        out["auto_ping_reply_timeout"] = ping_timeout if ping_timeout is not None else 3600.0
    max_size = options.get("max_size", 2**20)
    if max_size is None:
        out.pop("max_frame_size", None)
        out["max_frame_size"] = 2**62
    else:
        out["max_frame_size"] = max_size
    out["logger_name"] = options.get("logger") or _PicowsLogger(log, redactor)
    out["websocket_handshake_timeout"] = options.get("open_timeout", 10.0)
    return out


def _move_credentials(url: str, headers: Any, redactor: Redactor) -> tuple[str, Any]:
    """Take ``user:password@`` out of ``url`` and send it as HTTP Basic authorization.

    picows would put the URL's user information into the ``Host`` header (and so in
    clear text into the server's logs); websockets sends it as an ``Authorization:
    Basic`` header instead, unless one is given, and so does this transport.

    Returns:
        The URL without user information, and the headers to send (``headers``
        unchanged when the URL has none).
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, headers
    host = parts.netloc.rpartition("@")[2]
    bare = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    pairs = list(header_items(headers))
    if not any(name.lower() == "authorization" for name, _ in pairs):
        user_pass = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        token = base64.b64encode(user_pass.encode()).decode()
        redactor.add(token)
        pairs.append(("Authorization", f"Basic {token}"))
    return bare, pairs


def _socket_factory(opened: list[socket.socket]) -> Callable[[Any], Awaitable[socket.socket]]:
    """A picows ``socket_factory`` that connects the socket and remembers it in ``opened``.

    picows leaves a connection open when its ``ws_connect`` is cancelled during the
    opening handshake (``open_timeout``, or a subscriber disposing meanwhile); holding
    the socket lets :func:`_shut` end it. A connect that fails or is cancelled here
    closes its own socket.
    """

    async def connect(parsed: Any) -> socket.socket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(parsed.host, parsed.port, type=socket.SOCK_STREAM)
        failure: OSError = OSError(f"no address found for {parsed.host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                failure = exc
                continue
            except BaseException:
                sock.close()
                raise
            opened.append(sock)
            return sock
        raise failure

    return connect


def _shut(sockets: list[socket.socket]) -> None:
    """End the TCP connections of ``sockets``; whichever transport owns one closes it."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    sockets.clear()


if _picows is not None:

    class _Listener(_picows.WSListener):  # type: ignore[misc, unused-ignore]
        """Receives picows's callbacks for one connection."""

        def __init__(self, max_size: int) -> None:
            self.on_frame: FrameHandler | None = None
            self.early: list[Any] = []  # frames that came before run() started
            self.parts: list[bytes] = []  # a fragmented message being put together
            self.parts_type: Any = None
            self.max_size = max_size
            self.failure: BaseException | None = None
            self.transport: Any = None

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            msg_type = _picows.WSMsgType
            if transport.is_close_frame_sent and kind is not msg_type.CLOSE:
                # Closing: after a protocol error (picows still hands over the frame that
                # broke a limit) or a close() of ours. Nothing more is delivered.
                return
            if frame.fin and kind is msg_type.TEXT:
                try:
                    payload: Any = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self._fail(transport, 1007, "invalid UTF-8 in a text frame")
                    return
            elif frame.fin and kind is msg_type.BINARY:
                payload = frame.get_payload_as_bytes()
            elif kind is msg_type.CLOSE:
                transport.send_close(_picows.WSCloseCode.OK)
                transport.disconnect()
                return
            elif kind in (msg_type.TEXT, msg_type.BINARY, msg_type.CONTINUATION):
                payload = self._assemble(transport, frame, kind)
                if payload is None:
                    return
            else:  # PONG and anything else
                return
            on_frame = self.on_frame
            if on_frame is None:
                self.early.append(payload)
                return
            try:
                on_frame(payload)
            except BaseException as exc:  # a subscriber failed: end the connection
                self.failure = exc
                transport.send_close(_picows.WSCloseCode.INTERNAL_ERROR)
                transport.disconnect()

        def _assemble(self, transport: Any, frame: Any, kind: Any) -> Any:
            msg_type = _picows.WSMsgType
            if kind is not msg_type.CONTINUATION:
                self.parts = []
                self.parts_type = kind
            elif self.parts_type is None:
                self._fail(transport, 1002, "a continuation frame without a first frame")
                return None
            self.parts.append(frame.get_payload_as_bytes())
            if sum(len(p) for p in self.parts) > self.max_size:
                self._fail(transport, 1009, f"message over {self.max_size} bytes")
                return None
            if not frame.fin:
                return None
            data = b"".join(self.parts)
            text = self.parts_type is msg_type.TEXT
            self.parts, self.parts_type = [], None
            if not text:
                return data
            try:
                return data.decode()
            except UnicodeDecodeError:
                self._fail(transport, 1007, "invalid UTF-8 in a text message")
                return None

        def _fail(self, transport: Any, code: int, reason: str) -> None:
            self.failure = ConnectionLost(code, reason)
            transport.send_close(_picows.WSCloseCode(code), reason.encode())
            transport.disconnect()

    class PicowsConnection:
        """What ``on_open`` and ``client.present`` get on the picows transport.

        Attributes:
            transport: picows's ``WSTransport``, for what this class does not cover.
        """

        def __init__(self, transport: Any, listener: _Listener, close_timeout: float) -> None:
            self.transport = transport
            self._listener = listener
            self._close_timeout = close_timeout

        @property
        def closed(self) -> bool:
            """Whether the connection is closed or closing."""
            return bool(self.transport.is_disconnected or self.transport.is_close_frame_sent)

        async def send(self, data: str | bytes) -> None:
            """Send one text (``str``) or binary (``bytes``) frame."""
            if self.closed:
                raise ConnectionLost(None, "the connection is closed")
            if isinstance(data, str):
                self.transport.send(_picows.WSMsgType.TEXT, data.encode())
            else:
                self.transport.send(_picows.WSMsgType.BINARY, data)

        async def close(self, timeout: float | None = None) -> None:
            """Close normally (1000) and wait until the TCP connection is closed.

            Args:
                timeout: Longest wait for the peer's answer, in seconds (default: the
                    ``close_timeout`` connect option), after which the TCP connection
                    is dropped.
            """
            limit = self._close_timeout if timeout is None else min(timeout, self._close_timeout)
            transport = self.transport
            if not transport.is_disconnected:
                if not transport.is_close_frame_sent:
                    transport.send_close(_picows.WSCloseCode.OK)
                try:
                    await asyncio.wait_for(asyncio.shield(transport.wait_disconnected()), limit)
                except Exception:  # timed out, or the link broke meanwhile
                    transport.disconnect(graceful=False)
            with contextlib.suppress(Exception):  # a failure is reported by run()
                await transport.wait_disconnected()

    class PicowsLink:
        """A :class:`Link` over a picows connection."""

        __slots__ = ("_conn", "_listener", "_redactor", "_transport")

        def __init__(
            self,
            transport: Any,
            listener: _Listener,
            close_timeout: float,
            redactor: Redactor,
        ) -> None:
            self._transport = transport
            self._listener = listener
            self._redactor = redactor
            self._conn = PicowsConnection(transport, listener, close_timeout)

        @property
        def connection(self) -> Any:
            return self._conn

        @property
        def is_open(self) -> bool:
            return not self._conn.closed

        async def run(self, on_frame: FrameHandler) -> None:
            listener = self._listener
            early, listener.early = listener.early, []
            for payload in early:
                on_frame(payload)
            listener.on_frame = on_frame
            try:
                await self._transport.wait_disconnected()
            except Exception as exc:
                if listener.failure is None:
                    listener.failure = exc
            failure = listener.failure
            if failure is not None:
                raise self._lost(failure)
            handshake = self._transport.close_handshake
            received = handshake.recv if handshake is not None else None
            if received is None:
                raise ConnectionLost(None, "the TCP connection broke without a close frame")
            code = int(received.code.value if hasattr(received.code, "value") else received.code)
            if code not in _NORMAL_CLOSE:
                raise ConnectionLost(code, self._redactor(received.reason or ""))

        def _lost(self, failure: BaseException) -> BaseException:
            """What :meth:`run` raises for a connection that ended with ``failure``."""
            assert _picows is not None
            if isinstance(failure, ConnectionLost):
                return failure
            if isinstance(failure, _picows.WSProtocolError):
                # picows found the server breaking the protocol (a frame over max_size,
                # bad framing) and closed with that code: the same as websockets reports.
                args = failure.args
                code = args[0] if args else 1002
                reason = args[1] if len(args) > 1 else ""
                number = int(code.value if hasattr(code, "value") else code)
                return ConnectionLost(number, self._redactor(str(reason)))
            if isinstance(failure, (_picows.WSError, OSError)):
                return ConnectionLost(None, self._redactor(f"{type(failure).__name__}: {failure}"))
            return failure  # a subscriber's own error, passed on as with websockets

        async def send(self, data: str | bytes) -> None:
            await self._conn.send(data)

        async def close(self, timeout: float | None = None) -> None:
            await self._conn.close(timeout)


class PicowsTransport:
    """Opens connections with picows."""

    name = "picows"

    def __init__(self) -> None:
        if _picows is None:
            raise TransportUnavailable("picows", "picows")

    def prepare(self, options: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
        """Refuse websockets-only options now, at ``connect()``, not at the first open."""
        picows_options(options, redactor)
        return options

    async def open(self, url: str, options: dict[str, Any], redactor: Redactor) -> Link:
        assert _picows is not None
        shown = redactor.url(url)
        kwargs = picows_options(options, redactor)
        url, headers = _move_credentials(url, kwargs.get("extra_headers"), redactor)
        if headers is not None:
            kwargs["extra_headers"] = headers
        max_size = int(kwargs["max_frame_size"])
        open_timeout = options.get("open_timeout", 10.0)
        close_timeout = float(options.get("close_timeout") or 10.0)
        factory: Callable[[], Any] = lambda: _Listener(max_size)  # noqa: E731
        sockets: list[socket.socket] = []
        kwargs["socket_factory"] = _socket_factory(sockets)
        try:
            transport, listener = await asyncio.wait_for(
                _picows.ws_connect(factory, url, **kwargs), open_timeout
            )
        except _picows.WSHandshakeError as exc:
            response = getattr(exc, "response", None)
            if response is not None and int(response.status) != 101:
                raise HandshakeRejected(shown, int(response.status)) from None
            raise ConnectionFailed(shown, f"handshake failed: {redactor(str(exc))}") from None
        except ssl.SSLCertVerificationError as exc:
            raise certificate_error(shown, exc, redactor) from None
        except ssl.SSLError as exc:
            raise ConnectionFailed(shown, f"TLS error: {redactor(str(exc))}") from None
        except asyncio.TimeoutError:
            _shut(sockets)
            raise ConnectionFailed(
                shown, f"timed out after {open_timeout} s during the opening handshake"
            ) from None
        except _picows.WSError as exc:
            raise ConnectionFailed(shown, f"{type(exc).__name__}: {redactor(str(exc))}") from None
        except OSError as exc:
            raise ConnectionFailed(shown, redactor(exc.strerror or str(exc))) from None
        except BaseException:  # cancelled
            _shut(sockets)
            raise
        if not isinstance(listener, _Listener):
            # picows hands back no listener when the link closed before the upgrade
            # response (a proxy whose upstream is down, a server going away).
            with contextlib.suppress(Exception):
                transport.disconnect(graceful=False)
            raise ConnectionFailed(shown, "the connection closed during the opening handshake")
        return PicowsLink(transport, listener, close_timeout, redactor)

    def wrap(self, connection: Any, redactor: Redactor) -> Link:
        return WebsocketsLink(connection, redactor)
