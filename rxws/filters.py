"""Message filters with AsyncWebsocketStreamInterface's ``stream_filter`` semantics.

A *filter list* is a list of dicts. A message matches when the list is empty (or
``None``), or when every key/value pair of at least one dict is in the message
(``key in msg and value == msg[key]``): the dicts are OR-ed, the pairs inside one dict
AND-ed. A message that is not a mapping matches only an empty filter list.

:func:`matches` compiles one filter list into a predicate. :class:`FilterIndex` holds
the filter lists of many subscribers at once and finds the ones a message matches by
hash lookups on key/value pairs, so the cost per message does not grow with the number
of filter lists that do not match.

No I/O here and no event loop: this module is pure policy.
"""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["FilterIndex", "Filters", "compile_filters", "matches"]

T = TypeVar("T")

Filters = Sequence[Mapping[Any, Any]] | None
"""A filter list: OR of dicts, each an AND of key/value pairs; empty or ``None`` matches all."""

_MISSING: Any = object()


def compile_filters(filters: Filters) -> tuple[tuple[tuple[Any, Any], ...], ...]:
    """Check a filter list and snapshot it as a tuple of ``(key, value)`` tuples.

    Args:
        filters: A list of dicts, or ``None``.

    Returns:
        One tuple of pairs per dict; an empty tuple for "match everything".

    Raises:
        TypeError: ``filters`` is not a list of dicts (the message shows how to fix it).
    """
    if filters is None:
        return ()
    if isinstance(filters, Mapping):
        raise TypeError(
            f"filters must be a list of dicts, got the dict {filters!r}; "
            f"wrap it in a list: [{filters!r}]"
        )
    if isinstance(filters, (str, bytes)) or not isinstance(filters, Iterable):  # type: ignore[unreachable]
        raise TypeError(
            f"filters must be a list of dicts such as [{{'s': 'BTCUSDT'}}], "
            f"got {type(filters).__name__} {filters!r}"
        )
    out = []
    for i, clause in enumerate(filters):
        if not isinstance(clause, Mapping):
            raise TypeError(
                f"filters[{i}] must be a dict of key/value pairs to match, "
                f"got {type(clause).__name__} {clause!r}"
            )
        out.append(tuple(clause.items()))
    return tuple(out)


def _clause_matches(clause: tuple[tuple[Any, Any], ...], msg: Mapping[Any, Any]) -> bool:
    for key, value in clause:
        # The seed compared ``value == msg[key]`` (filter value on the left): keep it.
        if key not in msg or not value == msg[key]:  # noqa: SIM201
            return False
    return True


def matches(filters: Filters) -> Callable[[Any], bool]:
    """Compile a filter list into a predicate on messages.

    Args:
        filters: A list of dicts (OR of ANDs), or ``None``/``[]`` to accept everything.

    Returns:
        ``predicate(msg) -> bool``.

    Raises:
        TypeError: ``filters`` is not a list of dicts.

    Example:
        >>> keep = matches([{"a": 1}, {"b": 2, "c": 3}])
        >>> keep({"a": 1, "c": 2}), keep({"b": 2, "c": 3, "d": 4}), keep({"a": 2, "c": 2})
        (True, True, False)
    """
    clauses = compile_filters(filters)
    if not clauses:
        return _accept_all

    def predicate(msg: Any) -> bool:
        if not isinstance(msg, Mapping):
            return False
        for clause in clauses:
            if _clause_matches(clause, msg):
                return True
        return False

    return predicate


def _accept_all(msg: Any) -> bool:
    return True


_NO_ANCHOR: Any = object()  # the key of a clause that has no hashable value


class _Clause(Generic[T]):
    """One dict of one registered filter list.

    Lean on purpose (an idle stream holds one): the anchor pair is kept as two slots
    rather than a tuple, and the pairs only when finding the anchor does not prove the
    match already.
    """

    __slots__ = ("direct", "group", "key", "pairs", "target", "value")

    def __init__(
        self,
        target: T,
        pairs: tuple[tuple[Any, Any], ...],
        group: int | None,
    ) -> None:
        self.target = target
        # The handle of its filter list when that list has other dicts too (so it may
        # match through several of them and must be de-duplicated), else None.
        self.group = group
        key: Any = _NO_ANCHOR
        value: Any = None
        for k, v in pairs:
            if _hashable(v):
                key, value = k, v
                break
        self.key = key
        self.value = value
        # None when finding the clause by its anchor pair already proves the match: one
        # pair only, and not NaN-like (found by identity in a dict, never equal itself).
        simple = key is not _NO_ANCHOR and len(pairs) == 1 and value == value
        self.pairs: tuple[tuple[Any, Any], ...] | None = None if simple else pairs
        # The pair alone proves the match and the target cannot come twice.
        self.direct = simple and group is None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except (TypeError, ValueError):  # ValueError: a writable memoryview
        return False
    return True


# Filter values of these types equal no value of a builtin unhashable type below.
_PLAIN: frozenset[type] = frozenset({str, int, float, bool, complex, type(None)})
# Message values that can equal a hashable filter value only when it is not plain: an
# unhashable bytearray equals bytes, a set or a dict's keys equal a frozenset, a tuple
# holding a list equals nothing plain, and so on.
_BUILTIN_UNHASHABLE: frozenset[type] = frozenset(
    {
        list,
        dict,
        set,
        bytearray,
        tuple,
        memoryview,
        type({}.keys()),
        type({}.values()),
        type({}.items()),
        OrderedDict,
        defaultdict,
    }
)


class _Bucket(Generic[T]):
    """Several clauses filed under one key/value pair, with a cached split for lookups.

    A pair with a single clause keeps that clause alone, without a bucket.
    """

    __slots__ = ("checked", "clauses", "direct")

    def __init__(self) -> None:
        self.clauses: dict[int, _Clause[T]] = {}  # keeps order, removes in O(1)
        # Targets that the pair alone proves (one-pair dicts of one-dict lists), and
        # clauses that need a full check or de-duplication; None when stale.
        self.direct: tuple[T, ...] | None = ()
        self.checked: tuple[_Clause[T], ...] = ()

    def add(self, clause: _Clause[T]) -> None:
        self.clauses[id(clause)] = clause
        self.direct = None

    def discard(self, clause: _Clause[T]) -> None:
        del self.clauses[id(clause)]
        self.direct = None

    def split(self) -> tuple[T, ...]:
        clauses = self.clauses.values()
        self.checked = tuple(c for c in clauses if not c.direct)
        direct = self.direct = tuple(c.target for c in clauses if c.direct)
        return direct


class FilterIndex(Generic[T]):
    """Many filter lists, each with a target, looked up by message.

    Each dict of each filter list is filed under one of its hashable key/value pairs
    (its *anchor*). For a message, only the dicts whose anchor pair occurs in it are
    checked, so the cost depends on the message and the matches, not on how many filter
    lists are registered. Dicts whose values are all unhashable are checked one by one
    (they still match by ``==``). A message value that is unhashable (a ``bytearray``, a
    ``set``, a dict's keys) is compared by ``==`` with the filter values of its key that
    are not plain scalars (``bytes``, ``frozenset``, tuples, objects), so it finds
    ``b"abc"`` or ``frozenset({1})`` as :func:`matches` would, at a cost independent of
    the strings and numbers filed under that key.

    ``lookup(msg)`` returns exactly the targets whose filter list :func:`matches`
    accepts, each once.

    Example:
        >>> index = FilterIndex()
        >>> h = index.add([{"s": "BTC"}], "btc-stream")
        >>> _ = index.add(None, "everything")
        >>> index.lookup({"s": "BTC", "p": 1})
        ['everything', 'btc-stream']
        >>> index.remove(h)
        >>> index.lookup({"s": "BTC", "p": 1})
        ['everything']
    """

    def __init__(self) -> None:
        self._next = 0
        self._all: dict[int, T] = {}  # empty filter list: every message
        self._any_mapping: dict[int, T] = {}  # a filter list holding {}: every mapping
        # key -> value -> the one clause filed under that pair, or a bucket of several
        self._by_key: dict[Any, dict[Any, _Clause[T] | _Bucket[T]]] = {}
        # key -> the values filed under it that are not plain scalars (bytes, frozensets,
        # tuples, objects of other classes): the only ones that a message value of a
        # builtin unhashable type (bytearray, set, ...) may equal.
        self._odd: dict[Any, dict[Any, None]] = {}
        self._fallback: _Bucket[T] = _Bucket()  # dicts with no hashable value
        # handle -> its clause, or a list of them when the filter list has several dicts
        self._clauses: dict[int, _Clause[T] | list[_Clause[T]]] = {}
        # Cached target lists, rebuilt on the first lookup after a change.
        self._all_view: list[T] | None = []
        self._mapping_view: list[T] | None = []
        self._only_all = True
        # How many filed dicts need a check beyond their anchor pair (or de-duplication),
        # and the plan of route(): None when stale, False when route() is lookup().
        self._checks = 0
        self._plan: tuple[Any, dict[Any, _Clause[T] | _Bucket[T]], tuple[T, ...]] | bool | None
        self._plan = False
        # For a caller that inlines route()'s one-key case (the router's delivery): what
        # route() returned for a dict message holding ``route_key``, by its value, for
        # the values filed under that key that it has seen since the last change (so it
        # stays as small as the index). A new dict after every change, and None when
        # route() is not one lookup (or does not know yet).
        self.route_table: dict[Any, Sequence[T]] | None = None
        self.route_key: Any = _NO_ANCHOR

    def __len__(self) -> int:
        return len(self._all) + len(self._any_mapping) + len(self._clauses)

    @property
    def all_unfiltered(self) -> bool:
        """Whether every registered filter list is empty (also when none is registered).

        Then :meth:`lookup` returns every target for every message.
        """
        return self._only_all

    def add(self, filters: Filters, target: T) -> int:
        """Register ``target`` under a filter list.

        Args:
            filters: A list of dicts, or ``None``/``[]`` for every message.
            target: What :meth:`lookup` returns for matching messages.

        Returns:
            A handle for :meth:`remove`.

        Raises:
            TypeError: ``filters`` is not a list of dicts.
        """
        return self.add_compiled(compile_filters(filters), target)

    def add_compiled(self, compiled: tuple[tuple[tuple[Any, Any], ...], ...], target: T) -> int:
        """Register ``target`` under a filter list that :func:`compile_filters` returned.

        For a filter list registered many times: check and copy it once, add it often.

        Args:
            compiled: What :func:`compile_filters` returned (not checked again).
            target: What :meth:`lookup` returns for matching messages.

        Returns:
            A handle for :meth:`remove`.
        """
        handle = self._next
        self._next += 1
        self._changed()
        if not compiled:
            self._all[handle] = target
            self._all_view = None
            self._mapping_view = None
            return handle
        if any(not pairs for pairs in compiled):
            self._any_mapping[handle] = target
        elif len(compiled) == 1:
            clause = _Clause(target, compiled[0], None)
            self._file(clause)
            self._clauses[handle] = clause
        else:
            clauses = [_Clause(target, pairs, handle) for pairs in compiled]
            for clause in clauses:
                self._file(clause)
            self._clauses[handle] = clauses
        self._mapping_view = None
        self._only_all = False
        return handle

    def _file(self, clause: _Clause[T]) -> None:
        if not clause.direct:
            self._checks += 1
        key = clause.key
        if key is _NO_ANCHOR:
            self._fallback.add(clause)
            return
        by_value = self._by_key.get(key)
        if by_value is None:
            by_value = self._by_key[key] = {}
        value = clause.value
        entry = by_value.get(value)
        if entry is None:
            by_value[value] = clause
            if type(value) not in _PLAIN:
                self._odd.setdefault(key, {})[value] = None
        elif isinstance(entry, _Clause):
            bucket: _Bucket[T] = _Bucket()
            bucket.add(entry)
            bucket.add(clause)
            by_value[value] = bucket
        else:
            entry.add(clause)

    def _unfile(self, clause: _Clause[T]) -> None:
        if not clause.direct:
            self._checks -= 1
        key = clause.key
        if key is _NO_ANCHOR:
            self._fallback.discard(clause)
            return
        by_value = self._by_key[key]
        value = clause.value
        entry = by_value[value]
        if isinstance(entry, _Bucket):
            entry.discard(clause)
            if len(entry.clauses) > 1:
                return
            if entry.clauses:  # one left: it goes back to standing alone
                by_value[value] = next(iter(entry.clauses.values()))
                return
        del by_value[value]
        odd = self._odd.get(key)
        if odd is not None:
            odd.pop(value, None)
            if not odd:
                del self._odd[key]
        if not by_value:
            del self._by_key[key]

    def remove(self, handle: int) -> None:
        """Unregister the filter list added under ``handle``; unknown handles are ignored.

        Args:
            handle: What :meth:`add` returned.
        """
        if self._all.pop(handle, _MISSING) is not _MISSING:
            self._all_view = None
        elif self._any_mapping.pop(handle, _MISSING) is _MISSING:
            entry = self._clauses.pop(handle, None)
            if entry is None:
                return
            if isinstance(entry, _Clause):
                self._unfile(entry)
            else:
                for clause in entry:
                    self._unfile(clause)
        self._mapping_view = None
        self._only_all = not (self._any_mapping or self._clauses)
        self._changed()

    def clear(self) -> None:
        """Unregister every filter list (handles are never reused)."""
        self._all.clear()
        self._any_mapping.clear()
        self._by_key.clear()
        self._odd.clear()
        self._fallback = _Bucket()
        self._clauses.clear()
        self._all_view = []
        self._mapping_view = []
        self._only_all = True
        self._checks = 0
        self._changed()
        self._plan = False

    def _changed(self) -> None:
        """Forget the plan of route() and what it returned."""
        self._plan = None
        self.route_table = None
        self.route_key = _NO_ANCHOR

    def targets(self) -> list[T]:
        """Every registered target, in the order they were added (once per handle).

        Returns:
            A new list.
        """
        if not self._any_mapping and not self._clauses:
            return list(self._all.values())
        entries: list[tuple[int, T]] = [*self._all.items(), *self._any_mapping.items()]
        for handle, entry in self._clauses.items():
            clause = entry if isinstance(entry, _Clause) else entry[0]
            entries.append((handle, clause.target))
        entries.sort(key=_first)
        return [target for _, target in entries]

    def route(self, msg: Any) -> Sequence[T]:
        """What :meth:`lookup` returns, possibly shared: for a caller that only iterates it.

        The same targets in the same order as ``lookup(msg)``. When every filter list
        is one dict of one key/value pair, all on the same key (``[{"s": "BTCUSDT"}]``,
        with or without empty filter lists beside them), this is one dict lookup and no
        list is built, and what it returns for a value filed under that key is kept in
        :attr:`route_table` (under :attr:`route_key`) until the next change, so that a
        caller may look it up there first; otherwise it is :meth:`lookup`.

        Args:
            msg: A message (usually a dict).

        Returns:
            A sequence the caller must not change. It is never changed afterwards
            either: adding or removing a filter list replaces what later calls return.
        """
        plan = self._plan
        if plan is None:
            plan = self._plan = self._make_plan()
            if plan is not False:
                self.route_key = plan[0]  # type: ignore[index]
                self.route_table = {}
        if plan is False or type(msg) is not dict:
            return self.lookup(msg)
        key, by_value, prefix = plan  # type: ignore[misc]
        value = msg.get(key, _MISSING)
        try:
            entry = by_value.get(value)
        except (TypeError, ValueError):  # an unhashable message value
            return self.lookup(msg)
        if entry is None:
            return prefix
        if type(entry) is _Clause:
            found: tuple[T, ...] = (entry.target,)
        else:
            bucket: _Bucket[T] = entry  # type: ignore[assignment]
            direct = bucket.direct
            found = bucket.split() if direct is None else direct
        targets = prefix + found if prefix else found
        self.route_table[value] = targets  # type: ignore[index]
        return targets

    def _make_plan(self) -> tuple[Any, dict[Any, _Clause[T] | _Bucket[T]], tuple[T, ...]] | bool:
        """``(key, its values, the unfiltered targets)`` when route() may look up one pair."""
        if self._any_mapping or self._checks or len(self._by_key) != 1:
            return False
        ((key, by_value),) = self._by_key.items()
        return key, by_value, tuple(self._all.values())

    def lookup(self, msg: Any) -> list[T]:
        """The targets whose filter list matches ``msg``, each once.

        Args:
            msg: A message (usually a dict).

        Returns:
            A new list: targets of empty filter lists first, then the others. The
            caller may keep or change it.
        """
        if self._only_all or (type(msg) is not dict and not isinstance(msg, Mapping)):
            view = self._all_view
            if view is None:
                view = self._all_view = list(self._all.values())
            return view.copy()
        found = self._mapping_view
        if found is None:
            found = self._mapping_view = [*self._all.values(), *self._any_mapping.values()]
        found = found.copy()
        by_key = self._by_key
        checked: list[_Clause[T]] | None = None
        if type(msg) is dict and len(msg) < len(by_key):
            # More filter keys than message keys: walk the message instead.
            for key, value in msg.items():
                by_value = by_key.get(key)
                if by_value is not None:
                    try:
                        checked = _collect(by_value, value, found, checked)
                    except (TypeError, ValueError):  # an unhashable message value
                        checked = self._collect_equal(key, by_value, value, found, checked)
        else:
            # The body of _collect, inlined: this loop runs for every message, and a
            # call would cost about as much as the rest of it.
            for key, by_value in by_key.items():
                value = msg.get(key, _MISSING)
                if value is _MISSING:
                    continue
                try:
                    entry = by_value.get(value)
                except (TypeError, ValueError):  # an unhashable message value
                    checked = self._collect_equal(key, by_value, value, found, checked)
                    continue
                if entry is None:
                    continue
                if type(entry) is _Clause:
                    if entry.direct:
                        found.append(entry.target)
                    elif checked is None:
                        checked = [entry]
                    else:
                        checked.append(entry)
                    continue
                bucket: _Bucket[T] = entry  # type: ignore[assignment]
                direct = bucket.direct
                if direct is None:
                    direct = bucket.split()
                if direct:
                    found += direct
                if bucket.checked:
                    if checked is None:
                        checked = []
                    checked.extend(bucket.checked)
        if self._fallback.clauses:
            if checked is None:
                checked = []
            checked.extend(self._fallback.clauses.values())
        if checked is not None:
            seen: set[int] = set()  # a list with several dicts may match through each
            for clause in checked:
                pairs = clause.pairs
                if pairs is not None and not _clause_matches(pairs, msg):
                    continue
                group = clause.group
                if group is not None:
                    if group in seen:
                        continue
                    seen.add(group)
                found.append(clause.target)
        return found

    def _collect_equal(
        self,
        key: Any,
        by_value: dict[Any, _Clause[T] | _Bucket[T]],
        value: Any,
        found: list[T],
        checked: list[_Clause[T]] | None,
    ) -> list[_Clause[T]] | None:
        """:func:`_collect` for an unhashable message ``value``: found by ``==``, not hash.

        ``value`` is compared with the filter values filed under ``key`` (filter value on
        the left, as :func:`matches` compares). For the builtin unhashable types only the
        values that are not plain scalars can be equal, usually none or a few, so the
        cost does not grow with the plain values (symbols, ids) filed under the key.
        Values of other classes, which may define any ``__eq__``, are compared with
        every value filed under the key.
        """
        candidates = by_value if type(value) not in _BUILTIN_UNHASHABLE else self._odd.get(key)
        if candidates:
            for filter_value in list(candidates):
                if filter_value == value:
                    checked = _collect(by_value, filter_value, found, checked)
        return checked


def _first(entry: tuple[int, Any]) -> int:
    return entry[0]


def _collect(
    by_value: dict[Any, _Clause[T] | _Bucket[T]],
    value: Any,
    found: list[T],
    checked: list[_Clause[T]] | None,
) -> list[_Clause[T]] | None:
    """Add the targets proven by ``value``; return the clauses still to check.

    Raises:
        TypeError: ``value`` is unhashable (``ValueError`` for a writable memoryview).
    """
    entry = by_value.get(value)
    if entry is None:
        return checked
    if type(entry) is _Clause:
        if entry.direct:
            found.append(entry.target)
            return checked
        if checked is None:
            return [entry]
        checked.append(entry)
        return checked
    bucket: _Bucket[T] = entry  # type: ignore[assignment]
    direct = bucket.direct
    if direct is None:
        direct = bucket.split()
    if direct:
        found += direct
    if bucket.checked:
        if checked is None:
            checked = []
        checked.extend(bucket.checked)
    return checked
