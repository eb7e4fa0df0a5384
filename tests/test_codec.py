"""rxws.parse_json: the same values and errors as json.loads, with or without orjson."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rxws import codec

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def without_orjson(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "HAVE_ORJSON", False)


def outcome(parse: Any, frame: Any) -> tuple[str, Any]:
    try:
        return "value", parse(frame)
    except ValueError as exc:
        return "error", (type(exc).__name__, getattr(exc, "pos", None))


@settings(max_examples=300)
@given(value=JSON, pad=st.sampled_from(["", " ", "\n", " \t"]))
def test_the_json_path_parses_as_json_loads(value: Any, pad: str) -> None:
    frame = pad + json.dumps(value) + pad
    saved = codec.HAVE_ORJSON
    codec.HAVE_ORJSON = False
    try:
        assert outcome(codec.parse_json, frame) == outcome(json.loads, frame)
        assert outcome(codec.parse_json, frame.encode()) == outcome(json.loads, frame.encode())
    finally:
        codec.HAVE_ORJSON = saved


@pytest.mark.parametrize(
    "frame",
    ['{"a": 1', '{"a": 1}}', "", " ", "nul", '{"a": 1} x', "[1, 2,]", '"\\x"', b"\xff{}"],
)
def test_the_json_path_fails_as_json_loads(frame: Any, without_orjson: None) -> None:
    assert outcome(codec.parse_json, frame) == outcome(json.loads, frame)


# Bytes built from JSON pieces, valid UTF-8 and not: a BOM, a lone byte, an encoded
# surrogate, an overlong NUL, a character of four bytes.
_PIECES = [b'"', b"{", b"}", b"[", b"]", b":", b",", b"1", b"a", b"\\u", b"d800", b" "]
_PIECES += [b"\xef\xbb\xbf", b"\xff", b"\xed\xa0\x80", b"\xc0\x80", b"\xf0\x9f\x98\x80", b"\xc3"]


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(_PIECES), max_size=10).map(b"".join))
def test_bytes_parsed_undecoded_give_what_their_text_gives(data: bytes) -> None:
    # What the fast path hands a text frame's bytes to: whatever it parses is valid
    # UTF-8 and parses to the same value from the decoded text.
    loads = codec.bytes_parser(codec.parse_json)
    if loads is None:
        pytest.skip("orjson is not installed")
    try:
        value = loads(data)
    except ValueError:
        return
    assert outcome(codec.parse_json, data.decode()) == ("value", value)


def test_bytes_parser_is_only_for_parse_json_on_orjson(without_orjson: None) -> None:
    assert codec.bytes_parser(codec.parse_json) is None
    assert codec.bytes_parser(json.loads) is None
