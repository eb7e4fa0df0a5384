"""Secrets (URL query values, passwords, header values) never leave rxws in clear.

Each test drives a real connection down one or more failure paths with a URL and
headers full of secrets, captures every log line of every logger at DEBUG (rxws's, the
websockets and picows lines rxws relays, the test servers'), every status event,
every error (formatted as a traceback would show it), and the client's repr, and
checks that no secret appears in any of them.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
import traceback
from collections.abc import Iterable
from typing import Any

import pytest
import trustme

import rxws
from rxws._redact import Redactor
from rxws.events import Disconnected, Event, Failed
from rxws.testing import DemoExchange, FaultProxy, Recorder, SilentServer

LISTEN_KEY = "lkQUERYSECRET0123456789"
SIGNATURE = "sigSECRET9876543210abcdef"
API_KEY = "hdrSECRETapikey55555"
SESSION = "sessSECRETcookie777"
PASSWORD = "pwSECRETpass31337"
BASIC = base64.b64encode(f"trader:{PASSWORD}".encode()).decode()
SECRETS = (LISTEN_KEY, SIGNATURE, API_KEY, SESSION, PASSWORD, BASIC)
HEADERS = {"X-MBX-APIKEY": API_KEY, "X-Session": SESSION}
FAST = rxws.Backoff(initial=0.01, maximum=0.05)


def secret_url(base: str, path: str = "/stream") -> str:
    """``base`` (``ws://host:port``) with credentials, a path and a secret query."""
    scheme, _, hostport = base.partition("://")
    hostport = hostport.split("/", 1)[0]
    return (
        f"{scheme}://trader:{PASSWORD}@{hostport}{path}"
        f"?listenKey={LISTEN_KEY}&timestamp=1700000000&signature={SIGNATURE}"
    )


def error_text(error: BaseException) -> str:
    """What a log of ``error`` with its traceback would show (the chain included)."""
    return "".join(traceback.format_exception(error)) + repr(error)


class Capture:
    """Everything a client shows to the outside world."""

    def __init__(self, client: rxws.WebSocketClient) -> None:
        self.client = client
        self.events: list[Event] = []
        self.errors: list[Exception] = []
        self.rec = Recorder()
        client.status.subscribe(self.on_event)
        client.errors.subscribe(self.on_error)
        client.messages.subscribe(self.rec)

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        self.rec.notify()

    def on_error(self, error: Exception) -> None:
        self.errors.append(error)
        self.rec.notify()

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        await self.rec.wait_until(predicate, timeout)

    def lost(self) -> list[BaseException]:
        return [e.error for e in self.events if isinstance(e, Disconnected) and e.error]

    def statuses(self) -> set[int]:
        return {e.status for e in self.lost() if isinstance(e, rxws.HandshakeRejected)}

    def count(self, kind: type) -> int:
        return sum(isinstance(e, kind) for e in self.events)

    def texts(self) -> list[str]:
        found = [repr(self.client), str(self.client)]
        for event in self.events:
            found.append(repr(event))
            if isinstance(event, Disconnected):
                found.append(event.reason)
            error = getattr(event, "error", None)
            if error is not None:
                found.append(error_text(error))
        found += [error_text(e) for e in self.errors]
        if self.rec.error is not None:
            found.append(error_text(self.rec.error))
        return found


# The test server logs the frames it sends and receives; the tests make it send secrets
# back (a close reason naming the key), which a client echoes in its close frame. What a
# server logs of its own traffic is the server's business, not the client's.
_SERVER_FRAME = re.compile(r"^[<>] (TEXT|BINARY|CLOSE|PING|PONG|CONT)\b")


def client_side(record: logging.LogRecord) -> bool:
    return not (record.name.startswith("rxws.testing") and _SERVER_FRAME.match(record.getMessage()))


def assert_no_secret(texts: Iterable[str], caplog: pytest.LogCaptureFixture) -> None:
    records = [r for r in caplog.records if client_side(r)]
    everything = [*texts, *(caplog.handler.format(r) for r in records)]
    leaks = [
        f"{secret!r} in: {line[:300]}"
        for text in everything
        for line in text.splitlines()
        for secret in SECRETS
        if secret in line
    ]
    assert not leaks, "\n".join(leaks[:10])


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


async def test_feed_paths_keep_secrets(
    transport: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Rotation, a parse error echoing the key, a drop naming it, refusals, reconnects."""

    async with (
        DemoExchange() as exchange,
        FaultProxy("127.0.0.1", exchange.port) as proxy,
    ):
        client = rxws.WebSocketClient(
            secret_url(proxy.url()),
            additional_headers=HEADERS,
            transport=transport,
            backoff=FAST,
            rotate_every=0.15,
            dedupe=lambda m: m.get("seq"),
            idle_timeout=2.0,
        )
        seen = Capture(client)
        async with client:
            await seen.until(lambda: client.stats.rotations >= 1)
            exchange.send_raw(f'{{"listenKey": "{LISTEN_KEY}", broken')
            await seen.until(lambda: bool(seen.errors))
            await exchange.drop_all(1011, f"listenKey {LISTEN_KEY} expired")
            await seen.until(lambda: client.stats.reconnects >= 1)
            exchange.refuse(503, 429)
            proxy.cut()
            await seen.until(lambda: {503, 429} <= seen.statuses())
            count = len(seen.rec.items)
            await seen.until(lambda: len(seen.rec.items) > count + 3)
            exchange.refuse(*[401] * 10)  # a rotation may meet the first ones
            proxy.cut()
            await seen.until(lambda: seen.count(Failed) == 1)
        # The secrets really went to the server.
        assert any(LISTEN_KEY in path for path in exchange.request_paths)
        assert all(h.get("X-MBX-APIKEY") == API_KEY for h in exchange.request_headers)
        assert all(h.get("Authorization") == f"Basic {BASIC}" for h in exchange.request_headers)
        # Every path was taken.
        assert isinstance(seen.errors[0], rxws.ParseError)
        lost = seen.lost()
        assert any(isinstance(e, rxws.ConnectionLost) and e.code == 1011 for e in lost)
        assert seen.statuses() == {503, 429, 401}
        # The request line and header lines were logged, redacted.
        assert "listenKey=***" in debug_logs.text
        assert "X-MBX-APIKEY: ***" in debug_logs.text
        assert_no_secret(seen.texts(), debug_logs)


async def test_handshake_timeout_keeps_secrets(
    transport: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    async with SilentServer() as server:
        client = rxws.WebSocketClient(
            secret_url(server.url),
            additional_headers=HEADERS,
            transport=transport,
            backoff=FAST,
            open_timeout=0.1,
        )
        seen = Capture(client)
        async with client:
            await seen.until(lambda: client.stats.reconnects >= 2)
        assert any("timed out" in t for t in seen.texts())
        assert_no_secret(seen.texts(), debug_logs)


async def test_tls_failure_keeps_secrets(
    transport: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    async with DemoExchange(ssl=context) as exchange:
        client = rxws.WebSocketClient(
            secret_url(exchange.url), additional_headers=HEADERS, transport=transport
        )
        seen = Capture(client)
        async with client:
            await seen.until(lambda: seen.count(Failed) == 1)
        failed = next(e for e in seen.events if isinstance(e, Failed))
        assert isinstance(failed.error, rxws.CertificateError)
        assert "listenKey=***" in str(failed.error)
        assert_no_secret(seen.texts(), debug_logs)


async def test_url_from_a_callable_keeps_fresh_secrets(
    transport: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    async with DemoExchange() as exchange:
        keys: list[str] = []

        async def fresh_url() -> str:
            keys.append(f"freshLISTENKEY{len(keys):04d}xyzzy")
            return f"{exchange.url}?listenKey={keys[-1]}"

        client = rxws.WebSocketClient(fresh_url, transport=transport, backoff=FAST)
        seen = Capture(client)
        async with client:
            await seen.until(lambda: len(seen.rec.items) >= 2)
            await exchange.drop_all(1011, f"key {keys[-1]} revoked")
            await seen.until(lambda: len(keys) >= 2 and exchange.open_connections == 1)
            await asyncio.sleep(0.05)
        assert len(keys) >= 2
        texts = seen.texts()
        logged = [debug_logs.handler.format(r) for r in debug_logs.records if client_side(r)]
        everything = "\n".join([*texts, *logged])
        assert "revoked" in everything
        for key in keys:
            assert key not in everything
        assert_no_secret(texts, debug_logs)


async def test_bare_connect_errors_keep_secrets(
    transport: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    async with DemoExchange() as exchange:
        url = secret_url(exchange.url)
        errors = []
        for status in (401, 503):
            exchange.refuse(status)
            rec = Recorder()
            rxws.connect(url, additional_headers=HEADERS, transport=transport).subscribe(rec)
            await rec.wait_done()
            assert isinstance(rec.error, rxws.HandshakeRejected)
            errors.append(rec.error)
        events: list[Event] = []
        rec = Recorder()
        source = rxws.connect(
            url, additional_headers=HEADERS, transport=transport, on_event=events.append
        )
        source.subscribe(rec)
        await rec.wait_for_count(2)
        await exchange.drop_all(4000, f"signature {SIGNATURE} rejected")
        await rec.wait_done()
        assert isinstance(rec.error, rxws.ConnectionLost) and rec.error.code == 4000
        errors.append(rec.error)
        texts = [error_text(e) for e in errors] + [repr(e) for e in events] + [repr(source)]
        assert "rejected" in texts[2]
        assert_no_secret(texts, debug_logs)


async def test_parse_error_quoting_the_frame_is_redacted(
    transport: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    """A parser whose message quotes a frame in which the server echoes the listen key.

    rxws's own message and log lines are redacted; the parser's exception, kept as the
    ``ParseError``'s cause, is the parser's own text and is left as it is.
    """

    def parse(frame: str | bytes) -> Any:
        if "broken" in str(frame):
            raise ValueError(f"cannot parse {frame!r}")
        return rxws.parse_json(frame)

    async with DemoExchange() as exchange:
        client = rxws.WebSocketClient(
            secret_url(exchange.url), parse=parse, transport=transport, backoff=FAST
        )
        seen = Capture(client)
        async with client:
            await seen.until(lambda: len(seen.rec.items) >= 2)
            exchange.send_raw(f'{{"listenKey": "{LISTEN_KEY}", broken')
            await seen.until(lambda: bool(seen.errors))
        [error] = seen.errors
        assert isinstance(error, rxws.ParseError)
        assert "cannot parse" in str(error) and '"listenKey": "***"' in str(error)
        assert LISTEN_KEY in str(error.error)  # the parser's own exception, untouched
        assert any("cannot parse" in r.getMessage() for r in debug_logs.records)
        assert_no_secret([str(error), repr(error), *seen.texts()[:1]], debug_logs)


# ---------------------------------------------------------------------- free text


def test_ordinary_query_values_stay_readable_in_free_text() -> None:
    redactor = Redactor(
        "wss://x.io/ws?mode=custom&symbol=BTCUSDT&timestamp=1700000000&depth=20"
        f"&listenKey={LISTEN_KEY}&apiKey=abcd&id=a1b2c3d4e5&ref=Zm9vYmFyYmF6cXV4cXV1eA"
    )
    text = "custom reason: BTCUSDT depth 20 since 1700000000"
    assert redactor(text) == text
    # Secret-named values, whatever they look like, and token-like values are blanked.
    assert redactor(f"key {LISTEN_KEY}, api abcd") == "key ***, api ***"
    assert redactor("order a1b2c3d4e5 ref Zm9vYmFyYmF6cXV4cXV1eA") == "order *** ref ***"
    # The URL itself still shows no query value at all.
    assert "custom" not in redactor.url("wss://x.io/ws?mode=custom")


async def test_a_close_reason_keeps_ordinary_words_of_the_url(
    transport: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    async with DemoExchange() as exchange:
        url = f"{exchange.url}?mode=custom&listenKey={LISTEN_KEY}&signature={SIGNATURE}"
        rec = Recorder()
        rxws.connect(url, transport=transport).subscribe(rec)
        await rec.wait_for_count(1)
        await exchange.drop_all(4000, f"custom reason for {LISTEN_KEY}")
        await rec.wait_done()
    assert isinstance(rec.error, rxws.ConnectionLost)
    assert rec.error.reason == "custom reason for ***"
    assert "custom reason for ***" in str(rec.error)
    assert_no_secret([error_text(rec.error)], debug_logs)
