"""The ``rxws`` command line: ``demo``, ``listen`` and ``exchange``.

::

    rxws demo [--count N] [--symbols S ...] [--filter k=v[,k=v...]]...
    rxws listen URL [--filter k=v[,k=v...]]... [--send JSON]... [--count N] [--raw]
                    [--rotate-every S] [--idle-timeout S]
    rxws exchange [--host H] [--port P]

Messages go to stdout, one JSON document per line (``jq``-friendly); what happens to
the connection goes to stderr. One ``--filter`` is one dict whose pairs are AND-ed;
several ``--filter`` options are OR-ed, as in ``stream_filter``. Values are read as JSON
when they parse (``1``, ``true``, ``"x"``), else as plain strings.

Mistakes (an unknown option, a malformed filter, a URL that is not ws/wss, a host that
cannot be reached, a refused handshake) exit non-zero with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from . import __version__
from .backoff import Backoff
from .client import WebSocketClient
from .codec import dump_json
from .errors import RxwsError
from .events import Connected, Connecting, Disconnected, Event, Failed, Retrying, Rotated
from .testing import DemoExchange

__all__ = ["build_parser", "main", "parse_filter"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class _OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (try --help)\n")


def parse_filter(text: str) -> dict[str, Any]:
    """Parse one ``--filter`` value, ``k=v[,k=v...]``, into a dict.

    Args:
        text: The option's value.

    Returns:
        The dict of pairs; values are JSON when they parse, else strings.

    Raises:
        argparse.ArgumentTypeError: A pair has no ``=`` or an empty key.
    """
    pairs: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise argparse.ArgumentTypeError(
                f"malformed filter {text!r}: expected key=value[,key=value...]"
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        pairs[key] = value
    return pairs


def _json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--send needs JSON, got {text!r} ({exc})") from None


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
    if not value > 0:
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
    """The argument parser of the ``rxws`` command."""
    parser = _OneLineParser(
        prog="rxws",
        description="One websocket connection, as many reactive streams as you want.",
    )
    parser.add_argument("--version", action="version", version=f"rxws {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True

    def add_filter(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--filter",
            action="append",
            type=parse_filter,
            default=[],
            metavar="K=V[,K=V...]",
            help="keep messages with all these pairs; repeat to OR several filters",
        )
        p.add_argument("--count", type=_positive_int, help="exit after N messages")

    demo = sub.add_parser(
        "demo",
        help="stream from the embedded demo exchange (no network needed)",
        description="Start the embedded demo exchange on loopback, with faults on, and "
        "stream from it through a WebSocketClient with reconnect, rotation and dedupe.",
    )
    add_filter(demo)
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
        description="Connect to URL and print one JSON line per message.",
    )
    listen.add_argument("url", metavar="URL", help="a ws:// or wss:// URL")
    add_filter(listen)
    listen.add_argument(
        "--send",
        action="append",
        type=_json_arg,
        default=[],
        metavar="JSON",
        help="send this on every new connection (repeatable)",
    )
    listen.add_argument("--raw", action="store_true", help="print frames as received")
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
        description="Run the demo exchange on loopback until interrupted.",
    )
    exchange.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    exchange.add_argument("--port", type=_port, default=8765, help="port (default 8765)")
    return parser


class _Printer:
    """Writes messages to stdout and connection news to stderr."""

    def __init__(self, out: TextIO, err: TextIO, raw: bool, count: int | None) -> None:
        self.out = out
        self.err = err
        self.raw = raw
        self.count = count
        self.printed = 0
        self.done = asyncio.Event()
        self.broken_pipe = False

    def message(self, msg: Any) -> None:
        if self.done.is_set():
            return
        if self.raw and isinstance(msg, bytes):
            line = msg.decode("utf-8", "backslashreplace")
        elif self.raw:
            line = str(msg)
        else:
            line = dump_json(msg)
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.broken_pipe = True
            self.done.set()
            return
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self.done.set()

    def news(self, text: str) -> None:
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.err.write(f"[rxws] {text}\n")
            self.err.flush()


def _describe(event: Event) -> str:
    if isinstance(event, Connecting):
        return f"connecting to {event.url}" if event.url else "connecting"
    if isinstance(event, Connected):
        return "connected"
    if isinstance(event, Disconnected):
        return f"disconnected: {event.reason}"
    if isinstance(event, Retrying):
        return f"retrying in {event.delay:.2f} s (attempt {event.attempt})"
    if isinstance(event, Rotated):
        return "rotated to a new connection"
    return f"gave up: {event.error}"


async def _run_client(
    client: WebSocketClient,
    printer: _Printer,
    filters: list[dict[str, Any]],
    *,
    subscribe: tuple[Any, Any] | None = None,
    rate_every: float | None = None,
) -> int:
    """Stream until the count is reached, Ctrl-C, or the first connection fails."""
    outcome: dict[str, Any] = {"connected": False, "error": None}

    def on_status(event: Event) -> None:
        text = _describe(event)
        if isinstance(event, Connected):
            outcome["connected"] = True
        elif isinstance(event, Disconnected) and not outcome["connected"] and event.error:
            outcome["error"] = event.error
            printer.done.set()
            return
        elif isinstance(event, Failed):
            outcome["error"] = event.error
            printer.done.set()
        if not isinstance(event, Connecting):
            printer.news(text)

    client.status.subscribe(on_status)
    if subscribe is not None:
        stream = client.multiplex(subscribe[0], subscribe[1], filters or None)
    else:
        stream = client.stream(filters or None)
    sub = stream.subscribe(printer.message, lambda e: None)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, printer.done.set)
        loop.add_signal_handler(signal.SIGTERM, printer.done.set)
    ticker = None
    if rate_every:
        ticker = asyncio.ensure_future(_report_rate(client, printer, rate_every))
    try:
        await client.start()
        await printer.done.wait()
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
        sub.dispose()
        await client.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)
    error = outcome["error"]
    if error is not None:
        printer.news(f"error: {error}")
        return EXIT_FAILED
    return EXIT_OK


async def _report_rate(client: WebSocketClient, printer: _Printer, every: float) -> None:
    last, last_t = client.stats.messages, time.monotonic()
    while True:
        await asyncio.sleep(every)
        now, now_t = client.stats.messages, time.monotonic()
        s = client.stats
        printer.news(
            f"{(now - last) / (now_t - last_t):.0f} msg/s, {s.messages} received, "
            f"{s.reconnects} reconnects, {s.rotations} rotations"
        )
        last, last_t = now, now_t


async def _demo(args: argparse.Namespace, printer: _Printer) -> int:
    symbols = [s.upper() for s in args.symbols]
    streams = [f"{s.lower()}@trade" for s in symbols]
    async with DemoExchange(interval=0.005, batch=2) as exchange:
        printer.news(
            f"demo exchange on {exchange.ws_url}: drops every connection every "
            f"{args.drop_every:g} s; the client rotates every {args.rotate_every:g} s"
        )
        chaos = asyncio.ensure_future(_drop_every(exchange, args.drop_every))
        client = WebSocketClient(
            exchange.ws_url,
            backoff=Backoff(initial=0.2, maximum=2.0, reset_after=1.0),
            rotate_every=args.rotate_every,
            dedupe=_trade_id,
            idle_timeout=5.0,
        )
        filters = args.filter or [{"e": "trade"}]
        try:
            return await _run_client(
                client,
                printer,
                filters,
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


def _trade_id(msg: Any) -> Any:
    if isinstance(msg, dict):
        return msg.get("seq", msg.get("id"))
    return None


async def _listen(args: argparse.Namespace, printer: _Printer) -> int:
    sends = list(args.send)

    async def on_open(conn: Any) -> None:
        for msg in sends:
            await conn.send(msg if isinstance(msg, str) else dump_json(msg))

    client = WebSocketClient(
        args.url,
        parse=None if args.raw else _parse_or_text,
        rotate_every=args.rotate_every,
        idle_timeout=args.idle_timeout,
        on_open=on_open if sends else None,
    )
    return await _run_client(client, printer, args.filter)


def _parse_or_text(frame: str | bytes) -> Any:
    from .codec import parse_json

    try:
        return parse_json(frame)
    except ValueError:
        return frame if isinstance(frame, str) else frame.decode("utf-8", "backslashreplace")


async def _exchange(args: argparse.Namespace, printer: _Printer) -> int:
    async with DemoExchange(host=args.host, port=args.port) as exchange:
        printer.news(f"demo exchange: every trade on {exchange.url}")
        printer.news(f"demo exchange: SUBSCRIBE protocol on {exchange.ws_url}")
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, printer.done.set)
            loop.add_signal_handler(signal.SIGTERM, printer.done.set)
        await printer.done.wait()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``rxws`` command.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the connection failed, 2 on bad usage.
    """
    args = build_parser().parse_args(argv)
    printer = _Printer(sys.stdout, sys.stderr, getattr(args, "raw", False), vars(args).get("count"))
    runner = {"demo": _demo, "listen": _listen, "exchange": _exchange}[args.command]
    try:
        return asyncio.run(runner(args, printer))
    except KeyboardInterrupt:
        return EXIT_OK
    except ValueError as exc:  # a bad URL, found when the client is built
        sys.stderr.write(f"rxws: error: {exc}\n")
        return EXIT_USAGE
    except (RxwsError, OSError) as exc:
        sys.stderr.write(f"rxws: error: {exc}\n")
        return EXIT_FAILED
    finally:
        if printer.broken_pipe:
            # stdout's reader went away (e.g. `| head`): point stdout at /dev/null so the
            # interpreter's final flush does not fail.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
