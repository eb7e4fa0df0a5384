"""The exceptions rxws raises, all under one base class.

Each class means one thing, and each message says what happened and what to do
about it. URLs and header values in messages are always redacted.

::

    RxwsError                      anything rxws raises on purpose
    ├── ConnectionFailed           a connection could not be opened (refused, DNS, timeout)
    │   ├── HandshakeRejected      the server answered the upgrade with an HTTP status
    │   └── CertificateError       the server's TLS certificate was not trusted
    ├── ConnectionLost             an open connection ended abnormally (close code, reason)
    │   └── IdleTimeout            no message arrived for too long: the link is presumed dead
    ├── ReconnectExhausted         reconnecting gave up after ``max_attempts``
    ├── RotationFailed             a rotation was abandoned; the old connection stays (non-fatal)
    ├── ParseError                 one frame could not be parsed (non-fatal, reported on ``errors``)
    ├── SubscriberError            a subscriber raised while handling a message (non-fatal)
    ├── StreamOverflow             an async stream's buffer filled up (``overflow="error"``)
    ├── StreamClosed               an async stream or client was used after it was closed
    ├── NoRunningLoop              something that runs on the asyncio loop was used outside one
    ├── SubscriptionRejected       the server refused to subscribe a topic (ends that topic)
    ├── NotConnected               ``send`` found no open connection in time
    └── TransportUnavailable       the chosen transport is not installed

``ConnectionFailed`` and ``ConnectionLost`` are retried by :func:`rxws.ops.reconnect`
by default, except ``HandshakeRejected`` with a 4xx status other than 408 and 429, and
``CertificateError``: retrying cannot fix those.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._redact import redact_tokens

__all__ = [
    "CertificateError",
    "ConnectionFailed",
    "ConnectionLost",
    "HandshakeRejected",
    "IdleTimeout",
    "NoRunningLoop",
    "NotConnected",
    "ParseError",
    "ReconnectExhausted",
    "RotationFailed",
    "RxwsError",
    "StreamClosed",
    "StreamOverflow",
    "SubscriberError",
    "SubscriptionRejected",
    "TransportUnavailable",
    "is_retryable",
]


class RxwsError(Exception):
    """Base class of every exception rxws raises on purpose.

    An rxws exception keeps what happened in attributes and what to do about it in
    :attr:`hint`; its message is built from them, ``"<what happened>; <hint>"``, so
    a program reads the fields and a person reads the message. ``args`` holds that
    message, as for any exception.

    Attributes:
        hint: What to do about it, in a few words (``""``: nothing to add).
    """

    hint: str = ""

    def __str__(self) -> str:
        what = self._what()
        return f"{what}; {self.hint}" if self.hint else what

    def _what(self) -> str:
        """What happened, from the exception's fields (by default, its first argument)."""
        return super().__str__()


_CHECK_SERVER = "check that the server is up and the URL is right (reconnect retries this)"


class ConnectionFailed(RxwsError):
    """A websocket connection could not be opened.

    Args:
        url: The redacted URL that was tried.
        reason: What went wrong, in a few words.
        hint: What to do about it.
    """

    def __init__(self, url: str, reason: str, hint: str = _CHECK_SERVER) -> None:
        if not reason.strip():
            # An OSError without a message (the peer reset the link, as a plain server
            # does when it is sent a TLS handshake): say that much, and what it may mean.
            reason = "the connection was closed during the handshake, with no reason given"
            if hint is _CHECK_SERVER and url.lower().startswith("wss://"):
                hint = f"if the server does not speak TLS, use ws:// instead of wss://; {hint}"
        self.url = url
        self.reason = reason
        self.hint = hint
        super().__init__(str(self))

    def _what(self) -> str:
        return f"could not connect to {self.url}: {self.reason}"


class HandshakeRejected(ConnectionFailed):
    """The server refused the websocket upgrade with an HTTP status.

    Args:
        url: The redacted URL that was tried.
        status: The HTTP status code the server answered with.
    """

    def __init__(self, url: str, status: int) -> None:
        if 400 <= status < 500 and status not in (408, 429):
            hint = "fix the URL, credentials or headers; retrying will not help"
        else:
            hint = "the server may be overloaded or restarting; reconnect retries this"
        self.status = status
        super().__init__(
            url, f"the server rejected the websocket handshake with HTTP {status}", hint
        )


class CertificateError(ConnectionFailed):
    """The server's TLS certificate failed verification.

    Args:
        url: The redacted URL that was tried.
        detail: What the TLS library said.
        hint: What to do about it.
    """

    def __init__(
        self,
        url: str,
        detail: str,
        hint: str = "pass ssl=<an ssl.SSLContext that trusts the server's CA>",
    ) -> None:
        self.detail = detail
        super().__init__(
            url,
            f"TLS certificate verification failed ({detail})",
            f"{hint}; retrying will not help",
        )


class ConnectionLost(RxwsError):
    """An open connection ended other than by a normal close (1000 or 1001).

    Args:
        code: The close code, or ``None`` when the TCP link broke without a close frame.
        reason: The close reason the peer sent, or a description of the failure.
    """

    hint = "use rxws.ops.reconnect (WebSocketClient does) to carry on"

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(str(self))

    def _what(self) -> str:
        what = f"close code {self.code}" if self.code is not None else "no close frame"
        detail = f" ({self.reason})" if self.reason else ""
        return f"the websocket connection was lost: {what}{detail}"


class IdleTimeout(ConnectionLost):
    """No message arrived for ``timeout`` seconds, so the link is presumed dead.

    Args:
        timeout: The idle limit in seconds that was exceeded.
    """

    hint = "reconnect replaces it (raise idle_timeout if the feed is quiet by nature)"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(None, f"no message for {timeout:g} s")

    def _what(self) -> str:
        return f"no message arrived for {self.timeout:g} s, so the connection is presumed dead"


class ReconnectExhausted(RxwsError):
    """Reconnecting gave up after ``attempts`` failed attempts.

    Args:
        attempts: How many attempts were made in a row.
        last_error: The error of the last attempt (also the ``__cause__``).
    """

    hint = "raise max_attempts or fix the cause"

    def __init__(self, attempts: int, last_error: BaseException) -> None:
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(str(self))
        self.__cause__ = last_error

    def _what(self) -> str:
        plural = "s" if self.attempts != 1 else ""
        return (
            f"gave up reconnecting after {self.attempts} failed attempt{plural}; "
            f"last error: {self.last_error}"
        )


class RotationFailed(RxwsError):
    """A rotation was abandoned; the connection it would have replaced stays.

    Non-fatal: reported on ``client.errors`` (or ``rotate``'s ``on_error``), and the
    rotation is tried again after a backoff delay.

    Args:
        reason: Why, in a few words (already redacted).
        retry_in: Seconds until the next try, or ``None`` when none is scheduled.
    """

    def __init__(self, reason: str, retry_in: float | None) -> None:
        self.reason = reason
        self.retry_in = retry_in
        self.hint = (
            f"the current connection stays, trying again in {retry_in:.3g} s"
            if retry_in is not None
            else "the current connection stays, the next rotation tries again"
        )
        super().__init__(str(self))

    def _what(self) -> str:
        return f"rotation abandoned: {self.reason}"


class ParseError(RxwsError):
    """One frame could not be parsed; it was skipped and the stream went on.

    Args:
        error: What the parser raised.
        size: The frame's length in characters or bytes.

    Attributes:
        detail: What the parser said, as shown in the message (``"ValueError: ..."``);
            rxws redacts it when the parser quoted a secret.
    """

    hint = "pass parse=None for raw frames or a parser that accepts them"

    def __init__(self, error: BaseException, size: int) -> None:
        self.error = error
        self.size = size
        self.detail = f"{type(error).__name__}: {error}"
        super().__init__(str(self))
        self.__cause__ = error

    def _what(self) -> str:
        return (
            f"skipped a frame of {self.size} characters/bytes that failed to parse: {self.detail}"
        )


class SubscriberError(RxwsError):
    """A subscriber raised while handling a message; the other subscribers were not affected.

    Args:
        error: What the subscriber raised.
    """

    hint = "it was unsubscribed and the others go on"

    def __init__(self, error: BaseException) -> None:
        self.error = error
        super().__init__(str(self))
        self.__cause__ = error

    def _what(self) -> str:
        return f"a subscriber raised {type(self.error).__name__}: {self.error}"


class StreamOverflow(RxwsError):
    """An async stream's buffer was full when a new item arrived.

    Args:
        maxsize: The buffer size that was exceeded.
    """

    hint = 'raise maxsize or choose overflow="drop_oldest", "drop_newest" or "unbounded"'

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        super().__init__(str(self))

    def _what(self) -> str:
        return (
            f"the async stream's buffer of {self.maxsize} items overflowed because the "
            "consumer reads slower than messages arrive"
        )


class StreamClosed(RxwsError):
    """A stream or client was used after it was closed.

    Args:
        what: What was closed, for the message.
    """

    hint = "create a new one"

    def __init__(self, what: str = "the stream") -> None:
        self.what = what
        super().__init__(str(self))

    def _what(self) -> str:
        return f"{self.what} is closed"


class NoRunningLoop(RxwsError, RuntimeError):
    """Something that runs on the asyncio event loop was used outside a running one.

    Also a :class:`RuntimeError`, as asyncio's own "no running event loop" is.

    Args:
        what: What was used (``"rxws.connect(...)"``).
        hint: What to do instead.
    """

    def __init__(
        self,
        what: str,
        hint: str = "use it from inside a running loop (an async def run by asyncio.run)",
    ) -> None:
        self.what = what
        self.hint = hint
        super().__init__(str(self))

    def _what(self) -> str:
        return f"{self.what} runs on the asyncio event loop, and none is running"


class NotConnected(RxwsError):
    """``send`` found no open connection within its timeout.

    Args:
        timeout: How long ``send`` waited, in seconds.
    """

    hint = "check client.status for why, or pass a longer timeout"

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        super().__init__(str(self))

    def _what(self) -> str:
        return f"no open connection to send on after waiting {self.timeout:g} s"


class SubscriptionRejected(RxwsError):
    """The server refused a subscribe request; the topics it named get no messages.

    Token-like text (32 or more URL-safe characters, such as a listen key used as a
    topic) is blanked in the message; ``topics`` keeps the names for the program.

    Args:
        topics: The topics of the rejected request.
        message: What the server said, such as ``"code 2: Invalid request"``.
    """

    _SHOWN = 5
    hint = "check the topic names and the server's limits (the other topics go on)"

    def __init__(self, topics: Sequence[str], message: str) -> None:
        self.topics = tuple(topics)
        self.message = redact_tokens(message)
        super().__init__(str(self))

    def _what(self) -> str:
        shown = ", ".join(repr(t) for t in self.topics[: self._SHOWN])
        more = len(self.topics) - self._SHOWN
        if more > 0:
            shown += f" and {more} more"
        noun = "topic" if len(self.topics) == 1 else "topics"
        return (
            f"the server rejected the subscription of {noun} {redact_tokens(shown)}: {self.message}"
        )


class TransportUnavailable(RxwsError):
    """The transport asked for is not installed.

    Args:
        name: The transport's name.
        extra: The pip extra that installs it.
    """

    def __init__(self, name: str, extra: str) -> None:
        self.name = name
        self.extra = extra
        self.hint = f"install it with pip install 'rxws[{extra}]'"
        super().__init__(str(self))

    def _what(self) -> str:
        return f"the {self.name!r} transport is not installed"


def is_retryable(error: BaseException) -> bool:
    """Whether reconnecting can be expected to cure ``error``.

    The default ``retryable`` policy of :func:`rxws.ops.reconnect`.

    Args:
        error: What the connection failed with.

    Returns:
        ``True`` for :class:`ConnectionFailed` and :class:`ConnectionLost` (including
        :class:`IdleTimeout`); ``False`` for :class:`HandshakeRejected` with a 4xx
        status other than 408 (timeout) and 429 (too many requests), for
        :class:`CertificateError`, and for anything else (bugs are not retried).

    Example:
        >>> is_retryable(HandshakeRejected("wss://x.io/ws", 503))
        True
        >>> is_retryable(HandshakeRejected("wss://x.io/ws", 401))
        False
    """
    if isinstance(error, CertificateError):
        return False
    if isinstance(error, HandshakeRejected):
        return not (400 <= error.status < 500 and error.status not in (408, 429))
    return isinstance(error, (ConnectionFailed, ConnectionLost))
