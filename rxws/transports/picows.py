"""The picows transport: frames pushed from picows's callbacks, no await per message.

picows (a Cython websocket client for asyncio, ``pip install 'rxws[picows]'``) calls
a listener for every frame; this module turns those calls into the :class:`Link`
interface of :mod:`rxws.transports.base`, so everything above ``rxws.source`` works the
same on either transport. Close codes, refused handshakes, dead links and TLS errors
map to the same rxws errors as with websockets.

picows parses frames and leaves the protocol's rules to its user, so the listener
here enforces what websockets enforces, with the same close codes: reserved bits set
(1002), a new message inside a fragmented one or a stray continuation (1002), an
invalid close code (1002), invalid UTF-8 (1007), a message over ``max_size`` or in
more fragments than websockets accepts (1009). A close frame without a status code
is a normal close, as with websockets. Fragments are collected in a list and joined
once (text decoded incrementally, so invalid UTF-8 fails at once).

websockets options that mean something here are translated (``ssl``,
``additional_headers``, ``max_size``, ``ping_interval``, ``ping_timeout``,
``open_timeout``, ``close_timeout``, ``proxy``, ``logger``, ``subprotocols``); the
others (``compression`` other than ``None``, ``origin``, ...) are refused with a
ValueError that names them.

Keepalive follows websockets exactly (a ping every ``ping_interval`` seconds, the
connection failed with 1011 when no pong comes within ``ping_timeout``, never when it
is ``None``) and is done here rather than by picows's auto-ping: picows pings only
after ``auto_ping_idle_timeout`` seconds without data and asserts that its reply
timeout is at most that idle timeout, so ``ping_interval=5`` with the default
``ping_timeout=20``, or ``ping_timeout=None``, cannot be expressed with it.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import logging
import random
import re
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .._redact import RedactingLogger, Redactor, header_items
from ..errors import (
    ConnectionFailed,
    ConnectionLost,
    HandshakeRejected,
    TransportUnavailable,
)
from .base import (
    FrameHandler,
    Link,
    TextBytesHandler,
    certificate_error,
    close_transport,
    os_error_reason,
)
from .websockets import WebsocketsLink

try:  # the fragment limit websockets applies (it reads WEBSOCKETS_MAX_FRAGMENTS)
    from websockets.asyncio.messages import MAX_FRAGMENTS
except ImportError:  # pragma: no cover - depends on the websockets version
    MAX_FRAGMENTS = 4096

__all__ = ["MAX_FRAGMENTS", "PicowsTransport", "picows_options"]

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
    "subprotocols": None,
}
# Close codes after which Link.run returns (websockets' ConnectionClosedOK): 1005 is
# what a close frame without a status code stands for.
_NORMAL_CLOSE = (1000, 1001, 1005)
# The close codes a peer may send (RFC 6455 7.4, as websockets checks them).
_SENDABLE_CLOSE = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")  # an HTTP token (RFC 9110 5.6.2)
_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class _NegotiationError(Exception):
    """The server's opening handshake answer does not fit the request (subprotocol)."""


class _PicowsLogger(RedactingLogger):
    """The redacting logger handed to picows, with its ERROR lines logged as WARNING.

    picows logs a peer's protocol violation (a frame over ``max_size``, bad framing)
    at ERROR; rxws handles those (``ConnectionLost`` with the close code, then
    reconnect), so for rxws they are warnings, as they are with websockets.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log one record, at WARNING at most."""
        super().log(min(level, logging.WARNING), msg, *args, **kwargs)


def _subprotocols(options: dict[str, Any]) -> list[str] | None:
    """The ``subprotocols`` option, checked as websockets checks it.

    Raises:
        TypeError: It is not a list.
        ValueError: A name is not an HTTP token.
    """
    offered = options.get("subprotocols")
    if offered is None:
        return None
    if isinstance(offered, (str, bytes)) or not isinstance(offered, Sequence):
        raise TypeError(
            f"subprotocols must be a list of names, not {type(offered).__name__}: "
            "write subprotocols=['name']"
        )
    for name in offered:
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid subprotocol {name!r}: use letters, digits and -._~ only")
    return list(offered)


def _keepalive(options: dict[str, Any]) -> tuple[float, float | None] | None:
    """``(ping_interval, ping_timeout)`` as websockets reads them, or None: no pings."""
    interval = options.get("ping_interval", 20.0)
    if interval is None:
        return None
    timeout = options.get("ping_timeout", 20.0)
    return float(interval), None if timeout is None else float(timeout)


def picows_options(options: dict[str, Any], redactor: Redactor) -> dict[str, Any]:
    """Translate websockets-style connect options into picows ``ws_connect`` arguments.

    Keepalive and subprotocols are left out: the listener does the pings, and
    :meth:`PicowsTransport.open` sends and checks the subprotocols.

    Raises:
        ValueError: An option has no picows equivalent (the message names it), or a
            subprotocol name is invalid.
        TypeError: ``subprotocols`` is not a list.
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
    _subprotocols(options)
    out: dict[str, Any] = {}
    for key, target in _TRANSLATED.items():
        if target is not None and options.get(key) is not None:
            out[target] = options[key]
    if out.get("ssl_context") is True:
        out["ssl_context"] = ssl.create_default_context()
    if options.get("proxy") is True:  # websockets' "from the environment": not here
        out.pop("proxy")
    # Pings are answered by the listener, after it checked the frame's reserved bits.
    out["enable_auto_pong"] = False
    max_size = options.get("max_size", 2**20)
    out["max_frame_size"] = 2**62 if max_size is None else max_size
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


def _close_code(code: Any) -> int:
    """A close code from picows (an enum member or an int) as an int."""
    return int(code.value if hasattr(code, "value") else code)


def _check_subprotocol(offered: list[str] | None, response: Any) -> str | None:
    """The subprotocol the server chose, checked as websockets checks it.

    Raises:
        _NegotiationError: The server chose none of ``offered``, or several.
    """
    headers = getattr(response, "headers", None)
    values = headers.getall("Sec-WebSocket-Protocol", []) if headers is not None else []
    chosen = [n.strip() for value in values for n in str(value).split(",") if n.strip()]
    if not chosen:
        return None
    if offered is None:
        raise _NegotiationError("NegotiationError: no subprotocols supported")
    if len(chosen) > 1:
        raise _NegotiationError(
            "InvalidHeader: invalid Sec-WebSocket-Protocol header: "
            f"multiple values: {', '.join(chosen)}"
        )
    if chosen[0] not in offered:
        raise _NegotiationError(f"NegotiationError: unsupported subprotocol: {chosen[0]}")
    return chosen[0]


if _picows is not None:
    _TEXT = _picows.WSMsgType.TEXT
    _BINARY = _picows.WSMsgType.BINARY
    _CONTINUATION = _picows.WSMsgType.CONTINUATION
    _CLOSE = _picows.WSMsgType.CLOSE
    _PING = _picows.WSMsgType.PING

    class _Listener(_picows.WSListener):  # type: ignore[misc, unused-ignore]
        """Receives picows's callbacks for one connection and enforces the protocol.

        Args:
            max_size: The largest message accepted, in bytes (None: no limit).
            close_timeout: How long to wait for the server to end the TCP connection
                after the closing handshake, in seconds.
            keepalive: ``(ping_interval, ping_timeout)``, or None for no pings.
            subprotocol: The subprotocol the server chose, if any.
        """

        # Slots, not a ``__dict__``: an attribute of an instance dict of a subclass of
        # picows's (Cython) WSListener takes the interpreter's generic, slow lookup,
        # which ``on_ws_frame`` would pay for every frame.
        __slots__ = (
            "_drop",
            "_pinger",
            "close_timeout",
            "closing",
            "decoder",
            "deliver",
            "early",
            "failure",
            "keepalive",
            "max_size",
            "on_frame",
            "parts",
            "ping_payload",
            "pong",
            "received",
            "size",
            "subprotocol",
            "text_bytes",
            "transport",
        )

        def __init__(
            self,
            max_size: int | None,
            close_timeout: float,
            keepalive: tuple[float, float | None] | None,
            subprotocol: str | None,
        ) -> None:
            self.on_frame: FrameHandler | None = None
            # on_frame, or None while a fragmented message is being put together.
            self.deliver: FrameHandler | None = None
            # Takes whole text frames undecoded, when the frame handler reads bytes.
            self.text_bytes: TextBytesHandler | None = None
            self.early: list[Any] = []  # frames that came before run() started
            # The fragments of the message being put together (None: not inside one);
            # the decoder of a text message.
            self.parts: list[Any] | None = None
            self.decoder: codecs.IncrementalDecoder | None = None
            self.size = 0
            self.max_size = sys.maxsize if max_size is None else max_size
            self.close_timeout = close_timeout
            self.keepalive = keepalive
            self.subprotocol = subprotocol
            self.failure: BaseException | None = None
            self.received: tuple[int, str] | None = None  # the peer's close (code, reason)
            self.closing = False  # whether rxws started closing (not picows)
            self.transport: Any = None
            self.ping_payload = b""
            self.pong: asyncio.Future[None] | None = None
            self._pinger: asyncio.Task[None] | None = None
            self._drop: asyncio.TimerHandle | None = None

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport
            if self.keepalive is not None:
                self._pinger = asyncio.get_running_loop().create_task(
                    self._ping(transport, *self.keepalive), name="rxws picows keepalive"
                )

        def on_ws_disconnected(self, transport: Any) -> None:
            if self._pinger is not None:
                self._pinger.cancel()
            if self._drop is not None:
                self._drop.cancel()

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            # The hot path: a whole text or binary frame, handed to ``deliver``.
            if transport.is_close_frame_sent and not self._came_before_error(frame):
                if frame.msg_type is _CLOSE:
                    self._on_close(transport, frame)
                return
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                self._fail(transport, 1002, "reserved bits must be 0")
                return
            kind = frame.msg_type
            deliver = self.deliver
            if kind is _TEXT and frame.fin and deliver is not None:
                text_bytes = self.text_bytes
                if text_bytes is not None:
                    try:
                        invalid = text_bytes(frame.get_payload_as_bytes())
                    except BaseException as exc:
                        self._subscriber_failed(transport, exc)
                        return
                    if invalid:
                        self._fail(transport, 1007, "invalid UTF-8 in a text frame")
                    return
                try:
                    payload: Any = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self._fail(transport, 1007, "invalid UTF-8 in a text frame")
                    return
            elif kind is _BINARY and frame.fin and deliver is not None:
                payload = frame.get_payload_as_bytes()
            else:
                self._other_frame(transport, frame, kind)
                return
            try:
                deliver(payload)
            except BaseException as exc:
                self._subscriber_failed(transport, exc)

        def start(
            self, on_frame: FrameHandler, on_text_bytes: TextBytesHandler | None = None
        ) -> None:
            """Hand the frames that came before over to ``on_frame``, then every next one.

            With ``on_text_bytes``, whole text frames go to it undecoded.
            """
            early, self.early = self.early, []
            for payload in early:
                on_frame(payload)
            self.on_frame = on_frame
            self.text_bytes = on_text_bytes
            if self.parts is None:
                self.deliver = on_frame

        def _other_frame(self, transport: Any, frame: Any, kind: Any) -> None:
            """Any frame but a whole text or binary one outside a fragmented message."""
            if kind is _TEXT or kind is _BINARY or kind is _CONTINUATION:
                payload = self._assemble(transport, frame, kind)
                if payload is None:
                    return
                on_frame = self.on_frame
                if on_frame is None:
                    self.early.append(payload)
                    return
                try:
                    on_frame(payload)
                except BaseException as exc:
                    self._subscriber_failed(transport, exc)
            elif kind is _CLOSE:
                self._on_close(transport, frame)
            elif kind is _PING:
                transport.send_pong(frame.get_payload_as_bytes())
            else:  # PONG
                self._on_pong(frame)

        def _subscriber_failed(self, transport: Any, exc: BaseException) -> None:
            """A subscriber raised: end the connection (run() raises ``exc``)."""
            self.failure = exc
            self.closing = True
            if not transport.is_close_frame_sent:
                transport.send_close(_picows.WSCloseCode.INTERNAL_ERROR)
            transport.disconnect()

        def _came_before_error(self, frame: Any) -> bool:
            """Whether a data frame that comes after a close frame went out is delivered.

            When rxws started closing (a close(), a failure), nothing more is. picows
            parses one frame ahead: when it finds an error in the next frame of a read,
            it sends its close frame, then hands over the frame before the error, with
            the bad frame's bytes after it (``tail_size``). websockets delivers such a
            frame, and so does this. What picows hands over later (the rest of a frame
            over ``max_size``, frames after a bad close frame) is not delivered.
            """
            if self.closing:
                return False
            self.closing = True
            kind = frame.msg_type
            return bool(
                frame.tail_size > 0
                and kind is not _CLOSE
                and kind is not _PING
                and frame.payload_size <= self.max_size
            )

        def _assemble(self, transport: Any, frame: Any, kind: Any) -> Any:
            """Add one fragment; the whole message after the last one, else None."""
            parts = self.parts
            if kind is _CONTINUATION:
                if parts is None:
                    self._fail(transport, 1002, "unexpected continuation frame")
                    return None
                if len(parts) >= MAX_FRAGMENTS:
                    self._fail(transport, 1009, "too many fragments")
                    return None
            elif parts is not None:
                self._fail(transport, 1002, "expected a continuation frame")
                return None
            else:
                parts = self.parts = []
                self.deliver = None
                self.size = 0
                self.decoder = _utf8_decoder() if kind is _TEXT else None
            self.size += frame.payload_size
            if self.size > self.max_size:
                self._fail(transport, 1009, f"message over {self.max_size} bytes")
                return None
            fin = bool(frame.fin)
            decoder = self.decoder
            if decoder is None:
                parts.append(frame.get_payload_as_bytes())
            else:
                try:
                    parts.append(decoder.decode(frame.get_payload_as_bytes(), fin))
                except UnicodeDecodeError:
                    self._fail(transport, 1007, "invalid UTF-8 in a text message")
                    return None
            if not fin:
                return None
            self.parts = self.decoder = None
            self.deliver = self.on_frame
            return "".join(parts) if decoder is not None else b"".join(parts)

        def _on_close(self, transport: Any, frame: Any) -> None:
            """The peer's close frame: check it, answer it, let the peer end the TCP link."""
            if self.received is not None:  # a second one (picows may not notice it)
                return
            if frame.payload_size == 0:
                code, reason = 1005, ""  # no status code: a normal close
            else:
                code = _close_code(frame.get_close_code())
                if code not in _SENDABLE_CLOSE and not 3000 <= code < 5000:
                    self._fail(transport, 1002, "invalid status code")
                    return
                reason = frame.get_close_reason() or ""
            self.received = (code, reason)
            self.closing = True
            if not transport.is_close_frame_sent:
                # Echo the code (1000 for a close without one), as websockets does.
                transport.send_close(1000 if code == 1005 else code, reason.encode())
            self._drop_later(transport)

        def _on_pong(self, frame: Any) -> None:
            pong = self.pong
            if (
                pong is not None
                and not pong.done()
                and frame.get_payload_as_bytes() == self.ping_payload
            ):
                pong.set_result(None)

        async def _ping(self, transport: Any, interval: float, timeout: float | None) -> None:
            """Send a ping every ``interval`` s; fail with 1011 if a pong is late."""
            loop = asyncio.get_running_loop()
            latency = 0.0
            while True:
                await asyncio.sleep(max(interval - latency, 0.0))
                if transport.is_close_frame_sent or transport.is_disconnected:
                    return
                self.ping_payload = random.getrandbits(32).to_bytes(4, "big")
                self.pong = loop.create_future()
                sent = loop.time()
                transport.send_ping(self.ping_payload)
                if timeout is None:
                    continue
                try:
                    await asyncio.wait_for(self.pong, timeout)
                except asyncio.TimeoutError:
                    self._fail(transport, 1011, "keepalive ping timeout")
                    return
                latency = loop.time() - sent

        def _fail(self, transport: Any, code: int, reason: str) -> None:
            """Fail the connection with ``code``, as websockets does on a protocol error."""
            if not transport.is_close_frame_sent:
                self.failure = ConnectionLost(code, reason)
                transport.send_close(code, reason.encode())
            self.closing = True
            self._drop_later(transport)

        def _drop_later(self, transport: Any) -> None:
            """End the TCP connection unless the server does so within ``close_timeout``."""
            if self._drop is None and not transport.is_disconnected:
                self._drop = asyncio.get_running_loop().call_later(
                    self.close_timeout, transport.disconnect, False
                )

    class PicowsConnection:
        """What ``on_open`` and ``client.present`` get on the picows transport.

        Attributes:
            transport: picows's ``WSTransport``, for what this class does not cover.
            subprotocol: The subprotocol the server chose, or None (as websockets'
                ``connection.subprotocol``).
        """

        def __init__(self, transport: Any, listener: _Listener, close_timeout: float) -> None:
            self.transport = transport
            self.subprotocol: str | None = listener.subprotocol
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
                self.transport.send(_TEXT, data.encode())
            else:
                self.transport.send(_BINARY, data)

        async def close(self, timeout: float | None = None) -> None:
            """Close normally (1000) and wait until the TCP connection is closed.

            Args:
                timeout: Longest wait for the peer's answer, in seconds (default: the
                    ``close_timeout`` connect option), after which the TCP connection
                    is dropped.
            """
            limit = self._close_timeout if timeout is None else min(timeout, self._close_timeout)
            transport = self.transport
            self._listener.closing = True
            try:
                if not transport.is_disconnected:
                    if not transport.is_close_frame_sent:
                        transport.send_close(_picows.WSCloseCode.OK)
                    try:
                        await asyncio.wait_for(asyncio.shield(transport.wait_disconnected()), limit)
                    except Exception:  # timed out, or the link broke meanwhile
                        transport.disconnect(graceful=False)
                with contextlib.suppress(Exception):  # a failure is reported by run()
                    await transport.wait_disconnected()
            except BaseException:
                # Cancelled (again) while waiting for the peer: drop the TCP connection.
                transport.disconnect(graceful=False)
                raise
            close_transport(getattr(transport, "underlying_transport", None))

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
            await self.run_text_bytes(on_frame, None)

        async def run_text_bytes(
            self, on_frame: FrameHandler, on_text_bytes: TextBytesHandler | None
        ) -> None:
            """:meth:`run`, with whole text frames handed to ``on_text_bytes`` undecoded."""
            listener = self._listener
            listener.start(on_frame, on_text_bytes)
            error: BaseException | None = None
            try:
                await self._transport.wait_disconnected()
            except Exception as exc:
                error = exc
            # What went wrong first: the listener's own finding, then the peer's close
            # (picows may complain about frames after it, which websockets ignores),
            # then what picows found.
            if listener.failure is not None:
                raise self._lost(listener.failure)
            if listener.received is not None:
                code, reason = listener.received
                if code in _NORMAL_CLOSE:
                    return
                raise ConnectionLost(code, self._redactor(reason))
            if error is not None:
                raise self._lost(error)
            raise ConnectionLost(None, "the TCP connection broke without a close frame")

        def _lost(self, failure: BaseException) -> BaseException:
            """What :meth:`run` raises for a connection that ended with ``failure``."""
            assert _picows is not None
            if isinstance(failure, ConnectionLost):
                return ConnectionLost(failure.code, self._redactor(failure.reason))
            if isinstance(failure, _picows.WSProtocolError):
                # picows found the server breaking the protocol (a frame over max_size,
                # bad framing) and closed with that code: the same as websockets reports.
                args = failure.args
                code = args[0] if args else 1002
                reason = args[1] if len(args) > 1 else ""
                return ConnectionLost(_close_code(code), self._redactor(str(reason)))
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
        """Open a connection with picows."""
        assert _picows is not None
        shown = redactor.url(url)
        kwargs = picows_options(options, redactor)
        url, headers = _move_credentials(url, kwargs.get("extra_headers"), redactor)
        if headers is not None:
            kwargs["extra_headers"] = headers
        offered = _subprotocols(options)
        if offered:
            pairs = [*header_items(kwargs.get("extra_headers"))]
            pairs.append(("Sec-WebSocket-Protocol", ", ".join(offered)))
            kwargs["extra_headers"] = pairs
        max_size = options.get("max_size", 2**20)
        keepalive = _keepalive(options)
        open_timeout = options.get("open_timeout", 10.0)
        close_timeout = float(options.get("close_timeout") or 10.0)

        def factory(request: Any, response: Any) -> _Listener:
            chosen = _check_subprotocol(offered, response)
            return _Listener(max_size, close_timeout, keepalive, chosen)

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
        except _NegotiationError as exc:
            raise ConnectionFailed(shown, redactor(str(exc))) from None
        except OSError as exc:
            raise ConnectionFailed(shown, redactor(os_error_reason(exc))) from None
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
        """Adopt a connection someone else opened (a websockets one or a look-alike)."""
        return WebsocketsLink(connection, redactor)
