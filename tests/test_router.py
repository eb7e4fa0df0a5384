"""rxws.Router: hot, indexed, reference-counted fan-out, delivered synchronously."""

from __future__ import annotations

import asyncio
import gc
import logging
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
import reactivex
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reactivex import Observable, abc
from reactivex import operators as rx_ops
from reactivex.disposable import Disposable
from reactivex.subject import Subject
from support import CountingSource

import rxws
from rxws.errors import SubscriberError
from rxws.filters import matches
from rxws.router import Router
from rxws.testing import DemoExchange


def reference(filters: Any, msg: Any) -> bool:
    """The seed's rule, written out independently (non-mappings match only ``[]``/None)."""
    return not filters or (
        isinstance(msg, Mapping)
        and any(all(k in msg and v == msg[k] for k, v in f.items()) for f in filters)
    )


# --------------------------------------------------------------------------------------
# The model test: random streams, messages, and subscribe/dispose/raise mid-flow.
#
# Every event goes into one log: ("push", m), ("sub", s), ("recv", s, m), ("gone", s).
# Since delivery is synchronous, the log alone tells what each stream must have got:
# exactly the messages that ``reference`` accepts among those pushed after it
# subscribed; for the message in flight when it left, at most that one, and only before
# it left; nothing later.
# --------------------------------------------------------------------------------------

NAN = float("nan")
KEYS = st.sampled_from(["s", "e", "k", 1, True])
SCALARS = st.sampled_from(["A", "B", "C", 0, 1, True, False, 1.0, None, NAN, "", b"A"])
# Unhashable values equal to hashable ones: a bytearray to bytes, a set or a dict's keys
# to a frozenset.
THAWED = st.sampled_from(
    [lambda: bytearray(b"A"), lambda: {"A"}, lambda: {"A": 0}.keys(), lambda: set()]
).map(lambda make: make())
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(KEYS, inner, max_size=2),
        st.tuples(inner),
        st.frozensets(SCALARS, max_size=2),
        THAWED,
    ),
    max_leaves=3,
)
SIMPLE_VALUES = st.sampled_from(["A", "B", 1, True, b"A", frozenset({"A"}), frozenset()])
SIMPLE_FILTERS = st.lists(
    st.dictionaries(st.sampled_from(["s", "e"]), SIMPLE_VALUES, min_size=1),
    min_size=1,
    max_size=2,
)
FILTERS = st.one_of(
    st.none(),
    st.just([]),
    SIMPLE_FILTERS,
    SIMPLE_FILTERS,
    st.lists(st.dictionaries(KEYS, VALUES, max_size=2), min_size=1, max_size=3),
)
SIMPLE_MESSAGES = st.dictionaries(
    st.sampled_from(["s", "e", "k"]),
    st.one_of(st.sampled_from(["A", "B", 1, True, [1]]), THAWED),
    min_size=1,
)
MESSAGES = st.one_of(
    SIMPLE_MESSAGES,
    SIMPLE_MESSAGES,
    st.dictionaries(KEYS, VALUES, max_size=4),
    st.lists(SCALARS, max_size=2),
    st.text(alphabet="sk", max_size=2),
    st.integers(-1, 1),
)
SUB = st.tuples(st.just("sub"), FILTERS)
PUSH = st.tuples(st.just("push"), MESSAGES)
# A message made from a live stream's first filter dict, its values thawed (see ``thaw``).
PUSH_LIKE = st.tuples(st.just("push_like"), st.integers(0, 20), st.integers(0, 2))
OPS = st.builds(
    lambda first, rest: first + rest,
    st.lists(SUB, min_size=1, max_size=4),
    st.lists(
        st.one_of(
            SUB,
            PUSH,
            PUSH,
            PUSH_LIKE,
            st.tuples(st.just("dispose"), st.integers(0, 20)),
            st.tuples(st.just("arm_sub"), st.integers(0, 20), FILTERS),
            st.tuples(st.just("arm_dispose"), st.integers(0, 20), st.integers(0, 20)),
            st.tuples(st.just("arm_raise"), st.integers(0, 20)),
        ),
        min_size=8,
        max_size=40,
    ),
)


def thaw(value: Any, how: int) -> Any:
    """``value``, or an unhashable value equal to it (``how`` picks which, 0 for none)."""
    if not how:
        return value
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, frozenset):
        return set(value) if how == 1 else dict.fromkeys(value).keys()
    if isinstance(value, tuple):
        return tuple(thaw(item, how) for item in value)
    return value


def like(filters: Any, how: int) -> Any:
    """A message that ``filters``' first dict accepts, with its values thawed."""
    if not filters:
        return {"s": "A"}
    return {k: thaw(v, how) for k, v in filters[0].items()}


@dataclass
class Stream:
    name: int
    filters: Any
    disposable: abc.DisposableBase | None = None
    # What to do on the next receipt: ("sub", filters) | ("dispose", j) | ("raise",)
    armed: list[tuple[Any, ...]] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    completed: bool = False
    live: bool = True
    raised_while_live: int = 0
    raised_after_leaving: int = 0


class Model:
    def __init__(self) -> None:
        self.source = CountingSource()
        self.reported: list[SubscriberError] = []
        self.router: Router[Any] = Router(
            self.source.observable, on_subscriber_error=self.reported.append
        )
        self.log: list[tuple[Any, ...]] = []
        self.streams: list[Stream] = []
        self.messages: list[Any] = []

    def live(self) -> list[Stream]:
        return [s for s in self.streams if s.live]

    def subscribe(self, filters: Any) -> None:
        stream = Stream(len(self.streams), filters)
        self.streams.append(stream)
        self.log.append(("sub", stream.name))

        def on_next(msg: Any) -> None:
            self.log.append(("recv", stream.name, self.current))
            while stream.armed:
                action = stream.armed.pop(0)
                event(f"mid-flow {action[0]}")
                if action[0] == "sub":
                    self.subscribe(action[1])
                elif action[0] == "dispose":
                    self.dispose(action[1])
                else:
                    if stream.live:
                        stream.raised_while_live += 1
                    else:
                        stream.raised_after_leaving += 1
                    raise RuntimeError(f"stream {stream.name} fails on purpose")

        def on_error(error: Exception) -> None:
            stream.errors.append(error)
            stream.live = False
            self.log.append(("gone", stream.name))

        def on_completed() -> None:
            stream.completed = True

        stream.disposable = self.router.stream(filters).subscribe(on_next, on_error, on_completed)

    def dispose(self, k: int) -> None:
        live = self.live()
        if not live:
            return
        stream = live[k % len(live)]
        stream.live = False
        self.log.append(("gone", stream.name))
        assert stream.disposable is not None
        stream.disposable.dispose()

    def push(self, msg: Any) -> None:
        self.current = len(self.messages)
        self.messages.append(msg)
        self.log.append(("push", self.current))
        self.source.push(msg)

    def check_refcount(self) -> None:
        live = len(self.live())
        assert self.router.subscriber_count == live
        assert self.router.connected is (live > 0)
        assert self.source.active == (1 if live else 0)

    def check(self) -> None:
        push_at = {entry[1]: i for i, entry in enumerate(self.log) if entry[0] == "push"}
        push_end = {m: push_at.get(m + 1, len(self.log)) for m in push_at}
        for stream in self.streams:
            sub_at = self.log.index(("sub", stream.name))
            gone = [i for i, e in enumerate(self.log) if e == ("gone", stream.name)]
            assert len(gone) <= 1
            gone_at = gone[0] if gone else len(self.log) + 1
            got = [(i, e[2]) for i, e in enumerate(self.log) if e[:2] == ("recv", stream.name)]
            got_ids = [m for _, m in got]
            assert got_ids == sorted(set(got_ids)), "in order, each once"
            for at, m in got:
                assert sub_at < push_at[m] and push_at[m] < at < push_end[m]
                assert at < gone_at, "nothing after leaving"
                assert reference(stream.filters, self.messages[m])
            for m, at in push_at.items():
                if not reference(stream.filters, self.messages[m]) or at < sub_at:
                    continue
                if push_end[m] < gone_at:
                    assert m in got_ids, (stream.name, m, self.messages[m])
            # a stream that raised got exactly one SubscriberError caused by its error
            for error in stream.errors:
                assert isinstance(error, SubscriberError)
                assert isinstance(error.__cause__, RuntimeError)
            assert not stream.completed


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_streams_get_exactly_their_messages_in_order_while_streams_come_and_go(
    ops: list[tuple[Any, ...]],
) -> None:
    model = Model()
    model.current = -1
    for op in ops:
        kind = op[0]
        if kind == "sub":
            model.subscribe(op[1])
        elif kind == "dispose":
            model.dispose(op[1])
        elif kind == "push":
            model.push(op[1])
        elif kind == "push_like":
            live = model.live()
            if live:
                model.push(like(live[op[1] % len(live)].filters, op[2]))
        else:
            live = model.live()
            if not live:
                continue
            stream = live[op[1] % len(live)]
            if kind == "arm_sub":
                stream.armed.append(("sub", op[2]))
            elif kind == "arm_dispose":
                stream.armed.append(("dispose", op[2]))
            else:
                stream.armed.append(("raise",))
        model.check_refcount()
    model.check()
    receipts = sum(1 for e in model.log if e[0] == "recv")
    event(f"receipts: {'0' if not receipts else '1-9' if receipts < 10 else '10+'}")
    # Every raise is reported; the stream's on_error gets it unless it had already left.
    assert len(model.reported) == sum(
        s.raised_while_live + s.raised_after_leaving for s in model.streams
    )
    for stream in model.streams:
        assert len(stream.errors) == stream.raised_while_live <= 1
    while model.live():
        model.dispose(0)
        model.check_refcount()
    assert model.source.subscribed == model.source.disposed


def test_the_model_checker_can_fail() -> None:
    # Guard against a vacuous checker: a stream that missed a message is caught.
    model = Model()
    model.current = -1
    model.subscribe([{"s": "A"}])
    model.push({"s": "A"})
    model.log = [e for e in model.log if e[0] != "recv"]
    with pytest.raises(AssertionError):
        model.check()


# --------------------------------------------------------------------------------------
# Plain cases
# --------------------------------------------------------------------------------------


def collect(observable: Observable[Any]) -> tuple[list[Any], list[Exception], list[bool], Any]:
    items: list[Any] = []
    errors: list[Exception] = []
    done: list[bool] = []
    disposable = observable.subscribe(items.append, errors.append, lambda: done.append(True))
    return items, errors, done, disposable


def test_filtered_streams_get_their_messages_in_source_order() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    btc, _, _, _ = collect(router.stream([{"s": "BTC"}]))
    both, _, _, _ = collect(router.stream([{"s": "BTC"}, {"s": "ETH", "big": True}]))
    everything, _, _, _ = collect(router.stream())
    msgs = [
        {"s": "BTC", "n": 1},
        {"s": "ETH", "n": 2},
        {"s": "ETH", "n": 3, "big": True},
        "not a mapping",
        {"s": "BTC", "n": 4},
    ]
    for msg in msgs:
        subject.on_next(msg)
    assert btc == [msgs[0], msgs[4]]
    assert both == [msgs[0], msgs[2], msgs[4]]
    assert everything == msgs
    for items, filters in ((btc, [{"s": "BTC"}]), (everything, None)):
        assert items == [m for m in msgs if matches(filters)(m)]


def test_messages_are_not_copied() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    a, _, _, _ = collect(router.stream([{"s": 1}]))
    b, _, _, _ = collect(router.stream())
    msg = {"s": 1}
    subject.on_next(msg)
    assert a[0] is msg and b[0] is msg


def test_stream_validates_filters_at_the_call() -> None:
    router: Router[Any] = Router(Subject())
    with pytest.raises(TypeError, match="wrap it in a list"):
        router.stream({"s": "BTC"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"filters\[0\]"):
        router.stream(["s"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="list of dicts"):
        router.stream("s")  # type: ignore[arg-type]
    assert not router.connected


def test_router_rejects_what_is_not_an_observable() -> None:
    with pytest.raises(TypeError, match="Observable"):
        Router([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_subscriber_error"):
        Router(Subject(), on_subscriber_error=42)  # type: ignore[arg-type]


def test_filters_are_copied_when_the_stream_is_made() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    filters: list[dict[str, Any]] = [{"s": "BTC"}]
    stream = router.stream(filters)
    filters[0]["s"] = "ETH"
    got, _, _, _ = collect(stream)
    subject.on_next({"s": "ETH"})
    subject.on_next({"s": "BTC"})
    assert got == [{"s": "BTC"}]


def test_reference_counting() -> None:
    source = CountingSource()
    router: Router[Any] = Router(source.observable)
    stream = router.stream([{"s": 1}])
    assert (source.subscribed, router.connected, router.subscriber_count) == (0, False, 0)
    a = stream.subscribe()
    b = router.stream().subscribe()
    assert (source.subscribed, source.active, router.subscriber_count) == (1, 1, 2)
    assert router.connected
    a.dispose()
    a.dispose()  # idempotent
    assert (source.active, router.subscriber_count) == (1, 1)
    b.dispose()
    assert (source.subscribed, source.disposed) == (1, 1)
    assert not router.connected and router.subscriber_count == 0
    c = stream.subscribe()
    assert (source.subscribed, source.active) == (2, 1)
    c.dispose()
    assert source.active == 0
    assert "subscribers=0" in repr(router) and "connected=False" in repr(router)


def test_a_stream_can_be_subscribed_many_times() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    stream = router.stream([{"s": 1}])
    first, _, _, d1 = collect(stream)
    second, _, _, _ = collect(stream)
    subject.on_next({"s": 1})
    d1.dispose()
    subject.on_next({"s": 1, "n": 2})
    assert first == [{"s": 1}]
    assert second == [{"s": 1}, {"s": 1, "n": 2}]


def test_a_raising_subscriber_is_isolated(caplog: pytest.LogCaptureFixture) -> None:
    subject: Subject[Any] = Subject()
    reported: list[SubscriberError] = []
    router: Router[Any] = Router(subject, on_subscriber_error=reported.append)
    before, _, _, _ = collect(router.stream())
    bad_errors: list[Exception] = []
    bad_seen: list[Any] = []

    def bad(msg: Any) -> None:
        bad_seen.append(msg)
        if msg["n"] == 2:
            raise ValueError("boom")

    router.stream().subscribe(bad, bad_errors.append)
    after, _, _, _ = collect(router.stream())
    with caplog.at_level(logging.ERROR, logger="rxws.router"):
        for n in range(1, 5):
            subject.on_next({"n": n})
    expected = [{"n": n} for n in range(1, 5)]
    assert before == expected and after == expected
    assert bad_seen == expected[:2]
    assert len(bad_errors) == 1 and isinstance(bad_errors[0], SubscriberError)
    assert isinstance(bad_errors[0].__cause__, ValueError)
    assert reported == bad_errors
    assert router.subscriber_count == 2
    records = [r for r in caplog.records if r.name == "rxws.router"]
    assert len(records) == 1 and records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None and records[0].exc_info[1] is bad_errors[0].error


def test_a_raising_subscriber_without_on_error_does_not_reach_the_source(
    caplog: pytest.LogCaptureFixture,
) -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    good, _, _, _ = collect(router.stream())

    def bad(msg: Any) -> None:
        raise KeyError(msg)

    router.stream().subscribe(bad)
    with caplog.at_level(logging.ERROR, logger="rxws.router"):
        subject.on_next(1)  # must not raise here
        subject.on_next(2)
    assert good == [1, 2]
    assert router.subscriber_count == 1


def test_the_last_subscriber_raising_lets_go_of_the_source() -> None:
    source = CountingSource()
    router: Router[Any] = Router(source.observable)

    def bad(msg: Any) -> None:
        raise ValueError("boom")

    router.stream().subscribe(bad, lambda e: None)
    source.push(1)
    assert source.active == 0 and not router.connected


def test_a_failing_on_subscriber_error_callback_is_contained() -> None:
    subject: Subject[Any] = Subject()

    def broken(error: SubscriberError) -> None:
        raise RuntimeError("callback broke")

    router: Router[Any] = Router(subject, on_subscriber_error=broken)
    good, _, _, _ = collect(router.stream())

    def bad(msg: Any) -> None:
        raise ValueError("boom")

    router.stream().subscribe(bad, lambda e: None)
    subject.on_next(1)
    subject.on_next(2)
    assert good == [1, 2]


def test_subscribe_and_dispose_from_inside_on_next() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    late: list[Any] = []
    victim_got: list[Any] = []
    holder: dict[str, abc.DisposableBase] = {}

    def first(msg: Any) -> None:
        if msg == 1:
            router.stream().subscribe(late.append)  # starts with the next message
            holder["victim"].dispose()  # gets nothing more, not even this message

    router.stream().subscribe(first)
    holder["victim"] = router.stream().subscribe(victim_got.append)
    subject.on_next(1)
    subject.on_next(2)
    assert late == [2]
    assert victim_got == []


def test_a_subscriber_can_dispose_itself_mid_delivery() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    got: list[Any] = []
    holder: dict[str, abc.DisposableBase] = {}

    def once(msg: Any) -> None:
        got.append(msg)
        holder["me"].dispose()

    holder["me"] = router.stream().subscribe(once)
    others, _, _, _ = collect(router.stream())
    subject.on_next(1)
    subject.on_next(2)
    assert got == [1] and others == [1, 2]


def test_operators_downstream_dispose_through_the_router() -> None:
    source = CountingSource()
    router: Router[Any] = Router(source.observable)
    got, _, done, _ = collect(
        router.stream([{"s": "A"}]).pipe(rx_ops.map(lambda m: m["n"]), rx_ops.take(2))
    )
    for n in range(5):
        source.push({"s": "A", "n": n})
    assert got == [0, 1] and done == [True]
    assert router.subscriber_count == 0 and source.active == 0


def test_completion_reaches_every_stream_and_the_router_starts_afresh() -> None:
    subjects: list[Subject[Any]] = []

    def fresh() -> Observable[Any]:
        subject: Subject[Any] = Subject()
        subjects.append(subject)
        return subject

    router: Router[Any] = Router(reactivex.defer(lambda _: fresh()))
    a_items, a_err, a_done, _ = collect(router.stream([{"s": 1}]))
    b_items, b_err, b_done, _ = collect(router.stream())
    hold_done: list[bool] = []
    router.connect(on_completed=lambda: hold_done.append(True))
    assert len(subjects) == 1
    subjects[0].on_next({"s": 1})
    subjects[0].on_completed()
    assert (a_done, b_done, hold_done) == ([True], [True], [True])
    assert not a_err and not b_err
    assert a_items == [{"s": 1}] and b_items == [{"s": 1}]
    assert not router.connected and router.subscriber_count == 0
    c_items, _, c_done, _ = collect(router.stream())
    assert len(subjects) == 2 and router.connected
    subjects[1].on_next("again")
    assert c_items == ["again"] and not c_done


def test_an_error_reaches_every_stream(caplog: pytest.LogCaptureFixture) -> None:
    source = CountingSource()
    router: Router[Any] = Router(source.observable)
    _, a_err, _, _ = collect(router.stream([{"s": 1}]))
    _, b_err, _, _ = collect(router.stream())
    router.stream().subscribe(lambda m: None)  # no on_error: must not break the others
    hold_errors: list[Exception] = []
    router.connect(on_error=hold_errors.append)
    failure = rxws.ConnectionLost(1011, "going away")
    with caplog.at_level(logging.WARNING, logger="rxws.router"):
        source.subject.on_error(failure)
    assert a_err == [failure] and b_err == [failure] and hold_errors == [failure]
    assert not router.connected and router.subscriber_count == 0
    assert any("had no on_error" in r.getMessage() for r in caplog.records)


def test_resubscription_after_completion_counts_subscriptions() -> None:
    subscribed = 0

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        nonlocal subscribed
        subscribed += 1
        observer.on_next({"round": subscribed})
        observer.on_completed()
        return Disposable()

    router: Router[Any] = Router(reactivex.create(subscribe))
    for round_ in (1, 2, 3):
        items, errors, done, _ = collect(router.stream([{"round": round_}]))
        assert items == [{"round": round_}] and done == [True] and not errors
        assert not router.connected
    assert subscribed == 3


def test_a_synchronous_source_completing_during_subscribe() -> None:
    router: Router[Any] = Router(reactivex.from_iterable([{"s": 1}, {"s": 2}, {"s": 1, "x": 0}]))
    items, _, done, _ = collect(router.stream([{"s": 1}]))
    assert items == [{"s": 1}, {"s": 1, "x": 0}] and done == [True]
    assert not router.connected


def test_leaving_while_the_source_is_still_subscribing() -> None:
    # The source emits inside its subscribe; the only subscriber leaves on the first
    # message, before the router has its subscription's disposable: the router must
    # drop the rest and dispose the subscription as soon as it gets it.
    disposed: list[bool] = []

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        observer.on_next(1)
        observer.on_next(2)
        return Disposable(lambda: disposed.append(True))

    router: Router[Any] = Router(reactivex.create(subscribe))
    seen: list[Any] = []
    errors: list[Exception] = []

    def fail(msg: Any) -> None:
        seen.append(msg)
        raise ValueError("leave now")

    router.stream().subscribe(fail, errors.append)
    assert seen == [1]
    assert len(errors) == 1 and isinstance(errors[0], SubscriberError)
    assert disposed == [True] and not router.connected

    # Through an operator that completes on the first item, inside subscribe.
    items, _, done, _ = collect(router.stream().pipe(rx_ops.take(1)))
    assert items == [1] and done == [True]
    assert disposed == [True, True] and not router.connected


def test_an_abandoned_source_subscription_delivers_nothing_more() -> None:
    # The only subscriber leaves while the source is still inside its subscribe, and
    # a new subscriber makes the router subscribe again at once: the first
    # subscription's later items must not reach the new subscriber.
    subscriptions = 0

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        nonlocal subscriptions
        subscriptions += 1
        observer.on_next(1)
        observer.on_next(2)
        return Disposable()

    router: Router[Any] = Router(reactivex.create(subscribe))
    second: list[Any] = []

    def fail(msg: Any) -> None:
        raise ValueError("leave now")

    def on_error(error: Exception) -> None:
        router.stream().subscribe(second.append)

    router.stream().subscribe(fail, on_error)
    assert subscriptions == 2
    assert second == [1, 2]


def test_connect_holds_the_source_without_streams() -> None:
    source = CountingSource()
    router: Router[Any] = Router(source.observable)
    hold = router.connect()
    assert router.connected and source.active == 1 and router.subscriber_count == 0
    source.push({"ignored": True})  # nobody listens: fine
    sub = router.stream().subscribe()
    hold.dispose()
    assert source.active == 1
    sub.dispose()
    assert source.active == 0 and not router.connected
    hold.dispose()  # idempotent
    assert source.subscribed == 1


def test_complete_ends_every_stream_and_lets_go() -> None:
    source = CountingSource()
    router: Router[Any] = Router(source.observable)
    _, _, done, _ = collect(router.stream())
    router.connect()
    router.complete()
    assert done == [True] and source.active == 0 and not router.connected
    router.complete()  # nothing left: fine
    items, _, _, _ = collect(router.stream())
    source.push(1)
    assert items == [1] and source.subscribed == 2


# --------------------------------------------------------------------------------------
# The subscription: what reactivex's subscribe takes and gives, in one small object
# --------------------------------------------------------------------------------------


def test_subscribe_takes_what_reactivex_subscribe_takes() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    stream = router.stream([{"s": 1}])
    log: list[tuple[str, Any]] = []

    class Duck:  # not an ObserverBase: recognised by its callable on_next
        def on_next(self, msg: Any) -> None:
            log.append(("duck", msg))

        def on_error(self, error: Exception) -> None:
            log.append(("duck error", error))

        def on_completed(self) -> None:
            log.append(("duck done", None))

    relay: Subject[Any] = Subject()
    relay.subscribe(
        lambda m: log.append(("relay", m)), on_completed=lambda: log.append(("relay done", None))
    )
    subscriptions = [
        stream.subscribe(reactivex.Observer(lambda m: log.append(("observer", m)))),
        # Not an ObserverBase, but has on_next: an observer (the callbacks are ignored).
        stream.subscribe(Duck(), lambda e: log.append(("ignored", e))),  # type: ignore[arg-type]
        stream.subscribe(relay),  # a Subject is an observer too
        stream.subscribe(
            on_next=lambda m: log.append(("keywords", m)),
            on_completed=lambda: log.append(("keywords done", None)),
            scheduler=reactivex.scheduler.ImmediateScheduler(),
        ),
        stream.subscribe(None, lambda e: log.append(("no on_next error", e))),
        stream.subscribe(),
    ]
    assert router.subscriber_count == len(subscriptions)
    subject.on_next({"s": 1})
    subject.on_next({"s": 2})
    subject.on_completed()
    m = {"s": 1}
    assert log == [
        ("observer", m),
        ("duck", m),
        ("relay", m),
        ("keywords", m),
        ("duck done", None),
        ("relay done", None),
        ("keywords done", None),
    ]
    assert router.subscriber_count == 0 and not router.connected


def test_the_subscription_is_a_disposable_and_a_context_manager() -> None:
    source = CountingSource()
    router: Router[Any] = Router(source.observable)
    got: list[Any] = []
    with router.stream().subscribe(got.append) as subscription:
        assert isinstance(subscription, abc.DisposableBase)
        source.push(1)
        assert source.active == 1
    source.push(2)
    assert got == [1] and source.active == 0 and not router.connected
    subscription.dispose()  # idempotent, also after the with block
    assert source.subscribed == source.disposed == 1
    hold = router.connect()
    assert isinstance(hold, abc.DisposableBase)
    hold.dispose()
    hold.dispose()
    assert source.active == 0


class RefusingSource(Observable[Any]):
    """An Observable whose subscribe raises (reactivex's own would call on_error)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def subscribe(self, *args: Any, **kwargs: Any) -> abc.DisposableBase:
        self.attempts += 1
        raise RuntimeError("cannot subscribe")


def test_a_source_that_raises_on_subscribe_fails_that_subscriber_as_reactivex_would() -> None:
    source = RefusingSource()
    router: Router[Any] = Router(source)
    errors: list[Exception] = []
    router.stream().subscribe(lambda m: None, errors.append)  # on_error gets it
    assert [str(e) for e in errors] == ["cannot subscribe"]
    assert not router.connected and router.subscriber_count == 0
    with pytest.raises(RuntimeError, match="cannot subscribe"):  # no on_error: raised
        router.stream([{"s": 1}]).subscribe(lambda m: None)
    with pytest.raises(RuntimeError, match="cannot subscribe"):  # a hold: raised
        router.connect()
    assert not router.connected and router.subscriber_count == 0
    piped: list[Exception] = []
    router.stream().pipe(rx_ops.map(lambda m: m)).subscribe(on_error=piped.append)
    assert [str(e) for e in piped] == ["cannot subscribe"] and source.attempts == 4


def test_a_synchronous_source_runs_on_the_subscribers_trampoline() -> None:
    # As with reactivex's own subscribe: what a synchronous source schedules on the
    # current thread runs once the subscription is set up, and what a subscriber
    # schedules while it runs waits for the source's items to be delivered.
    router: Router[Any] = Router(reactivex.from_iterable([1, 2, 3]))
    log: list[Any] = []

    def first(msg: Any) -> None:
        log.append(("first", msg))
        if msg == 1:
            router.stream().subscribe(lambda m: log.append(("late", m)))
            reactivex.from_iterable(["x"]).subscribe(lambda v: log.append(("inner", v)))

    router.stream().subscribe(first, on_completed=lambda: log.append("done"))
    assert log == [
        ("first", 1),
        ("first", 2),
        ("late", 2),
        ("first", 3),
        ("late", 3),
        "done",
        ("inner", "x"),
    ]
    assert not router.connected


def test_streams_compose_with_operators() -> None:
    subject: Subject[Any] = Subject()
    router: Router[Any] = Router(subject)
    a, b = router.stream([{"s": "A"}]), router.stream([{"s": "B"}])

    def numbers(ab: tuple[Any, Any]) -> tuple[int, int]:
        return ab[0]["n"], ab[1]["n"]

    pairs, _, pairs_done, _ = collect(reactivex.combine_latest(a, b).pipe(rx_ops.map(numbers)))
    batches, _, _, _ = collect(
        a.pipe(rx_ops.merge(b), rx_ops.map(lambda m: m["n"]), rx_ops.buffer_with_count(2))  # type: ignore[index]
    )
    assert router.subscriber_count == 4
    for n in range(4):
        subject.on_next({"s": "AB"[n % 2], "n": n})
    subject.on_completed()
    assert pairs == [(0, 1), (2, 1), (2, 3)] and pairs_done == [True]
    assert batches == [[0, 1], [2, 3]]
    assert router.subscriber_count == 0


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, msg: Any) -> None:
        self.n += 1


def test_an_idle_stream_is_one_small_object_and_an_index_entry() -> None:
    # 100,000 idle streams must fit in well under 150 MB: each subscription is one
    # object that the index files (no auto-detach observer, no lock, no closure).
    router: Router[Any] = Router(Subject())
    ignore = Counter()
    keep = [router.stream([{"s": "warm-up"}]).subscribe(ignore)]
    filters = [[{"s": f"SYM{i}"}] for i in range(2_000)]
    gc.collect()
    tracked = len(gc.get_objects())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        keep += [router.stream(f).subscribe(ignore) for f in filters]
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per_stream_objects = (len(gc.get_objects()) - tracked) / len(filters)
    assert per_stream_objects <= 2.1, per_stream_objects  # the subscription, its clause
    assert grown / len(filters) < 500, grown / len(filters)
    assert not hasattr(keep[-1], "__dict__")
    for subscription in keep:
        subscription.dispose()
    assert router.subscriber_count == 0 and not router.connected
    assert ignore.n == 0


# --------------------------------------------------------------------------------------
# Over a real websocket
# --------------------------------------------------------------------------------------


async def test_router_over_a_real_connection_splits_by_symbol() -> None:
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    async with DemoExchange(symbols=symbols, interval=0.002) as exchange:
        router: Router[Any] = Router(rxws.connect(exchange.url))
        received: dict[str, list[dict[str, Any]]] = {s: [] for s in symbols}
        subscriptions = [router.stream([{"s": s}]).subscribe(received[s].append) for s in symbols]
        everything: list[Any] = []
        subscriptions.append(router.stream().subscribe(everything.append))
        assert router.connected
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while any(len(got) < 5 for got in received.values()):
            assert loop.time() < deadline, {s: len(g) for s, g in received.items()}
            await asyncio.sleep(0.01)
        await exchange.wait_for(lambda: exchange.open_connections == 1)
        for subscription in subscriptions:
            subscription.dispose()
        assert not router.connected
        await exchange.wait_for(lambda: exchange.open_connections == 0)
    for symbol, got in received.items():
        assert {m["s"] for m in got} == {symbol}
        seqs = [m["seq"] for m in got]
        assert seqs == sorted(seqs)
    assert exchange.accepted == 1  # one connection served every stream
    by_symbol = {s: [m for m in everything if m["s"] == s] for s in symbols}
    for symbol, got in received.items():
        assert got == by_symbol[symbol][: len(got)]
