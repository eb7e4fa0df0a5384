"""Subscription protocols: how a server's topics become frames, and its messages topics.

A :class:`Subscriptions` protocol tells a client, for one kind of server, how to ask for
topics (subscribe and unsubscribe frames, and how many topics one frame may carry), how
to read what comes back (which topic a data message belongs to, what a topic's
Observable emits, how a reply acknowledges or rejects a request), and which limits the
server puts on one connection (:class:`rxws.Limits`).

- :class:`Binance`: Binance's combined streams, with its documented limits as defaults.
- :class:`JsonSubscriptions`: any JSON server, described with templates or functions.

Requests are numbered by the caller: ``subscribe_frames(topics, request_id)`` returns one
:class:`Request` per frame, numbered ``request_id``, ``request_id + 1``, ...; a
:class:`Reply` names the number it answers. :func:`build_requests` calls a protocol and
checks what it returned, so a faulty custom protocol fails with a clear error at the
call instead of a silent gap.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from ._redact import redact_url
from .limits import Limits

__all__ = [
    "Binance",
    "JsonSubscriptions",
    "Reply",
    "Request",
    "Subscriptions",
    "build_requests",
    "topic_list",
]

FrameBuilder = Callable[[list[str], int], Any]
"""A function ``(topics, request_id) -> frame`` for :class:`JsonSubscriptions`."""

_TOPICS = "{topics}"
_TOPIC = "{topic}"
_ID = "{id}"


class Request(NamedTuple):
    """One frame to send, with the number its reply will carry and the topics it names.

    Attributes:
        id: The request number.
        topics: The topics this frame subscribes or unsubscribes.
        frame: What to send: a ``str`` or ``bytes`` as it is, anything else (a dict)
            through the client's ``serialize``.
    """

    id: int
    topics: tuple[str, ...]
    frame: Any


class Reply(NamedTuple):
    """A server's answer to a request.

    Attributes:
        id: The number of the request answered, or ``None`` when the server could not
            tell (it failed to read the request).
        error: What the server said when it refused the request, or ``None`` when it
            accepted it.
    """

    id: int | None
    error: str | None


@runtime_checkable
class Subscriptions(Protocol):
    """What a client needs to know to speak in topics to one kind of server."""

    @property
    def limits(self) -> Limits:
        """The server's limits (fields left ``None`` are not limited)."""
        ...

    @property
    def topics_per_frame(self) -> int | None:
        """How many topics one subscribe or unsubscribe frame may carry (``None``: any)."""
        ...

    def subscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        """The frames that subscribe ``topics``, numbered from ``request_id``."""
        ...

    def unsubscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        """The frames that unsubscribe ``topics``, numbered from ``request_id``."""
        ...

    def topic_of(self, message: Any) -> str | None:
        """The topic a parsed message belongs to, or ``None`` (a reply, a notice)."""
        ...

    def payload(self, message: Any) -> Any:
        """What the topic's Observable emits for a message of that topic."""
        ...

    def reply_of(self, message: Any) -> Reply | None:
        """The reply a parsed message is, or ``None`` if it is not one."""
        ...

    def url(self, base_url: str) -> str:
        """The URL to connect to, given the one the user passed."""
        ...


def topic_list(topics: Iterable[str]) -> tuple[str, ...]:
    """``topics`` checked to be strings, without repeats, in their order.

    Args:
        topics: A list, tuple or other iterable of topic names.

    Returns:
        The topics as a tuple.

    Raises:
        TypeError: ``topics`` is one string, or holds something that is not a string.
        ValueError: A topic is the empty string.
    """
    if isinstance(topics, (str, bytes)):
        raise TypeError(f"pass a list of topic names, not one string: write [{topics!r}]")
    checked: dict[str, None] = {}
    for position, topic in enumerate(topics):
        if not isinstance(topic, str):
            raise TypeError(
                f"topic names must be strings, got {topic!r} ({type(topic).__name__}) "
                f"at position {position}"
            )
        if not topic:
            raise ValueError(f"topic names must not be empty (position {position})")
        checked[topic] = None
    return tuple(checked)


def _chunks(topics: tuple[str, ...], size: int | None) -> list[tuple[str, ...]]:
    if size is None or len(topics) <= size:
        return [topics] if topics else []
    return [topics[i : i + size] for i in range(0, len(topics), size)]


def _describe(error: Any) -> str:
    """A server's error object as one line: ``code 2: Invalid request`` or its text."""
    if isinstance(error, Mapping):
        text = error.get("msg", error.get("message"))
        code = error.get("code")
        if text is not None:
            return f"code {code}: {text}" if code is not None else str(text)
    return str(error)


def build_requests(
    protocol: Subscriptions,
    topics: Iterable[str],
    request_id: int,
    *,
    unsubscribe: bool = False,
) -> list[Request]:
    """Call a protocol for the frames of ``topics`` and check what it returned.

    Args:
        protocol: The protocol.
        topics: The topics to subscribe or unsubscribe.
        request_id: The number of the first request.
        unsubscribe: Build unsubscribe frames instead of subscribe frames.

    Returns:
        The requests (none when ``topics`` is empty).

    Raises:
        TypeError: ``topics`` is not a list of strings, or the protocol returned no
            frame, something other than :class:`Request` objects, or repeated numbers.
        ValueError: The requests do not name exactly ``topics``, or one names more
            topics than the protocol's ``topics_per_frame``.
    """
    wanted = topic_list(topics)
    if not wanted:
        return []
    name = type(protocol).__name__
    method = "unsubscribe_frames" if unsubscribe else "subscribe_frames"
    build = protocol.unsubscribe_frames if unsubscribe else protocol.subscribe_frames
    requests = build(wanted, request_id)
    if not isinstance(requests, list) or not requests:
        raise TypeError(
            f"{name}.{method} returned {requests!r} for {len(wanted)} topic(s); "
            "it must return a non-empty list of rxws.protocols.Request"
        )
    named: list[str] = []
    ids: set[int] = set()
    per_frame = protocol.topics_per_frame
    for request in requests:
        if not isinstance(request, Request) or request.frame is None:
            raise TypeError(
                f"{name}.{method} returned {request!r}; each item must be a "
                "rxws.protocols.Request(id, topics, frame) with a frame to send"
            )
        if isinstance(request.id, bool) or not isinstance(request.id, int) or request.id in ids:
            raise TypeError(f"{name}.{method} gave request number {request.id!r} twice or not int")
        if per_frame is not None and len(request.topics) > per_frame:
            raise ValueError(
                f"{name}.{method} put {len(request.topics)} topics in one frame; "
                f"its topics_per_frame is {per_frame}"
            )
        ids.add(request.id)
        named.extend(request.topics)
    if sorted(named) != sorted(wanted):
        raise ValueError(
            f"{name}.{method} named {len(named)} topic(s) for {len(wanted)} asked for; "
            "each topic must be in exactly one request"
        )
    return requests


class Binance:
    """Binance market streams over the combined-stream endpoint.

    Frames are ``{"method": "SUBSCRIBE", "params": [...], "id": n}``; data arrives as
    ``{"stream": "<topic>", "data": {...}}`` and the topic's Observable emits ``data``;
    replies are ``{"result": null, "id": n}`` or ``{"error": {"code": .., "msg": ..},
    "id": n}``. :meth:`url` turns a base URL or a ``/ws`` URL into the ``/stream`` one.

    The default limits are Binance's documented ones for spot
    (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams,
    "WebSocket Limits"): 1024 streams per connection, 5 incoming messages a second per
    connection (pings and pongs count too), 300 connection attempts every 5 minutes per
    IP, and every connection cut at 24 hours. USD-M futures
    (https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams)
    allow 10 messages a second with the same stream cap and lifetime; that page names no
    connection-attempt limit, so the spot one is kept as the careful choice.

    Binance documents no limit on the streams of one SUBSCRIBE, but large requests are
    reported to fail silently (ccxws issue 161: one of 437 streams failed, one fewer
    worked), so frames carry at most ``topics_per_frame`` topics, 200 by default.

    Args:
        futures: Use the futures limits (10 messages a second).
        messages_per_second: Override the message limit.
        topics_per_frame: Most topics per SUBSCRIBE or UNSUBSCRIBE frame.
    """

    def __init__(
        self,
        *,
        futures: bool = False,
        messages_per_second: float | None = None,
        topics_per_frame: int = 200,
    ) -> None:
        self.futures = futures
        spot = Limits(
            streams_per_connection=1024,
            messages_per_second=5,
            connections_per_window=(300, 300.0),
            connection_lifetime=24 * 3600.0,
        )
        if messages_per_second is None and futures:
            messages_per_second = 10
        self.limits: Limits = spot.merge(Limits(messages_per_second=messages_per_second))
        if isinstance(topics_per_frame, bool) or not isinstance(topics_per_frame, int):
            raise TypeError(f"Binance topics_per_frame must be an int, got {topics_per_frame!r}")
        if topics_per_frame < 1:
            raise ValueError(f"Binance topics_per_frame must be 1 or more, got {topics_per_frame}")
        self.topics_per_frame: int | None = topics_per_frame

    def __repr__(self) -> str:
        return f"Binance(futures={self.futures}, limits={self.limits!r})"

    def _frames(self, method: str, topics: Sequence[str], request_id: int) -> list[Request]:
        chunks = _chunks(topic_list(topics), self.topics_per_frame)
        return [
            Request(n, chunk, {"method": method, "params": list(chunk), "id": n})
            for n, chunk in enumerate(chunks, start=request_id)
        ]

    def subscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        """``SUBSCRIBE`` frames for ``topics``, numbered from ``request_id``.

        Raises:
            TypeError: A topic is not a string, or ``topics`` is one string.
        """
        return self._frames("SUBSCRIBE", topics, request_id)

    def unsubscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        """``UNSUBSCRIBE`` frames for ``topics``, numbered from ``request_id``.

        Raises:
            TypeError: A topic is not a string, or ``topics`` is one string.
        """
        return self._frames("UNSUBSCRIBE", topics, request_id)

    def topic_of(self, message: Any) -> str | None:
        """The ``stream`` of a combined-stream message, or ``None``."""
        if isinstance(message, dict) and "data" in message:
            stream = message.get("stream")
            if isinstance(stream, str):
                return stream
        return None

    def payload(self, message: Any) -> Any:
        """The ``data`` of a combined-stream message."""
        return message["data"]

    def reply_of(self, message: Any) -> Reply | None:
        """``{"result": ..., "id": n}`` or ``{"error": {...}, "id": n}`` as a reply."""
        if not isinstance(message, dict) or "id" not in message:
            return None
        if "error" in message:
            ident = message["id"]
            number = ident if isinstance(ident, int) and not isinstance(ident, bool) else None
            return Reply(number, _describe(message["error"]))
        if "result" in message and isinstance(message["id"], int):
            return Reply(message["id"], None)
        return None

    def url(self, base_url: str) -> str:
        """The combined-stream URL: ``.../ws`` becomes ``.../stream``; a bare host gets it.

        Raises:
            ValueError: ``base_url`` is a single raw stream's URL (``/ws/btcusdt@trade``).
        """
        parts = urlsplit(base_url)
        segments = parts.path.rstrip("/").split("/")
        if segments[-1] == "ws":
            segments[-1] = "stream"
        elif segments[-1] != "stream":
            if "ws" in segments or "@" in parts.path:
                raise ValueError(
                    f"{redact_url(base_url)} is a single raw stream's URL; pass the base URL "
                    "(such as wss://stream.binance.com:9443) and subscribe topics instead"
                )
            segments.append("stream")
        return urlunsplit(parts._replace(path="/".join(segments)))


def _placeholders(node: Any) -> set[str]:
    if isinstance(node, Mapping):
        return set().union(*(_placeholders(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node))
    return {node} if node in (_TOPICS, _TOPIC, _ID) else set()


def _fill(node: Any, topics: list[str], ident: int) -> Any:
    if isinstance(node, Mapping):
        return {key: _fill(value, topics, ident) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, topics, ident) for value in node]
    if node == _TOPICS:
        return list(topics)
    if node == _TOPIC:
        return topics[0]
    if node == _ID:
        return ident
    return node


class JsonSubscriptions:
    """A subscription protocol for a JSON server, built from templates or functions.

    A template is the frame as a dict (or list) in which the string ``"{topics}"``
    stands for the list of topics, ``"{topic}"`` for a single topic (then each frame
    carries one), and ``"{id}"`` for the request number. A function ``(topics,
    request_id) -> frame`` may be given instead, for anything a template cannot say.

    Example (Bybit-like)::

        JsonSubscriptions(
            subscribe={"op": "subscribe", "args": "{topics}", "req_id": "{id}"},
            unsubscribe={"op": "unsubscribe", "args": "{topics}", "req_id": "{id}"},
            topic="topic", payload="data", id_field="req_id", topics_per_frame=10,
            limits=rxws.Limits(streams_per_connection=500),
        )

    Args:
        subscribe: The subscribe frame's template, or a function building it.
        unsubscribe: The unsubscribe frame's template, or a function building it.
        topic: The field naming a data message's topic, or a function
            ``message -> topic or None``.
        payload: The field a topic's Observable emits, a function ``message ->
            value``, or ``None`` to emit the whole message.
        reply: A function ``message -> (request_id, error or None) or None``. By
            default a dict with ``id_field`` that names no topic is a reply, refused
            when it carries a true ``error_field``.
        id_field: The reply field holding the request number (digit strings count).
        error_field: The reply field holding the server's error.
        topics_per_frame: Most topics per frame (``None``: any; 1 with ``"{topic}"``).
        limits: The server's limits.
        url: A function mapping the user's URL to the one to connect to.

    Raises:
        TypeError: A template or function is of the wrong kind.
        ValueError: A template names no topics, or both ``"{topic}"`` and
            ``"{topics}"``, or ``topics_per_frame`` contradicts ``"{topic}"``.
    """

    def __init__(
        self,
        subscribe: Mapping[str, Any] | list[Any] | FrameBuilder,
        unsubscribe: Mapping[str, Any] | list[Any] | FrameBuilder,
        *,
        topic: str | Callable[[Any], str | None] = "topic",
        payload: str | Callable[[Any], Any] | None = None,
        reply: Callable[[Any], tuple[int | None, str | None] | None] | None = None,
        id_field: str = "id",
        error_field: str = "error",
        topics_per_frame: int | None = None,
        limits: Limits | None = None,
        url: Callable[[str], str] | None = None,
    ) -> None:
        one_each = False
        for name, template in (("subscribe", subscribe), ("unsubscribe", unsubscribe)):
            if callable(template):
                continue
            if not isinstance(template, (Mapping, list)):
                raise TypeError(
                    f"JsonSubscriptions {name} must be a dict template or a function "
                    f"(topics, request_id) -> frame, got {type(template).__name__}"
                )
            marks = _placeholders(template)
            if _TOPIC in marks and _TOPICS in marks:
                raise ValueError(
                    f'JsonSubscriptions {name} template uses both "{{topic}}" and '
                    '"{topics}"; use "{topics}" for a list or "{topic}" for one per frame'
                )
            if not marks & {_TOPIC, _TOPICS}:
                raise ValueError(
                    f"JsonSubscriptions {name} template names no topics: put "
                    '"{topics}" (a list) or "{topic}" (one per frame) where they go'
                )
            one_each = one_each or _TOPIC in marks
        if topics_per_frame is not None and (
            isinstance(topics_per_frame, bool) or not isinstance(topics_per_frame, int)
        ):
            raise TypeError(
                f"JsonSubscriptions topics_per_frame must be an int or None, "
                f"got {topics_per_frame!r}"
            )
        if topics_per_frame is not None and topics_per_frame < 1:
            raise ValueError(
                f"JsonSubscriptions topics_per_frame must be 1 or more, got {topics_per_frame}"
            )
        if one_each and topics_per_frame not in (None, 1):
            raise ValueError(
                'a template with "{topic}" carries one topic per frame; '
                f'drop topics_per_frame={topics_per_frame} or use "{{topics}}"'
            )
        if limits is not None and not isinstance(limits, Limits):
            raise TypeError(f"JsonSubscriptions limits must be rxws.Limits, got {limits!r}")
        if not (isinstance(topic, str) or callable(topic)):
            raise TypeError(
                f"JsonSubscriptions topic must be a field name or a function, got {topic!r}"
            )
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._topic = topic
        self._payload = payload
        self._reply = reply
        self._id_field = id_field
        self._error_field = error_field
        self._url = url
        self.topics_per_frame: int | None = 1 if one_each else topics_per_frame
        self.limits: Limits = limits if limits is not None else Limits()

    def __repr__(self) -> str:
        return (
            f"JsonSubscriptions(topics_per_frame={self.topics_per_frame}, limits={self.limits!r})"
        )

    def _frames(
        self,
        kind: str,
        build: Mapping[str, Any] | list[Any] | FrameBuilder,
        topics: Sequence[str],
        request_id: int,
    ) -> list[Request]:
        requests = []
        for i, chunk in enumerate(_chunks(topic_list(topics), self.topics_per_frame)):
            ident = request_id + i
            if callable(build):
                frame = build(list(chunk), ident)
                if frame is None:
                    raise TypeError(
                        f"the JsonSubscriptions {kind} function returned None for "
                        f"{len(chunk)} topic(s); it must return the frame to send "
                        "(a dict, list, str or bytes)"
                    )
            else:
                frame = _fill(build, list(chunk), ident)
            requests.append(Request(ident, chunk, frame))
        return requests

    def subscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        """The subscribe frames for ``topics``, numbered from ``request_id``.

        Raises:
            TypeError: A topic is not a string, or the function returned no frame.
        """
        return self._frames("subscribe", self._subscribe, topics, request_id)

    def unsubscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        """The unsubscribe frames for ``topics``, numbered from ``request_id``.

        Raises:
            TypeError: A topic is not a string, or the function returned no frame.
        """
        return self._frames("unsubscribe", self._unsubscribe, topics, request_id)

    def topic_of(self, message: Any) -> str | None:
        """The message's topic, by the ``topic`` field or function."""
        if not isinstance(self._topic, str):
            return self._topic(message)
        if isinstance(message, dict):
            value = message.get(self._topic)
            if isinstance(value, str):
                return value
        return None

    def payload(self, message: Any) -> Any:
        """What the topic's Observable emits: the ``payload`` field, or the message."""
        if self._payload is None:
            return message
        if isinstance(self._payload, str):
            if isinstance(message, dict) and self._payload in message:
                return message[self._payload]
            return message
        return self._payload(message)

    def reply_of(self, message: Any) -> Reply | None:
        """The reply ``message`` is, by the ``reply`` function or the id and error fields."""
        if self._reply is not None:
            found = self._reply(message)
            if found is None:
                return None
            ident, error = found
            return Reply(ident, None if error is None else str(error))
        if not isinstance(message, dict) or self._id_field not in message:
            return None
        if self.topic_of(message) is not None:
            return None
        ident = message[self._id_field]
        if isinstance(ident, str) and ident.isdigit():
            ident = int(ident)
        if isinstance(ident, bool) or not isinstance(ident, int):
            ident = None
        error = message.get(self._error_field)
        return Reply(ident, _describe(error) if error else None)

    def url(self, base_url: str) -> str:
        """The URL to connect to: ``base_url``, or what the ``url`` function makes of it."""
        return base_url if self._url is None else self._url(base_url)
