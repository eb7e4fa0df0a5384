"""The ``rxws`` command line: ``demo``, ``listen``, ``relay`` and ``exchange``.

::

    rxws demo [--duration S] [--count N] [--symbols S ...] [--rate N] [--max-streams N]
              [--filter k=v[,k=v...]]... [--rotate-every S] [--drop-every S]
    rxws listen URL [--filter k=v[,k=v...]]... [--send JSON]... [--send-text TEXT]...
                    [--count N] [--raw] [--timestamps] [--rotate-every S]
                    [--idle-timeout S] [--cafile PEM | --insecure]
                    [--topic T]... [--protocol binance] [--max-streams N] [--max-rate R]
    rxws listen nats://HOST:PORT --subject SUBJECT [--stream NAME]
                    [--deliver all|new|last|SEQ] [--filter ...]... [--count N] [--raw]
    rxws relay URL --nats NATS_URL --subject TEMPLATE [--msg-id TEMPLATE] [--stream NAME]
                   [--topic T]... [--max-streams N] [--max-rate R] [--filter ...]...
                   [--send JSON]... [--buffer N]
    rxws exchange [--host H] [--port P] [--symbols S ...] [--rate N] [--drop-every S]
                  [--drop-after N] [--drop-code C] [--malformed-every N] [--refuse STATUS]...

With ``--topic``, ``listen`` and ``relay`` speak in topics (Binance combined streams,
``btcusdt@trade``): the client spreads them over as many connections as the limits
require (``--max-streams`` topics per connection, ``--max-rate`` messages a second sent
on one), and each topic's payload is printed or published. The status line then says
how many connections are open. ``relay`` publishes every message to NATS (``--subject``
and ``--msg-id`` are ``str.format`` templates over the message's fields) and
``listen nats://`` prints what a NATS subject or JetStream stream holds; both need the
``nats`` extra (``pip install 'rxws[nats]'``) and exit 1 with one line when NATS cannot
be reached.

Messages go to stdout, one JSON document per line (``jq``-friendly). What happens to
the connection goes to stderr: one line per event, each starting with ``rxws:``, and a
status line (state, message rate, reconnects, rotations, last error). When stderr is a
terminal and the ``cli`` extra is installed (``pip install 'rxws[cli]'``, which brings
``rich``), the status line is redrawn in place; otherwise it is printed as a plain line
every ``--status-every`` seconds.

One ``--filter`` is one dict whose pairs are AND-ed; several ``--filter`` options are
OR-ed, as in ``stream_filter``. Values are read as JSON when they parse (``1``,
``true``, ``"x"``, ``[1,2]``), else as plain strings; an empty value (``s=``) is an
error, and ``s='""'`` matches the empty string.

``demo`` runs for 15 seconds by default (or until Ctrl-C, or ``--count`` messages),
long enough for the demo exchange to drop the connections and for the client to rotate
them. The exchange allows ``--max-streams`` topics per connection (2 by default), so
the client spreads its symbols over several connections. It ends with a summary:
messages, rate per symbol, reconnects, rotations, the connections and their topics,
limit violations, gaps and repeats in each symbol's trade ids, and the latency from
the exchange's timestamp to delivery. It exits with status 1 if rxws lost or repeated
a message or broke the exchange's limit.

``listen`` exits with status 1 and one line on stderr when its first connection cannot
be made (a host that cannot be reached, a refused handshake, ``wss://`` to a plain
server); once it has connected, it reconnects with backoff after every drop. Every
command-line mistake (an unknown option, a malformed filter, a URL that cannot be
connected to as written, a CA file that cannot be read) exits with status 2 and one
line on stderr, before anything is started. Ctrl-C (or SIGTERM) stops any command
cleanly with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import logging
import math
import os
import re
import signal
import ssl
import string
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, ClassVar, NoReturn, TextIO
from urllib.parse import urlsplit

from reactivex import Observable
from reactivex.disposable import CompositeDisposable
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from . import __version__
from .backoff import Backoff
from .client import ClientStats, WebSocketClient
from .codec import dump_json, parse_json
from .errors import (
    CertificateError,
    ConnectionFailed,
    ConnectionLost,
    HandshakeRejected,
    IdleTimeout,
    RotationFailed,
    RxwsError,
    SubscriptionRejected,
)
from .events import Connected, Connecting, Disconnected, Event, Failed, Retrying, Rotated
from .filters import matches
from .limits import Limits
from .protocols import Binance
from .source import describe_url
from .testing import DEFAULT_SYMBOLS, DemoExchange

__all__ = ["build_parser", "main", "parse_args", "parse_filter", "run"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_DEMO_KEYS = ("e", "E", "s", "t", "seq", "p", "q")  # the keys of a demo trade
_SYMBOL = re.compile(r"[A-Z0-9]{2,20}")

log = logging.getLogger("rxws.cli")


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_one_line(message)} (see --help)\n")


# ---------------------------------------------------------------------- argument types


def parse_filter(text: str) -> dict[str, Any]:
    """Parse one ``--filter`` value, ``k=v[,k=v...]``, into a dict.

    Each value is read as JSON when it parses (``i=2`` gives ``2``, ``ok=true`` gives
    ``True``, ``s="BTC"`` gives ``"BTC"``), else taken as the plain string (``s=BTC``).
    A value that starts like a JSON array, object or string may contain commas
    (``p=[1,2]``, ``n="a,b"``). An empty value (``s=``, often a shell variable that was
    not set) is refused; ``s=""`` matches the empty string.

    Args:
        text: The option's value.

    Returns:
        The dict of pairs.

    Raises:
        argparse.ArgumentTypeError: A pair has no ``=``, an empty key or value, or a
            key given twice.

    Example:
        >>> parse_filter("s=BTCUSDT,e=trade,i=2")
        {'s': 'BTCUSDT', 'e': 'trade', 'i': 2}
    """
    pairs: dict[str, Any] = {}
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)

    def bad(why: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(
            f"malformed filter {text!r}: {why}; expected key=value[,key=value...]"
        )

    while True:
        eq = text.find("=", pos)
        comma = text.find(",", pos)
        if eq < 0 or (0 <= comma < eq):
            part = text[pos : comma if comma >= 0 else end]
            raise bad(f"{part!r} has no '='")
        key = text[pos:eq].strip()
        if not key:
            raise bad("a key is empty")
        if key in pairs:
            raise bad(f"key {key!r} is given twice")
        start = eq + 1
        value: Any = _NO_VALUE
        if start < end and text[start] in '[{"':
            try:
                value, after = decoder.raw_decode(text, start)
            except ValueError:
                value = _NO_VALUE
            else:
                if after < end and text[after] != ",":
                    value = _NO_VALUE  # e.g. "[1]x": not one JSON value, read as text
                else:
                    pos = after
        if value is _NO_VALUE:
            comma = text.find(",", start)
            stop = comma if comma >= 0 else end
            raw = text[start:stop]
            if not raw.strip():
                raise bad(f"{key!r} has an empty value (write {key}='\"\"' for an empty string)")
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            pos = stop
        pairs[key] = value
        if pos >= end:
            return pairs
        pos += 1  # past the comma
        if pos >= end:
            raise bad("it ends with ','")


_NO_VALUE: Any = object()


@dataclass(frozen=True)
class _Frame:
    """One ``--send`` (JSON, checked) or ``--send-text`` (any text) frame."""

    text: str
    is_json: bool


def _json_frame(text: str) -> _Frame:
    try:
        json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a JSON document, got {text!r} ({exc}); use --send-text for a "
            "frame that is not JSON"
        ) from None
    return _Frame(text, True)


def _text_frame(text: str) -> _Frame:
    return _Frame(text, False)


def _ws_url(text: str) -> str:
    """A websocket URL that can be connected to as written, else a one-line reason."""
    head, hash_, _ = text.partition("#")
    shown = describe_url(head) + ("#..." if hash_ else "")

    def bad(why: str) -> argparse.ArgumentTypeError:
        return argparse.ArgumentTypeError(f"{shown!r} {why}")

    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss"):
        raise bad("is not a websocket URL; use ws://host[:port]/path or wss://host[:port]/path")
    if hash_:
        raise bad(
            "has a #fragment, which a websocket URL cannot carry (it is never sent to "
            "the server); remove it, or write a '#' that is part of a value as %23"
        )
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise bad(f"is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise bad("has no host; use ws://host[:port]/path or wss://host[:port]/path")
    if port == 0:
        raise bad("has port 0, which cannot be connected to; use a port from 1 to 65535")
    try:
        parse_uri(text)
    except (InvalidURI, ValueError) as exc:
        why = exc.msg if isinstance(exc, InvalidURI) else str(exc)
        raise bad(f"is not a valid websocket URL: {why}") from None
    return text


_NATS_SCHEMES = ("nats", "tls")


def _is_nats(url: str) -> bool:
    return url.partition("://")[0].lower() in _NATS_SCHEMES


def _nats_url(text: str) -> str:
    """One NATS URL, or several separated by commas (nats://host:port, tls://...)."""
    for one in text.split(","):
        scheme, sep, rest = one.strip().partition("://")
        host = rest.rpartition("@")[2].split("/", 1)[0]
        if not sep or scheme.lower() not in _NATS_SCHEMES or not host:
            shown = f"{scheme}{sep}{host}" if sep else one
            raise argparse.ArgumentTypeError(
                f"{shown!r} is not a NATS URL; use nats://host:port (tls:// for TLS; "
                "several separated by commas)"
            )
    return text


def _listen_url(text: str) -> str:
    """A websocket URL, or a NATS one (``nats://``, ``tls://``) to read NATS."""
    return _nats_url(text) if _is_nats(text) else _ws_url(text)


def _template(option: str) -> Callable[[str], str]:
    """An argparse ``type``: a ``str.format`` template over a message's fields (md.{s})."""

    def check(text: str) -> str:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"{option} {text!r} is not a valid template ({exc}); name the message's "
                "fields in braces, as in md.{s}"
            ) from None
        if not text or any(not f or f.split(".", 1)[0].split("[", 1)[0].isdigit() for f in fields):
            raise argparse.ArgumentTypeError(
                f"{option} {text!r} must name the message's fields in braces, as in md.{{s}}"
            )
        return text

    return check


def _stream_name(text: str) -> str:
    if not text or any(c in text for c in " .*>\t\r\n/\\"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a JetStream stream name (no spaces, '.', '*', '>' or slashes)"
        )
    return text


def _deliver(text: str) -> str | int:
    if text in ("all", "new", "last"):
        return text
    try:
        seq = int(text)
    except ValueError:
        seq = 0
    if seq < 1:
        raise argparse.ArgumentTypeError(
            f"expected all, new, last or a stream sequence number >= 1, got {text!r}"
        )
    return seq


def _topic(text: str) -> str:
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(
            f"expected a topic name without spaces, such as btcusdt@trade, got {text!r}"
        )
    return text


def _number_type(
    kind: Callable[[str], float], accept: Callable[[float], bool], expected: str
) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(text)`` when ``accept`` takes it, else one line."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan  # accepted by nothing
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


_positive_int = _number_type(int, lambda n: n >= 1, "a whole number >= 1")
_positive_float = _number_type(float, lambda x: 0 < x < math.inf, "a number of seconds > 0")
_messages_per_second = _number_type(
    float, lambda x: 0 < x < math.inf, "a number of messages per second > 0"
)
_seconds_or_zero = _number_type(float, lambda x: 0 <= x < math.inf, "a number of seconds >= 0")
_rate = _number_type(float, lambda x: 0.1 <= x <= 100_000, "messages per second from 0.1 to 100000")
_port = _number_type(int, lambda n: 0 <= n <= 65535, "a port from 0 to 65535")
_close_code = _number_type(
    int,
    lambda n: n in (1000, 1001, 1002, 1003) or 1007 <= n <= 1014 or 3000 <= n <= 4999,
    "a websocket close code (1000-1003, 1007-1014 or 3000-4999)",
)
_refusal_status = _number_type(int, lambda n: 300 <= n <= 599, "an HTTP status from 300 to 599")


def _symbol(text: str) -> str:
    symbol = text.strip().upper()
    if not _SYMBOL.fullmatch(symbol):
        raise argparse.ArgumentTypeError(
            f"expected a symbol of 2 to 20 letters and digits (such as BTCUSDT), got {text!r}"
        )
    return symbol


def _cafile(text: str) -> ssl.SSLContext:
    """A TLS context that trusts the CA certificates in a PEM file (read now)."""
    if not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    try:
        return ssl.create_default_context(cafile=text)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} holds no CA certificate in PEM format ({_one_line(str(exc))})"
        ) from None


def _add_transport(parser: argparse.ArgumentParser) -> None:
    """The ``--transport`` option every command that opens a websocket has."""
    parser.add_argument(
        "--transport",
        choices=["websockets", "picows"],
        default="websockets",
        help="the websocket implementation (picows: pip install 'rxws[picows]')",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``rxws`` command.

    Returns:
        A parser whose errors are one line on stderr and exit status 2.
    """
    parser = _OneLineParser(
        prog="rxws",
        description="One websocket connection, as many reactive streams as you want. "
        "Messages go to stdout as JSON lines; connection news goes to stderr.",
    )
    parser.add_argument("--version", action="version", version=f"rxws {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True

    def add_common(p: argparse.ArgumentParser, status_every: float) -> None:
        p.add_argument(
            "--filter",
            action="append",
            type=parse_filter,
            default=[],
            metavar="K=V[,K=V...]",
            help="keep messages that have all these pairs (values are JSON when they "
            "parse, else strings; K='\"\"' for an empty string); repeat to keep messages "
            "matching any of several",
        )
        p.add_argument(
            "--count",
            type=_positive_int,
            metavar="N",
            help="exit after printing N data messages (replies to what was sent do not count)",
        )
        p.add_argument(
            "--timestamps",
            action="store_true",
            help="start every line with the local time it was received (ISO 8601, ms)",
        )
        _add_transport(p)
        p.add_argument(
            "--status-every",
            type=_seconds_or_zero,
            default=status_every,
            metavar="S",
            help="when stderr is not a terminal, print the status line every S seconds "
            f"(default {status_every:g}; 0: never)",
        )
        p.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0,
            help="log what rxws does to stderr (-vv for debug detail)",
        )

    def add_feed(p: argparse.ArgumentParser, symbols: str, rate: float) -> None:
        p.add_argument(
            "--symbols",
            nargs="+",
            type=_symbol,
            default=list(DEFAULT_SYMBOLS),
            metavar="SYMBOL",
            help=f"{symbols} (default: {' '.join(DEFAULT_SYMBOLS)})",
        )
        p.add_argument(
            "--rate",
            type=_rate,
            default=rate,
            metavar="N",
            help=f"trades per second, over all symbols (default {rate:g})",
        )

    def add_topics(p: argparse.ArgumentParser, verb: str) -> None:
        group = p.add_argument_group(
            "topics, sharded over as many connections as the limits require"
        )
        group.add_argument(
            "--topic",
            action="append",
            type=_topic,
            default=[],
            metavar="T",
            help=f"subscribe this topic (such as btcusdt@trade) and {verb} its payloads; "
            "repeatable",
        )
        group.add_argument(
            "--protocol",
            choices=["binance"],
            default="binance",
            help="how topics are subscribed: binance (combined streams, "
            '{"stream": T, "data": ...}; the default and, for now, the only one)',
        )
        group.add_argument(
            "--max-streams",
            type=_positive_int,
            metavar="N",
            help="with --topic: at most N topics per connection (binance: 1024)",
        )
        group.add_argument(
            "--max-rate",
            type=_messages_per_second,
            metavar="R",
            help="with --topic: at most R messages a second sent on one connection (binance: 5)",
        )

    demo = sub.add_parser(
        "demo",
        help="stream from the embedded demo exchange (no network needed)",
        description="Start the embedded demo exchange on loopback, with faults on (it "
        "drops every connection now and then), and stream its trades through a "
        "WebSocketClient with reconnect and make-before-break rotation. Runs for "
        "--duration seconds, until Ctrl-C, or until --count messages, then prints a "
        "summary: nothing lost or repeated by rxws, and latency.",
    )
    add_common(demo, status_every=2.0)
    demo.add_argument(
        "--duration",
        type=_seconds_or_zero,
        default=15.0,
        metavar="S",
        help="stop after S seconds (default 15; 0: until Ctrl-C)",
    )
    add_feed(demo, "the symbols the exchange trades, all subscribed", rate=50.0)
    demo.add_argument(
        "--rotate-every",
        type=_positive_float,
        default=3.0,
        metavar="S",
        help="replace the connection every S seconds, make-before-break (default 3)",
    )
    demo.add_argument(
        "--max-streams",
        type=_positive_int,
        default=2,
        metavar="N",
        help="the exchange allows N topics per connection and the client spreads the "
        "symbols' topics over as many connections as that takes (default 2)",
    )
    demo.add_argument(
        "--drop-every",
        type=_positive_float,
        default=5.0,
        metavar="S",
        help="the exchange drops every connection every S seconds (default 5)",
    )

    listen = sub.add_parser(
        "listen",
        help="print the messages of a websocket URL",
        description="Connect to URL and print one JSON line per message (non-JSON text "
        "frames as JSON strings). Exits 1 if the first connection fails; after that, "
        "reconnects with backoff.",
    )
    listen.add_argument(
        "url",
        type=_listen_url,
        metavar="URL",
        help="a ws:// or wss:// URL, or nats://host:port to read NATS (with --subject)",
    )
    add_common(listen, status_every=10.0)
    listen.add_argument(
        "--send",
        dest="frames",
        action="append",
        type=_json_frame,
        default=[],
        metavar="JSON",
        help="send this JSON document on every new connection, e.g. a subscription "
        "(repeatable; --send and --send-text frames go out in the order given); the "
        "server's replies to it (same id) go to stderr",
    )
    listen.add_argument(
        "--send-text",
        dest="frames",
        action="append",
        type=_text_frame,
        metavar="TEXT",
        help="send this text frame, as is, on every new connection (repeatable)",
    )
    listen.add_argument(
        "--raw", action="store_true", help="print each frame as received, one per line"
    )
    listen.add_argument(
        "--rotate-every",
        type=_positive_float,
        metavar="S",
        help="replace the connection every S seconds, make-before-break",
    )
    listen.add_argument(
        "--idle-timeout",
        type=_positive_float,
        metavar="S",
        help="reconnect when no message arrives for S seconds",
    )
    tls = listen.add_mutually_exclusive_group()
    tls.add_argument(
        "--cafile",
        type=_cafile,
        metavar="PEM",
        help="trust the CA certificates in this PEM file (wss:// only)",
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="do not check the server's TLS certificate (wss:// only; unsafe: anyone on "
        "the way can read and change the feed)",
    )

    add_topics(listen, "print")
    nats_options = listen.add_argument_group("with a nats:// URL")
    nats_options.add_argument(
        "--subject",
        metavar="SUBJECT",
        help="the NATS subject to read, wildcards allowed (md.>, md.BTCUSDT)",
    )
    nats_options.add_argument(
        "--stream",
        type=_stream_name,
        metavar="NAME",
        help="read this JetStream stream (replayable) instead of live core NATS",
    )
    nats_options.add_argument(
        "--deliver",
        type=_deliver,
        default="new",
        metavar="all|new|last|SEQ",
        help="with --stream: where to start (default new)",
    )

    add_relay(sub, add_topics)

    exchange = sub.add_parser(
        "exchange",
        help="run the demo exchange alone, optionally with faults",
        description="Run the demo exchange until Ctrl-C: /stream sends every trade, /ws "
        "sends what was subscribed to with "
        '{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}. '
        "The fault options break it on purpose, to watch a client cope.",
    )
    exchange.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    exchange.add_argument(
        "--port", type=_port, default=8765, metavar="P", help="port (default 8765; 0: any)"
    )
    add_feed(exchange, "the symbols it trades", rate=200.0)
    exchange.add_argument(
        "--combined",
        action="store_true",
        help="many topics, Binance-like: any <name>@trade can be subscribed, and /stream "
        'sends {"stream": T, "data": trade} (for listen --topic and relay --topic)',
    )
    exchange.add_argument(
        "--max-streams",
        type=_positive_int,
        metavar="N",
        help="refuse a SUBSCRIBE that would put more than N topics on one connection",
    )
    exchange.add_argument(
        "--drop-every",
        type=_positive_float,
        metavar="S",
        help="fault: close every connection every S seconds",
    )
    exchange.add_argument(
        "--drop-after",
        type=_positive_int,
        metavar="N",
        help="fault: close each connection after sending it N trades",
    )
    exchange.add_argument(
        "--drop-code",
        type=_close_code,
        default=1011,
        metavar="C",
        help="the close code of those drops (default 1011; 1000 is a normal close)",
    )
    exchange.add_argument(
        "--malformed-every",
        type=_positive_int,
        metavar="N",
        help="fault: send a frame of broken JSON after every N trades",
    )
    exchange.add_argument(
        "--refuse",
        action="append",
        type=_refusal_status,
        default=[],
        metavar="STATUS",
        help="fault: answer the next handshake with this HTTP status (repeatable: one "
        "handshake each, in order)",
    )
    exchange.add_argument(
        "-v", "--verbose", action="count", default=0, help="log connections to stderr"
    )
    return parser


def add_relay(sub: Any, add_topics: Callable[[argparse.ArgumentParser, str], None]) -> None:
    """The ``relay`` command's parser."""
    relay = sub.add_parser(
        "relay",
        help="publish a websocket feed to NATS",
        description="Read URL (reconnecting, rotating, with --topic the topics sharded "
        "over connections) and publish every message to NATS until Ctrl-C. With "
        "--msg-id, two relays can run hot-hot into one --stream, which stores each "
        "message once. A status line goes to stderr every second. Exits 1 if NATS or "
        "the first websocket connection cannot be reached.",
    )
    relay.add_argument("url", type=_ws_url, metavar="URL", help="a ws:// or wss:// URL")
    relay.add_argument(
        "--nats",
        required=True,
        type=_nats_url,
        metavar="NATS_URL",
        help="nats://host:port (several separated by commas)",
    )
    relay.add_argument(
        "--subject",
        required=True,
        type=_template("--subject"),
        metavar="TEMPLATE",
        help="the subject, a template over the message's fields, such as md.{s}",
    )
    relay.add_argument(
        "--msg-id",
        type=_template("--msg-id"),
        metavar="TEMPLATE",
        help="the Nats-Msg-Id, a template such as {seq}: JetStream stores each id once",
    )
    relay.add_argument(
        "--stream",
        type=_stream_name,
        metavar="NAME",
        help="publish into this JetStream stream (created on the subject's prefix, such "
        "as md.>, when missing); acknowledged, at least once",
    )
    add_topics(relay, "publish")
    relay.add_argument(
        "--filter",
        action="append",
        type=parse_filter,
        default=[],
        metavar="K=V[,K=V...]",
        help="publish only the messages that have all these pairs (as for listen); "
        "repeat to publish those matching any of several",
    )
    relay.add_argument(
        "--send",
        dest="frames",
        action="append",
        type=_json_frame,
        default=[],
        metavar="JSON",
        help="send this JSON document on every new connection (repeatable)",
    )
    relay.add_argument(
        "--rotate-every",
        type=_positive_float,
        metavar="S",
        help="replace each connection every S seconds, make-before-break",
    )
    relay.add_argument(
        "--idle-timeout",
        type=_positive_float,
        metavar="S",
        help="reconnect when no message arrives for S seconds",
    )
    relay.add_argument(
        "--buffer",
        type=_positive_int,
        default=100_000,
        metavar="N",
        help="messages held while NATS is away (default 100000); more are dropped, "
        "counted and reported",
    )
    _add_transport(relay)
    relay.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log what rxws does to stderr (-vv for debug detail)",
    )


def _check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Mistakes that only the options together show; exits 2 with one line."""
    if args.command == "listen":
        if _is_nats(args.url):
            _check_listen_nats(parser, args)
            return
        secure = args.url.lower().startswith("wss://")
        if not secure and (args.cafile is not None or args.insecure):
            option = "--cafile" if args.cafile is not None else "--insecure"
            parser.error(f"{option} is for wss:// URLs; {describe_url(args.url)!r} is ws://")
        given = [
            name
            for name, value in (
                ("--subject", args.subject),
                ("--stream", args.stream),
                ("--deliver", args.deliver != "new"),
            )
            if value
        ]
        if given:
            parser.error(
                f"{given[0]} is for nats:// URLs; {describe_url(args.url)!r} is a websocket URL"
            )
        _check_topics(parser, args)
        if args.topic and args.raw:
            parser.error(
                "--raw prints frames as received; with --topic each topic's payload is "
                "printed as JSON"
            )
    elif args.command == "relay":
        _check_topics(parser, args)
    elif args.command == "demo":
        problem = _demo_filter_problem(args.filter, args.symbols)
        if problem:
            parser.error(problem)


def _check_listen_nats(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.subject:
        parser.error("listen nats://... needs --subject, such as --subject 'md.>'")
    for name, value in (
        ("--topic", args.topic),
        ("--max-streams", args.max_streams),
        ("--max-rate", args.max_rate),
        ("--send", args.frames),
        ("--rotate-every", args.rotate_every),
        ("--idle-timeout", args.idle_timeout),
        ("--cafile", args.cafile),
        ("--insecure", args.insecure),
        ("--timestamps", args.timestamps),
    ):
        if value:
            parser.error(f"{name} is for websocket URLs, not for reading NATS")
    if args.deliver != "new" and not args.stream:
        parser.error("--deliver replays a JetStream stream: give --stream too")


def _check_topics(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``--max-streams`` and ``--max-rate`` need ``--topic``; the URL must suit topics."""
    if not args.topic:
        for name, value in (("--max-streams", args.max_streams), ("--max-rate", args.max_rate)):
            if value is not None:
                parser.error(f"{name} limits the connections that carry topics: give --topic too")
        return
    try:
        Binance().url(args.url)
    except ValueError as exc:
        parser.error(f"--topic: {exc}")


def _demo_filter_problem(filters: list[dict[str, Any]], symbols: list[str]) -> str | None:
    """Why a demo ``--filter`` can never match a demo trade, or ``None``."""
    for pairs in filters:
        for key, value in pairs.items():
            if key not in _DEMO_KEYS:
                return (
                    f"--filter {key}=...: the demo's trades have no key {key!r}; they have "
                    f"{', '.join(_DEMO_KEYS)}"
                )
            if key == "s" and value not in symbols:
                return (
                    f"--filter s={value}: the demo trades only {', '.join(symbols)}; pick "
                    f"one of them, or add it with --symbols {' '.join(symbols)} {value}"
                )
            if key == "e" and value != "trade":
                return f"--filter e={value}: every demo message is a trade (e=trade)"
    return None


# ---------------------------------------------------------------------- words


def _plural(n: int, word: str) -> str:
    """``1 rotation``, ``2 rotations``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _on(connection: int | None) -> str:
    """`` [connection 2]`` after a news line about one of a sharded client's connections."""
    return "" if connection is None else f" [connection {connection}]"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _stamp() -> str:
    """The local time now, ISO 8601 with milliseconds and the UTC offset."""
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


def _why(error: BaseException) -> str:
    """What ended a connection, in a few words (no advice)."""
    if isinstance(error, IdleTimeout):
        return f"no message for {error.timeout:g} s (idle timeout)"
    if isinstance(error, ConnectionLost):
        what = f"close code {error.code}" if error.code is not None else "link broke"
        return f"{what} ({error.reason})" if error.reason else what
    if isinstance(error, ConnectionFailed):
        return error.reason
    if isinstance(error, RotationFailed):
        return f"rotation abandoned: {error.reason}"
    return _one_line(str(error)) or type(error).__name__


def _fatal(error: BaseException, hint: str | None = None) -> str:
    """The one line that explains why the command gives up, and what to do."""
    if isinstance(error, CertificateError):
        hint = hint or (
            "use --cafile PEM to trust the server's CA (or --insecure to skip the check, "
            "unsafe); retrying will not help"
        )
        return f"could not connect to {error.url}: {error.reason}; {hint}"
    if isinstance(error, HandshakeRejected):
        return _one_line(str(error))
    if isinstance(error, ConnectionFailed):
        line = f"could not connect to {error.url}: {error.reason}"
        return f"{line}; {hint}" if hint else line
    return _one_line(str(error)) or type(error).__name__


async def _scheme_hint(url: str, timeout: float = 2.0) -> str | None:
    """After a failed first connection: does the server speak the other scheme?

    ``ws://`` to a TLS server and ``wss://`` to a plain one both fail in ways that
    name neither (a reset, a response that is not HTTP). One probe tells which: a TLS
    handshake for ``ws://``, a plain HTTP request for ``wss://``. Nothing of the URL's
    path or query is sent.
    """
    parts = urlsplit(url)
    secure = parts.scheme.lower() == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    writer: asyncio.StreamWriter | None = None
    try:
        if not secure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=context), timeout
            )
            return "the server speaks TLS: use wss:// instead of ws://"
        reader, plain = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        writer = plain
        plain.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.read(5), timeout)
        if head == b"HTTP/":
            return "the server speaks plain HTTP, not TLS: use ws:// instead of wss://"
        return None
    except (OSError, asyncio.TimeoutError, ssl.SSLError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), timeout)


# ---------------------------------------------------------------------- the terminal


def _rich_available() -> bool:
    try:
        import rich.live  # noqa: F401
    except ImportError:
        return False
    return True


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    try:
        return a.isatty() and b.isatty() and os.ttyname(a.fileno()) == os.ttyname(b.fileno())
    except (OSError, ValueError, AttributeError):
        return False


class _Display:
    """Where lines go: messages to stdout, news and status lines to stderr.

    This plain display prints the status line as an ordinary line when asked to
    (every ``--status-every`` seconds); :class:`_LiveDisplay` redraws it in place.
    """

    live = False

    def __init__(self, out: TextIO, out_bytes: BinaryIO | None, err: TextIO) -> None:
        self.out = out
        self.out_bytes = out_bytes
        self.err = err

    def message(self, line: str) -> None:
        """Write one message line (ending with a newline) to stdout."""
        self.out.write(line)
        self.out.flush()

    def message_bytes(self, data: bytes) -> None:
        """Write one binary frame and a newline to stdout."""
        if self.out_bytes is None:
            self.message(data.decode("utf-8", "backslashreplace") + "\n")
            return
        self.out.flush()
        self.out_bytes.write(data + b"\n")
        self.out_bytes.flush()

    def news(self, text: str) -> None:
        """One line of connection news on stderr."""
        with contextlib.suppress(OSError, ValueError):
            self.err.write(f"rxws: {text}\n")
            self.err.flush()

    def status(self, text: str, style: str) -> None:
        """Show the status line (here: print it as a news line)."""
        self.news(text)

    def table(self, title: str, rows: list[tuple[str, str, str]]) -> None:
        """Print a summary table on stderr: what, value, note."""
        width = max(len(what) for what, _, _ in rows)
        vwidth = max(len(value) for _, value, _ in rows)
        lines = [f"rxws: {title}"]
        for what, value, note in rows:
            line = f"  {what:<{width}}  {value:>{vwidth}}"
            lines.append(f"{line}  {note}" if note else line)
        with contextlib.suppress(OSError, ValueError):
            self.err.write("\n".join(lines) + "\n")
            self.err.flush()

    def close(self) -> None:
        """Stop drawing (the live display erases its status line)."""


class _LiveDisplay(_Display):
    """A status line redrawn in place on a terminal, with ``rich`` (no thread).

    News lines and, when stdout is the same terminal, message lines are printed above
    the status line. Message lines are gathered and printed once per turn of the event
    loop, so a fast feed costs one terminal write per batch, not per message.
    """

    live = True

    def __init__(
        self,
        out: TextIO,
        out_bytes: BinaryIO | None,
        err: TextIO,
        *,
        route_messages: bool,
        width: int | None = None,
        force_terminal: bool | None = None,
    ) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        super().__init__(out, out_bytes, err)
        self._text = Text
        self.console = Console(
            file=err,
            width=width,
            force_terminal=force_terminal,
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=True,
        )
        self._live = Live(
            console=self.console,
            auto_refresh=False,  # redrawn by our own ticker: rich starts no thread
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._route = route_messages
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._live.start()

    def message(self, line: str) -> None:
        if not self._route:
            super().message(line)
            return
        self._pending.append(line)
        if len(self._pending) >= 1000:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def message_bytes(self, data: bytes) -> None:
        if not self._route:
            super().message_bytes(data)
            return
        self.message(data.decode("utf-8", "backslashreplace") + "\n")

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._pending:
            text, self._pending = "".join(self._pending), []
            self.console.out(text, end="", highlight=False)

    def news(self, text: str) -> None:
        self._flush()
        self.console.print(self._text(f"rxws: {text}"))

    def status(self, text: str, style: str) -> None:
        line = self._text("rxws: ", no_wrap=True, overflow="ellipsis")
        line.append(text, style=style)
        self._live.update(line, refresh=True)

    def table(self, title: str, rows: list[tuple[str, str, str]]) -> None:
        from rich.table import Table

        self._flush()
        table = Table(title=f"rxws: {title}", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column(style="dim")
        for what, value, note in rows:
            table.add_row(what, value, note)
        self.console.print(table, soft_wrap=False)

    def close(self) -> None:
        self._flush()
        self._live.stop()


def _make_display(
    out: TextIO, out_bytes: BinaryIO | None, err: TextIO, live: bool | None
) -> _Display:
    """A live display when stderr is a terminal and rich is installed, else plain."""
    if live is None:
        try:
            live = err.isatty() and os.environ.get("TERM") != "dumb" and _rich_available()
        except (ValueError, AttributeError):
            live = False
    if not live:
        return _Display(out, out_bytes, err)
    return _LiveDisplay(
        out, out_bytes, err, route_messages=_same_terminal(out, err), force_terminal=True
    )


# ---------------------------------------------------------------------- output


class _Printer:
    """Writes messages to stdout, counts them, and stops at ``--count``."""

    def __init__(self, display: _Display, count: int | None, timestamps: bool) -> None:
        self.display = display
        self.count = count
        self.timestamps = timestamps
        self.printed = 0
        self.done = asyncio.Event()
        self.broken_pipe = False

    def json_line(self, msg: Any) -> None:
        self._write(dump_json(msg))

    def raw_line(self, frame: Any) -> None:
        if isinstance(frame, bytes) and not self.timestamps:
            self._emit(self.display.message_bytes, frame)
        elif isinstance(frame, bytes):
            self._write(frame.decode("utf-8", "backslashreplace"))
        else:
            self._write(str(frame))

    def _write(self, text: str) -> None:
        self._emit(self.display.message, f"{_stamp()} {text}\n" if self.timestamps else f"{text}\n")

    def _emit(self, write: Callable[[Any], None], data: Any) -> None:
        if self.done.is_set():
            return
        try:
            write(data)
        except BrokenPipeError:
            self.pipe_broke()
            return
        self._counted()

    def pipe_broke(self) -> None:
        self.broken_pipe = True
        self.done.set()

    def _counted(self) -> None:
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self.done.set()

    def news(self, text: str) -> None:
        self.display.news(f"{_stamp()} {text}" if self.timestamps else text)


# ---------------------------------------------------------------------- the status line


class _Status:
    """The state of the feed, kept from the client's events, as one status line.

    Args:
        client: The client watched.
        printer: Where news lines go.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        client: WebSocketClient,
        printer: _Printer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.printer = printer
        self.clock = clock
        self.url = ""
        self.ever_connected = False
        self.up = False  # a connection is open (as far as the events tell)
        self.phase = "starting"  # starting, connecting, connected, waiting, failed
        self.phase_since = clock()
        self.retry_at = 0.0
        self.attempt = 0
        self.drops = 0
        self.failed_attempts = 0
        self.last_error: str | None = None
        self.last_error_at = 0.0
        self.fatal: BaseException | None = None
        self.on_drop: Callable[[], None] | None = None  # called when a connection drops
        self.open: dict[int | None, bool] = {}  # connection index -> open (None: unsharded)
        self._samples: deque[tuple[float, int]] = deque()

    # ------------------------------------------------------------------ events

    def on_event(self, event: Event) -> None:
        if self.fatal is not None:
            return
        now = self.clock()
        news = self.printer.news
        if isinstance(event, Connecting):
            if not self.up:
                self._enter("connecting", now)
            if event.url:
                self.url = event.url
        elif isinstance(event, Connected):
            if event.url:
                self.url = event.url
            index = event.connection
            if not self.open.get(index):  # else: a rotation's new connection, told by Rotated
                where = self.url or "the server"
                again = self.ever_connected if index is None else index in self.open
                news(f"{'reconnected' if again else 'connected'} to {where}{_on(index)}")
            self.open[index] = True
            self.up = self.ever_connected = True
            self.attempt = 0
            self._enter("connected", now)
        elif isinstance(event, Disconnected):
            self._disconnected(event, now)
        elif isinstance(event, Retrying):
            if self.ever_connected:
                news(
                    f"retrying in {event.delay:.2f} s (attempt {event.attempt})"
                    f"{_on(event.connection)}"
                )
            self.attempt = event.attempt
            self.retry_at = now + event.delay
            if not self.up:
                self._enter("waiting", now)
        elif isinstance(event, Rotated):
            n = self.client.stats.rotations
            news(
                "rotated: a new connection took over, the old one is closed "
                f"({n} so far){_on(event.connection)}"
            )
        elif isinstance(event, Failed):
            self.fatal = event.error
            self._enter("failed", now)
            self.printer.done.set()

    def _disconnected(self, event: Disconnected, now: float) -> None:
        error = event.error
        on = _on(event.connection)
        if isinstance(error, ConnectionFailed):  # an attempt failed: nothing was dropped
            if not self.ever_connected:
                self.fatal = error
                self.printer.done.set()
                return
            self.failed_attempts += 1
            self._error(f"connection attempt failed: {_why(error)}", now)
            self.printer.news(f"connection attempt failed: {_why(error)}{on}")
            return
        if error is None and event.closed_by == "client":
            # The old leg of a rotation, an abandoned candidate, or our own close.
            self._maybe_down(now)
            return
        if error is not None:
            self.drops += 1
            self._error(_why(error), now)
            self.printer.news(f"dropped: {_why(error)}{on}")
        else:
            self.printer.news(f"disconnected: {event.reason}{on}")
        index = event.connection
        # One feed without shards: still open if a rotation's other connection is.
        self.open[index] = index is None and self.client.present is not None
        if self.on_drop is not None:
            self.on_drop()
        self._maybe_down(now)

    def _maybe_down(self, now: float) -> None:
        if self.client.present is None:
            self.up = False
            if self.phase == "connected":
                self._enter("connecting", now)

    def connections(self) -> tuple[int, int] | None:
        """How many of a sharded client's connections are open, and how many it has."""
        total = len(self.client.stats.per_connection)
        if not total:
            return None
        return sum(up for index, up in self.open.items() if index is not None), total

    def on_error(self, error: Exception) -> None:
        """A non-fatal error of the client (a rotation abandoned, a frame skipped)."""
        self._error(_why(error), self.clock())
        if isinstance(error, RotationFailed):
            self.printer.news(_why(error))

    def _error(self, text: str, now: float) -> None:
        self.last_error, self.last_error_at = text, now

    def _enter(self, phase: str, now: float) -> None:
        if phase != self.phase:
            self.phase, self.phase_since = phase, now

    # ------------------------------------------------------------------ the line

    def rate(self) -> float:
        """Messages per second over the last few seconds."""
        now, count = self.clock(), self.client.stats.messages
        samples = self._samples
        samples.append((now, count))
        while len(samples) > 2 and samples[1][0] <= now - 2.0:
            samples.popleft()
        t0, c0 = samples[0]
        return (count - c0) / (now - t0) if now > t0 else 0.0

    def line(self) -> tuple[str, str]:
        """The status line's text, and a rich style for it."""
        now = self.clock()
        stats = self.client.stats
        phase = self.phase
        if phase == "connected" and self.client.present is None:
            phase = "connecting"
        if phase == "connected":
            state, style = "connected", "green"
        elif phase == "waiting" and now < self.retry_at:
            state = f"reconnecting in {self.retry_at - now:.1f} s (attempt {self.attempt})"
            style = "yellow"
        elif phase == "failed":
            state, style = "failed", "red"
        else:
            where = f" to {self.url}" if self.url else ""
            state, style = f"connecting{where} for {now - self.phase_since:.1f} s", "yellow"
        parts = [state]
        shards = self.connections()
        if shards is not None:
            parts.append(f"{shards[0]}/{_plural(shards[1], 'connection')} open")
            if style == "green" and shards[0] < shards[1]:
                style = "yellow"
        parts += [
            f"{self.rate():.0f} msg/s",
            _plural(stats.messages, "message"),
            _plural(stats.reconnects, "reconnect"),
            _plural(stats.rotations, "rotation"),
        ]
        if self.last_error is not None:
            parts.append(f"last error {now - self.last_error_at:.0f} s ago: {self.last_error}")
        return " | ".join(parts), style


async def _tick_status(status: _Status, display: _Display, every: float) -> None:
    """Redraw (live) or print (plain) the status line every ``every`` seconds."""
    while True:
        await asyncio.sleep(every)
        text, style = status.line()
        display.status(text, style)


# ---------------------------------------------------------------------- running a client


async def _run_client(
    client: WebSocketClient,
    printer: _Printer,
    status: _Status,
    stream: Any,
    print_message: Callable[[Any], None],
    *,
    status_every: float,
    duration: float | None = None,
    on_stop: Callable[[], None] | None = None,
) -> BaseException | None:
    """Stream until the count, the duration, Ctrl-C, or the feed fails.

    The feed fails when the first connection cannot be made, or when reconnecting
    gives up (a non-retryable refusal). News before the first connection is held back,
    so a failure to connect is exactly one line on stderr.

    ``on_stop`` is called once it stops, before anything is closed.

    Returns:
        The error that ended the feed, or ``None``.
    """
    display = printer.display
    status_sub = client.status.subscribe(status.on_event)
    errors_sub = client.errors.subscribe(status.on_error)
    ended: list[Exception] = []

    def stream_ended(error: Exception) -> None:
        ended.append(error)
        printer.done.set()

    sub = stream.subscribe(print_message, stream_ended)
    tasks: list[asyncio.Future[Any]] = []
    every = 0.25 if display.live else status_every
    if every > 0:
        tasks.append(asyncio.ensure_future(_tick_status(status, display, every)))
    if duration:
        tasks.append(asyncio.ensure_future(_stop_after(printer, duration)))
    try:
        if not printer.done.is_set():
            await client.start()
            await printer.done.wait()
    finally:
        if on_stop is not None:
            on_stop()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sub.dispose()
        await client.close()
        status_sub.dispose()
        errors_sub.dispose()
    if status.fatal is None and ended and isinstance(ended[0], _TopicsEnded):
        return ended[0]
    return status.fatal


async def _stop_after(printer: _Printer, seconds: float) -> None:
    await asyncio.sleep(seconds)
    printer.done.set()


# ---------------------------------------------------------------------- demo


class _Tally:
    """What the demo's feed delivered, checked against the exchange's trade ids.

    Every demo trade carries ``t``, its symbol's own id (1, 2, 3, ... per symbol),
    ``seq``, one number per trade over all symbols, and ``E``, the exchange's clock in
    milliseconds when it was sent. The client spreads the symbols over several
    connections, and one symbol's trades all come on one connection, in order, so each
    symbol's ids are checked on their own (``seq`` interleaves the connections). An id
    skipped right after a connection dropped was sent to a connection that was closing
    (the exchange does not replay it): that gap is the server's. An id skipped at any
    other time, or delivered twice, would be rxws's fault. A drop excuses the next skip
    of every symbol, not only of those on the connection that dropped: the events do not
    say which symbols a connection carries.
    """

    _LATENCY_BUCKET = 0.1  # ms

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = time.monotonic()
        self.trades = 0
        self.per_symbol: Counter[str] = Counter()
        self.high: dict[str, int] = {}  # symbol -> highest id seen
        self.missing: dict[tuple[str, int], bool] = {}  # id skipped -> after a drop?
        self.missed_while_down = 0
        self.gaps = 0  # ids skipped while connected: rxws's fault
        self.repeats = 0
        self.late = 0
        self.interrupted: set[str] = set()  # symbols whose next skip follows a drop
        self.latency: Counter[int] = Counter()
        self.topics: dict[int, int] = {}  # connection -> topics, when the demo stopped

    def topics_now(self, stats: ClientStats) -> Callable[[], None]:
        """What to call to remember how many topics each connection carries (before closing)."""

        def remember() -> None:
            self.topics = {one.index: one.topics for one in stats.per_connection}

        return remember

    def dropped(self) -> None:
        """A connection dropped: what each symbol skips until its next trade is the server's."""
        self.interrupted.update(self.high)

    def see(self, msg: Any) -> None:
        if not isinstance(msg, dict) or msg.get("e") != "trade":
            return
        ident, sent, symbol = msg.get("t"), msg.get("E"), str(msg.get("s"))
        if not isinstance(ident, int):
            return
        self.trades += 1
        self.per_symbol[symbol] += 1
        if isinstance(sent, (int, float)):
            latency_ms = max(0.0, self.clock() * 1000.0 - sent)
            self.latency[int(latency_ms / self._LATENCY_BUCKET)] += 1
        interrupted = symbol in self.interrupted
        self.interrupted.discard(symbol)
        high = self.high.get(symbol)
        if high is None:
            self.high[symbol] = ident
        elif ident > high:
            skipped = ident - high - 1
            if skipped:
                if interrupted:
                    self.missed_while_down += skipped
                else:
                    self.gaps += skipped
                if skipped <= 10_000:
                    for n in range(high + 1, ident):
                        self.missing[symbol, n] = interrupted
                while len(self.missing) > 100_000:
                    del self.missing[next(iter(self.missing))]
            self.high[symbol] = ident
        elif (symbol, ident) in self.missing:  # late, not lost: out of order
            if self.missing.pop((symbol, ident)):
                self.missed_while_down -= 1
            else:
                self.gaps -= 1
            self.late += 1
        else:
            self.repeats += 1

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile of the latency in ms (``None`` without data)."""
        total = sum(self.latency.values())
        if not total:
            return None
        rank = max(1, math.ceil(q * total))
        keys = sorted(self.latency)
        cumulative = []
        running = 0
        for key in keys:
            running += self.latency[key]
            cumulative.append(running)
        index = bisect.bisect_left(cumulative, rank)
        return (keys[index] + 1) * self._LATENCY_BUCKET

    def rows(
        self, stats: ClientStats, drops: int, symbols: list[str], violations: int
    ) -> list[tuple[str, str, str]]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rows = [
            (
                "messages",
                str(self.trades),
                f"trades in {elapsed:.1f} s, {self.trades / elapsed:.1f}/s",
            ),
        ]
        for symbol in symbols:
            n = self.per_symbol.get(symbol, 0)
            rows.append((f"  {symbol}", str(n), f"{n / elapsed:.1f}/s"))
        rows += [
            (
                "reconnects",
                str(stats.reconnects),
                f"after {_plural(drops, 'drop')} by the exchange",
            ),
            ("rotations", str(stats.rotations), "make-before-break replacements"),
            (
                "connections",
                str(len(stats.per_connection)),
                "the symbols' topics spread over them, within the exchange's limit",
            ),
        ]
        for one in stats.per_connection:
            rows.append(
                (
                    f"  connection {one.index}",
                    _plural(self.topics.get(one.index, one.topics), "topic"),
                    f"{one.messages} messages, {_plural(one.reconnects, 'reconnect')}, "
                    f"{_plural(one.rotations, 'rotation')}",
                )
            )
        rows += [
            ("limit violations", str(violations), "seen by the exchange: must be 0"),
            (
                "missed while disconnected",
                str(self.missed_while_down),
                "sent to a connection that was dropping; the exchange does not replay "
                "them (the server's gap, not rxws's)",
            ),
            ("gaps outside drops", str(self.gaps), "lost by rxws: must be 0"),
            ("repeats", str(self.repeats), "delivered twice by rxws: must be 0"),
        ]
        if self.late:
            rows.append(("out of order", str(self.late), "delivered late, not lost"))
        p50, p99 = self.percentile(0.5), self.percentile(0.99)
        if p50 is not None and p99 is not None:
            rows.append(
                (
                    "latency p50 / p99",
                    f"{p50:.1f} / {p99:.1f} ms",
                    "exchange timestamp (E) to delivery; E has 1 ms resolution",
                )
            )
        return rows


@contextlib.asynccontextmanager
async def _running(exchange: DemoExchange) -> AsyncIterator[DemoExchange]:
    """``async with exchange``, and closed too when it fails to start (a port taken)."""
    try:
        await exchange.start()
    except BaseException:
        await exchange.aclose()
        raise
    try:
        yield exchange
    finally:
        await exchange.aclose()


def _demo_topics(symbols: list[str]) -> list[str]:
    """The exchange topics the demo subscribes: every symbol it trades."""
    return [f"{s.lower()}@trade" for s in symbols]


async def _demo(args: argparse.Namespace, printer: _Printer) -> int:
    symbols: list[str] = list(dict.fromkeys(args.symbols))
    topics = _demo_topics(symbols)
    batch = max(1, round(args.rate * 0.01))
    limits = Limits(streams_per_connection=args.max_streams)
    exchange = DemoExchange(
        symbols=symbols, interval=batch / args.rate, batch=batch, combined=True, limits=limits
    )
    async with _running(exchange):
        runs = f"runs {args.duration:g} s" if args.duration else "runs until Ctrl-C"
        needed = _plural(-(-len(topics) // args.max_streams), "connection")
        printer.news(
            f"demo exchange on {exchange.url}: {len(symbols)} symbols, {args.rate:g} "
            f"trades/s, each with its symbol's own id (t) and one global sequence number "
            f"(seq); at most {args.max_streams} topics per connection, so the client "
            f"spreads them over {needed}. The exchange drops every connection every "
            f"{args.drop_every:g} s; the client replaces each connection every "
            f"{args.rotate_every:g} s, make-before-break ({runs}; Ctrl-C stops)"
        )
        if not printer.display.live and printer.display.err.isatty():
            printer.news("for a live status line: pip install 'rxws[cli]'")
        chaos = asyncio.ensure_future(_drop_every(exchange, args.drop_every))
        client = WebSocketClient(
            exchange.url,
            subscriptions=Binance(),
            limits=limits,
            backoff=Backoff(initial=0.2, maximum=2.0, reset_after=1.0),
            rotate_every=args.rotate_every,
            idle_timeout=5.0,
            transport=args.transport,
        )
        status = _Status(client, printer)
        tally = _Tally()
        first_drop = True

        def dropped() -> None:
            nonlocal first_drop
            tally.dropped()
            if first_drop:
                first_drop = False
                printer.news(
                    "trades the exchange sends to a dropping connection reach nobody and "
                    "are not replayed: a jump in a symbol's id (t) after a drop is the "
                    "server's gap, not rxws's"
                )

        status.on_drop = dropped
        keep = matches(args.filter) if args.filter else None
        done = printer.done

        def on_trade(trade: Any) -> None:
            if done.is_set():  # what arrives while closing is neither printed nor told
                return
            tally.see(trade)
            if keep is None or keep(trade):
                printer.json_line(trade)

        try:
            fatal = await _run_client(
                client,
                printer,
                status,
                _topics_stream(client, topics, printer),
                on_trade,
                status_every=args.status_every,
                duration=args.duration,
                on_stop=tally.topics_now(client.stats),
            )
        finally:
            chaos.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos
        violations = len(exchange.violations)
    printer.display.close()
    if fatal is not None:
        printer.news(f"error: {_fatal(fatal)}")
        return EXIT_FAILED
    printer.display.table(
        "demo summary", tally.rows(client.stats, status.drops, symbols, violations)
    )
    if tally.gaps or tally.repeats or violations:
        printer.news(
            f"error: rxws lost {tally.gaps} and repeated {tally.repeats} trades while "
            f"connected, and broke the exchange's limits {_plural(violations, 'time')}; "
            "this is a bug, please report it"
        )
        return EXIT_FAILED
    return EXIT_OK


async def _drop_every(exchange: DemoExchange, every: float, code: int = 1011) -> None:
    while True:
        await asyncio.sleep(every)
        await exchange.drop_all(code, "demo fault")


# ---------------------------------------------------------------------- listen


def _reply_ids(frames: list[_Frame]) -> set[Any]:
    """The ``id`` of each JSON object we send: a message with one of them is a reply."""
    ids: set[Any] = set()
    for frame in frames:
        if frame.is_json:
            doc = json.loads(frame.text)
            if isinstance(doc, dict) and "id" in doc:
                with contextlib.suppress(TypeError):
                    ids.add(doc["id"])
    return ids


def _is_reply(msg: Any, ids: set[Any]) -> bool:
    if not ids or not isinstance(msg, dict) or ("result" not in msg and "error" not in msg):
        return False
    try:
        return msg.get("id") in ids
    except TypeError:  # an unhashable id
        return False


def _topic_limits(args: argparse.Namespace) -> Limits | None:
    """``--max-streams`` and ``--max-rate`` as overrides of the protocol's limits."""
    if args.max_streams is None and args.max_rate is None:
        return None
    return Limits(streams_per_connection=args.max_streams, messages_per_second=args.max_rate)


class _TopicsEnded(Exception):
    """Every topic of ``listen --topic`` ended (the server refused them all)."""

    def __str__(self) -> str:
        return "the server refused every --topic; nothing is left to listen to"


def _topics_stream(client: WebSocketClient, topics: list[str], printer: _Printer) -> Any:
    """The payloads of every topic, merged; a topic the server refuses is a news line.

    Each topic is subscribed on its own, so a refused one ends only itself; when every
    topic has ended, the merged stream ends with :class:`_TopicsEnded`.
    """

    def subscribe(observer: Any, scheduler: Any = None) -> Any:
        told: set[str] = set()
        left = len(topics)

        def ended(error: Exception) -> None:
            nonlocal left
            text = (
                f"refused by the server: {_one_line(str(error))}"
                if isinstance(error, SubscriptionRejected)
                else f"a topic ended: {_why(error)}"
            )
            if text not in told:  # one refused frame ends each of its topics
                told.add(text)
                printer.news(text)
            left -= 1
            if not left:
                observer.on_error(_TopicsEnded())

        subs = [client.topic(t).subscribe(observer.on_next, ended) for t in topics]
        return CompositeDisposable(subs)

    return Observable(subscribe)


async def _listen(args: argparse.Namespace, printer: _Printer) -> int:
    if _is_nats(args.url):
        return await _listen_nats(args, printer)
    frames: list[_Frame] = list(args.frames)

    async def on_open(conn: Any) -> None:
        for frame in frames:
            await conn.send(frame.text)

    options: dict[str, Any] = {}
    if args.cafile is not None:
        options["ssl"] = args.cafile
    elif args.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        options["ssl"] = context
        printer.news(
            "warning: --insecure: the server's TLS certificate is not checked; anyone on "
            "the way can read and change this feed"
        )
    if args.topic:
        options["subscriptions"] = Binance()
        options["limits"] = _topic_limits(args)
    client = WebSocketClient(
        args.url,
        parse=None if args.raw else _parse_or_text,
        rotate_every=args.rotate_every,
        idle_timeout=args.idle_timeout,
        on_open=on_open if frames else None,
        transport=args.transport,
        **options,
    )
    status = _Status(client, printer)
    filters: list[dict[str, Any]] = args.filter
    keep = matches(filters) if filters else None
    replies = _reply_ids(frames)
    show: Callable[[Any], None] = printer.raw_line if args.raw else printer.json_line

    def print_message(frame: Any) -> None:
        msg = _parse_or_text(frame) if args.raw and (keep or replies) else frame
        if _is_reply(msg, replies):
            printer.news(f"reply to --send: {_one_line(dump_json(msg))[:300]}")
        elif keep is None or keep(msg):
            show(frame)

    def print_payload(payload: Any) -> None:
        if keep is None or keep(payload):
            printer.json_line(payload)

    fatal = await _run_client(
        client,
        printer,
        status,
        _topics_stream(client, args.topic, printer) if args.topic else client.messages,
        print_payload if args.topic else print_message,
        status_every=args.status_every,
    )
    printer.display.close()
    if fatal is not None:
        hint = None
        if isinstance(fatal, ConnectionFailed) and not isinstance(
            fatal, (HandshakeRejected, CertificateError)
        ):
            hint = await _scheme_hint(args.url)
        printer.news(f"error: {_fatal(fatal, hint)}")
        return EXIT_FAILED
    return EXIT_OK


def _parse_or_text(frame: str | bytes) -> Any:
    """JSON when the frame parses, else the frame as a string (printed as a JSON string)."""
    try:
        return parse_json(frame)
    except ValueError:
        return frame if isinstance(frame, str) else frame.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------- NATS


def _status_to(printer: _Printer) -> Callable[[str | None], None]:
    """Where rxws._relay's status lines go: the display's status line."""

    def show(line: str | None) -> None:
        if line is not None:
            printer.display.status(line, "green")

    return show


async def _relay(args: argparse.Namespace, printer: _Printer) -> int:
    try:
        from ._relay import relay
    except ImportError as exc:  # nats-py missing: the message names the pip command
        printer.news(f"error: {_one_line(str(exc))}")
        return EXIT_FAILED
    options: dict[str, Any] = {}
    limits = _topic_limits(args)
    if limits is not None:
        options["limits"] = limits
    if args.rotate_every:
        options["rotate_every"] = args.rotate_every
    if args.idle_timeout:
        options["idle_timeout"] = args.idle_timeout
    return await relay(
        args.url,
        nats_url=args.nats,
        subject=args.subject,
        msg_id=args.msg_id,
        stream=args.stream,
        topics=args.topic,
        filters=args.filter or None,
        sends=[frame.text for frame in args.frames],
        transport=args.transport,
        status=_status_to(printer),
        news=printer.news,
        stop=printer.done,  # _guarded's SIGINT and SIGTERM handlers set it
        handle_signals=False,
        buffer=args.buffer,
        **options,
    )


async def _listen_nats(args: argparse.Namespace, printer: _Printer) -> int:
    try:
        from ._relay import listen_nats
    except ImportError as exc:
        printer.news(f"error: {_one_line(str(exc))}")
        return EXIT_FAILED
    return await listen_nats(
        args.url,
        subject=args.subject,
        stream=args.stream,
        deliver=args.deliver,
        filters=args.filter or None,
        count=args.count,
        raw=args.raw,
        out=printer.display.out,
        status=_status_to(printer),
        news=printer.news,
        stop=printer.done,
        handle_signals=False,
        status_every=args.status_every or 1.0,
        on_broken_pipe=printer.pipe_broke,
    )


# ---------------------------------------------------------------------- exchange


async def _exchange(args: argparse.Namespace, printer: _Printer) -> int:
    symbols: list[str] = list(dict.fromkeys(args.symbols))
    batch = max(1, round(args.rate * 0.01))
    exchange = DemoExchange(
        symbols=symbols,
        interval=batch / args.rate,
        batch=batch,
        host=args.host,
        port=args.port,
        drop_after=args.drop_after,
        drop_code=args.drop_code,
        malformed_every=args.malformed_every,
        combined=args.combined,
        limits=Limits(streams_per_connection=args.max_streams),
    )
    exchange.refuse(*args.refuse)
    faults = []
    if args.drop_every:
        faults.append(f"drops every connection every {args.drop_every:g} s")
    if args.drop_after:
        faults.append(f"drops each connection after {args.drop_after} trades")
    if args.malformed_every:
        faults.append(f"sends broken JSON after every {args.malformed_every} trades")
    if args.refuse:
        faults.append(f"refuses the next handshakes with HTTP {', '.join(map(str, args.refuse))}")
    async with _running(exchange):
        if args.combined:
            printer.news(
                f"demo exchange: combined streams of any <name>@trade topic on {exchange.url}"
            )
            printer.news(
                f"demo exchange: SUBSCRIBE protocol, bare trades on {exchange.ws_url} "
                "(Ctrl-C stops)"
            )
        else:
            printer.news(f"demo exchange: every trade on {exchange.url}")
            printer.news(f"demo exchange: SUBSCRIBE protocol on {exchange.ws_url} (Ctrl-C stops)")
        if args.max_streams:
            printer.news(f"demo exchange: at most {args.max_streams} topics per connection")
        if faults:
            printer.news(f"demo exchange faults: {'; '.join(faults)}")
        chaos = (
            asyncio.ensure_future(_drop_every(exchange, args.drop_every, args.drop_code))
            if args.drop_every
            else None
        )
        try:
            await printer.done.wait()
        finally:
            if chaos is not None:
                chaos.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await chaos
    return EXIT_OK


# ---------------------------------------------------------------------- main


Runner = Callable[[argparse.Namespace, _Printer], Coroutine[Any, Any, int]]


def _quiet_loop_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Log what the event loop reports as unhandled on one line, at DEBUG (``-vv``).

    Such as a transport's failed TLS handshake: a traceback on the terminal would only
    repeat what the error line already says.
    """
    error = context.get("exception")
    detail = f": {type(error).__name__}: {_one_line(str(error))}" if error is not None else ""
    log.debug("event loop: %s%s", _one_line(str(context.get("message", ""))), detail)


async def _guarded(
    runner: Runner, args: argparse.Namespace, printer: _Printer, signals: bool
) -> int:
    """Run a command with Ctrl-C and SIGTERM turned into a clean stop."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if signals:
        loop.set_exception_handler(_quiet_loop_errors)
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, printer.done.set)
            except (NotImplementedError, RuntimeError, ValueError):  # not on this platform
                continue
            installed.append(signum)
    try:
        return await runner(args, printer)
    finally:
        printer.display.close()
        for signum in installed:
            # Ignored, not the default: a Ctrl-C during the last steps of shutdown does
            # not end in a KeyboardInterrupt traceback.
            loop.remove_signal_handler(signum)
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(signum, signal.SIG_IGN)


class _AlreadyTold(logging.Filter):
    """Drops the log records that a news line already tells (``-v`` shows each once)."""

    _TOLD = {("rxws.client", "connected to %s")}

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.name, record.msg) not in self._TOLD


_LOGGER_NAMES = ("rxws", "websockets")


class _LoggerState:
    """How the loggers were before the first command running in this process started.

    Tests run several commands at once; the last one to end restores this.
    """

    users = 0
    saved: ClassVar[list[tuple[int, bool]]] = []


@contextlib.contextmanager
def _logging_for(verbosity: int, stream: TextIO) -> Iterator[None]:
    """Send rxws's logs to ``stream`` with ``-v``; keep them off the terminal otherwise.

    Without ``-v`` the loggers of rxws and websockets get a handler that drops records
    (so Python's last-resort handler does not print warnings the news lines already
    tell); everything is put back when the last command running in this process ends.
    """
    loggers = [logging.getLogger(name) for name in _LOGGER_NAMES]
    if _LoggerState.users == 0:
        _LoggerState.saved = [(lg.level, lg.propagate) for lg in loggers]
    _LoggerState.users += 1
    if verbosity:
        handler: logging.Handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("rxws: %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_AlreadyTold())
        level = logging.DEBUG if verbosity > 1 else logging.INFO
    else:
        handler = logging.NullHandler()
        level = logging.WARNING
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(level)
        lg.propagate = False
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        _LoggerState.users -= 1
        if _LoggerState.users == 0:
            for lg, (old_level, old_propagate) in zip(loggers, _LoggerState.saved, strict=True):
                lg.setLevel(old_level)
                lg.propagate = old_propagate


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rxws`` command.

    Ctrl-C stops any command cleanly, at any moment once this function runs. Called
    as the program (``argv`` is ``None``), it leaves Ctrl-C ignored when it returns, so
    a late one cannot print a traceback while the interpreter exits; called with
    ``argv``, it puts the previous handlers back.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success or Ctrl-C, 1 when the connection failed (or the
        demo found a message lost or repeated), 2 on bad usage.
    """
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    outcome = _Outcome()
    try:
        args = parse_args(argv)
        return asyncio.run(run(args, sys.stdout, sys.stderr, outcome=outcome, signals=True))
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were in place
        return EXIT_OK
    finally:
        if outcome.broken_pipe:
            # stdout's reader went away (e.g. `| head`): point stdout at /dev/null so the
            # interpreter's final flush does not fail.
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        if argv is not None:
            for signum, handler in saved.items():
                with contextlib.suppress(TypeError, ValueError):  # not the main thread
                    signal.signal(signum, handler)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line, every option and their combinations.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The parsed arguments.

    Raises:
        SystemExit: With status 2 after one line on stderr for any mistake (0 for
            ``--help`` and ``--version``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_combinations(parser, args)
    return args


class _Outcome:
    """What ``main`` needs to know after the loop ended."""

    broken_pipe = False


async def run(
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    *,
    live: bool | None = None,
    signals: bool = False,
    stop: asyncio.Event | None = None,
    outcome: _Outcome | None = None,
) -> int:
    """Run a parsed command in the running event loop (what :func:`main` does).

    Args:
        args: From :func:`parse_args`.
        out: Where messages go.
        err: Where news and the status line go.
        live: Redraw the status line in place (``None``: when ``err`` is a terminal
            and rich is installed).
        signals: Turn Ctrl-C and SIGTERM into a clean stop.
        stop: Set it to stop the command as Ctrl-C would.
        outcome: Told whether stdout's reader went away.

    Returns:
        The exit status.
    """
    if args.command == "exchange":
        live = False  # no status line to draw
    display = _make_display(out, getattr(out, "buffer", None), err, live)
    printer = _Printer(display, getattr(args, "count", None), getattr(args, "timestamps", False))
    if stop is not None:
        printer.done = stop
    runners: dict[str, Runner] = {
        "demo": _demo,
        "listen": _listen,
        "relay": _relay,
        "exchange": _exchange,
    }
    try:
        with _logging_for(args.verbose, err):
            return await _guarded(runners[args.command], args, printer, signals)
    except (RxwsError, OSError, ValueError) as exc:  # e.g. the exchange's port is taken
        display.close()
        printer.news(f"error: {_fatal(exc)}")
        return EXIT_FAILED
    finally:
        display.close()
        if outcome is not None:
            outcome.broken_pipe = printer.broken_pipe


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
