"""wss:// against a loopback DemoExchange whose certificate comes from a test CA."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import reactivex
import trustme

import rxws
from rxws.events import Connecting, Event, Failed
from rxws.testing import DemoExchange, Recorder


@dataclass
class Pki:
    """A test CA, a server context with a certificate it issued, and client contexts."""

    ca: trustme.CA
    server: ssl.SSLContext  # certificate for 127.0.0.1 and localhost
    wrong_name: ssl.SSLContext  # certificate for another host only
    trusting: ssl.SSLContext  # a client context that trusts the CA


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    ca = trustme.CA()
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    yield Pki(
        ca=ca,
        server=server_context(ca, "127.0.0.1", "localhost"),
        wrong_name=server_context(ca, "feed.example.com"),
        trusting=trusting,
    )


async def failure_of(source: reactivex.Observable[Any]) -> Exception:
    rec = Recorder()
    source.subscribe(rec)
    await rec.wait_done()
    assert rec.items == []
    assert rec.error is not None
    return rec.error


async def test_trusted_context_connects_and_receives(pki: Pki, transport: str) -> None:
    async with DemoExchange(ssl=pki.server) as exchange:
        assert exchange.url.startswith("wss://127.0.0.1:")
        rec = Recorder()
        sub = rxws.connect(exchange.url, ssl=pki.trusting, transport=transport).subscribe(rec)
        items = await rec.wait_for_count(3)
        sub.dispose()
        assert [m["seq"] for m in items[:3]] == [1, 2, 3]
        await exchange.wait_for(lambda: exchange.open_connections == 0)


async def test_verification_is_on_by_default(pki: Pki, transport: str) -> None:
    async with DemoExchange(ssl=pki.server) as exchange:
        error = await failure_of(rxws.connect(exchange.url, transport=transport))
        assert isinstance(error, rxws.CertificateError)
        assert isinstance(error, rxws.RxwsError)
        text = str(error)
        # Says what happened and what to do about it.
        assert "TLS certificate verification failed" in text
        assert "not signed by a CA that this client trusts" in text
        assert "ssl=" in text
        assert "retrying will not help" in text
        assert not rxws.is_retryable(error)
        assert exchange.accepted == 0  # no websocket was ever opened


async def test_ssl_true_uses_the_system_trust_store(pki: Pki, transport: str) -> None:
    async with DemoExchange(ssl=pki.server) as exchange:
        error = await failure_of(rxws.connect(exchange.url, ssl=True, transport=transport))
        assert isinstance(error, rxws.CertificateError)


async def test_certificate_for_another_host_fails_clearly(pki: Pki, transport: str) -> None:
    async with DemoExchange(ssl=pki.wrong_name) as exchange:
        source = rxws.connect(exchange.url, ssl=pki.trusting, transport=transport)
        error = await failure_of(source)
        assert isinstance(error, rxws.CertificateError)
        text = str(error)
        assert "not valid for '127.0.0.1'" in text
        assert "host name the certificate lists" in text
        assert not rxws.is_retryable(error)


async def test_certificate_from_another_ca_fails(pki: Pki, transport: str) -> None:
    other = trustme.CA()
    async with DemoExchange(ssl=server_context(other, "127.0.0.1")) as exchange:
        source = rxws.connect(exchange.url, ssl=pki.trusting, transport=transport)
        error = await failure_of(source)
        assert isinstance(error, rxws.CertificateError)
        assert "not signed by a CA that this client trusts" in str(error)


@pytest.mark.parametrize("which", ["untrusted", "wrong_name"])
async def test_client_gives_up_at_once_on_a_certificate_error(
    pki: Pki, transport: str, which: str
) -> None:
    server = pki.server if which == "untrusted" else pki.wrong_name
    options = {} if which == "untrusted" else {"ssl": pki.trusting}
    async with DemoExchange(ssl=server) as exchange:
        events: list[Event] = []
        client = rxws.WebSocketClient(
            exchange.url,
            transport=transport,
            backoff=rxws.Backoff(initial=0.01, maximum=0.01),
            **options,
        )
        client.status.subscribe(events.append)
        rec = Recorder()
        client.messages.subscribe(rec)
        async with client:
            await rec.wait_done()
            # A retry loop would have made many attempts by now.
            await asyncio.sleep(0.2)
        assert isinstance(rec.error, rxws.CertificateError)
        failed = [e for e in events if isinstance(e, Failed)]
        assert len(failed) == 1 and isinstance(failed[0].error, rxws.CertificateError)
        assert sum(isinstance(e, Connecting) for e in events) == 1
        assert client.stats.reconnects == 0


async def test_client_over_wss_reconnects_after_a_drop(pki: Pki, transport: str) -> None:
    async with DemoExchange(ssl=pki.server) as exchange:
        rec = Recorder()
        async with rxws.WebSocketClient(
            exchange.url,
            ssl=pki.trusting,
            transport=transport,
            backoff=rxws.Backoff(initial=0.01, maximum=0.05),
        ) as client:
            client.messages.subscribe(rec)
            await rec.wait_for_count(3)
            await exchange.drop_all(1011)
            await exchange.wait_for(lambda: exchange.accepted == 2)
            count = len(rec.items)
            await rec.wait_for_count(count + 3)
        assert rec.error is None
        assert client.stats.reconnects == 1
