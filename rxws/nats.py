"""Fan-out beyond one process: publish a feed to NATS (JetStream) and subscribe to it.

Ingest a feed once (or twice, hot-hot, on two machines) and let any number of
consumers on any machine read it through NATS. Needs the ``nats`` extra
(``pip install "rxws[nats]"``, which brings nats-py) and is imported on its own::

    import nats as nats_py
    from rxws import nats

    nc = await nats_py.connect("nats://127.0.0.1:4222")
    await nats.ensure_stream(nc, "MD", ["md.>"], duplicate_window=30)
    relay = nats.publish(nc, "md.{s}", msg_id="{seq}", stream="MD", on_error=client.report)
    client.messages.pipe(relay).subscribe()
    ...
    nats.subscribe(nc, "md.BTCUSDT", stream="MD", deliver="all").subscribe(print)

- :func:`publish`: a pipeable operator that publishes every message and passes it on.
  It never blocks the pipeline: messages wait in a bounded outbound buffer drained by
  one task on the loop, and what does not fit is counted and reported. With
  ``stream=``, JetStream acknowledgements are tracked in a bounded window (never
  awaited one by one) and what was not acknowledged when NATS went away is published
  again when it is back; with ``msg_id=`` the stream's duplicate window stores each
  message once, even from two publishers.
- :func:`subscribe`: a cold Observable of the messages on a subject (wildcards allowed),
  from core NATS or, with ``stream=``, from a JetStream ordered consumer that can
  replay the stream from its start, a sequence number or a time.
- :func:`ensure_stream`: create or update a JetStream stream, with a short duplicate
  window (the server keeps every message id of the window in memory).
- :func:`parse_framed`: a parser for ``WebSocketClient(parse=...)`` whose messages keep
  their raw frame, so :func:`publish` sends the frame as it came, without serialising
  the message again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import logging
import re
import string
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar

import reactivex
from reactivex import Observable, abc
from reactivex.disposable import CompositeDisposable, Disposable

from .codec import dump_json, parse_json
from .errors import NoRunningLoop, ParseError, RxwsError

try:
    import nats.errors as _nats_errors  # type: ignore[import-not-found, unused-ignore]
    import nats.js.errors as _js_errors  # type: ignore[import-not-found, unused-ignore]
    from nats.aio.client import Client  # type: ignore[import-not-found, unused-ignore]
    from nats.aio.msg import Msg  # type: ignore[import-not-found, unused-ignore]
    from nats.js import api as _js_api  # type: ignore[import-not-found, unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'rxws.nats needs nats-py, which is not installed; install it with: pip install "rxws[nats]"'
    ) from exc

__all__ = [
    "Framed",
    "NatsError",
    "PublishError",
    "PublishOverflow",
    "PublishStats",
    "Publisher",
    "StreamError",
    "SubscribeError",
    "ensure_stream",
    "parse_framed",
    "publish",
    "subscribe",
]

log = logging.getLogger("rxws.nats")

_T = TypeVar("_T")

Template = str | Callable[[Any], Any]
"""A subject or message id: a constant, a ``str.format`` template over the message's
fields (``"md.{s}"``), or a callable of the message."""

Deliver = Literal["all", "new", "last"] | int | datetime.datetime

MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"

_YIELD_EVERY = 512  # publishes between two turns given to the rest of the loop
_OUTAGE_POLL = 0.05  # seconds between checks for NATS coming back (stream mode)
_ACK_POLL = 0.25  # seconds between checks for overdue acknowledgements
# JetStream answers "no responders" (503) while a stream is briefly away (a server
# shutting down or restarting, a leader election): try again a few times, later each time.
_NO_STREAM_TRIES = 4
_NO_STREAM_DELAY = 0.25  # seconds, times the try


# ---------------------------------------------------------------------- errors


class NatsError(RxwsError):
    """Base class of the errors :mod:`rxws.nats` raises or reports."""


class PublishError(NatsError):
    """One message could not be published; it was skipped and publishing went on.

    Reported on the ``on_error`` callback of :func:`publish` (``client.report`` puts
    it on the client's ``errors``).

    Args:
        reason: What went wrong and what to do about it.
        subject: The subject it was meant for, when known.
        error: The underlying exception, if any.
    """

    def __init__(
        self, reason: str, subject: str | None = None, error: BaseException | None = None
    ) -> None:
        self.reason = reason
        self.subject = subject
        self.error = error
        where = f" to {subject!r}" if subject is not None else ""
        super().__init__(f"skipped a message that could not be published{where}: {reason}")
        if error is not None:
            self.__cause__ = error


class PublishOverflow(NatsError):
    """Messages could not be kept for publishing and were dropped (counted in ``dropped``).

    Reported once when a run of drops starts and once when it ends, with the count.

    Args:
        dropped: How many messages this run of drops lost so far.
        reason: Why they could not be kept.
        ended: Whether the run of drops is over.
    """

    def __init__(self, dropped: int, reason: str, *, ended: bool = False) -> None:
        self.dropped = dropped
        self.reason = reason
        self.ended = ended
        if ended:
            text = f"dropped {dropped} message(s) that could not be published: {reason}"
        else:
            text = (
                f"dropping messages that cannot be published: {reason}; they are counted "
                "in stats.dropped (raise buffer= or window=, or make NATS keep up)"
            )
        super().__init__(text)


class StreamError(NatsError):
    """A JetStream stream could not be created or updated (the server's answer inside).

    Args:
        name: The stream's name.
        reason: What the server said, and what to do about it.
        error: The nats-py exception.
    """

    def __init__(self, name: str, reason: str, error: BaseException | None = None) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"could not create or update the JetStream stream {name!r}: {reason}")
        if error is not None:
            self.__cause__ = error


class SubscribeError(NatsError):
    """A subscription to NATS could not be made.

    Args:
        subject: The subject.
        reason: What went wrong and what to do about it.
        error: The nats-py exception.
    """

    def __init__(self, subject: str, reason: str, error: BaseException | None = None) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"could not subscribe to {subject!r}: {reason}")
        if error is not None:
            self.__cause__ = error


def _running_loop(what: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise NoRunningLoop(
            f"rxws.nats.{what}", "subscribe from inside the loop that nats-py uses"
        ) from None


# ---------------------------------------------------------------------- raw frames


class Framed(dict[str, Any]):
    """A message parsed from a JSON object that keeps the frame it came from.

    :func:`publish` sends :attr:`frame` as it is instead of serialising the message
    again. Treat a ``Framed`` as read-only: changed in place, it would still be
    published as the frame it came from (``map`` to a new dict instead).

    Attributes:
        frame: The text or binary frame the message was parsed from.
    """

    __slots__ = ("frame",)

    frame: str | bytes


def parse_framed(frame: str | bytes) -> Any:
    """Parse a frame as :func:`rxws.parse_json` does, keeping the frame with the message.

    Use it as ``WebSocketClient(url, parse=rxws.nats.parse_framed)`` in front of
    :func:`publish`: JSON objects become :class:`Framed` dicts (a dict in every other
    respect) that are published as the frame they came from.

    Args:
        frame: The frame's payload.

    Returns:
        A :class:`Framed` for a JSON object, the plain decoded value otherwise.

    Raises:
        ValueError: The frame is not valid JSON.
    """
    value = parse_json(frame)
    if type(value) is dict:
        framed = Framed(value)
        framed.frame = frame
        return framed
    return value


def _payload(message: Any) -> str | bytes:
    """What :func:`publish` sends for ``message``: text is encoded to UTF-8 on the wire."""
    if type(message) is Framed:
        return message.frame
    if isinstance(message, (bytes, str)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    return dump_json(message)


def _as_bytes(payload: str | bytes) -> bytes:
    return payload.encode() if isinstance(payload, str) else payload


# ---------------------------------------------------------------------- the wire

_SUBJECT_INVALID = re.compile(r"[ \t\r\n]")  # what nats-py refuses in a subject
_HEADER_NEWLINES = str.maketrans({"\r": " ", "\n": " "})
_SUBJECTS_KEPT = 10_000  # subjects remembered as valid before the memo starts over


def _header_value(value: str) -> str:
    """A header value as nats-py writes it: stripped, line breaks made spaces."""
    value = value.strip()
    if "\r" in value or "\n" in value:
        value = value.translate(_HEADER_NEWLINES)
    return value


class _Wire:
    """Writes the PUB/HPUB commands of many messages into nats-py's outbound buffer at once.

    ``nc.publish`` costs several microseconds a message: three coroutines, a header dict
    turned into bytes pair by pair with a regular expression per header name, a look at
    the flusher. A publisher's messages differ only in subject, reply, message id and
    payload, so here each command is one string format, and a batch of them goes to
    nats-py as one command, with one look at the flusher. The bytes are those
    ``nc.publish`` writes, and nats-py's counters move as they would.

    It writes only while the connection is up and only what nats-py would send as it
    is; anything else (NATS away, a subject nats-py refuses, a payload over the
    server's ``max_payload``) goes through ``nc.publish``, which buffers or raises as
    nats-py does. It needs a handful of nats-py's internals (``_send_command``,
    ``_flush_pending``, ``_flush_queue``); :meth:`usable` checks that they are there and
    that ``publish`` is nats-py's own (not overridden), else ``nc.publish`` is used.
    """

    __slots__ = ("nc", "stream_header", "subjects")

    def __init__(self, nc: Client, stream: str | None) -> None:
        self.nc = nc
        self.subjects: dict[str, bool] = {}  # subject -> whether nats-py takes it as it is
        self.stream_header = (
            "" if stream is None else f"{EXPECTED_STREAM_HEADER}: {_header_value(stream)}\r\n"
        )

    @staticmethod
    def usable(nc: Any) -> bool:
        """Whether commands can be written for ``nc`` (a nats-py client, as released)."""
        kind = type(nc)
        return (
            isinstance(nc, Client)
            and kind.publish is Client.publish
            and getattr(kind, "_send_publish", None) is getattr(Client, "_send_publish", None)
            and all(hasattr(kind, name) for name in ("is_draining_pubs", "max_payload"))
            and callable(getattr(nc, "_send_command", None))
            and callable(getattr(nc, "_flush_pending", None))
            and hasattr(nc, "_flush_queue")
            and isinstance(getattr(nc, "stats", None), dict)
        )

    def is_open(self) -> bool:
        """Whether nats-py would send a publication now (connected, not draining it)."""
        nc = self.nc
        return bool(nc.is_connected and not nc.is_draining_pubs)

    def _valid(self, subject: str) -> bool:
        subjects = self.subjects
        if len(subjects) >= _SUBJECTS_KEPT:
            subjects.clear()
        valid = subjects[subject] = bool(subject) and _SUBJECT_INVALID.search(subject) is None
        return valid

    def command(
        self,
        into: list[bytes],
        subject: str,
        reply: str,
        msg_id: str | None,
        payload: str | bytes,
        max_payload: int,
    ) -> int:
        """Append the command publishing one message to ``into``.

        Returns:
            The payload's size in bytes, or -1 when the message must go through
            ``nc.publish`` instead (nothing appended).
        """
        valid = self.subjects.get(subject)
        if not (valid if valid is not None else self._valid(subject)):
            return -1
        text = payload if type(payload) is str and payload.isascii() else None
        data = b"" if text is not None else _as_bytes(payload)
        size = len(text) if text is not None else len(data)
        if size > max_payload:
            return -1
        stream_header = self.stream_header
        if msg_id is None and not stream_header:
            line = f"PUB {subject} {reply} {size}\r\n"
        else:
            if msg_id is None:
                headers = f"NATS/1.0\r\n{stream_header}\r\n"
            else:
                value = _header_value(msg_id)
                headers = f"NATS/1.0\r\n{MSG_ID_HEADER}: {value}\r\n{stream_header}\r\n"
            head = len(headers) if headers.isascii() else len(headers.encode())
            line = f"HPUB {subject} {reply} {head} {head + size}\r\n{headers}"
        if text is not None:
            into.append(f"{line}{text}\r\n".encode())
        else:
            into.append(line.encode() + data + b"\r\n")
        return size

    async def send(self, commands: list[bytes], count: int, size: int) -> None:
        """Hand ``commands`` (``count`` messages, ``size`` payload bytes) to nats-py."""
        nc = self.nc
        stats = nc.stats
        stats["out_msgs"] += count
        stats["out_bytes"] += size
        await nc._send_command(b"".join(commands))
        flush_queue = nc._flush_queue
        if flush_queue is not None and flush_queue.empty():
            await nc._flush_pending()


# ---------------------------------------------------------------------- templates


class _TemplateFailed(Exception):
    """A subject or message id could not be made for one message."""


def _compile(spec: Template, what: str) -> Callable[[Any], str]:
    """Turn a subject or message id ``spec`` into a function of the message."""
    if callable(spec):
        return _wrap_callable(spec, what)
    if not isinstance(spec, str):
        raise TypeError(
            f"{what} must be a string, a str.format template over the message's fields "
            f"(such as 'md.{{s}}') or a callable, not {type(spec).__name__}"
        )
    if not spec:
        raise ValueError(f"{what} must not be empty")
    try:
        parsed = list(string.Formatter().parse(spec))
    except ValueError as exc:
        raise ValueError(f"{what} {spec!r} is not a valid str.format template: {exc}") from None
    fields = [field for _, field, _, _ in parsed if field is not None]
    for field in fields:
        first = field.split(".", 1)[0].split("[", 1)[0]
        if not first or first.isdigit():
            raise ValueError(
                f"{what} {spec!r} has a positional field; name the message's fields, "
                "as in 'md.{s}'"
            )
    if not fields:
        return lambda message: spec
    head, name, format_spec, conversion = parsed[0]
    plain = name is not None and name.isidentifier() and not format_spec and conversion is None
    if len(fields) == 1 and plain:
        # One plain field (md.{s}, {seq}): what str.format makes, without its parser.
        tail = "".join(literal for literal, _, _, _ in parsed[1:])

        def one_field(message: Any) -> str:
            try:
                value = message[name]
            except (KeyError, IndexError, TypeError) as exc:
                raise _TemplateFailed(_missing(what, spec, exc, message)) from exc
            return f"{head}{value}{tail}"

        return one_field
    fill = spec.format_map

    def template(message: Any) -> str:
        try:
            return fill(message)
        except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
            raise _TemplateFailed(_missing(what, spec, exc, message)) from exc

    return template


def _missing(what: str, spec: str, exc: BaseException, message: Any) -> str:
    if isinstance(exc, KeyError) and isinstance(message, dict):
        fields = ", ".join(str(key) for key in list(message)[:10])
        more = ", ..." if len(message) > 10 else ""
        return (
            f"the {what} template {spec!r} names the field {exc.args[0]!r}, which this "
            f"message lacks (it has: {fields}{more})"
        )
    if not hasattr(message, "__getitem__") or isinstance(message, (str, bytes)):
        return (
            f"the {what} template {spec!r} needs a message with fields, and this one is "
            f"a {type(message).__name__} (publish parsed messages, or pass a callable)"
        )
    return f"the {what} template {spec!r} does not fit this message: {type(exc).__name__}: {exc}"


def _wrap_callable(spec: Callable[[Any], Any], what: str) -> Callable[[Any], str]:
    name = getattr(spec, "__name__", type(spec).__name__)

    def call(message: Any) -> str:
        try:
            value = spec(message)
        except Exception as exc:
            raise _TemplateFailed(
                f"the {what} callable {name} raised {type(exc).__name__}: {exc}"
            ) from exc
        return value if type(value) is str else str(value)

    return call


# ---------------------------------------------------------------------- publish


class PublishStats:
    """Counters of a :class:`Publisher`, summed over its subscriptions.

    Attributes:
        published: Messages handed to NATS (republications not counted).
        acked: Messages JetStream acknowledged (``stream=`` only), duplicates included.
        duplicates: Acknowledgements that said the stream already had the message id.
        republished: Messages published again: unacknowledged when NATS came back or
            after ``ack_timeout``, or answered "no responders" (a stream briefly away).
        dropped: Messages that could not be kept (a buffer full, the connection closed).
        errors: Messages skipped because they could not be published (a template naming
            a missing field, a bad subject, the server refusing them).
    """

    __slots__ = (
        "_pumps",
        "acked",
        "dropped",
        "duplicates",
        "errors",
        "published",
        "republished",
    )

    def __init__(self) -> None:
        self.published = 0
        self.acked = 0
        self.duplicates = 0
        self.republished = 0
        self.dropped = 0
        self.errors = 0
        self._pumps: set[_Pump] = set()

    @property
    def queued(self) -> int:
        """Messages waiting in the outbound buffers."""
        return sum(len(pump.queue) for pump in self._pumps)

    @property
    def unacked(self) -> int:
        """Messages published and not yet acknowledged (``stream=`` only)."""
        return sum(len(pump.inflight) + len(pump.retry) for pump in self._pumps)

    @property
    def pending(self) -> int:
        """Messages not yet done with: queued plus unacknowledged."""
        return self.queued + self.unacked

    def __repr__(self) -> str:
        return (
            f"<PublishStats published={self.published} acked={self.acked} "
            f"pending={self.pending} dropped={self.dropped} errors={self.errors}>"
        )


class Publisher:
    """The operator :func:`publish` returns: pipe an Observable through it.

    Each subscription gets its own outbound buffer and drain task; the counters in
    :attr:`stats` add up over all of them.

    Attributes:
        stats: The counters.
    """

    def __init__(
        self,
        nc: Client,
        subject: Template,
        *,
        msg_id: Template | None,
        stream: str | None,
        buffer: int,
        window: int,
        ack_timeout: float,
        on_error: Callable[[Exception], None] | None,
    ) -> None:
        self.nc = nc
        self.subject = subject
        self.msg_id = msg_id
        self.stream = stream
        self.buffer = buffer
        self.window = window
        self.ack_timeout = ack_timeout
        self.on_error = on_error
        self.subject_of = _compile(subject, "subject")
        self.msg_id_of = _compile(msg_id, "msg_id") if msg_id is not None else None
        self.stats = PublishStats()
        self._failing = 0  # errors in a row, for logging once per burst
        self._full = _DropRun(self)  # the outbound buffer was full
        self._away = _DropRun(self)  # NATS could not take the message

    def __repr__(self) -> str:
        where = f" stream={self.stream!r}" if self.stream else ""
        return f"<Publisher subject={self.subject!r}{where} {self.stats!r}>"

    def __call__(self, source: Observable[_T]) -> Observable[_T]:
        """Publish every message of ``source`` and pass it on.

        Args:
            source: The messages.

        Returns:
            The same messages. It completes (or errors, as ``source`` did) once what
            was buffered has been published and, with ``stream=``, acknowledged.
        """

        def on_subscribe(
            observer: abc.ObserverBase[_T], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            pump = _Pump(self, observer, _running_loop("publish"))
            upstream = source.subscribe(
                pump.on_next, pump.on_error, pump.on_completed, scheduler=scheduler
            )
            return CompositeDisposable(upstream, Disposable(pump.dispose))

        return reactivex.create(on_subscribe)

    # ------------------------------------------------------------------ reporting

    def report(self, error: Exception) -> None:
        """Count a skipped message and hand ``error`` to ``on_error`` (logged once a burst)."""
        self.stats.errors += 1
        if not self._failing:
            log.warning("%s", error)
        self._failing += 1
        self._hand(error)

    def went_well(self) -> None:
        """A message was published: a run of errors is over."""
        if self._failing > 1:
            log.warning("%d messages in a row could not be published", self._failing)
        self._failing = 0

    def notify(self, error: PublishOverflow) -> None:
        """Log ``error`` and hand it to ``on_error``."""
        log.warning("%s", error)
        self._hand(error)

    def _hand(self, error: Exception) -> None:
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:
                log.exception("the on_error callback of rxws.nats.publish raised; ignored")


class _DropRun:
    """Counts dropped messages and reports each run of drops when it starts and ends."""

    __slots__ = ("dropping", "publisher", "reason")

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.dropping = 0  # drops in the present run
        self.reason = ""

    def drop(self, count: int, reason: str) -> None:
        self.publisher.stats.dropped += count
        if not self.dropping:
            self.reason = reason
            self.publisher.notify(PublishOverflow(count, reason))
        self.dropping += count

    def kept(self) -> None:
        dropped, self.dropping = self.dropping, 0
        self.publisher.notify(PublishOverflow(dropped, self.reason, ended=True))


class _Entry:
    """A message published to JetStream and not yet acknowledged."""

    __slots__ = ("generation", "msg_id", "payload", "refusals", "sent_at", "subject")

    def __init__(
        self,
        subject: str,
        msg_id: str | None,
        payload: str | bytes,
        generation: int,
        sent_at: float,
    ) -> None:
        self.subject = subject
        self.msg_id = msg_id
        self.payload = payload
        self.generation = generation
        self.sent_at = sent_at
        self.refusals = 0  # "no responders" answers so far


class _Pump:
    """One subscription of a :class:`Publisher`: its buffer, its drain task, its acks."""

    def __init__(
        self, publisher: Publisher, observer: abc.ObserverBase[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.publisher = publisher
        self.observer = observer
        self.loop = loop
        self.nc = publisher.nc
        self.subject_of = publisher.subject_of
        self.msg_id_of = publisher.msg_id_of
        self.bound = publisher.buffer
        self.full = publisher._full
        self.away = publisher._away
        self.queue: collections.deque[tuple[str, str | None, str | bytes]] = collections.deque()
        self.wire = _Wire(self.nc, publisher.stream) if _Wire.usable(self.nc) else None
        self.inflight: dict[int, _Entry] = {}
        self.retry: list[tuple[float, _Entry]] = []  # (when, entry) after a "no responders"
        self.token = 0
        self.generation = 0
        self.prefix = ""
        self.wakeup = asyncio.Event()
        self.sleeping = True
        self.ending: tuple[Exception | None] | None = None  # set when the source ended
        publisher.stats._pumps.add(self)
        self.task: asyncio.Task[None] | None = loop.create_task(self.run())

    # ------------------------------------------------------------------ the Rx side

    def on_next(self, message: Any) -> None:
        try:
            subject = self.subject_of(message)
            msg_id = self.msg_id_of(message) if self.msg_id_of is not None else None
            payload = message.frame if type(message) is Framed else _payload(message)
        except _TemplateFailed as exc:
            self.publisher.report(PublishError(str(exc), error=exc.__cause__))
        except Exception as exc:
            self.publisher.report(
                PublishError(
                    f"the message could not be serialised ({type(exc).__name__}: {exc}); "
                    "publish JSON-serialisable messages, or frames kept by parse_framed",
                    error=exc,
                )
            )
        else:
            queue = self.queue
            if len(queue) < self.bound:
                if self.full.dropping:
                    self.full.kept()
                queue.append((subject, msg_id, payload))
                if self.sleeping:
                    self.sleeping = False
                    self.wakeup.set()
            else:
                self.full.drop(1, f"the outbound buffer of {self.bound} messages is full")
        self.observer.on_next(message)

    def on_error(self, error: Exception) -> None:
        self._end(error)

    def on_completed(self) -> None:
        self._end(None)

    def _end(self, error: Exception | None) -> None:
        self.ending = (error,)
        self.sleeping = False
        self.wakeup.set()

    def dispose(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()

    # ------------------------------------------------------------------ the loop side

    async def run(self) -> None:
        ack_sub: Any = None
        outcome: tuple[Exception | None] | None = None
        try:
            stream = self.publisher.stream is not None
            if stream:
                self.prefix = self.nc.new_inbox() + "."
                ack_sub = await self.nc.subscribe(self.prefix + "*", cb=self._on_ack)
                self.generation = self.nc.stats["reconnects"]
            while True:
                if stream:
                    await self._drain_stream()
                else:
                    await self._drain_core()
                if self.ending is not None and not (self.queue or self.inflight or self.retry):
                    break
                await self._sleep(stream)
            if not stream and self.nc.is_connected:
                # Everything handed to nats-py has reached the server once this returns.
                with contextlib.suppress(Exception):
                    await self.nc.flush()
            outcome = self.ending
        except asyncio.CancelledError:
            self._abandon()
            raise
        except Exception as exc:  # a bug here must not pass silently
            log.exception("rxws.nats.publish stopped on an unexpected error")
            outcome = (exc,)
        finally:
            self.publisher.stats._pumps.discard(self)
            if ack_sub is not None:
                with contextlib.suppress(Exception):
                    await ack_sub.unsubscribe()
        self.task = None
        if outcome is not None:
            error = outcome[0]
            if error is None:
                self.observer.on_completed()
            else:
                self.observer.on_error(error)

    async def _sleep(self, stream: bool) -> None:
        timeout: float | None = None
        if stream and (self.inflight or self.queue or self.retry):
            timeout = _OUTAGE_POLL if not self.nc.is_connected else _ACK_POLL
        self.wakeup.clear()
        self.sleeping = True
        if self.queue and not stream:
            return
        handle = self.loop.call_later(timeout, self.wakeup.set) if timeout is not None else None
        try:
            await self.wakeup.wait()
        finally:
            self.sleeping = False
            if handle is not None:
                handle.cancel()

    def _abandon(self) -> None:
        queued, unacked = len(self.queue), len(self.inflight) + len(self.retry)
        if queued or unacked:
            self.publisher.stats.dropped += queued
            log.warning(
                "rxws.nats.publish was disposed with %d message(s) not yet published "
                "(counted as dropped) and %d not yet acknowledged",
                queued,
                unacked,
            )
        self.queue.clear()
        self.inflight.clear()
        self.retry.clear()

    # ------------------------------------------------------------------ core NATS

    async def _drain_core(self) -> None:
        queue = self.queue
        wire = self.wire
        sent = 0
        while queue:
            batch = 0
            if wire is not None and wire.is_open():
                commands: list[bytes] = []
                size = 0
                command = wire.command
                max_payload = self.nc.max_payload
                while queue and batch < _YIELD_EVERY:
                    subject, msg_id, payload = queue[0]
                    written = command(commands, subject, "", msg_id, payload, max_payload)
                    if written < 0:
                        break  # nc.publish says what is wrong with it, below
                    queue.popleft()
                    size += written
                    batch += 1
                if batch:
                    await wire.send(commands, batch, size)
                    self._published(batch)
            if queue and batch < _YIELD_EVERY:
                await self._publish_core(*queue.popleft())
                batch += 1
            sent += batch
            if sent >= _YIELD_EVERY:
                sent = 0
                await asyncio.sleep(0)

    async def _publish_core(self, subject: str, msg_id: str | None, payload: str | bytes) -> None:
        """Publish one message with ``nc.publish`` (the way when the wire cannot be used)."""
        headers = {MSG_ID_HEADER: msg_id} if msg_id is not None else None
        try:
            await self.nc.publish(subject, _as_bytes(payload), headers=headers)
        except _LINK_DOWN as exc:
            self.away.drop(1, _why_dropped(exc))
        except Exception as exc:
            self.publisher.report(_publish_failed(subject, exc))
        else:
            self._published(1)

    def _published(self, count: int) -> None:
        publisher = self.publisher
        publisher.stats.published += count
        if publisher._failing:
            publisher.went_well()
        if self.away.dropping:
            self.away.kept()

    # ------------------------------------------------------------------ JetStream

    async def _drain_stream(self) -> None:
        nc = self.nc
        if not nc.is_connected:
            if nc.is_closed:
                self._lost("the NATS connection is closed")
            return  # NATS is away: keep what we have, publish again once it is back
        generation = nc.stats["reconnects"]
        if self.inflight or self.retry:
            await self._republish(generation)
        self.generation = generation
        queue = self.queue
        inflight = self.inflight
        window = self.publisher.window
        stats = self.publisher.stats
        publisher = self.publisher
        headers_for = self._headers
        prefix = self.prefix
        wire = self.wire
        now = self.loop.time()
        sent = 0
        while queue and len(inflight) < window and nc.is_connected:
            room = min(window - len(inflight), _YIELD_EVERY)
            batch = 0
            if wire is not None and wire.is_open():
                commands: list[bytes] = []
                size = 0
                command = wire.command
                max_payload = nc.max_payload
                token = self.token
                while queue and batch < room:
                    subject, msg_id, payload = queue[0]
                    reply = prefix + str(token + 1)
                    written = command(commands, subject, reply, msg_id, payload, max_payload)
                    if written < 0:
                        break  # nc.publish says what is wrong with it, below
                    queue.popleft()
                    token += 1
                    inflight[token] = _Entry(subject, msg_id, payload, generation, now)
                    size += written
                    batch += 1
                self.token = token
                if batch:
                    await wire.send(commands, batch, size)
                    stats.published += batch
            if queue and batch < room:
                subject, msg_id, payload = queue.popleft()
                self.token += 1
                token = self.token
                inflight[token] = _Entry(subject, msg_id, payload, generation, now)
                try:
                    await nc.publish(
                        subject,
                        _as_bytes(payload),
                        reply=prefix + str(token),
                        headers=headers_for(msg_id),
                    )
                except _LINK_DOWN:
                    break  # the link went down just now: published again once NATS is back
                except Exception as exc:
                    del inflight[token]
                    publisher.report(_publish_failed(subject, exc))
                else:
                    stats.published += 1
                batch += 1
            sent += batch
            if sent >= _YIELD_EVERY:
                sent = 0
                await asyncio.sleep(0)
                now = self.loop.time()

    def _headers(self, msg_id: str | None) -> dict[str, str]:
        stream = self.publisher.stream
        assert stream is not None
        if msg_id is None:
            return {EXPECTED_STREAM_HEADER: stream}
        return {MSG_ID_HEADER: msg_id, EXPECTED_STREAM_HEADER: stream}

    async def _republish(self, generation: int) -> None:
        """Publish again what was not acknowledged before a reconnect or in time."""
        inflight = self.inflight
        now = self.loop.time()
        if generation != self.generation:
            due = [token for token, entry in inflight.items() if entry.generation != generation]
        else:
            deadline = now - self.publisher.ack_timeout
            due = []
            for token, entry in inflight.items():
                if entry.sent_at > deadline:
                    break  # entries are in the order they were (re)published
                due.append(token)
        entries = [inflight.pop(token) for token in due]
        if self.retry:
            entries += [entry for when, entry in self.retry if when <= now]
            self.retry = [(when, entry) for when, entry in self.retry if when > now]
        if not entries:
            return
        log.info("publishing %d unacknowledged message(s) again", len(entries))
        stats = self.publisher.stats
        headers_for = self._headers
        for count, entry in enumerate(entries, 1):
            self.token += 1
            entry.generation = generation
            entry.sent_at = now
            inflight[self.token] = entry
            with contextlib.suppress(*_LINK_DOWN):  # published again once NATS is back
                await self.nc.publish(
                    entry.subject,
                    _as_bytes(entry.payload),
                    reply=self.prefix + str(self.token),
                    headers=headers_for(entry.msg_id),
                )
            stats.republished += 1
            if count % _YIELD_EVERY == 0:
                await asyncio.sleep(0)

    async def _on_ack(self, msg: Msg) -> None:
        try:
            token = int(msg.subject[len(self.prefix) :])
        except ValueError:
            return
        entry = self.inflight.pop(token, None)
        if entry is None:
            return  # the ack of a message published again meanwhile
        data = msg.data
        publisher = self.publisher
        if data and b'"error"' not in data:
            publisher.stats.acked += 1
            if b'"duplicate"' in data:
                publisher.stats.duplicates += 1
            if publisher._failing:
                publisher.went_well()
        else:
            status = msg.headers.get("Status") if msg.headers else None
            if not data and status == "503" and entry.refusals < _NO_STREAM_TRIES:
                entry.refusals += 1
                self.retry.append((self.loop.time() + _NO_STREAM_DELAY * entry.refusals, entry))
                return
            publisher.report(_refused(entry.subject, self.publisher.stream, msg))
        if self.sleeping and (self.queue or self.ending is not None):
            self.sleeping = False
            self.wakeup.set()

    def _lost(self, reason: str) -> None:
        lost = len(self.queue) + len(self.inflight) + len(self.retry)
        self.queue.clear()
        self.inflight.clear()
        self.retry.clear()
        if lost:
            self.away.drop(lost, reason)


_LINK_DOWN = (
    _nats_errors.OutboundBufferLimitError,
    _nats_errors.ConnectionClosedError,
    _nats_errors.ConnectionDrainingError,
)


def _why_dropped(exc: BaseException) -> str:
    if isinstance(exc, _nats_errors.OutboundBufferLimitError):
        return (
            "NATS is away and nats-py's reconnect buffer is full "
            "(raise pending_size= in nats.connect)"
        )
    if isinstance(exc, _nats_errors.ConnectionDrainingError):
        return "the NATS connection is draining"
    return "the NATS connection is closed"


def _publish_failed(subject: str, exc: BaseException) -> PublishError:
    if isinstance(exc, _nats_errors.BadSubjectError):
        reason = "it is not a valid NATS subject (empty, or with whitespace)"
    elif isinstance(exc, _nats_errors.MaxPayloadError):
        reason = "the message is larger than the server's max_payload"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return PublishError(reason, subject, exc)


def _refused(subject: str, stream: str | None, msg: Msg) -> PublishError:
    headers = msg.headers or {}
    status = headers.get("Status")
    if not msg.data and status == "503":
        return PublishError(
            f"no JetStream stream captures this subject (no responders); create one "
            f"with rxws.nats.ensure_stream({stream!r}, [...])",
            subject,
        )
    if not msg.data:
        return PublishError(f"the server answered with status {status}", subject)
    try:
        answer = parse_json(msg.data)
        error = answer["error"]
        description = error.get("description", "")
        code = error.get("err_code", error.get("code"))
    except Exception:
        return PublishError(f"the server answered {msg.data[:200]!r}", subject)
    return PublishError(f"JetStream refused it: {description} (error code {code})", subject)


def publish(
    nc: Client,
    subject: Template,
    *,
    msg_id: Template | None = None,
    stream: str | None = None,
    buffer: int = 100_000,
    window: int = 4096,
    ack_timeout: float = 5.0,
    on_error: Callable[[Exception], None] | None = None,
) -> Publisher:
    """A pipeable operator: publish each message to NATS, then pass it on downstream.

    The message goes out as its raw frame when it carries one (:func:`parse_framed`,
    or ``str``/``bytes`` messages), else serialised with :func:`rxws.dump_json`.
    ``on_next`` never waits for NATS: messages go into a bounded outbound buffer that
    one task on the loop drains; what does not fit is dropped, counted in
    ``stats.dropped`` and reported. That task hands nats-py a batch of messages at a
    time, written as the very bytes ``nc.publish`` would write (a few times cheaper than
    one ``nc.publish`` a message); it uses ``nc.publish`` itself while NATS is away, for
    a message nats-py would refuse (so that nats-py's error is reported), and for a
    client whose ``publish`` is overridden.

    Without ``stream``, messages are published on core NATS, and a NATS outage is
    ridden out by nats-py's reconnect buffer (``pending_size`` in ``nats.connect``).
    With ``stream``, publishing is at-least-once: each message asks JetStream for an
    acknowledgement, at most ``window`` are awaited at a time (asynchronously, never one
    by one), and those not acknowledged when NATS went away (or within
    ``ack_timeout``) are published again; while NATS is away, new messages wait in the
    outbound buffer. A "no responders" answer (no stream, or one briefly away while its
    server restarts) is tried again a few times over about 2.5 s before the message is
    reported and skipped. With ``msg_id``, the ``Nats-Msg-Id`` header lets the stream's
    duplicate window store each message once, even from two publishers.

    Args:
        nc: A connected nats-py client.
        subject: The subject: a string, a ``str.format`` template over the message's
            fields (``"md.{s}"``), or a callable of the message.
        msg_id: The ``Nats-Msg-Id`` header, as a template or callable (``"{seq}"``).
        stream: Publish to JetStream and expect this stream to store the messages.
        buffer: How many messages the outbound buffer holds.
        window: How many JetStream acknowledgements may be outstanding.
        ack_timeout: Seconds after which an unacknowledged message is published again.
        on_error: Called with each :class:`PublishError` (a message skipped: a
            template naming a field the message lacks, a bad subject, the server
            refusing it) and :class:`PublishOverflow` (messages dropped); pass
            ``client.report`` to put them on a ``WebSocketClient``'s ``errors``.

    Returns:
        A :class:`Publisher`: ``source.pipe(publisher)`` gives the same messages and
        completes once everything was published (and acknowledged); its ``stats``
        count what happened.

    Raises:
        TypeError: ``subject`` or ``msg_id`` is neither a string nor a callable.
        ValueError: A template is malformed, or a number is out of range.
    """
    if stream is not None and (not isinstance(stream, str) or not stream):
        raise ValueError(f"stream must be a stream name, not {stream!r}")
    if not isinstance(buffer, int) or buffer < 1:
        raise ValueError(f"buffer must be a positive number of messages, not {buffer!r}")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive number of messages, not {window!r}")
    if not ack_timeout > 0:
        raise ValueError(f"ack_timeout must be a positive number of seconds, not {ack_timeout!r}")
    return Publisher(
        nc,
        subject,
        msg_id=msg_id,
        stream=stream,
        buffer=buffer,
        window=window,
        ack_timeout=float(ack_timeout),
        on_error=on_error,
    )


# ---------------------------------------------------------------------- subscribe


def _consumer_config(deliver: Deliver) -> Any:
    if isinstance(deliver, bool):
        raise ValueError(
            "deliver must be 'all', 'new', 'last', a sequence number or a datetime, "
            f"not {deliver!r}"
        )
    policy = _js_api.DeliverPolicy
    if isinstance(deliver, int):
        if deliver < 1:
            raise ValueError(f"deliver as a stream sequence number starts at 1, not {deliver}")
        return _js_api.ConsumerConfig(
            deliver_policy=policy.BY_START_SEQUENCE, opt_start_seq=deliver
        )
    if isinstance(deliver, datetime.datetime):
        if deliver.tzinfo is None or deliver.utcoffset() is None:
            raise ValueError(
                "deliver as a datetime must be timezone-aware, such as "
                "datetime.now(timezone.utc) - timedelta(minutes=5)"
            )
        return _js_api.ConsumerConfig(deliver_policy=policy.BY_START_TIME, opt_start_time=deliver)
    named = {"all": policy.ALL, "new": policy.NEW, "last": policy.LAST}
    if isinstance(deliver, str) and deliver in named:
        return _js_api.ConsumerConfig(deliver_policy=named[deliver])
    raise ValueError(
        f"deliver must be 'all', 'new', 'last', a stream sequence number or a "
        f"timezone-aware datetime, not {deliver!r}"
    )


class _Subscription:
    """One subscription of :func:`subscribe`."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        parse: Callable[[bytes], Any] | None,
        stream: str | None,
        config: Any,
        on_error: Callable[[Exception], None] | None,
        observer: abc.ObserverBase[Any],
    ) -> None:
        self.nc = nc
        self.subject = subject
        self.parse = parse
        self.stream = stream
        self.config = config
        self.on_error = on_error
        self.observer = observer
        self.failed_in_burst = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        try:
            if self.stream is None:
                sub = await self.nc.subscribe(self.subject, cb=self._on_msg)
            else:
                sub = await self.nc.jetstream().subscribe(
                    self.subject,
                    stream=self.stream,
                    cb=self._on_msg,
                    ordered_consumer=True,
                    config=self.config,
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.observer.on_error(_subscribe_failed(self.subject, self.stream, exc))
            return
        try:
            await asyncio.get_running_loop().create_future()  # until disposed
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            _stop_consumer_tasks(sub)

    async def _on_msg(self, msg: Msg) -> None:
        parse = self.parse
        if parse is None:
            self.observer.on_next(msg.data)
            return
        try:
            value = parse(msg.data)
        except Exception as exc:
            error = ParseError(exc, len(msg.data))
            if not self.failed_in_burst:
                log.warning("%s (on NATS subject %s)", error, msg.subject)
            self.failed_in_burst += 1
            if self.on_error is not None:
                self.on_error(error)
            return
        if self.failed_in_burst:
            if self.failed_in_burst > 1:
                log.warning("%d NATS messages in a row failed to parse", self.failed_in_burst)
            self.failed_in_burst = 0
        self.observer.on_next(value)

    def dispose(self) -> None:
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()


def _stop_consumer_tasks(sub: Any) -> None:
    """Cancel the heartbeat and flow-control tasks of a JetStream push subscription.

    nats-py cancels them in ``unsubscribe``, except when the connection was closed
    first (it raises before), which leaves them sleeping for up to two heartbeats.
    """
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    for name in ("_hbtask", "_fctask"):
        task = getattr(jsi, name, None)
        if isinstance(task, asyncio.Task):
            task.cancel()


def _subscribe_failed(subject: str, stream: str | None, exc: BaseException) -> SubscribeError:
    if isinstance(exc, _js_errors.NotFoundError):
        reason = f"the stream {stream!r} does not exist; create it with rxws.nats.ensure_stream"
    elif isinstance(exc, (_js_errors.ServiceUnavailableError, _nats_errors.NoRespondersError)):
        reason = "JetStream is not enabled on this NATS server (start it with -js)"
    elif isinstance(exc, _js_errors.APIError):
        reason = f"the server said: {exc.description} (error code {exc.err_code})"
    elif isinstance(exc, _nats_errors.BadSubjectError):
        reason = "it is not a valid subject (tokens split by '.', '*' and '>' as wildcards)"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return SubscribeError(subject, reason, exc)


def subscribe(
    nc: Client,
    subject: str,
    *,
    parse: Callable[[bytes], Any] | None = parse_json,
    stream: str | None = None,
    deliver: Deliver = "new",
    on_error: Callable[[Exception], None] | None = None,
) -> Observable[Any]:
    """A cold Observable of the messages on ``subject`` (wildcards allowed).

    Each subscription subscribes on NATS; disposing it unsubscribes. Without
    ``stream`` it reads core NATS (messages published from now on). With ``stream``
    it reads through a JetStream ordered consumer, which starts where ``deliver`` says
    and delivers the stream's messages in order, recreating itself after a gap.

    Args:
        nc: A connected nats-py client.
        subject: The subject, with ``*`` and ``>`` wildcards as NATS allows.
        parse: Applied to each payload (``bytes``); ``None`` passes the payload as is.
            A payload that fails to parse is skipped, logged once per burst and given
            to ``on_error`` as an :class:`rxws.ParseError`.
        stream: Read the JetStream stream of this name.
        deliver: Where a ``stream`` subscription starts: ``"all"`` (the stream's
            start), ``"new"`` (messages stored from now on), ``"last"``, a stream
            sequence number, or a timezone-aware datetime.
        on_error: Called with each payload that failed to parse.

    Returns:
        The Observable. It errors with :class:`SubscribeError` when the subscription
        cannot be made (no such stream, JetStream disabled, a bad subject).

    Raises:
        ValueError: ``subject`` is empty, or ``deliver`` is not one of the above (or is
            given without ``stream``).
    """
    if not isinstance(subject, str) or not subject:
        raise ValueError(f"subject must be a non-empty NATS subject, not {subject!r}")
    config = _consumer_config(deliver)
    if stream is None and deliver != "new":
        raise ValueError(
            f"deliver={deliver!r} replays a JetStream stream: pass stream= as well "
            "(core NATS delivers only new messages)"
        )

    def on_subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        state = _Subscription(nc, subject, parse, stream, config, on_error, observer)
        state.task = _running_loop("subscribe").create_task(state.run())
        return Disposable(state.dispose)

    return reactivex.create(on_subscribe)


# ---------------------------------------------------------------------- streams


_HINTS = {
    10065: "another stream already captures some of these subjects: choose subjects "
    "no other stream has, or publish into that stream",
    10058: "a stream of this name exists with a configuration that cannot be changed "
    "this way (storage type, for one): delete it or pick another name",
    10052: "check the stream configuration (duplicate_window must not exceed max_age)",
}


async def ensure_stream(
    nc: Client,
    name: str,
    subjects: str | Iterable[str],
    *,
    duplicate_window: float = 30.0,
    max_age: float | None = None,
) -> Any:
    """Create the JetStream stream ``name``, or update it to these settings.

    The stream's other settings (storage, retention, limits) are left as they are.

    Args:
        nc: A connected nats-py client.
        name: The stream's name.
        subjects: The subjects it stores (``"md.>"`` or a list).
        duplicate_window: Seconds during which a repeated ``Nats-Msg-Id`` is recognised
            and not stored again. The server keeps every id of the window in memory
            (about 270 bytes each), so keep it short for fast feeds.
        max_age: Seconds after which messages are removed; ``None`` keeps them.

    Returns:
        The stream's ``nats.js.api.StreamInfo`` after the change.

    Raises:
        StreamError: The server refused (its reason inside, such as subjects that
            overlap another stream's), or JetStream is not enabled.
        ValueError: An argument is malformed.
    """
    if not isinstance(name, str) or not name or any(c in name for c in " .*>\t\r\n/\\"):
        raise ValueError(
            f"name must be a stream name without spaces, '.', '*', '>', or slashes, not {name!r}"
        )
    wanted = [subjects] if isinstance(subjects, str) else list(subjects)
    if not wanted or not all(isinstance(s, str) and s for s in wanted):
        raise ValueError(f"subjects must be one or more non-empty subjects, not {subjects!r}")
    if not duplicate_window > 0:
        raise ValueError(
            f"duplicate_window must be a positive number of seconds, not {duplicate_window!r}"
        )
    if max_age is not None and not max_age > 0:
        raise ValueError(f"max_age must be a positive number of seconds or None, not {max_age!r}")
    jsm = nc.jsm()
    settings: dict[str, Any] = {
        "subjects": wanted,
        "duplicate_window": float(duplicate_window),
        "max_age": float(max_age) if max_age is not None else 0.0,
    }
    try:
        try:
            info = await jsm.stream_info(name)
        except _js_errors.NotFoundError:
            config = _js_api.StreamConfig(name=name, **settings)
            return await jsm.add_stream(config)
        return await jsm.update_stream(info.config.evolve(**settings))
    except (_js_errors.ServiceUnavailableError, _nats_errors.NoRespondersError) as exc:
        raise StreamError(
            name, "JetStream is not enabled on this NATS server (start it with -js)", exc
        ) from None
    except _js_errors.APIError as exc:
        hint = _HINTS.get(exc.err_code or 0, "fix the stream's settings")
        raise StreamError(
            name,
            f"the server said: {exc.description} (error code {exc.err_code}); {hint}",
            exc,
        ) from None
    except _nats_errors.TimeoutError as exc:
        raise StreamError(
            name, "the server did not answer in time; check that NATS is up", exc
        ) from None
