"""Limits, TokenBucket, RateBudget and Shards are pure: these tests run without a loop."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rxws
from rxws.limits import Limits, RateBudget, Shards, TokenBucket

# ------------------------------------------------------------------ Limits


def test_limits_keep_what_was_given_and_normalise_the_window() -> None:
    limits = Limits(1024, 5, [300, 300], 86400)  # type: ignore[arg-type]  # lists work too
    assert limits.streams_per_connection == 1024
    assert limits.messages_per_second == 5
    assert limits.connections_per_window == (300, 300.0)
    assert isinstance(limits.connections_per_window[1], float)
    assert limits.connection_lifetime == 86400
    assert hash(limits) == hash(Limits(1024, 5, (300, 300.0), 86400))  # usable as a key


def test_merge_puts_each_set_field_over_the_defaults() -> None:
    defaults = Limits(1024, 5, (300, 300.0), 86400.0)
    merged = defaults.merge(Limits(messages_per_second=10, connections_per_window=(10, 10)))
    assert merged == Limits(1024, 10, (10, 10.0), 86400.0)
    assert defaults.merge(None) is defaults
    assert defaults.merge(Limits()) is defaults
    assert Limits().merge(defaults) == defaults


def test_merge_refuses_what_is_not_limits() -> None:
    with pytest.raises(TypeError, match=r"rxws\.Limits, got dict"):
        Limits().merge({"streams_per_connection": 5})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"streams_per_connection": "10"}, TypeError, r"streams_per_connection must be a pos.*str"),
        ({"streams_per_connection": 2.5}, TypeError, r"streams_per_connection .* int"),
        ({"streams_per_connection": True}, TypeError, r"streams_per_connection .*\(bool\)"),
        ({"streams_per_connection": 0}, ValueError, r"streams_per_connection .* got 0"),
        ({"messages_per_second": -1}, ValueError, r"messages_per_second .* above 0"),
        ({"messages_per_second": float("inf")}, ValueError, r"messages_per_second"),
        ({"messages_per_second": float("nan")}, ValueError, r"messages_per_second"),
        ({"messages_per_second": "5"}, TypeError, r"messages_per_second .* number"),
        ({"connection_lifetime": 0}, ValueError, r"connection_lifetime"),
        ({"connections_per_window": 300}, TypeError, r"pair \(attempts, seconds\)"),
        ({"connections_per_window": (1, 2, 3)}, TypeError, r"pair \(attempts, seconds\)"),
        ({"connections_per_window": "ab"}, TypeError, r"pair \(attempts, seconds\)"),
        ({"connections_per_window": (0, 10)}, ValueError, r"connections_per_window attempts"),
        ({"connections_per_window": (1.5, 10)}, TypeError, r"connections_per_window attempts"),
        ({"connections_per_window": (5, 0)}, ValueError, r"connections_per_window seconds"),
    ],
)
def test_bad_limits_say_which_field_and_why(
    kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        Limits(**kwargs)


def test_limits_and_rate_budget_are_exported() -> None:
    assert rxws.Limits is Limits and rxws.RateBudget is RateBudget
    assert {"Limits", "RateBudget", "protocols"} <= set(rxws.__all__)


# ------------------------------------------------------------------ TokenBucket


def test_bucket_allows_a_burst_then_paces_at_its_rate() -> None:
    bucket = TokenBucket(rate=5, burst=3)
    for _ in range(3):
        assert bucket.delay(0.0) == 0.0
        bucket.take(0.0)
    assert bucket.delay(0.0) == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"wait TokenBucket\.delay"):
        bucket.take(0.1)
    later = bucket.delay(0.0)
    bucket.take(later)
    assert bucket.delay(later) == pytest.approx(0.2)
    # A long pause refills no more than the burst.
    assert bucket.delay(100.0) == 0.0
    for _ in range(3):
        bucket.take(100.0)
    assert bucket.delay(100.0) > 0


def test_bucket_of_burst_one_never_passes_more_than_rate_in_a_second() -> None:
    bucket = TokenBucket(rate=5)
    now, times = 0.0, list[float]()
    while len(times) < 50:
        now += bucket.delay(now)
        bucket.take(now)
        times.append(now)
    assert all(times[i + 5] - times[i] >= 1.0 - 1e-9 for i in range(len(times) - 5))


@pytest.mark.parametrize("kwargs", [{"rate": 0}, {"rate": -1.0}, {"rate": 5, "burst": 0}])
def test_bad_bucket_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="TokenBucket"):
        TokenBucket(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.1, 1000),
    burst=st.integers(1, 10),
    gaps=st.lists(st.floats(0, 3), min_size=1, max_size=120),
    wait=st.lists(st.booleans(), min_size=1, max_size=120),
)
def test_bucket_never_exceeds_its_rate_over_any_interval(
    rate: float, burst: int, gaps: list[float], wait: list[bool]
) -> None:
    bucket = TokenBucket(rate, burst)
    now, taken = 0.0, list[float]()
    for gap, patient in zip(gaps, itertools.cycle(wait), strict=False):
        now += gap / rate
        delay = bucket.delay(now)
        if delay > 0 and not patient:
            continue  # this caller gives up instead of waiting
        now += delay
        assert bucket.delay(now) == 0.0  # waiting what delay said is always enough
        bucket.take(now)
        taken.append(now)
    for i, j in itertools.combinations(range(len(taken)), 2):
        assert j - i + 1 <= burst + rate * (taken[j] - taken[i]) + 1e-6


# ------------------------------------------------------------------ RateBudget


def test_budget_is_an_exact_sliding_window() -> None:
    budget = RateBudget(3, 10.0)
    for t in (0.0, 1.0, 2.0):
        budget.take(t)
    assert budget.delay(2.0) == 8.0
    assert budget.delay(9.999) > 0
    assert budget.delay(10.0) == 0.0  # the attempt at 0.0 has left the window
    budget.take(10.0)
    assert budget.delay(10.0) == 1.0  # now the one at 1.0 is the oldest of the last 3
    with pytest.raises(ValueError, match=r"wait RateBudget\.delay"):
        budget.take(10.5)


def test_budget_refuses_time_going_backwards() -> None:
    budget = RateBudget(5, 1.0)
    budget.take(100.0)
    with pytest.raises(ValueError, match="time went backwards"):
        budget.take(99.0)


def test_budget_with_two_windows_satisfies_both() -> None:
    budget = RateBudget(2, 1.0)
    budget.add_window(3, 10.0)
    budget.add_window(2, 1.0)  # already there: no duplicate
    assert budget.windows == ((2, 1.0), (3, 10.0))
    budget.take(0.0)
    budget.take(0.0)
    assert budget.delay(0.0) == 1.0  # per-second window
    budget.take(1.0)
    assert budget.delay(1.0) == 9.0  # per-ten-seconds window


@pytest.mark.parametrize("args", [(0, 1.0), (1, 0.0), (1, -5.0)])
def test_bad_budget_settings_are_rejected(args: tuple[int, float]) -> None:
    with pytest.raises(ValueError, match="RateBudget"):
        RateBudget(*args)


def test_budget_is_shared_per_host_within_the_process() -> None:
    host = f"{uuid.uuid4().hex}.example"
    first = RateBudget.for_host(f"{host}:9443", 10, 10.0)
    assert RateBudget.for_host(f"{host.upper()}:9443", 10, 10.0) is first
    assert RateBudget.for_host(f"{host}:443", 10, 10.0) is not first
    # Another client declaring a different limit for the same host adds to the budget.
    assert RateBudget.for_host(f"{host}:9443", 300, 300.0) is first
    assert first.windows == ((10, 10.0), (300, 300.0))
    assert RateBudget.for_url(f"wss://{host}:9443/stream?listenKey=s3cret", 10, 10) is first
    assert "s3cret" not in repr(first)


def test_host_of_uses_the_schemes_default_port() -> None:
    assert RateBudget.host_of("wss://Stream.Binance.com/ws") == "stream.binance.com:443"
    assert RateBudget.host_of("ws://u:pw@127.0.0.1:8765/x?k=v") == "127.0.0.1:8765"
    assert RateBudget.host_of("ws://[::1]:9000/") == "[::1]:9000"
    with pytest.raises(ValueError, match="names no host"):
        RateBudget.host_of("not a url")
    with pytest.raises(TypeError, match="non-empty str"):
        RateBudget.for_host("", 1, 1.0)


@settings(max_examples=300, deadline=None)
@given(
    windows=st.lists(
        st.tuples(st.integers(1, 6), st.floats(0.01, 50)), min_size=1, max_size=3, unique=True
    ),
    gaps=st.lists(st.floats(0, 20), min_size=1, max_size=150),
    wait=st.lists(st.booleans(), min_size=1, max_size=150),
)
def test_sliding_window_never_admits_more_than_n_in_any_window(
    windows: list[tuple[int, float]], gaps: list[float], wait: list[bool]
) -> None:
    budget = RateBudget(*windows[0])
    for window in windows[1:]:
        budget.add_window(*window)
    now, taken = 0.0, list[float]()
    for gap, patient in zip(gaps, itertools.cycle(wait), strict=False):
        now += gap
        delay = budget.delay(now)
        if delay > 0:
            # Held back only when some window really is full.
            assert any(len(taken) >= n and taken[-n] + w > now for n, w in budget.windows), (
                "delayed although every window had room"
            )
            if not patient:
                continue
        now += delay
        assert budget.delay(now) == 0.0
        budget.take(now)
        taken.append(now)
    for n, w in budget.windows:
        # The take n places later is at least a whole window after: so any half-open
        # window [t, t + w) holds at most n takes.
        assert all(taken[i + n] >= taken[i] + w for i in range(len(taken) - n))


# ------------------------------------------------------------------ Shards


def test_shards_fill_each_connection_up_to_the_cap() -> None:
    shards = Shards(3)
    placed = shards.add_all(f"t{i}" for i in range(8))
    assert placed == {0: ["t0", "t1", "t2"], 1: ["t3", "t4", "t5"], 2: ["t6", "t7"]}
    assert shards.size == 3 and len(shards) == 8 and "t4" in shards
    assert shards.topics_of(1) == ["t3", "t4", "t5"] and shards.load(2) == 2
    assert shards.index_of("t7") == 2 and shards.index_of("nope") is None
    assert shards.topics_of(9) == [] and shards.load(-1) == 0


def test_shards_reuse_freed_capacity_lowest_connection_first() -> None:
    shards = Shards(2)
    shards.add_all(["a", "b", "c", "d", "e"])  # 0: a b, 1: c d, 2: e
    assert shards.remove_all(["d", "a"]) == {1: ["d"], 0: ["a"]}
    assert shards.add("x") == 0
    assert shards.add("y") == 1
    assert shards.add("z") == 2
    assert shards.add("w") == 3  # every connection is full again
    assert shards.remove_all(["c", "y"]) == {1: ["c", "y"]}
    assert shards.indices == [0, 2, 3] and shards.load(1) == 0
    assert shards.add("v") == 1


def test_shards_refuse_bad_topics_and_double_placement() -> None:
    shards = Shards(5)
    shards.add("a")
    with pytest.raises(ValueError, match="'a' is on connection 0 already"):
        shards.add("a")
    with pytest.raises(TypeError, match="topic names must be strings, got 7"):
        shards.add(7)  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        shards.remove("never-added")
    with pytest.raises(ValueError, match="capacity"):
        Shards(0)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 5),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=200),
)
def test_shards_invariants_hold_under_any_adds_and_removes(
    capacity: int, ops: list[tuple[bool, int]]
) -> None:
    shards = Shards(capacity)
    model: dict[str, int] = {}
    for adding, n in ops:
        topic = f"t{n}"
        if adding and topic not in model:
            loads = [shards.load(i) for i in range(shards.size)]
            index = shards.add(topic)
            # The lowest index with room; a new one only when all are full.
            expected = next((i for i, load in enumerate(loads) if load < capacity), len(loads))
            assert index == expected
            model[topic] = index
        elif not adding and topic in model:
            assert shards.remove(topic) == model.pop(topic)
        for i in range(shards.size):
            assert shards.load(i) <= capacity
            assert all(model[t] == i for t in shards.topics_of(i))
        assert sorted(shards) == sorted(model)
