"""The collector behind ``rxws relay`` and the reader behind ``rxws listen nats://``.

:func:`relay` reads a websocket feed through a :class:`rxws.WebSocketClient`
(reconnect, rotation, and with ``topics`` the topics sharded over as many connections
as the limits require) and publishes every message to NATS through
:func:`rxws.nats.publish`, until it is stopped::

    code = await relay(
        "wss://stream.example.com/stream",
        nats_url="nats://127.0.0.1:4222",
        subject="md.{s}",
        msg_id="{seq}",          # Nats-Msg-Id: two relays hot-hot store each message once
        stream="MD",             # JetStream, created when missing
        topics=["btcusdt@trade", "ethusdt@trade"],
    )

:func:`listen_nats` prints the messages of a NATS subject (or replays a JetStream
stream) as JSON lines, with the filters of ``rxws listen``.

Both connect to NATS before anything else and raise :class:`NatsUnreachable` when it
cannot be reached; both write a status line every second through ``status`` and one-off
news (connected, dropped, NATS away and back, errors) through ``news``; both stop on
``stop`` being set or on SIGINT/SIGTERM, and leave no task, connection or signal
handler behind. This module needs the ``nats`` extra, like :mod:`rxws.nats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import string
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

import reactivex
from reactivex import Observable, abc
from reactivex import operators as rx_ops
from reactivex.disposable import CompositeDisposable

from . import nats as rx_nats
from ._redact import MASK, Redactor
from .client import WebSocketClient
from .codec import dump_json, parse_json
from .events import Connected, Disconnected, Event, Failed, Rotated
from .filters import Filters, compile_filters, matches
from .protocols import Binance, Subscriptions

# isort: split
# After rxws.nats, which says which pip command to run when nats-py is missing.
import nats.errors as _nats_errors  # type: ignore[import-not-found, unused-ignore]
import nats.js.errors as _js_errors  # type: ignore[import-not-found, unused-ignore]
from nats.aio.client import Client  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "NatsUnreachable",
    "Relay",
    "connect_nats",
    "listen_nats",
    "parse_combined",
    "relay",
    "shown_nats_url",
    "stream_subjects",
]

Line = Callable[[str | None], None]
"""Where status lines go: called with each line, and with ``None`` once at the end."""

_NATS_SCHEMES = ("nats", "tls", "ws", "wss")
_DEFAULT_NATS_OPTIONS: dict[str, Any] = {
    "connect_timeout": 2,
    "reconnect_time_wait": 0.5,
    "max_reconnect_attempts": -1,
}
# Connection attempts at start before NATS counts as unreachable (nats-py waits
# reconnect_time_wait between them).
_START_ATTEMPTS = 2
_CLOSE_SECONDS = 2.0  # longest wait for nats-py to close its connection
_ERROR_NEWS_EVERY = 1.0  # seconds between two news lines about errors


# ---------------------------------------------------------------------- NATS


class NatsUnreachable(rx_nats.NatsError):
    """NATS could not be reached when the relay or the listener started.

    Args:
        url: The NATS URL(s) tried, with credentials blanked.
        reason: What went wrong (the last connection error).
    """

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"could not connect to NATS at {url}: {reason}; check the address and that "
            "nats-server is running there"
        )


def shown_nats_url(url: str) -> str:
    """``url`` with any credentials blanked (a NATS token often stands where a user would).

    Args:
        url: A NATS URL such as ``nats://user:password@host:4222``.

    Returns:
        The URL with its user information replaced by ``***``.

    Example:
        >>> shown_nats_url("nats://s3cr3t@10.0.0.1:4222")
        'nats://***@10.0.0.1:4222'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    return f"{parts.scheme}://{netloc}{parts.path}" if parts.scheme else MASK


def _nats_urls(servers: str | Sequence[str]) -> list[str]:
    urls = [u.strip() for u in servers.split(",")] if isinstance(servers, str) else list(servers)
    if not urls:
        raise ValueError("nats_url must name at least one NATS server, such as nats://host:4222")
    for url in urls:
        try:
            parts = urlsplit(url) if isinstance(url, str) else None
            ok = parts is not None and parts.scheme in _NATS_SCHEMES and bool(parts.hostname)
            if ok and parts is not None:
                parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            ok = False
        if not ok:
            shown = shown_nats_url(url) if isinstance(url, str) else repr(url)
            raise ValueError(
                f"{shown!r} is not a NATS URL; use nats://host:port (or tls://, ws://, wss://)"
            )
    return urls


class _NatsWatch:
    """nats-py's callbacks, turned into news lines and a state for the status line."""

    def __init__(self, news: Callable[[str], None], shown: str, held: str) -> None:
        self.news = news
        self.shown = shown
        self.held = held  # what happens to messages while NATS is away, in words
        self.started = False  # past the first connection: report from now on
        self.away_since: float | None = None
        self.last_error = ""

    async def disconnected(self) -> None:
        if self.started and self.away_since is None:
            self.away_since = asyncio.get_running_loop().time()
            self.news(f"NATS: connection to {self.shown} lost; {self.held} until it is back")

    async def reconnected(self) -> None:
        if self.away_since is not None:
            away = asyncio.get_running_loop().time() - self.away_since
            self.away_since = None
            self.news(f"NATS: back after {away:.1f} s")

    async def error(self, error: Exception) -> None:
        self.last_error = _why(error)


def _why(error: BaseException) -> str:
    """What a NATS connection error means, in a few words."""
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"unknown host ({error.strerror or error})"
    if isinstance(error, (asyncio.TimeoutError, _nats_errors.TimeoutError)):
        return "no answer in time"
    text = _one_line(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def connect_nats(
    servers: str | Sequence[str],
    *,
    watch: _NatsWatch | None = None,
    **options: Any,
) -> Client:
    """Connect to NATS, failing fast when it cannot be reached, then reconnect forever.

    The first connection is tried twice (``reconnect_time_wait`` apart); after it,
    nats-py reconnects as ``max_reconnect_attempts`` says (default: forever).

    Args:
        servers: A NATS URL, several separated by commas, or a list of them.
        watch: Where nats-py's callbacks go.
        **options: Passed to ``nats.connect`` over rxws's defaults (``connect_timeout=2``,
            ``reconnect_time_wait=0.5``, ``max_reconnect_attempts=-1``).

    Returns:
        The connected nats-py client.

    Raises:
        NatsUnreachable: No server could be reached (or it refused us).
        ValueError: A URL is not a NATS URL.
    """
    urls = _nats_urls(servers)
    shown = ", ".join(shown_nats_url(url) for url in urls)
    settings = {**_DEFAULT_NATS_OPTIONS, **options}
    forever = settings["max_reconnect_attempts"]
    settings["max_reconnect_attempts"] = _START_ATTEMPTS - 1
    if watch is None:
        watch = _NatsWatch(_ignore_news, shown, "")
    settings.setdefault("disconnected_cb", watch.disconnected)
    settings.setdefault("reconnected_cb", watch.reconnected)
    settings.setdefault("error_cb", watch.error)
    redactor = Redactor()
    for url in urls:
        redactor.add_url(url)
        user = urlsplit(url).username
        if user:
            redactor.add(user)
    nc = Client()
    try:
        await nc.connect(servers=urls, **settings)
    except Exception as exc:  # nats-py raises NoServersError, OSError, timeouts, auth errors
        # NoServersError only says that the attempts are used up; the callback kept why.
        reason = redactor(watch.last_error or _why(exc))
        with contextlib.suppress(Exception):
            await nc.close()
        raise NatsUnreachable(shown, reason) from None
    nc.options["max_reconnect_attempts"] = forever
    watch.last_error = ""
    watch.started = True
    return nc


def _ignore_news(line: str) -> None:
    """News nobody asked for."""


async def _close_nats(nc: Client, watch: _NatsWatch) -> None:
    watch.started = False  # our own close is no news
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), _CLOSE_SECONDS)


def _nats_state(nc: Client) -> str:
    if nc.is_connected:
        return "connected"
    if nc.is_closed:
        return "closed"
    if nc.is_reconnecting:
        return "reconnecting"
    return "away"


def stream_subjects(subject: str) -> str:
    """The subjects a stream needs to capture what ``subject`` (a template) publishes.

    The template's text up to its first field, cut at the last ``.``, followed by ``>``.

    Args:
        subject: A subject template such as ``"md.{s}"``.

    Returns:
        A subject with a wildcard, such as ``"md.>"``; the subject itself if it has no
        field.

    Example:
        >>> stream_subjects("md.{s}.trades"), stream_subjects("md.spot.{s}"), stream_subjects("x")
        ('md.>', 'md.spot.>', 'x')
    """
    first = next(iter(string.Formatter().parse(subject)), None)
    if first is None or first[1] is None:
        return subject
    literal = first[0]
    cut = literal.rfind(".")
    return literal[:cut] + ".>" if cut >= 0 else ">"


async def _ensure_stream(nc: Client, name: str, subject: str, duplicate_window: float) -> str:
    """Create the stream when it is missing; an existing one is left as it is.

    Returns:
        What was done, in words.

    Raises:
        rxws.nats.StreamError: The stream could not be looked up or created.
    """
    try:
        await nc.jsm().stream_info(name)
    except _js_errors.NotFoundError:
        subjects = stream_subjects(subject)
        await rx_nats.ensure_stream(nc, name, subjects, duplicate_window=duplicate_window)
        return f"created the JetStream stream {name!r} on {subjects!r}"
    except (_js_errors.ServiceUnavailableError, _nats_errors.NoRespondersError) as exc:
        raise rx_nats.StreamError(
            name, "JetStream is not enabled on this NATS server (start it with -js)", exc
        ) from None
    except Exception as exc:
        raise rx_nats.StreamError(
            name, f"could not look it up: {type(exc).__name__}: {exc}", exc
        ) from None
    return f"publishing into the existing JetStream stream {name!r}"


# ---------------------------------------------------------------------- output


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _stderr_line(line: str | None) -> None:
    """The default ``status`` and ``news``: one ``rxws:`` line on stderr."""
    if line is None:
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"rxws: {line}\n")
        sys.stderr.flush()


def _rate(count: float) -> str:
    if count >= 10_000:
        return f"{count / 1000:.0f}k"
    if count >= 1000:
        return f"{count / 1000:.1f}k"
    return f"{count:.0f}"


@contextlib.contextmanager
def _stopped_by_signals(stop: asyncio.Event, enabled: bool) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` while this lasts (where the platform allows)."""
    loop = asyncio.get_running_loop()
    installed: list[tuple[signal.Signals, Any]] = []
    if enabled:
        for signum in (signal.SIGINT, signal.SIGTERM):
            before = signal.getsignal(signum)
            try:
                loop.add_signal_handler(signum, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                continue
            installed.append((signum, before))
    try:
        yield
    finally:
        for signum, before in installed:
            loop.remove_signal_handler(signum)
            # Put back what was there (asyncio.run's own SIGINT handler, say), not the
            # default that remove_signal_handler installs.
            if before is not None:
                signal.signal(signum, before)


async def _first(*events: asyncio.Event) -> None:
    """Wait until one of ``events`` is set."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)


# ---------------------------------------------------------------------- raw frames


_HEAD, _MID = '{"stream":"', '","data":'
_BHEAD, _BMID = _HEAD.encode(), _MID.encode()


def parse_combined(frame: str | bytes) -> Any:
    """Parse a Binance combined-stream frame, keeping the raw text of its ``data``.

    ``{"stream":"<topic>","data":{...}}`` becomes a dict whose ``data`` is a
    :class:`rxws.nats.Framed` holding the ``{...}`` of the frame, so the topic's payload
    is published as it came. Any other frame is parsed as :func:`rxws.nats.parse_framed`
    does. (A frame that repeats the ``data`` key is not told apart: exchanges do not.)

    Args:
        frame: The frame's payload.

    Returns:
        The parsed message.

    Raises:
        ValueError: The frame is not valid JSON.
    """
    value = parse_json(frame)
    if type(value) is not dict:
        return value
    data = value.get("data")
    if type(data) is dict and len(value) == 2:
        topic = value.get("stream")
        if isinstance(frame, str):
            if frame.startswith(_HEAD) and frame[-1:] == "}":
                at = frame.find(_MID, len(_HEAD))
                if at > 0 and frame[len(_HEAD) : at] == topic:
                    framed = rx_nats.Framed(data)
                    framed.frame = frame[at + len(_MID) : -1]
                    value["data"] = framed
                    return value
        elif frame.startswith(_BHEAD) and frame[-1:] == b"}" and isinstance(topic, str):
            at = frame.find(_BMID, len(_BHEAD))
            if at > 0 and frame[len(_BHEAD) : at] == topic.encode():
                framed = rx_nats.Framed(data)
                framed.frame = frame[at + len(_BMID) : -1]
                value["data"] = framed
                return value
    framed = rx_nats.Framed(value)
    framed.frame = frame
    return framed


def _topics_feed(
    client: WebSocketClient, names: Sequence[str], report: Callable[[Exception], None]
) -> Observable[Any]:
    """The payloads of every topic in ``names``, merged; a refused topic is reported."""

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        left = len(names)

        def one_ended() -> None:
            nonlocal left
            left -= 1
            if left == 0:
                observer.on_completed()

        def one_failed(error: Exception) -> None:
            report(error)
            one_ended()

        subscriptions = CompositeDisposable()
        for name in names:
            subscriptions.add(
                client.topic(name).subscribe(
                    observer.on_next, one_failed, one_ended, scheduler=scheduler
                )
            )
        return subscriptions

    return reactivex.create(subscribe)


def _frame(message: Any) -> str | bytes:
    return message if isinstance(message, (str, bytes)) else dump_json(message)


# ---------------------------------------------------------------------- relay


class Relay:
    """A websocket feed published to NATS; :meth:`run` it once.

    See :func:`relay` for the arguments. Built for tests and embedding: while it runs,
    :attr:`client` and :attr:`publisher` show what it does.

    Attributes:
        client: The websocket client (created with the relay).
        publisher: The :class:`rxws.nats.Publisher`, once NATS is connected.
        nc: The nats-py client while it runs.
        errors: Non-fatal errors seen so far (parse, publish, rejected topics, ...).
    """

    def __init__(
        self,
        url: Any,
        *,
        nats_url: str | Sequence[str],
        subject: str,
        msg_id: str | None = None,
        stream: str | None = None,
        topics: Iterable[str] = (),
        filters: Filters = None,
        sends: Iterable[Any] = (),
        protocol: Subscriptions | None = None,
        transport: str = "websockets",
        status: Line | None = None,
        news: Callable[[str], None] | None = None,
        stop: asyncio.Event | None = None,
        handle_signals: bool = True,
        buffer: int = 100_000,
        window: int = 4096,
        ack_timeout: float = 5.0,
        duplicate_window: float = 30.0,
        flush_timeout: float = 5.0,
        status_every: float = 1.0,
        nats_options: Mapping[str, Any] | None = None,
        **client_options: Any,
    ) -> None:
        self._nats_urls = _nats_urls(nats_url)
        if not isinstance(subject, str):
            raise TypeError(f"subject must be a str.format template, not {subject!r}")
        # Templates and numbers are checked now, not at the first message.
        rx_nats.publish(
            Client(),
            subject,
            msg_id=msg_id,
            stream=stream,
            buffer=buffer,
            window=window,
            ack_timeout=ack_timeout,
        )
        self._subject = subject
        self._msg_id = msg_id
        self._stream = stream
        self._buffer = buffer
        self._window = window
        self._ack_timeout = ack_timeout
        if not duplicate_window > 0:
            raise ValueError(f"duplicate_window must be > 0 seconds, not {duplicate_window!r}")
        self._duplicate_window = float(duplicate_window)
        for name, value in (("flush_timeout", flush_timeout), ("status_every", status_every)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        self._flush_timeout = float(flush_timeout)
        self._status_every = float(status_every)
        names = list(dict.fromkeys([topics] if isinstance(topics, str) else topics))
        for name in names:
            if not isinstance(name, str) or not name:
                raise TypeError(f"each topic must be a non-empty string, not {name!r}")
        self._topics = names
        self._keep = matches(filters) if compile_filters(filters) else None
        self._filters = filters
        frames = [_frame(item) for item in ([sends] if isinstance(sends, str) else sends)]
        if protocol is not None and not names:
            raise ValueError("protocol= needs topics=: it says how topics are subscribed")
        self._status = status if status is not None else _stderr_line
        self._news = news if news is not None else _stderr_line
        self._stop = stop
        self._handle_signals = handle_signals
        self._nats_options = dict(nats_options or {})

        user_on_open = client_options.pop("on_open", None)

        async def on_open(conn: Any) -> None:
            if user_on_open is not None:
                await user_on_open(conn)
            for frame in frames:
                await conn.send(frame)

        if names:
            protocol = protocol if protocol is not None else Binance()
            client_options.setdefault("subscriptions", protocol)
            default_parse = (
                parse_combined if isinstance(protocol, Binance) else rx_nats.parse_framed
            )
        else:
            default_parse = rx_nats.parse_framed
            # Exchanges cut connections after a day: replace it, make-before-break, first.
            client_options.setdefault("rotate_every", 12 * 3600.0)
        client_options.setdefault("parse", default_parse)
        self.client = WebSocketClient(
            url,
            on_open=on_open if frames or user_on_open is not None else None,
            transport=transport,
            **client_options,
        )
        self.publisher: rx_nats.Publisher | None = None
        self.nc: Client | None = None
        self.errors = 0
        self._ran = False
        self._connected = False
        self._failure: BaseException | None = None
        self._failed = asyncio.Event()
        self._error_news_at = float("-inf")
        self._errors_unsaid = 0
        held = (
            f"holding up to {buffer:,} messages"
            if stream is not None
            else "nats-py holds what fits its reconnect buffer (pending_size)"
        )
        shown = ", ".join(shown_nats_url(u) for u in self._nats_urls)
        self._watch = _NatsWatch(self._news, shown, held)

    def __repr__(self) -> str:
        return f"<Relay {self.client!r} -> {self._watch.shown} subject={self._subject!r}>"

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        """Relay until ``stop`` is set, SIGINT or SIGTERM, or the feed gives up.

        Returns:
            0 after a stop; 1 when the websocket feed gave up after it had connected
            (a news line says why).

        Raises:
            NatsUnreachable: NATS could not be reached at start.
            rxws.nats.StreamError: The stream could not be created (the server's reason
                inside, such as subjects that overlap another stream's).
            rxws.ConnectionFailed: The first websocket connection could not be made.
            RuntimeError: The relay was run before.
        """
        if self._ran:
            raise RuntimeError("a Relay runs once; make a new one")
        self._ran = True
        stop = self._stop if self._stop is not None else asyncio.Event()
        try:
            with _stopped_by_signals(stop, self._handle_signals):
                return await self._run(stop)
        finally:
            if not self.client.closed:  # failed before the feed started
                await self.client.close()
            self._status(None)

    async def _run(self, stop: asyncio.Event) -> int:
        nc = self.nc = await connect_nats(self._nats_urls, watch=self._watch, **self._nats_options)
        try:
            self._news(f"NATS: connected to {self._watch.shown}")
            if self._stream is not None:
                did = await _ensure_stream(nc, self._stream, self._subject, self._duplicate_window)
                self._news(f"NATS: {did}")
            await self._relay(nc, stop)
        finally:
            await _close_nats(nc, self._watch)
            self.nc = None
        failure = self._failure
        if failure is None:
            return 0
        if not self._connected:
            raise failure
        self._news(f"error: the websocket feed gave up: {_one_line(str(failure))}")
        return 1

    async def _relay(self, nc: Client, stop: asyncio.Event) -> None:
        client = self.client
        publisher = self.publisher = rx_nats.publish(
            nc,
            self._subject,
            msg_id=self._msg_id,
            stream=self._stream,
            buffer=self._buffer,
            window=self._window,
            ack_timeout=self._ack_timeout,
            on_error=client.report,
        )
        if self._topics:
            feed = _topics_feed(client, self._topics, client.report)
            if self._keep is not None:
                feed = feed.pipe(rx_ops.filter(self._keep))
        else:
            feed = client.stream(self._filters or None)
        flushed = asyncio.Event()
        watching = [
            client.status.subscribe(self._on_event),
            client.errors.subscribe(self._on_error),
        ]
        pipeline = feed.pipe(publisher).subscribe(
            on_error=lambda _: flushed.set(), on_completed=flushed.set
        )
        ticker: asyncio.Task[None] | None = None
        try:
            await client.start()
            ticker = asyncio.get_running_loop().create_task(self._tick(nc, publisher))
            await _first(stop, self._failed)
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            await client.close()  # the feed completes: what is buffered is published
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(flushed.wait(), self._flush_timeout)
            unacked = 0
            if not flushed.is_set():
                unacked = publisher.stats.unacked
                pumps = [p.task for p in publisher.stats._pumps if p.task is not None]
                pipeline.dispose()  # counts what was never published as dropped
                if pumps:
                    await asyncio.wait(pumps)
            for watch in watching:
                watch.dispose()
            s = publisher.stats
            acked = ""
            if self._stream is not None:
                acked = f", {s.acked:,} acknowledged"
                if unacked:
                    acked += f" ({unacked:,} published but never acknowledged)"
            self._news(
                f"stopped: {client.stats.messages:,} received, {s.published:,} published"
                f"{acked}, {s.dropped:,} dropped, {s.errors:,} skipped"
            )

    # ------------------------------------------------------------------ reporting

    def _on_event(self, event: Event) -> None:
        where = f" (connection {event.connection})" if event.connection is not None else ""
        if isinstance(event, Connected):
            self._connected = True
            self._news(f"websocket: connected to {event.url}{where}")
        elif isinstance(event, Disconnected) and event.error is not None:
            if not self._connected:
                self._fail(event.error)
            else:
                self._news(f"websocket: dropped{where}: {_one_line(str(event.error))}")
        elif isinstance(event, Rotated):
            self._news(f"websocket: rotated{where}")
        elif isinstance(event, Failed):
            self._fail(event.error)

    def _fail(self, error: BaseException) -> None:
        if self._failure is None:
            self._failure = error
            self._failed.set()

    def _on_error(self, error: Exception) -> None:
        self.errors += 1
        if isinstance(error, rx_nats.PublishOverflow):
            self._news(f"NATS: {_one_line(str(error))}")
            return
        now = asyncio.get_running_loop().time()
        if now - self._error_news_at < _ERROR_NEWS_EVERY:
            self._errors_unsaid += 1
            return
        more = (
            f" ({self._errors_unsaid:,} more errors since the last)" if self._errors_unsaid else ""
        )
        self._error_news_at = now
        self._errors_unsaid = 0
        self._news(f"error: {_one_line(str(error))}{more}")

    async def _tick(self, nc: Client, publisher: rx_nats.Publisher) -> None:
        client_stats = self.client.stats
        stats = publisher.stats
        loop = asyncio.get_running_loop()
        last = (loop.time(), client_stats.messages, stats.published)
        while True:
            await asyncio.sleep(self._status_every)
            now = (loop.time(), client_stats.messages, stats.published)
            seconds = max(now[0] - last[0], 1e-9)
            rate_in = (now[1] - last[1]) / seconds
            rate_out = (now[2] - last[2]) / seconds
            last = now
            pending = f"pending {stats.pending:,}"
            if self._stream is not None:
                pending += f" ({stats.unacked:,} unacked)"
            self._status(
                f"in {_rate(rate_in)}/s, out {_rate(rate_out)}/s; NATS {_nats_state(nc)}; "
                f"{pending}; dropped {stats.dropped:,}; errors {self.errors:,}; "
                f"reconnects {client_stats.reconnects:,} ws, {nc.stats['reconnects']:,} NATS"
            )


async def relay(
    url: Any,
    *,
    nats_url: str | Sequence[str],
    subject: str,
    msg_id: str | None = None,
    stream: str | None = None,
    topics: Iterable[str] = (),
    filters: Filters = None,
    sends: Iterable[Any] = (),
    protocol: Subscriptions | None = None,
    transport: str = "websockets",
    status: Line | None = None,
    news: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    **options: Any,
) -> int:
    """Publish a websocket feed to NATS until stopped: the ``rxws relay`` command.

    NATS is connected first (:class:`NatsUnreachable` if it cannot be), then, with
    ``stream``, the JetStream stream is created if it is missing (its subjects from
    ``subject``: ``md.{s}`` gives ``md.>``; an existing stream is left as it is). Then
    the websocket feed starts: a :class:`rxws.WebSocketClient` that reconnects with
    backoff and rotates its connection make-before-break. Every message (those
    ``filters`` accepts, with ``topics``: every topic's payload) goes through
    :func:`rxws.nats.publish`, the frame as it came when the message is unchanged.

    A message the templates do not fit (a field it lacks) is reported and skipped;
    messages NATS could not take are counted and reported. A status line goes to
    ``status`` every second (rates in and out, NATS state, pending acknowledgements,
    drops, errors, reconnects); ``status(None)`` ends them. On stop, the websocket
    feed closes first, what is buffered is published and acknowledged for up to
    ``flush_timeout`` seconds (the rest counted as dropped), then NATS is closed.

    Args:
        url: The websocket URL (or an async callable returning one).
        nats_url: The NATS server(s): ``nats://host:4222``, several comma-separated.
        subject: The subject template over the message's fields, such as ``md.{s}``.
        msg_id: The ``Nats-Msg-Id`` template, such as ``{seq}``: with it two relays can
            publish the same feed hot-hot and the stream stores each message once.
        stream: Publish into this JetStream stream (at-least-once, acknowledged).
        topics: Subscribe these topics through ``protocol`` (default
            :class:`rxws.protocols.Binance`), sharded over as many connections as its
            limits (or ``limits=``) require; each topic's payload is published.
        filters: Publish only the messages these filters accept (``rxws listen``'s
            semantics).
        sends: Messages sent on every new connection, in order, before any other
            (``str``/``bytes`` as they are, anything else as JSON).
        protocol: The topic protocol (needs ``topics``).
        transport: ``"websockets"`` or ``"picows"``.
        status: Called with a status line every second and with ``None`` at the end
            (default: ``rxws: ...`` lines on stderr).
        news: Called with one-off lines: connections, NATS away and back, errors
            (at most one a second), the summary at the end (default: stderr).
        stop: Set it to stop (SIGINT and SIGTERM set it too).
        handle_signals: Whether SIGINT and SIGTERM stop the relay (their handlers are
            removed when it ends); pass ``False`` when the caller handles them.
        **options: ``buffer``, ``window``, ``ack_timeout`` (for
            :func:`rxws.nats.publish`), ``duplicate_window`` (for a stream it creates),
            ``flush_timeout``, ``status_every``, ``nats_options`` (for
            ``nats.connect``), and anything else for :class:`rxws.WebSocketClient`
            (``limits``, ``rotate_every``, ``idle_timeout``, ``backoff``, ...).

    Returns:
        0 after a stop; 1 when the websocket feed gave up after it had connected.

    Raises:
        NatsUnreachable: NATS could not be reached at start.
        rxws.nats.StreamError: The stream could not be created (the server's reason
            inside).
        rxws.ConnectionFailed: The first websocket connection could not be made.
        ValueError: An argument is malformed (a template, a URL, a number).
        TypeError: An argument has the wrong type.
    """
    runner = Relay(
        url,
        nats_url=nats_url,
        subject=subject,
        msg_id=msg_id,
        stream=stream,
        topics=topics,
        filters=filters,
        sends=sends,
        protocol=protocol,
        transport=transport,
        status=status,
        news=news,
        stop=stop,
        handle_signals=handle_signals,
        **options,
    )
    return await runner.run()


# ---------------------------------------------------------------------- listen


def _parse_or_text(payload: bytes) -> Any:
    """JSON when the payload parses, else the payload as text."""
    try:
        return parse_json(payload)
    except ValueError:
        return payload.decode("utf-8", "backslashreplace")


class _Lines:
    """Writes lines to ``out``, flushing once per burst; stops at ``count``."""

    def __init__(
        self,
        out: TextIO,
        count: int | None,
        done: asyncio.Event,
        on_broken_pipe: Callable[[], None] | None,
    ) -> None:
        self.out = out
        self.count = count
        self.done = done
        self.on_broken_pipe = on_broken_pipe
        self.printed = 0
        self.flushing = False
        self.broken = False

    def write(self, line: str) -> None:
        if self.done.is_set():
            return
        try:
            self.out.write(line + "\n")
        except BrokenPipeError:
            self.pipe_broke()
            return
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self.flush()
            self.done.set()
        elif not self.flushing:
            self.flushing = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self.flushing = False
        try:
            self.out.flush()
        except BrokenPipeError:
            self.pipe_broke()
        except (OSError, ValueError):
            pass

    def pipe_broke(self) -> None:
        if not self.broken and self.on_broken_pipe is not None:
            self.on_broken_pipe()
        self.broken = True
        self.done.set()


async def listen_nats(
    nats_url: str | Sequence[str],
    *,
    subject: str,
    stream: str | None = None,
    deliver: rx_nats.Deliver = "new",
    filters: Filters = None,
    count: int | None = None,
    raw: bool = False,
    out: TextIO | None = None,
    status: Line | None = None,
    news: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    status_every: float = 1.0,
    nats_options: Mapping[str, Any] | None = None,
    on_broken_pipe: Callable[[], None] | None = None,
) -> int:
    """Print the messages of a NATS subject, one JSON line each: ``rxws listen nats://``.

    Filters work as in ``rxws listen``: one dict's pairs AND-ed, several dicts OR-ed,
    on the message as it parses (a payload that is not JSON is a string, which only an
    empty filter list accepts). With ``stream`` the messages come from a JetStream
    ordered consumer that starts where ``deliver`` says.

    Args:
        nats_url: The NATS server(s).
        subject: The subject, wildcards allowed (``md.>``).
        stream: Read this JetStream stream instead of core NATS.
        deliver: With ``stream``: ``"all"``, ``"new"``, ``"last"`` or a stream sequence
            number to start from.
        filters: Print only the messages these filters accept.
        count: Stop after printing this many.
        raw: Print each payload as it came instead of re-serialised JSON.
        out: Where the lines go (default: ``sys.stdout``).
        status: Called with a status line every second, ``None`` at the end.
        news: Called with one-off lines (NATS away and back, errors).
        stop: Set it to stop (SIGINT and SIGTERM set it too).
        handle_signals: Whether SIGINT and SIGTERM stop it.
        status_every: Seconds between status lines.
        nats_options: Passed to ``nats.connect``.
        on_broken_pipe: Called when the reader of ``out`` went away (``| head``); the
            caller should then point stdout at ``/dev/null`` before the interpreter's
            last flush.

    Returns:
        0 after a stop, ``count`` lines, or the reader of ``out`` going away.

    Raises:
        NatsUnreachable: NATS could not be reached at start.
        rxws.nats.SubscribeError: The subscription could not be made (no such stream,
            JetStream disabled, a bad subject).
        ValueError: An argument is malformed.
    """
    urls = _nats_urls(nats_url)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count must be a whole number >= 1 or None, not {count!r}")
    keep = matches(filters) if compile_filters(filters) else None
    feed = rx_nats.subscribe(Client(), subject, parse=None, stream=stream, deliver=deliver)
    del feed  # arguments checked; the real subscription is made once NATS is connected
    say_status = status if status is not None else _stderr_line
    say = news if news is not None else _stderr_line
    stop = stop if stop is not None else asyncio.Event()
    done = asyncio.Event()
    lines = _Lines(out if out is not None else sys.stdout, count, done, on_broken_pipe)
    failure: list[Exception] = []
    received = 0

    def on_payload(payload: bytes) -> None:
        nonlocal received
        received += 1
        if keep is None:
            if raw:
                lines.write(payload.decode("utf-8", "backslashreplace"))
            else:
                lines.write(dump_json(_parse_or_text(payload)))
            return
        value = _parse_or_text(payload)
        if keep(value):
            lines.write(payload.decode("utf-8", "backslashreplace") if raw else dump_json(value))

    def on_error(error: Exception) -> None:
        failure.append(error)
        done.set()

    watch = _NatsWatch(say, ", ".join(shown_nats_url(u) for u in urls), "waiting")
    try:
        with _stopped_by_signals(stop, handle_signals):
            nc = await connect_nats(urls, watch=watch, **dict(nats_options or {}))
            try:
                where = f"the stream {stream!r}, " if stream is not None else ""
                say(f"NATS: connected to {watch.shown}; reading {where}subject {subject!r}")
                subscription = rx_nats.subscribe(
                    nc, subject, parse=None, stream=stream, deliver=deliver
                ).subscribe(on_payload, on_error)
                ticker = asyncio.get_running_loop().create_task(
                    _listen_status(nc, say_status, status_every, lambda: received, lines)
                )
                try:
                    await _first(stop, done)
                finally:
                    ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await ticker
                    subscription.dispose()
                    # Let the cancelled subscription task unsubscribe while NATS is up.
                    for _ in range(4):
                        await asyncio.sleep(0)
                    lines.flush()
            finally:
                await _close_nats(nc, watch)
    finally:
        say_status(None)
    if failure:
        raise failure[0]
    return 0


async def _listen_status(
    nc: Client,
    status: Line,
    every: float,
    received: Callable[[], int],
    lines: _Lines,
) -> None:
    loop = asyncio.get_running_loop()
    last = (loop.time(), received())
    while True:
        await asyncio.sleep(every)
        now = (loop.time(), received())
        rate = (now[1] - last[1]) / max(now[0] - last[0], 1e-9)
        last = now
        status(
            f"in {_rate(rate)}/s; {now[1]:,} received, {lines.printed:,} printed; "
            f"NATS {_nats_state(nc)}"
        )
