"""The ``rxws`` command line: ``demo``, ``listen`` and ``exchange``.

::

    rxws demo [--count N] [--symbols S ...] [--filter k=v[,k=v...]]...
    rxws listen URL [--filter k=v[,k=v...]]... [--send JSON]... [--count N] [--raw]
                    [--rotate-every S] [--idle-timeout S]
    rxws exchange [--host H] [--port P]

Messages go to stdout, one JSON document per line (``jq``-friendly); what happens to
the connection goes to stderr, one line per event, each starting with ``rxws:``. One
``--filter`` is one dict whose pairs are AND-ed; several ``--filter`` options are
OR-ed, as in ``stream_filter``. Values are read as JSON when they parse (``1``,
``true``, ``"x"``, ``[1,2]``), else as plain strings.

``listen`` exits with status 1 and one line on stderr when its first connection cannot
be made (a host that cannot be reached, a refused handshake); once it has connected,
it reconnects with backoff after every drop. Mistakes on the command line (an unknown
option, a malformed filter, a URL that is not ws/wss) exit with status 2 and one line on
stderr. Ctrl-C (or SIGTERM) stops any command cleanly with status 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any, BinaryIO, NoReturn, TextIO

from . import __version__
from .backoff import Backoff
from .client import WebSocketClient
from .codec import dump_json, parse_json
from .errors import ConnectionFailed, ConnectionLost, IdleTimeout, RxwsError
from .events import Connected, Disconnected, Event, Failed, Retrying, Rotated
from .filters import matches
from .source import describe_url
from .testing import DEFAULT_SYMBOLS, DemoExchange

__all__ = ["build_parser", "main", "parse_filter"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_OWN_CLOSE = "closed by the subscriber"  # rxws.source's reason when we closed it ourselves


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# ---------------------------------------------------------------------- argument types


def parse_filter(text: str) -> dict[str, Any]:
    """Parse one ``--filter`` value, ``k=v[,k=v...]``, into a dict.

    Each value is read as JSON when it parses (``i=2`` gives ``2``, ``ok=true`` gives
    ``True``, ``s="BTC"`` gives ``"BTC"``), else taken as the plain string (``s=BTC``).
    A value that starts like a JSON array, object or string may contain commas
    (``p=[1,2]``, ``n="a,b"``).

    Args:
        text: The option's value.

    Returns:
        The dict of pairs.

    Raises:
        argparse.ArgumentTypeError: A pair has no ``=``, an empty key, or a key given
            twice.

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


def _json_text(text: str) -> str:
    try:
        json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a JSON document, got {text!r} ({exc})"
        ) from None
    return text


def _ws_url(text: str) -> str:
    scheme, sep, rest = text.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    if not sep or scheme.lower() not in ("ws", "wss") or not host:
        raise argparse.ArgumentTypeError(
            f"{describe_url(text)!r} is not a websocket URL; use ws://host[:port]/path "
            "or wss://host[:port]/path"
        )
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return value


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

    def add_common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--filter",
            action="append",
            type=parse_filter,
            default=[],
            metavar="K=V[,K=V...]",
            help="keep messages that have all these pairs (values are JSON when they "
            "parse, else strings); repeat to keep messages matching any of several",
        )
        p.add_argument("--count", type=_positive_int, metavar="N", help="exit after N messages")
        p.add_argument(
            "--transport",
            choices=["websockets", "picows"],
            default="websockets",
            help="the websocket implementation (picows: pip install 'rxws[picows]')",
        )
        p.add_argument(
            "-v",
            "--verbose",
            action="count",
            default=0,
            help="log what rxws does to stderr (-vv for debug detail)",
        )

    demo = sub.add_parser(
        "demo",
        help="stream from the embedded demo exchange (no network needed)",
        description="Start the embedded demo exchange on loopback, with faults on (it "
        "drops every connection now and then), and stream from it through a "
        "WebSocketClient with reconnect, rotation and dedupe. Runs until Ctrl-C or "
        "--count messages.",
    )
    add_common(demo)
    demo.add_argument(
        "--symbols",
        nargs="+",
        default=["BTCUSDT", "ETHUSDT"],
        metavar="SYMBOL",
        help="symbols to subscribe to (default: BTCUSDT ETHUSDT)",
    )
    demo.add_argument(
        "--rotate-every",
        type=_positive_float,
        default=3.0,
        metavar="S",
        help="replace the connection every S seconds (default 3)",
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
    listen.add_argument("url", type=_ws_url, metavar="URL", help="a ws:// or wss:// URL")
    add_common(listen)
    listen.add_argument(
        "--send",
        action="append",
        type=_json_text,
        default=[],
        metavar="JSON",
        help="send this JSON text on every new connection, e.g. a subscription "
        "(repeatable; sent in order)",
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

    exchange = sub.add_parser(
        "exchange",
        help="run the demo exchange alone",
        description="Run the demo exchange until Ctrl-C: /stream sends every trade, /ws "
        "sends what was subscribed to with "
        '{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}.',
    )
    exchange.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    exchange.add_argument(
        "--port", type=_port, default=8765, metavar="P", help="port (default 8765; 0: any)"
    )
    exchange.add_argument(
        "-v", "--verbose", action="count", default=0, help="log connections to stderr"
    )
    return parser


# ---------------------------------------------------------------------- output


class _Printer:
    """Writes messages to stdout and connection news to stderr."""

    def __init__(
        self, out: TextIO, out_bytes: BinaryIO | None, err: TextIO, count: int | None
    ) -> None:
        self.out = out
        self.out_bytes = out_bytes
        self.err = err
        self.count = count
        self.printed = 0
        self.done = asyncio.Event()
        self.broken_pipe = False

    def json_line(self, msg: Any) -> None:
        self._write(dump_json(msg) + "\n")

    def raw_line(self, frame: Any) -> None:
        if isinstance(frame, bytes):
            if self.out_bytes is None:
                self._write(frame.decode("utf-8", "backslashreplace") + "\n")
            else:
                self._write_bytes(frame + b"\n")
        else:
            self._write(f"{frame}\n")

    def _write(self, line: str) -> None:
        if self.done.is_set():
            return
        try:
            self.out.write(line)
            self.out.flush()
        except BrokenPipeError:
            self._pipe_broke()
            return
        self._counted()

    def _write_bytes(self, data: bytes) -> None:
        if self.done.is_set() or self.out_bytes is None:
            return
        try:
            self.out.flush()
            self.out_bytes.write(data)
            self.out_bytes.flush()
        except BrokenPipeError:
            self._pipe_broke()
            return
        self._counted()

    def _pipe_broke(self) -> None:
        self.broken_pipe = True
        self.done.set()

    def _counted(self) -> None:
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self.done.set()

    def news(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.err.write(f"rxws: {text}\n")
            self.err.flush()


def _why(error: BaseException) -> str:
    """What ended a connection, in a few words (no advice)."""
    if isinstance(error, IdleTimeout):
        return f"no message for {error.timeout:g} s (idle timeout)"
    if isinstance(error, ConnectionLost):
        what = f"close code {error.code}" if error.code is not None else "link broke"
        return f"{what} ({error.reason})" if error.reason else what
    if isinstance(error, ConnectionFailed):
        return error.reason
    return _one_line(str(error)) or type(error).__name__


def _fatal(error: BaseException) -> str:
    """The one line that explains why the command gives up."""
    if isinstance(error, ConnectionFailed):
        return f"could not connect to {error.url}: {error.reason}"
    return _one_line(str(error)) or type(error).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------- running a client


async def _run_client(
    client: WebSocketClient,
    printer: _Printer,
    filters: list[dict[str, Any]],
    *,
    print_message: Callable[[Any], None],
    subscribe: tuple[Any, Any] | None = None,
    rate_every: float | None = None,
) -> int:
    """Stream until the count is reached, Ctrl-C, or the feed fails.

    The feed fails when the first connection cannot be made, or when reconnecting
    gives up (a non-retryable refusal). News before the first connection is held back,
    so a failure to connect is exactly one line on stderr.
    """
    connected = False
    error: BaseException | None = None

    def on_status(event: Event) -> None:
        nonlocal connected, error
        if error is not None:
            return
        if isinstance(event, Connected):
            connected = True
            printer.news(f"connected to {event.url}" if event.url else "connected")
        elif isinstance(event, Disconnected):
            if event.error is not None:
                if not connected:
                    error = event.error
                    printer.done.set()
                else:
                    printer.news(f"dropped: {_why(event.error)}")
            elif event.reason != _OWN_CLOSE:  # not the old leg of a rotation, nor our close
                printer.news(f"disconnected: {event.reason}")
        elif isinstance(event, Retrying):
            if connected:
                printer.news(f"retrying in {event.delay:.2f} s (attempt {event.attempt})")
        elif isinstance(event, Rotated):
            printer.news("rotated: a new connection took over, the old one is closed")
        elif isinstance(event, Failed):
            error = event.error
            printer.done.set()

    status = client.status.subscribe(on_status)
    if subscribe is not None:
        stream = client.multiplex(subscribe[0], subscribe[1], filters or None)
    else:
        stream = client.stream(filters or None)
    sub = stream.subscribe(print_message, lambda e: None)
    ticker = None
    if rate_every:
        ticker = asyncio.ensure_future(_report_rate(client, printer, rate_every))
    try:
        if not printer.done.is_set():
            await client.start()
            await printer.done.wait()
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        sub.dispose()
        await client.close()
        status.dispose()
    if error is not None:
        printer.news(f"error: {_fatal(error)}")
        return EXIT_FAILED
    return EXIT_OK


async def _report_rate(client: WebSocketClient, printer: _Printer, every: float) -> None:
    last, last_t = client.stats.messages, time.monotonic()
    while True:
        await asyncio.sleep(every)
        s = client.stats
        now, now_t = s.messages, time.monotonic()
        printer.news(
            f"{(now - last) / (now_t - last_t):.0f} msg/s; {s.messages} received, "
            f"{s.reconnects} reconnects, {s.rotations} rotations"
        )
        last, last_t = now, now_t


# ---------------------------------------------------------------------- commands


async def _demo(args: argparse.Namespace, printer: _Printer) -> int:
    symbols = list(dict.fromkeys(s.upper() for s in args.symbols))
    streams = [f"{s.lower()}@trade" for s in symbols]
    traded = list(dict.fromkeys([*DEFAULT_SYMBOLS, *symbols]))
    async with DemoExchange(symbols=traded, interval=0.005, batch=2) as exchange:
        printer.news(
            f"demo exchange on {exchange.ws_url}; it drops every connection every "
            f"{args.drop_every:g} s and the client rotates every {args.rotate_every:g} s "
            "(Ctrl-C stops)"
        )
        chaos = asyncio.ensure_future(_drop_every(exchange, args.drop_every))
        client = WebSocketClient(
            exchange.ws_url,
            backoff=Backoff(initial=0.2, maximum=2.0, reset_after=1.0),
            rotate_every=args.rotate_every,
            dedupe=_trade_seq,
            idle_timeout=5.0,
            transport=args.transport,
        )
        try:
            return await _run_client(
                client,
                printer,
                args.filter or [{"e": "trade"}],
                print_message=printer.json_line,
                subscribe=(
                    {"method": "SUBSCRIBE", "params": streams, "id": 1},
                    {"method": "UNSUBSCRIBE", "params": streams, "id": 2},
                ),
                rate_every=1.0,
            )
        finally:
            chaos.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await chaos


async def _drop_every(exchange: DemoExchange, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        await exchange.drop_all(1011, "demo fault")


def _trade_seq(msg: Any) -> Any:
    """The demo's dedupe key: a trade's global sequence number (``None``: not a trade)."""
    return msg.get("seq") if isinstance(msg, dict) else None


async def _listen(args: argparse.Namespace, printer: _Printer) -> int:
    sends: list[str] = list(args.send)

    async def on_open(conn: Any) -> None:
        for text in sends:
            await conn.send(text)

    client = WebSocketClient(
        args.url,
        parse=None if args.raw else _parse_or_text,
        rotate_every=args.rotate_every,
        idle_timeout=args.idle_timeout,
        on_open=on_open if sends else None,
        transport=args.transport,
    )
    filters: list[dict[str, Any]] = args.filter
    print_message: Callable[[Any], None] = printer.json_line
    if args.raw:
        print_message = printer.raw_line
        if filters:
            # Filter on what each frame parses to; print the frame as received.
            keep = matches(filters)

            def print_if_kept(frame: Any) -> None:
                if keep(_parse_or_text(frame)):
                    printer.raw_line(frame)

            print_message, filters = print_if_kept, []
    return await _run_client(client, printer, filters, print_message=print_message)


def _parse_or_text(frame: str | bytes) -> Any:
    """JSON when the frame parses, else the frame as a string (printed as a JSON string)."""
    try:
        return parse_json(frame)
    except ValueError:
        return frame if isinstance(frame, str) else frame.decode("utf-8", "backslashreplace")


async def _exchange(args: argparse.Namespace, printer: _Printer) -> int:
    async with DemoExchange(host=args.host, port=args.port) as exchange:
        printer.news(f"demo exchange: every trade on {exchange.url}")
        printer.news(f"demo exchange: SUBSCRIBE protocol on {exchange.ws_url} (Ctrl-C stops)")
        await printer.done.wait()
    return EXIT_OK


Runner = Callable[[argparse.Namespace, _Printer], Coroutine[Any, Any, int]]


async def _guarded(runner: Runner, args: argparse.Namespace, printer: _Printer) -> int:
    """Run a command with Ctrl-C and SIGTERM turned into a clean stop."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, printer.done.set)
        except (NotImplementedError, RuntimeError, ValueError):  # not on this platform
            continue
        installed.append(signum)
    try:
        return await runner(args, printer)
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@contextlib.contextmanager
def _logging_for(verbosity: int) -> Iterator[None]:
    """Send rxws's logs to stderr with ``-v``; keep them off the terminal otherwise.

    Without ``-v`` the loggers of rxws and websockets get a handler that drops records
    (so Python's last-resort handler does not print warnings the news lines already
    tell); everything is put back on exit.
    """
    names = ("rxws", "websockets")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(lg.level, lg.propagate) for lg in loggers]
    if verbosity:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("rxws: %(levelname)s %(name)s: %(message)s"))
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
        for lg, (old_level, old_propagate) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(old_level)
            lg.propagate = old_propagate


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rxws`` command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success or Ctrl-C, 1 when the connection failed,
        2 on bad usage.
    """
    args = build_parser().parse_args(argv)
    out_bytes = getattr(sys.stdout, "buffer", None)
    printer = _Printer(sys.stdout, out_bytes, sys.stderr, getattr(args, "count", None))
    runners: dict[str, Runner] = {"demo": _demo, "listen": _listen, "exchange": _exchange}
    try:
        with _logging_for(args.verbose):
            return asyncio.run(_guarded(runners[args.command], args, printer))
    except KeyboardInterrupt:  # Ctrl-C where signal handlers are not available
        return EXIT_OK
    except (RxwsError, OSError, ValueError) as exc:  # e.g. the exchange's port is taken
        printer.news(f"error: {_fatal(exc)}")
        return EXIT_FAILED
    finally:
        if printer.broken_pipe:
            # stdout's reader went away (e.g. `| head`): point stdout at /dev/null so the
            # interpreter's final flush does not fail.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
