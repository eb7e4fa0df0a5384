"""The exception tree: each error says what happened and what to do."""

from __future__ import annotations

import rxws
from rxws import errors


def test_every_error_is_exported_and_under_the_base() -> None:
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type):
            assert issubclass(obj, rxws.RxwsError)
            assert getattr(rxws, name) is obj


def test_handshake_rejected_names_status_and_advice() -> None:
    e = rxws.HandshakeRejected("ws://h/x?k=***", 401)
    assert e.status == 401 and "HTTP 401" in str(e) and "retrying will not help" in str(e)
    assert "reconnect retries" in str(rxws.HandshakeRejected("ws://h/", 503))
    assert isinstance(e, rxws.ConnectionFailed)


def test_connection_lost_carries_the_code() -> None:
    e = rxws.ConnectionLost(1011, "boom")
    assert e.code == 1011 and "1011" in str(e) and "boom" in str(e)
    assert rxws.ConnectionLost(None).code is None


def test_reconnect_exhausted_chains_the_last_error() -> None:
    last = rxws.ConnectionFailed("ws://h/", "refused")
    e = rxws.ReconnectExhausted(3, last)
    assert e.__cause__ is last and e.attempts == 3 and "3 failed attempts" in str(e)


def test_idle_timeout_is_a_connection_loss() -> None:
    e = rxws.IdleTimeout(2.5)
    assert isinstance(e, rxws.ConnectionLost) and "2.5 s" in str(e)


def test_overflow_and_closed_say_what_to_do() -> None:
    assert "drop_oldest" in str(rxws.StreamOverflow(10))
    assert "closed" in str(rxws.StreamClosed())
    assert "rxws[picows]" in str(rxws.TransportUnavailable("picows", "picows"))


def test_an_os_error_without_words_still_gets_a_reason() -> None:
    from rxws.transports.base import os_error_reason

    assert os_error_reason(ConnectionResetError()) == (
        "the server reset the connection during the handshake"
    )
    assert os_error_reason(ConnectionRefusedError(111, "Connection refused")) == (
        "Connection refused"
    )
    assert os_error_reason(OSError()) == "OSError"


SAMPLES: list[rxws.RxwsError] = [
    rxws.ConnectionFailed("ws://h/", "refused"),
    rxws.HandshakeRejected("ws://h/", 401),
    rxws.CertificateError("wss://h/", "self-signed"),
    rxws.ConnectionLost(1011, "boom"),
    rxws.IdleTimeout(2.0),
    rxws.ReconnectExhausted(3, OSError("refused")),
    rxws.RotationFailed("the new connection was refused", 1.5),
    rxws.ParseError(ValueError("bad"), 7),
    rxws.SubscriberError(KeyError("k")),
    rxws.StreamOverflow(10),
    rxws.StreamClosed("the client"),
    rxws.NoRunningLoop("rxws.connect(...)"),
    rxws.NotConnected(1.0),
    rxws.SubscriptionRejected(["a@trade"], "code 2: invalid"),
    rxws.TransportUnavailable("picows", "picows"),
]


def test_every_error_keeps_its_advice_in_hint_and_its_message_ends_with_it() -> None:
    assert {type(e) for e in SAMPLES} == {
        getattr(errors, n) for n in errors.__all__ if n not in ("RxwsError", "is_retryable")
    }
    for e in SAMPLES:
        assert e.hint, type(e).__name__
        assert str(e).endswith(f"; {e.hint}"), str(e)
        assert e.args == (str(e),)  # as any exception: args holds the message


def test_the_message_is_built_from_the_fields() -> None:
    e = rxws.ParseError(ValueError("it quoted lk0123456789"), 30)
    e.detail = "ValueError: it quoted ***"  # as rxws redacts what a parser quoted
    assert "lk0123456789" not in str(e) and "it quoted ***" in str(e)
    lost = rxws.ConnectionLost(1011, "boom")
    lost.hint = "try later"
    assert str(lost) == "the websocket connection was lost: close code 1011 (boom); try later"
