"""``rxws.connect``: a cold Observable whose every subscription is one websocket connection.

::

    connect(url) ──subscribe──> Connecting ─> open ─> on_open(conn) ─> Connected
                                 ──msg──msg──msg──| (1000/1001)      completes
                                 ──msg──msg──X    (other close)      ConnectionLost
                                 X                (upgrade refused)  HandshakeRejected

Disposing the subscription closes the socket. Each frame is parsed with ``parse``; a
frame that fails to parse is skipped, counted and reported through ``on_error``, and the
stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import reactivex
from reactivex import abc
from reactivex.disposable import Disposable

from ._observers import unwrap
from ._redact import Redactor
from ._signal import OpenSignal, claim_open_signal, opening
from .codec import bytes_parser, direct_parser, parse_json
from .errors import ConnectionFailed, ConnectionLost, NoRunningLoop, ParseError, RxwsError
from .events import ClosedBy, Connected, Connecting, Disconnected, Event
from .transports import Link, Transport, get_transport
from .transports.base import FrameHandler, TextBytesHandler
from .transports.websockets import connection_is_open, send_on

__all__ = [
    "OnOpen",
    "UrlSource",
    "check_connect",
    "connect",
    "connection_is_open",
    "describe_url",
    "send_on",
]

log = logging.getLogger("rxws.source")

OnOpen = Callable[[Any], Awaitable[None]]
"""``async (connection) -> None``: runs on each new connection before messages flow."""

UrlSource = str | Callable[[], Awaitable[Any]]
"""A ws:// or wss:// URL, or an async callable returning one (or an open connection)."""

DISPOSE_CLOSE_TIMEOUT = 1.0
"""Seconds a disposed connection waits for the peer's close frame before dropping TCP."""

# Strong references to running connection tasks, so none is garbage-collected mid-flight.
_TASKS: set[asyncio.Task[None]] = set()


def _check_url_string(url: str, shown: str) -> None:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss") or not rest or rest.startswith("/"):
        raise ValueError(
            f"url must be a ws:// or wss:// URL with a host, or an async callable "
            f"returning one; got {shown!r}"
        )


def describe_url(url: object) -> str:
    """A redacted description of ``url`` for messages (the string itself if it is one)."""
    if isinstance(url, str):
        return Redactor(url).url(url)
    return f"{type(url).__name__} {getattr(url, '__qualname__', '')}".strip()


def _check_url(url: object) -> None:
    if isinstance(url, str):
        _check_url_string(url, describe_url(url))
    elif not callable(url):
        raise ValueError(
            "url must be a ws:// or wss:// URL string, or an async callable returning one "
            f"(or an open connection); got {type(url).__name__} {url!r}"
        )


def _is_connection(obj: object) -> bool:
    return all(callable(getattr(obj, name, None)) for name in ("recv", "send", "close"))


class _Session:
    """One subscription's connection: open, run, close, report."""

    def __init__(
        self,
        url: UrlSource,
        transport: Transport,
        options: dict[str, Any],
        redactor: Redactor,
        parse: Callable[[Any], Any] | None,
        on_open: OnOpen | None,
        on_event: Callable[[Event], None] | None,
        on_error: Callable[[Exception], None] | None,
        observer: abc.ObserverBase[Any],
        opened: OpenSignal | None = None,
    ) -> None:
        self.url = url
        self.transport = transport
        self.options = options
        self.redactor = redactor
        self.parse = parse
        self.on_open = on_open
        self.on_event = on_event
        self.on_error = on_error
        self.observer = observer
        self.opened = opened  # fired once open and past on_open (rxws.ops.rotate waits on it)
        self.link: Link | None = None
        self.shown = redactor.url(url) if isinstance(url, str) else ""
        self.failed_in_burst = 0

    def _event(self, event: Event) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                log.exception("an on_event callback raised; ignored")

    async def _open(self) -> Link:
        url = self.url
        if isinstance(url, str):
            return await self.transport.open(url, self.options, self.redactor)
        try:
            got = await url()
        except RxwsError:
            raise
        except Exception as exc:
            raise ConnectionFailed(
                "the url callable",
                f"it raised {type(exc).__name__}: {self.redactor(str(exc))}",
                "fix what the url callable does (reconnect retries this)",
            ) from exc
        if isinstance(got, str):
            self.redactor.add_url(got)
            self.shown = self.redactor.url(got)
            _check_url_string(got, self.shown)
            return await self.transport.open(got, self.options, self.redactor)
        if _is_connection(got):
            return self.transport.wrap(got, self.redactor)
        raise ValueError(
            "the url callable must return a ws:// or wss:// URL string or an open "
            f"connection (with async recv, send and close); it returned {type(got).__name__}"
        )

    def _frame_handler(self) -> FrameHandler:
        """What the link calls with each frame: parse, then the subscriber's ``on_next``.

        The subscriber's own handler is called directly, after the stop check its
        ``AutoDetachObserver`` would make (nothing is delivered after ``on_error``,
        ``on_completed`` or dispose); what it raises goes to the link, as before.
        """
        parse = self.parse
        if parse is None:
            return self.observer.on_next
        parse = direct_parser(parse)
        on_next, guard = unwrap(self.observer)

        def on_frame(frame: Any) -> None:
            try:
                msg = parse(frame)
            except Exception as exc:
                self._parse_failed(exc, frame)
                return
            if self.failed_in_burst:
                self._burst_over()
            if not guard.is_stopped:
                on_next(msg)

        return on_frame

    def _text_bytes_handler(self, on_frame: FrameHandler) -> TextBytesHandler | None:
        """For a parser that reads UTF-8 bytes (orjson): a text frame parsed undecoded.

        None for any other parser. Bytes that do not parse are decoded here and handed
        to ``on_frame``, which parses the text again and reports the error as for any
        frame; bytes that do not decode are reported back to the link (1007).
        """
        loads = bytes_parser(self.parse) if self.parse is not None else None
        if loads is None:
            return None
        on_next, guard = unwrap(self.observer)

        def on_text_bytes(data: bytes) -> bool:
            try:
                msg = loads(data)
            except Exception:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    return True
                on_frame(text)
                return False
            if self.failed_in_burst:
                self._burst_over()
            if not guard.is_stopped:
                on_next(msg)
            return False

        return on_text_bytes

    async def _run(self, link: Link) -> None:
        """Push the link's frames through the frame handler until the link closes."""
        on_frame = self._frame_handler()
        on_text_bytes = self._text_bytes_handler(on_frame)
        run_text_bytes = getattr(link, "run_text_bytes", None)
        if on_text_bytes is not None and run_text_bytes is not None:
            await run_text_bytes(on_frame, on_text_bytes)
        else:
            await link.run(on_frame)

    def _parse_failed(self, exc: Exception, frame: Any) -> None:
        error = ParseError(exc, len(frame))
        # A parser may quote the frame, and a server may echo a secret (a listen key).
        error.detail = self.redactor(error.detail)
        error.args = (str(error),)
        if not self.failed_in_burst:
            log.warning("%s", error)
        self.failed_in_burst += 1
        if self.on_error is not None:
            self.on_error(error)

    def _burst_over(self) -> None:
        if self.failed_in_burst > 1:
            log.warning("%d frames in a row failed to parse and were skipped", self.failed_in_burst)
        self.failed_in_burst = 0

    async def run(self) -> None:
        observer = self.observer
        self._event(Connecting(self.shown))
        outcome: Exception | None = None
        cancelled = False
        try:
            self.link = link = await self._open()
            if self.on_open is not None:
                try:
                    with opening(self.opened):
                        await self.on_open(link.connection)
                except Exception as exc:
                    raise ConnectionFailed(
                        self.shown or "the connection",
                        f"on_open raised {type(exc).__name__}: {self.redactor(str(exc))}",
                        "fix what on_open does (reconnect retries this)",
                    ) from exc
            log.debug("connected to %s", self.shown)
            if self.opened is not None:
                self.opened.fire()
            self._event(Connected(self.shown))
            await self._run(link)
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:
            outcome = exc
        finally:
            try:
                if self.link is not None:
                    # A subscriber that let go (a rotation, an idle timeout, close())
                    # does not wait long for a peer that may be dead.
                    await self.link.close(DISPOSE_CLOSE_TIMEOUT if cancelled else None)
            except asyncio.CancelledError:
                cancelled = True
                raise
            finally:
                if cancelled:
                    self._event(Disconnected("closed by the subscriber", closed_by="client"))
        if self.failed_in_burst:
            self._burst_over()
        if outcome is None:
            log.debug("%s closed normally", self.shown)
            self._event(Disconnected("closed normally by the server", closed_by="server"))
            observer.on_completed()
        else:
            reason = self.redactor(str(outcome))
            log.debug("connection to %s ended: %s", self.shown, reason)
            by: ClosedBy = (
                "server"
                if isinstance(outcome, ConnectionLost) and outcome.code is not None
                else "network"
            )
            self._event(Disconnected(reason, outcome, closed_by=by))
            observer.on_error(outcome)


def _task_done(task: asyncio.Task[None]) -> None:
    _TASKS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("a connection task failed", exc_info=task.exception())


def check_connect(
    url: UrlSource, transport: str | Transport, connect_kwargs: dict[str, Any]
) -> tuple[Transport, dict[str, Any], Redactor]:
    """Check what :func:`connect` is given, as it does when called.

    Returns:
        The transport, the options it opens connections with, and the redactor for
        this URL and its headers.

    Raises:
        ValueError: ``url`` is neither a ws/wss URL nor a callable, or an option is
            one the transport cannot honour.
        TypeError: ``transport`` is neither a name nor a transport.
    """
    _check_url(url)
    chosen = get_transport(transport)
    redactor = Redactor(
        url if isinstance(url, str) else None, connect_kwargs.get("additional_headers")
    )
    return chosen, chosen.prepare(connect_kwargs, redactor), redactor


def connect(
    url: UrlSource,
    *,
    parse: Callable[[Any], Any] | None = parse_json,
    on_open: OnOpen | None = None,
    on_event: Callable[[Event], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    transport: str | Transport = "websockets",
    **connect_kwargs: Any,
) -> reactivex.Observable[Any]:
    """A cold Observable of a websocket's messages: one subscription, one connection.

    Args:
        url: A ``ws://`` or ``wss://`` URL, or an async callable called at each connect
            that returns such a URL (for example with a freshly fetched listen key) or an
            already open connection (anything with async ``recv``, ``send`` and ``close``).
        parse: Applied to every frame; ``None`` passes raw ``str``/``bytes``. A frame
            that fails to parse is skipped and reported as :class:`rxws.ParseError`.
        on_open: ``async (connection) -> None``, awaited on every new connection before
            its messages flow: subscribe or authenticate here. If it raises, the
            connection counts as failed (:class:`rxws.ConnectionFailed`).
        on_event: Called with each :mod:`rxws.events` event of this connection.
        on_error: Called with each non-fatal error (:class:`rxws.ParseError`).
        transport: Which transport opens the connection: a name (``"websockets"``,
            ``"picows"``) or a :class:`rxws.transports.Transport` object.
        **connect_kwargs: Passed to ``websockets.asyncio.client.connect``: ``ssl``,
            ``additional_headers``, ``ping_interval``, ``ping_timeout``, ``max_size``,
            ``proxy``, ``open_timeout``, ...

    Returns:
        An Observable that completes when the server closes normally (1000/1001) and
        errors with :class:`rxws.ConnectionLost` on any other close, with
        :class:`rxws.HandshakeRejected` when the upgrade is refused, and with
        :class:`rxws.ConnectionFailed` when no connection could be made. Disposing
        the subscription closes the socket.

    Raises:
        ValueError: ``url`` is neither a ws/wss URL nor a callable.

    Example:
        >>> source = connect("wss://stream.example.com/ws")  # nothing happens yet
    """
    chosen, options, redactor = check_connect(url, transport, connect_kwargs)

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise NoRunningLoop(
                "rxws.connect(...)",
                "subscribe to it from inside a running loop (an async def run by asyncio.run)",
            ) from None
        session = _Session(
            url,
            chosen,
            options,
            redactor,
            parse,
            on_open,
            on_event,
            on_error,
            observer,
            claim_open_signal(),
        )
        task = loop.create_task(session.run(), name=f"rxws.connect {session.shown}")
        _TASKS.add(task)
        task.add_done_callback(_task_done)

        def dispose() -> None:
            task.cancel()

        return Disposable(dispose)

    return reactivex.create(subscribe)
