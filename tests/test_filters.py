"""rxws.filters: ``matches`` keeps the seed's rule and ``FilterIndex`` agrees with it."""

from __future__ import annotations

import types
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from rxws.filters import FilterIndex, compile_filters, matches

# --------------------------------------------------------------------------------------
# The reference: the old library's rule, written out again here, independently of rxws.
# A non-mapping message matches only an empty filter list (DESIGN.md), so the mapping
# check comes before any dict is looked at.
# --------------------------------------------------------------------------------------


def reference(filters: Any, msg: Any) -> bool:
    return not filters or (
        isinstance(msg, Mapping)
        and any(all(k in msg and v == msg[k] for k, v in f.items()) for f in filters)
    )


README_FILTERS = [{"a": 1}, {"b": 2, "c": 3}]
README_KEPT = [{"a": 1, "c": 2}, {"b": 2, "c": 3, "d": 4}]
README_DROPPED = [{"a": 2, "c": 2}, {"b": 2, "c": 4, "d": 4}]

# --------------------------------------------------------------------------------------
# Strategies: small domains so that filters and messages collide often.
# --------------------------------------------------------------------------------------

NAN = float("nan")  # one shared NaN object: found by identity in dicts, never == itself


class Box:
    """A hashable value with its own equality, to count comparisons."""

    eq_calls = 0

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        Box.eq_calls += 1
        return isinstance(other, Box) and other.n == self.n

    def __hash__(self) -> int:
        return hash(("Box", self.n))


KEYS = st.sampled_from(["a", "b", "c", "s", 0, 1, True, 1.0, None, NAN])
SCALARS = st.one_of(
    st.sampled_from([None, True, False, 0, 1, 2, 0.0, 1.0, -0.0, "x", "y", "", NAN]),
    st.integers(-2, 2),
    st.floats(allow_nan=True, allow_infinity=True, width=16),
    st.text(alphabet="xy", max_size=2),
    st.sampled_from([b"", b"x", b"xy"]),  # bytes, equal to a bytearray
)
HASHABLE = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.tuples(inner), st.tuples(inner, inner), st.frozensets(SCALARS, max_size=2)
    ),
    max_leaves=4,
)
VALUES = st.recursive(
    HASHABLE,
    lambda inner: st.one_of(
        st.lists(inner, max_size=2),
        st.dictionaries(KEYS, inner, max_size=2),
        st.tuples(inner, inner),
        st.sets(SCALARS, max_size=2),
    ),
    max_leaves=5,
)
CLAUSES = st.dictionaries(KEYS, VALUES, max_size=3)
FILTERS = st.one_of(st.none(), st.lists(CLAUSES, max_size=3))
NON_MAPPINGS = st.one_of(
    st.lists(VALUES, max_size=2),
    st.text(alphabet="abcs", max_size=3),
    st.integers(),
    st.none(),
    st.tuples(KEYS, VALUES),
    st.just(b"a"),
)


def thaw(value: Any, how: int) -> Any:
    """An equal value of an unhashable type where there is one (``how`` picks which).

    A frozenset becomes a set or a dict's keys, bytes a bytearray, a tuple holds thawed
    items; the result is unhashable, yet ``==`` to the hashable original.
    """
    if isinstance(value, frozenset):
        return set(value) if how % 2 else dict.fromkeys(value).keys()
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, tuple):
        return tuple(thaw(item, how) for item in value)
    return value


@st.composite
def messages_for(draw: st.DrawFn, filters: Any) -> Any:
    """A message: often built from one of ``filters``' dicts (so it may match), sometimes not a
    mapping, sometimes a read-only mapping that is not a dict."""
    kind = draw(st.sampled_from(["from_filter", "from_filter", "random", "non_mapping"]))
    if kind == "non_mapping":
        return draw(NON_MAPPINGS)
    msg: dict[Any, Any] = draw(st.dictionaries(KEYS, VALUES, max_size=4))
    if kind == "from_filter" and filters:
        clause = draw(st.sampled_from(list(filters)))
        for k, v in clause.items():
            if draw(st.integers(0, 5)):  # mostly keep the pair, sometimes leave it out
                how = draw(st.integers(0, 2))
                msg[k] = thaw(v, how) if how else v
    if draw(st.booleans()) and draw(st.booleans()):
        return types.MappingProxyType(msg)
    return msg


# --------------------------------------------------------------------------------------
# matches
# --------------------------------------------------------------------------------------


def test_readme_examples() -> None:
    keep = matches(README_FILTERS)
    for msg in README_KEPT:
        assert keep(msg) is True
        assert reference(README_FILTERS, msg)
    for msg in README_DROPPED:
        assert keep(msg) is False
        assert not reference(README_FILTERS, msg)


def test_readme_examples_through_the_index() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add(README_FILTERS, "readme")
    for msg in README_KEPT:
        assert index.lookup(msg) == ["readme"]
    for msg in README_DROPPED:
        assert index.lookup(msg) == []


@pytest.mark.parametrize("filters", [None, []])
def test_empty_filters_accept_everything(filters: Any) -> None:
    keep = matches(filters)
    for msg in [{}, {"a": 1}, [1], "text", 3, None, b"raw"]:
        assert keep(msg) is True


def test_a_non_mapping_matches_only_an_empty_filter_list() -> None:
    cases: list[list[dict[str, int]]] = [[{}], [{"a": 1}], [{}, {"a": 1}]]
    for filters in cases:
        keep = matches(filters)
        for msg in (["a"], "a", ("a", 1), 1, None, b"a"):
            assert keep(msg) is False, (filters, msg)
    assert matches([{}])({}) is True
    assert matches([{}])(types.MappingProxyType({"z": 0})) is True


def test_values_compare_by_equality() -> None:
    assert matches([{"a": 1}])({"a": True})  # 1 == True
    assert matches([{"a": True}])({"a": 1.0})
    assert not matches([{"a": 1}])({"a": "1"})
    assert matches([{"a": [1, {"b": 2}]}])({"a": [1, {"b": 2}]})
    assert not matches([{"a": [1, {"b": 2}]}])({"a": (1, {"b": 2})})
    assert matches([{"a": frozenset({1})}])({"a": {1}})
    assert matches([{"a": None}])({"a": None})
    assert not matches([{"a": None}])({})  # the key must be present
    assert not matches([{"a": NAN}])({"a": NAN})  # NaN never equals itself
    assert not matches([{"a": float("nan")}])({"a": float("nan")})


def test_filters_are_snapshotted() -> None:
    filters: list[dict[str, Any]] = [{"a": 1}]
    keep = matches(filters)
    index: FilterIndex[str] = FilterIndex()
    index.add(filters, "t")
    filters[0]["a"] = 2
    filters.append({"b": 1})
    assert keep({"a": 1}) and not keep({"a": 2}) and not keep({"b": 1})
    assert index.lookup({"a": 1}) == ["t"]
    assert index.lookup({"a": 2}) == [] and index.lookup({"b": 1}) == []


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_matches_agrees_with_the_reference(data: st.DataObject) -> None:
    filters = data.draw(FILTERS, label="filters")
    keep = matches(filters)
    for _ in range(4):
        msg = data.draw(messages_for(filters), label="msg")
        assert keep(msg) is reference(filters, msg)


# --------------------------------------------------------------------------------------
# Bad filters
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        ({"s": "BTC"}, "wrap it in a list"),
        ("s", "list of dicts"),
        (b"s", "list of dicts"),
        (42, "list of dicts"),
        (["s"], "filters[0]"),
        ([{"a": 1}, ("a", 1)], "filters[1]"),
        ([None], "filters[0]"),
    ],
)
def test_bad_filters_raise_a_clear_type_error(bad: Any, hint: str) -> None:
    def add(filters: Any) -> int:
        index: FilterIndex[str] = FilterIndex()
        return index.add(filters, "x")

    for build in (matches, compile_filters, add):
        with pytest.raises(TypeError, match="must be a") as info:
            build(bad)
        assert hint in str(info.value)


def test_a_rejected_add_leaves_the_index_unchanged() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add([{"a": 1}], "ok")
    with pytest.raises(TypeError):
        index.add([{"a": 1}, "oops"], "bad")  # type: ignore[list-item]
    assert len(index) == 1
    assert index.lookup({"a": 1}) == ["ok"]


# --------------------------------------------------------------------------------------
# FilterIndex
# --------------------------------------------------------------------------------------


def expected_targets(registered: Mapping[int, Any], msg: Any) -> Counter[int]:
    return Counter(t for t, f in registered.items() if reference(f, msg))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_index_lookup_equals_matches(data: st.DataObject) -> None:
    lists = data.draw(st.lists(FILTERS, max_size=8), label="filter lists")
    index: FilterIndex[int] = FilterIndex()
    for target, filters in enumerate(lists):
        index.add(filters, target)
    registered = dict(enumerate(lists))
    candidates = [f for f in lists if f]
    for _ in range(5):
        source = data.draw(st.sampled_from(candidates)) if candidates else None
        msg = data.draw(messages_for(source), label="msg")
        found = index.lookup(msg)
        assert Counter(found) == expected_targets(registered, msg), msg
        assert len(found) == len(set(found))  # each target once
        for target in found:
            assert matches(registered[target])(msg)


def test_a_list_matching_through_several_dicts_is_returned_once() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add([{"a": 1}, {"b": 2}, {"a": 1, "b": 2}, {"c": [3]}, {"d": [4]}], "t")
    assert index.lookup({"a": 1, "b": 2, "c": [3], "d": [4]}) == ["t"]


def test_unhashable_message_values_match_equal_hashable_filters() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add([{"a": frozenset({1})}], "set")
    index.add([{"a": (1, frozenset({2}))}], "tuple")
    index.add([{"a": [1]}], "list")
    index.add([{"a": b"abc"}], "bytes")
    index.add([{"a": (b"x", 1)}, {"b": 2}], "bytes in a tuple")
    for i in range(100):
        index.add([{"a": f"sym{i}"}], f"plain {i}")
    assert index.lookup({"a": {1}}) == ["set"]
    assert index.lookup({"a": {1: "v"}.keys()}) == ["set"]
    assert index.lookup({"a": (1, {2})}) == ["tuple"]
    assert index.lookup({"a": [1]}) == ["list"]
    assert index.lookup({"a": bytearray(b"abc")}) == ["bytes"]
    assert index.lookup({"a": memoryview(bytearray(b"abc"))}) == ["bytes"]
    assert index.lookup({"a": (bytearray(b"x"), 1), "b": 2}) == ["bytes in a tuple"]
    assert index.lookup({"a": [[1]]}) == []
    assert index.lookup({"a": {"x": [1]}}) == []
    # The same through the other walk (more filter keys than message keys).
    for i in range(10):
        index.add([{f"k{i}": i}], f"key {i}")
    assert index.lookup({"a": bytearray(b"abc")}) == ["bytes"]
    assert index.lookup({"a": {1: None}.keys()}) == ["set"]


class Loose:
    """An unhashable message value of a class of its own that equals a plain string."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return other == self.text


def test_an_unhashable_value_of_another_class_is_compared_with_every_filter_value() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add([{"s": "BTC"}], "btc")
    index.add([{"s": "ETH"}], "eth")
    msg = {"s": Loose("ETH")}
    assert matches([{"s": "ETH"}])(msg)
    assert index.lookup(msg) == ["eth"]


def test_the_equality_fallback_does_not_compare_plain_filter_values() -> None:
    # A bytearray cannot equal a str: 1,000 symbol filters are not compared with it.
    index: FilterIndex[int] = FilterIndex()
    for i in range(1_000):
        index.add([{"s": f"S{i}"}], i)
    index.add([{"s": Box(1)}], -1)
    index.add([{"s": b"S1"}], -2)
    Box.eq_calls = 0
    assert index.lookup({"s": bytearray(b"S1")}) == [-2]
    assert Box.eq_calls == 1  # the one value that is not a plain scalar
    index.remove(1_001)  # b"S1"
    assert index.lookup({"s": bytearray(b"S1")}) == []


def test_nan_is_never_equal_even_when_found_by_identity() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add([{"a": NAN}], "nan")
    index.add([{"a": (NAN,)}], "tuple")  # tuples compare items by identity first
    index.add([{"a": NAN, "b": 1}], "nan and b")
    assert index.lookup({"a": NAN, "b": 1}) == []
    assert index.lookup({"a": (NAN,)}) == ["tuple"]
    assert reference([{"a": (NAN,)}], {"a": (NAN,)})


def test_many_filter_keys_and_a_small_message() -> None:
    # More distinct filter keys than message keys: the index walks the message instead.
    index: FilterIndex[int] = FilterIndex()
    for i in range(50):
        index.add([{f"k{i}": i}], i)
    index.add([{"k7": 7, "x": [1]}], 100)
    assert sorted(index.lookup({"k7": 7, "x": [1]})) == [7, 100]
    assert index.lookup({"k7": 8}) == []
    assert index.lookup(types.MappingProxyType({"k3": 3})) == [3]


def test_lookup_does_not_compare_against_non_matching_filters() -> None:
    # Cost independent of the filter lists that do not match: 1,000 lists on distinct
    # values, and finding the one that matches compares only it (hash lookup).
    index: FilterIndex[int] = FilterIndex()
    for i in range(1_000):
        index.add([{"s": Box(i)}], i)
    index.add([{"s": Box(5), "p": Box(1)}], 5_000)
    Box.eq_calls = 0
    assert sorted(index.lookup({"s": Box(5), "p": Box(1)})) == [5, 5_000]
    assert Box.eq_calls <= 4
    Box.eq_calls = 0
    assert index.lookup({"s": Box(-1)}) == []
    assert Box.eq_calls == 0


def test_lookup_returns_a_fresh_list() -> None:
    index: FilterIndex[str] = FilterIndex()
    index.add(None, "all")
    first = index.lookup({"a": 1})
    first.append("junk")
    assert index.lookup({"a": 1}) == ["all"]
    assert index.lookup("text") == ["all"]


def test_remove_unknown_handle_is_ignored() -> None:
    index: FilterIndex[str] = FilterIndex()
    h = index.add([{"a": 1}], "t")
    index.remove(h)
    index.remove(h)
    index.remove(12345)
    assert len(index) == 0
    assert index.lookup({"a": 1}) == []


class IndexMachine(RuleBasedStateMachine):
    """Random add/remove/lookup sequences: the index always agrees with ``matches``."""

    handles = Bundle("handles")

    def __init__(self) -> None:
        super().__init__()
        self.index: FilterIndex[int] = FilterIndex()
        self.registered: dict[int, Any] = {}
        self.next_target = 0

    @rule(target=handles, filters=FILTERS)
    def add(self, filters: Any) -> tuple[int, int]:
        target = self.next_target
        self.next_target += 1
        handle = self.index.add(filters, target)
        self.registered[target] = filters
        return handle, target

    @rule(entry=consumes(handles))
    def remove(self, entry: tuple[int, int]) -> None:
        handle, target = entry
        self.index.remove(handle)
        self.registered.pop(target, None)  # gone already if the index was cleared

    @rule()
    def clear(self) -> None:
        self.index.clear()
        self.registered.clear()

    @rule(data=st.data())
    def lookup(self, data: st.DataObject) -> None:
        candidates = [f for f in self.registered.values() if f]
        source = data.draw(st.sampled_from(candidates)) if candidates else None
        msg = data.draw(messages_for(source))
        found = self.index.lookup(msg)
        assert Counter(found) == expected_targets(self.registered, msg), msg

    @invariant()
    def size(self) -> None:
        assert len(self.index) == len(self.registered)

    @invariant()
    def targets_in_the_order_added(self) -> None:
        assert self.index.targets() == list(self.registered)

    @invariant()
    def all_unfiltered(self) -> None:
        assert self.index.all_unfiltered is all(not f for f in self.registered.values())


IndexMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=30, suppress_health_check=[HealthCheck.too_slow]
)
test_index_state_machine = IndexMachine.TestCase


def test_removing_everything_leaves_an_empty_index() -> None:
    index: FilterIndex[int] = FilterIndex()
    lists: list[Any] = [
        None,
        [{}],
        [{"a": 1}],
        [{"a": [1]}],
        [{"a": 1}, {"b": 2}],
        [{"a": 1, "c": {}}],
    ]
    handles = [index.add(f, i) for i, f in enumerate(lists)]
    for h in handles:
        index.remove(h)
    assert len(index) == 0
    assert index.lookup({"a": 1, "b": 2}) == []
    assert not index._by_key and not index._fallback.clauses  # nothing left behind


def test_targets_clear_and_all_unfiltered() -> None:
    index: FilterIndex[str] = FilterIndex()
    assert index.targets() == [] and index.all_unfiltered
    index.add(None, "all")
    index.add([], "all too")
    assert index.all_unfiltered and index.targets() == ["all", "all too"]
    index.add([{"a": 1}, {"b": [2]}], "two dicts")
    h = index.add([{"a": 1}], "a")
    index.add([{}], "any mapping")
    index.add(None, "all again")
    assert not index.all_unfiltered
    assert index.targets() == ["all", "all too", "two dicts", "a", "any mapping", "all again"]
    index.remove(h)
    assert index.targets() == ["all", "all too", "two dicts", "any mapping", "all again"]
    index.clear()
    assert len(index) == 0 and index.targets() == [] and index.all_unfiltered
    assert index.lookup({"a": 1, "b": [2]}) == [] and index.lookup("text") == []
    assert not index._by_key and not index._fallback.clauses
    index.remove(h)  # handles of cleared lists are unknown: ignored
    h2 = index.add([{"a": 1}], "after")
    assert h2 > h  # handles are never reused
    assert index.lookup({"a": 1}) == ["after"]


def test_add_compiled_is_add_without_the_check() -> None:
    compiled = compile_filters([{"s": "A"}, {"s": "B", "n": [1]}])
    index: FilterIndex[str] = FilterIndex()
    first = index.add_compiled(compiled, "first")
    index.add_compiled(compiled, "second")  # one compiled list, registered twice
    index.add_compiled(compile_filters(None), "everything")
    assert index.lookup({"s": "A"}) == ["everything", "first", "second"]
    assert index.lookup({"s": "B", "n": [1]}) == ["everything", "first", "second"]
    assert index.lookup({"s": "B", "n": [2]}) == ["everything"]
    index.remove(first)
    assert index.lookup({"s": "A"}) == ["everything", "second"]


def test_a_pair_with_one_dict_is_filed_without_a_bucket() -> None:
    # The common case (one stream per symbol) keeps one small object per stream: a
    # pair shared by several dicts gets a bucket, which goes again when one is left.
    index: FilterIndex[str] = FilterIndex()
    h1 = index.add([{"s": "A"}], "one")
    assert type(index._by_key["s"]["A"]).__name__ == "_Clause"
    assert not hasattr(index._by_key["s"]["A"], "__dict__")
    h2 = index.add([{"s": "A", "p": 1}], "two")
    assert type(index._by_key["s"]["A"]).__name__ == "_Bucket"
    assert index.lookup({"s": "A", "p": 1}) == ["one", "two"]
    index.remove(h1)
    assert type(index._by_key["s"]["A"]).__name__ == "_Clause"
    assert index.lookup({"s": "A", "p": 1}) == ["two"] and index.lookup({"s": "A"}) == []
    index.remove(h2)
    assert not index._by_key


SINGLE_KEY = st.lists(
    st.one_of(
        st.just([]),
        st.builds(lambda v: [{"s": v}], st.sampled_from(["BTC", "ETH", "SOL", 1, None])),
    ),
    max_size=8,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_route_gives_what_lookup_gives_after_any_adds_and_removes(data: st.DataObject) -> None:
    # Filter lists on one key take route's fast path; others mixed in take lookup's.
    lists = data.draw(st.one_of(SINGLE_KEY, st.lists(FILTERS, max_size=6)), label="lists")
    index: FilterIndex[int] = FilterIndex()
    handles = [index.add(filters, target) for target, filters in enumerate(lists)]
    for handle in (
        data.draw(st.lists(st.sampled_from(handles), max_size=3, unique=True)) if (handles) else []
    ):
        index.remove(handle)
    for _ in range(5):
        msg = data.draw(
            st.one_of(
                st.fixed_dictionaries({"s": st.sampled_from(["BTC", "ETH", "XRP", 1, None])}),
                messages_for(data.draw(st.sampled_from([f for f in lists if f] or [None]))),
            ),
            label="msg",
        )
        assert list(index.route(msg)) == index.lookup(msg), msg


def known_route(index: FilterIndex[Any], msg: Any) -> Any:
    """What the router delivers to without calling route(): the index's route table."""
    table = index.route_table
    if table is None or type(msg) is not dict:
        return None
    try:
        return table.get(msg.get(index.route_key, _ABSENT))
    except (TypeError, ValueError):
        return None


_ABSENT = object()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_route_table_gives_what_lookup_gives_between_changes(data: st.DataObject) -> None:
    # Messages, adds and removes interleaved: what the table holds for a message's value
    # is what lookup() gives for it now, whatever changed since the table was filled.
    index: FilterIndex[int] = FilterIndex()
    handles: list[int] = []
    seen: list[Any] = []
    values = st.sampled_from(["BTC", "ETH", "XRP", 1, 1.0, True, None])
    for step in range(12):
        action = data.draw(st.sampled_from(["add", "remove", "msg", "msg"]), label="action")
        if action == "add":
            one_key = st.one_of(st.just([]), st.builds(lambda v: [{"s": v}], values))
            filters = data.draw(st.one_of(one_key, FILTERS))
            handles.append(index.add(filters, step))
        elif action == "remove" and handles:
            index.remove(handles.pop(data.draw(st.integers(0, len(handles) - 1))))
        else:
            msg = data.draw(
                st.one_of(st.fixed_dictionaries({"s": values}), st.just({"p": 1}), st.just([1]))
            )
            seen.append(msg)
            assert list(index.route(msg)) == index.lookup(msg), msg
        for msg in seen:
            known = known_route(index, msg)
            assert known is None or list(known) == index.lookup(msg), msg
