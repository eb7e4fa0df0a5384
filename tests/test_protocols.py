"""Subscription protocols: topics to frames, messages to topics, replies to requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

import rxws
from rxws import protocols
from rxws.limits import Limits
from rxws.protocols import (
    Binance,
    JsonSubscriptions,
    Reply,
    Request,
    Subscriptions,
    build_requests,
    topic_list,
)

# ------------------------------------------------------------------ Binance


def test_binance_defaults_are_its_documented_limits() -> None:
    spot = Binance()
    assert spot.limits == Limits(1024, 5, (300, 300.0), 86400.0)
    assert Binance(futures=True).limits.messages_per_second == 10
    assert Binance(messages_per_second=2).limits.messages_per_second == 2
    assert Binance(futures=True, messages_per_second=8).limits.messages_per_second == 8
    assert isinstance(spot, Subscriptions)
    assert rxws.protocols is protocols


def test_binance_frames_batch_topics_up_to_the_frame_cap() -> None:
    topics = [f"s{i}@trade" for i in range(450)]
    requests = Binance().subscribe_frames(topics, 7)
    assert [r.id for r in requests] == [7, 8, 9]
    assert [len(r.topics) for r in requests] == [200, 200, 50]
    assert requests[0].frame == {"method": "SUBSCRIBE", "params": topics[:200], "id": 7}
    assert [t for r in requests for t in r.topics] == topics
    (one,) = Binance(topics_per_frame=5).unsubscribe_frames(["a@trade", "b@trade"], 1)
    assert one == Request(1, ("a@trade", "b@trade"), {
        "method": "UNSUBSCRIBE", "params": ["a@trade", "b@trade"], "id": 1
    })  # fmt: skip
    assert Binance().subscribe_frames([], 1) == []


def test_binance_reads_combined_stream_messages() -> None:
    binance = Binance()
    message = {"stream": "btcusdt@trade", "data": {"e": "trade", "p": "1.0"}}
    assert binance.topic_of(message) == "btcusdt@trade"
    assert binance.payload(message) == {"e": "trade", "p": "1.0"}
    assert binance.topic_of({"e": "trade"}) is None  # a raw (/ws) message names no topic
    assert binance.topic_of({"result": None, "id": 1}) is None
    assert binance.topic_of("text") is None


def test_binance_recognises_replies() -> None:
    binance = Binance()
    assert binance.reply_of({"result": None, "id": 4}) == Reply(4, None)
    assert binance.reply_of({"result": ["a@trade"], "id": 5}) == (5, None)
    error = {"error": {"code": 2, "msg": "Invalid request: unknown variable"}, "id": 6}
    assert binance.reply_of(error) == Reply(6, "code 2: Invalid request: unknown variable")
    assert binance.reply_of({"error": {"code": 3, "msg": "bad JSON"}, "id": None}) == (
        None,
        "code 3: bad JSON",
    )
    assert binance.reply_of({"stream": "a@trade", "data": {"id": 1}}) is None
    assert binance.reply_of({"e": "trade", "id": 9}) is None  # an id, but no result or error
    assert binance.reply_of([1, 2]) is None


@pytest.mark.parametrize(
    "given, expected",
    [
        ("wss://stream.binance.com:9443", "wss://stream.binance.com:9443/stream"),
        ("wss://stream.binance.com:9443/", "wss://stream.binance.com:9443/stream"),
        ("wss://stream.binance.com:9443/ws", "wss://stream.binance.com:9443/stream"),
        ("wss://fstream.binance.com/public/", "wss://fstream.binance.com/public/stream"),
        ("ws://127.0.0.1:8000/stream?x=1", "ws://127.0.0.1:8000/stream?x=1"),
    ],
)
def test_binance_url_is_the_combined_stream_endpoint(given: str, expected: str) -> None:
    assert Binance().url(given) == expected


def test_binance_refuses_a_raw_stream_url_without_leaking_its_query() -> None:
    with pytest.raises(ValueError, match="single raw stream") as caught:
        Binance().url("wss://stream.binance.com/ws/btcusdt@trade?listenKey=s3cr3tvalue")
    assert "s3cr3tvalue" not in str(caught.value)


@pytest.mark.parametrize(
    "topics, error, words",
    [
        ("btcusdt@trade", TypeError, r"not one string: write \['btcusdt@trade'\]"),
        (["a@trade", 5], TypeError, r"must be strings, got 5 \(int\) at position 1"),
        ([b"a@trade"], TypeError, r"must be strings, got b'a@trade' \(bytes\)"),
        (["a@trade", ""], ValueError, "must not be empty"),
    ],
)
def test_bad_topics_fail_at_the_call(topics: Any, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        Binance().subscribe_frames(topics, 1)
    with pytest.raises(error, match=words):
        JsonSubscriptions({"sub": "{topics}"}, {"unsub": "{topics}"}).unsubscribe_frames(topics, 1)
    with pytest.raises(error, match=words):
        build_requests(Binance(), topics, 1)


def test_topic_list_drops_repeats_and_keeps_order() -> None:
    assert topic_list(iter(["b", "a", "b"])) == ("b", "a")


@pytest.mark.parametrize("value", [True, 0, "10"])
def test_binance_refuses_a_bad_frame_cap(value: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="topics_per_frame"):
        Binance(topics_per_frame=value)


# ------------------------------------------------------------------ JsonSubscriptions


def test_json_templates_fill_topics_and_ids() -> None:
    proto = JsonSubscriptions(
        subscribe={"op": "subscribe", "args": "{topics}", "req_id": "{id}", "x": [1, "{id}"]},
        unsubscribe={"op": "unsubscribe", "args": "{topics}", "req_id": "{id}"},
        topics_per_frame=2,
        limits=Limits(streams_per_connection=10),
    )
    requests = proto.subscribe_frames(["a", "b", "c"], 40)
    assert requests == [
        Request(
            40, ("a", "b"), {"op": "subscribe", "args": ["a", "b"], "req_id": 40, "x": [1, 40]}
        ),
        Request(41, ("c",), {"op": "subscribe", "args": ["c"], "req_id": 41, "x": [1, 41]}),
    ]
    # Filling never changes the template itself.
    again = proto.subscribe_frames(["z"], 1)
    assert again[0].frame == {"op": "subscribe", "args": ["z"], "req_id": 1, "x": [1, 1]}
    assert proto.limits.streams_per_connection == 10
    assert isinstance(proto, Subscriptions)


def test_json_single_topic_template_sends_one_frame_per_topic() -> None:
    proto = JsonSubscriptions(
        {"type": "subscribe", "channel": "{topic}"}, {"type": "unsubscribe", "channel": "{topic}"}
    )
    assert proto.topics_per_frame == 1
    frames = [r.frame for r in proto.unsubscribe_frames(["x", "y"], 1)]
    assert frames == [
        {"type": "unsubscribe", "channel": "x"},
        {"type": "unsubscribe", "channel": "y"},
    ]


def test_json_functions_build_frames() -> None:
    def sub(topics: list[str], ident: int) -> str:
        return f"SUB {ident} {','.join(topics)}"

    proto = JsonSubscriptions(sub, lambda topics, ident: f"UNSUB {ident}", topics_per_frame=2)
    assert [r.frame for r in proto.subscribe_frames(["a", "b", "c"], 1)] == [
        "SUB 1 a,b",
        "SUB 2 c",
    ]


def test_a_function_returning_no_frame_is_a_clear_error() -> None:
    proto = JsonSubscriptions(lambda topics, ident: None, {"op": "unsub", "args": "{topics}"})
    with pytest.raises(TypeError, match=r"subscribe function returned None for 2 topic\(s\)"):
        proto.subscribe_frames(["a", "b"], 1)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"subscribe": {"op": "sub"}}, ValueError, "names no topics"),
        ({"subscribe": {"a": "{topic}", "b": "{topics}"}}, ValueError, "both"),
        ({"subscribe": "SUBSCRIBE"}, TypeError, "dict template or a function"),
        ({"subscribe": {"a": "{topic}"}, "topics_per_frame": 5}, ValueError, "one topic per"),
        ({"topics_per_frame": 0}, ValueError, "topics_per_frame must be 1 or more"),
        ({"topics_per_frame": 2.0}, TypeError, "topics_per_frame must be an int"),
        ({"limits": {"streams_per_connection": 3}}, TypeError, "rxws.Limits"),
        ({"topic": 3}, TypeError, "field name or a function"),
    ],
)
def test_bad_json_protocols_are_refused(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    settings: dict[str, Any] = {"subscribe": {"s": "{topics}"}, "unsubscribe": {"u": "{topics}"}}
    settings.update(kwargs)
    with pytest.raises(error, match=words):
        JsonSubscriptions(**settings)


def test_json_topic_payload_and_reply_by_field() -> None:
    proto = JsonSubscriptions(
        {"op": "subscribe", "args": "{topics}", "req_id": "{id}"},
        {"op": "unsubscribe", "args": "{topics}", "req_id": "{id}"},
        topic="topic",
        payload="data",
        id_field="req_id",
        error_field="ret_msg",
    )
    data = {"topic": "trade.BTC", "data": [1, 2], "req_id": "x"}
    assert proto.topic_of(data) == "trade.BTC" and proto.payload(data) == [1, 2]
    assert proto.reply_of(data) is None  # names a topic, so it is data, not a reply
    assert proto.reply_of({"req_id": "12", "ret_msg": ""}) == Reply(12, None)
    assert proto.reply_of({"req_id": 3, "ret_msg": "bad args"}) == Reply(3, "bad args")
    assert proto.reply_of({"req_id": "abc", "ret_msg": {"msg": "no"}}) == Reply(None, "no")
    assert proto.reply_of({"other": 1}) is None
    assert proto.topic_of({"topic": 5}) is None and proto.payload("raw") == "raw"
    assert proto.url("ws://h/x") == "ws://h/x"


def test_json_functions_for_topic_payload_reply_and_url() -> None:
    proto = JsonSubscriptions(
        {"s": "{topics}"},
        {"u": "{topics}"},
        topic=lambda m: m[0] if isinstance(m, list) else None,
        payload=lambda m: m[1],
        reply=lambda m: (m["n"], m.get("err")) if isinstance(m, dict) else None,
        url=lambda base: base + "/v2",
    )
    assert proto.topic_of(["t", 42]) == "t" and proto.payload(["t", 42]) == 42
    assert proto.reply_of({"n": 1}) == Reply(1, None)
    assert proto.reply_of({"n": 2, "err": 7}) == Reply(2, "7")
    assert proto.reply_of(["t", 1]) is None
    assert proto.url("ws://h") == "ws://h/v2"
    assert JsonSubscriptions({"s": "{topics}"}, {"u": "{topics}"}).payload({"a": 1}) == {"a": 1}


# ------------------------------------------------------------------ build_requests


class _Faulty:
    """A custom protocol whose subscribe_frames returns whatever the test says."""

    limits = Limits()
    topics_per_frame: int | None = 2

    def __init__(self, result: Any) -> None:
        self.result = result

    def subscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        return self.result  # type: ignore[no-any-return]

    def unsubscribe_frames(self, topics: Sequence[str], request_id: int) -> list[Request]:
        return [Request(request_id, tuple(topics), {"u": list(topics)})]

    def topic_of(self, message: Any) -> str | None:
        return None

    def payload(self, message: Any) -> Any:
        return message

    def reply_of(self, message: Any) -> Reply | None:
        return None

    def url(self, base_url: str) -> str:
        return base_url


@pytest.mark.parametrize(
    "result, error, words",
    [
        ([], TypeError, r"_Faulty\.subscribe_frames returned \[\] for 2 topic\(s\)"),
        (None, TypeError, "returned None"),
        ([{"frame": 1}], TypeError, r"each item must be a rxws\.protocols\.Request"),
        ([Request(1, ("a", "b"), None)], TypeError, "with a frame to send"),
        ([Request(1, ("a",), {}), Request(1, ("b",), {})], TypeError, "number 1 twice"),
        ([Request(1, ("a",), {})], ValueError, r"named 1 topic\(s\) for 2 asked for"),
        ([Request(1, ("a", "b", "a"), {})], ValueError, "3 topics in one frame"),
    ],
)
def test_build_requests_catches_a_faulty_protocol(
    result: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        build_requests(_Faulty(result), ["a", "b"], 1)


def test_build_requests_passes_good_requests_through() -> None:
    good = [Request(1, ("a", "b"), {"s": ["a", "b"]})]
    assert build_requests(_Faulty(good), ["a", "b"], 1) == good
    assert build_requests(_Faulty(None), [], 1) == []  # nothing to ask for: no call
    assert build_requests(_Faulty(None), ["x"], 9, unsubscribe=True) == [
        Request(9, ("x",), {"u": ["x"]})
    ]
    assert len(build_requests(Binance(), [f"t{i}" for i in range(401)], 1)) == 3


# ------------------------------------------------------------------ SubscriptionRejected


def test_subscription_rejected_carries_topics_and_a_redacted_message() -> None:
    key = "pqkVQmWfRD2Ns2xPMYoKR7fYBUwbcZKLLmPL1ZczF3dTnh1WrC9t"
    error = rxws.SubscriptionRejected([key, "btcusdt@trade"], f"code 2: bad stream {key}")
    assert isinstance(error, rxws.RxwsError) and not rxws.is_retryable(error)
    assert error.topics == (key, "btcusdt@trade")
    assert key not in str(error) and key not in repr(error) and key not in error.message
    assert "'btcusdt@trade'" in str(error) and "code 2: bad stream ***" in str(error)
    assert "check the topic names" in str(error)
    many = rxws.SubscriptionRejected([f"t{i}" for i in range(12)], "too many")
    assert "'t4' and 7 more" in str(many) and "'t5'" not in str(many)
    assert "topic 'x'" in str(rxws.SubscriptionRejected(["x"], "no"))
