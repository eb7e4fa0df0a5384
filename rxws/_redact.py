"""Keep secrets out of text: URL query values, passwords, tokens in paths, header values.

Every URL, log line, repr, exception message and event that rxws writes goes through
here. :class:`Redactor` knows the secret strings of one connection (the values of its
URL's secret-named or token-like query parameters, its password and token-like path
segments, every header value) and blanks them wherever they appear;
:func:`redact_url` blanks the secret parts of any URL by structure.
:class:`RedactingLogger` is the logger rxws hands to websockets, so the request lines
and headers that websockets logs at DEBUG level are redacted too.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

__all__ = ["MASK", "RedactingLogger", "Redactor", "header_items", "redact_tokens", "redact_url"]

MASK = "***"

# Path segments that look like tokens (Binance puts its listen key in the path).
_TOKEN = r"[A-Za-z0-9_\-.~=+]{32,}"
_TOKEN_SEGMENT = re.compile(f"^{_TOKEN}$")
_TOKEN_ANYWHERE = re.compile(_TOKEN)
# Header lines in logs keep their value only for these protocol headers; every other
# header's value (API keys, tokens, cookies, ...) is blanked.
_PLAIN_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "user-agent",
        "server",
        "date",
        "content-length",
        "content-type",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "origin",
    }
)
_MIN_SECRET = 4  # shorter values are not blanked inside free text (too many false hits)


# Query parameters whose values are secrets whatever they look like (matched anywhere in
# the parameter's name, ignoring case: listenKey, api_key, access_token, X-Signature, ...).
_SECRET_NAME = re.compile(
    r"key|token|secret|sig|pass|pwd|auth|cred|session|cookie|jwt|bearer|nonce|otp|ticket",
    re.IGNORECASE,
)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-.~=+%]+")


def _is_secret(name: str, value: str) -> bool:
    """Whether a query value is blanked wherever it appears in free text.

    It is when its parameter has a secret's name, or when the value looks like a token:
    16 or more URL-safe characters, or 8 or more that mix letters and digits. Short
    ordinary values (``mode=custom``, ``symbol=BTCUSDT``, a timestamp) stay readable in
    a close reason or an error message; the URL itself is always shown with every query
    value blanked (:func:`redact_url`).
    """
    if _SECRET_NAME.search(name):
        return True
    if not _TOKEN_CHARS.fullmatch(value):
        return False
    if len(value) >= 16:
        return True
    return len(value) >= 8 and any(c.isdigit() for c in value) and any(c.isalpha() for c in value)


def _secret_parts(url: str) -> list[str]:
    """The secret strings in ``url``: secret query values, password, token-like segments."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = []
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _is_secret(name, value):
            found += [value, quote(value, safe=""), quote(value)]
    for raw in parts.query.split("&"):
        if "=" in raw:
            name, value = raw.split("=", 1)
            if _is_secret(unquote(name), unquote(value)):
                found.append(value)
    if parts.password:
        found += [parts.password, unquote(parts.password)]
    found += [seg for seg in parts.path.split("/") if _TOKEN_SEGMENT.match(seg)]
    return found


def redact_tokens(text: str) -> str:
    """``text`` with every token-like run (32+ URL-safe characters) replaced by ``***``.

    For text from code rxws does not control, such as an exception raised while the
    caller's own code opened a connection to a URL rxws never saw.

    Args:
        text: Any text.

    Returns:
        The redacted text.
    """
    return _TOKEN_ANYWHERE.sub(MASK, text)


def redact_url(url: str) -> str:
    """``url`` with query values, password and token-like path segments replaced by ``***``.

    Args:
        url: Any URL string.

    Returns:
        The redacted URL; query keys, host and the rest of the path stay readable.

    Example:
        >>> redact_url("wss://u:pw@x.io/ws?listenKey=abc&depth=5")
        'wss://u:***@x.io/ws?listenKey=***&depth=***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = (
        "&".join(
            f"{item.split('=', 1)[0]}={MASK}" if "=" in item else item
            for item in parts.query.split("&")
        )
        if parts.query
        else ""
    )
    path = "/".join(MASK if _TOKEN_SEGMENT.match(seg) else seg for seg in parts.path.split("/"))
    return urlunsplit((parts.scheme, netloc, path, query, MASK if parts.fragment else ""))


def header_items(headers: Any) -> Iterable[tuple[str, str]]:
    """The ``(name, value)`` pairs of request headers given in any form websockets takes.

    Args:
        headers: ``None``, a mapping, a list of pairs, or
            ``websockets.datastructures.Headers``.
    """
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    if hasattr(headers, "raw_items"):
        return [(str(k), str(v)) for k, v in headers.raw_items()]
    return [(str(k), str(v)) for k, v in headers]


class Redactor:
    """Blanks the secrets of one connection wherever they appear in text.

    Args:
        url: The connection URL, if known (a string).
        headers: Extra request headers (a mapping, a list of pairs, or
            ``websockets.datastructures.Headers``); all their values are secret.
    """

    def __init__(self, url: str | None = None, headers: Any = None) -> None:
        self._secrets: list[str] = []
        if url:
            self.add_url(url)
        for _, value in header_items(headers):
            self._add(value)

    def _add(self, secret: str) -> None:
        if len(secret) >= _MIN_SECRET and secret not in self._secrets:
            self._secrets.append(secret)
            self._secrets.sort(key=len, reverse=True)

    def add(self, secret: str) -> None:
        """Learn one more secret string (a token built from the URL, say).

        Args:
            secret: The secret; strings under 4 characters are not blanked in free text.
        """
        self._add(secret)

    def add_url(self, url: str) -> None:
        """Learn the secrets of another URL (for URLs that come from a callable).

        Args:
            url: The URL.
        """
        for secret in _secret_parts(url):
            self._add(secret)

    def __call__(self, text: str) -> str:
        """``text`` with every known secret, and sensitive header lines, blanked.

        Args:
            text: Any text.

        Returns:
            The redacted text.
        """
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if "=" in text:
            text = _QUERY_VALUE.sub(rf"\1{MASK}", text)
        if ":" in text:
            text = _redact_header_lines(text)
        return text

    def url(self, url: str) -> str:
        """Redact a URL both by structure and by the known secrets.

        Args:
            url: The URL.

        Returns:
            The redacted URL.
        """
        return self(redact_url(url))


_QUERY_VALUE = re.compile(r"([?&][^=\s&#?/]+=)(?!\*\*\*)[^&\s#'\"]*")
_HEADER_LINE = re.compile(r"^([<>] )([A-Za-z0-9-]+): (.*)$", re.MULTILINE)


def _redact_header_lines(text: str) -> str:
    def fix(match: re.Match[str]) -> str:
        if match.group(2).lower() in _PLAIN_HEADERS:
            return match.group(0)
        return f"{match.group(1) or ''}{match.group(2)}: {MASK}"

    return _HEADER_LINE.sub(fix, text)


class RedactingLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger adapter that formats each record eagerly and redacts it.

    rxws passes one to ``websockets.connect(logger=...)``, so the handshake request
    line (with the URL's query) and the header lines websockets logs at DEBUG level
    reach the handlers with secrets blanked. Tracebacks are formatted and redacted too.

    Args:
        logger: The logger to write to.
        redactor: What blanks the secrets.
    """

    def __init__(self, logger: logging.Logger, redactor: Redactor) -> None:
        super().__init__(logger, {})
        self.redactor = redactor

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Format, redact and log one record (only when ``level`` is enabled)."""
        if not self.isEnabledFor(level):
            return
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            if exc_info is True:
                text += "\n" + traceback.format_exc().rstrip()
            elif isinstance(exc_info, BaseException):
                text += "\n" + "".join(traceback.format_exception(exc_info)).rstrip()
            elif isinstance(exc_info, tuple):
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
        kwargs.pop("stack_info", None)
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, "%s", self.redactor(text), **kwargs)
